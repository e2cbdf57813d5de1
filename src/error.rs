//! Errors to clients: every refusal becomes an `application/problem+json` answer in the shape of
//! the Haal Centraal `Foutbericht` (BRP Personen API 2.7, `components.schemas.Foutbericht`; RFC
//! 9457 fields `type`, `title`, `status`, `detail`, `instance`, plus `code`), and every 400 in the
//! shape of its `BadRequestFoutbericht`, with `invalidParams` (`name`, `code`, `reason`) naming the
//! offending parameter. Status codes are decided here and nowhere else.
//!
//! Guarantees, for every [`GateError`] (also variants added later, and any policy `@code`):
//! - `title`, `detail`, `code` and each `invalidParams` member match the spec's patterns
//!   (`title` `^[a-zA-Z0-9À-ž \.\-]{1,80}$`, `detail` `^[a-zA-Z0-9À-ž \.\-\(\),]{1,200}$`, `code`
//!   `^[a-zA-Z0-9]{1,25}$`, `name` `^[a-zA-Z0-9\._]{1,30}$`, `reason` `^[a-zA-Z0-9\., ]{1,80}$`):
//!   the messages are passed through [`foutbericht`], which maps what does not fit and never
//!   fails; a code that does not fit is replaced by the status's generic code (and logged);
//! - `type` and `instance` are URIs: `instance` is `urn:uuid:<request id>`, the same id as the
//!   `X-Request-Id` header and the audit record's `request_id`;
//! - no token and no BSN is echoed: quoted input that is not a short name (a parameter, a key, an
//!   algorithm) is replaced by `(value)`, runs of 9 or more digits by `(number)`, and words longer
//!   than 40 characters by `(value)`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use crate::auth::AuthError;
use crate::resource::ResourceError;
use crate::routes::RouteError;

/// Why the gate did not forward a request (or could not complete it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// A route has this path, but not this method (405 with `Allow`).
    #[error("method `{method}` is not allowed on this path")]
    MethodNotAllowed {
        method: String,
        allow: Vec<http::Method>,
    },
    /// A purpose header is malformed (400); `header` is its name, as configured.
    #[error("{message}")]
    InvalidPurpose {
        code: &'static str,
        header: String,
        message: String,
    },
    /// The named case does not exist in the case registry (403 `caseNotFound`).
    #[error("case `{0}` was not found in the case registry")]
    CaseNotFound(String),
    /// The case registry could not answer (503 `caseRegistryUnavailable`).
    #[error("the case registry is unavailable")]
    CaseRegistryUnavailable,
    /// Cedar denied: the code and reason of the deciding policy (403).
    #[error("{reason}")]
    Denied { code: String, reason: String },
    /// The request body is larger than allowed (413).
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The client did not send the whole request body within `server.body_timeout` (408).
    #[error("the request body was not received within {0} ms")]
    RequestTimeout(u128),
    /// The request is malformed in a way no later stage accepts (400).
    #[error("{0}")]
    BadRequest(String),
    /// The audit record could not be made durable (503); nothing was forwarded.
    #[error("the audit log is unavailable; the request was not forwarded")]
    AuditUnavailable,
    /// `[store] max_backlog_age`: records older than that are not yet in the central store (503).
    #[error("the central audit store is behind; the request was not forwarded")]
    AuditBacklog,
    /// The upstream could not be reached or answered garbage (502).
    #[error("the registry is unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer in time (504).
    #[error("the registry did not answer in time")]
    UpstreamTimeout,
    /// The response from upstream is too large (502).
    #[error("the registry's answer is too large")]
    UpstreamTooLarge,
    /// The upstream answered in a content or transfer coding the gate does not decode (502):
    /// the gate asks for `identity` and passes on only what it could inspect.
    #[error("the registry answered in an encoding the gate does not read")]
    UpstreamEncoding,
    /// The upstream's answer is not the JSON the route expects (502).
    #[error("the registry's answer could not be inspected")]
    UpstreamAnswerInvalid,
    /// The upstream's error answer names a person (a BSN) and was withheld (502).
    #[error("the registry's error answer names a person and was withheld")]
    UpstreamErrorWithheld,
    /// `server.max_concurrent` requests are in flight.
    #[error("the gate is handling too many requests; retry later")]
    Overloaded,
}

