//! The TOML configuration file.
//!
//! Guarantees: unknown keys are an error; relative paths are resolved against the directory of
//! the config file; every value has a default or a "missing key" message; every error names the
//! file, the key and what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::model::Action;
use crate::policy::Evaluator;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file `{path}`: {message}")]
    Invalid { path: String, message: String },
}

/// A duration written as `"30s"`, `"500ms"`, `"2m"` or `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`.
    pub fn parse(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}` has no unit: expected e.g. `30s`, `500ms`, `2m`"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration: expected e.g. `30s`, `500ms`, `2m`"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => {
                return Err(format!(
                    "`{s}` has an unknown unit: expected `ms`, `s`, `m` or `h`"
                ));
            }
        };
        Ok(Dur(d))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// The whole configuration, with paths resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this gate instance, written into every decision record.
    #[serde(default = "default_gate_id")]
    pub gate_id: String,
    #[serde(default)]
    pub server: ServerConfig,
    pub auth: AuthConfig,
    #[serde(default)]
    pub policies: PoliciesConfig,
    #[serde(default)]
    pub cases: CasesConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub headers: HeadersConfig,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Extra routes; the BRP and RDW routes exist by default for upstreams named `brp` and `rdw`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `[route_defaults]`: settings of the built-in BRP and RDW routes.
    #[serde(default)]
    pub route_defaults: RouteDefaults,
    /// `[route_enforce]`: route path template → `enforce`, overriding any route's setting.
    #[serde(default)]
    pub route_enforce: BTreeMap<String, bool>,
    /// `[admin]`: the admin listener (health, readiness, metrics); off when absent.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[log]`: operational logs.
    #[serde(default)]
    pub log: LogConfig,
    /// `[logboek]`: Logboek Dataverwerkingen export over OTLP/HTTP; off when absent.
    #[serde(default)]
    pub logboek: Option<LogboekConfig>,
    /// `[store]`: the central PostgreSQL store (`docs/scale-out.md`); off when absent.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// `[console]`: the auditor console (`purpose-gate console`); absent: no console.
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
    /// Directory of the config file; relative paths were resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[console]`: the auditor console, a web application over the audit log (`[audit] dir`) for
/// privacy officers, behind OpenID Connect login (see `docs/auditing.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address of the console. Default `127.0.0.1:8443`.
    #[serde(default = "default_console_listen")]
    pub listen: SocketAddr,
    /// `[console.tls]`: TLS as on the gate's listener; plain HTTP when absent (then the
    /// session cookie is not `Secure`: only behind a TLS-terminating proxy or on loopback).
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// This console's name in the `access` records it writes. Default `console-1`.
    #[serde(default = "default_console_name")]
    pub name: String,
    /// The OpenID Connect issuer (its `/.well-known/openid-configuration` is read).
    pub issuer: String,
    /// The console's client id at the issuer (the ID token's audience).
    pub client_id: String,
    /// File holding the client secret (sent as `client_secret_post`); none for a public
    /// client (PKCE only).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The console's callback URL as registered at the issuer, ending in `/callback`.
    pub redirect_url: String,
    /// The ID token claim that holds the user's roles (a string or an array). Default `roles`.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The role that may use the console; others get 403. Default `auditor`.
    #[serde(default = "default_console_role")]
    pub role: String,
    /// File holding the key (at least 32 bytes) that signs the session cookie.
    pub session_key_file: PathBuf,
    /// A session unused this long ends. Default `15m`.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// How long a page waits for the log's writer to make its access record durable. Default `10s`.
    #[serde(default = "default_access_timeout")]
    pub access_timeout: Dur,
    /// PEM bundle of CAs for the issuer's HTTPS endpoints, besides the web PKI roots.
    #[serde(default)]
    pub issuer_ca_file: Option<PathBuf>,
    /// The log's public key (SPKI PEM) offered with proofs; default: derived from
    /// `[audit] signing_key` when the console can read it.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// The central store (`postgres://…`, as `[store] url`): *Overzicht* (per gate, with its
    /// shipping lag), the searches and reports, *Signalen* with its reviews, and *Bewijs* read
    /// every gate's shipped records from it instead of `[audit] dir`. Access and review
    /// records are still written through the writer of `[audit] dir` (a gate's log, which that
    /// gate ships). Default: none.
    #[serde(default)]
    pub db: Option<String>,
}

fn default_console_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_console_name() -> String {
    "console-1".into()
}

fn default_role_claim() -> String {
    "roles".into()
}

fn default_console_role() -> String {
    "auditor".into()
}

fn default_idle_timeout() -> Dur {
    Dur(Duration::from_secs(15 * 60))
}

fn default_access_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

fn default_gate_id() -> String {
    "gate-1".to_string()
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted (413 above).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest request head accepted (431 above).
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
    /// Time a client gets to send the request head.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout: Dur,
    /// Time a client gets to send the whole request body once the head is in (408 after).
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Dur,
    /// Time in-flight requests get to finish at shutdown.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Dur,
    /// Most requests handled at once; above it, 503 `overloaded` with `Retry-After`.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// `[server.tls]`: TLS on the traffic listener; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
}

/// `[server.tls]`: the listener's certificate and the optional client-certificate check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM certificate chain, the gate's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key of the certificate (PKCS#8, RSA or SEC1).
    pub key_file: PathBuf,
    /// PEM bundle of the CAs whose client certificates are accepted; none when absent.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// `true`: a handshake without a client certificate from `client_ca_file` is refused;
    /// `false`: a client certificate is optional, but checked when presented.
    #[serde(default)]
    pub require_client_cert: bool,
}

fn default_max_concurrent() -> usize {
    1024
}

/// `[route_defaults]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDefaults {
    /// `false` puts the built-in routes in shadow mode: decide and audit, forward regardless.
    #[serde(default = "default_true")]
    pub enforce: bool,
}

impl Default for RouteDefaults {
    fn default() -> Self {
        RouteDefaults { enforce: true }
    }
}

fn default_true() -> bool {
    true
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`, e.g. `127.0.0.1:9090`; off when absent.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json` (one JSON object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax (e.g. `info,purpose_gate=debug`); `RUST_LOG` wins when set.
    #[serde(default)]
    pub level: Option<String>,
}

/// `[store]`: the central PostgreSQL store; off when absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user@host:port/db`; a password may be in the URL, better in `password_file`.
    pub url: String,
    /// File holding the password (first line; trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `disable` or `verify-full` (TLS, certificate and host name checked against `ca_file` or
    /// the web PKI roots). Default: `disable` for a loopback host, `verify-full` otherwise.
    /// (libpq's `require`, TLS without checking the certificate, is not offered.)
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// CA certificates (PEM) to check the server's certificate with.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Refuse lookups (503 `auditBacklog`) while the oldest unshipped record is older than this.
    #[serde(default)]
    pub max_backlog_age: Option<Dur>,
    /// How often other gates' counts are read from the store.
    #[serde(default = "default_counter_refresh")]
    pub counter_refresh: Dur,
    /// Most records in one shipping transaction.
    #[serde(default = "default_ship_batch")]
    pub ship_batch: usize,
}

