//! `audit verify --db`: every gate's chain from the stored bytes alone.
//!
//! For each gate: the rows' seqs are gap-free from 1 up to the shipped position with each seq
//! exactly once, every line passes the audit parser and the chain rule (the same
//! [`crate::audit::Chain`] as `audit verify --dir`), each row's columns (time, kind, request id,
//! employee, subjects: what `audit query --db` finds rows by) are what its line says, the last
//! line hashes to the shipped hash,
//! each checkpoint note is signed (with `--pubkey`) and its root equals the Merkle root of the
//! stored rows it covers, and no equivocation is on record.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use futures_util::{TryStreamExt, pin_mut};

use super::StoreError;
use super::ship::{Columns, line_hash};
use crate::audit::merkle::{Frontier, leaf_hash};

/// One gate's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSummary {
    pub gate_id: String,
    pub records: u64,
    pub checkpoints: u64,
}

/// The first failure found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gate `{gate_id}`{}: {message}", seq.map(|s| format!(" seq {s}")).unwrap_or_default())]
pub struct StoreVerifyFailure {
    pub gate_id: String,
    pub seq: Option<u64>,
    pub message: String,
}

/// Verification could not run, or found a failure.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Failed(StoreVerifyFailure),
}

impl From<tokio_postgres::Error> for VerifyError {
    fn from(e: tokio_postgres::Error) -> VerifyError {
        VerifyError::Store(e.into())
    }
}