impl GateError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            GateError::Route(RouteError::NotCanonical(_)) => StatusCode::BAD_REQUEST,
            GateError::Route(RouteError::NotFound) => StatusCode::NOT_FOUND,
            GateError::Route(RouteError::MethodNotAllowed(_))
            | GateError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GateError::Auth(_) => StatusCode::UNAUTHORIZED,
            GateError::Resource(_)
            | GateError::InvalidPurpose { .. }
            | GateError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GateError::CaseNotFound(_) | GateError::Denied { .. } => StatusCode::FORBIDDEN,
            GateError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GateError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GateError::CaseRegistryUnavailable
            | GateError::AuditUnavailable
            | GateError::AuditBacklog
            | GateError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            GateError::UpstreamUnavailable
            | GateError::UpstreamTooLarge
            | GateError::UpstreamEncoding
            | GateError::UpstreamAnswerInvalid
            | GateError::UpstreamErrorWithheld => StatusCode::BAD_GATEWAY,
            GateError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &str {
        match self {
            GateError::Route(RouteError::NotCanonical(_)) => "invalidPath",
            GateError::Route(RouteError::NotFound) => "notFound",
            GateError::Route(RouteError::MethodNotAllowed(_))
            | GateError::MethodNotAllowed { .. } => "methodNotAllowed",
            GateError::Auth(e) => e.code(),
            GateError::Resource(e) => e.code(),
            GateError::InvalidPurpose { code, .. } => code,
            GateError::CaseNotFound(_) => "caseNotFound",
            GateError::CaseRegistryUnavailable => "caseRegistryUnavailable",
            GateError::Denied { code, .. } => code,
            GateError::BodyTooLarge(_) => "bodyTooLarge",
            GateError::RequestTimeout(_) => "requestTimeout",
            GateError::BadRequest(_) => "badRequest",
            GateError::AuditUnavailable => "auditUnavailable",
            GateError::AuditBacklog => "auditBacklog",
            GateError::UpstreamUnavailable => "upstreamUnavailable",
            GateError::UpstreamTimeout => "upstreamTimeout",
            GateError::UpstreamTooLarge => "upstreamTooLarge",
            GateError::UpstreamEncoding => "upstreamEncoding",
            GateError::UpstreamAnswerInvalid => "upstreamAnswerInvalid",
            GateError::UpstreamErrorWithheld => "upstreamErrorWithheld",
            GateError::Overloaded => "overloaded",
        }
    }

    /// The offending parameters of a 400 (`invalidParams`): one per refusal, since the gate
    /// stops at the first fault. The name is the parameter the message quotes first (a body key;
    /// `burgerservicenummer.2` for `burgerservicenummer[2]`), the header of a purpose header, or
    /// `path`, `kenteken`, `bsn`, `body`; `request` for a 400 that names nothing. Empty for other
    /// statuses.
    pub fn invalid_params(&self) -> Vec<InvalidParam> {
        if self.status() != StatusCode::BAD_REQUEST {
            return Vec::new();
        }
        let message = self.to_string();
        let quoted = || foutbericht::first_quoted(&message).and_then(foutbericht::param_name);
        let name = match self {
            GateError::Route(RouteError::NotCanonical(_)) => Some("path".to_string()),
            // What it quotes is the client's kenteken, not a parameter name.
            GateError::Resource(ResourceError::InvalidKenteken(_)) => Some("kenteken".to_string()),
            GateError::Resource(ResourceError::InvalidBsn(_)) => {
                quoted().or_else(|| Some("bsn".to_string()))
            }
            GateError::Resource(ResourceError::InvalidBody(_)) | GateError::BadRequest(_) => {
                quoted().or_else(|| Some("body".to_string()))
            }
            GateError::InvalidPurpose { header, .. } => foutbericht::param_name(header),
            _ => None,
        };
        vec![InvalidParam {
            name: name.unwrap_or_else(|| "request".to_string()),
            code: foutbericht::code_or(self.code(), self.status()).to_string(),
            reason: foutbericht::reason(&message),
        }]
    }
}

/// One entry of `invalidParams` (the spec's `InvalidParam`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidParam {
    /// The parameter (`^[a-zA-Z0-9\._]{1,30}$`): a body key (an array item as `key.index`), or
    /// a header name with `_` for `-`.
    pub name: String,
    /// The refusal's code (`^[a-zA-Z0-9]{1,25}$`).
    pub code: String,
    /// What is wrong with it (`^[a-zA-Z0-9\., ]{1,80}$`).
    pub reason: String,
}

/// The problem+json body: the spec's `Foutbericht`, for a 400 its `BadRequestFoutbericht`.
#[derive(Debug, Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    instance: String,
    code: &'a str,
    #[serde(rename = "invalidParams", skip_serializing_if = "Vec::is_empty")]
    invalid_params: Vec<InvalidParam>,
}

/// RFC 9110 section of a status, as the problem `type`.
fn type_uri(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "https://www.rfc-editor.org/rfc/rfc9110#name-400-bad-request",
        401 => "https://www.rfc-editor.org/rfc/rfc9110#name-401-unauthorized",
        403 => "https://www.rfc-editor.org/rfc/rfc9110#name-403-forbidden",
        404 => "https://www.rfc-editor.org/rfc/rfc9110#name-404-not-found",
        405 => "https://www.rfc-editor.org/rfc/rfc9110#name-405-method-not-allowed",
        408 => "https://www.rfc-editor.org/rfc/rfc9110#name-408-request-timeout",
        413 => "https://www.rfc-editor.org/rfc/rfc9110#name-413-content-too-large",
        502 => "https://www.rfc-editor.org/rfc/rfc9110#name-502-bad-gateway",
        503 => "https://www.rfc-editor.org/rfc/rfc9110#name-503-service-unavailable",
        504 => "https://www.rfc-editor.org/rfc/rfc9110#name-504-gateway-timeout",
        _ => "about:blank",
    }
}