fn default_counter_refresh() -> Dur {
    Dur(Duration::from_secs(1))
}

fn default_ship_batch() -> usize {
    5000
}

/// `[store] sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    VerifyFull,
}

impl StoreConfig {
    /// A config for a bare URL (the auditor commands' `--db URL`).
    pub fn from_url(url: &str) -> StoreConfig {
        StoreConfig {
            url: url.to_string(),
            password_file: None,
            sslmode: None,
            ca_file: None,
            max_backlog_age: None,
            counter_refresh: default_counter_refresh(),
            ship_batch: default_ship_batch(),
        }
    }

    /// Checks the values (not the connection).
    pub fn check(&self) -> Result<(), String> {
        let parsed = self.url.parse::<tokio_postgres::Config>().map_err(|_| {
            "`store.url` is not a PostgreSQL URL, expected e.g. `postgres://gate@db:5432/purpose_gate`"
                .to_string()
        })?;
        if parsed.get_hosts().is_empty() {
            return Err("`store.url` names no host".into());
        }
        if self.counter_refresh.0.is_zero() {
            return Err("`store.counter_refresh` must be more than 0ms".into());
        }
        if self.ship_batch == 0 {
            return Err("`store.ship_batch` must be at least 1".into());
        }
        if self.max_backlog_age.is_some_and(|d| d.0.is_zero()) {
            return Err("`store.max_backlog_age` must be more than 0s (or absent)".into());
        }
        Ok(())
    }
}

/// `[logboek]`: one span per data subject per processing, exported as OTLP/HTTP JSON to a
/// Logboek Dataverwerkingen collector (see `docs/logboek.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogboekConfig {
    /// The OTLP/HTTP traces endpoint, e.g. `http://collector:4318/v1/traces`.
    pub otlp_endpoint: String,
    /// `dpl.core.processing_activity_id` when the request has no `X-Verwerking` header: a URI
    /// of the processing activity in the register of processing activities.
    pub processing_activity_id: String,
    /// `service.name` of the exported resource.
    #[serde(default = "default_logboek_service")]
    pub service_name: String,
    /// Longest one export may take; it is retried after it.
    #[serde(default = "default_logboek_timeout")]
    pub timeout: Dur,
    /// No longer used: spans are read from the audit log, not queued (accepted so that
    /// existing configurations still load).
    #[serde(default = "default_logboek_queue")]
    pub queue_size: usize,
    /// Longest wait between two attempts of a failing export (the wait doubles from 100ms).
    #[serde(default = "default_logboek_backoff")]
    pub max_backoff: Dur,
    /// Most spans in one export request.
    #[serde(default = "default_logboek_batch")]
    pub max_batch: usize,
    /// File with the key (at least 32 bytes) for `dpl.core.data_subject_id`
    /// (HMAC-SHA256); `audit.subject_key` when not set. One of the two is required.
    #[serde(default)]
    pub subject_key: Option<PathBuf>,
}

fn default_logboek_service() -> String {
    "purpose-gate".into()
}
fn default_logboek_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_logboek_queue() -> usize {
    4096
}
fn default_logboek_backoff() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_logboek_batch() -> usize {
    512
}

impl LogboekConfig {
    /// The key file for subject pseudonyms: `logboek.subject_key`, else `audit.subject_key`.
    pub fn key_file<'a>(&'a self, audit: &'a AuditConfig) -> Option<&'a Path> {
        self.subject_key.as_deref().or(audit.subject_key.as_deref())
    }

    fn check(&self, audit: &AuditConfig) -> Result<(), String> {
        let shown = crate::model::truncate_for_message(&self.otlp_endpoint);
        let uri: http::Uri = self
            .otlp_endpoint
            .parse()
            .map_err(|_| format!("`logboek.otlp_endpoint` = `{shown}` is not a valid URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "`logboek.otlp_endpoint` = `{shown}`: expected an `https://` (or `http://`) URL with a host, e.g. `http://collector:4318/v1/traces`"
            ));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("`logboek.otlp_endpoint` must not hold credentials".into());
        }
        let id = self.processing_activity_id.trim();
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(
                "`logboek.processing_activity_id` must be a non-empty single-line text, e.g. a URI in the register of processing activities"
                    .into(),
            );
        }
        if self.service_name.trim().is_empty() {
            return Err("`logboek.service_name` must not be empty".into());
        }
        if self.timeout.0.is_zero() {
            return Err("`logboek.timeout` must be more than 0ms".into());
        }
        if self.max_backoff.0.is_zero() {
            return Err("`logboek.max_backoff` must be more than 0ms".into());
        }
        if self.max_batch == 0 {
            return Err("`logboek.max_batch` must be at least 1".into());
        }
        if self.key_file(audit).is_none() {
            return Err(
                "missing key `logboek.subject_key` (or `audit.subject_key`): `dpl.core.data_subject_id` is always pseudonymised"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The format of operational logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_max_header() -> usize {
    16 * 1024
}
fn default_header_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_body_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_shutdown_grace() -> Dur {
    Dur(Duration::from_secs(30))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            max_header_bytes: default_max_header(),
            header_read_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            shutdown_grace: default_shutdown_grace(),
            max_concurrent: default_max_concurrent(),
            tls: None,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// JWKS file with the identity provider's public keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL, fetched at start and refetched (rate-limited) on an unknown `kid`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// File holding an HS256 shared secret; HS256 is accepted only when this is set.
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    /// Longest lifetime a token may have: `exp - iat` (or `exp - now` without `iat`).
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime: Dur,
    /// Shortest interval between two JWKS refetches.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_min_refresh: Dur,
    /// Largest `Authorization` header value accepted.
    #[serde(default = "default_max_token")]
    pub max_token_bytes: usize,
    /// Number of verified tokens kept until they expire.
    #[serde(default = "default_token_cache")]
    pub token_cache_size: usize,
    #[serde(default)]
    pub claims: ClaimNames,
}

impl AuthConfig {
    /// Tokens of `issuer` for `audience`, verified with the keys of a JWKS file; every other
    /// setting at its default (for an embedded gate).
    pub fn with_jwks_file(issuer: &str, audience: &str, jwks_file: PathBuf) -> AuthConfig {
        AuthConfig {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            jwks_file: Some(jwks_file),
            jwks_url: None,
            hs256_secret_file: None,
            leeway: default_leeway(),
            max_token_lifetime: default_max_token_lifetime(),
            jwks_min_refresh: default_jwks_refresh(),
            max_token_bytes: default_max_token(),
            token_cache_size: default_token_cache(),
            claims: ClaimNames::default(),
        }
    }
}

fn default_leeway() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_max_token_lifetime() -> Dur {
    Dur(Duration::from_secs(12 * 3600))
}
fn default_jwks_refresh() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_max_token() -> usize {
    8 * 1024
}
fn default_token_cache() -> usize {
    10_000
}

/// `[auth.claims]`: which claims carry the employee's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimNames {
    #[serde(default = "default_sub")]
    pub subject: String,
    #[serde(default = "default_roles")]
    pub roles: String,
    #[serde(default = "default_org")]
    pub org: String,
    /// The claim that names the employee's department (a string, or a dotted path into nested
    /// objects), recorded as `principal.department`; optional in the token. Default `department`.
    #[serde(default = "default_department")]
    pub department: String,
}

fn default_sub() -> String {
    "sub".into()
}
fn default_roles() -> String {
    "roles".into()
}
fn default_org() -> String {
    "org".into()
}
fn default_department() -> String {
    "department".into()
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            subject: default_sub(),
            roles: default_roles(),
            org: default_org(),
            department: default_department(),
        }
    }
}

