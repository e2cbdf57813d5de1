//! The figures of *Overzicht* and *Signalen*, built from the whole log in the background.
//!
//! Verifying the chain and computing the signals read every record (seconds for a million);
//! a page must answer in well under a second. So a snapshot — chain verified up to seq N at
//! time T, the latest checkpoint, lookups per day, refusals by code, break-glass use, the
//! signals with their review state, the latest access records — is built off the request
//! path (at start, every 30 s, and right after a review made in the console), and the pages
//! show it with the time it was built. Guarantees: a snapshot is built only through the `audit`
//! module (`integrity::verify_log`, `query::query`, `report::signals`); one build at a time.
//!
//! With the central store (`[console] db`), the snapshot also holds each gate's state there —
//! chain verified from the stored rows (`store::verify`), shipped up to seq N at time T, the
//! shipping lag — and the lookups per day, refusals, break-glass use and the signals are
//! computed over every gate's shipped records (`store::query`, `report::signals`), with the
//! reviews of every gate's shipped log. Seqs are per gate there: a signal names its records
//! as (gate, seq) ([`Target`]), and a review made over the store names its gate
//! (`target_gate`, format 1.4) in the log the console writes to (`[audit] dir`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;

use crate::audit::query::{Filter, ReviewState, query};
use crate::audit::report::{EmployeeSignals, SignalOptions, WorkingHours, signals};
use crate::audit::{ReviewVerdict, Verdict};

/// A reviewable record: (gate, seq) — the gate is `None` for a record of `[audit] dir`.
pub type Target = (Option<String>, u64);

/// The latest checkpoint as shown.
#[derive(Debug, Clone)]
pub struct CheckpointView {
    pub tree_size: u64,
    /// The key name on the signature line (the log's origin).
    pub signer: String,
    /// The key id (hex) on the signature line.
    pub key_id: String,
}

/// The *Bewijs* page of record `seq` (of `gate`, in the central store).
pub fn proof_href(gate: Option<&str>, seq: u64) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(g) = gate {
        q.append_pair("gate", g);
    }
    q.append_pair("seq", &seq.to_string());
    format!("/bewijs?{}", q.finish())
}

/// One break-glass request.
#[derive(Debug, Clone)]
pub struct BreakGlassView {
    /// With the central store: the gate whose log holds it.
    pub gate: Option<String>,
    pub seq: u64,
    /// Its *Bewijs* page.
    pub href: String,
    pub time: String,
    pub employee: String,
    pub reason: String,
}

/// One access record.
#[derive(Debug, Clone)]
pub struct AccessView {
    pub time: String,
    pub by: String,
    pub view: String,
    pub query: String,
}

