//! Registries as plug-ins: what the gate knows of one kind of registry API, behind one trait.
//!
//! A [`Registry`] says how a request to it names its data subjects and its Cedar action, and how
//! its answer is read (which persons it holds, what the answer says of each) and cut down to
//! the released persons and the requested fields. The request path (`gate`) knows only this
//! trait; [`Registries::standard`] is the table from a route's `kind` in the configuration to
//! the implementation:
//!
//! | `kind` | registry | subjects | actions |
//! |---|---|---|---|
//! | `brp-personen` | Haal Centraal BRP Personen 2 (`POST /personen`) | the query body | `brp:lookup`, `brp:search` |
//! | `brp-bewoning` | Haal Centraal BRP Bewoning 2.1 (`POST /bewoningen`) | the query body (an address) | `brp:bewoning` |
//! | `kenteken` | RDW vehicle and holder | `{kenteken}` in the path | `rdw:vehicle`, `rdw:holder` |
//! | `bsn` | any person lookup by `{bsn}` in the path | `{bsn}` in the path | `brp:lookup` |
//!
//! Adding a registry is a new module here and a line in that table (and, for a new action, its
//! schema, policies and policy tests); nothing of the request path changes.

mod bewoning;
mod brp;
mod path;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::Method;

pub use bewoning::{BRP_BEWONING, BrpBewoning};
pub use brp::BrpPersonen;
pub use path::PathRegistry;

use crate::config::RouteConfig;
use crate::error::GateError;
use crate::model::{Action, AnswerPerson};
use crate::resource::Subjects;
use crate::response::ResponseError;
use crate::routes::RouteMatch;

/// One kind of registry API.
pub trait Registry: Send + Sync {
    /// The route `kind` it serves.
    fn kind(&self) -> &'static str;

    /// The path parameters a route of this kind has (`{kenteken}`), none for body routes.
    fn path_params(&self) -> &'static [&'static str];

    /// The actions a route of this kind may name in the config (`action = "…"`); empty when
    /// the action follows from the request itself (then a route must not name one).
    fn route_actions(&self) -> &'static [Action];

    /// Every action requests to this registry are decided under.
    fn actions(&self) -> &'static [Action];

    /// Whether a route of this kind must name its action.
    fn route_takes_action(&self) -> bool {
        !self.route_actions().is_empty()
    }

    /// Checks a route's method (its path parameters and action are checked by the table).
    fn check_method(&self, method: &Method) -> Result<(), String>;

    /// The request's data subjects, action and requested fields (400 when the request does not
    /// name them properly), and the body to send upstream when it differs from the client's.
    fn subjects(
        &self,
        route: &RouteConfig,
        m: &RouteMatch<'_>,
        body: &Bytes,
    ) -> Result<Subjects, GateError>;

    /// Reads a successful answer: every person in it and how to pass on the released ones. An
    /// answer that is not what this registry answers is an error: it is never passed on.
    fn read<'a>(
        &self,
        subjects: &Subjects,
        body: &'a [u8],
    ) -> Result<Box<dyn ReadAnswer + 'a>, ResponseError>;
}

/// A successful answer, read.
pub trait ReadAnswer {
    /// Every person in the answer with what it says of each (the gate decides each one's
    /// release).
    fn persons(&self) -> &[AnswerPerson];

    /// Whether withheld persons can be cut out of the answer; when not, an answer with a
    /// withheld person is refused whole.
    fn can_cut(&self) -> bool;

    /// The body to pass on with only the persons whose `keep` is true, minimised to `fields`;
    /// `None`: the answer as it came.
    fn release_body(
        &self,
        fields: &[String],
        keep: &[bool],
    ) -> Result<Option<Vec<u8>>, ResponseError>;
}

/// The table from a route's `kind` to its registry.
pub struct Registries {
    by_kind: BTreeMap<&'static str, Arc<dyn Registry>>,
}

impl Registries {
    /// The registries this gate ships (the table in the module docs).
    pub fn standard() -> &'static Registries {
        static STANDARD: OnceLock<Registries> = OnceLock::new();
        STANDARD.get_or_init(|| {
            Registries::from_list(vec![
                Arc::new(BrpPersonen),
                Arc::new(BrpBewoning),
                Arc::new(PathRegistry::kenteken()),
                Arc::new(PathRegistry::bsn()),
            ])
        })
    }

    /// A table of these registries.
    pub fn from_list(list: Vec<Arc<dyn Registry>>) -> Registries {
        Registries {
            by_kind: list.into_iter().map(|r| (r.kind(), r)).collect(),
        }
    }

    /// The registry of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Registry>> {
        self.by_kind.get(kind)
    }

    /// Every registry's actions (what `policy replay` and `policy explain` may re-decide).
    pub fn actions(&self) -> Vec<Action> {
        self.by_kind
            .values()
            .flat_map(|r| r.actions().iter().copied())
            .collect()
    }

    /// Any registry's action, by id.
    pub fn action(&self, id: &str) -> Option<Action> {
        self.by_kind
            .values()
            .flat_map(|r| r.actions().iter().copied())
            .find(|a| a.as_str() == id)
    }

    /// The action a route may name, by id (`rdw:holder`).
    pub fn route_action(&self, id: &str) -> Option<Action> {
        self.by_kind
            .values()
            .flat_map(|r| r.route_actions().iter().copied())
            .find(|a| a.as_str() == id)
    }

    /// The actions routes may name, for messages: `` `a`, `b` ``.
    pub fn route_actions_listed(&self) -> String {
        let mut ids: Vec<&str> = self
            .by_kind
            .values()
            .flat_map(|r| r.route_actions().iter().map(|a| a.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        listed(&ids)
    }

    /// The kinds, for messages.
    pub fn kinds_listed(&self) -> String {
        listed(&self.by_kind.keys().copied().collect::<Vec<_>>())
    }

    /// Checks a route against its registry: a known kind, its path parameters, method and
    /// action.
    pub fn check_route(
        &self,
        route: &RouteConfig,
        method: &Method,
        params: &[&str],
    ) -> Result<(), String> {
        let reg = self.get(route.kind.as_str()).ok_or_else(|| {
            format!(
                "`{}` is not a registry kind: expected one of {}",
                crate::routes::shown(route.kind.as_str()),
                self.kinds_listed()
            )
        })?;
        let want = reg.path_params();
        if params != want {
            let want = match want {
                [] => "no path parameters".to_string(),
                w => format!(
                    "exactly the parameter{} {}",
                    if w.len() == 1 { "" } else { "s" },
                    w.iter()
                        .map(|p| format!("`{{{p}}}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(format!("a route of this kind takes {want}"));
        }
        reg.check_method(method)?;
        match (reg.route_actions(), route.action) {
            ([], None) => Ok(()),
            ([], Some(_)) => Err(format!(
                "a {} route takes no action: it follows from the request",
                reg.kind()
            )),
            (allowed, Some(a)) if allowed.contains(&a) => Ok(()),
            (allowed, _) => Err(format!(
                "a {} route needs action {}",
                reg.kind(),
                listed(&allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>())
                    .replace(", ", " or ")
            )),
        }
    }
}

fn listed(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
