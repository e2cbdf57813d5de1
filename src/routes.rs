//! Routes: the request target is checked to be canonical, then matched exactly.
//!
//! Guarantees: a request reaches a route only when its target is origin-form (`/path`), has no
//! query, and its raw path (the bytes as sent, never decoded) consists of non-empty segments of
//! unreserved characters (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`) and `! $ & + , = : @` (a
//! conservative part of the RFC 3986 §3.3 `pchar` set). Matching is exact and case-sensitive; a `{name}` parameter matches one
//! whole segment and is handed on raw (the resource stage validates and normalises it).
//!
//! Refuses (400 `invalidPath`) anything another parser could read as a different path: every
//! `%` escape (`%2e`, `%2f`, `%5c`, `%00`, overlong UTF-8 such as `%c0%ae`, ...), non-ASCII
//! bytes (full-width characters), `\`, `;` (matrix parameters), `'` `(` `)` `*`, control
//! characters, `//`, `.` and `..` segments, a segment ending in `.`, a trailing `/`, an empty
//! path, any query string, and absolute-form, authority-form and asterisk-form targets. It never
//! "normalises" into a match. Unknown paths get 404, a known path with another method 405.
//!
//! Not visible here: `http` drops a `#fragment` before the gate sees the target; this is harmless
//! because the upstream path is rebuilt from the route template, never copied from the request.

use std::collections::BTreeSet;

use http::{Method, Request, Uri, Version};

use crate::config::RouteConfig;
use crate::model::truncate_for_message;

/// Longest request path considered; longer paths are refused before matching.
const MAX_PATH_LEN: usize = 2048;

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

/// One segment of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal the request segment exactly (case-sensitive).
    Literal(String),
    /// `{name}`: matches any one non-empty canonical segment.
    Param(String),
}

/// A route with its method and template compiled.
#[derive(Debug, Clone)]
struct Compiled {
    method: Method,
    segments: Vec<Segment>,
}

/// The compiled route table.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<RouteConfig>,
    // INVARIANT: `compiled[i]` is the compiled form of `routes[i]`, and no two entries with the
    // same method can match the same path, so the first match is the only match.
    compiled: Vec<Compiled>,
}

impl RouteTable {
    /// Compiles the routes; an invalid template is an error naming it.
    ///
    /// Refused: a method that is not an upper-case HTTP token; a template that does not start
    /// with `/`, has an empty segment, a `.`/`..` segment, a character outside the canonical
    /// set, or a repeated parameter; an `upstream_path` using a parameter the path lacks; a
    /// parameter other than the one the route kind validates (`{kenteken}`, `{bsn}`, none for
    /// BRP) so that nothing unvalidated reaches the upstream; an action that does not fit the
    /// kind; and two routes with the same method whose templates overlap.
    pub fn new(routes: Vec<RouteConfig>) -> Result<RouteTable, String> {
        let mut compiled: Vec<Compiled> = Vec::with_capacity(routes.len());
        for route in &routes {
            let c = compile_route(route).map_err(|m| {
                format!(
                    "route `{} {}`: {m}",
                    shown(&route.method),
                    shown(&route.path)
                )
            })?;
            if let Some(j) = compiled
                .iter()
                .position(|o| o.method == c.method && overlaps(&o.segments, &c.segments))
            {
                return Err(format!(
                    "route `{} {}` overlaps route `{} {}`: a path could match both",
                    shown(&route.method),
                    shown(&route.path),
                    shown(&routes[j].method),
                    shown(&routes[j].path)
                ));
            }
            compiled.push(c);
        }
        Ok(RouteTable { routes, compiled })
    }

