//! The console's pages: each records its access first (when it shows personal data), then
//! reads through the `audit` module and renders a template.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::i18n::Texts;
use super::session::Session;
use super::{Req, State, record_access, redirect, response};
use crate::audit::query::{Filter, Row, normalise_kenteken};
use crate::audit::{ReviewVerdict, Verdict};

/// Most timeline rows on one page.
const MAX_ROWS: usize = 500;

/// What every page shows around its content.
pub struct Chrome {
    pub t: &'static Texts,
    pub user: Option<String>,
    pub csrf: String,
    pub nav: &'static str,
}

fn chrome(r: &Req, session: Option<&Session>, nav: &'static str) -> Chrome {
    Chrome {
        t: r.lang(),
        user: session.map(|s| match &s.name {
            Some(n) => format!("{n} ({})", s.sub),
            None => s.sub.clone(),
        }),
        csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
        nav,
    }
}

fn render(status: StatusCode, page: &impl Template) -> Response<Full<Bytes>> {
    match page.render() {
        Ok(html) => response(status, "text/html; charset=utf-8", html, &[]),
        Err(e) => {
            tracing::error!(error = %e, "console: a page could not be rendered");
            response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "the page could not be rendered",
                &[],
            )
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    c: Chrome,
    heading: &'a str,
    text: &'a str,
    link: &'a str,
}

/// A page with a heading, one line of text and an optional link.
pub fn message(
    r: &Req,
    session: Option<&Session>,
    status: StatusCode,
    heading: &str,
    text: &str,
    link: &str,
) -> Response<Full<Bytes>> {
    render(
        status,
        &MessagePage {
            c: chrome(r, session, ""),
            heading,
            text,
            link,
        },
    )
}

/// The access record, or the page that says nothing personal is shown.
async fn audited(
    st: &Arc<State>,
    r: &Req,
    session: &Session,
    view: &str,
    query: BTreeMap<String, String>,
) -> Result<u64, Response<Full<Bytes>>> {
    record_access(st, r, session, view, query)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, view, "console: access record not written, page withheld");
            let t = r.lang();
            message(
                r,
                Some(session),
                StatusCode::SERVICE_UNAVAILABLE,
                t.unavailable,
                t.unavailable_text,
                "",
            )
        })
}

fn unavailable(r: &Req, session: &Session, why: &str) -> Response<Full<Bytes>> {
    message(
        r,
        Some(session),
        StatusCode::SERVICE_UNAVAILABLE,
        r.lang().unavailable,
        why,
        "",
    )
}

// ------------------------------------------------------------------ Overzicht

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage<'a> {
    c: Chrome,
    s: &'a super::snapshot::Snapshot,
    chart: String,
    /// Access records newer than the snapshot, then the snapshot's.
    accesses: Vec<super::snapshot::AccessView>,
}

pub async fn overview(st: &Arc<State>, r: &Req, session: &Session) -> Response<Full<Bytes>> {
    if let Err(page) = audited(st, r, session, "overview", BTreeMap::new()).await {
        return page;
    }
    let snap = match st.snapshots.get().await {
        Ok(s) => s,
        Err(e) => return unavailable(r, session, &e),
    };
    let t = r.lang();
    let chart = super::snapshot::chart(&snap.per_day, t.lookups_per_day, t.chart_desc);
    let mut accesses: Vec<super::snapshot::AccessView> = {
        let recent = st.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .rev()
            .filter(|(seq, _)| *seq > snap.records)
            .map(|(_, v)| v.clone())
            .collect()
    };
    accesses.extend(snap.accesses.iter().cloned());
    accesses.truncate(20);
    render(
        StatusCode::OK,
        &OverviewPage {
            c: chrome(r, Some(session), "overview"),
            s: &snap,
            chart,
            accesses,
        },
    )
}

// ------------------------------------------------------------------ Signalen

struct SeqView {
    /// The record as shown: `seq`, or `gate seq` from the central store.
    label: String,
    /// The review form's value for it: `seq`, or `seq@gate`.
    value: String,
    /// Its *Bewijs* page.
    href: String,
    review: Option<&'static str>,
}

