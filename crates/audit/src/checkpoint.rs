//! Signed checkpoints: the C2SP tlog-checkpoint format in a C2SP signed note with Ed25519.
//!
//! A checkpoint says "the first `tree_size` records of this log have RFC 6962 Merkle root
//! `root`" (see [`super::merkle`]). Its text is
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <base64 root hash>\n
//! \n
//! — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>\n
//! ```
//!
//! The signature is over the note body (the first three lines with their newlines); the key id
//! is the first 4 bytes of `SHA-256(name || 0x0A || 0x01 || public key)` (C2SP signed-note,
//! Ed25519 type 0x01). The key name is the origin.
//!
//! The writer stores each checkpoint as `checkpoints/<tree size, 12 digits>.ckpt` in the audit
//! directory (written to a temporary file, synced, renamed, directory synced) and then appends
//! a `checkpoint` record naming it. Tree size `N` covers the records with seq 1..=N; the
//! checkpoint record itself has a larger seq and is covered by the next checkpoint.
//!
//! Refuses: a note whose body is not a checkpoint, a signature line that is not well formed,
//! a note without a signature by the given key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::AuditError;
use super::format::list_segments;
use super::merkle::{Frontier, Hash, leaf_hash};
use super::reader::LineReader;

/// The directory of checkpoint files inside the audit directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// File name of the private key written by [`keygen`].
pub const PRIVATE_KEY_FILE: &str = "checkpoint-signing-key.pem";
/// File name of the public key written by [`keygen`].
pub const PUBLIC_KEY_FILE: &str = "checkpoint-signing-key.pub.pem";

/// A checkpoint key, note or file is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("key file `{path}`: {detail}")]
    Key { path: String, detail: String },
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint has no valid signature by key `{0}`")]
    BadSignature(String),
    #[error("cannot write `{path}`: {detail}")]
    Io { path: String, detail: String },
}

/// The content of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note body: origin, tree size and base64 root, each line ending in `\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            B64.encode(self.root)
        )
    }

    /// The root hash in standard base64 (as in the note and the checkpoint record).
    pub fn root_base64(&self) -> String {
        B64.encode(self.root)
    }

    /// The file of this checkpoint relative to the audit directory.
    pub fn relative_file(&self) -> String {
        checkpoint_file_name(self.tree_size)
    }
}

/// `checkpoints/000000001234.ckpt` for tree size 1234.
pub fn checkpoint_file_name(tree_size: u64) -> String {
    format!("{CHECKPOINT_DIR}/{tree_size:012}.ckpt")
}

/// C2SP signed-note key id: the first 4 bytes of `SHA-256(name || 0x0A || 0x01 || key)`.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, 0x01]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Signs checkpoints with an Ed25519 key under a key name (the origin).
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer with the key name `name` (must be non-empty without spaces, `+` or newlines).
    pub fn new(name: &str, key: SigningKey) -> Result<NoteSigner, CheckpointError> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(CheckpointError::Malformed(format!(
                "origin `{name}` must be non-empty without spaces or `+`"
            )));
        }
        Ok(NoteSigner {
            name: name.to_string(),
            key,
        })
    }

    /// Loads a PKCS#8 PEM private key (as written by [`keygen`]).
    pub fn load(path: &Path, name: &str) -> Result<NoteSigner, CheckpointError> {
        let key_err = |detail: String| CheckpointError::Key {
            path: path.display().to_string(),
            detail,
        };
        let pem =
            std::fs::read_to_string(path).map_err(|e| key_err(format!("cannot read: {e}")))?;
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| key_err("not an ed25519 pkcs#8 pem private key".into()))?;
        NoteSigner::new(name, key)
    }

    /// The key name (the origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The signed note text of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let sig = self.key.sign(body.as_bytes()).to_bytes();
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&key_id(&self.name, &self.key.verifying_key()));
        blob.extend_from_slice(&sig);
        format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(blob))
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignatureLine {
    name: String,
    key_id: [u8; 4],
    signature: Vec<u8>,
}

/// Parses a signed checkpoint note without checking signatures.
pub fn parse_note(text: &str) -> Result<Checkpoint, CheckpointError> {
    parse_parts(text).map(|(c, _, _)| c)
}

