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
    seq: u64,
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
                        .map(|q| SeqView {
                            seq: *q,
                            review: snap.reviews.get(q).map(|v| match v {
                                ReviewVerdict::Ok => t.verdict_ok,
                                ReviewVerdict::Suspicious => t.verdict_suspicious,
                            }),
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
    let seq: Option<u64> = r.form.get("seq").and_then(|s| s.trim().parse().ok());
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
    let dir = st.audit.dir.clone();
    let by = session.sub.clone();
    let timeout = st.cfg.access_timeout.0;
    let done = tokio::task::spawn_blocking(move || {
        crate::audit::review::append_review(&dir, seq, &by, verdict, note, timeout)
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

// ------------------------------------------------------------------ Zoeken

struct RowView {
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
    };
    if q.is_empty() {
        return render(StatusCode::OK, &page);
    }
    let asked = BTreeMap::from([(by.clone(), q.clone())]);
    if let Err(resp) = audited(st, r, session, "search", asked).await {
        return resp;
    }
    let mut filter = Filter::default();
    match by.as_str() {
        "bsn" => {
            filter.subject = Some(crate::audit::pseudonym::subject_id(
                st.subject_key.as_ref(),
                "Person",
                &q,
            ))
        }
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
    page.truncated = rows.len() > MAX_ROWS;
    page.rows = rows.into_iter().take(MAX_ROWS).map(row_view).collect();
    page.searched = true;
    render(StatusCode::OK, &page)
}

// ------------------------------------------------------------------ Inzage burger

struct SubjectRow {
    time: String,
    org: String,
    roles: String,
    purpose: String,
    case_type: String,
    case_id: String,
    decision: String,
    disclosed: bool,
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
    let report = crate::audit::report::subject_report(&result, &bsn, &stored, None, None);
    let by_seq: std::collections::HashMap<u64, &Row> =
        result.rows.iter().map(|row| (row.seq, row)).collect();
    let t = r.lang();
    page.generated = report.generated.clone();
    page.rows = report
        .entries
        .iter()
        .map(|e| {
            let row = by_seq.get(&e.seq);
            SubjectRow {
                time: e.time.clone(),
                org: e.organisation.clone().unwrap_or_default(),
                roles: row.map(|r| r.roles.join(", ")).unwrap_or_default(),
                purpose: e.purpose.clone(),
                case_type: t.not_recorded.to_string(),
                case_id: e.case_id.clone().unwrap_or_default(),
                decision: match e.decision {
                    Verdict::Allow => "allow".into(),
                    Verdict::Deny => "deny".into(),
                },
                disclosed: e.disclosed,
            }
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
    error: Option<String>,
    proof: Option<crate::audit::integrity::InclusionProof>,
    has_key: bool,
}

async fn prove(
    st: &Arc<State>,
    seq: u64,
) -> Result<crate::audit::integrity::InclusionProof, String> {
    let dir = st.audit.dir.clone();
    tokio::task::spawn_blocking(move || crate::audit::integrity::prove(&dir, seq))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|f| f.message)
}

pub async fn proof(st: &Arc<State>, r: &Req, session: &Session) -> Response<Full<Bytes>> {
    let mut page = ProofPage {
        c: chrome(r, Some(session), "proof"),
        seq: r.q("seq").to_string(),
        error: None,
        proof: None,
        has_key: st.pubkey_pem.is_some(),
    };
    let Ok(seq) = r.q("seq").parse::<u64>() else {
        return render(StatusCode::OK, &page);
    };
    let asked = BTreeMap::from([("seq".to_string(), seq.to_string())]);
    if let Err(resp) = audited(st, r, session, "proof", asked).await {
        return resp;
    }
    match prove(st, seq).await {
        Ok(p) => page.proof = Some(p),
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
    let asked = BTreeMap::from([("seq".to_string(), seq.to_string())]);
    if let Err(resp) = audited(st, r, session, "proof-download", asked).await {
        return resp;
    }
    match prove(st, seq).await.and_then(|p| {
        serde_json::to_string_pretty(&p).map_err(|e| format!("cannot encode the proof: {e}"))
    }) {
        Ok(json) => {
            let mut resp = response(StatusCode::OK, "application/json", json, &[]);
            if let Ok(v) =
                http::HeaderValue::from_str(&format!("attachment; filename=\"proof-{seq}.json\""))
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