/// `[policies]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Directory with `*.cedarschema`, `*.cedar` and `entities.json`.
    #[serde(default = "default_policies_dir")]
    pub dir: PathBuf,
    /// How often the directory is checked for changed files (`0s`: only on SIGHUP).
    #[serde(default = "default_policies_poll")]
    pub poll_interval: Dur,
    /// Which evaluator decides: `prepared` (default, the policies prepared at load) or
    /// `cedar` (Cedar's own `Authorizer`); both give the same answers (`policy test` checks it).
    #[serde(default)]
    pub evaluator: Evaluator,
}

fn default_policies_poll() -> Dur {
    Dur(Duration::from_secs(2))
}

fn default_policies_dir() -> PathBuf {
    PathBuf::from("policies")
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        PoliciesConfig {
            dir: default_policies_dir(),
            poll_interval: default_policies_poll(),
            evaluator: Evaluator::default(),
        }
    }
}

/// `[cases]`: where cases come from. Exactly one of `file` (a JSON file of cases) and `zgw_url`
/// (a ZGW Zaken API); with neither, `file = "cases.json"`. The other keys apply to the Zaken API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesConfig {
    /// JSON file of cases, reloaded when it changes.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How often the case file is checked for changes.
    #[serde(default = "default_cases_poll")]
    pub poll_interval: Dur,
    /// Base URL of a ZGW Zaken API, e.g. `https://zaken.gemeente.example/zaken/api/v1`.
    #[serde(default)]
    pub zgw_url: Option<String>,
    /// Client id of the gate at the Zaken API (`iss` and `client_id` of the ZGW JWT).
    #[serde(default)]
    pub zgw_client_id: Option<String>,
    /// File holding the shared secret the ZGW JWT is signed with (HS256).
    #[serde(default)]
    pub zgw_secret_file: Option<PathBuf>,
    /// RSIN of the organisation whose zaken are looked up (`bronorganisatie` filter).
    #[serde(default)]
    pub bronorganisatie: Option<String>,
    /// How long a zaak that was found is trusted.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: Dur,
    /// How long "no such zaak" is trusted; `cache_ttl` when not set.
    #[serde(default)]
    pub negative_ttl: Option<Dur>,
    /// Longest a lookup may take, all pages included.
    #[serde(default = "default_cases_timeout")]
    pub timeout: Dur,
    /// `objectTypeOverige` of the zaakobjecten that hold a kenteken.
    #[serde(default = "default_vehicle_object_type")]
    pub vehicle_object_type: String,
    /// `[cases.zaaktypen]`: zaaktype URL → Cedar `CaseType` id.
    #[serde(default)]
    pub zaaktypen: BTreeMap<String, String>,
    /// `[cases.organisaties]`: RSIN (`bronorganisatie`) → organisation code of the employees.
    #[serde(default)]
    pub organisaties: BTreeMap<String, String>,
}

fn default_cases_poll() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_cache_ttl() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_cases_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_vehicle_object_type() -> String {
    "kenteken".into()
}

impl Default for CasesConfig {
    fn default() -> Self {
        CasesConfig {
            file: None,
            poll_interval: default_cases_poll(),
            zgw_url: None,
            zgw_client_id: None,
            zgw_secret_file: None,
            bronorganisatie: None,
            cache_ttl: default_cache_ttl(),
            negative_ttl: None,
            timeout: default_cases_timeout(),
            vehicle_object_type: default_vehicle_object_type(),
            zaaktypen: BTreeMap::new(),
            organisaties: BTreeMap::new(),
        }
    }
}

impl CasesConfig {
    /// Fills in the default case file when no source is named and resolves relative paths.
    fn resolve(&mut self, base: &Path) {
        if self.file.is_none() && self.zgw_url.is_none() {
            self.file = Some(PathBuf::from("cases.json"));
        }
        for p in [self.file.as_mut(), self.zgw_secret_file.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        let Some(url) = &self.zgw_url else {
            for (key, set) in [
                ("zgw_client_id", self.zgw_client_id.is_some()),
                ("zgw_secret_file", self.zgw_secret_file.is_some()),
                ("bronorganisatie", self.bronorganisatie.is_some()),
                ("negative_ttl", self.negative_ttl.is_some()),
                // Keys with defaults: refused when set to anything else (their default is harmless).
                ("cache_ttl", self.cache_ttl != default_cache_ttl()),
                ("timeout", self.timeout != default_cases_timeout()),
                (
                    "vehicle_object_type",
                    self.vehicle_object_type != default_vehicle_object_type(),
                ),
                ("zaaktypen", !self.zaaktypen.is_empty()),
                ("organisaties", !self.organisaties.is_empty()),
            ] {
                if set {
                    return Err(format!(
                        "`cases.{key}` is set but `cases.zgw_url` is not: it only applies to a ZGW Zaken API"
                    ));
                }
            }
            return Ok(());
        };
        if self.file.is_some() {
            return Err("`cases.file` and `cases.zgw_url` are both set: set one".into());
        }
        check_zgw_url(url)?;
        match &self.zgw_client_id {
            None => {
                return Err(
                    "missing key `cases.zgw_client_id`: a ZGW Zaken API needs the gate's client id"
                        .into(),
                );
            }
            Some(id) if id.trim().is_empty() || id.chars().any(char::is_control) => {
                return Err("`cases.zgw_client_id` must be a non-empty single-line text".into());
            }
            Some(_) => {}
        }
        if self.zgw_secret_file.is_none() {
            return Err(
                "missing key `cases.zgw_secret_file`: a ZGW Zaken API needs the secret the gate signs its JWT with"
                    .into(),
            );
        }
        let rsins = self.bronorganisatie.iter().chain(self.organisaties.keys());
        for rsin in rsins {
            if crate::model::Bsn::parse(rsin).is_err() {
                return Err(format!(
                    "`cases.bronorganisatie` or `cases.organisaties`: `{}` is not an RSIN: expected 9 digits passing the 11-proef",
                    crate::model::truncate_for_message(rsin)
                ));
            }
        }
        if self.timeout.0.is_zero() {
            return Err("`cases.timeout` must be more than 0ms".into());
        }
        let t = &self.vehicle_object_type;
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!(
                "`cases.vehicle_object_type` = `{}`: expected lowercase letters and `_`, as `objectTypeOverige`",
                crate::model::truncate_for_message(t)
            ));
        }
        for (url, id) in &self.zaaktypen {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!(
                    "`cases.zaaktypen`: `{}` is not an http(s) zaaktype URL",
                    crate::model::truncate_for_message(url)
                ));
            }
            if id.trim().is_empty() {
                return Err(format!(
                    "`cases.zaaktypen.\"{url}\"` is empty: expected a case type id"
                ));
            }
        }
        for (rsin, org) in &self.organisaties {
            if org.trim().is_empty() {
                return Err(format!(
                    "`cases.organisaties.{rsin}` is empty: expected an organisation code"
                ));
            }
        }
        Ok(())
    }
}