fn parse_parts(text: &str) -> Result<(Checkpoint, &str, Vec<SignatureLine>), CheckpointError> {
    let bad = |m: &str| CheckpointError::Malformed(m.to_string());
    let split = text
        .find("\n\n")
        .ok_or_else(|| bad("no blank line between body and signatures"))?;
    let (body, rest) = text.split_at(split + 1);
    let sigs_text = &rest[1..];
    let mut lines = body.lines();
    let origin = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("no origin line"))?;
    let tree_size: u64 = lines
        .next()
        .and_then(|l| {
            (!l.is_empty()
                && l.bytes().all(|b| b.is_ascii_digit())
                && (l == "0" || !l.starts_with('0')))
            .then(|| l.parse().ok())
            .flatten()
        })
        .ok_or_else(|| bad("tree size line is not a decimal number"))?;
    let root_bytes = lines
        .next()
        .and_then(|l| B64.decode(l).ok())
        .ok_or_else(|| bad("root hash line is not base64"))?;
    let root: Hash = root_bytes
        .try_into()
        .map_err(|_| bad("root hash is not 32 bytes"))?;
    if !sigs_text.ends_with('\n') {
        return Err(bad("signature block does not end with a newline"));
    }
    let mut sigs = Vec::new();
    for line in sigs_text.lines() {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or_else(|| bad("signature line does not start with an em dash"))?;
        let (name, blob) = rest
            .rsplit_once(' ')
            .ok_or_else(|| bad("signature line has no key name"))?;
        let blob = B64
            .decode(blob)
            .map_err(|_| bad("signature is not base64"))?;
        if blob.len() < 5 {
            return Err(bad("signature is too short"));
        }
        let (id, sig) = blob.split_at(4);
        sigs.push(SignatureLine {
            name: name.to_string(),
            key_id: [id[0], id[1], id[2], id[3]],
            signature: sig.to_vec(),
        });
    }
    if sigs.is_empty() {
        return Err(bad("no signature lines"));
    }
    Ok((
        Checkpoint {
            origin: origin.to_string(),
            tree_size,
            root,
        },
        body,
        sigs,
    ))
}

/// Parses a signed note and checks that `key` signed it (under any key name whose key id
/// matches); returns the checkpoint.
pub fn verify_note(text: &str, key: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
    let (checkpoint, body, sigs) = parse_parts(text)?;
    for sig in &sigs {
        if sig.key_id != key_id(&sig.name, key) {
            continue;
        }
        let Ok(bytes) = <[u8; 64]>::try_from(sig.signature.as_slice()) else {
            continue;
        };
        if key
            .verify_strict(body.as_bytes(), &Signature::from_bytes(&bytes))
            .is_ok()
        {
            return Ok(checkpoint);
        }
    }
    Err(CheckpointError::BadSignature(hex::encode(key.as_bytes())))
}

/// Loads a public key: SPKI PEM (as written by [`keygen`]).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, CheckpointError> {
    let key_err = |detail: String| CheckpointError::Key {
        path: path.display().to_string(),
        detail,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| key_err(format!("cannot read: {e}")))?;
    VerifyingKey::from_public_key_pem(&pem)
        .map_err(|_| key_err("not an ed25519 spki pem public key".into()))
}

/// Writes a new Ed25519 key pair into `out` (created when absent): the PKCS#8 PEM private key
/// with mode 0600 and the SPKI PEM public key. Refuses to overwrite existing key files.
pub fn keygen(out: &Path) -> Result<(PathBuf, PathBuf), CheckpointError> {
    let io = |path: &Path, e: std::io::Error| CheckpointError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let private_pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| CheckpointError::Malformed(format!("cannot encode the key: {e}")))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| CheckpointError::Malformed(format!("cannot encode the key: {e}")))?;
    let private = out.join(PRIVATE_KEY_FILE);
    let public = out.join(PUBLIC_KEY_FILE);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&private).map_err(|e| io(&private, e))?;
    file.write_all(private_pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&private, e))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&public)
        .map_err(|e| io(&public, e))?;
    file.write_all(public_pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&public, e))?;
    Ok((private, public))
}

