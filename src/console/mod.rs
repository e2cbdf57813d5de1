//! The auditor console (`purpose-gate console`): the audit log in the browser for privacy
//! officers, behind OpenID Connect login.
//!
//! Guarantees:
//! - Every page is server-rendered HTML from askama templates compiled into the binary (HTML
//!   escaping on by default); the stylesheet and the proof-check script are embedded too. No
//!   JavaScript at all, so the Content-Security-Policy allows none: `default-src 'none'`.
//! - Every request except the login flow and the stylesheet needs a session (else a redirect to
//!   `/login`); a session without the configured role gets 403 and no page. Every form carries
//!   the session's CSRF token; a POST without it is refused with 403.
//! - INVARIANT: a page that shows personal data first appends an `access` record (auditor,
//!   page, what was asked) through the log's one writer ([`crate::audit::access`]) and is only
//!   answered after that record is durable; when it cannot be written the page says so and
//!   shows nothing personal (503).
//! - Every read goes through the `audit` module (query, reports, integrity): one parser.
//!
//! Refuses: a redirect target that is not a local path (`/lang`), request bodies above 64 KiB.

pub mod i18n;
pub mod oidc;
mod pages;
pub mod session;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::{AuditConfig, Config, ConsoleConfig};
use session::{LOGIN_COOKIE, SESSION_COOKIE, Session, Sessions};

/// The stylesheet, embedded.
const CSS: &str = include_str!("assets/console.css");
/// The proof-check script offered on *Bewijs*, embedded.
const CHECK_SCRIPT: &str = include_str!("assets/check-proof.py");
/// The policy: no scripts at all, styles and images only from the console itself.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's shared state.
pub(crate) struct State {
    pub cfg: ConsoleConfig,
    pub audit: AuditConfig,
    pub sessions: Sessions,
    pub oidc: oidc::Oidc,
    /// The log's public key as SPKI PEM, when known.
    pub pubkey_pem: Option<String>,
    pub subject_key: Option<crate::audit::pseudonym::SubjectKey>,
    pub snapshots: snapshot::Snapshots,
    /// `[console] db`: the central store the pages read, instead of `[audit] dir`.
    pub store: Option<deadpool_postgres::Pool>,
    /// This console's newest access records (seq, view), newest last: Overzicht shows those
    /// newer than its snapshot.
    pub recent: std::sync::Mutex<std::collections::VecDeque<(u64, snapshot::AccessView)>>,
}

/// A running console.
pub struct RunningConsole {
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningConsole {
    /// Stops accepting and ends the accept loop.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.done).await;
    }
}

fn public_key(
    cfg: &ConsoleConfig,
    audit: &AuditConfig,
) -> Result<Option<ed25519_dalek::VerifyingKey>, String> {
    if let Some(p) = &cfg.public_key_file {
        return crate::audit::checkpoint::load_verifying_key(p)
            .map(Some)
            .map_err(|e| format!("`console.public_key_file`: {e}"));
    }
    Ok(audit.signing_key.as_ref().and_then(|p| {
        crate::audit::checkpoint::NoteSigner::load(p, &audit.origin)
            .ok()
            .map(|s| s.verifying_key())
    }))
}