/// An absolute http(s) URL with a host, without credentials, query or fragment.
fn check_zgw_url(url: &str) -> Result<(), String> {
    let shown = crate::model::truncate_for_message(url);
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("`cases.zgw_url` = `{shown}` is not a valid URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "`cases.zgw_url` = `{shown}`: expected an `https://` (or `http://`) URL with a host"
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "`cases.zgw_url` must not hold credentials: use `cases.zgw_secret_file`".into(),
        );
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "`cases.zgw_url` = `{shown}`: expected a base URL without query or fragment"
        ));
    }
    Ok(())
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the JSON Lines segments.
    #[serde(default = "default_audit_dir")]
    pub dir: PathBuf,
    /// A new segment is started when the current one reaches this size.
    #[serde(default = "default_segment_bytes")]
    pub segment_max_bytes: u64,
    /// Most records written with one fdatasync.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Ed25519 PKCS#8 PEM private key (`purpose-gate audit keygen`); when set, the writer
    /// writes signed checkpoints. Default: none (no checkpoints).
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// A checkpoint after this many records. Default 10000.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// And at least this often while records arrive (`"0s"`: only by count and at shutdown).
    /// Default `"60s"`.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: Dur,
    /// The log's name: the origin line of checkpoints and the signing key's name.
    /// Default `"purpose-gate/audit"`; use something unique such as `gemeente.example/audit`.
    #[serde(default = "default_origin")]
    pub origin: String,
    /// File holding the key (at least 32 bytes) for pseudonymised subjects: records store
    /// `hmac-sha256:<hex>` of HMAC-SHA256(key, BSN) instead of the BSN. Default: none.
    #[serde(default)]
    pub subject_key: Option<PathBuf>,
    /// Working hours for `audit signals --config`: days and hours, in UTC unless an offset is
    /// given (`"Mon-Fri 07:00-19:00 +01:00"`). Default `"Mon-Fri 07:00-19:00"`.
    #[serde(default = "default_working_hours")]
    pub working_hours: String,
    /// Employees' surnames for the shared-surname signal of `audit signals --config`
    /// (JSON or CSV, see `docs/auditing.md`). Default: none.
    #[serde(default)]
    pub employee_directory: Option<PathBuf>,
}

fn default_checkpoint_every() -> u64 {
    10_000
}
fn default_checkpoint_interval() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_origin() -> String {
    "purpose-gate/audit".into()
}
fn default_working_hours() -> String {
    "Mon-Fri 07:00-19:00".into()
}

fn default_audit_dir() -> PathBuf {
    PathBuf::from("audit")
}
fn default_segment_bytes() -> u64 {
    crate::audit::DEFAULT_SEGMENT_MAX_BYTES
}
fn default_max_batch() -> usize {
    crate::audit::DEFAULT_MAX_BATCH
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: default_audit_dir(),
            segment_max_bytes: default_segment_bytes(),
            max_batch: default_max_batch(),
            signing_key: None,
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval: default_checkpoint_interval(),
            origin: default_origin(),
            subject_key: None,
            working_hours: default_working_hours(),
            employee_directory: None,
        }
    }
}

impl From<&AuditConfig> for crate::audit::AuditOptions {
    fn from(config: &AuditConfig) -> crate::audit::AuditOptions {
        crate::audit::AuditOptions {
            dir: config.dir.clone(),
            segment_max_bytes: config.segment_max_bytes,
            max_batch: config.max_batch,
        }
    }
}

impl AuditConfig {
    /// Opens the log as configured here, as the gate's writer: with signed checkpoints when
    /// `signing_key` is set (the key is loaded here; a bad key is an error), appending the
    /// reviews that `audit review` spools.
    pub fn open(&self) -> Result<crate::audit::AuditLog, crate::audit::AuditError> {
        use crate::audit::checkpoint::{CheckpointOptions, NoteSigner};
        let checkpoints = match &self.signing_key {
            Some(path) => Some(CheckpointOptions {
                signer: NoteSigner::load(path, &self.origin)
                    .map_err(|e| crate::audit::AuditError::Unavailable(e.to_string()))?,
                every: self.checkpoint_every.max(1),
                interval: self.checkpoint_interval.0,
            }),
            None => None,
        };
        crate::audit::AuditLog::open_for_gate(&self.into(), checkpoints)
    }
}

/// `[headers]`: the names of the purpose headers and which extra client headers are forwarded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    #[serde(default = "default_case_header")]
    pub case_id: String,
    #[serde(default = "default_break_glass_header")]
    pub break_glass: String,
    #[serde(default = "default_doelbinding_header")]
    pub doelbinding: String,
    #[serde(default = "default_verwerking_header")]
    pub verwerking: String,
    /// Extra client headers passed on to the upstream, besides the built-in allowlist
    /// (`Accept`, `Accept-Language`, `Content-Type`, `User-Agent`, `tracestate`, `Accept-Crs`,
    /// `Content-Crs` and the two purpose headers). Identity and credential headers cannot be
    /// named here.
    #[serde(default)]
    pub forward: Vec<String>,
}

/// Client headers that may never be forwarded, whatever `headers.forward` says.
pub const NEVER_FORWARDED: &[&str] = &[
    "authorization",
    "cookie",
    "x-request-id",
    "traceparent",
    "forwarded",
    "x-real-ip",
    "x-gebruiker",
    "x-user",
    "host",
    "content-length",
    "accept-encoding",
    "fsc-transaction-id",
];

fn default_case_header() -> String {
    "x-case-id".into()
}
fn default_break_glass_header() -> String {
    "x-break-glass".into()
}
fn default_doelbinding_header() -> String {
    "x-doelbinding".into()
}
fn default_verwerking_header() -> String {
    "x-verwerking".into()
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            case_id: default_case_header(),
            break_glass: default_break_glass_header(),
            doelbinding: default_doelbinding_header(),
            verwerking: default_verwerking_header(),
            forward: Vec::new(),
        }
    }
}