/// The Dutch title of a status, as Haal Centraal APIs give it.
fn title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Ten minste één parameter moet worden opgegeven of is onjuist.",
        401 => "Niet correct geauthenticeerd.",
        403 => "U bent niet geautoriseerd voor deze operatie.",
        404 => "Opgevraagde resource bestaat niet.",
        405 => "Gebruikte methode is niet toegestaan.",
        408 => "Het verzoek is niet op tijd ontvangen.",
        413 => "Het verzoek is te groot.",
        502 => "De registratie is niet beschikbaar.",
        503 => "Bron voor deze operatie is niet beschikbaar.",
        504 => "De registratie antwoordde niet op tijd.",
        _ => "Er is een fout opgetreden.",
    }
}

/// Builds the problem+json answer for an error. `instance` is `urn:uuid:<request_id>`; the
/// request id itself is the `X-Request-Id` header.
pub fn problem_response(err: &GateError, request_id: &str) -> Response<Full<Bytes>> {
    let status = err.status();
    let raw_code = err.code();
    let code = foutbericht::code_or(raw_code, status);
    if code != raw_code {
        tracing::warn!(
            code = raw_code,
            replaced_by = code,
            "an error code does not fit the Foutbericht pattern, a generic one was sent"
        );
    }
    let problem = Problem {
        kind: type_uri(status),
        title: title(status),
        status: status.as_u16(),
        detail: foutbericht::detail(&err.to_string()),
        instance: foutbericht::instance(request_id),
        code,
        invalid_params: err.invalid_params(),
    };
    let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    if let GateError::MethodNotAllowed { allow, .. } = err {
        let list: Vec<&str> = allow.iter().map(http::Method::as_str).collect();
        if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
            h.insert(header::ALLOW, v);
        }
    }
    if status == StatusCode::REQUEST_TIMEOUT {
        // RFC 9110 section 15.5.9: the server closes the connection; the rest of the body
        // would otherwise be read as the next request.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    resp
}

/// The Haal Centraal `Foutbericht` patterns, and total functions that fit any text into them.
/// Every member of a refusal passes through here, so a new error variant or policy `@code`
/// conforms without code of its own.
pub mod foutbericht {
    use http::StatusCode;

    /// Longest `title` (`^[a-zA-Z0-9À-ž \.\-]{1,80}$`).
    pub const TITLE_MAX: usize = 80;
    /// Longest `detail` (`^[a-zA-Z0-9À-ž \.\-\(\),]{1,200}$`).
    pub const DETAIL_MAX: usize = 200;
    /// Longest `code` (`^[a-zA-Z0-9]{1,25}$`).
    pub const CODE_MAX: usize = 25;
    /// Longest `invalidParams[].name` (`^[a-zA-Z0-9\._]{1,30}$`).
    pub const NAME_MAX: usize = 30;
    /// Longest `invalidParams[].reason` (`^[a-zA-Z0-9\., ]{1,80}$`).
    pub const REASON_MAX: usize = 80;

    /// Quoted text longer than this is never a name; a word longer than this is masked.
    const WORD_MAX: usize = 40;
    /// A run of this many digits may be a BSN (9 digits) and is masked.
    const DIGITS_MASKED: usize = 9;

    /// The characters of one of the spec's patterns.
    #[derive(Clone, Copy)]
    struct Charset {
        punct: &'static str,
        /// `À-ž` (U+00C0 to U+017E).
        latin: bool,
    }

    const TITLE: Charset = Charset {
        punct: " .-",
        latin: true,
    };
    const DETAIL: Charset = Charset {
        punct: " .-(),",
        latin: true,
    };
    const REASON: Charset = Charset {
        punct: " .,",
        latin: false,
    };

    impl Charset {
        fn allows(self, c: char) -> bool {
            c.is_ascii_alphanumeric()
                || self.punct.contains(c)
                || (self.latin && ('\u{C0}'..='\u{17E}').contains(&c))
        }

        /// What stands in for a character outside the set: the nearest allowed punctuation,
        /// else a space.
        fn substitute(self, c: char) -> char {
            let near = match c {
                ':' | ';' => ',',
                '[' | '{' | '<' => '(',
                ']' | '}' | '>' => ')',
                '!' | '?' => '.',
                _ => ' ',
            };
            if self.allows(near) { near } else { ' ' }
        }
    }

    /// A `title` within the pattern (for titles not written for it).
    pub fn title(text: &str) -> String {
        fit(text, TITLE, TITLE_MAX, "Er is een fout opgetreden.")
    }