/// Starts the console of `cfg` (`[console]` must be set): checks the key files, binds, and
/// serves until [`RunningConsole::shutdown`].
pub async fn start(cfg: &Config) -> Result<RunningConsole, String> {
    let console = cfg
        .console
        .clone()
        .ok_or("missing section `[console]`: the console needs its listener and issuer")?;
    let tls = match &console.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            crate::tls::server_config(t)?,
        ))),
        None => None,
    };
    let sessions = Sessions::load(
        &console.session_key_file,
        console.idle_timeout.0,
        tls.is_some(),
    )?;
    let oidc = oidc::Oidc::new(&console)?;
    let verifying_key = public_key(&console, &cfg.audit)?;
    let pubkey_pem = match &verifying_key {
        Some(k) => {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            k.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .ok()
        }
        None => None,
    };
    let subject_key = cfg
        .audit
        .subject_key
        .as_deref()
        .map(crate::audit::pseudonym::SubjectKey::load)
        .transpose()?;
    let hours = crate::audit::report::WorkingHours::parse(&cfg.audit.working_hours)?;
    // With `db`, the pages read every gate's shipped records from the central store
    // (connections open lazily: a store that is down makes pages say so, not the start fail).
    let store = match &console.db {
        Some(url) => Some(
            crate::store::pool(&crate::store::StoreConfig::from_url(url))
                .map_err(|e| format!("`console.db`: {e}"))?,
        ),
        None => None,
    };
    let state = Arc::new(State {
        snapshots: snapshot::Snapshots::new(
            cfg.audit.dir.clone(),
            hours,
            verifying_key,
            store.clone(),
        ),
        store,
        cfg: console.clone(),
        audit: cfg.audit.clone(),
        sessions,
        oidc,
        pubkey_pem,
        subject_key,
        recent: std::sync::Mutex::new(std::collections::VecDeque::new()),
    });
    // The figures of Overzicht and Signalen are rebuilt off the request path.
    let refresher = {
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = st.snapshots.rebuild().await {
                    tracing::warn!(error = %e, "console: the overview could not be built");
                }
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            }
        })
    };
    let listener = TcpListener::bind(console.listen)
        .await
        .map_err(|e| format!("cannot listen on `{}`: {e}", console.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the console's address: {e}"))?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let done = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stopped.changed() => {
                    refresher.abort();
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let st = state.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(handle(st, req, peer).await) }
                });
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10));
                match tls {
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            acceptor.accept(tcp),
                        )
                        .await;
                        if let Ok(Ok(stream)) = handshake {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    Ok(RunningConsole { addr, stop, done })
}

/// A request as the pages see it.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub form: HashMap<String, String>,
    pub cookies: HashMap<String, String>,
    pub peer: SocketAddr,
}

impl Req {
    pub fn q(&self, key: &str) -> &str {
        self.query.get(key).map(|s| s.trim()).unwrap_or("")
    }
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }
    pub fn lang(&self) -> &'static i18n::Texts {
        i18n::texts(self.cookie("pg_lang").unwrap_or("nl"))
    }
}

fn parse_cookies(req: &Request<Incoming>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for value in req.headers().get_all(header::COOKIE) {
        if let Ok(s) = value.to_str() {
            for part in s.split(';') {
                if let Some((k, v)) = part.trim().split_once('=') {
                    out.entry(k.to_string()).or_insert_with(|| v.to_string());
                }
            }
        }
    }
    out
}

fn parse_pairs(s: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(s) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

async fn handle(st: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let cookies = parse_cookies(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_pairs(req.uri().query().unwrap_or("").as_bytes());
    let form = if method == Method::POST {
        match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => parse_pairs(&b.to_bytes()),
            Err(_) => {
                return secure(plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                ));
            }
        }
    } else {
        HashMap::new()
    };
    let r = Req {
        method,
        path,
        query,
        form,
        cookies,
        peer,
    };
    secure(route(&st, &r).await)
}

/// The headers every answer carries.
fn secure(mut resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let h = resp.headers_mut();
    let set = |h: &mut http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, http::HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    resp
}

pub(crate) fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
    cookies: &[String],
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    for c in cookies {
        if let Ok(v) = http::HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", text.to_string(), &[])
}

