//! Case snapshots: the case exactly as a decision saw it, kept beside the log as
//! `cases/<sha256>.json` and referenced by hash from the decision record's `inputs.case`
//! (format 1.2), so that records stay small and `policy replay` / `policy explain` can decide
//! again with the case as it was, however the case registry changed since.
//!
//! Guarantees:
//! - Content-addressed: the file name is the lowercase hex SHA-256 of the file's bytes; a reader
//!   checks it, so a changed snapshot is refused, never used.
//! - Durable before it is referenced: a new snapshot is written to a temporary file, fsynced,
//!   renamed and its directory fsynced *before* the decision record that names it is handed to
//!   the writer, so a durable record never names a missing snapshot.
//! - Deduplicated: a snapshot already written (in this process, or found on disk) costs one
//!   hash and a set lookup; only the first decision with a new version of a case pays the
//!   fsyncs. The set holds one 64-byte hash per case version seen since start.
//! - Hashed once per case version: the hash of the snapshot last written for a case is kept
//!   with the case registry's `Arc` of it (which the cache holds, so the allocation cannot be
//!   reused for another case) and the pseudonymisation key; a request that looks up the same
//!   `Arc` (the case file's snapshot, the ZGW cache) reuses it without serialising or hashing.
//! - With `[audit] subject_key`, the snapshot's BSNs are pseudonymised like the records' and the
//!   persons the case names by name are left out: no BSN or name in clear lands in the audit
//!   directory through a snapshot.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::pseudonym::SubjectKey;
use super::record::{DecisionInputs, SearchInput};
use purpose_gate_model::{Case, Counters, Search};

/// Directory of the snapshots, inside the audit directory.
pub const CASES_DIR: &str = "cases";

/// Writes case snapshots into `<audit dir>/cases/`.
#[derive(Debug)]
pub struct CaseSnapshots {
    dir: PathBuf,
    written: Mutex<HashSet<String>>,
    /// Case id → the case as the registry handed it out, the key it was pseudonymised with
    /// and its durable snapshot's hash.
    hashed: Mutex<HashMap<String, HashedCase>>,
}

/// A case whose snapshot is durable, with what its hash was made from.
#[derive(Debug)]
struct HashedCase {
    case: Arc<Case>,
    key: Option<SubjectKey>,
    hash: String,
}

/// Most cases [`CaseSnapshots`] keeps hashes of; when full it starts over (a cold entry costs
/// one serialisation and one hash).
const HASHED_MAX: usize = 4096;

impl CaseSnapshots {
    /// Snapshots for the audit directory `audit_dir` (the `cases/` directory is made on first
    /// use).
    pub fn new(audit_dir: &Path) -> CaseSnapshots {
        CaseSnapshots {
            dir: audit_dir.join(CASES_DIR),
            written: Mutex::new(HashSet::new()),
            hashed: Mutex::new(HashMap::new()),
        }
    }

    /// The hash of `case`'s durable snapshot when this very `Arc` was snapshotted with `key`.
    fn hashed(&self, case: &Arc<Case>, key: Option<&SubjectKey>) -> Option<String> {
        let map = self.hashed.lock().ok()?;
        let h = map.get(&case.id)?;
        // INVARIANT: the cache holds `h.case`, so an equal pointer is the same, unchanged case
        // (a `Case` has no interior mutability).
        let same_key = match (&h.key, key) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        };
        (Arc::ptr_eq(&h.case, case) && same_key).then(|| h.hash.clone())
    }

    /// Remembers that `case`'s snapshot with `key` is durable as `hash`.
    fn remember(&self, case: &Arc<Case>, key: Option<&SubjectKey>, hash: &str) {
        if let Ok(mut map) = self.hashed.lock() {
            if map.len() >= HASHED_MAX {
                map.clear();
            }
            map.insert(
                case.id.clone(),
                HashedCase {
                    case: Arc::clone(case),
                    key: key.cloned(),
                    hash: hash.to_string(),
                },
            );
        }
    }

    fn known(&self, hash: &str) -> bool {
        self.written.lock().is_ok_and(|set| set.contains(hash))
    }

    /// Makes `bytes` durable as `cases/<hash>.json` unless already there; returns the hash.
    /// Blocking: call it off the async workers (see [`decision_inputs`]).
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let hash = hex::encode(Sha256::digest(bytes));
        if self.known(&hash) {
            return Ok(hash);
        }
        let path = self.dir.join(format!("{hash}.json"));
        if !path.exists() {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = self
                .dir
                .join(format!(".{hash}.{}.tmp", uuid::Uuid::new_v4().simple()));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_data()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            // INVARIANT: the rename is durable before the record naming the snapshot is written.
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        if let Ok(mut set) = self.written.lock() {
            set.insert(hash.clone());
        }
        Ok(hash)
    }
}