impl AccessView {
    /// The row of an access record.
    pub fn of(
        by: &str,
        name: Option<&str>,
        view: &str,
        query: &BTreeMap<String, String>,
    ) -> AccessView {
        AccessView {
            time: now(),
            by: match name {
                Some(n) => format!("{by} ({n})"),
                None => by.to_string(),
            },
            view: view.to_string(),
            query: query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// One gate in the central store.
#[derive(Debug, Clone)]
pub struct GateView {
    pub gate: String,
    /// The last seq the store holds for the gate.
    pub shipped_seq: u64,
    /// When the gate last shipped (RFC 3339), empty when never.
    pub shipped_at: String,
    /// Seconds since the gate last shipped, when it has.
    pub lag_secs: Option<i64>,
    /// `Ok(checkpoints matched)` or why the stored chain does not hold.
    pub chain: Result<u64, String>,
    /// Shipping stopped on an equivocation.
    pub stopped: bool,
}

/// The whole-log figures.
#[derive(Debug)]
pub struct Snapshot {
    /// With the central store: every gate there (else empty).
    pub gates: Vec<GateView>,
    /// With the central store: why it could not be read, when it could not.
    pub store_error: Option<String>,
    pub built: String,
    pub took_ms: u128,
    /// Records in the log when the snapshot was built.
    pub records: u64,
    /// `Ok((last seq, checked at))` or why the chain does not hold.
    pub chain: Result<(u64, String), String>,
    pub checkpoint: Option<CheckpointView>,
    /// Day (`YYYY-MM-DD`) → (allowed, denied).
    pub per_day: BTreeMap<String, (u64, u64)>,
    pub refusals: Vec<(String, u64)>,
    pub break_glass_count: u64,
    /// The newest break-glass requests (at most 20).
    pub break_glass: Vec<BreakGlassView>,
    /// The signals; their `seqs` are seqs of `[audit] dir`, or with the central store
    /// 1-based indexes into `targets` (see [`Snapshot::target`]).
    pub signals: Vec<EmployeeSignals>,
    /// With the central store: the (gate, seq) of each record the signals name.
    pub targets: Vec<Target>,
    /// Reviewed record → latest verdict.
    pub reviews: HashMap<Target, ReviewVerdict>,
    /// Reviews in `[audit] dir` of records of the central store (`target_gate`): shown at
    /// once, before their gate has shipped them.
    pub local_store_reviews: Vec<(Target, ReviewState)>,
    pub open_signals: usize,
    /// The newest access records (at most 20).
    pub accesses: Vec<AccessView>,
}

impl Snapshot {
    /// The record a signal's seq names.
    pub fn target(&self, n: u64) -> Target {
        if self.targets.is_empty() {
            return (None, n);
        }
        usize::try_from(n)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.targets.get(i))
            .cloned()
            .unwrap_or((None, n))
    }

    fn count_open(&mut self) {
        let open = self
            .signals
            .iter()
            .flat_map(|e| &e.signals)
            .filter(|s| {
                s.seqs
                    .iter()
                    .any(|q| !self.reviews.contains_key(&self.target(*q)))
            })
            .count();
        self.open_signals = open;
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Lookups per day, refusals by code and break-glass use of a set of rows.
struct Figures {
    per_day: BTreeMap<String, (u64, u64)>,
    refusals: Vec<(String, u64)>,
    break_glass_count: u64,
    break_glass: Vec<BreakGlassView>,
}

fn figures(rows: &[crate::audit::query::Row]) -> Figures {
    let mut per_day: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    let mut break_glass = Vec::new();
    let mut break_glass_count = 0;
    for row in rows {
        let day = row.time.get(..10).unwrap_or_default().to_string();
        let entry = per_day.entry(day).or_default();
        match row.decision {
            Verdict::Allow => entry.0 += 1,
            Verdict::Deny => {
                entry.1 += 1;
                *refusals
                    .entry(row.code.clone().unwrap_or_else(|| "-".into()))
                    .or_default() += 1;
            }
        }
        if row.break_glass {
            break_glass_count += 1;
            break_glass.push(BreakGlassView {
                gate: row.gate.clone(),
                seq: row.seq,
                href: proof_href(row.gate.as_deref(), row.seq),
                time: row.time.clone(),
                employee: row.employee.clone().unwrap_or_default(),
                reason: row.reason.clone().unwrap_or_default(),
            });
        }
    }
    break_glass.reverse();
    break_glass.truncate(20);
    let mut refusals: Vec<(String, u64)> = refusals.into_iter().collect();
    refusals.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Figures {
        per_day,
        refusals,
        break_glass_count,
        break_glass,
    }
}

/// Builds a snapshot of the log in `dir` (blocking: reads the whole log twice).
pub fn build(
    dir: &std::path::Path,
    hours: &WorkingHours,
    key: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<Snapshot, String> {
    let started = Instant::now();
    let (chain, checkpoint) = match crate::audit::integrity::verify_log(dir, key) {
        Ok(s) => {
            let cp = s.latest.as_ref().map(|(size, note)| {
                // The signature line: `— <name> <base64(key id || signature)>`.
                let sig = note
                    .lines()
                    .find(|l| l.starts_with('\u{2014}'))
                    .unwrap_or_default();
                let mut parts = sig.split(' ').skip(1);
                let signer = parts.next().unwrap_or_default().to_string();
                let key_id = parts
                    .next()
                    .and_then(|b| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.decode(b).ok()
                    })
                    .map(|b| hex::encode(&b[..b.len().min(4)]))
                    .unwrap_or_default();
                CheckpointView {
                    tree_size: *size,
                    signer,
                    key_id,
                }
            });
            (Ok((s.records, now())), cp)
        }
        Err(f) => (
            Err(match f.seq {
                Some(seq) => format!("at seq {seq}: {}", f.message),
                None => f.message,
            }),
            None,
        ),
    };
    let result = query(dir, &Filter::default()).map_err(|e| e.to_string())?;
    let Figures {
        per_day,
        refusals,
        break_glass_count,
        break_glass,
    } = figures(&result.rows);
    let mut reviews = HashMap::new();
    // Reviews naming another gate (made over the central store) are not about this log.
    for r in result.reviews.iter().filter(|r| r.target_gate.is_none()) {
        reviews.insert((None, r.target_seq), r.verdict);
    }
    let local_store_reviews = result
        .reviews
        .iter()
        .filter_map(|r| {
            let gate = r.target_gate.clone()?;
            Some((
                (Some(gate), r.target_seq),
                ReviewState {
                    seq: r.seq,
                    by: r.by.clone(),
                    verdict: r.verdict,
                    note: r.note.clone(),
                    time: r.time.clone(),
                },
            ))
        })
        .collect();
    let list = signals(&result, &SignalOptions::new(hours.clone()));
    let accesses = result
        .accesses
        .iter()
        .rev()
        .take(20)
        .map(|a| AccessView {
            time: a.time.clone(),
            ..AccessView::of(&a.by, a.name.as_deref(), &a.view, &a.query)
        })
        .collect();
    let mut snap = Snapshot {
        gates: Vec::new(),
        store_error: None,
        built: now(),
        records: result.records,
        took_ms: started.elapsed().as_millis(),
        chain,
        checkpoint,
        per_day,
        refusals,
        break_glass_count,
        break_glass,
        signals: list,
        targets: Vec::new(),
        reviews,
        local_store_reviews,
        open_signals: 0,
        accesses,
    };
    snap.count_open();
    Ok(snap)
}

/// Adds the central store's part to `snap`: each gate's stored chain and shipping position,
/// and the figures over every gate's shipped records (replacing those of the local log).
pub async fn add_store(
    pool: &deadpool_postgres::Pool,
    key: Option<&ed25519_dalek::VerifyingKey>,
    hours: &WorkingHours,
    snap: &mut Snapshot,
) -> Result<(), String> {
    use crate::store::StoreError;
    use crate::store::verify::{VerifyError, verify_store};
    let started = Instant::now();
    let client = pool
        .get()
        .await
        .map_err(|e| StoreError::from(e).to_string())?;
    let rows = client
        .query(
            "SELECT gate_id, shipped_seq, shipped_at, stopped,
                    EXTRACT(EPOCH FROM now() - shipped_at)::bigint
               FROM pg_gates ORDER BY gate_id",
            &[],
        )
        .await
        .map_err(|e| StoreError::from(e).to_string())?;
    let mut gates = Vec::new();
    for row in rows {
        let get = |e: tokio_postgres::Error| StoreError::from(e).to_string();
        let gate: String = row.try_get(0).map_err(get)?;
        let shipped_seq: i64 = row.try_get(1).map_err(get)?;
        let shipped_at: Option<chrono::DateTime<chrono::Utc>> = row.try_get(2).map_err(get)?;
        let stopped: bool = row.try_get(3).map_err(get)?;
        let lag_secs: Option<i64> = row.try_get(4).map_err(get)?;
        // Each gate on its own: one broken chain does not hide the others' state.
        let chain = match verify_store(&client, key, Some(&gate), |_| {}).await {
            Ok(list) => Ok(list.iter().map(|g| g.checkpoints).sum()),
            Err(VerifyError::Failed(f)) => Err(match f.seq {
                Some(seq) => format!("at seq {seq}: {}", f.message),
                None => f.message,
            }),
            Err(VerifyError::Store(e)) => return Err(e.to_string()),
        };
        gates.push(GateView {
            gate,
            shipped_seq: u64::try_from(shipped_seq).unwrap_or(0),
            shipped_at: shipped_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            lag_secs,
            chain,
            stopped,
        });
    }
    let per_gate = crate::store::query::query_store(&client, &Filter::default(), None)
        .await
        .map_err(|e| e.to_string())?;
    // Every gate's reviews; per (gate, seq) the latest wins. A review names its target's gate,
    // or is about a record of the log it is in.
    let mut stored_reviews: Vec<(&str, Target, ReviewState)> = Vec::new();
    for (gate, result) in &per_gate {
        for r in &result.reviews {
            let target_gate = r.target_gate.clone().unwrap_or_else(|| gate.clone());
            stored_reviews.push((
                r.time.as_str(),
                (Some(target_gate), r.target_seq),
                ReviewState {
                    seq: r.seq,
                    by: r.by.clone(),
                    verdict: r.verdict,
                    note: r.note.clone(),
                    time: r.time.clone(),
                },
            ));
        }
    }
    for (target, state) in &snap.local_store_reviews {
        stored_reviews.push((state.time.as_str(), target.clone(), state.clone()));
    }
    stored_reviews.sort_by(|a, b| a.0.cmp(b.0));
    let latest: HashMap<Target, ReviewState> = stored_reviews
        .into_iter()
        .map(|(_, target, state)| (target, state))
        .collect();
    let mut all = crate::store::query::merge(per_gate);
    let f = figures(&all.rows);
    snap.per_day = f.per_day;
    snap.refusals = f.refusals;
    snap.break_glass_count = f.break_glass_count;
    snap.break_glass = f.break_glass;
    snap.gates = gates;
    // The signals over every gate's records: each row numbered by its place (seqs repeat
    // across gates), with the review of its (gate, seq); the numbers map back through
    // `targets`.
    let mut targets = Vec::with_capacity(all.rows.len());
    for (i, row) in all.rows.iter_mut().enumerate() {
        let target = (row.gate.clone(), row.seq);
        row.review = latest.get(&target).cloned();
        targets.push(target);
        row.seq = i as u64 + 1;
        row.outcome_seq = None;
    }
    snap.signals = signals(&all, &SignalOptions::new(hours.clone()));
    snap.reviews = latest
        .into_iter()
        .map(|(target, state)| (target, state.verdict))
        .collect();
    snap.targets = targets;
    snap.count_open();
    snap.took_ms += started.elapsed().as_millis();
    Ok(())
}

/// The current snapshot of one log.
pub struct Snapshots {
    store: Option<deadpool_postgres::Pool>,
    dir: PathBuf,
    hours: WorkingHours,
    key: Option<ed25519_dalek::VerifyingKey>,
    current: ArcSwapOption<Snapshot>,
    building: tokio::sync::Mutex<()>,
}

impl Snapshots {
    pub fn new(
        dir: PathBuf,
        hours: WorkingHours,
        key: Option<ed25519_dalek::VerifyingKey>,
        store: Option<deadpool_postgres::Pool>,
    ) -> Snapshots {
        Snapshots {
            store,
            dir,
            hours,
            key,
            current: ArcSwapOption::empty(),
            building: tokio::sync::Mutex::new(()),
        }
    }

    /// The current snapshot, built now when there is none yet.
    pub async fn get(&self) -> Result<Arc<Snapshot>, String> {
        match self.current.load_full() {
            Some(s) => Ok(s),
            None => self.rebuild().await,
        }
    }

    /// Builds a new snapshot and makes it current.
    pub async fn rebuild(&self) -> Result<Arc<Snapshot>, String> {
        let _one = self.building.lock().await;
        let (dir, hours, key) = (self.dir.clone(), self.hours.clone(), self.key);
        let snap = tokio::task::spawn_blocking(move || build(&dir, &hours, key.as_ref()))
            .await
            .map_err(|e| format!("the snapshot task failed: {e}"))??;
        let mut snap = snap;
        if let Some(pool) = &self.store
            && let Err(e) = add_store(pool, self.key.as_ref(), &self.hours, &mut snap).await
        {
            tracing::warn!(error = %e, "console: the central store could not be read");
            snap.store_error = Some(e);
        }
        let snap = Arc::new(snap);
        self.current.store(Some(snap.clone()));
        Ok(snap)
    }
}

/// The lookups per day as an inline SVG bar chart (the last 31 days that have lookups).
pub fn chart(per_day: &BTreeMap<String, (u64, u64)>, title: &str, desc: &str) -> String {
    use crate::audit::report::html_escape as esc;
    let days: Vec<(&String, &(u64, u64))> = per_day.iter().rev().take(31).collect();
    let days: Vec<_> = days.into_iter().rev().collect();
    let max = days
        .iter()
        .map(|(_, (a, d))| a + d)
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, left, bottom) = (760u64, 220u64, 40u64, 40u64);
    let slot = if days.is_empty() {
        w
    } else {
        (w - left) / days.len() as u64
    };
    let bar = slot.saturating_sub(4).max(2);
    let plot = h - bottom - 10;
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-labelledby=\"chart-title chart-desc\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"chart-title\">{}</title><desc id=\"chart-desc\">{}</desc>",
        esc(title),
        esc(desc)
    );
    svg.push_str(&format!(
        "<text x=\"0\" y=\"12\">{max}</text><text x=\"0\" y=\"{}\">0</text><line x1=\"{left}\" y1=\"{}\" x2=\"{w}\" y2=\"{}\" stroke=\"#767676\"/>",
        h - bottom,
        h - bottom,
        h - bottom
    ));
    for (i, (day, (allow, deny))) in days.iter().enumerate() {
        let x = left + i as u64 * slot + 2;
        let ha = allow * plot / max;
        let hd = deny * plot / max;
        let base = h - bottom;
        svg.push_str(&format!(
            "<g><title>{}: {allow} / {deny}</title><rect class=\"allow\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{ha}\"/><rect class=\"deny\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{hd}\"/></g>",
            esc(day),
            base - ha,
            base - ha - hd
        ));
        if days.len() <= 10 || i % 5 == 0 {
            svg.push_str(&format!(
                "<text x=\"{x}\" y=\"{}\">{}</text>",
                h - bottom + 14,
                esc(day.get(5..).unwrap_or(day))
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}