    /// The routes in table order.
    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// Matches an HTTP/1.x request: the target must be origin-form (`/path`), without a query.
    ///
    /// Use [`RouteTable::resolve_request`] when the protocol version is at hand: HTTP/2 requests
    /// carry `:scheme` and `:authority`, so their `Uri` is absolute even though the client sent
    /// an origin-form `:path`.
    pub fn resolve(&self, method: &Method, uri: &Uri) -> Result<RouteMatch<'_>, RouteError> {
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Err(RouteError::NotCanonical(
                "absolute-form and authority-form targets are not accepted: send the path only"
                    .into(),
            ));
        }
        self.resolve_path(method, uri)
    }

    /// Matches a request, taking its protocol version into account: for HTTP/2 and later the
    /// `Uri` is built from `:scheme`, `:authority` and `:path`, and only `:path` is checked
    /// (the scheme must be `http` or `https`); HTTP/1.x goes through [`RouteTable::resolve`].
    pub fn resolve_request<B>(&self, req: &Request<B>) -> Result<RouteMatch<'_>, RouteError> {
        let uri = req.uri();
        if req.version() >= Version::HTTP_2 {
            if let Some(s) = uri.scheme_str()
                && s != "http"
                && s != "https"
            {
                return Err(RouteError::NotCanonical(format!(
                    "scheme `{}` is not accepted",
                    shown(s)
                )));
            }
            return self.resolve_path(req.method(), uri);
        }
        self.resolve(req.method(), uri)
    }

    /// The methods that have a route for this target's path (for a 405 `Allow` header);
    /// empty when the path is not canonical or has no route.
    pub fn allowed_methods(&self, uri: &Uri) -> Vec<Method> {
        let Ok(segments) = canonical_segments(uri) else {
            return Vec::new();
        };
        let mut out: Vec<Method> = Vec::new();
        for c in &self.compiled {
            if match_segments(&c.segments, &segments).is_some() && !out.contains(&c.method) {
                out.push(c.method.clone());
            }
        }
        out
    }

    /// Checks the path of `uri` (scheme and authority already dealt with) and matches it.
    fn resolve_path(&self, method: &Method, uri: &Uri) -> Result<RouteMatch<'_>, RouteError> {
        let segments = canonical_segments(uri)?;
        let mut path_known = false;
        for (route, c) in self.routes.iter().zip(&self.compiled) {
            if let Some(params) = match_segments(&c.segments, &segments) {
                if c.method == *method {
                    return Ok(RouteMatch { route, params });
                }
                path_known = true;
            }
        }
        if path_known {
            Err(RouteError::MethodNotAllowed(truncate_for_message(
                method.as_str(),
            )))
        } else {
            Err(RouteError::NotFound)
        }
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

/// Whether `b` may appear raw in a canonical path segment: unreserved characters and
/// `! $ & + , = : @` (RFC 3986 §3.3 `pchar` without `%`, `;`, `'`, `(`, `)`, `*`).
fn is_canonical_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

/// Checks that the target's path is canonical and splits it into segments; `/` alone gives no
/// segments (it matches no route).
fn canonical_segments(uri: &Uri) -> Result<Vec<&str>, RouteError> {
    let not = |m: &str| Err(RouteError::NotCanonical(m.to_string()));
    let path = uri.path();
    if path == "*" {
        return not("asterisk-form targets are not accepted");
    }
    if path.is_empty() {
        return not("the path is empty");
    }
    if uri.query().is_some() {
        return not("query parameters are not accepted");
    }
    if !path.starts_with('/') {
        return not("the path must start with `/`");
    }
    if path.len() > MAX_PATH_LEN {
        return not("the path is too long");
    }
    for &b in path.as_bytes() {
        if b == b'/' || is_canonical_byte(b) {
            continue;
        }
        return match b {
            b'%' => not("percent-encoded characters (`%`) are not accepted"),
            b'\\' => not("backslashes are not accepted"),
            b';' => not("matrix parameters (`;`) are not accepted"),
            0x00..=0x1f | 0x7f => not("control characters are not accepted"),
            0x80..=0xff => not("non-ascii characters are not accepted"),
            _ => Err(RouteError::NotCanonical(format!(
                "character `{}` is not accepted",
                char::from(b)
            ))),
        };
    }
    if path == "/" {
        return Ok(Vec::new());
    }
    if path.ends_with('/') {
        return not("a trailing `/` is not accepted");
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    for s in &segments {
        if s.is_empty() {
            return not("empty path segments (`//`) are not accepted");
        }
        if *s == "." || *s == ".." {
            return not("dot segments (`.`, `..`) are not accepted");
        }
        if s.ends_with('.') {
            return not("a path segment ending in `.` is not accepted");
        }
    }
    Ok(segments)
}

/// Matches request segments against a template; the parameters on success.
fn match_segments(template: &[Segment], segments: &[&str]) -> Option<Vec<(String, String)>> {
    if template.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (t, s) in template.iter().zip(segments) {
        match t {
            Segment::Literal(l) if l == s => {}
            Segment::Literal(_) => return None,
            Segment::Param(n) => params.push((n.clone(), (*s).to_string())),
        }
    }
    Some(params)
}

/// Whether some path matches both templates.
fn overlaps(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Segment::Literal(l), Segment::Literal(r)) => l == r,
            _ => true,
        })
}