/// The bytes of a case's snapshot (compact JSON of the case as the gate holds it), with BSNs
/// pseudonymised and named persons left out when `key` is set.
pub fn snapshot_bytes(case: &Case, key: Option<&SubjectKey>) -> Vec<u8> {
    let written = match key {
        None => serde_json::to_vec(case),
        Some(k) => {
            let mut c = case.clone();
            c.subjects = c.subjects.iter().map(|b| k.pseudonymise(b)).collect();
            c.persons = vec![];
            serde_json::to_vec(&c)
        }
    };
    written.unwrap_or_default()
}

/// Reads the snapshot `hash` from the audit directory, checking that its bytes hash to its name.
pub fn read_snapshot(audit_dir: &Path, hash: &str) -> Result<Case, String> {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("case snapshot `{hash}` is not a sha-256 hash"));
    }
    let path = audit_dir.join(CASES_DIR).join(format!("{hash}.json"));
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("case snapshot `{}`: cannot read: {e}", path.display()))?;
    parse_snapshot(hash, &bytes, &format!("case snapshot `{}`", path.display()))
}

/// Parses a snapshot's bytes, checking that they hash to `hash`; `what` names it in errors.
pub fn parse_snapshot(hash: &str, bytes: &[u8], what: &str) -> Result<Case, String> {
    if hex::encode(Sha256::digest(bytes)) != hash {
        return Err(format!("{what} does not match its hash (altered)"));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("{what}: {e}"))
}

/// The `inputs` member of the decision records of one request: the case snapshotted (durably,
/// before this returns), the counters and the search. `None` when the snapshot could not be
/// written: the records then say nothing they cannot back, and the request goes on (the
/// decision itself is recorded as always).
pub async fn decision_inputs(
    snapshots: &Arc<CaseSnapshots>,
    case: Option<&Arc<Case>>,
    key: Option<&SubjectKey>,
    counters: Counters,
    search: Option<&Search>,
) -> Option<DecisionInputs> {
    let case_hash = match case {
        None => None,
        Some(c) => match snapshots.hashed(c, key) {
            Some(hash) => Some(hash),
            None => snapshot_case(snapshots, c, key).await,
        },
    };
    Some(DecisionInputs {
        v: 1,
        case: case_hash,
        lookups_last_hour: counters.lookups_last_hour,
        lookups_last_day: counters.lookups_last_day,
        search: search.map(|s| SearchInput {
            kind: s.kind.as_str().to_string(),
            addresses: s.addresses.clone(),
        }),
    })
}

