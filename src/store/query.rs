//! `audit query --db` (and the reports built on it): the same query as over a directory, run
//! over each gate's stored lines, fetched by index instead of by a scan.
//!
//! The rows a filter can match are fetched first (by the `subjects` GIN index for a person or
//! vehicle, by employee otherwise), then the other records of the same requests (a decision's
//! outcome), then everything goes through the one query function ([`query_lines`]) as if it
//! were that gate's log.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::GenericClient;

use super::StoreError;
use crate::audit::AuditError;
use crate::audit::query::{Filter, QueryResult, query_lines};

/// The answer per gate, in gate order.
pub async fn query_store(
    client: &impl GenericClient,
    filter: &Filter,
    only_gate: Option<&str>,
) -> Result<Vec<(String, QueryResult)>, StoreError> {
    super::schema::check(client).await?;
    let gates = client
        .query(
            "SELECT gate_id, shipped_seq FROM pg_gates ORDER BY gate_id",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for g in gates {
        let gate_id: String = g.try_get(0)?;
        if only_gate.is_some_and(|o| o != gate_id) {
            continue;
        }
        let shipped: i64 = g.try_get(1)?;
        let needle = filter
            .subject
            .as_deref()
            .or(filter.kenteken.as_deref())
            .map(|s| ("subjects @> ARRAY[$2::text]", s))
            .or(filter.employee.as_deref().map(|e| ("employee = $2", e)));
        let mut lines: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let mut requests: BTreeSet<String> = BTreeSet::new();
        let first = match needle {
            Some((cond, value)) => {
                client
                    .query(
                        &format!(
                            "SELECT seq, line, request_id FROM pg_records WHERE gate_id = $1 AND seq <= $3
                               AND ({cond} OR kind IN ('checkpoint', 'review'))"
                        ),
                        &[&gate_id, &value, &shipped],
                    )
                    .await?
            }
            None => {
                client
                    .query(
                        "SELECT seq, line, request_id FROM pg_records WHERE gate_id = $1 AND seq <= $2",
                        &[&gate_id, &shipped],
                    )
                    .await?
            }
        };
        for r in first {
            let request: String = r.try_get(2)?;
            if !request.is_empty() && needle.is_some() {
                requests.insert(request);
            }
            lines.insert(r.try_get(0)?, r.try_get(1)?);
        }
        if !requests.is_empty() {
            let ids: Vec<&str> = requests.iter().map(String::as_str).collect();
            for r in client
                .query(
                    // `request_id <> ''` spelled out: PostgreSQL proves a partial index's
                    // predicate from `= ANY(array)` only for arrays of up to 100 elements, so
                    // without it a person with more requests gets a sequential scan of every
                    // record (1.9 s instead of 10 ms over 10 million records).
                    "SELECT seq, line FROM pg_records
                     WHERE gate_id = $1 AND request_id = ANY($2) AND request_id <> '' AND seq <= $3",
                    &[&gate_id, &ids, &shipped],
                )
                .await?
            {
                lines.insert(r.try_get(0)?, r.try_get(1)?);
            }
        }
        let name = format!("store gate `{gate_id}`");
        let mut result = query_lines(
            |visit| {
                for (seq, line) in &lines {
                    visit(&name, u64::try_from(*seq).unwrap_or(0), line)?;
                }
                Ok::<(), AuditError>(())
            },
            filter,
        )
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        result.records = u64::try_from(shipped).unwrap_or(0);
        // Reviews made against the store (`audit review --db`) beside the gate's own: a
        // decision shows its latest review from either trail.
        let store_reviews = super::review::reviews_of(client, &gate_id).await?;
        for row in &mut result.rows {
            row.gate = Some(gate_id.clone());
            for r in store_reviews.iter().filter(|r| r.target_seq == row.seq) {
                if row.review.as_ref().is_none_or(|old| r.time >= old.time) {
                    row.review = Some(crate::audit::query::ReviewState {
                        seq: r.seq,
                        by: r.by.clone(),
                        verdict: r.verdict,
                        note: r.note.clone(),
                        time: r.time.clone(),
                    });
                }
            }
        }
        out.push((gate_id, result));
    }
    Ok(out)
}

/// The answers of all gates as one: rows by time. Checkpoints and reviews are per gate (their
/// seqs mean nothing across gates), so they are kept only when one gate answered.
pub fn merge(mut per_gate: Vec<(String, QueryResult)>) -> QueryResult {
    if per_gate.len() == 1
        && let Some((_, only)) = per_gate.pop()
    {
        return only;
    }
    let mut all = QueryResult::default();
    for (_, r) in per_gate {
        all.records += r.records;
        all.rows.extend(r.rows);
        // Access records name no seq of another record: they mean the same in every gate.
        all.accesses.extend(r.accesses);
    }
    all.accesses.sort_by(|a, b| a.time.cmp(&b.time));
    all.rows
        .sort_by(|a, b| (a.when(), &a.gate, a.seq).cmp(&(b.when(), &b.gate, b.seq)));
    all
}

/// The case snapshots `hashes` stored with the shipped records that name them
/// (`pg_case_snapshots`), each checked against its hash; one that does not match is left out
/// and logged (a report then says its case type is not recorded).
pub async fn case_snapshots(
    client: &impl GenericClient,
    hashes: &BTreeSet<String>,
) -> Result<std::collections::HashMap<String, crate::model::Case>, StoreError> {
    let mut out = std::collections::HashMap::new();
    if hashes.is_empty() {
        return Ok(out);
    }
    let wanted: Vec<&str> = hashes.iter().map(String::as_str).collect();
    for row in client
        .query(
            "SELECT hash, snapshot FROM pg_case_snapshots WHERE hash = ANY($1)",
            &[&wanted],
        )
        .await?
    {
        let hash: String = row.try_get(0)?;
        let bytes: Vec<u8> = row.try_get(1)?;
        let what = format!("stored case snapshot `{hash}`");
        match crate::audit::snapshots::parse_snapshot(&hash, &bytes, &what) {
            Ok(case) => {
                out.insert(hash, case);
            }
            Err(e) => tracing::warn!(error = %e, "case snapshot refused"),
        }
    }
    Ok(out)
}
