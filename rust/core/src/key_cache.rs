//! The process's cache of decompressed public keys.
//!
//! Decompressing a key (a square root in the field) is about a fifth of an Ed25519
//! verification and half of a batched one, and at a gate the same keys come back call
//! after call: the issuers, and the agents of the chains in flight. Every verification in
//! the core (every rule, single and batched, chains and invocations) asks [`decompress`]
//! here, which answers exactly what `CompressedEdwardsY::decompress` answers for the same
//! 32 bytes (a pure function of them, so a cached answer is the answer), and remembers it.
//!
//! Bounded: at most [`capacity`] encodings (default [`DEFAULT_CAPACITY`]), in 16 shards,
//! each two generations deep: a shard's young map takes the new entries; when it holds
//! half the shard's share it becomes the old map and the former old one is dropped; a hit
//! in the old map is moved back to the young one. Refused encodings (not on the curve) are
//! remembered too, so a flood of them costs one decompression each, like any other key,
//! and can evict no more than the cache's size. Only public data is held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};

/// Encodings the cache holds at most, unless [`resize`]d: 65,536 (about 14 MB).
pub const DEFAULT_CAPACITY: usize = 1 << 16;
const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    young: HashMap<[u8; 32], Option<EdwardsPoint>>,
    old: HashMap<[u8; 32], Option<EdwardsPoint>>,
}

impl Shard {
    fn get(&mut self, key: &[u8; 32], share: usize) -> Option<Option<EdwardsPoint>> {
        if let Some(v) = self.young.get(key) {
            return Some(*v);
        }
        let v = self.old.remove(key)?;
        self.put(*key, v, share);
        Some(v)
    }

    fn put(&mut self, key: [u8; 32], value: Option<EdwardsPoint>, share: usize) {
        if share == 0 {
            return;
        }
        if self.young.len() >= share.div_ceil(2) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

struct Cache {
    shards: [Mutex<Shard>; SHARDS],
    capacity: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache {
        shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        capacity: AtomicUsize::new(DEFAULT_CAPACITY),
        hits: AtomicU64::new(0),
        misses: AtomicU64::new(0),
    })
}

/// A shard, whatever a thread that panicked while holding it left: a shard holds only
/// answers of a pure function, each inserted whole, so it is never half-written.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shard of an encoding. Its low byte is as good as any hash (keys are uniform, and
/// one who crafts keys to fill one shard evicts no more than that shard's share).
fn shard_of(bytes: &[u8; 32]) -> &'static Mutex<Shard> {
    &cache().shards[bytes[0] as usize % SHARDS]
}

/// Each shard's share of the capacity.
fn share() -> usize {
    cache().capacity.load(Ordering::Relaxed).div_ceil(SHARDS)
}

/// `CompressedEdwardsY(*bytes).decompress()`, from the cache when it holds the answer.
pub fn decompress(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let c = cache();
    let share = share();
    if share > 0 {
        if let Some(v) = lock(shard_of(bytes)).get(bytes, share) {
            c.hits.fetch_add(1, Ordering::Relaxed);
            return v;
        }
    }
    c.misses.fetch_add(1, Ordering::Relaxed);
    let v = CompressedEdwardsY(*bytes).decompress();
    if share > 0 {
        lock(shard_of(bytes)).put(*bytes, v, share);
    }
    v
}

/// What the cache did since the process started (or since [`clear`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that decompressed.
    pub misses: u64,
    /// Encodings held now.
    pub entries: usize,
    /// The most it holds.
    pub capacity: usize,
}

/// The counters and the size.
pub fn info() -> Info {
    let c = cache();
    Info {
        hits: c.hits.load(Ordering::Relaxed),
        misses: c.misses.load(Ordering::Relaxed),
        entries: c.shards.iter().map(|s| lock(s).len()).sum(),
        capacity: c.capacity.load(Ordering::Relaxed),
    }
}

/// Empties the cache and zeroes its counters.
pub fn clear() {
    let c = cache();
    for s in &c.shards {
        *lock(s) = Shard::default();
    }
    c.hits.store(0, Ordering::Relaxed);
    c.misses.store(0, Ordering::Relaxed);
}

/// Sets the capacity (0 turns the cache off) and empties the cache.
pub fn resize(capacity: usize) {
    cache().capacity.store(capacity, Ordering::Relaxed);
    clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_keeps_two_generations() {
        let mut s = Shard::default();
        let key = |i: u8| [i; 32];
        for i in 0..4 {
            s.put(key(i), None, 4);
        }
        // Young took 0, 1; then became old; young took 2, 3.
        assert_eq!((s.young.len(), s.old.len()), (2, 2));
        assert_eq!(s.get(&key(0), 4), Some(None)); // moved back to young: young 2, 3 -> old
        assert_eq!(s.get(&key(9), 4), None);
        assert!(s.len() <= 4);
        s.put(key(5), None, 0);
        assert!(!s.young.contains_key(&key(5)));
    }
}
