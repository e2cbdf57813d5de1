//! Integrity beyond the hash chain: signed checkpoints checked against the records, and
//! inclusion proofs that outsiders can check without the log.
//!
//! [`verify_log`] checks, in one pass over the log: the chain (as [`super::verify`]); for each
//! `checkpoint` record, that its file exists, covers fewer records than its own seq, and that
//! file, record and the records' Merkle root agree; for each checkpoint file (also one without
//! a record, e.g. written just before a crash), that its root is the root of the first
//! `tree_size` records and, with a public key, that its signature is valid; that checkpoint
//! records come in increasing tree size. Two checkpoints whose roots both match the same
//! verified records are consistent (the smaller tree is a prefix of the larger), which is what
//! an RFC 6962 consistency proof shows to someone without the log.
//!
//! What this detects: editing, inserting, deleting or reordering any record (the chain, or,
//! when the attacker re-computed the chain, the signed roots), and truncating the log below
//! the last checkpoint (a checkpoint that covers more records than the log holds). It cannot
//! detect truncation when the checkpoint files were deleted too: keep copies of checkpoints
//! outside the machine (see `docs/auditing.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::VerifyFailure;
use super::checkpoint::{
    Checkpoint, checkpoint_file_name, list_checkpoint_files, parse_note, verify_note,
};
use super::format::parse_record;
use super::merkle::{Frontier, Hash, inclusion_proof, leaf_hash, verify_inclusion};
use super::reader::{LogWalker, walk_verified};
use super::record::Record;

/// Result of a successful [`verify_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegritySummary {
    pub records: u64,
    pub segments: usize,
    /// Checkpoint files whose root matched.
    pub checkpoints: usize,
    /// Whether their signatures were checked (a public key was given).
    pub signatures_checked: bool,
    /// The largest checkpoint: tree size and note text.
    pub latest: Option<(u64, String)>,
}

fn fail(seq: Option<u64>, message: String) -> VerifyFailure {
    VerifyFailure { seq, message }
}

/// A checkpoint file as read from disk.
struct CheckpointFile {
    relative: String,
    text: String,
    checkpoint: Checkpoint,
}

fn read_checkpoint_files(
    dir: &Path,
    key: Option<&VerifyingKey>,
) -> Result<BTreeMap<u64, CheckpointFile>, VerifyFailure> {
    let files = list_checkpoint_files(dir)
        .map_err(|e| fail(None, format!("cannot list the checkpoint directory: {e}")))?;
    let mut out = BTreeMap::new();
    for (size, path) in files {
        let relative = checkpoint_file_name(size);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| fail(None, format!("checkpoint `{relative}`: cannot read: {e}")))?;
        let checkpoint = match key {
            Some(k) => verify_note(&text, k),
            None => parse_note(&text),
        }
        .map_err(|e| fail(None, format!("checkpoint `{relative}`: {e}")))?;
        if checkpoint.tree_size != size {
            return Err(fail(
                None,
                format!(
                    "checkpoint `{relative}`: tree size {} does not match its file name",
                    checkpoint.tree_size
                ),
            ));
        }
        out.insert(
            size,
            CheckpointFile {
                relative,
                text,
                checkpoint,
            },
        );
    }
    Ok(out)
}

