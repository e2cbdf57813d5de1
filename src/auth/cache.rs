//! The verified-token cache: SHA-256 of the token → the employee and the token's `exp`.
//!
//! Guarantees: only tokens that passed every check are stored; an entry answers only while
//! `now < exp + leeway`, the same rule as the uncached path; at most `capacity` entries (entries
//! that are expired go first, then the one expiring soonest). Sharded mutexes keep the hot path
//! short and uncontended; the token itself is never stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use crate::model::Employee;

/// Number of independently locked shards.
const SHARDS: usize = 16;

/// The cache key: SHA-256 of the compact token.
pub(crate) type TokenHash = [u8; 32];

/// Hashes a token for the cache.
pub(crate) fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    employee: Employee,
    exp: i64,
}

/// What the cache knows about a token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Verified earlier and still valid.
    Valid(Employee),
    /// Verified earlier, now expired (the entry is removed).
    Expired,
    /// Not in the cache.
    Miss,
}

/// A bounded map of verified tokens.
pub(crate) struct TokenCache {
    shards: Vec<Mutex<HashMap<TokenHash, Entry>>>,
    per_shard: usize,
    /// Bumped by [`TokenCache::clear`]; an insert made for an older generation is dropped.
    generation: AtomicU64,
    /// Lookups answered `Valid`, `Expired` and `Miss` (for `/metrics`).
    counts: [AtomicU64; 3],
}

/// How many lookups the cache answered, by answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Valid tokens answered from the cache (no signature check).
    pub hit: u64,
    /// Cached tokens found expired (refused without a signature check).
    pub expired: u64,
    /// Tokens not in the cache (verified in full), also all lookups when the cache is off.
    pub miss: u64,
}

