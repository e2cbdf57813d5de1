//! OpenID Connect login of the auditor console: authorization code flow with PKCE (RFC 7636,
//! `S256`) against the configured issuer (OpenID Connect Core 1.0 §3.1).
//!
//! Guarantees: the issuer's endpoints come from its discovery document
//! (`/.well-known/openid-configuration`, whose `issuer` must equal the configured one); the ID
//! token is verified with `jsonwebtoken` against a key of the issuer's JWKS (by `kid`, the JWKS
//! re-read once when the `kid` is unknown): an asymmetric signature (RS/PS/ES/EdDSA, never
//! HMAC or `none`), `iss`, `aud` = the client id, `exp`, and the `nonce` of this login. The
//! roles come from the configured claim (a string or an array of strings). Refuses: anything
//! else, with a one-line reason that never contains a token.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ConsoleConfig;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The issuer's endpoints (the parts of the discovery document the console uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// The auditor an ID token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sub: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
}

/// The console's OpenID Connect client.
pub struct Oidc {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    redirect_url: String,
    role_claim: String,
    client: HttpsClient,
    discovery: ArcSwapOption<Discovery>,
    jwks: ArcSwapOption<JwkSet>,
}

/// The PKCE `code_challenge` of a verifier (`S256`).
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl Oidc {
    /// A client for `[console]` (reads the client secret and CA files; no network yet).
    pub fn new(cfg: &ConsoleConfig) -> Result<Oidc, String> {
        let client_secret = match &cfg.client_secret_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("`console.client_secret_file` = `{}`: {e}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &cfg.issuer_ca_file {
            let extra = crate::tls::load_roots(ca, "console.issuer_ca_file")?;
            for cert in extra.roots {
                roots.roots.push(cert);
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Oidc {
            issuer: cfg.issuer.trim_end_matches('/').to_string(),
            client_id: cfg.client_id.clone(),
            client_secret,
            redirect_url: cfg.redirect_url.clone(),
            role_claim: cfg.role_claim.clone(),
            client: Client::builder(TokioExecutor::new()).build(https),
            discovery: ArcSwapOption::empty(),
            jwks: ArcSwapOption::empty(),
        })
    }

    async fn fetch(&self, req: http::Request<Full<Bytes>>, what: &str) -> Result<Bytes, String> {
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| format!("the issuer's {what} did not answer within 10s"))?
            .map_err(|e| format!("the issuer's {what} is unreachable: {e}"))?;
        let status = resp.status();
        let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await
            .map_err(|_| format!("the issuer's {what} answer did not arrive within 10s"))?
            .map_err(|e| format!("the issuer's {what} answer broke off: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the issuer's {what} answered {status}"));
        }
        if body.len() > 1 << 20 {
            return Err(format!("the issuer's {what} answer is larger than 1 MiB"));
        }
        Ok(body)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, String> {
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("the issuer's {what} URL `{url}`: {e}"))?;
        let body = self.fetch(req, what).await?;
        serde_json::from_slice(&body).map_err(|e| format!("the issuer's {what} is not valid: {e}"))
    }

    /// The discovery document (read once, again after a failure).
    pub async fn discovery(&self) -> Result<Arc<Discovery>, String> {
        if let Some(d) = self.discovery.load_full() {
            return Ok(d);
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let d: Discovery = self.get_json(&url, "discovery document").await?;
        if d.issuer.trim_end_matches('/') != self.issuer {
            return Err(format!(
                "the discovery document names issuer `{}`, not `{}`",
                d.issuer, self.issuer
            ));
        }
        let d = Arc::new(d);
        self.discovery.store(Some(d.clone()));
        Ok(d)
    }

    /// The URL that starts a login at the issuer.
    pub async fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<String, String> {
        let d = self.discovery().await?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("scope", "openid profile")
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge(verifier))
            .append_pair("code_challenge_method", "S256")
            .finish();
        let sep = if d.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!("{}{sep}{query}", d.authorization_endpoint))
    }

    /// Redeems `code` at the token endpoint and verifies the ID token.
    pub async fn redeem(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Identity, String> {
        let d = self.discovery().await?;
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &self.redirect_url)
                .append_pair("client_id", &self.client_id)
                .append_pair("code_verifier", verifier);
            if let Some(secret) = &self.client_secret {
                form.append_pair("client_secret", secret);
            }
            form.finish()
        };
        let req = http::Request::post(&d.token_endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| format!("the token endpoint `{}`: {e}", d.token_endpoint))?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            id_token: Option<String>,
        }
        let body = self.fetch(req, "token endpoint").await?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| format!("the token endpoint's answer is not valid: {e}"))?;
        let id_token = answer
            .id_token
            .ok_or("the token endpoint's answer has no `id_token`")?;
        self.verify(&id_token, nonce).await
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        for refresh in [false, true] {
            let set = match self.jwks.load_full() {
                Some(s) if !refresh => s,
                _ => {
                    let d = self.discovery().await?;
                    let set: JwkSet = self.get_json(&d.jwks_uri, "JWKS").await?;
                    let set = Arc::new(set);
                    self.jwks.store(Some(set.clone()));
                    set
                }
            };
            if let Some(jwk) = set.find(kid) {
                return DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("the issuer's key `{kid}` cannot be used: {e}"));
            }
        }
        Err(format!("the issuer's JWKS has no key `{kid}`"))
    }

    /// Verifies an ID token of this login.
    pub async fn verify(&self, id_token: &str, nonce: &str) -> Result<Identity, String> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| format!("the ID token is not a JWT: {e}"))?;
        const ASYMMETRIC: [Algorithm; 9] = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(format!(
                "the ID token is signed with `{:?}`: only asymmetric signatures are accepted",
                header.alg
            ));
        }
        let kid = header.kid.ok_or("the ID token names no key (`kid`)")?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.client_id]);
        validation.set_issuer(&[&self.issuer, &format!("{}/", self.issuer)]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<serde_json::Value>(id_token, &key, &validation)
            .map_err(|e| format!("the ID token was not accepted: {e}"))?;
        let claims = data.claims;
        let got_nonce = claims.get("nonce").and_then(|v| v.as_str()).unwrap_or("");
        if !crate::console::session::same_token(got_nonce, nonce) {
            return Err("the ID token's `nonce` is not this login's".into());
        }
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or("the ID token has no `sub`")?
            .to_string();
        let name = ["name", "preferred_username"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(|v| v.as_str()))
            .map(str::to_string);
        let roles = match claims.get(&self.role_claim) {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Identity { sub, name, roles })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
