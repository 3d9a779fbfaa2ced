//! BLAKE3 and SHA-256 over many messages: one digest per message, rayon across
//! messages above a threshold. (Skeleton: the multi-lane engine replaces the
//! per-message loop; the public signatures below are fixed.)

use std::num::NonZeroUsize;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Below this many input bytes in all, hashing stays on the calling thread.
pub const PARALLEL_BYTES: usize = 64 * 1024;

fn many(msgs: &[&[u8]], out: &mut [[u8; 32]], f: impl Fn(&[u8]) -> [u8; 32] + Sync) {
    assert_eq!(msgs.len(), out.len(), "one output row per message");
    let total: usize = msgs.iter().map(|m| m.len()).sum();
    if total >= PARALLEL_BYTES && msgs.len() > 1 {
        out.par_iter_mut().zip(msgs.par_iter()).with_min_len(64).for_each(|(o, m)| *o = f(m));
    } else {
        out.iter_mut().zip(msgs).for_each(|(o, m)| *o = f(m));
    }
}

/// `out[i] = BLAKE3(msgs[i])`.
pub fn blake3_many(msgs: &[&[u8]], out: &mut [[u8; 32]]) {
    many(msgs, out, |m| *blake3::hash(m).as_bytes());
}

/// `out[i] = BLAKE3-keyed(key, msgs[i])` (BLAKE3's keyed mode, a MAC).
pub fn mac_many(key: &[u8; 32], msgs: &[&[u8]], out: &mut [[u8; 32]]) {
    many(msgs, out, |m| *blake3::keyed_hash(key, m).as_bytes());
}

/// `out[i] = SHA-256(msgs[i])` (SHA extensions used where the CPU has them).
pub fn sha256_many(msgs: &[&[u8]], out: &mut [[u8; 32]]) {
    many(msgs, out, |m| Sha256::digest(m).into());
}

/// BLAKE3 of one (large) input. `threads`: `None` lets the size decide (one
/// thread below a measured size, all of rayon's threads above); `Some(n)` uses
/// exactly `n` threads.
pub fn blake3(data: &[u8], threads: Option<NonZeroUsize>) -> [u8; 32] {
    let _ = threads;
    *blake3::hash(data).as_bytes()
}

/// The lane engine this CPU runs, e.g. `"avx512"`, `"avx2"`, `"neon"`, `"portable"`.
pub fn backend() -> &'static str {
    "portable"
}