/// Writes a checkpoint note to `dir/checkpoints/<size>.ckpt` durably (temp file, fsync,
/// rename, fsync of the directory). Returns the relative file name.
pub(crate) fn write_checkpoint_file(
    dir: &Path,
    checkpoint: &Checkpoint,
    note: &str,
) -> Result<String, CheckpointError> {
    let relative = checkpoint.relative_file();
    let ckpt_dir = dir.join(CHECKPOINT_DIR);
    let io = |path: &Path, e: std::io::Error| CheckpointError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    if !ckpt_dir.is_dir() {
        std::fs::create_dir_all(&ckpt_dir).map_err(|e| io(&ckpt_dir, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    let target = dir.join(&relative);
    let tmp = target.with_extension("ckpt.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(note.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &target).map_err(|e| io(&target, e))?;
    std::fs::File::open(&ckpt_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(&ckpt_dir, e))?;
    Ok(relative)
}

/// The checkpoint files in `dir/checkpoints`, ordered by tree size.
pub fn list_checkpoint_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let ckpt_dir = dir.join(CHECKPOINT_DIR);
    if !ckpt_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&ckpt_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_suffix(".ckpt") else {
            continue;
        };
        if digits.len() == 12
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = digits.parse::<u64>()
        {
            out.push((n, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(n, _)| *n);
    Ok(out)
}

/// What the writer needs to write checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub signer: NoteSigner,
    /// A checkpoint after this many records (not counting checkpoint records).
    pub every: u64,
    /// And at least this often while records arrive.
    pub interval: Duration,
}

/// Whether a line is a checkpoint record (the writer's framing puts `kind` right after `time`;
/// a user string cannot contain the unescaped quotes).
pub(crate) fn is_checkpoint_line(line: &[u8]) -> bool {
    const NEEDLE: &[u8] = b",\"kind\":\"checkpoint\",";
    line.windows(NEEDLE.len()).take(160).any(|w| w == NEEDLE)
}

/// Reads every line of the log to rebuild the Merkle frontier, and counts the records after
/// the last checkpoint record. The log must have been recovered (no torn tail).
pub(crate) fn rebuild_frontier(dir: &Path) -> Result<(Frontier, u64), AuditError> {
    let segments = list_segments(dir)
        .map_err(|e| AuditError::Unavailable(format!("cannot list `{}`: {e}", dir.display())))?;
    let mut frontier = Frontier::new();
    let mut since = 0u64;
    for (_, path) in segments {
        let mut reader = LineReader::open(&path).map_err(|e| {
            AuditError::Unavailable(format!("cannot open `{}`: {e}", path.display()))
        })?;
        while reader.read_next().map_err(|e| {
            AuditError::Unavailable(format!("cannot read `{}`: {e}", path.display()))
        })? {
            let line = reader.line();
            frontier.push(leaf_hash(line.bytes));
            if is_checkpoint_line(line.bytes) {
                since = 0;
            } else {
                since += 1;
            }
        }
    }
    Ok((frontier, since))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new("example.org/audit", SigningKey::from_bytes(&[7u8; 32])).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.org/audit".into(),
            tree_size: 1234,
            root: [9u8; 32],
        }
    }

    #[test]
    fn signed_note_has_the_c2sp_shape_and_verifies() {
        let s = signer();
        let note = s.sign(&checkpoint());
        let lines: Vec<&str> = note.split('\n').collect();
        assert_eq!(lines[0], "example.org/audit");
        assert_eq!(lines[1], "1234");
        assert_eq!(lines[2], B64.encode([9u8; 32]));
        assert_eq!(lines[3], "");
        assert!(
            lines[4].starts_with("\u{2014} example.org/audit "),
            "{note}"
        );
        assert_eq!(lines[5], "");
        let blob = B64.decode(lines[4].rsplit(' ').next().unwrap()).unwrap();
        assert_eq!(blob.len(), 68);
        assert_eq!(blob[..4], key_id("example.org/audit", &s.verifying_key()));
        assert_eq!(
            verify_note(&note, &s.verifying_key()).unwrap(),
            checkpoint()
        );
    }

    #[test]
    fn key_id_follows_the_signed_note_rule() {
        let key = signer().verifying_key();
        let mut input = b"example.org/audit\n\x01".to_vec();
        input.extend_from_slice(key.as_bytes());
        assert_eq!(
            key_id("example.org/audit", &key)[..],
            Sha256::digest(&input)[..4]
        );
    }

    #[test]
    fn altered_note_or_other_key_fails_verification() {
        let s = signer();
        let note = s.sign(&checkpoint());
        let altered = note.replacen("1234", "1235", 1);
        assert!(matches!(
            verify_note(&altered, &s.verifying_key()),
            Err(CheckpointError::BadSignature(_))
        ));
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert!(verify_note(&note, &other).is_err());
        assert!(matches!(
            verify_note("example.org/audit\n12\n", &s.verifying_key()),
            Err(CheckpointError::Malformed(_))
        ));
    }

    #[test]
    fn keygen_writes_a_private_key_only_the_owner_can_read_and_a_matching_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keygen(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let s = NoteSigner::load(&private, "o").unwrap();
        let public = load_verifying_key(&public).unwrap();
        assert_eq!(s.verifying_key(), public);
        // Never overwrites a key.
        assert!(keygen(dir.path()).is_err());
    }

    #[test]
    fn checkpoint_files_are_listed_by_tree_size() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer();
        for size in [20u64, 3, 100] {
            let c = Checkpoint {
                tree_size: size,
                ..checkpoint()
            };
            write_checkpoint_file(dir.path(), &c, &s.sign(&c)).unwrap();
        }
        std::fs::write(dir.path().join("checkpoints/notes.txt"), "x").unwrap();
        let sizes: Vec<u64> = list_checkpoint_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(sizes, vec![3, 20, 100]);
    }
}
