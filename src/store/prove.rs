//! A record's inclusion proof built from the central store (the console's *Bewijs* with
//! `[console] db`): the same proof file as `audit prove --dir`, checkable the same ways.
//!
//! Guarantees: the proof is against the gate's largest shipped checkpoint note (exactly as
//! the gate signed it); the gate's stored lines 1..=tree size are read in seq order, must be
//! gap-free, and must give the note's root before a proof is made. Refuses: a gate without a
//! shipped checkpoint, a seq the latest checkpoint does not cover (shipping lags the gate;
//! a record is provable once a checkpoint that covers it has been shipped).

use deadpool_postgres::GenericClient;
use futures_util::{TryStreamExt, pin_mut};

use super::StoreError;
use crate::audit::integrity::{InclusionProof, proof_from_leaves};
use crate::audit::merkle::leaf_hash;

/// The inclusion proof of record `seq` of `gate` against its latest stored checkpoint.
pub async fn prove_stored(
    client: &impl GenericClient,
    gate: &str,
    seq: u64,
) -> Result<InclusionProof, String> {
    let store = |e: tokio_postgres::Error| StoreError::from(e).to_string();
    super::schema::check(client)
        .await
        .map_err(|e| e.to_string())?;
    let Some(row) = client
        .query_opt(
            "SELECT tree_size, note FROM pg_checkpoints WHERE gate_id = $1
              ORDER BY tree_size DESC LIMIT 1",
            &[&gate],
        )
        .await
        .map_err(store)?
    else {
        return Err(format!(
            "gate `{gate}` has no checkpoint in the store yet: no proof can be made"
        ));
    };
    let size: i64 = row.try_get(0).map_err(store)?;
    let note: String = row.try_get(1).map_err(store)?;
    let checkpoint = crate::audit::checkpoint::parse_note(&note)
        .map_err(|e| format!("gate `{gate}`: stored checkpoint note: {e}"))?;
    if seq == 0 || seq > checkpoint.tree_size {
        return Err(format!(
            "seq {seq} of gate `{gate}` is not covered by its latest shipped checkpoint (records 1..={})",
            checkpoint.tree_size
        ));
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&gate, &size];
    let rows = client
        .query_raw(
            "SELECT seq, line FROM pg_records WHERE gate_id = $1 AND seq <= $2 ORDER BY seq",
            params,
        )
        .await
        .map_err(store)?;
    pin_mut!(rows);
    let mut leaves = Vec::new();
    let mut line_of_seq = None;
    while let Some(row) = rows.try_next().await.map_err(store)? {
        let at = u64::try_from(row.try_get::<_, i64>(0).map_err(store)?).unwrap_or(0);
        let line: Vec<u8> = row.try_get(1).map_err(store)?;
        let expected = leaves.len() as u64 + 1;
        if at != expected {
            return Err(format!(
                "gate `{gate}`: the store holds seq {at} where seq {expected} was expected"
            ));
        }
        leaves.push(leaf_hash(&line));
        if at == seq {
            line_of_seq = Some(String::from_utf8_lossy(&line).into_owned());
        }
    }
    proof_from_leaves(
        seq,
        line_of_seq.unwrap_or_default(),
        &leaves,
        &checkpoint,
        &note,
        &format!("the stored checkpoint of gate `{gate}` at {size} records"),
    )
    .map_err(|f| f.message)
}