/// Compiles a template; `allow_root` admits `/` (upstream paths only).
fn compile_template(t: &str, what: &str, allow_root: bool) -> Result<Vec<Segment>, String> {
    let Some(rest) = t.strip_prefix('/') else {
        return Err(format!("{what} must start with `/`"));
    };
    if rest.is_empty() {
        return if allow_root {
            Ok(Vec::new())
        } else {
            Err(format!("{what} must have at least one segment"))
        };
    }
    let mut segments = Vec::new();
    let mut names = BTreeSet::new();
    for s in rest.split('/') {
        if s.is_empty() {
            return Err(format!("{what} has an empty segment"));
        }
        if let Some(inner) = s.strip_prefix('{') {
            let Some(name) = inner.strip_suffix('}') else {
                return Err(format!(
                    "{what}: segment `{}` is not a whole-segment `{{name}}` parameter",
                    shown(s)
                ));
            };
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "{what}: `{}` is not a valid parameter name",
                    shown(name)
                ));
            }
            if !names.insert(name.to_string()) {
                return Err(format!("{what}: parameter `{}` appears twice", shown(name)));
            }
            segments.push(Segment::Param(name.to_string()));
        } else {
            if s == "." || s == ".." || s.ends_with('.') {
                return Err(format!(
                    "{what}: segment `{}` is a dot segment or ends in `.`",
                    shown(s)
                ));
            }
            if let Some(c) = s.bytes().find(|b| !is_canonical_byte(*b)) {
                return Err(format!(
                    "{what}: character `{}` is not allowed in a path",
                    shown(&char::from(c).to_string())
                ));
            }
            segments.push(Segment::Literal(s.to_string()));
        }
    }
    Ok(segments)
}

