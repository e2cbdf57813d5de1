//! purpose-gate: a purpose-bound, audited reverse proxy for Dutch registry APIs.
//!
//! The modules follow the request path: `listener` → `routes` → `auth` → `purpose` →
//! `resource` → `policy` → `audit` → `forward` → `response`; `gate` composes them, `layer`
//! makes them tower middleware ([`layer::PurposeGateLayer`]) and `listener` composes the
//! binary's stack.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod counters;
pub mod error;
pub mod forward;
pub mod gate;
pub mod layer;
pub mod listener;
pub mod logboek;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod purpose;
pub mod registry;
pub mod reload;
pub mod resource;
pub mod response;
pub mod routes;
pub mod store;
pub mod tls;
pub mod zgw;
