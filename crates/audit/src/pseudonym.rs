//! Pseudonymised subjects: with `[audit] subject_key`, records carry
//! `hmac-sha256:<hex of HMAC-SHA256(key, BSN)>` instead of a BSN.
//!
//! Guarantees: the same key and BSN always give the same pseudonym, so auditors who hold the
//! key find every record of a person by deriving it from the clear BSN; `verify` needs no key
//! (it hashes lines, whatever they contain). Refuses: a key file shorter than 32 bytes.
//! Only `Person` ids are pseudonymised (in decision, outcome and the console's `access`
//! records); kentekens and search descriptions are not.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of a pseudonymised BSN.
pub const PSEUDONYM_PREFIX: &str = "hmac-sha256:";

/// The key for pseudonymising BSNs.
#[derive(Clone)]
pub struct SubjectKey(Vec<u8>);

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl SubjectKey {
    /// A key from raw bytes (at least 32).
    pub fn new(bytes: Vec<u8>) -> Result<SubjectKey, String> {
        if bytes.len() < 32 {
            return Err(format!(
                "subject key has {} bytes, expected at least 32",
                bytes.len()
            ));
        }
        Ok(SubjectKey(bytes))
    }

    /// Reads a key file: its bytes with surrounding whitespace removed (e.g. the output of
    /// `openssl rand -hex 32`).
    pub fn load(path: &Path) -> Result<SubjectKey, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("subject key file `{}`: cannot read: {e}", path.display()))?;
        let trimmed = bytes.trim_ascii().to_vec();
        SubjectKey::new(trimmed).map_err(|e| format!("subject key file `{}`: {e}", path.display()))
    }

    /// Whether `other` is the same key (the case snapshot cache keys on it).
    pub(crate) fn same_as(&self, other: &SubjectKey) -> bool {
        self.0 == other.0
    }

    /// `hmac-sha256:<hex>` of the BSN.
    pub fn pseudonymise(&self, bsn: &str) -> String {
        // INVARIANT: HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return format!("{PSEUDONYM_PREFIX}invalid-key");
        };
        mac.update(bsn.as_bytes());
        format!(
            "{PSEUDONYM_PREFIX}{}",
            hex::encode(mac.finalize().into_bytes())
        )
    }
}

/// The id to store for a subject of type `kind`: the pseudonym for a `Person` whose id is a
/// BSN (9 digits) when a key is configured, else the id unchanged (markers such as
/// `unidentified` stay readable). Called by the gate where records are built.
pub fn subject_id(key: Option<&SubjectKey>, kind: &str, id: &str) -> String {
    let is_bsn = id.len() == 9 && id.bytes().all(|b| b.is_ascii_digit());
    match key {
        Some(k) if kind == "Person" && is_bsn => k.pseudonymise(id),
        _ => id.to_string(),
    }
}

/// [`subject_id`] applied to every reference (the `disclosed` list of an outcome).
pub fn pseudonymise_refs(
    key: Option<&SubjectKey>,
    refs: Vec<super::record::ResourceRef>,
) -> Vec<super::record::ResourceRef> {
    match key {
        None => refs,
        Some(_) => refs
            .into_iter()
            .map(|r| super::record::ResourceRef {
                id: subject_id(key, &r.kind, &r.id),
                kind: r.kind,
            })
            .collect(),
    }
}

/// The keys of an `access` record's `query` whose values may be a BSN: `bsn` (a search or
/// report by citizen) and `address` (free text, where a BSN may be typed).
pub const ACCESS_PERSON_KEYS: [&str; 2] = ["bsn", "address"];

/// An `access` record's `query` as stored: a BSN under [`ACCESS_PERSON_KEYS`] becomes its
/// pseudonym when a key is configured ([`subject_id`]), so a pseudonymised log holds no BSN
/// in clear through the console's records either, and a search by the pseudonym finds them.
pub fn pseudonymise_query(
    key: Option<&SubjectKey>,
    query: std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    match key {
        None => query,
        Some(_) => query
            .into_iter()
            .map(|(k, v)| {
                let v = if ACCESS_PERSON_KEYS.contains(&k.as_str()) {
                    subject_id(key, "Person", &v)
                } else {
                    v
                };
                (k, v)
            })
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_is_rfc4231_style_hmac_sha256() {
        // RFC 4231 test case 2 uses a short key; check against a direct HMAC computation.
        let key = SubjectKey::new(vec![0x0b; 32]).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&[0x0b; 32]).unwrap();
        mac.update(b"999993653");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            key.pseudonymise("999993653"),
            format!("hmac-sha256:{expected}")
        );
        assert_ne!(key.pseudonymise("999993653"), key.pseudonymise("999990639"));
    }

    #[test]
    fn only_persons_are_pseudonymised() {
        let key = SubjectKey::new(vec![1; 32]).unwrap();
        assert!(subject_id(Some(&key), "Person", "999993653").starts_with("hmac-sha256:"));
        assert_eq!(subject_id(Some(&key), "Vehicle", "AB123C"), "AB123C");
        assert_eq!(subject_id(None, "Person", "999993653"), "999993653");
        assert_eq!(
            subject_id(Some(&key), "Person", "unidentified"),
            "unidentified"
        );
    }

    #[test]
    fn access_queries_carry_the_pseudonym_of_a_bsn_only() {
        let key = SubjectKey::new(vec![2; 32]).unwrap();
        let q = std::collections::BTreeMap::from([
            ("bsn".to_string(), "999993653".to_string()),
            ("seq".to_string(), "123456789".to_string()),
            ("employee".to_string(), "emp-042".to_string()),
        ]);
        let stored = pseudonymise_query(Some(&key), q.clone());
        assert_eq!(stored["bsn"], key.pseudonymise("999993653"));
        assert_eq!(stored["seq"], "123456789", "a seq is no BSN");
        assert_eq!(stored["employee"], "emp-042");
        assert_eq!(pseudonymise_query(None, q.clone()), q);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(SubjectKey::new(vec![1; 31]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{}\n", "ab".repeat(16))).unwrap();
        assert!(SubjectKey::load(&path).is_ok());
    }
}