struct SignalView {
    kind: String,
    detail: String,
    seqs: Vec<SeqView>,
}

struct EmployeeView {
    n: usize,
    employee: String,
    org: Option<String>,
    score: u64,
    signals: Vec<SignalView>,
}

#[derive(Template)]
#[template(path = "signals.html")]
struct SignalsPage {
    c: Chrome,
    built: String,
    saved: Option<u64>,
    list: Vec<EmployeeView>,
}

pub async fn signals(st: &Arc<State>, r: &Req, session: &Session) -> Response<Full<Bytes>> {
    if let Err(page) = audited(st, r, session, "signals", BTreeMap::new()).await {
        return page;
    }
    let snap = match st.snapshots.get().await {
        Ok(s) => s,
        Err(e) => return unavailable(r, session, &e),
    };
    let t = r.lang();
    let list = snap
        .signals
        .iter()
        .enumerate()
        .map(|(n, e)| EmployeeView {
            n,
            employee: e.employee.clone(),
            org: e.org.clone(),
            score: e.score,
            signals: e
                .signals
                .iter()
                .map(|s| SignalView {
                    kind: s.kind.clone(),
                    detail: s.detail.clone(),
                    seqs: s
                        .seqs
                        .iter()
                        .take(20)
                        .map(|q| {
                            let target = snap.target(*q);
                            let (label, value) = match &target.0 {
                                Some(g) => {
                                    (format!("{g} {}", target.1), format!("{}@{g}", target.1))
                                }
                                None => (target.1.to_string(), target.1.to_string()),
                            };
                            SeqView {
                                label,
                                value,
                                href: super::snapshot::proof_href(target.0.as_deref(), target.1),
                                review: snap.reviews.get(&target).map(|v| match v {
                                    ReviewVerdict::Ok => t.verdict_ok,
                                    ReviewVerdict::Suspicious => t.verdict_suspicious,
                                }),
                            }
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    render(
        StatusCode::OK,
        &SignalsPage {
            c: chrome(r, Some(session), "signals"),
            built: snap.built.clone(),
            saved: r.q("saved").parse().ok(),
            list,
        },
    )
}

/// The review form: appends a `review` record through the log's writer.
pub async fn review(st: &Arc<State>, r: &Req, session: &Session) -> Response<Full<Bytes>> {
    let t = r.lang();
    // `seq` of `[audit] dir`, or `seq@gate` of a gate in the central store.
    let (seq, gate) = match r.form.get("seq").map(|s| s.trim()) {
        Some(v) => match v.split_once('@') {
            Some((seq, gate)) => (seq.parse::<u64>().ok(), Some(gate.to_string())),
            None => (v.parse::<u64>().ok(), None),
        },
        None => (None, None),
    };
    let verdict = match r.form.get("verdict").map(String::as_str) {
        Some("ok") => Some(ReviewVerdict::Ok),
        Some("suspicious") => Some(ReviewVerdict::Suspicious),
        _ => None,
    };
    let (Some(seq), Some(verdict)) = (seq, verdict) else {
        return message(
            r,
            Some(session),
            StatusCode::BAD_REQUEST,
            t.bad_request,
            "a review needs `seq` and `verdict` (`ok` or `suspicious`)",
            "/signalen",
        );
    };
    let note = r
        .form
        .get("note")
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    let gate = match (&st.store, gate) {
        (Some(pool), Some(gate)) => {
            // The reviewed record is in the store, not in the log the review goes into: check
            // it there.
            if let Err(e) = stored_decision(pool, &gate, seq).await {
                return message(
                    r,
                    Some(session),
                    StatusCode::BAD_REQUEST,
                    t.bad_request,
                    &e,
                    "/signalen",
                );
            }
            Some(gate)
        }
        (Some(_), None) => {
            return message(
                r,
                Some(session),
                StatusCode::BAD_REQUEST,
                t.bad_request,
                "over the central store a review names its record as `seq@gate`",
                "/signalen",
            );
        }
        (None, Some(_)) => {
            return message(
                r,
                Some(session),
                StatusCode::BAD_REQUEST,
                t.bad_request,
                "this console reads no central store: a review names a seq of its log",
                "/signalen",
            );
        }
        (None, None) => None,
    };
    let dir = st.audit.dir.clone();
    let by = session.sub.clone();
    let timeout = st.cfg.access_timeout.0;
    let done = tokio::task::spawn_blocking(move || match gate {
        Some(gate) => crate::audit::review::append_review_of_gate(
            &dir, &gate, seq, &by, verdict, note, timeout,
        ),
        None => crate::audit::review::append_review(&dir, seq, &by, verdict, note, timeout),
    })
    .await;
    match done {
        Ok(Ok(appended)) => {
            let _ = st.snapshots.rebuild().await;
            redirect(&format!("/signalen?saved={}", appended.seq), &[])
        }
        Ok(Err(e)) => message(
            r,
            Some(session),
            StatusCode::BAD_REQUEST,
            t.bad_request,
            &e.to_string(),
            "/signalen",
        ),
        Err(e) => unavailable(r, session, &e.to_string()),
    }
}

/// `Ok` when the central store holds record `seq` of `gate` and it is a decision.
async fn stored_decision(
    pool: &deadpool_postgres::Pool,
    gate: &str,
    seq: u64,
) -> Result<(), String> {
    use crate::store::StoreError;
    let client = pool
        .get()
        .await
        .map_err(|e| StoreError::from(e).to_string())?;
    let at = i64::try_from(seq).map_err(|_| format!("seq {seq} is too large"))?;
    let row = client
        .query_opt(
            "SELECT kind FROM pg_records WHERE gate_id = $1 AND seq = $2",
            &[&gate, &at],
        )
        .await
        .map_err(|e| StoreError::from(e).to_string())?;
    match row.map(|r| r.try_get::<_, String>(0)) {
        Some(Ok(kind)) if kind == "decision" => Ok(()),
        Some(Ok(_)) => Err(format!(
            "seq {seq} of gate `{gate}` is not a decision record"
        )),
        Some(Err(e)) => Err(StoreError::from(e).to_string()),
        None => Err(format!("the store holds no seq {seq} of gate `{gate}`")),
    }
}

// ------------------------------------------------------------------ Zoeken

struct RowView {
    /// The gate whose log holds the record (from the central store), else empty.
    gate: String,
    /// The *Bewijs* page of the record.
    proof_href: String,
    seq: u64,
    time: String,
    employee: String,
    org: String,
    roles: String,
    action: String,
    resource: String,
    case_id: String,
    purpose: String,
    decision: String,
    disclosed: String,
    withheld: String,
}

fn purpose_text(row: &Row) -> String {
    let mut parts = Vec::new();
    if row.break_glass {
        parts.push(format!(
            "break-glass: {}",
            row.reason.clone().unwrap_or_default()
        ));
    }
    if let Some(d) = &row.doelbinding {
        parts.push(d.clone());
    }
    if let Some(v) = &row.verwerking {
        parts.push(v.clone());
    }
    parts.join(" · ")
}

fn refs(list: &[crate::audit::ResourceRef]) -> String {
    list.iter()
        .map(|r| format!("{} {}", r.kind, r.id))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row_view(row: &Row) -> RowView {
    RowView {
        gate: row.gate.clone().unwrap_or_default(),
        proof_href: super::snapshot::proof_href(row.gate.as_deref(), row.seq),
        seq: row.seq,
        time: row.time.clone(),
        employee: row.employee.clone().unwrap_or_default(),
        org: row.org.clone().unwrap_or_default(),
        roles: row.roles.join(", "),
        action: row.action.clone().unwrap_or_default(),
        resource: row
            .resource
            .as_ref()
            .map(|r| format!("{} {}", r.kind, r.id))
            .unwrap_or_default(),
        case_id: row.case_id.clone().unwrap_or_default(),
        purpose: purpose_text(row),
        decision: match row.decision {
            Verdict::Allow => "allow".into(),
            Verdict::Deny => format!("deny {}", row.code.clone().unwrap_or_default()),
        },
        disclosed: refs(&row.disclosed),
        withheld: refs(&row.withheld),
    }
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    c: Chrome,
    modes: Vec<(&'static str, &'static str)>,
    by: String,
    q: String,
    searched: bool,
    truncated: bool,
    rows: Vec<RowView>,
    /// A search by BSN: the auditors' views of this person (access records).
    accesses: Vec<super::snapshot::AccessView>,
}

/// Address searches: the `brp:search` types that take an address.
const ADDRESS_SEARCHES: [&str; 4] = [
    "ZoekMetPostcodeEnHuisnummer",
    "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving",
    "ZoekMetNummeraanduidingIdentificatie",
    "ZoekMetAdresseerbaarObjectIdentificatie",
];

pub async fn search(st: &Arc<State>, r: &Req, session: &Session) -> Response<Full<Bytes>> {
    let t = r.lang();
    let modes = vec![
        ("bsn", t.bsn),
        ("employee", t.employee),
        ("case", t.case),
        ("kenteken", t.kenteken),
        ("address", t.address),
    ];
    let by = match r.q("by") {
        b @ ("employee" | "case" | "kenteken" | "address") => b.to_string(),
        _ => "bsn".to_string(),
    };
    let q = r.q("q").to_string();
    let mut page = SearchPage {
        c: chrome(r, Some(session), "search"),
        modes,
        by: by.clone(),
        q: q.clone(),
        searched: false,
        truncated: false,
        rows: Vec::new(),
        accesses: Vec::new(),
    };
    if q.is_empty() {
        return render(StatusCode::OK, &page);
    }
    let asked = BTreeMap::from([(by.clone(), q.clone())]);
    if let Err(resp) = audited(st, r, session, "search", asked).await {
        return resp;
    }
    let mut filter = Filter::default();
    let person = crate::audit::pseudonym::subject_id(st.subject_key.as_ref(), "Person", &q);
    match by.as_str() {
        "bsn" => filter.subject = Some(person.clone()),
        "employee" => filter.employee = Some(q.clone()),
        "case" => filter.case = Some(q.clone()),
        "kenteken" => filter.kenteken = Some(normalise_kenteken(&q)),
        _ => filter.action = Some("brp:search".into()),
    }
    let result = match super::query(st, filter).await {
        Ok(res) => res,
        Err(e) => return unavailable(r, session, &e),
    };
    let needle = q.to_lowercase();
    let mut rows: Vec<&Row> = result
        .rows
        .iter()
        .filter(|row| {
            by != "address"
                || (row
                    .resource
                    .as_ref()
                    .is_some_and(|res| ADDRESS_SEARCHES.contains(&res.id.as_str()))
                    && [row.case_id.as_deref(), row.employee.as_deref()]
                        .into_iter()
                        .flatten()
                        .chain(row.resource.as_ref().map(|r| r.id.as_str()))
                        .any(|s| s.to_lowercase().contains(&needle)))
        })
        .collect();
    rows.reverse();
    if by == "bsn" {
        // The console's own views of this person, found by the id they are stored under (the
        // pseudonym in a pseudonymised log), newest first.
        page.accesses = result
            .accesses
            .iter()
            .rev()
            .filter(|a| a.query.get("bsn") == Some(&person))
            .take(MAX_ROWS)
            .map(|a| super::snapshot::AccessView {
                time: a.time.clone(),
                ..super::snapshot::AccessView::of(&a.by, a.name.as_deref(), &a.view, &a.query)
            })
            .collect();
    }
    page.truncated = rows.len() > MAX_ROWS;
    page.rows = rows.into_iter().take(MAX_ROWS).map(row_view).collect();
    page.searched = true;
    render(StatusCode::OK, &page)
}

// ------------------------------------------------------------------ Inzage burger

struct SubjectRow {
    time: String,
    org: String,
    department: String,
    roles: String,
    purpose: String,
    case_type: String,
    case_id: String,
    decision: String,
    /// The fields disclosed, when the answer disclosed the person.
    disclosed: Option<String>,
}

#[derive(Template)]
#[template(path = "subject.html")]
struct SubjectPage {
    c: Chrome,
    bsn: String,
    shown: bool,
    generated: String,
    rows: Vec<SubjectRow>,
}

pub async fn subject(st: &Arc<State>, r: &Req, session: &Session) -> Response<Full<Bytes>> {
    let bsn = r.q("bsn").to_string();
    let mut page = SubjectPage {
        c: chrome(r, Some(session), "subject"),
        bsn: bsn.clone(),
        shown: false,
        generated: String::new(),
        rows: Vec::new(),
    };
    if bsn.is_empty() {
        return render(StatusCode::OK, &page);
    }
    let asked = BTreeMap::from([("bsn".to_string(), bsn.clone())]);
    if let Err(resp) = audited(st, r, session, "subject-report", asked).await {
        return resp;
    }
    let stored = crate::audit::pseudonym::subject_id(st.subject_key.as_ref(), "Person", &bsn);
    let filter = Filter {
        subject: Some(stored.clone()),
        ..Default::default()
    };
    let result = match super::query(st, filter).await {
        Ok(res) => res,
        Err(e) => return unavailable(r, session, &e),
    };
    let mut report = crate::audit::report::subject_report(&result, &bsn, &stored, None, None);
    let hashes = report
        .entries
        .iter()
        .filter_map(|e| e.case_snapshot.clone())
        .collect();
    let cases = super::case_snapshots(st, hashes).await;
    report.fill_case_types(|hash| cases.get(hash).cloned());
    let t = r.lang();
    page.generated = report.generated.clone();
    page.rows = report
        .entries
        .iter()
        .map(|e| SubjectRow {
            time: e.time.clone(),
            org: e.organisation.clone().unwrap_or_default(),
            department: e
                .department
                .clone()
                .unwrap_or_else(|| t.not_recorded.to_string()),
            roles: e.roles.join(", "),
            purpose: e.purpose.clone(),
            case_type: match (&e.case_type, &e.case_id) {
                (Some(ty), _) => ty.clone(),
                (None, Some(_)) => t.not_recorded.to_string(),
                (None, None) => String::new(),
            },
            case_id: e.case_id.clone().unwrap_or_default(),
            decision: match e.decision {
                Verdict::Allow => "allow".into(),
                Verdict::Deny => "deny".into(),
            },
            disclosed: e.disclosed.then(|| e.fields.join(", ")),
        })
        .collect();
    page.shown = true;
    render(StatusCode::OK, &page)
}

// ------------------------------------------------------------------ Incident

#[derive(Template)]
#[template(path = "incident.html")]
struct IncidentPage {
    c: Chrome,
    employee: String,
    report: Option<crate::audit::report::IncidentReport>,
}

pub async fn incident(st: &Arc<State>, r: &Req, session: &Session) -> Response<Full<Bytes>> {
    let employee = r.q("employee").to_string();
    let mut page = IncidentPage {
        c: chrome(r, Some(session), "incident"),
        employee: employee.clone(),
        report: None,
    };
    if employee.is_empty() {
        return render(StatusCode::OK, &page);
    }
    let asked = BTreeMap::from([("employee".to_string(), employee.clone())]);
    if let Err(resp) = audited(st, r, session, "incident", asked).await {
        return resp;
    }
    let filter = Filter {
        employee: Some(employee.clone()),
        ..Default::default()
    };
    let result = match super::query(st, filter).await {
        Ok(res) => res,
        Err(e) => return unavailable(r, session, &e),
    };
    page.report = Some(crate::audit::report::incident_report(&result, &employee));
    render(StatusCode::OK, &page)
}

// ------------------------------------------------------------------ Bewijs

#[derive(Template)]
#[template(path = "proof.html")]
struct ProofPage {
    c: Chrome,
    seq: String,
    /// With the central store: the gate whose record is proved.
    gate: String,
    store: bool,
    error: Option<String>,
    proof: Option<crate::audit::integrity::InclusionProof>,
    /// The download link of the proof.
    download: String,
    /// The proof file's name.
    file: String,
    has_key: bool,
}

/// The proof of record `seq`: of `[audit] dir`, or with `[console] db` of `gate` in the
/// central store (its stored lines and latest shipped checkpoint).
async fn prove(
    st: &Arc<State>,
    gate: Option<&str>,
    seq: u64,
) -> Result<crate::audit::integrity::InclusionProof, String> {
    match (&st.store, gate) {
        (Some(pool), Some(gate)) => {
            let client = pool
                .get()
                .await
                .map_err(|e| crate::store::StoreError::from(e).to_string())?;
            crate::store::prove::prove_stored(&client, gate, seq).await
        }
        (Some(_), None) => Err(
            "this console reads the central store, where seqs are per gate: name the gate".into(),
        ),
        (None, Some(_)) => {
            Err("this console reads no central store: a proof names a seq of its log".into())
        }
        (None, None) => {
            let dir = st.audit.dir.clone();
            tokio::task::spawn_blocking(move || crate::audit::integrity::prove(&dir, seq))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|f| f.message)
        }
    }
}

/// The proof file's name: `proof-N.json`, or `proof-GATE-N.json` (the gate's id kept to
/// letters, digits, `-` and `_`).
fn proof_file(gate: Option<&str>, seq: u64) -> String {
    match gate {
        Some(g) => {
            let safe: String = g
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("proof-{safe}-{seq}.json")
        }
        None => format!("proof-{seq}.json"),
    }
}

fn gate_param(r: &Req) -> Option<String> {
    Some(r.q("gate").to_string()).filter(|g| !g.is_empty())
}

pub async fn proof(st: &Arc<State>, r: &Req, session: &Session) -> Response<Full<Bytes>> {
    let gate = gate_param(r);
    let mut page = ProofPage {
        c: chrome(r, Some(session), "proof"),
        seq: r.q("seq").to_string(),
        gate: gate.clone().unwrap_or_default(),
        store: st.store.is_some(),
        error: None,
        proof: None,
        download: String::new(),
        file: String::new(),
        has_key: st.pubkey_pem.is_some(),
    };
    let Ok(seq) = r.q("seq").parse::<u64>() else {
        return render(StatusCode::OK, &page);
    };
    let mut asked = BTreeMap::from([("seq".to_string(), seq.to_string())]);
    if let Some(g) = &gate {
        asked.insert("gate".into(), g.clone());
    }
    if let Err(resp) = audited(st, r, session, "proof", asked).await {
        return resp;
    }
    match prove(st, gate.as_deref(), seq).await {
        Ok(p) => {
            let file = proof_file(gate.as_deref(), seq);
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(g) = &gate {
                q.append_pair("gate", g);
            }
            q.append_pair("seq", &seq.to_string());
            page.download = format!("/bewijs/{file}?{}", q.finish());
            page.file = file;
            page.proof = Some(p);
        }
        Err(e) => page.error = Some(e),
    }
    render(StatusCode::OK, &page)
}

pub async fn proof_download(st: &Arc<State>, r: &Req, session: &Session) -> Response<Full<Bytes>> {
    let Ok(seq) = r.q("seq").parse::<u64>() else {
        return message(
            r,
            Some(session),
            StatusCode::BAD_REQUEST,
            r.lang().bad_request,
            "`seq` must be a number",
            "/bewijs",
        );
    };
    let gate = gate_param(r);
    let mut asked = BTreeMap::from([("seq".to_string(), seq.to_string())]);
    if let Some(g) = &gate {
        asked.insert("gate".into(), g.clone());
    }
    if let Err(resp) = audited(st, r, session, "proof-download", asked).await {
        return resp;
    }
    match prove(st, gate.as_deref(), seq).await.and_then(|p| {
        serde_json::to_string_pretty(&p).map_err(|e| format!("cannot encode the proof: {e}"))
    }) {
        Ok(json) => {
            let mut resp = response(StatusCode::OK, "application/json", json, &[]);
            let file = proof_file(gate.as_deref(), seq);
            if let Ok(v) = http::HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
            {
                resp.headers_mut()
                    .insert(http::header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => message(
            r,
            Some(session),
            StatusCode::NOT_FOUND,
            r.lang().proof,
            &e,
            "/bewijs",
        ),
    }
}