pub(crate) fn redirect(to: &str, cookies: &[String]) -> Response<Full<Bytes>> {
    let mut resp = response(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        "",
        cookies,
    );
    if let Ok(v) = http::HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

async fn route(st: &Arc<State>, r: &Req) -> Response<Full<Bytes>> {
    let get = r.method == Method::GET || r.method == Method::HEAD;
    match (get, r.path.as_str()) {
        (true, "/static/console.css") => {
            let mut resp = response(StatusCode::OK, "text/css; charset=utf-8", CSS, &[]);
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("max-age=3600"),
            );
            return resp;
        }
        (true, "/login") => return login(st, r).await,
        (true, "/callback") => return callback(st, r).await,
        (true, "/bye") => {
            let t = r.lang();
            return pages::message(
                r,
                None,
                StatusCode::OK,
                t.logged_out,
                t.logged_out_text,
                "/login",
            );
        }
        (true, "/lang") => {
            let to = if r.q("to") == "en" { "en" } else { "nl" };
            return redirect(
                "/",
                &[format!(
                    "pg_lang={to}; Path=/; SameSite=Strict; Max-Age=31536000"
                )],
            );
        }
        _ => {}
    }
    let Some(session) = st.sessions.get(r.cookie(SESSION_COOKIE)) else {
        return redirect("/login", &[]);
    };
    if r.method == Method::POST {
        let token = r.form.get("csrf").map(String::as_str).unwrap_or("");
        if !session::same_token(token, &session.csrf) {
            return pages::message(
                r,
                Some(&session),
                StatusCode::FORBIDDEN,
                r.lang().forbidden,
                "csrf token missing or wrong",
                "",
            );
        }
    }
    // Logout works for every session, also one without the role.
    if r.method == Method::POST && r.path == "/logout" {
        let clear = st.sessions.end(r.cookie(SESSION_COOKIE));
        // A local page: the policy's `form-action 'self'` also covers a form's redirects.
        return redirect("/bye", &[clear]);
    }
    if !session.roles.iter().any(|role| role == &st.cfg.role) {
        return pages::message(
            r,
            Some(&session),
            StatusCode::FORBIDDEN,
            r.lang().forbidden,
            r.lang().forbidden_text,
            "",
        );
    }
    match (r.method.clone(), r.path.as_str()) {
        (Method::POST, "/signalen/review") => pages::review(st, r, &session).await,
        (Method::GET, "/") => pages::overview(st, r, &session).await,
        (Method::GET, "/signalen") => pages::signals(st, r, &session).await,
        (Method::GET, "/zoeken") => pages::search(st, r, &session).await,
        (Method::GET, "/inzage") => pages::subject(st, r, &session).await,
        (Method::GET, "/incident") => pages::incident(st, r, &session).await,
        (Method::GET, "/bewijs") => pages::proof(st, r, &session).await,
        (Method::GET, "/bewijs/audit-pubkey.pem") => match &st.pubkey_pem {
            Some(pem) => response(StatusCode::OK, "application/x-pem-file", pem.clone(), &[]),
            None => plain(
                StatusCode::NOT_FOUND,
                "the log's public key is not configured",
            ),
        },
        (Method::GET, "/bewijs/check-proof.py") => response(
            StatusCode::OK,
            "text/x-python; charset=utf-8",
            CHECK_SCRIPT,
            &[],
        ),
        (Method::GET, p) if p.starts_with("/bewijs/proof-") && p.ends_with(".json") => {
            pages::proof_download(st, r, &session).await
        }
        _ => pages::message(
            r,
            Some(&session),
            StatusCode::NOT_FOUND,
            "404",
            "not found",
            "/",
        ),
    }
}

async fn login(st: &Arc<State>, r: &Req) -> Response<Full<Bytes>> {
    let (state, pending, cookie) = st.sessions.begin_login();
    match st
        .oidc
        .authorize_url(&state, &pending.nonce, &pending.verifier)
        .await
    {
        Ok(url) => redirect(&url, &[cookie]),
        Err(e) => {
            tracing::warn!(error = %e, "console: login cannot start");
            pages::message(
                r,
                None,
                StatusCode::BAD_GATEWAY,
                r.lang().login_failed,
                &e,
                "",
            )
        }
    }
}