/// `[upstreams.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL (`http://host:port[/prefix]` or `https://…`).
    pub url: String,
    /// PEM bundle of the CAs trusted for an `https://` upstream, replacing the built-in
    /// (webpki) roots; the built-in roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain the gate presents to an `https://` upstream (mTLS).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file` (PKCS#8, RSA or SEC1).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Time the upstream gets to answer (504 after).
    #[serde(default = "default_upstream_timeout")]
    pub timeout: Dur,
    /// Time to establish a connection (502 after).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Headers added to every forwarded request (e.g. an API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers added to every forwarded request, the value read from a file (secrets).
    #[serde(default)]
    pub header_files: BTreeMap<String, PathBuf>,
    /// Largest upstream response body passed on (502 above).
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// The upstream is reached through an FSC Outway: each forwarded request carries a new
    /// `Fsc-Transaction-Id`, and the id of the transaction is recorded in its outcome record
    /// (see `forward`).
    #[serde(default)]
    pub fsc: bool,
}

/// Request headers the gate sets itself on every forwarded request; an upstream's `headers`
/// and `header_files` cannot name them.
pub const GATE_SET_UPSTREAM_HEADERS: &[&str] = &[
    "accept-encoding",
    "fsc-transaction-id",
    "x-request-id",
    "traceparent",
];

fn default_upstream_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_max_response() -> usize {
    16 * 1024 * 1024
}

/// Which registry plug-in serves a route (`kind = "…"`): how the request names its data
/// subjects and how the answer is read (`crate::registry`, the table of kinds).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct RouteKind(pub std::borrow::Cow<'static, str>);

impl RouteKind {
    /// Haal Centraal BRP Personen: a query in the JSON body.
    pub const BRP_PERSONEN: RouteKind = RouteKind(std::borrow::Cow::Borrowed("brp-personen"));
    /// Haal Centraal BRP Bewoning: an address and a date or period in the JSON body.
    pub const BRP_BEWONING: RouteKind = RouteKind(std::borrow::Cow::Borrowed("brp-bewoning"));
    /// A kenteken in the path parameter `{kenteken}` (RDW).
    pub const KENTEKEN: RouteKind = RouteKind(std::borrow::Cow::Borrowed("kenteken"));
    /// A BSN in the path parameter `{bsn}`.
    pub const BSN: RouteKind = RouteKind(std::borrow::Cow::Borrowed("bsn"));

    /// The kind's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[[routes]]`: one route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Path template on the gate, e.g. `/rdw/voertuigen/{kenteken}`.
    pub path: String,
    /// Name of an `[upstreams.NAME]`.
    pub upstream: String,
    /// Path template at the upstream (same parameters).
    pub upstream_path: String,
    pub kind: RouteKind,
    /// Cedar action for path routes; BRP routes derive it from the query type.
    #[serde(default, deserialize_with = "de_action")]
    pub action: Option<Action>,
    /// `false`: shadow mode — decide and audit (`"enforced": false`), forward regardless.
    #[serde(default = "default_true")]
    pub enforce: bool,
}

fn de_action<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Action>, D::Error> {
    let s = String::deserialize(d)?;
    crate::registry::Registries::standard()
        .route_action(&s)
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown action `{s}`: expected one of {}",
                crate::registry::Registries::standard().route_actions_listed()
            ))
        })
}

