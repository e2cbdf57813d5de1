//! `audit review --db`: reviews made against the central store, themselves a hash chain.
//!
//! A review made against a directory is a `review` record in that gate's log. A review made
//! against the store cannot be: no gate's log may be written from outside its writer, and the
//! store only mirrors the logs. So store-made reviews have their own chain, the **review chain**
//! (`pg_reviews`, chain id [`REVIEW_CHAIN`]): each row holds one line in exactly the framing of
//! a gate's log (`{"seq":N,…,"prev":"<hex>"}`, `seq` gap-free from 1, `prev` the SHA-256 of the
//! previous line's exact bytes, 64 zeros for the first), a `review` record with one more member,
//! `gate`, naming the gate whose decision `target_seq` is. The head (`pg_review_chains`) is
//! locked by each append, so concurrent reviewers are serialised and never fork the chain.
//!
//! Guarantees: a review names a decision record the store holds; the line is checked by the
//! same parser and chain rule as a gate's log before it is stored; `audit verify --db` checks
//! the chain from the stored bytes alone ([`verify_reviews`]); the query and the reports over
//! the store (`signals --db`, …) show a decision's latest review from either trail.
//!
//! Refuses: an empty reviewer; a seq that is not a decision record of the gate; a store with
//! more than one gate without `--gate`.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::StoreError;
use crate::audit::{Record, ReviewKind, ReviewVerdict};

/// The id of the review chain in `pg_review_chains` and `pg_reviews`.
pub const REVIEW_CHAIN: &str = "reviews";

/// The body of a store-made review line: a `review` record plus the reviewed gate.
#[derive(Serialize)]
struct StoreReview<'a> {
    time: String,
    kind: ReviewKind,
    gate: &'a str,
    target_seq: u64,
    by: &'a str,
    verdict: ReviewVerdict,
    note: Option<&'a str>,
}

/// The reviewed gate and seq as a line names them (the parser of the log ignores `gate`).
#[derive(serde::Deserialize)]
struct Target {
    gate: String,
    target_seq: u64,
}

/// A stored review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReview {
    /// Its seq in the review chain.
    pub seq: u64,
    /// The gate whose decision it reviews.
    pub gate: String,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends a review of decision `seq` of `gate` (or of the store's only gate) to the review
/// chain.
pub async fn append_review(
    client: &mut deadpool_postgres::Client,
    gate: Option<&str>,
    seq: u64,
    by: &str,
    verdict: ReviewVerdict,
    note: Option<&str>,
) -> Result<StoredReview, StoreError> {
    super::schema::check(&*client).await?;
    if by.trim().is_empty() {
        return Err(StoreError::Usage("`--by` must name the reviewer".into()));
    }
    let gate = match gate {
        Some(g) => g.to_string(),
        None => {
            let gates: Vec<String> = client
                .query("SELECT gate_id FROM pg_gates ORDER BY gate_id", &[])
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            match gates.as_slice() {
                [one] => one.clone(),
                [] => return Err(StoreError::Usage("the store holds no gate".into())),
                _ => {
                    return Err(StoreError::Usage(format!(
                        "the store holds {} gates and seqs are per gate: give `--gate ID`",
                        gates.len()
                    )));
                }
            }
        }
    };
    let target = client
        .query_opt(
            "SELECT line FROM pg_records WHERE gate_id = $1 AND seq = $2",
            &[&gate, &to_i64(seq)],
        )
        .await?;
    let Some(target) = target else {
        return Err(StoreError::Usage(format!(
            "gate `{gate}` seq {seq} is not in the store"
        )));
    };
    let line: Vec<u8> = target.try_get(0)?;
    if !matches!(crate::audit::parse_record(&line), Ok(Record::Decision(_))) {
        return Err(StoreError::Usage(format!(
            "gate `{gate}` seq {seq} is not a decision record"
        )));
    }

    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO pg_review_chains (chain) VALUES ($1) ON CONFLICT (chain) DO NOTHING",
        &[&REVIEW_CHAIN],
    )
    .await?;
    let head = tx
        .query_one(
            "SELECT head_seq, head_hash FROM pg_review_chains WHERE chain = $1 FOR UPDATE",
            &[&REVIEW_CHAIN],
        )
        .await?;
    let head_seq = u64::try_from(head.try_get::<_, i64>(0)?).unwrap_or(0);
    let head_hash: Vec<u8> = head.try_get(1)?;
    let now = chrono::Utc::now();
    let body = serde_json::to_vec(&StoreReview {
        time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        kind: ReviewKind::Review,
        gate: &gate,
        target_seq: seq,
        by: by.trim(),
        verdict,
        note,
    })
    .map_err(|e| StoreError::Unavailable(format!("cannot encode the review: {e}")))?;
    let line = frame(head_seq + 1, &body, &hex::encode(&head_hash))?;
    // The same parser and chain rule as a gate's log, before anything is stored.
    let mut chain = crate::audit::Chain::genesis();
    chain.next_seq = head_seq + 1;
    chain.prev_hex = hex_array(&head_hash)?;
    chain
        .check(&line)
        .map_err(|f| StoreError::Unavailable(format!("the review line is not valid: {f}")))?;
    tx.execute(
        "INSERT INTO pg_reviews (chain, seq, rec_time, target_gate, target_seq, line)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &REVIEW_CHAIN,
            &to_i64(head_seq + 1),
            &now,
            &gate,
            &to_i64(seq),
            &line,
        ],
    )
    .await?;
    let hash: [u8; 32] = Sha256::digest(&line).into();
    tx.execute(
        "UPDATE pg_review_chains SET head_seq = $2, head_hash = $3 WHERE chain = $1",
        &[&REVIEW_CHAIN, &to_i64(head_seq + 1), &hash.as_slice()],
    )
    .await?;
    tx.commit().await?;
    Ok(StoredReview {
        seq: head_seq + 1,
        gate,
    })
}