async fn callback(st: &Arc<State>, r: &Req) -> Response<Full<Bytes>> {
    let t = r.lang();
    let Some(pending) = st
        .sessions
        .finish_login(r.q("state"), r.cookie(LOGIN_COOKIE))
    else {
        return pages::message(
            r,
            None,
            StatusCode::BAD_REQUEST,
            t.login_failed,
            "unknown or expired login: start again",
            "/login",
        );
    };
    if !r.q("error").is_empty() {
        let why = format!("the issuer refused the login: `{}`", r.q("error"));
        return pages::message(
            r,
            None,
            StatusCode::BAD_REQUEST,
            t.login_failed,
            &why,
            "/login",
        );
    }
    match st
        .oidc
        .redeem(r.q("code"), &pending.verifier, &pending.nonce)
        .await
    {
        Ok(id) => {
            tracing::info!(sub = %id.sub, "console: login");
            let cookies = st.sessions.create(id.sub, id.name, id.roles);
            // A page, not a redirect: the Strict session cookie is sent on the same-site
            // navigation that follows (a redirect chain that began at the issuer is cross-site).
            let mut resp = pages::message(r, None, StatusCode::OK, t.continue_text, "", "/");
            for c in cookies {
                if let Ok(v) = http::HeaderValue::from_str(&c) {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            if let Ok(v) = http::HeaderValue::from_str("0; url=/") {
                resp.headers_mut().insert(header::REFRESH, v);
            }
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: login refused");
            pages::message(r, None, StatusCode::FORBIDDEN, t.login_failed, &e, "/login")
        }
    }
}

/// Runs a query over the log the console reads: `[audit] dir`, or with `[console] db` every
/// gate's shipped records in the central store (rows of all gates, by time), through the same
/// query function as `audit query --dir` / `--db`.
pub(crate) async fn query(
    st: &Arc<State>,
    filter: crate::audit::query::Filter,
) -> Result<crate::audit::query::QueryResult, String> {
    match &st.store {
        Some(pool) => {
            let client = pool
                .get()
                .await
                .map_err(|e| crate::store::StoreError::from(e).to_string())?;
            let per_gate = crate::store::query::query_store(&client, &filter, None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(crate::store::query::merge(per_gate))
        }
        None => {
            let dir = st.audit.dir.clone();
            tokio::task::spawn_blocking(move || crate::audit::query::query(&dir, &filter))
                .await
                .map_err(|e| format!("the query task failed: {e}"))?
                .map_err(|e| e.to_string())
        }
    }
}

/// The case snapshots `hashes` (content-addressed, each checked against its hash): from the
/// central store with `[console] db` (shipped with the records that name them), else from
/// `cases/` in `[audit] dir`. A snapshot that cannot be read or does not match its hash is
/// left out (the page then says "not recorded"), and logged.
pub(crate) async fn case_snapshots(
    st: &Arc<State>,
    hashes: std::collections::BTreeSet<String>,
) -> HashMap<String, crate::model::Case> {
    let mut out = HashMap::new();
    if hashes.is_empty() {
        return out;
    }
    match &st.store {
        Some(pool) => {
            let read = match pool.get().await {
                Ok(client) => crate::store::query::case_snapshots(&client, &hashes).await,
                Err(e) => Err(crate::store::StoreError::from(e)),
            };
            match read {
                Ok(read) => out = read,
                Err(e) => tracing::warn!(error = %e, "console: case snapshots not read"),
            }
        }
        None => {
            let dir = st.audit.dir.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut out = HashMap::new();
                for hash in hashes {
                    match crate::audit::snapshots::read_snapshot(&dir, &hash) {
                        Ok(case) => {
                            out.insert(hash, case);
                        }
                        Err(e) => tracing::warn!(error = %e, "console: case snapshot not read"),
                    }
                }
                out
            })
            .await;
            if let Ok(read) = read {
                out = read;
            }
        }
    }
    out
}

/// The access record of a page view, appended durably before the page is answered.
pub(crate) async fn record_access(
    st: &Arc<State>,
    r: &Req,
    session: &Session,
    view: &str,
    query: BTreeMap<String, String>,
) -> Result<u64, String> {
    let access = crate::audit::AccessRecord {
        time: String::new(),
        kind: crate::audit::AccessKind::Access,
        console: st.cfg.name.clone(),
        by: session.sub.clone(),
        name: session.name.clone(),
        roles: session.roles.clone(),
        view: view.to_string(),
        // In a pseudonymised log the record names the person by pseudonym, like every record.
        query: crate::audit::pseudonym::pseudonymise_query(st.subject_key.as_ref(), query),
        client_ip: Some(r.peer.ip().to_string()),
    };
    let view = snapshot::AccessView::of(&access.by, access.name.as_deref(), view, &access.query);
    let dir = st.audit.dir.clone();
    let timeout = st.cfg.access_timeout.0;
    let seq = tokio::task::spawn_blocking(move || {
        crate::audit::access::append_access(&dir, access, timeout).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the access record task failed: {e}"))??;
    let mut recent = st.recent.lock().unwrap_or_else(|e| e.into_inner());
    recent.push_back((seq, view));
    while recent.len() > 20 {
        recent.pop_front();
    }
    Ok(seq)
}