/// `true` while a token with this `exp` is acceptable at `now` (RFC 7519 §4.1.4 with leeway).
pub(crate) fn not_expired(exp: i64, now: i64, leeway: i64) -> bool {
    now < exp.saturating_add(leeway)
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables it.
    pub(crate) fn new(capacity: usize) -> TokenCache {
        // Fewer shards than SHARDS for tiny caches, so that shards × per_shard ≤ capacity.
        let n = capacity.clamp(1, SHARDS);
        let per_shard = capacity / n;
        let shards = (0..n).map(|_| Mutex::new(HashMap::new())).collect();
        TokenCache {
            shards,
            per_shard,
            generation: AtomicU64::new(0),
            counts: [const { AtomicU64::new(0) }; 3],
        }
    }

    fn shard(&self, key: &TokenHash) -> MutexGuard<'_, HashMap<TokenHash, Entry>> {
        let shard = &self.shards[usize::from(key[0]) % self.shards.len()];
        // A poisoned shard still holds whole entries (no code panics while holding it).
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks a token up at time `now`, counting the answer.
    pub(crate) fn get(&self, key: &TokenHash, now: i64, leeway: i64) -> Lookup {
        let found = self.find(key, now, leeway);
        let i = match found {
            Lookup::Valid(_) => 0,
            Lookup::Expired => 1,
            Lookup::Miss => 2,
        };
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// The lookups answered so far.
    pub(crate) fn counts(&self) -> CacheCounts {
        let [hit, expired, miss] = &self.counts;
        CacheCounts {
            hit: hit.load(Ordering::Relaxed),
            expired: expired.load(Ordering::Relaxed),
            miss: miss.load(Ordering::Relaxed),
        }
    }

    fn find(&self, key: &TokenHash, now: i64, leeway: i64) -> Lookup {
        if self.per_shard == 0 {
            return Lookup::Miss;
        }
        let mut map = self.shard(key);
        match map.get(key) {
            None => Lookup::Miss,
            Some(e) if not_expired(e.exp, now, leeway) => Lookup::Valid(e.employee.clone()),
            Some(_) => {
                map.remove(key);
                Lookup::Expired
            }
        }
    }

    /// The current generation; read it before choosing the verification key.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Stores a token verified while `generation` was current, evicting when the shard is full.
    pub(crate) fn insert(
        &self,
        key: TokenHash,
        entry: (Employee, i64),
        generation: u64,
        now: i64,
        leeway: i64,
    ) {
        if self.per_shard == 0 {
            return;
        }
        let (employee, exp) = entry;
        let mut map = self.shard(&key);
        // INVARIANT: checked under the shard lock, and `clear` bumps the generation before it
        // takes the locks, so a token verified with a key set that was replaced is either
        // refused here or removed by `clear`.
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, e| not_expired(e.exp, now, leeway));
            if map.len() >= self.per_shard {
                let soonest = map.iter().min_by_key(|(_, e)| e.exp).map(|(k, _)| *k);
                if let Some(k) = soonest {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, Entry { employee, exp });
    }

    /// Forgets every token (after the key set changed).
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for s in &self.shards {
            s.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Number of cached tokens.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn emp(id: &str) -> Employee {
        Employee {
            id: id.into(),
            org: "0363".into(),
            roles: vec!["burgerzaken".into()],
            department: None,
        }
    }

    /// A key that lands in shard 0.
    fn key(n: u8) -> TokenHash {
        let mut k = [0u8; 32];
        k[1] = n;
        k
    }

    #[test]
    fn hit_returns_the_stored_employee_until_exp_plus_leeway() {
        let c = TokenCache::new(100);
        c.insert(key(1), (emp("e1"), 1000), 0, 900, 30);
        assert_eq!(c.get(&key(1), 1029, 30), Lookup::Valid(emp("e1")));
        assert_eq!(c.get(&key(1), 1030, 30), Lookup::Expired);
        assert_eq!(
            c.get(&key(1), 1000, 30),
            Lookup::Miss,
            "expired entry removed"
        );
    }

    #[test]
    fn lookups_are_counted_by_answer() {
        let c = TokenCache::new(100);
        assert_eq!(c.get(&key(1), 900, 30), Lookup::Miss);
        c.insert(key(1), (emp("e1"), 1000), 0, 900, 30);
        assert!(matches!(c.get(&key(1), 900, 30), Lookup::Valid(_)));
        assert!(matches!(c.get(&key(1), 901, 30), Lookup::Valid(_)));
        assert_eq!(c.get(&key(1), 2000, 30), Lookup::Expired);
        assert_eq!(
            c.counts(),
            CacheCounts {
                hit: 2,
                expired: 1,
                miss: 1
            }
        );
        let off = TokenCache::new(0);
        off.get(&key(1), 0, 0);
        assert_eq!(
            off.counts().miss,
            1,
            "a disabled cache counts every lookup as a miss"
        );
    }

    #[test]
    fn full_shard_evicts_expired_then_soonest_expiring() {
        // 16 per shard; every key below lands in shard 0.
        let c = TokenCache::new(16 * SHARDS);
        for n in 0..16 {
            c.insert(key(n), (emp("e"), 2000 + i64::from(n)), 0, 0, 0);
        }
        c.insert(key(100), (emp("new"), 5000), 0, 0, 0);
        assert_eq!(c.len(), 16);
        assert_eq!(
            c.get(&key(0), 0, 0),
            Lookup::Miss,
            "soonest expiring evicted"
        );
        assert_eq!(c.get(&key(100), 0, 0), Lookup::Valid(emp("new")));
        assert!(matches!(c.get(&key(15), 0, 0), Lookup::Valid(_)));
    }

    #[test]
    fn never_holds_more_than_the_capacity() {
        for cap in [1usize, 10, 100] {
            let c = TokenCache::new(cap);
            for n in 0..=255u8 {
                let mut k = [n; 32];
                k[31] = 7;
                c.insert(k, (emp("e"), 1000), 0, 0, 0);
            }
            assert!(c.len() <= cap, "{} > {cap}", c.len());
            assert!(c.len() > 0);
        }
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let c = TokenCache::new(0);
        c.insert(key(1), (emp("e1"), 1000), 0, 0, 0);
        assert_eq!(c.get(&key(1), 0, 0), Lookup::Miss);
    }

    #[test]
    fn clear_forgets_everything_and_refuses_stale_inserts() {
        let c = TokenCache::new(10);
        let before = c.generation();
        c.insert(key(1), (emp("e1"), 1000), before, 0, 0);
        c.clear();
        assert_eq!(c.len(), 0);
        // Verified with the old key set, stored after the clear: dropped.
        c.insert(key(2), (emp("e2"), 1000), before, 0, 0);
        assert_eq!(c.get(&key(2), 0, 0), Lookup::Miss);
        c.insert(key(2), (emp("e2"), 1000), c.generation(), 0, 0);
        assert_eq!(c.get(&key(2), 0, 0), Lookup::Valid(emp("e2")));
    }
}