impl Config {
    /// Reads, parses and checks the config file, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Config::parse(&text, &base).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses config text; `base` is the directory relative paths are resolved against.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| one_line_toml_error(&e))?;
        cfg.base_dir = base.to_path_buf();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut cfg.policies.dir);
        cfg.cases.resolve(base);
        resolve(&mut cfg.audit.dir);
        for p in [
            cfg.audit.signing_key.as_mut(),
            cfg.audit.subject_key.as_mut(),
            cfg.audit.employee_directory.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
        if let Some(p) = cfg.auth.jwks_file.as_mut() {
            resolve(p);
        }
        if let Some(p) = cfg.logboek.as_mut().and_then(|l| l.subject_key.as_mut()) {
            resolve(p);
        }
        if let Some(s) = cfg.store.as_mut() {
            for p in [s.password_file.as_mut(), s.ca_file.as_mut()]
                .into_iter()
                .flatten()
            {
                resolve(p);
            }
        }
        if let Some(p) = cfg.auth.hs256_secret_file.as_mut() {
            resolve(p);
        }
        for up in cfg.upstreams.values_mut() {
            for p in up.header_files.values_mut() {
                resolve(p);
            }
            for p in [
                up.ca_file.as_mut(),
                up.client_cert_file.as_mut(),
                up.client_key_file.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                resolve(p);
            }
        }
        if let Some(console) = cfg.console.as_mut() {
            resolve(&mut console.session_key_file);
            for p in [
                console.client_secret_file.as_mut(),
                console.issuer_ca_file.as_mut(),
                console.public_key_file.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                resolve(p);
            }
            if let Some(tls) = console.tls.as_mut() {
                resolve(&mut tls.cert_file);
                resolve(&mut tls.key_file);
                if let Some(p) = tls.client_ca_file.as_mut() {
                    resolve(p);
                }
            }
        }
        if let Some(tls) = cfg.server.tls.as_mut() {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
            if let Some(p) = tls.client_ca_file.as_mut() {
                resolve(p);
            }
        }
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        match (&self.auth.jwks_file, &self.auth.jwks_url) {
            (None, None) if self.auth.hs256_secret_file.is_none() => {
                return Err(
                    "missing key `auth.jwks_file` or `auth.jwks_url`: the gate needs the identity provider's keys"
                        .into(),
                );
            }
            (Some(_), Some(_)) => {
                return Err("`auth.jwks_file` and `auth.jwks_url` are both set: set one".into());
            }
            _ => {}
        }
        if let Some(u) = &self.auth.jwks_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(format!("`auth.jwks_url` = `{u}` is not an http(s) URL"));
        }
        if let Some(tls) = &self.server.tls
            && tls.require_client_cert
            && tls.client_ca_file.is_none()
        {
            return Err(
                "missing key `server.tls.client_ca_file`: `require_client_cert = true` needs the CAs of the client certificates"
                    .into(),
            );
        }
        for (name, up) in &self.upstreams {
            let https = up.url.starts_with("https://");
            if !https && !up.url.starts_with("http://") {
                return Err(format!(
                    "`upstreams.{name}.url` = `{}`: expected an `http://` or `https://` URL",
                    up.url
                ));
            }
            if !https {
                for (key, set) in [
                    ("ca_file", up.ca_file.is_some()),
                    ("client_cert_file", up.client_cert_file.is_some()),
                    ("client_key_file", up.client_key_file.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "`upstreams.{name}.{key}` is set but `upstreams.{name}.url` is not an `https://` URL"
                        ));
                    }
                }
            }
            match (&up.client_cert_file, &up.client_key_file) {
                (Some(_), None) => {
                    return Err(format!(
                        "missing key `upstreams.{name}.client_key_file`: `client_cert_file` needs its private key"
                    ));
                }
                (None, Some(_)) => {
                    return Err(format!(
                        "missing key `upstreams.{name}.client_cert_file`: `client_key_file` needs its certificate"
                    ));
                }
                _ => {}
            }
            if up.url.parse::<http::Uri>().is_err() {
                return Err(format!(
                    "`upstreams.{name}.url` = `{}` is not a valid URL",
                    up.url
                ));
            }
            for h in up.headers.keys().chain(up.header_files.keys()) {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(format!(
                        "`upstreams.{name}.headers`: `{h}` is not a valid header name"
                    ));
                }
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !self.upstreams.contains_key(&r.upstream) {
                return Err(format!(
                    "`routes[{i}].upstream` = `{}`: no `[upstreams.{}]` is configured",
                    r.upstream, r.upstream
                ));
            }
            match crate::registry::Registries::standard().get(r.kind.as_str()) {
                None => {
                    return Err(format!(
                        "`routes[{i}].kind` = `{}`: not a registry kind; expected one of {}",
                        r.kind.as_str(),
                        crate::registry::Registries::standard().kinds_listed()
                    ));
                }
                Some(reg) if reg.route_takes_action() && r.action.is_none() => {
                    return Err(format!(
                        "missing key `routes[{i}].action`: path routes need a Cedar action"
                    ));
                }
                Some(_) => {}
            }
            if http::Method::from_bytes(r.method.as_bytes()).is_err() {
                return Err(format!(
                    "`routes[{i}].method` = `{}` is not an HTTP method",
                    r.method
                ));
            }
        }
        for (key, h) in [
            ("case_id", &self.headers.case_id),
            ("break_glass", &self.headers.break_glass),
            ("doelbinding", &self.headers.doelbinding),
            ("verwerking", &self.headers.verwerking),
        ] {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(format!(
                    "`headers.{key}` = `{h}` is not a valid header name"
                ));
            }
        }
        self.cases.check()?;
        for (name, up) in &self.upstreams {
            for (key, h) in up
                .headers
                .keys()
                .map(|h| ("headers", h))
                .chain(up.header_files.keys().map(|h| ("header_files", h)))
            {
                if GATE_SET_UPSTREAM_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "`upstreams.{name}.{key}`: `{h}` is set by the gate on every forwarded request and cannot be configured"
                    ));
                }
            }
        }
        for h in &self.headers.forward {
            let lower = h.to_ascii_lowercase();
            let credential = self
                .upstreams
                .values()
                .flat_map(|u| u.headers.keys().chain(u.header_files.keys()))
                .any(|k| k.eq_ignore_ascii_case(h));
            if NEVER_FORWARDED.contains(&lower.as_str())
                || lower.starts_with("x-forwarded-")
                || lower.starts_with("proxy-")
                || credential
                || lower == self.headers.case_id.to_ascii_lowercase()
                || lower == self.headers.break_glass.to_ascii_lowercase()
            {
                return Err(format!(
                    "`headers.forward`: `{h}` is an identity, credential or gate header and is never forwarded"
                ));
            }
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(format!(
                    "`headers.forward`: `{h}` is not a valid header name"
                ));
            }
        }
        if self.audit.max_batch == 0 {
            return Err("`audit.max_batch` must be at least 1".into());
        }
        if self.audit.checkpoint_every == 0 {
            return Err("`audit.checkpoint_every` must be at least 1".into());
        }
        let origin = &self.audit.origin;
        if origin.is_empty() || origin.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(format!(
                "`audit.origin` = `{origin}`: expected a name without spaces or `+`, e.g. `gemeente.example/audit`"
            ));
        }
        crate::audit::report::WorkingHours::parse(&self.audit.working_hours)
            .map_err(|e| format!("`audit.working_hours`: {e}"))?;
        if self.server.max_concurrent == 0 {
            return Err("`server.max_concurrent` must be at least 1".into());
        }
        if self.auth.max_token_lifetime.0.is_zero() {
            return Err("`auth.max_token_lifetime` must be more than 0s".into());
        }
        if self.server.body_timeout.0.is_zero() {
            return Err("`server.body_timeout` must be more than 0ms".into());
        }
        if let Some(l) = &self.logboek {
            l.check(&self.audit)?;
        }
        if let Some(s) = &self.store {
            s.check()?;
        }
        let routes = self.effective_routes();
        for path in self.route_enforce.keys() {
            if !routes.iter().any(|r| &r.path == path) {
                return Err(format!(
                    "`route_enforce`: no route has the path `{}`",
                    crate::model::truncate_for_message(path)
                ));
            }
        }
        Ok(())
    }

    /// The routes in effect: the configured ones, then the default BRP Personen and BRP
    /// Bewoning routes for an upstream named `brp` and the RDW routes for one named `rdw`.
    pub fn effective_routes(&self) -> Vec<RouteConfig> {
        let mut routes = self.routes.clone();
        if self.upstreams.contains_key("brp") {
            routes.push(RouteConfig {
                method: "POST".into(),
                path: "/haalcentraal/api/brp/personen".into(),
                upstream: "brp".into(),
                upstream_path: "/personen".into(),
                kind: RouteKind::BRP_PERSONEN,
                action: None,
                enforce: self.route_defaults.enforce,
            });
            routes.push(RouteConfig {
                method: "POST".into(),
                path: "/haalcentraal/api/bewoning/bewoningen".into(),
                upstream: "brp".into(),
                upstream_path: "/bewoningen".into(),
                kind: RouteKind::BRP_BEWONING,
                action: None,
                enforce: self.route_defaults.enforce,
            });
        }
        if self.upstreams.contains_key("rdw") {
            routes.push(RouteConfig {
                method: "GET".into(),
                path: "/rdw/voertuigen/{kenteken}".into(),
                upstream: "rdw".into(),
                upstream_path: "/voertuigen/{kenteken}".into(),
                kind: RouteKind::KENTEKEN,
                action: Some(Action::RDW_VEHICLE),
                enforce: self.route_defaults.enforce,
            });
            routes.push(RouteConfig {
                method: "GET".into(),
                path: "/rdw/voertuigen/{kenteken}/tenaamstelling".into(),
                upstream: "rdw".into(),
                upstream_path: "/voertuigen/{kenteken}/tenaamstelling".into(),
                kind: RouteKind::KENTEKEN,
                action: Some(Action::RDW_HOLDER),
                enforce: self.route_defaults.enforce,
            });
        }
        for r in &mut routes {
            if let Some(enforce) = self.route_enforce.get(&r.path) {
                r.enforce = *enforce;
            }
        }
        routes
    }
}

