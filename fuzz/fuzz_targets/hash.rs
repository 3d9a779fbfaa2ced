//! The hashing API (`hopgate_core::hash`) against the `blake3` and `sha2` crates.
//!
//! The input chooses a batch of messages: how many, and each one's length from a
//! table of edges (0, block and chunk boundaries 63/64/65, 1023/1024/1025, the
//! 16 KiB hand-over to the `blake3` crate, multi-KiB trees) or from raw bytes. The
//! messages are windows into one buffer filled from the rest of the input, so their
//! contents vary with it while the input stays short. Every digest of
//! `blake3_many`, `mac_many` and `sha256_many`, and of `blake3_many_with` on every
//! lane engine this CPU runs (keyed or not, as the input says), must equal the
//! reference crates' digest of that message, and so must a prefix of the batch and
//! `hash::blake3(data, threads)` for 1, 2, 3 threads or the size's choice. Most batches
//! total at most 4 KiB (cheap executions); one in 8 may reach 48 KiB (the hand-over to
//! the `blake3` crate at 16 KiB) and one in 64 400 KiB (rayon's thresholds).
#![no_main]

use std::num::NonZeroUsize;
use std::sync::OnceLock;

use hopgate_core::hash;
use hopgate_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use sha2::Digest;

/// Lengths around every boundary the lane engine and its hand-over care about.
const EDGES: &[usize] = &[
    0, 1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, 191, 192, 255, 256, 511, 512, 960, 1023, 1024, 1025, 1087, 1088,
    2047, 2048, 2049, 3071, 3072, 3073, 4095, 4096, 4097, 7168, 8191, 8192, 8193, 15359, 15360, 15361, 16383, 16384,
    16385, 17408, 32768, 65537, 131072, 262144, 262145,
];

/// Most data in one batch, usually: a few chunks, so executions stay fast.
const USUAL: usize = 4 * 1024 + 64;
/// Most data in one batch for one input in 8: past `hash::CRATE_BYTES` (16 KiB, the
/// hand-over to the `blake3` crate) and `sha256_many`'s rayon threshold (16 KiB).
const MEDIUM: usize = 48 * 1024;
/// Most data in one batch for one input in 64: past the rayon thresholds of
/// `blake3_many` (128 KiB) and `blake3(data, None)` (256 KiB).
const BIG: usize = 400 * 1024;

fn backends() -> &'static [(&'static str, usize)] {
    static B: OnceLock<Vec<(&'static str, usize)>> = OnceLock::new();
    B.get_or_init(|| {
        let b = hash::available_backends();
        assert!(b.iter().any(|(n, _)| *n == "portable"), "portable engine missing: {b:?}");
        assert_eq!(b[0].0, hash::backend(), "the default backend is not the best available");
        assert_eq!(b[0].1, hash::lanes());
        b
    })
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let n = 1 + if inp.chance(32) { inp.below(64) } else { inp.below(20) };
    let size_class = inp.u8();
    let key: [u8; 32] = inp.array();
    let mut lens = Vec::with_capacity(n);
    let mut total = 0usize;
    for _ in 0..n {
        let len = match inp.below(8) {
            0..=2 => EDGES[inp.below(EDGES.len())],
            3 => EDGES[inp.below(EDGES.len())].saturating_add(inp.below(3)).saturating_sub(1),
            4 => inp.u16() as usize % 20_000,
            5 => 64 * inp.below(17),
            _ => inp.u8() as usize,
        };
        let cap = match size_class {
            0..=3 => BIG,
            4..=35 => MEDIUM,
            _ => USUAL,
        };
        let len = len.min(cap.saturating_sub(total));
        total += len;
        lens.push(len);
    }
    let shift = inp.below(64);
    let keyed_bits = inp.u8();
    // One buffer, the seed (at least 64 bytes: short ones are stretched) repeated with
    // one byte changed per copy; messages are windows starting at staggered offsets.
    let rest = inp.rest();
    let mut seed: Vec<u8> = rest.to_vec();
    while seed.len() < 64 {
        seed.push(seed.len() as u8 ^ rest.first().copied().unwrap_or(0x5a));
    }
    let buf_len = total + shift + 64;
    let mut buf = vec![0u8; buf_len];
    for (j, chunk) in buf.chunks_mut(seed.len()).enumerate() {
        chunk.copy_from_slice(&seed[..chunk.len()]);
        chunk[0] ^= j as u8;
    }
    let mut msgs: Vec<&[u8]> = Vec::with_capacity(n);
    let mut at = shift;
    for &len in &lens {
        msgs.push(&buf[at..at + len]);
        at += len;
        if len % 3 == 0 && at > 0 {
            at -= 1; // overlapping windows are fine: inputs are only read
        }
    }

    let want_b3: Vec<[u8; 32]> = msgs.iter().map(|m| *blake3::hash(m).as_bytes()).collect();
    let want_mac: Vec<[u8; 32]> = msgs.iter().map(|m| *blake3::keyed_hash(&key, m).as_bytes()).collect();
    let want_sha: Vec<[u8; 32]> = msgs.iter().map(|m| sha2::Sha256::digest(m).into()).collect();

    let mut out = vec![[0u8; 32]; n];
    hash::blake3_many(&msgs, &mut out);
    compare("blake3_many", &msgs, &out, &want_b3);
    out.fill([0; 32]);
    hash::mac_many(&key, &msgs, &mut out);
    compare("mac_many", &msgs, &out, &want_mac);
    out.fill([0; 32]);
    hash::sha256_many(&msgs, &mut out);
    compare("sha256_many", &msgs, &out, &want_sha);
    // Every engine, keyed or not as the input says (both would double the cost), on
    // small batches only: what larger ones add (trees of more chunks, the crate and
    // rayon hand-overs) does not depend on the engine, and the corpus keeps large
    // inputs, so running every engine on them would make most of the time theirs.
    let engines = if total <= USUAL { backends() } else { &[] };
    for (b, (name, _lanes)) in engines.iter().enumerate() {
        out.fill([0; 32]);
        if keyed_bits >> (b % 8) & 1 == 0 {
            hash::blake3_many_with(name, None, &msgs, &mut out);
            compare(name, &msgs, &out, &want_b3);
        } else {
            hash::blake3_many_with(name, Some(&key), &msgs, &mut out);
            compare(name, &msgs, &out, &want_mac);
        }
    }
    // A sub-batch (a prefix) gives the same digests as in the whole batch.
    let k = (shift % n) + 1;
    let mut part = vec![[0u8; 32]; k];
    hash::blake3_many(&msgs[..k], &mut part);
    compare("blake3_many prefix", &msgs[..k], &part, &want_b3[..k]);

    // One input on a few thread counts: the longest message.
    let (i, m) = msgs.iter().enumerate().max_by_key(|(_, m)| m.len()).expect("n >= 1");
    // None (the size decides) or 1 thread; 2 or 3 threads (a rayon pool each, whose
    // workers spin on wake-up: costly on 2 cores) for one input in 16.
    let threads = NonZeroUsize::new(if keyed_bits >= 0xf0 { 2 + shift % 2 } else { shift % 2 });
    assert_eq!(hash::blake3(m, threads), want_b3[i], "hash::blake3(len {}, {threads:?})", m.len());
});

fn compare(what: &str, msgs: &[&[u8]], got: &[[u8; 32]], want: &[[u8; 32]]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let lens: Vec<usize> = msgs.iter().map(|m| m.len()).collect();
            panic!("{what}: message {i} (len {}) of lengths {lens:?}: got {:02x?}, want {:02x?}", msgs[i].len(), g, w);
        }
    }
}
