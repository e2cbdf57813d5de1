//! Path routes: the data subject is a path parameter — `{kenteken}` (RDW vehicle facts and
//! holder) or `{bsn}` (a person lookup) — and the route names its action. The answer is read
//! whole (it must be JSON); for a holder every valid `burgerservicenummer` in it is a person
//! to release. Such an answer cannot be cut down: a withheld person refuses it whole.

use bytes::Bytes;
use http::Method;

use super::{ReadAnswer, Registry};
use crate::config::RouteConfig;
use crate::error::GateError;
use crate::model::Action;
use crate::resource::{Subjects, subjects_for_path};
use crate::response::ResponseError;
use crate::routes::RouteMatch;

/// A registry whose routes name their subject in the path.
pub struct PathRegistry {
    kind: &'static str,
    params: &'static [&'static str],
    actions: &'static [Action],
}

impl PathRegistry {
    /// `kind = "kenteken"`: RDW vehicle facts (`rdw:vehicle`) and holder (`rdw:holder`).
    pub fn kenteken() -> PathRegistry {
        PathRegistry {
            kind: "kenteken",
            params: &["kenteken"],
            actions: &[Action::RDW_VEHICLE, Action::RDW_HOLDER],
        }
    }

    /// `kind = "bsn"`: a person lookup by BSN in the path (`brp:lookup`).
    pub fn bsn() -> PathRegistry {
        PathRegistry {
            kind: "bsn",
            params: &["bsn"],
            actions: &[Action::BRP_LOOKUP],
        }
    }
}

impl Registry for PathRegistry {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn path_params(&self) -> &'static [&'static str] {
        self.params
    }

    fn actions(&self) -> &'static [Action] {
        self.actions
    }

    fn route_actions(&self) -> &'static [Action] {
        self.actions
    }

    fn check_method(&self, _method: &Method) -> Result<(), String> {
        Ok(())
    }

    fn subjects(
        &self,
        route: &RouteConfig,
        m: &RouteMatch<'_>,
        body: &Bytes,
    ) -> Result<Subjects, GateError> {
        if !body.is_empty() {
            return Err(GateError::BadRequest(
                "this route takes no request body".to_string(),
            ));
        }
        Ok(subjects_for_path(route, m)?)
    }

    fn read<'a>(
        &self,
        subjects: &Subjects,
        body: &'a [u8],
    ) -> Result<Box<dyn ReadAnswer + 'a>, ResponseError> {
        Ok(Box::new(crate::response::read(subjects.action, body)?))
    }
}