/// The parameter names of a compiled template.
fn param_names(segments: &[Segment]) -> BTreeSet<&str> {
    segments
        .iter()
        .filter_map(|s| match s {
            Segment::Param(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
        .collect()
}

/// Compiles and checks one route.
fn compile_route(route: &RouteConfig) -> Result<Compiled, String> {
    let m = route.method.as_bytes();
    if m.is_empty() || !m.iter().all(|b| b.is_ascii_uppercase()) {
        return Err("the method must be an upper-case HTTP method such as `GET`".into());
    }
    let method = Method::from_bytes(m).map_err(|_| "the method is not an HTTP method")?;
    let segments = compile_template(&route.path, "the path", false)?;
    let upstream = compile_template(&route.upstream_path, "the upstream_path", true)?;
    let have = param_names(&segments);
    let used = param_names(&upstream);
    if let Some(missing) = used.difference(&have).next() {
        return Err(format!(
            "the upstream_path uses parameter `{}` that the path lacks",
            shown(missing)
        ));
    }
    // The route's kind names its registry, which says what the route must look like.
    let params: Vec<&str> = have.iter().copied().collect();
    crate::registry::Registries::standard().check_route(route, &method, &params)?;
    Ok(Compiled { method, segments })
}

/// User input for a one-line message: cut short, control characters and backticks escaped.
pub(crate) fn shown(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() || c == '`' {
                c.escape_unicode().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect();
    truncate_for_message(&escaped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::RouteKind;
    use crate::model::Action;

    fn route(
        method: &str,
        path: &str,
        upstream_path: &str,
        kind: RouteKind,
        action: Option<Action>,
    ) -> RouteConfig {
        RouteConfig {
            method: method.into(),
            path: path.into(),
            upstream: "up".into(),
            upstream_path: upstream_path.into(),
            kind,
            action,
            enforce: true,
        }
    }

    /// A match as `(template, params)`.
    type Matched = (String, Vec<(String, String)>);
    /// `(method, target, template, params)` of a good request.
    type GoodCase<'a> = (Method, &'a str, &'a str, &'a [(&'a str, &'a str)]);

    /// The default BRP and RDW routes plus a BSN path route.
    fn table() -> RouteTable {
        RouteTable::new(vec![
            route(
                "POST",
                "/haalcentraal/api/brp/personen",
                "/personen",
                RouteKind::BRP_PERSONEN,
                None,
            ),
            route(
                "GET",
                "/rdw/voertuigen/{kenteken}",
                "/voertuigen/{kenteken}",
                RouteKind::KENTEKEN,
                Some(Action::RDW_VEHICLE),
            ),
            route(
                "GET",
                "/rdw/voertuigen/{kenteken}/tenaamstelling",
                "/voertuigen/{kenteken}/tenaamstelling",
                RouteKind::KENTEKEN,
                Some(Action::RDW_HOLDER),
            ),
            route(
                "GET",
                "/brp/personen/{bsn}",
                "/personen/{bsn}",
                RouteKind::BSN,
                Some(Action::BRP_LOOKUP),
            ),
        ])
        .unwrap()
    }

    /// Resolves a raw target; `None` when `http` itself refuses to parse it (the listener
    /// answers 400 before routing).
    fn resolve(
        t: &RouteTable,
        method: Method,
        target: &str,
    ) -> Option<Result<Matched, RouteError>> {
        let uri = Uri::try_from(target).ok()?;
        Some(
            t.resolve(&method, &uri)
                .map(|m| (m.route.path.clone(), m.params)),
        )
    }

    #[test]
    fn good_paths_match_with_raw_params() {
        let t = table();
        let cases: &[GoodCase<'_>] = &[
            (
                Method::POST,
                "/haalcentraal/api/brp/personen",
                "/haalcentraal/api/brp/personen",
                &[],
            ),
            (
                Method::GET,
                "/rdw/voertuigen/XX999X",
                "/rdw/voertuigen/{kenteken}",
                &[("kenteken", "XX999X")],
            ),
            (
                Method::GET,
                "/rdw/voertuigen/xx-999-x",
                "/rdw/voertuigen/{kenteken}",
                &[("kenteken", "xx-999-x")],
            ),
            (
                Method::GET,
                "/rdw/voertuigen/XX999X/tenaamstelling",
                "/rdw/voertuigen/{kenteken}/tenaamstelling",
                &[("kenteken", "XX999X")],
            ),
            (
                Method::GET,
                "/brp/personen/999993653",
                "/brp/personen/{bsn}",
                &[("bsn", "999993653")],
            ),
        ];
        for (method, target, template, params) in cases {
            let got = resolve(&t, method.clone(), target);
            let want: Vec<(String, String)> = params
                .iter()
                .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
                .collect();
            assert_eq!(got, Some(Ok(((*template).to_string(), want))), "{target}");
        }
    }

    #[test]
    fn matched_route_carries_its_config_and_param_lookup() {
        let t = table();
        let uri = Uri::from_static("/rdw/voertuigen/XX999X/tenaamstelling");
        let m = t.resolve(&Method::GET, &uri).unwrap();
        assert_eq!(m.route.action, Some(Action::RDW_HOLDER));
        assert_eq!(
            m.route.upstream_path,
            "/voertuigen/{kenteken}/tenaamstelling"
        );
        assert_eq!(m.param("kenteken"), Some("XX999X"));
        assert_eq!(m.param("bsn"), None);
    }

    /// Targets that must never match a route: each gives `NotCanonical`, or `NotFound` for a
    /// canonical path that no template has, or is already refused by `http`'s parser.
    const BAD_TARGETS: &[&str] = &[
        // empty segments, trailing slash
        "/rdw/voertuigen/XX999X/",
        "/rdw//voertuigen/XX999X",
        "//rdw/voertuigen/XX999X",
        "/rdw/voertuigen//XX999X",
        "/rdw/voertuigen/XX999X/tenaamstelling/",
        // dot segments and trailing dots
        "/rdw/./voertuigen/XX999X",
        "/./rdw/voertuigen/XX999X",
        "/rdw/voertuigen/../voertuigen/XX999X",
        "/rdw/voertuigen/XX999X/.",
        "/rdw/voertuigen/XX999X/..",
        "/rdw/voertuigen/..",
        "/rdw/voertuigen/...",
        "/rdw/voertuigen/XX999X.",
        "/rdw/voertuigen./XX999X",
        // percent escapes of every kind
        "/rdw/voertuigen/%2e%2e/XX999X",
        "/rdw/voertuigen/%2E%2E/XX999X",
        "/rdw/voertuigen/XX999X%2ftenaamstelling",
        "/rdw/voertuigen/XX999X%2Ftenaamstelling",
        "/rdw/voertuigen/XX999X%5ctenaamstelling",
        "/rdw/voertuigen/XX999X%5Ctenaamstelling",
        "/rdw/voertuigen/XX999X%00",
        "/rdw/voertuigen/%c0%ae%c0%ae/XX999X",
        "/rdw/voertuigen/%e0%80%ae",
        "/rdw/voertuigen/%58X999X",
        "/rdw/voertuigen/%ef%bc%b8%ef%bc%b8999%ef%bc%b8",
        "/rdw/voertuigen/xx%2d999%2dx",
        "/rdw/voertuigen/%25XX999X",
        "/rdw/voertuigen/XX999X%20",
        "/rdw/voertuigen/%",
        "/rdw%2fvoertuigen/XX999X",
        // non-ascii: full-width and homoglyphs
        "/rdw/voertuigen/ＸＸ999Ｘ",
        "/rdw/voertuigen/ХХ999Х",
        "/rdw/voertuigen\u{ff0f}XX999X",
        // backslashes and matrix parameters
        "/rdw/voertuigen/XX999X\\tenaamstelling",
        "/rdw\\voertuigen\\XX999X",
        "/rdw/voertuigen/XX999X;jsessionid=1",
        "/rdw/voertuigen;x=1/XX999X",
        "/rdw/voertuigen/XX999X/tenaamstelling;",
        // other characters outside the canonical set
        "/rdw/voertuigen/XX999X'",
        "/rdw/voertuigen/(XX999X)",
        "/rdw/voertuigen/XX*",
        "/rdw/voertuigen/\"XX999X\"",
        "/rdw/voertuigen/{kenteken}",
        "/rdw/voertuigen/XX|999X",
        "/rdw/voertuigen/XX^999X",
        "/rdw/voertuigen/[XX999X]",
        "/rdw/voertuigen/XX`999X",
        "/rdw/voertuigen/XX 999X",
        "/rdw/voertuigen/XX999X\u{7f}",
        "/rdw/voertuigen/XX999X\u{0}",
        "/rdw/voertuigen/XX999X\t",
        // queries
        "/rdw/voertuigen/XX999X?x=1",
        "/rdw/voertuigen/XX999X?",
        "/rdw/voertuigen/XX999X?#",
        "/haalcentraal/api/brp/personen?type=RaadpleegMetBurgerservicenummer",
        // other request-target forms
        "*",
        "http://evil.example/rdw/voertuigen/XX999X",
        "https://gate.example/haalcentraal/api/brp/personen",
        "gate.example:443",
        // canonical but unknown: case-sensitive, exact
        "/HAALCENTRAAL/api/brp/personen",
        "/haalcentraal/api/brp/Personen",
        "/rdw/Voertuigen/XX999X",
        "/rdw/voertuigen/XX999X/TENAAMSTELLING",
        "/rdw/voertuigen",
        "/rdw/voertuigen/XX999X/tenaamstelling/extra",
        "/haalcentraal/api/brp",
        "/",
    ];

    #[test]
    fn bad_targets_never_match() {
        let t = table();
        assert!(BAD_TARGETS.len() >= 40);
        // Nearly all of them get past `http`'s parser: the refusal is this module's.
        let parsed = BAD_TARGETS
            .iter()
            .filter(|t| Uri::try_from(**t).is_ok())
            .count();
        assert!(parsed >= BAD_TARGETS.len() - 5, "{parsed}");
        for target in BAD_TARGETS {
            for method in [Method::GET, Method::POST] {
                match resolve(&t, method.clone(), target) {
                    None | Some(Err(RouteError::NotCanonical(_) | RouteError::NotFound)) => {}
                    other => panic!("{method} {target:?} gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn non_canonical_paths_are_refused_not_normalised() {
        let t = table();
        // Each of these is parsed by `http`, so the refusal is this module's.
        for target in [
            "/rdw/voertuigen/XX999X/",
            "//rdw/voertuigen/XX999X",
            "/rdw/voertuigen/../voertuigen/XX999X",
            "/rdw/voertuigen/XX999X/.",
            "/rdw/voertuigen/XX999X.",
            "/rdw/voertuigen/%2e%2e/XX999X",
            "/rdw/voertuigen/XX999X%2ftenaamstelling",
            "/rdw/voertuigen/XX999X%5ctenaamstelling",
            "/rdw/voertuigen/XX999X%00",
            "/rdw/voertuigen/%c0%ae%c0%ae/XX999X",
            "/rdw/voertuigen/%58X999X",
            "/rdw/voertuigen/ＸＸ999Ｘ",
            "/rdw/voertuigen/XX999X\\tenaamstelling",
            "/rdw/voertuigen/XX999X;jsessionid=1",
            "/rdw/voertuigen/{kenteken}",
            "/rdw/voertuigen/[XX999X]",
            "/rdw/voertuigen/XX999X?x=1",
            "/rdw/voertuigen/XX999X?",
            "*",
            "http://evil.example/rdw/voertuigen/XX999X",
            "gate.example:443",
        ] {
            let got = resolve(&t, Method::GET, target);
            assert!(
                matches!(got, Some(Err(RouteError::NotCanonical(_)))),
                "{target:?} gave {got:?}"
            );
        }
    }

    #[test]
    fn refusal_messages_name_the_problem_on_one_line() {
        let t = table();
        let msg = |target: &str| match resolve(&t, Method::GET, target) {
            Some(Err(e)) => e.to_string(),
            other => panic!("{target:?} gave {other:?}"),
        };
        assert!(msg("/rdw/voertuigen/XX999X?x=1").contains("query parameters are not accepted"));
        assert!(msg("/rdw/voertuigen/%2e%2e").contains("percent-encoded"));
        assert!(msg("/rdw/voertuigen/XX999X;a").contains("matrix parameters"));
        assert!(msg("/rdw/voertuigen/a\\b").contains("backslashes"));
        assert!(msg("/rdw/voertuigen/XX999X/").contains("trailing `/`"));
        assert!(msg("/rdw//voertuigen").contains("`//`"));
        assert!(msg("/rdw/voertuigen/(XX)").contains("character `(`"));
        assert!(msg("/rdw/voertuigen/ＸＸ").contains("non-ascii"));
        for target in BAD_TARGETS {
            if let Some(Err(e)) = resolve(&t, Method::GET, target) {
                let m = e.to_string();
                assert!(!m.contains('\n') && !m.ends_with('.'), "{m}");
            }
        }
    }

    #[test]
    fn too_long_path_is_refused() {
        let t = table();
        let target = format!("/rdw/voertuigen/{}", "X".repeat(MAX_PATH_LEN));
        assert!(matches!(
            resolve(&t, Method::GET, &target),
            Some(Err(RouteError::NotCanonical(_)))
        ));
    }

    #[test]
    fn known_path_with_other_method_is_method_not_allowed() {
        let t = table();
        assert_eq!(
            resolve(&t, Method::GET, "/haalcentraal/api/brp/personen"),
            Some(Err(RouteError::MethodNotAllowed("GET".into())))
        );
        assert_eq!(
            resolve(&t, Method::POST, "/rdw/voertuigen/XX999X"),
            Some(Err(RouteError::MethodNotAllowed("POST".into())))
        );
        assert_eq!(
            resolve(&t, Method::HEAD, "/rdw/voertuigen/XX999X/tenaamstelling"),
            Some(Err(RouteError::MethodNotAllowed("HEAD".into())))
        );
        let uri = Uri::from_static("/haalcentraal/api/brp/personen");
        assert_eq!(t.allowed_methods(&uri), vec![Method::POST]);
        assert!(t.allowed_methods(&Uri::from_static("/nope")).is_empty());
        assert!(
            t.allowed_methods(&Uri::from_static("/rdw/voertuigen/%2e"))
                .is_empty()
        );
    }

    #[test]
    fn http2_request_with_scheme_and_authority_resolves_on_its_path() {
        let t = table();
        let req = Request::builder()
            .version(Version::HTTP_2)
            .method(Method::GET)
            .uri("https://gate.example/rdw/voertuigen/XX999X")
            .body(())
            .unwrap();
        let m = t.resolve_request(&req).unwrap();
        assert_eq!(m.param("kenteken"), Some("XX999X"));

        let req = Request::builder()
            .version(Version::HTTP_2)
            .uri("https://gate.example/rdw/voertuigen/%2e%2e")
            .body(())
            .unwrap();
        assert!(matches!(
            t.resolve_request(&req),
            Err(RouteError::NotCanonical(_))
        ));

        let req = Request::builder()
            .version(Version::HTTP_2)
            .uri("ftp://gate.example/rdw/voertuigen/XX999X")
            .body(())
            .unwrap();
        assert!(matches!(
            t.resolve_request(&req),
            Err(RouteError::NotCanonical(_))
        ));
    }

    #[test]
    fn http1_absolute_form_is_refused_even_through_resolve_request() {
        let t = table();
        let req = Request::builder()
            .version(Version::HTTP_11)
            .uri("http://gate.example/rdw/voertuigen/XX999X")
            .body(())
            .unwrap();
        assert!(matches!(
            t.resolve_request(&req),
            Err(RouteError::NotCanonical(_))
        ));
        let req = Request::builder()
            .version(Version::HTTP_11)
            .uri("/rdw/voertuigen/XX999X")
            .body(())
            .unwrap();
        assert!(t.resolve_request(&req).is_ok());
    }

    #[test]
    fn fragment_is_dropped_by_http_before_routing() {
        // `http` strips `#...` while parsing; the gate forwards a path rebuilt from the
        // template, so the fragment never reaches the upstream either.
        let uri = Uri::try_from("/rdw/voertuigen/XX999X#x").unwrap();
        assert_eq!(uri.path(), "/rdw/voertuigen/XX999X");
        assert_eq!(uri.query(), None);
    }

    fn compile_err(routes: Vec<RouteConfig>) -> String {
        match RouteTable::new(routes) {
            Ok(_) => panic!("expected a compile error"),
            Err(e) => e,
        }
    }

    fn kenteken(method: &str, path: &str, upstream: &str) -> RouteConfig {
        route(
            method,
            path,
            upstream,
            RouteKind::KENTEKEN,
            Some(Action::RDW_VEHICLE),
        )
    }

    #[test]
    fn invalid_templates_are_rejected_naming_the_route() {
        let cases: &[(RouteConfig, &str)] = &[
            (
                kenteken("GET", "rdw/{kenteken}", "/v/{kenteken}"),
                "must start with `/`",
            ),
            (
                kenteken("GET", "/rdw//{kenteken}", "/v/{kenteken}"),
                "empty segment",
            ),
            (
                kenteken("GET", "/rdw/{kenteken}/", "/v/{kenteken}"),
                "empty segment",
            ),
            (kenteken("GET", "/", "/v"), "at least one segment"),
            (
                kenteken("GET", "/rdw/../{kenteken}", "/v/{kenteken}"),
                "dot segment",
            ),
            (
                kenteken("GET", "/rdw./{kenteken}", "/v/{kenteken}"),
                "dot segment",
            ),
            (
                kenteken("GET", "/rdw/%2e/{kenteken}", "/v/{kenteken}"),
                "character `%`",
            ),
            (
                kenteken("GET", "/rdw;x/{kenteken}", "/v/{kenteken}"),
                "character `;`",
            ),
            (
                kenteken("GET", "/rdw/a{kenteken}", "/v/{kenteken}"),
                "character `{`",
            ),
            (
                kenteken("GET", "/rdw/{kenteken}x", "/v/{kenteken}"),
                "whole-segment",
            ),
            (
                kenteken("GET", "/rdw/{ken-teken}", "/v/{kenteken}"),
                "not a valid parameter name",
            ),
            (
                kenteken("GET", "/rdw/{}", "/v"),
                "not a valid parameter name",
            ),
            (
                kenteken("GET", "/rdw/{kenteken}/{kenteken}", "/v/{kenteken}"),
                "parameter `kenteken` appears twice",
            ),
            (
                kenteken("GET", "/rdw/{kenteken}", "/v/{kenteken}/{bsn}"),
                "uses parameter `bsn` that the path lacks",
            ),
            (
                kenteken("GET", "/rdw/{kenteken}", "v/{kenteken}"),
                "upstream_path must start with `/`",
            ),
            (
                kenteken("get", "/rdw/{kenteken}", "/v/{kenteken}"),
                "upper-case",
            ),
            (
                kenteken("G T", "/rdw/{kenteken}", "/v/{kenteken}"),
                "upper-case",
            ),
            (
                kenteken("GET", "/rdw/{kenteken}/{extra}", "/v/{kenteken}"),
                "exactly the parameter `{kenteken}`",
            ),
            (
                kenteken("GET", "/rdw/{bsn}", "/v/{bsn}"),
                "exactly the parameter `{kenteken}`",
            ),
            (
                route(
                    "GET",
                    "/p/{kenteken}",
                    "/p",
                    RouteKind::BSN,
                    Some(Action::BRP_LOOKUP),
                ),
                "exactly the parameter `{bsn}`",
            ),
            (
                route(
                    "GET",
                    "/p/{bsn}",
                    "/p/{bsn}",
                    RouteKind::BSN,
                    Some(Action::RDW_HOLDER),
                ),
                "needs action `brp:lookup`",
            ),
            (
                route(
                    "GET",
                    "/v/{kenteken}",
                    "/v/{kenteken}",
                    RouteKind::KENTEKEN,
                    None,
                ),
                "needs action `rdw:vehicle` or `rdw:holder`",
            ),
            (
                route(
                    "GET",
                    "/personen",
                    "/personen",
                    RouteKind::BRP_PERSONEN,
                    None,
                ),
                "method must be `POST`",
            ),
            (
                route(
                    "POST",
                    "/personen",
                    "/personen",
                    RouteKind::BRP_PERSONEN,
                    Some(Action::BRP_LOOKUP),
                ),
                "takes no action",
            ),
            (
                route(
                    "POST",
                    "/personen/{bsn}",
                    "/personen",
                    RouteKind::BRP_PERSONEN,
                    None,
                ),
                "no path parameters",
            ),
        ];
        for (r, want) in cases {
            let err = compile_err(vec![r.clone()]);
            assert!(err.contains(want), "{} {}: {err}", r.method, r.path);
            assert!(
                err.starts_with(&format!("route `{} {}`", r.method, r.path)),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn overlapping_routes_with_the_same_method_are_rejected() {
        let err = compile_err(vec![
            kenteken("GET", "/rdw/voertuigen/{kenteken}", "/v/{kenteken}"),
            kenteken("GET", "/rdw/{kenteken}/export", "/e/{kenteken}"),
        ]);
        assert!(
            err.contains("overlaps route `GET /rdw/voertuigen/{kenteken}`"),
            "{err}"
        );
        let err = compile_err(vec![
            kenteken("GET", "/rdw/voertuigen/{kenteken}", "/v/{kenteken}"),
            kenteken("GET", "/rdw/voertuigen/{kenteken}", "/w/{kenteken}"),
        ]);
        assert!(err.contains("overlaps"), "{err}");
    }

    #[test]
    fn same_template_with_other_method_or_other_length_is_accepted() {
        let t = RouteTable::new(vec![
            kenteken("GET", "/rdw/voertuigen/{kenteken}", "/v/{kenteken}"),
            kenteken("DELETE", "/rdw/voertuigen/{kenteken}", "/v/{kenteken}"),
            kenteken("GET", "/rdw/voertuigen/{kenteken}/x", "/v/{kenteken}/x"),
            kenteken("GET", "/rdw/v2/{kenteken}", "/"),
        ])
        .unwrap();
        assert_eq!(t.routes().len(), 4);
        let uri = Uri::from_static("/rdw/voertuigen/XX999X");
        let m = t.resolve(&Method::DELETE, &uri).unwrap();
        assert_eq!(m.route.method, "DELETE");
        assert_eq!(t.allowed_methods(&uri), vec![Method::GET, Method::DELETE]);
    }

    #[test]
    fn default_routes_from_the_config_compile() {
        let cfg = crate::config::Config::parse(
            "[auth]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"k.json\"\n\
             [upstreams.brp]\nurl = \"http://127.0.0.1:9001\"\n\
             [upstreams.rdw]\nurl = \"http://127.0.0.1:9002\"\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let t = RouteTable::new(cfg.effective_routes()).unwrap();
        assert_eq!(t.routes().len(), 4);
        let m = t
            .resolve(
                &Method::GET,
                &Uri::from_static("/rdw/voertuigen/XX999X/tenaamstelling"),
            )
            .unwrap();
        assert_eq!(m.route.action, Some(Action::RDW_HOLDER));
    }

    #[test]
    fn fill_template_inserts_values_into_parameter_segments() {
        let params = vec![("kenteken".to_string(), "XX999X".to_string())];
        assert_eq!(
            fill_template("/voertuigen/{kenteken}/tenaamstelling", &params),
            "/voertuigen/XX999X/tenaamstelling"
        );
        assert_eq!(fill_template("/personen", &params), "/personen");
    }

    #[test]
    fn messages_escape_control_characters_and_backticks() {
        assert_eq!(shown("a`b\nc"), "a\\u{60}b\\u{a}c");
        assert!(shown(&"x".repeat(100)).chars().count() <= 41);
    }
}