    /// A `detail` within the pattern: the message with quoted names unquoted, quoted values and
    /// anything that may be a token or a BSN masked, other characters mapped.
    pub fn detail(text: &str) -> String {
        fit(text, DETAIL, DETAIL_MAX, "Er is een fout opgetreden.")
    }

    /// An `invalidParams[].reason` within the pattern.
    pub fn reason(text: &str) -> String {
        fit(text, REASON, REASON_MAX, "invalid value")
    }

    /// Whether `code` fits `^[a-zA-Z0-9]{1,25}$`.
    pub fn is_code(code: &str) -> bool {
        (1..=CODE_MAX).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    /// `code` if it fits the pattern, else the generic code of `status`.
    pub fn code_or(code: &str, status: StatusCode) -> &str {
        if is_code(code) {
            return code;
        }
        match status.as_u16() {
            400 => "badRequest",
            401 => "invalidToken",
            403 => "notPermitted",
            404 => "notFound",
            405 => "methodNotAllowed",
            408 => "requestTimeout",
            413 => "bodyTooLarge",
            502 => "upstreamUnavailable",
            503 => "unavailable",
            504 => "upstreamTimeout",
            _ => "error",
        }
    }

    /// The `instance` URI of a request: `urn:uuid:<request id>` (RFC 9562 section 4); an id
    /// that is not a UUID becomes `urn:x-request-id:<its letters, digits and hyphens>`.
    pub fn instance(request_id: &str) -> String {
        match uuid::Uuid::try_parse(request_id) {
            Ok(u) => format!("urn:uuid:{}", u.hyphenated()),
            Err(_) => {
                let safe: String = request_id
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .take(64)
                    .collect();
                if safe.is_empty() {
                    "urn:x-request-id:unknown".to_string()
                } else {
                    format!("urn:x-request-id:{safe}")
                }
            }
        }
    }

    /// The text between the first pair of backticks.
    pub fn first_quoted(text: &str) -> Option<&str> {
        let mut parts = text.split('`');
        parts.next()?;
        let quoted = parts.next()?;
        parts.next().map(|_| quoted)
    }

    /// A parameter name within `^[a-zA-Z0-9\._]{1,30}$` from a quoted key or header name: an
    /// array index is a dot segment (`burgerservicenummer[2]` is `burgerservicenummer.2`, as in
    /// the spec's dot-paths) and `-` becomes `_`; `None` for anything that is not a name (a
    /// value the client sent, which is never echoed).
    pub fn param_name(raw: &str) -> Option<String> {
        let (base, indexes) = raw.split_at(raw.find('[').unwrap_or(raw.len()));
        let base_ok = base.starts_with(|c: char| c.is_ascii_alphabetic())
            && base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !has_digit_run(base, 5);
        if !base_ok {
            return None;
        }
        let mut name = base.replace('-', "_");
        if !indexes.is_empty() {
            // `[2]` or `[2][0]`: digits between brackets.
            for part in indexes.split_terminator(']') {
                let digits = part.strip_prefix('[')?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                name.push('.');
                name.push_str(digits);
            }
            if !indexes.ends_with(']') {
                return None;
            }
        }
        (name.len() <= NAME_MAX).then_some(name)
    }

    /// Quoted text shown as is: a short name (a key, a header, an algorithm), not a value.
    fn is_shown_name(quoted: &str) -> bool {
        (1..=WORD_MAX).contains(&quoted.len())
            && quoted.starts_with(|c: char| c.is_ascii_alphabetic())
            && quoted
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '[' | ']'))
            && !has_digit_run(quoted, 5)
    }

    fn has_digit_run(text: &str, len: usize) -> bool {
        let mut run = 0;
        for c in text.chars() {
            run = if c.is_ascii_digit() { run + 1 } else { 0 };
            if run >= len {
                return true;
            }
        }
        false
    }

    /// Fits `text` into `set` and `1..=max` characters; `fallback` when nothing is left.
    fn fit(text: &str, set: Charset, max: usize, fallback: &str) -> String {
        // 1. Quoted spans: names unquoted, values masked (odd parts lie between backticks).
        let mut unquoted = String::with_capacity(text.len());
        for (i, part) in text.split('`').enumerate() {
            if i % 2 == 0 || is_shown_name(part) {
                unquoted.push_str(part);
            } else {
                unquoted.push_str("(value)");
            }
        }
        // 2. Words that may be a token, digit runs that may be a BSN.
        let mut masked = String::with_capacity(unquoted.len());
        for word in unquoted.split_whitespace() {
            if !masked.is_empty() {
                masked.push(' ');
            }
            if word.chars().count() > WORD_MAX {
                masked.push_str("(value)");
            } else if has_digit_run(word, DIGITS_MASKED) {
                masked.push_str(&mask_digit_runs(word));
            } else {
                masked.push_str(word);
            }
        }
        // 3. Characters outside the pattern, then spaces collapsed and the length cut at a word.
        let mapped: String = masked
            .chars()
            .map(|c| if set.allows(c) { c } else { set.substitute(c) })
            .collect();
        let mut out = String::with_capacity(mapped.len());
        for word in mapped.split(' ').filter(|w| !w.is_empty()) {
            let sep = usize::from(!out.is_empty());
            if out.chars().count() + sep + word.chars().count() > max {
                if out.is_empty() {
                    out = word.chars().take(max).collect();
                }
                break;
            }
            if sep == 1 {
                out.push(' ');
            }
            out.push_str(word);
        }
        if out.is_empty() {
            fallback.to_string()
        } else {
            out
        }
    }

    fn mask_digit_runs(word: &str) -> String {
        let mut out = String::with_capacity(word.len());
        let mut run = String::new();
        let flush = |run: &mut String, out: &mut String| {
            if run.len() >= DIGITS_MASKED {
                out.push_str("(number)");
            } else {
                out.push_str(run);
            }
            run.clear();
        };
        for c in word.chars() {
            if c.is_ascii_digit() {
                run.push(c);
            } else {
                flush(&mut run, &mut out);
                out.push(c);
            }
        }
        flush(&mut run, &mut out);
        out
    }
}

