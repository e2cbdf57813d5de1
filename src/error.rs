//! Errors to clients: every refusal becomes an `application/problem+json` answer in the shape of
//! the Haal Centraal `Foutbericht` (RFC 9457 fields `type`, `title`, `status`, `detail`, `instance`,
//! plus `code`). Status codes are decided here and nowhere else. Tokens are never echoed.

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
    /// A purpose header is malformed (400).
    #[error("{message}")]
    InvalidPurpose { code: &'static str, message: String },
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
}

/// The problem+json body (Haal Centraal `Foutbericht`).
#[derive(Debug, Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    instance: &'a str,
    code: &'a str,
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

/// Builds the problem+json answer for an error; `request_id` becomes `instance`.
pub fn problem_response(err: &GateError, request_id: &str) -> Response<Full<Bytes>> {
    let status = err.status();
    let problem = Problem {
        kind: type_uri(status),
        title: title(status),
        status: status.as_u16(),
        detail: err.to_string(),
        instance: request_id,
        code: err.code(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_has_foutbericht_shape_and_request_id() {
        let resp = problem_response(
            &GateError::Denied {
                code: "caseClosed".into(),
                reason: "the case is closed".into(),
            },
            "0190-req",
        );
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
        let body = resp.into_body();
        let bytes = futures_body(body);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["status"], 403);
        assert_eq!(v["code"], "caseClosed");
        assert_eq!(v["detail"], "the case is closed");
        assert_eq!(v["instance"], "0190-req");
        assert!(v["type"].as_str().unwrap().contains("403"));
    }

    #[test]
    fn audit_failure_is_503_with_retry_after() {
        let resp = problem_response(&GateError::AuditUnavailable, "r");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
    }

    fn futures_body(body: Full<Bytes>) -> Bytes {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { body.collect().await.unwrap().to_bytes() })
    }
}