/// Verifies every gate in the store (or only `only_gate`). `progress` is called now and then
/// with the records checked so far.
pub async fn verify_store(
    client: &impl GenericClient,
    key: Option<&ed25519_dalek::VerifyingKey>,
    only_gate: Option<&str>,
    mut progress: impl FnMut(u64),
) -> Result<Vec<GateSummary>, VerifyError> {
    super::schema::check(client).await?;
    let fail = |gate_id: &str, seq: Option<u64>, message: String| {
        VerifyError::Failed(StoreVerifyFailure {
            gate_id: gate_id.to_string(),
            seq,
            message,
        })
    };
    let equivocations = client
        .query(
            "SELECT gate_id, seq, detail FROM pg_equivocations ORDER BY id",
            &[],
        )
        .await?;
    for row in &equivocations {
        let gate_id: String = row.try_get(0)?;
        if only_gate.is_some_and(|g| g != gate_id) {
            continue;
        }
        let seq: i64 = row.try_get(1)?;
        let detail: String = row.try_get(2)?;
        return Err(fail(
            &gate_id,
            u64::try_from(seq).ok(),
            format!("equivocation on record: {detail}"),
        ));
    }
    let gates = client
        .query(
            "SELECT gate_id, shipped_seq, shipped_hash FROM pg_gates ORDER BY gate_id",
            &[],
        )
        .await?;
    let mut total = 0u64;
    let mut summaries = Vec::new();
    for g in gates {
        let gate_id: String = g.try_get(0)?;
        if only_gate.is_some_and(|o| o != gate_id) {
            continue;
        }
        let shipped_seq = u64::try_from(g.try_get::<_, i64>(1)?).unwrap_or(0);
        let shipped_hash: Vec<u8> = g.try_get(2)?;

        // The checkpoints, by tree size, with the root each note states.
        let mut wanted: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
        let cps = client
            .query(
                "SELECT seq, tree_size, note FROM pg_checkpoints WHERE gate_id = $1 ORDER BY seq",
                &[&gate_id],
            )
            .await?;
        let mut checkpoint_seqs = std::collections::BTreeSet::new();
        for c in &cps {
            let seq = u64::try_from(c.try_get::<_, i64>(0)?).unwrap_or(0);
            let size = u64::try_from(c.try_get::<_, i64>(1)?).unwrap_or(0);
            let note: String = c.try_get(2)?;
            let parsed = match key {
                Some(k) => crate::audit::checkpoint::verify_note(&note, k),
                None => crate::audit::checkpoint::parse_note(&note),
            }
            .map_err(|e| fail(&gate_id, Some(seq), format!("checkpoint note: {e}")))?;
            if parsed.tree_size != size {
                return Err(fail(
                    &gate_id,
                    Some(seq),
                    format!(
                        "checkpoint note covers {} records, its record says {size}",
                        parsed.tree_size
                    ),
                ));
            }
            checkpoint_seqs.insert(seq);
            wanted
                .entry(size)
                .or_default()
                .push((seq, parsed.root_base64()));
        }

        let mut chain = crate::audit::Chain::genesis();
        let mut frontier = Frontier::new();
        let mut last_hash = [0u8; 32];
        let mut checkpoint_records = 0u64;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&gate_id];
        let rows = client
            .query_raw(
                "SELECT seq, line, rec_time, kind, request_id, employee, subjects
                 FROM pg_records WHERE gate_id = $1 ORDER BY seq",
                params,
            )
            .await?;
        pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            let seq = u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0);
            let line: Vec<u8> = row.try_get(1)?;
            if seq > shipped_seq {
                return Err(fail(
                    &gate_id,
                    Some(seq),
                    format!("a row beyond the shipped position {shipped_seq}"),
                ));
            }
            let record = chain
                .check(&line)
                .map_err(|f| fail(&gate_id, Some(f.seq().unwrap_or(seq)), f.to_string()))?;
            if record.seq() != seq {
                return Err(fail(
                    &gate_id,
                    Some(seq),
                    format!(
                        "the row's key says seq {seq}, its line seq {}",
                        record.seq()
                    ),
                ));
            }
            if let Some(which) = columns_differ(&row, &record)? {
                return Err(fail(
                    &gate_id,
                    Some(seq),
                    format!("the row's {which} is not what its line says"),
                ));
            }
            if let crate::audit::Record::Checkpoint(c) = &record {
                checkpoint_records += 1;
                if !checkpoint_seqs.contains(&seq) {
                    return Err(fail(
                        &gate_id,
                        Some(seq),
                        "checkpoint record without its shipped note".into(),
                    ));
                }
                if wanted
                    .get(&c.tree_size)
                    .is_none_or(|v| !v.iter().any(|(s, root)| *s == seq && *root == c.root))
                {
                    return Err(fail(
                        &gate_id,
                        Some(seq),
                        "checkpoint record and its note disagree".into(),
                    ));
                }
            }
            frontier.push(leaf_hash(&line));
            if let Some(cps) = wanted.get(&frontier.size()) {
                let root = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    frontier.root(),
                );
                if let Some((cseq, _)) = cps.iter().find(|(_, r)| *r != root) {
                    return Err(fail(
                        &gate_id,
                        Some(*cseq),
                        format!(
                            "checkpoint root does not match the stored records 1..={}",
                            frontier.size()
                        ),
                    ));
                }
            }
            last_hash = line_hash(&line);
            total += 1;
            if total.is_multiple_of(100_000) {
                progress(total);
            }
        }
        let records = chain.next_seq - 1;
        if records != shipped_seq {
            return Err(fail(
                &gate_id,
                Some(records + 1),
                format!("rows end at seq {records}, the shipped position is {shipped_seq}"),
            ));
        }
        if shipped_seq > 0 && last_hash.as_slice() != shipped_hash.as_slice() {
            return Err(fail(
                &gate_id,
                Some(shipped_seq),
                "the last row does not hash to the shipped position's hash".into(),
            ));
        }
        if let Some((size, _)) = wanted.range(shipped_seq + 1..).next() {
            return Err(fail(
                &gate_id,
                None,
                format!("a checkpoint covers {size} records, only {shipped_seq} are stored"),
            ));
        }
        summaries.push(GateSummary {
            gate_id,
            records,
            checkpoints: checkpoint_records,
        });
    }
    progress(total);
    Ok(summaries)
}

/// Which of a row's columns (if any) differ from those of its line: an altered column hides a
/// row from (or adds it to) `audit query --db` while the line and the chain stay intact.
fn columns_differ(
    row: &tokio_postgres::Row,
    record: &crate::audit::Record,
) -> Result<Option<&'static str>, VerifyError> {
    // The one way a parsed record has no columns: its time is not RFC 3339.
    let Ok(line) = Columns::of(record) else {
        return Ok(Some("time"));
    };
    let time: chrono::DateTime<chrono::Utc> = row.try_get(2)?;
    let kind: String = row.try_get(3)?;
    let request_id: String = row.try_get(4)?;
    let employee: Option<String> = row.try_get(5)?;
    let subjects: Vec<String> = row.try_get(6)?;
    // The store keeps microseconds.
    Ok(if time.timestamp_micros() != line.time.timestamp_micros() {
        Some("time")
    } else if kind != line.kind {
        Some("kind")
    } else if request_id != line.request_id {
        Some("request id")
    } else if employee != line.employee {
        Some("employee")
    } else if subjects != line.subjects {
        Some("subjects")
    } else {
        None
    })
}