/// `{"seq":N,<body's members>,"prev":"<hex>"}`: the framing of the audit writer.
fn frame(seq: u64, body: &[u8], prev_hex: &str) -> Result<Vec<u8>, StoreError> {
    let inner = body
        .strip_prefix(b"{")
        .and_then(|b| b.strip_suffix(b"}"))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| StoreError::Unavailable("the review is not a json object".into()))?;
    let mut line = format!("{{\"seq\":{seq},").into_bytes();
    line.extend_from_slice(inner);
    line.extend_from_slice(format!(",\"prev\":\"{prev_hex}\"}}").as_bytes());
    Ok(line)
}

fn hex_array(bytes: &[u8]) -> Result<[u8; 64], StoreError> {
    let text = hex::encode(bytes);
    text.as_bytes()
        .try_into()
        .map_err(|_| StoreError::Unavailable("the review chain's head hash is not 32 bytes".into()))
}

/// The review chain checked from the stored bytes: seqs gap-free from 1, each line passes the
/// audit parser and the chain rule and is a `review` record, its `gate` and `target_seq` are
/// the row's, and the head is the last line. Returns the number of reviews, or the first
/// failure (`Err(Ok(message naming the seq))`).
pub async fn verify_reviews(
    client: &impl GenericClient,
) -> Result<Result<u64, String>, StoreError> {
    let fail = |seq: u64, message: String| Ok(Err(format!("review chain seq {seq}: {message}")));
    let rows = client
        .query(
            "SELECT seq, target_gate, target_seq, line FROM pg_reviews WHERE chain = $1 ORDER BY seq",
            &[&REVIEW_CHAIN],
        )
        .await?;
    let mut chain = crate::audit::Chain::genesis();
    let mut last_hash = [0u8; 32];
    let mut n = 0u64;
    for row in rows {
        let seq = u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0);
        let target_gate: String = row.try_get(1)?;
        let target_seq = u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0);
        let line: Vec<u8> = row.try_get(3)?;
        let record = match chain.check(&line) {
            Ok(r) => r,
            Err(f) => return fail(f.seq().unwrap_or(seq), f.to_string()),
        };
        if record.seq() != seq {
            return fail(
                seq,
                format!(
                    "the row's key says seq {seq}, its line seq {}",
                    record.seq()
                ),
            );
        }
        let Record::Review(_) = record else {
            return fail(seq, "not a review record".into());
        };
        match serde_json::from_slice::<Target>(&line) {
            Ok(t) if t.gate == target_gate && t.target_seq == target_seq => {}
            Ok(t) => {
                return fail(
                    seq,
                    format!(
                        "the line reviews gate `{}` seq {}, the row says gate `{target_gate}` seq {target_seq}",
                        t.gate, t.target_seq
                    ),
                );
            }
            Err(_) => return fail(seq, "the line names no reviewed `gate`".into()),
        }
        last_hash = Sha256::digest(&line).into();
        n += 1;
    }
    let head = client
        .query_opt(
            "SELECT head_seq, head_hash FROM pg_review_chains WHERE chain = $1",
            &[&REVIEW_CHAIN],
        )
        .await?;
    let (head_seq, head_hash) = match head {
        Some(h) => (
            u64::try_from(h.try_get::<_, i64>(0)?).unwrap_or(0),
            h.try_get::<_, Vec<u8>>(1)?,
        ),
        None => (0, vec![0; 32]),
    };
    if head_seq != n {
        return fail(
            n + 1,
            format!("the head says {head_seq} reviews, the chain holds {n}"),
        );
    }
    if head_hash != last_hash {
        return fail(n, "the last line does not hash to the head's hash".into());
    }
    Ok(Ok(n))
}

/// The store-made reviews of one gate's decisions, in chain order.
pub async fn reviews_of(
    client: &impl GenericClient,
    gate: &str,
) -> Result<Vec<crate::audit::ReadReview>, StoreError> {
    let rows = client
        .query(
            "SELECT line FROM pg_reviews WHERE chain = $1 AND target_gate = $2 ORDER BY seq",
            &[&REVIEW_CHAIN, &gate],
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let line: Vec<u8> = row.try_get(0)?;
        // An unreadable line is `audit verify --db`'s to report; it shows no review here.
        if let Ok(Record::Review(r)) = crate::audit::parse_record(&line) {
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_review_passes_the_log_parser_and_chain_rule() {
        let body = serde_json::to_vec(&StoreReview {
            time: "2026-03-01T10:00:00.000Z".into(),
            kind: ReviewKind::Review,
            gate: "gate-a",
            target_seq: 7,
            by: "auditor-1",
            verdict: ReviewVerdict::Ok,
            note: Some("checked"),
        })
        .unwrap();
        let line = frame(1, &body, &"0".repeat(64)).unwrap();
        let mut chain = crate::audit::Chain::genesis();
        let Record::Review(r) = chain.check(&line).unwrap() else {
            panic!("not a review");
        };
        assert_eq!((r.seq, r.target_seq, r.by.as_str()), (1, 7, "auditor-1"));
        let t: Target = serde_json::from_slice(&line).unwrap();
        assert_eq!(t.gate, "gate-a");
        // The next line must link to this one.
        let next = frame(2, &body, &"0".repeat(64)).unwrap();
        assert!(chain.check(&next).is_err());
    }
}