/// Verifies the chain and every checkpoint (signatures too when `key` is given).
pub fn verify_log(
    dir: &Path,
    key: Option<&VerifyingKey>,
) -> Result<IntegritySummary, VerifyFailure> {
    let files = read_checkpoint_files(dir, key)?;
    let wanted: BTreeSet<u64> = files.keys().copied().collect();
    let mut roots: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut frontier = Frontier::new();
    if wanted.contains(&0) {
        roots.insert(0, frontier.root());
    }
    let mut last_record_size = None::<(u64, u64)>;
    let (_, segments) = walk_verified(dir, true, |v| {
        frontier.push(v.leaf);
        if wanted.contains(&frontier.size()) {
            roots.insert(frontier.size(), frontier.root());
        }
        let Record::Checkpoint(cp) = v.record else {
            return Ok(());
        };
        let at = |m: String| {
            fail(
                Some(cp.seq),
                format!("checkpoint record seq {}: {m}", cp.seq),
            )
        };
        if cp.tree_size >= cp.seq {
            return Err(at(format!(
                "tree size {} must be below its own seq",
                cp.tree_size
            )));
        }
        if let Some((seq, size)) = last_record_size
            && cp.tree_size <= size
        {
            return Err(at(format!(
                "tree size {} does not grow past {size} of the checkpoint record at seq {seq}",
                cp.tree_size
            )));
        }
        last_record_size = Some((cp.seq, cp.tree_size));
        let expected_file = checkpoint_file_name(cp.tree_size);
        if cp.file != expected_file {
            return Err(at(format!(
                "names file `{}`, expected `{expected_file}`",
                cp.file
            )));
        }
        let Some(file) = files.get(&cp.tree_size) else {
            return Err(at(format!("checkpoint file `{expected_file}` is missing")));
        };
        let Some(root) = roots.get(&cp.tree_size) else {
            return Err(at("no root computed for its tree size".into()));
        };
        if cp.root != B64.encode(root) || file.checkpoint.root != *root {
            return Err(at(format!(
                "root `{}` (record) / `{}` (file) does not match the records 1..={}, expected `{}`",
                cp.root,
                file.checkpoint.root_base64(),
                cp.tree_size,
                B64.encode(root)
            )));
        }
        if file.checkpoint.origin != cp.origin {
            return Err(at(format!(
                "origin `{}` differs from the file's `{}`",
                cp.origin, file.checkpoint.origin
            )));
        }
        Ok(())
    })?;
    let records = frontier.size();
    for (size, file) in &files {
        if *size > records {
            return Err(fail(
                None,
                format!(
                    "log truncated: checkpoint `{}` covers {size} records but the log has only {records}",
                    file.relative
                ),
            ));
        }
        match roots.get(size) {
            Some(root) if *root == file.checkpoint.root => {}
            _ => {
                return Err(fail(
                    None,
                    format!(
                        "checkpoint `{}`: root `{}` does not match the records 1..={size}{}",
                        file.relative,
                        file.checkpoint.root_base64(),
                        roots
                            .get(size)
                            .map(|r| format!(", expected `{}`", B64.encode(r)))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(IntegritySummary {
        records,
        segments,
        checkpoints: files.len(),
        signatures_checked: key.is_some(),
        latest: files
            .iter()
            .next_back()
            .map(|(size, f)| (*size, f.text.clone())),
    })
}

/// An inclusion proof of one record against a signed checkpoint (the `audit prove` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// `purpose-gate-inclusion-proof/1`.
    pub format: String,
    pub seq: u64,
    /// The record's exact line (without the newline).
    pub line: String,
    /// 0-based leaf index (`seq - 1`).
    pub leaf_index: u64,
    pub tree_size: u64,
    /// RFC 6962 audit path, bottom up, standard base64.
    pub audit_path: Vec<String>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

/// The proof format name.
pub const PROOF_FORMAT: &str = "purpose-gate-inclusion-proof/1";

/// Builds an inclusion proof of record `seq` against the latest checkpoint file (whose root
/// must match the records).
pub fn prove(dir: &Path, seq: u64) -> Result<InclusionProof, VerifyFailure> {
    let files = read_checkpoint_files(dir, None)?;
    let Some((size, file)) = files.iter().next_back() else {
        return Err(fail(None, "the log has no checkpoint yet".into()));
    };
    if seq == 0 || seq > *size {
        return Err(fail(
            Some(seq),
            format!(
                "seq {seq} is not covered by the latest checkpoint `{}` (records 1..={size})",
                file.relative
            ),
        ));
    }
    let mut leaves: Vec<Hash> = Vec::with_capacity(usize::try_from(*size).unwrap_or(0));
    let mut line_of_seq = None;
    let mut walker = LogWalker::open(dir, true).map_err(|f| f.to_verify_failure())?;
    while (leaves.len() as u64) < *size {
        let Some((line, _)) = walker.next_record().map_err(|f| f.to_verify_failure())? else {
            break;
        };
        leaves.push(leaf_hash(line));
        if leaves.len() as u64 == seq {
            line_of_seq = Some(String::from_utf8_lossy(line).into_owned());
        }
    }
    if (leaves.len() as u64) < *size {
        return Err(fail(
            None,
            format!(
                "log truncated: checkpoint `{}` covers {size} records but the log has only {}",
                file.relative,
                leaves.len()
            ),
        ));
    }
    proof_from_leaves(
        seq,
        line_of_seq.unwrap_or_default(),
        &leaves,
        &file.checkpoint,
        &file.text,
        &format!("checkpoint `{}`", file.relative),
    )
}

/// Builds the proof of record `seq` (whose line is `line`) from the leaf hashes of records
/// 1..=`checkpoint.tree_size` and the checkpoint's note text, after checking that the leaves
/// give the checkpoint's root (`what` names the checkpoint in errors). [`prove`] reads the
/// leaves from the log; the console reads them from the central store.
pub fn proof_from_leaves(
    seq: u64,
    line: String,
    leaves: &[Hash],
    checkpoint: &Checkpoint,
    note: &str,
    what: &str,
) -> Result<InclusionProof, VerifyFailure> {
    if leaves.len() as u64 != checkpoint.tree_size {
        return Err(fail(
            None,
            format!(
                "{what} covers {} records, {} were read",
                checkpoint.tree_size,
                leaves.len()
            ),
        ));
    }
    if super::merkle::root_of(leaves) != checkpoint.root {
        return Err(fail(
            None,
            format!("{what}: root does not match the records"),
        ));
    }
    if seq == 0 || seq > checkpoint.tree_size {
        return Err(fail(
            Some(seq),
            format!("seq {seq} is not covered by {what}"),
        ));
    }
    let index = usize::try_from(seq - 1).map_err(|_| fail(Some(seq), "seq too large".into()))?;
    let path = inclusion_proof(leaves, index)
        .ok_or_else(|| fail(Some(seq), "seq outside the tree".into()))?;
    Ok(InclusionProof {
        format: PROOF_FORMAT.into(),
        seq,
        line,
        leaf_index: seq - 1,
        tree_size: checkpoint.tree_size,
        audit_path: path.iter().map(|h| B64.encode(h)).collect(),
        checkpoint: note.to_string(),
    })
}

/// Checks a proof without the log: the note's signature by `key`, the tree size, that the
/// line is a record with that seq, and the RFC 6962 inclusion of its leaf hash.
pub fn check_proof(proof: &InclusionProof, key: &VerifyingKey) -> Result<Checkpoint, String> {
    if proof.format != PROOF_FORMAT {
        return Err(format!("unknown proof format `{}`", proof.format));
    }
    let checkpoint = verify_note(&proof.checkpoint, key).map_err(|e| e.to_string())?;
    if checkpoint.tree_size != proof.tree_size {
        return Err(format!(
            "tree size {} differs from the checkpoint's {}",
            proof.tree_size, checkpoint.tree_size
        ));
    }
    let record = parse_record(proof.line.as_bytes())?;
    if record.seq() != proof.seq || proof.leaf_index + 1 != proof.seq {
        return Err(format!(
            "line has seq {}, the proof claims seq {} at index {}",
            record.seq(),
            proof.seq,
            proof.leaf_index
        ));
    }
    let path = proof
        .audit_path
        .iter()
        .map(|p| {
            B64.decode(p)
                .ok()
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or_else(|| format!("audit path entry `{p}` is not a base64 sha-256 hash"))
        })
        .collect::<Result<Vec<Hash>, String>>()?;
    if !verify_inclusion(
        proof.leaf_index,
        proof.tree_size,
        &leaf_hash(proof.line.as_bytes()),
        &path,
        &checkpoint.root,
    ) {
        return Err(format!(
            "the record at seq {} is not included in the checkpoint of tree size {}",
            proof.seq, proof.tree_size
        ));
    }
    Ok(checkpoint)
}
