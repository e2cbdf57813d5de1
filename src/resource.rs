//! Resource: which data subjects a request is about, and which fields it asks for.
//!
//! The Haal Centraal BRP Personen body is parsed strictly (duplicate keys, trailing data,
//! wrong types and invalid BSNs are refused) so that the gate never decides on one reading
//! of a body while the upstream acts on another; the upstream gets exactly the bytes decided on.

use crate::model::{Action, Bsn, Resource};

/// Why the request does not name its subjects properly (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    InvalidBsn(String),
    #[error("{0}")]
    InvalidKenteken(String),
}

impl ResourceError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ResourceError::InvalidBody(_) => "invalidBody",
            ResourceError::InvalidBsn(_) => "invalidBsn",
            ResourceError::InvalidKenteken(_) => "invalidKenteken",
        }
    }
}

/// The subjects of one request: one Cedar decision per resource, all must allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    pub action: Action,
    pub resources: Vec<Resource>,
    /// Requested fields (BRP `fields`), empty for other routes.
    pub fields: Vec<String>,
    /// Normalised path parameters for the upstream path template.
    pub upstream_params: Vec<(String, String)>,
}

/// The subjects of a path route (`{kenteken}` or `{bsn}`).
pub fn subjects_for_path(
    _route: &crate::config::RouteConfig,
    _m: &crate::routes::RouteMatch<'_>,
) -> Result<Subjects, ResourceError> {
    Err(ResourceError::InvalidBody("not implemented".into()))
}

/// Parses a Haal Centraal BRP Personen query body.
pub fn parse_brp_body(_body: &[u8]) -> Result<Subjects, ResourceError> {
    let _ = Bsn::parse;
    Err(ResourceError::InvalidBody("not implemented".into()))
}