/// Turns a TOML error into one line naming the key and position.
fn one_line_toml_error(e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[auth]
issuer = "https://idp.example"
audience = "purpose-gate"
jwks_file = "keys/jwks.json"
[upstreams.brp]
url = "http://127.0.0.1:9001"
"#;

    #[test]
    fn shadow_mode_by_default_and_by_path() {
        let text = format!(
            "{MINIMAL}\n[upstreams.rdw]\nurl = \"http://127.0.0.1:9002\"\n[route_defaults]\nenforce = false\n[route_enforce]\n\"/rdw/voertuigen/{{kenteken}}\" = true\n"
        );
        let cfg = Config::parse(&text, Path::new(".")).unwrap();
        let enforce: Vec<(String, bool)> = cfg
            .effective_routes()
            .into_iter()
            .map(|r| (r.path, r.enforce))
            .collect();
        assert!(enforce.contains(&("/haalcentraal/api/brp/personen".into(), false)));
        assert!(enforce.contains(&("/rdw/voertuigen/{kenteken}".into(), true)));
        assert!(enforce.contains(&("/rdw/voertuigen/{kenteken}/tenaamstelling".into(), false)));
        let defaults = Config::parse(MINIMAL, Path::new(".")).unwrap();
        assert!(defaults.effective_routes().iter().all(|r| r.enforce));
    }

    #[test]
    fn route_enforce_for_an_unknown_path_is_an_error_naming_it() {
        let text = format!("{MINIMAL}\n[route_enforce]\n\"/nope\" = false\n");
        let err = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(
            err.contains("route_enforce") && err.contains("`/nope`"),
            "{err}"
        );
    }

    #[test]
    fn ops_sections_parse_and_are_checked() {
        let cfg = Config::parse(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(cfg.admin.listen, None);
        assert_eq!(cfg.log.format, LogFormat::Text);
        assert_eq!(cfg.server.max_concurrent, 1024);
        assert_eq!(cfg.policies.poll_interval.0, Duration::from_secs(2));
        let text = format!(
            "{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:9090\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n"
        );
        let cfg = Config::parse(&text, Path::new(".")).unwrap();
        assert_eq!(cfg.admin.listen.map(|a| a.port()), Some(9090));
        assert_eq!(cfg.log.format, LogFormat::Json);
        let err = Config::parse(
            &format!("{MINIMAL}\n[log]\nformat = \"xml\"\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(err.contains("xml"), "{err}");
        let err = Config::parse(
            &format!("{MINIMAL}\n[server]\nmax_concurrent = 0\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(err.contains("server.max_concurrent"), "{err}");
    }

    #[test]
    fn policies_evaluator_defaults_to_prepared_and_accepts_cedar() {
        let cfg = Config::parse(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(cfg.policies.evaluator, Evaluator::Prepared);
        let text = format!("{MINIMAL}\n[policies]\nevaluator = \"cedar\"\n");
        let cfg = Config::parse(&text, Path::new(".")).unwrap();
        assert_eq!(cfg.policies.evaluator, Evaluator::Cedar);
        let text = format!("{MINIMAL}\n[policies]\nevaluator = \"fast\"\n");
        let err = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(
            err.contains("fast") && err.contains("prepared") && err.contains("cedar"),
            "{err}"
        );
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolved_paths() {
        let cfg = Config::parse(MINIMAL, Path::new("/etc/gate")).unwrap();
        assert_eq!(cfg.gate_id, "gate-1");
        assert_eq!(cfg.server.listen.port(), 8080);
        assert_eq!(cfg.policies.dir, PathBuf::from("/etc/gate/policies"));
        assert_eq!(cfg.audit.dir, PathBuf::from("/etc/gate/audit"));
        assert_eq!(
            cfg.auth.jwks_file,
            Some(PathBuf::from("/etc/gate/keys/jwks.json"))
        );
        let routes = cfg.effective_routes();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].path, "/haalcentraal/api/brp/personen");
        assert_eq!(routes[1].path, "/haalcentraal/api/bewoning/bewoningen");
        assert_eq!(routes[1].kind, RouteKind::BRP_BEWONING);
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:1\"\nlsten = 3\n");
        let err = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(err.contains("lsten"), "{err}");
    }

    #[test]
    fn missing_keys_are_named() {
        let err = Config::parse("[auth]\nissuer = \"x\"\naudience = \"y\"\n", Path::new("."))
            .unwrap_err();
        assert!(err.contains("auth.jwks_file"), "{err}");
        let err = Config::parse("gate_id = \"g\"\n", Path::new(".")).unwrap_err();
        assert!(err.contains("auth"), "{err}");
    }

    #[test]
    fn bad_duration_is_explained() {
        let text = format!("{MINIMAL}\n[server]\nheader_read_timeout = \"10 parsecs\"\n");
        let err = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(err.contains("10 parsecs"), "{err}");
        assert_eq!(Dur::parse("500ms").unwrap().0, Duration::from_millis(500));
        assert_eq!(Dur::parse("2m").unwrap().0, Duration::from_secs(120));
    }

    #[test]
    fn route_to_unknown_upstream_is_rejected() {
        let text = format!(
            "{MINIMAL}\n[[routes]]\nmethod = \"GET\"\npath = \"/x/{{bsn}}\"\nupstream = \"nope\"\nupstream_path = \"/x/{{bsn}}\"\nkind = \"bsn\"\naction = \"brp:lookup\"\n"
        );
        let err = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }

    const ZGW: &str = r#"
[cases]
zgw_url = "https://zaken.gemeente.example/zaken/api/v1"
zgw_client_id = "purpose-gate"
zgw_secret_file = "zgw.secret"
[cases.zaaktypen]
"https://catalogi.gemeente.example/catalogi/api/v1/zaaktypen/6a1f" = "parkeervergunning"
[cases.organisaties]
"002220647" = "0363"
"#;

    #[test]
    fn cases_default_to_the_case_file() {
        let cfg = Config::parse(MINIMAL, Path::new("/etc/gate")).unwrap();
        assert_eq!(cfg.cases.file, Some(PathBuf::from("/etc/gate/cases.json")));
        assert_eq!(cfg.cases.zgw_url, None);
    }

    #[test]
    fn zgw_cases_get_defaults_and_a_resolved_secret_file() {
        let cfg = Config::parse(&format!("{MINIMAL}{ZGW}"), Path::new("/etc/gate")).unwrap();
        let c = &cfg.cases;
        assert_eq!(c.file, None);
        assert_eq!(
            c.zgw_secret_file,
            Some(PathBuf::from("/etc/gate/zgw.secret"))
        );
        assert_eq!(c.cache_ttl.0, Duration::from_secs(30));
        assert_eq!(c.negative_ttl, None);
        assert_eq!(c.timeout.0, Duration::from_secs(2));
        assert_eq!(c.vehicle_object_type, "kenteken");
        assert_eq!(c.organisaties["002220647"], "0363");
        assert_eq!(c.zaaktypen.len(), 1);
    }

    #[test]
    fn case_file_and_zgw_url_together_are_refused() {
        let text = format!(
            "{MINIMAL}{}",
            ZGW.replace("[cases]\n", "[cases]\nfile = \"c.json\"\n")
        );
        let err = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(err.contains("`cases.file` and `cases.zgw_url`"), "{err}");
    }

    #[test]
    fn zgw_url_without_client_id_or_secret_is_refused() {
        let text = format!(
            "{MINIMAL}{}",
            ZGW.replace("zgw_client_id = \"purpose-gate\"\n", "")
        );
        let err = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(err.contains("missing key `cases.zgw_client_id`"), "{err}");
        let text = format!(
            "{MINIMAL}{}",
            ZGW.replace("zgw_secret_file = \"zgw.secret\"\n", "")
        );
        let err = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(err.contains("missing key `cases.zgw_secret_file`"), "{err}");
    }

    #[test]
    fn bad_zgw_values_are_explained() {
        for (from, to, expect) in [
            (
                "https://zaken.gemeente.example",
                "ftp://zaken.gemeente.example",
                "cases.zgw_url",
            ),
            (
                "https://zaken.gemeente.example",
                "https://u:pw@zaken.gemeente.example",
                "credentials",
            ),
            ("\"002220647\" = ", "\"002220648\" = ", "not an RSIN"),
            (
                "[cases]\n",
                "[cases]\nvehicle_object_type = \"Kenteken\"\n",
                "vehicle_object_type",
            ),
            ("[cases]\n", "[cases]\ntimeout = \"0s\"\n", "cases.timeout"),
            ("[cases]\n", "[cases]\nzgw_uri = \"x\"\n", "zgw_uri"),
        ] {
            let text = format!("{MINIMAL}{}", ZGW.replace(from, to));
            let err = Config::parse(&text, Path::new(".")).unwrap_err();
            assert!(err.contains(expect), "{to}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }

    #[test]
    fn zgw_keys_without_zgw_url_are_refused() {
        let text = format!("{MINIMAL}\n[cases]\nfile = \"c.json\"\nzgw_client_id = \"x\"\n");
        let err = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(
            err.contains("`cases.zgw_client_id` is set but `cases.zgw_url` is not"),
            "{err}"
        );
    }

    #[test]
    fn zgw_cache_and_timeout_keys_without_zgw_url_are_refused_not_ignored() {
        for (line, key) in [
            ("cache_ttl = \"5s\"", "cache_ttl"),
            ("timeout = \"1s\"", "timeout"),
            ("vehicle_object_type = \"boot\"", "vehicle_object_type"),
        ] {
            let text = format!("{MINIMAL}\n[cases]\nfile = \"c.json\"\n{line}\n");
            let err = Config::parse(&text, Path::new(".")).unwrap_err();
            assert!(
                err.contains(&format!("`cases.{key}` is set but `cases.zgw_url` is not")),
                "{err}"
            );
        }
        // The default value changes nothing and is accepted.
        let text = format!("{MINIMAL}\n[cases]\nfile = \"c.json\"\ncache_ttl = \"30s\"\n");
        assert!(Config::parse(&text, Path::new(".")).is_ok());
    }

    #[test]
    fn credential_headers_cannot_be_forwarded() {
        for h in [
            "Authorization",
            "x-forwarded-for",
            "Cookie",
            "x-api-key",
            "x-case-id",
            "Fsc-Transaction-Id",
            "Accept-Encoding",
        ] {
            let text = format!(
                "{MINIMAL}headers = {{ \"X-Api-Key\" = \"s\" }}\n[headers]\nforward = [\"{h}\"]\n"
            );
            let err = Config::parse(&text, Path::new(".")).unwrap_err();
            assert!(err.contains("never forwarded"), "{h}: {err}");
        }
        let ok = format!("{MINIMAL}[headers]\nforward = [\"X-Correlation-Id\"]\n");
        assert!(Config::parse(&ok, Path::new(".")).is_ok());
    }

    #[test]
    fn fsc_is_off_by_default_and_an_unknown_upstream_key_is_an_error() {
        let cfg = Config::parse(MINIMAL, Path::new(".")).unwrap();
        assert!(cfg.upstreams.values().all(|u| !u.fsc));
        let cfg = Config::parse(&format!("{MINIMAL}fsc = true\n"), Path::new(".")).unwrap();
        assert!(cfg.upstreams.values().any(|u| u.fsc));
        let err =
            Config::parse(&format!("{MINIMAL}fsc_outway = true\n"), Path::new(".")).unwrap_err();
        assert!(err.contains("fsc_outway"), "{err}");
        let err = Config::parse(&format!("{MINIMAL}fsc = \"yes\"\n"), Path::new(".")).unwrap_err();
        assert!(err.contains("expected a boolean"), "{err}");
    }

    #[test]
    fn gate_set_headers_cannot_be_configured_on_an_upstream() {
        for h in ["Fsc-Transaction-Id", "accept-encoding"] {
            let text = format!("{MINIMAL}headers = {{ \"{h}\" = \"x\" }}\n");
            let err = Config::parse(&text, Path::new(".")).unwrap_err();
            assert!(err.contains("set by the gate"), "{h}: {err}");
            assert!(err.contains(h), "{h}: {err}");
        }
    }

    #[test]
    fn audit_keys_have_defaults_resolve_paths_and_are_checked() {
        let cfg = Config::parse(MINIMAL, Path::new("/etc/gate")).unwrap();
        assert_eq!(cfg.audit.signing_key, None);
        assert_eq!(cfg.audit.checkpoint_every, 10_000);
        assert_eq!(cfg.audit.checkpoint_interval.0, Duration::from_secs(60));
        assert_eq!(cfg.audit.origin, "purpose-gate/audit");
        let text = format!(
            "{MINIMAL}[audit]\nsigning_key = \"keys/ckpt.pem\"\nsubject_key = \"keys/subject.key\"\ncheckpoint_interval = \"0s\"\n"
        );
        let cfg = Config::parse(&text, Path::new("/etc/gate")).unwrap();
        assert_eq!(
            cfg.audit.signing_key,
            Some(PathBuf::from("/etc/gate/keys/ckpt.pem"))
        );
        assert_eq!(
            cfg.audit.subject_key,
            Some(PathBuf::from("/etc/gate/keys/subject.key"))
        );
        let bad = format!("{MINIMAL}[audit]\norigin = \"my log\"\n");
        let err = Config::parse(&bad, Path::new("/etc/gate")).unwrap_err();
        assert!(err.contains("`audit.origin` = `my log`"), "{err}");
        let bad = format!("{MINIMAL}[audit]\nworking_hours = \"9 to 5\"\n");
        let err = Config::parse(&bad, Path::new("/etc/gate")).unwrap_err();
        assert!(err.contains("`audit.working_hours`"), "{err}");
    }
}