#[cfg(test)]
#[path = "../tests/common/foutbericht.rs"]
mod spec_check;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const REQUEST_ID: &str = "0190f3a2-7c4e-7d21-9b3a-5e6f70819203";
    const TOKEN: &str =
        "eyJhbGciOiJFUzI1NiIsImtpZCI6ImRlbW8ifQ.eyJzdWIiOiJlbXAtMDQyIn0.c2lnbmF0dXJlLXN0dWZm";
    const BSN: &str = "999993653";

    fn body_of(resp: Response<Full<Bytes>>) -> (u16, serde_json::Value, Vec<u8>) {
        let status = resp.status().as_u16();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(async { resp.into_body().collect().await.unwrap().to_bytes() });
        (
            status,
            serde_json::from_slice(&bytes).unwrap(),
            bytes.to_vec(),
        )
    }

    /// One sample of every variant (hostile text where a variant carries text). The `match`
    /// has no wildcard: a variant added to `GateError`, `AuthError`, `ResourceError` or
    /// `RouteError` does not compile here until it has a sample, and then is checked below.
    fn every_variant() -> Vec<GateError> {
        let hostile = format!(
            "`{BSN}` in \"quotes\": {TOKEN} ; <tag> é {{x}} [1] `a-b_c` {}",
            "z".repeat(300)
        );
        let auth = vec![
            AuthError::Missing,
            AuthError::NotBearer,
            AuthError::TooLarge { limit: 8192 },
            AuthError::Malformed(hostile.clone()),
            AuthError::AlgorithmNotAllowed("none".into()),
            AuthError::AlgorithmMismatch {
                kid: TOKEN.into(),
                alg: "HS256",
                key_alg: "ES256",
            },
            AuthError::UnknownKey(TOKEN.into()),
            AuthError::KidRequired("RS256"),
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::IssuedInFuture(3600),
            AuthError::LifetimeTooLong {
                lifetime: 86_400,
                max: 3600,
            },
            AuthError::ExpiresTooLate {
                remaining: 86_400,
                max: 3600,
            },
            AuthError::WrongIssuer("https://idp.example/realms/x".into()),
            AuthError::WrongAudience("purpose-gate".into()),
            AuthError::MissingClaim("sub".into()),
            AuthError::InvalidClaim {
                name: "roles".into(),
                expected: "an array of strings",
            },
        ];
        for a in &auth {
            match a {
                AuthError::Missing
                | AuthError::NotBearer
                | AuthError::TooLarge { .. }
                | AuthError::Malformed(_)
                | AuthError::AlgorithmNotAllowed(_)
                | AuthError::AlgorithmMismatch { .. }
                | AuthError::UnknownKey(_)
                | AuthError::KidRequired(_)
                | AuthError::BadSignature
                | AuthError::Expired
                | AuthError::NotYetValid
                | AuthError::IssuedInFuture(_)
                | AuthError::LifetimeTooLong { .. }
                | AuthError::ExpiresTooLate { .. }
                | AuthError::WrongIssuer(_)
                | AuthError::WrongAudience(_)
                | AuthError::MissingClaim(_)
                | AuthError::InvalidClaim { .. } => {}
            }
        }
        let mut all: Vec<GateError> = auth.into_iter().map(GateError::Auth).collect();
        all.extend([
            GateError::Route(RouteError::NotCanonical(format!(
                "`/a/../{BSN}`: dot segment"
            ))),
            GateError::Route(RouteError::NotFound),
            GateError::Route(RouteError::MethodNotAllowed("PATCH".into())),
            GateError::Resource(ResourceError::InvalidBody(hostile.clone())),
            GateError::Resource(ResourceError::InvalidBody(format!(
                "unknown key `{BSN}` for query type `RaadpleegMetBurgerservicenummer`"
            ))),
            GateError::Resource(ResourceError::InvalidBsn(
                "`burgerservicenummer[3]` is not a valid BSN: it fails the 11-proef".into(),
            )),
            GateError::Resource(ResourceError::InvalidKenteken(
                "`xx-99-9x!` is not a kenteken: expected 6 letters or digits, hyphens allowed"
                    .into(),
            )),
            GateError::MethodNotAllowed {
                method: "DELETE".into(),
                allow: vec![http::Method::POST],
            },
            GateError::InvalidPurpose {
                code: "invalidCaseId",
                header: "x-case-id".into(),
                message: format!(
                    "`{BSN}!` is not a case id: expected up to 64 letters, digits or `-_.:/`"
                ),
            },
            GateError::CaseNotFound(format!("Z-{BSN}")),
            GateError::CaseRegistryUnavailable,
            GateError::Denied {
                code: "caseClosed".into(),
                reason: hostile.clone(),
            },
            GateError::BodyTooLarge(1_048_576),
            GateError::RequestTimeout(10_000),
            GateError::BadRequest(hostile),
            GateError::AuditUnavailable,
            GateError::AuditBacklog,
            GateError::UpstreamUnavailable,
            GateError::UpstreamTimeout,
            GateError::UpstreamTooLarge,
            GateError::UpstreamEncoding,
            GateError::UpstreamAnswerInvalid,
            GateError::UpstreamErrorWithheld,
            GateError::Overloaded,
        ]);
        for e in &all {
            match e {
                GateError::Route(RouteError::NotCanonical(_))
                | GateError::Route(RouteError::NotFound)
                | GateError::Route(RouteError::MethodNotAllowed(_))
                | GateError::Auth(_)
                | GateError::Resource(ResourceError::InvalidBody(_))
                | GateError::Resource(ResourceError::InvalidBsn(_))
                | GateError::Resource(ResourceError::InvalidKenteken(_))
                | GateError::MethodNotAllowed { .. }
                | GateError::InvalidPurpose { .. }
                | GateError::CaseNotFound(_)
                | GateError::CaseRegistryUnavailable
                | GateError::Denied { .. }
                | GateError::BodyTooLarge(_)
                | GateError::RequestTimeout(_)
                | GateError::BadRequest(_)
                | GateError::AuditUnavailable
                | GateError::AuditBacklog
                | GateError::UpstreamUnavailable
                | GateError::UpstreamTimeout
                | GateError::UpstreamTooLarge
                | GateError::UpstreamEncoding
                | GateError::UpstreamAnswerInvalid
                | GateError::UpstreamErrorWithheld
                | GateError::Overloaded => {}
            }
        }
        all
    }

    #[test]
    fn every_variant_answers_a_valid_foutbericht_without_echoing_secrets() {
        for err in every_variant() {
            let (status, v, bytes) = body_of(problem_response(&err, REQUEST_ID));
            assert_eq!(status, err.status().as_u16());
            spec_check::assert_valid(status, &bytes, &format!("{err:?}"));
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(BSN), "{err:?} echoes a BSN: {text}");
            assert!(!text.contains(TOKEN), "{err:?} echoes a token: {text}");
            assert!(
                !text.contains("eyJ"),
                "{err:?} echoes part of a token: {text}"
            );
            assert_eq!(v["code"], err.code(), "{err:?}: its own code fits");
            assert_eq!(v["instance"], format!("urn:uuid:{REQUEST_ID}"));
            assert_eq!(
                v.get("invalidParams").is_some(),
                status == 400,
                "{err:?}: invalidParams on a 400 only"
            );
        }
    }

    #[test]
    fn every_policy_code_and_reason_answers_a_valid_foutbericht() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut codes = vec![
            crate::policy::CODE_NOT_PERMITTED.to_string(),
            crate::policy::CODE_POLICY_ERROR.to_string(),
            "requestDenied".to_string(),
        ];
        let mut reasons = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "cedar") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            codes.extend(annotations(&text, "code"));
            reasons.extend(annotations(&text, "reason"));
        }
        assert!(
            codes.len() > 10,
            "the shipped policies carry @code annotations"
        );
        assert!(!reasons.is_empty());
        for code in &codes {
            assert!(
                foutbericht::is_code(code),
                "policy code `{code}` does not fit ^[a-zA-Z0-9]{{1,25}}$"
            );
            for reason in &reasons {
                let err = GateError::Denied {
                    code: code.clone(),
                    reason: reason.clone(),
                };
                let (status, v, bytes) = body_of(problem_response(&err, REQUEST_ID));
                spec_check::assert_valid(status, &bytes, &format!("{code}: {reason}"));
                assert_eq!(v["code"], code.as_str());
            }
        }
    }

    /// The string values of `@name("...")` annotations.
    fn annotations(text: &str, name: &str) -> Vec<String> {
        let open = format!("@{name}(\"");
        text.split(open.as_str())
            .skip(1)
            .filter_map(|rest| rest.split('"').next().map(str::to_string))
            .collect()
    }

    #[test]
    fn problem_has_foutbericht_shape_and_request_id() {
        let resp = problem_response(
            &GateError::Denied {
                code: "caseClosed".into(),
                reason: "the case is closed".into(),
            },
            REQUEST_ID,
        );
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
        assert_eq!(
            resp.headers().get("x-request-id").map(|v| v.as_bytes()),
            Some(REQUEST_ID.as_bytes())
        );
        let (_, v, _) = body_of(resp);
        assert_eq!(v["status"], 403);
        assert_eq!(v["code"], "caseClosed");
        assert_eq!(v["detail"], "the case is closed");
        assert_eq!(v["instance"], format!("urn:uuid:{REQUEST_ID}"));
        assert!(v["type"].as_str().unwrap().contains("403"));
    }

    #[test]
    fn bad_request_names_the_offending_body_key() {
        let cases = [
            (
                r#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993654"],"fields":["naam"]}"#,
                "burgerservicenummer.0",
                "invalidBsn",
            ),
            (
                r#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"]}"#,
                "fields",
                "invalidBody",
            ),
            (
                r#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"],"foo":1}"#,
                "foo",
                "invalidBody",
            ),
            (
                r#"{"type":"ZoekMetPostcodeEnHuisnummer","postcode":"1234AB","fields":["naam"]}"#,
                "huisnummer",
                "invalidBody",
            ),
            (
                r#"{"type":"Onbekend","fields":["naam"]}"#,
                "type",
                "invalidBody",
            ),
            (r#"{"type": "#, "body", "invalidBody"),
            (
                r#"{"type":"RaadpleegMetBurgerservicenummer","999993653":1,"fields":["naam"]}"#,
                "body",
                "invalidBody",
            ),
        ];
        for (body, name, code) in cases {
            let err =
                GateError::from(crate::resource::parse_brp_body(body.as_bytes()).unwrap_err());
            let (status, v, bytes) = body_of(problem_response(&err, REQUEST_ID));
            assert_eq!(status, 400, "{body}");
            spec_check::assert_valid(status, &bytes, body);
            let params = v["invalidParams"].as_array().unwrap();
            assert_eq!(params.len(), 1, "{body}");
            assert_eq!(params[0]["name"], name, "{body}: {v}");
            assert_eq!(params[0]["code"], code, "{body}");
            assert!(
                !String::from_utf8_lossy(&bytes).contains(BSN),
                "{body}: {v}"
            );
        }
    }

    #[test]
    fn bad_purpose_header_names_the_header() {
        let err = GateError::InvalidPurpose {
            code: "breakGlassReasonTooShort",
            header: "x-break-glass".into(),
            message: "a break-glass reason needs at least 20 characters".into(),
        };
        let (_, v, _) = body_of(problem_response(&err, REQUEST_ID));
        assert_eq!(v["invalidParams"][0]["name"], "x_break_glass");
        assert_eq!(v["invalidParams"][0]["code"], "breakGlassReasonTooShort");
        assert_eq!(
            v["invalidParams"][0]["reason"],
            "a break glass reason needs at least 20 characters"
        );
        assert_eq!(
            v["detail"],
            "a break-glass reason needs at least 20 characters"
        );
    }

    #[test]
    fn code_that_does_not_fit_is_replaced_by_the_generic_one() {
        let err = GateError::Denied {
            code: "breakGlassNotForActionAtAll".into(),
            reason: "no".into(),
        };
        let (status, v, bytes) = body_of(problem_response(&err, REQUEST_ID));
        spec_check::assert_valid(status, &bytes, "long code");
        assert_eq!(v["code"], "notPermitted");
        assert_eq!(
            foutbericht::code_or("with-hyphen", StatusCode::BAD_GATEWAY),
            "upstreamUnavailable"
        );
        assert_eq!(
            foutbericht::code_or("caseClosed", StatusCode::FORBIDDEN),
            "caseClosed"
        );
    }

    #[test]
    fn param_names_fit_the_pattern() {
        let name = foutbericht::param_name;
        assert_eq!(name("fields").as_deref(), Some("fields"));
        assert_eq!(name("fields[12]").as_deref(), Some("fields.12"));
        assert_eq!(name("a[1][2]").as_deref(), Some("a.1.2"));
        assert_eq!(name("x-case-id").as_deref(), Some("x_case_id"));
        assert_eq!(
            name("verblijfplaats.huisnummer").as_deref(),
            Some("verblijfplaats.huisnummer")
        );
        for bad in [
            "",
            "999993653",
            "a[",
            "a[x]",
            "a[1]b",
            "a b",
            "é",
            "Z12345",
            &"a".repeat(31),
        ] {
            assert_eq!(name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn instance_is_a_urn_that_keeps_the_request_id() {
        assert_eq!(
            foutbericht::instance(REQUEST_ID),
            format!("urn:uuid:{REQUEST_ID}")
        );
        assert_eq!(
            foutbericht::instance("0190-req"),
            "urn:x-request-id:0190-req"
        );
        assert_eq!(foutbericht::instance("\"<>"), "urn:x-request-id:unknown");
    }

    #[test]
    fn detail_keeps_names_and_masks_values() {
        assert_eq!(
            foutbericht::detail("missing key `fields`: the fields to return"),
            "missing key fields, the fields to return"
        );
        assert_eq!(
            foutbericht::detail("`burgerservicenummer[2]` repeats an earlier BSN"),
            "burgerservicenummer(2) repeats an earlier BSN"
        );
        assert_eq!(
            foutbericht::detail("case `Z 2026/1` was not found"),
            "case (value) was not found"
        );
        assert_eq!(
            foutbericht::detail("bsn 999993653 and 12345678"),
            "bsn (number) and 12345678"
        );
        assert_eq!(
            foutbericht::detail(&format!("token {TOKEN} seen")),
            "token (value) seen"
        );
        assert_eq!(foutbericht::detail("\"\""), "Er is een fout opgetreden.");
        assert_eq!(foutbericht::detail("``"), "(value)");
    }

    /// Text of every kind (a deterministic pseudo-random walk over a hostile alphabet) always
    /// comes out within the patterns.
    #[test]
    fn fitted_text_always_matches_the_patterns() {
        let alphabet: Vec<char> = "aZ09 .-(),:;`'\"{}[]<>/\\_é€ž\u{17F}ÿ\u{0}\n\t…"
            .chars()
            .collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let detail_ok = |s: &str| {
            (1..=foutbericht::DETAIL_MAX).contains(&s.chars().count())
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || " .-(),".contains(c)
                        || ('\u{C0}'..='\u{17E}').contains(&c)
                })
        };
        let title_ok = |s: &str| {
            (1..=foutbericht::TITLE_MAX).contains(&s.chars().count())
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || " .-".contains(c)
                        || ('\u{C0}'..='\u{17E}').contains(&c)
                })
        };
        let reason_ok = |s: &str| {
            (1..=foutbericht::REASON_MAX).contains(&s.chars().count())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || " .,".contains(c))
        };
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 400) as usize;
            let mut s = String::new();
            let mut x = seed;
            for _ in 0..len {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                s.push(alphabet[(x >> 33) as usize % alphabet.len()]);
            }
            assert!(
                detail_ok(&foutbericht::detail(&s)),
                "{s:?} -> {:?}",
                foutbericht::detail(&s)
            );
            assert!(title_ok(&foutbericht::title(&s)), "{s:?}");
            assert!(reason_ok(&foutbericht::reason(&s)), "{s:?}");
            if let Some(n) = foutbericht::param_name(&s) {
                assert!((1..=foutbericht::NAME_MAX).contains(&n.len()));
                assert!(
                    n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
                );
            }
        }
    }

    /// The oracle itself: the answers the gate used to give (a bare request id as `instance`,
    /// backticks and colons in `detail`, a 400 without `invalidParams`) are refused.
    #[test]
    fn the_oracle_refuses_what_does_not_conform() {
        let ok = serde_json::json!({"type": "about:blank", "title": "Fout.", "status": 403,
            "detail": "the case is closed", "instance": format!("urn:uuid:{REQUEST_ID}"), "code": "caseClosed"});
        assert!(spec_check::check(403, ok.to_string().as_bytes()).is_ok());
        let mut bad = Vec::new();
        for (key, value) in [
            ("instance", serde_json::json!(REQUEST_ID)),
            (
                "detail",
                serde_json::json!("missing key `fields`: the fields"),
            ),
            ("code", serde_json::json!("breakGlassActionNotAllowed")),
            ("title", serde_json::json!("Fout, echt")),
        ] {
            let mut v = ok.clone();
            v[key] = value;
            bad.push((key, v));
        }
        let mut no_status = ok.clone();
        no_status.as_object_mut().unwrap().remove("status");
        bad.push(("status", no_status));
        for (key, v) in bad {
            let refused = spec_check::check(403, v.to_string().as_bytes()).is_err();
            if key == "status" || spec_check::spec().is_some() {
                assert!(refused, "a wrong `{key}` is refused: {v}");
            }
        }
        assert!(
            spec_check::check(400, ok.to_string().as_bytes()).is_err(),
            "a 400 needs invalidParams"
        );
    }

    #[test]
    fn audit_failure_is_503_with_retry_after() {
        let resp = problem_response(&GateError::AuditUnavailable, REQUEST_ID);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
    }
}