/// Makes `case`'s snapshot durable (unless it already is) and remembers its hash for this
/// `Arc`; `None` (logged) when it could not be written.
async fn snapshot_case(
    snapshots: &Arc<CaseSnapshots>,
    c: &Arc<Case>,
    key: Option<&SubjectKey>,
) -> Option<String> {
    let bytes = snapshot_bytes(c, key);
    let hash = hex::encode(Sha256::digest(&bytes));
    let hash = if snapshots.known(&hash) {
        hash
    } else {
        let s = Arc::clone(snapshots);
        match tokio::task::spawn_blocking(move || s.put(&bytes)).await {
            Ok(Ok(hash)) => hash,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "case snapshot not written; decision recorded without replay inputs");
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "case snapshot task failed");
                return None;
            }
        }
    };
    snapshots.remember(c, key, &hash);
    Some(hash)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use purpose_gate_model::CaseStatus;

    fn case() -> Case {
        Case {
            id: "Z-1".into(),
            case_type: "parkeervergunning".into(),
            status: CaseStatus::Open,
            opened: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .into(),
            closes: None,
            organization: "0363".into(),
            handlers: vec!["emp-042".into()],
            subjects: vec!["999993653".into()],
            vehicles: vec![],
            addresses: vec![],
            persons: vec![],
            url: None,
        }
    }

    #[test]
    fn snapshot_is_written_once_and_reads_back_checked() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = CaseSnapshots::new(dir.path());
        let bytes = snapshot_bytes(&case(), None);
        let h1 = snaps.put(&bytes).unwrap();
        let h2 = snaps.put(&bytes).unwrap();
        assert_eq!(h1, h2);
        let files: Vec<_> = std::fs::read_dir(dir.path().join(CASES_DIR))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1, "deduplicated, no temporary file left");
        assert_eq!(read_snapshot(dir.path(), &h1).unwrap(), case());

        std::fs::write(
            dir.path().join(CASES_DIR).join(format!("{h1}.json")),
            b"{\"altered\":true}",
        )
        .unwrap();
        assert!(
            read_snapshot(dir.path(), &h1)
                .unwrap_err()
                .contains("altered")
        );
        assert!(read_snapshot(dir.path(), "../../etc/passwd").is_err());
    }

    #[tokio::test]
    async fn a_case_is_hashed_once_per_version_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Arc::new(CaseSnapshots::new(dir.path()));
        let counters = Counters::default();
        let hash_of =
            |c: &Case, k: Option<&SubjectKey>| hex::encode(Sha256::digest(snapshot_bytes(c, k)));
        let v1 = Arc::new(case());
        let first = decision_inputs(&snaps, Some(&v1), None, counters, None).await;
        assert_eq!(first.unwrap().case, Some(hash_of(&v1, None)));
        assert_eq!(snaps.hashed(&v1, None), Some(hash_of(&v1, None)));

        // A new version of the case (a new `Arc` from the registry) is hashed and written anew.
        let mut changed = case();
        changed.subjects.push("999990639".into());
        let v2 = Arc::new(changed);
        assert_eq!(
            snaps.hashed(&v2, None),
            None,
            "another Arc is not the cached case"
        );
        let second = decision_inputs(&snaps, Some(&v2), None, counters, None).await;
        assert_eq!(second.unwrap().case, Some(hash_of(&v2, None)));
        assert_ne!(hash_of(&v1, None), hash_of(&v2, None));
        assert!(read_snapshot(dir.path(), &hash_of(&v2, None)).is_ok());

        // The same case with a pseudonymisation key is another snapshot.
        let key = SubjectKey::new(vec![7u8; 32]).unwrap();
        assert_eq!(snaps.hashed(&v2, Some(&key)), None);
        let keyed = decision_inputs(&snaps, Some(&v2), Some(&key), counters, None).await;
        assert_eq!(keyed.unwrap().case, Some(hash_of(&v2, Some(&key))));
        let other = SubjectKey::new(vec![8u8; 32]).unwrap();
        assert_eq!(snaps.hashed(&v2, Some(&other)), None, "another key misses");
        assert_eq!(
            snaps.hashed(&v2, Some(&key)),
            Some(hash_of(&v2, Some(&key)))
        );
    }

    #[test]
    fn snapshot_with_subject_key_holds_no_bsn_in_clear() {
        let key = SubjectKey::new(vec![7u8; 32]).unwrap();
        let bytes = snapshot_bytes(&case(), Some(&key));
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("999993653"), "{text}");
        assert!(text.contains(&key.pseudonymise("999993653")), "{text}");
    }
}
