//! `policy replay --db` and `policy explain --db`: the decision records of each gate read from
//! the central store (the lines the shipper stored verbatim, parsed by the audit module's one
//! parser) and the case snapshots from `pg_case_snapshots`, where the shipper puts each
//! snapshot a shipped record names. A snapshot is checked against its hash as on disk.

use std::collections::HashMap;
use std::path::Path;

use deadpool_postgres::GenericClient;

use super::StoreError;
use crate::audit::snapshots::parse_snapshot;
use crate::audit::{ReadDecision, Record, parse_record};
use crate::model::Case;
use crate::policy::PolicyEngine;
use crate::policy::replay::{ReplayOptions, ReplayReport, Replayer};

/// Decision rows fetched per round trip.
const PAGE: i64 = 5000;

/// The gates of the store (only `only` when given) and their shipped positions.
async fn gates(
    client: &impl GenericClient,
    only: Option<&str>,
) -> Result<Vec<(String, i64)>, StoreError> {
    super::schema::check(client).await?;
    let mut out = Vec::new();
    for row in client
        .query(
            "SELECT gate_id, shipped_seq FROM pg_gates ORDER BY gate_id",
            &[],
        )
        .await?
    {
        let gate: String = row.try_get(0)?;
        if only.is_none_or(|o| o == gate) {
            out.push((gate, row.try_get(1)?));
        }
    }
    if let Some(o) = only
        && out.is_empty()
    {
        return Err(StoreError::Usage(format!("the store holds no gate `{o}`")));
    }
    Ok(out)
}

fn parse_decision(gate: &str, line: &[u8]) -> Result<Option<Box<ReadDecision>>, StoreError> {
    match parse_record(line) {
        Ok(Record::Decision(d)) => Ok(Some(d)),
        Ok(_) => Ok(None),
        Err(e) => Err(StoreError::Unavailable(format!(
            "store gate `{gate}`: a stored line does not parse: {e}"
        ))),
    }
}

/// The snapshots `hashes` from the store, checked against their hashes, into `cache`.
async fn fetch_snapshots(
    client: &impl GenericClient,
    hashes: Vec<String>,
    cache: &mut HashMap<String, Result<Case, String>>,
) -> Result<(), StoreError> {
    let wanted: Vec<String> = hashes
        .into_iter()
        .filter(|h| !cache.contains_key(h))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    for row in client
        .query(
            "SELECT hash, snapshot FROM pg_case_snapshots WHERE hash = ANY($1)",
            &[&wanted],
        )
        .await?
    {
        let hash: String = row.try_get(0)?;
        let bytes: Vec<u8> = row.try_get(1)?;
        let case = parse_snapshot(&hash, &bytes, &format!("store case snapshot `{hash}`"));
        cache.insert(hash, case);
    }
    for h in wanted {
        cache.entry(h.clone()).or_insert_with(|| {
            Err(format!(
                "case snapshot `{h}` is not in the store (shipped before schema version 2, or missing beside the gate's log)"
            ))
        });
    }
    Ok(())
}

fn lookup(cache: &HashMap<String, Result<Case, String>>, hash: &str) -> Result<Case, String> {
    cache
        .get(hash)
        .cloned()
        .unwrap_or_else(|| Err(format!("case snapshot `{hash}` is not in the store")))
}

/// Replays every gate's shipped decision records (or only `only`'s) under `candidate`.
pub async fn replay_store(
    client: &impl GenericClient,
    candidate: &Path,
    only: Option<&str>,
    opts: &ReplayOptions,
) -> Result<ReplayReport, StoreError> {
    let mut replayer = Replayer::new(candidate, opts).map_err(StoreError::Usage)?;
    let gates = gates(client, only).await?;
    let mut cache: HashMap<String, Result<Case, String>> = HashMap::new();
    for (gate, shipped) in gates {
        let mut after: i64 = 0;
        loop {
            let rows = client
                .query(
                    "SELECT seq, line FROM pg_records
                     WHERE gate_id = $1 AND kind = 'decision' AND seq > $2 AND seq <= $3
                     ORDER BY seq LIMIT $4",
                    &[&gate, &after, &shipped, &PAGE],
                )
                .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.try_get(0)?;
            let mut decisions = Vec::with_capacity(rows.len());
            for row in &rows {
                let line: Vec<u8> = row.try_get(1)?;
                if let Some(d) = parse_decision(&gate, &line)? {
                    decisions.push(d);
                }
            }
            let hashes = decisions
                .iter()
                .filter_map(|d| d.inputs.as_ref().and_then(|i| i.case.clone()))
                .collect();
            fetch_snapshots(client, hashes, &mut cache).await?;
            let snapshots = |h: &str| lookup(&cache, h);
            for d in &decisions {
                replayer.add(d, Some(gate.as_str()), &snapshots);
            }
        }
    }
    Ok(replayer.finish())
}

/// Explains the decision record `seq` of gate `only` (which may be left out when the store
/// holds one gate) under the policies in `dir`.
pub async fn explain_store(
    client: &impl GenericClient,
    dir: &Path,
    only: Option<&str>,
    seq: u64,
) -> Result<String, StoreError> {
    let engine = PolicyEngine::load(dir).map_err(|e| StoreError::Usage(e.to_string()))?;
    let gates = gates(client, only).await?;
    let gate = match gates.as_slice() {
        [(g, _)] => g.clone(),
        [] => return Err(StoreError::Usage("the store holds no gate".into())),
        _ => {
            let names: Vec<&str> = gates.iter().map(|(g, _)| g.as_str()).collect();
            return Err(StoreError::Usage(format!(
                "the store holds several gates ({}); give `--gate ID`",
                names.join(", ")
            )));
        }
    };
    let seq_i = i64::try_from(seq).map_err(|_| StoreError::Usage("seq out of range".into()))?;
    let row = client
        .query_opt(
            "SELECT line FROM pg_records WHERE gate_id = $1 AND seq = $2",
            &[&gate, &seq_i],
        )
        .await?
        .ok_or_else(|| StoreError::Usage(format!("gate `{gate}` has no record with seq {seq}")))?;
    let line: Vec<u8> = row.try_get(0)?;
    let d = parse_decision(&gate, &line)?.ok_or_else(|| {
        StoreError::Usage(format!(
            "record {seq} of gate `{gate}` is not a decision record"
        ))
    })?;
    let mut cache = HashMap::new();
    let hashes = d
        .inputs
        .as_ref()
        .and_then(|i| i.case.clone())
        .into_iter()
        .collect();
    fetch_snapshots(client, hashes, &mut cache).await?;
    let actions = crate::registry::Registries::standard().actions();
    crate::policy::explain::explain_decision(&engine, &d, &|h: &str| lookup(&cache, h), &actions)
        .map_err(StoreError::Usage)
}
