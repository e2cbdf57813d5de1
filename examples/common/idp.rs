//! An example OpenID Connect identity provider for the auditor console's demo and tests:
//! discovery, an authorize endpoint with a login form for demo users, a token endpoint with
//! PKCE (`S256`), and the JWKS of its Ed25519 signing key (ID tokens signed `EdDSA`).
//!
//! This is test equipment, not an identity provider: demo users with demo passwords, codes in
//! memory, one client.

// Included with `#[path]` by several example and test crates, each using a different part.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// A demo user: login name, password, display name, roles.
#[derive(Debug, Clone)]
pub struct User {
    pub login: String,
    pub password: String,
    pub name: String,
    pub roles: Vec<String>,
}

/// The demo users: `auditor`/`auditor` (role `auditor`), `medewerker`/`medewerker` (role
/// `medewerker`, no console access).
pub fn demo_users() -> Vec<User> {
    vec![
        User {
            login: "auditor".into(),
            password: "auditor".into(),
            name: "A. Auditor".into(),
            roles: vec!["auditor".into()],
        },
        User {
            login: "medewerker".into(),
            password: "medewerker".into(),
            name: "M. Medewerker".into(),
            roles: vec!["medewerker".into()],
        },
    ]
}

struct Code {
    user: User,
    client_id: String,
    redirect_uri: String,
    nonce: String,
    challenge: String,
}

struct Idp {
    issuer: String,
    client_id: String,
    client_secret: String,
    users: Vec<User>,
    key: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
    codes: Mutex<HashMap<String, Code>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn answer(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn pairs(s: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(s).into_owned().collect()
}

impl Idp {
    fn login_form(&self, q: &HashMap<String, String>, error: &str) -> Response<Full<Bytes>> {
        let hidden: String = [
            "client_id",
            "redirect_uri",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
        ]
        .iter()
        .map(|k| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(q.get(*k).map(String::as_str).unwrap_or(""))
            )
        })
        .collect();
        let users: String = self
            .users
            .iter()
            .map(|u| {
                format!(
                    "<li><code>{0}</code> / <code>{0}</code> ({1})</li>",
                    esc(&u.login),
                    esc(&u.roles.join(", "))
                )
            })
            .collect();
        let error = if error.is_empty() {
            String::new()
        } else {
            format!("<p id=\"error\" role=\"alert\">{}</p>", esc(error))
        };
        answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Example IdP: log in</title></head><body><main><h1>Example identity provider</h1>{error}<form method=\"post\" action=\"/authorize\">{hidden}<p><label for=\"username\">User</label> <input id=\"username\" name=\"username\" autocomplete=\"username\" required></p><p><label for=\"password\">Password</label> <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></p><p><button id=\"login\" type=\"submit\">Log in</button></p></form><p>Demo users:</p><ul>{users}</ul></main></body></html>"
            ),
        )
    }

    fn authorize(&self, f: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        if get("client_id") != self.client_id || get("code_challenge_method") != "S256" {
            return answer(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "unknown client or no S256 PKCE challenge".into(),
            );
        }
        let Some(user) = self
            .users
            .iter()
            .find(|u| u.login == get("username") && u.password == get("password"))
        else {
            return self.login_form(f, "Unknown user or wrong password.");
        };
        let code = b64(&rand::random::<[u8; 24]>());
        let redirect_uri = get("redirect_uri");
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.insert(
            code.clone(),
            Code {
                user: user.clone(),
                client_id: get("client_id"),
                redirect_uri: redirect_uri.clone(),
                nonce: get("nonce"),
                challenge: get("code_challenge"),
            },
        );
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", &get("state"))
            .finish();
        let mut r = answer(StatusCode::SEE_OTHER, "text/plain", String::new());
        if let Ok(v) = format!("{redirect_uri}?{query}").parse() {
            r.headers_mut().insert(hyper::header::LOCATION, v);
        }
        r
    }

    fn token(&self, f: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let bad = |e: &str| {
            answer(
                StatusCode::BAD_REQUEST,
                "application/json",
                json!({"error": e}).to_string(),
            )
        };
        let code = {
            let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
            codes.remove(&get("code"))
        };
        let Some(code) = code else {
            return bad("invalid_grant");
        };
        if get("grant_type") != "authorization_code"
            || get("client_id") != code.client_id
            || get("redirect_uri") != code.redirect_uri
            || get("client_secret") != self.client_secret
        {
            return bad("invalid_client");
        }
        if b64(&Sha256::digest(get("code_verifier").as_bytes())) != code.challenge {
            return bad("invalid_grant");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = json!({
            "iss": self.issuer, "sub": code.user.login, "aud": code.client_id,
            "iat": now, "exp": now + 300, "nonce": code.nonce,
            "name": code.user.name, "roles": code.user.roles,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("example-idp-1".into());
        match jsonwebtoken::encode(&header, &claims, &self.key) {
            Ok(id_token) => answer(
                StatusCode::OK,
                "application/json",
                json!({"access_token": b64(&rand::random::<[u8; 16]>()), "token_type": "Bearer", "expires_in": 300, "id_token": id_token}).to_string(),
            ),
            Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query = pairs(req.uri().query().unwrap_or("").as_bytes());
        let post = req.method() == hyper::Method::POST;
        let body = if post {
            match req.into_body().collect().await {
                Ok(b) => pairs(&b.to_bytes()),
                Err(_) => HashMap::new(),
            }
        } else {
            HashMap::new()
        };
        match (post, path.as_str()) {
            (false, "/.well-known/openid-configuration") => answer(
                StatusCode::OK,
                "application/json",
                json!({
                    "issuer": self.issuer,
                    "authorization_endpoint": format!("{}/authorize", self.issuer),
                    "token_endpoint": format!("{}/token", self.issuer),
                    "jwks_uri": format!("{}/jwks", self.issuer),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["EdDSA"],
                    "code_challenge_methods_supported": ["S256"],
                })
                .to_string(),
            ),
            (false, "/jwks") => answer(
                StatusCode::OK,
                "application/json",
                json!({"keys": [self.jwk]}).to_string(),
            ),
            (false, "/authorize") => self.login_form(&query, ""),
            (true, "/authorize") => self.authorize(&body),
            (true, "/token") => self.token(&body),
            _ => answer(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
        }
    }
}

/// Starts the example IdP on `listener` for one client; its issuer is `http://<addr>`.
pub async fn spawn(
    listener: TcpListener,
    client_id: &str,
    client_secret: &str,
    users: Vec<User>,
) -> Result<(String, tokio::task::JoinHandle<()>), String> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = signing
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let issuer = format!("http://{addr}");
    let idp = Arc::new(Idp {
        issuer: issuer.clone(),
        client_id: client_id.into(),
        client_secret: client_secret.into(),
        users,
        key,
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "example-idp-1",
                    "x": b64(signing.verifying_key().as_bytes())}),
        codes: Mutex::new(HashMap::new()),
    });
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let idp = idp.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let idp = idp.clone();
                    async move { Ok::<_, Infallible>(idp.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok((issuer, task))
}
