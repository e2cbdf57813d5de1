//! Haal Centraal BRP Personen 2 (`POST /personen`): the query body names the persons
//! (`RaadpleegMetBurgerservicenummer`, `brp:lookup`) or a search (`ZoekMet…`, `brp:search`);
//! the answer's `personen[]` are the persons, cut down to the released ones and the requested
//! fields.

use bytes::Bytes;
use http::Method;

use super::{ReadAnswer, Registry};
use crate::config::RouteConfig;
use crate::error::GateError;
use crate::model::{Action, AnswerPerson};
use crate::resource::{Subjects, parse_brp_body};
use crate::response::{Answer, ResponseError};
use crate::routes::RouteMatch;

/// The BRP Personen registry.
pub struct BrpPersonen;

impl Registry for BrpPersonen {
    fn kind(&self) -> &'static str {
        "brp-personen"
    }

    fn path_params(&self) -> &'static [&'static str] {
        &[]
    }

    fn actions(&self) -> &'static [Action] {
        &[Action::BRP_LOOKUP, Action::BRP_SEARCH]
    }

    fn route_actions(&self) -> &'static [Action] {
        &[]
    }

    fn check_method(&self, method: &Method) -> Result<(), String> {
        if method == Method::POST {
            Ok(())
        } else {
            Err("a brp-personen route takes a JSON body: its method must be `POST`".into())
        }
    }

    fn subjects(
        &self,
        _route: &RouteConfig,
        _m: &RouteMatch<'_>,
        body: &Bytes,
    ) -> Result<Subjects, GateError> {
        Ok(parse_brp_body(body)?)
    }

    fn read<'a>(
        &self,
        subjects: &Subjects,
        body: &'a [u8],
    ) -> Result<Box<dyn ReadAnswer + 'a>, ResponseError> {
        Ok(Box::new(crate::response::read(subjects.action, body)?))
    }
}

impl ReadAnswer for Answer<'_> {
    fn persons(&self) -> &[AnswerPerson] {
        &self.persons
    }

    fn can_cut(&self) -> bool {
        self.is_brp()
    }

    fn release_body(
        &self,
        fields: &[String],
        keep: &[bool],
    ) -> Result<Option<Vec<u8>>, ResponseError> {
        Answer::release_body(self, fields, keep)
    }
}
