//! Where hashing time goes: the lane engine against the `blake3` crate per message.
//!
//! `cargo run --release -p hopgate-core --example profile_hash [thresholds | spin BACKEND SIZE]`
//! Prints, for 1M messages of 64 and 256 bytes (one buffer sliced into messages),
//! and of mixed lengths 0..=512,
//! and each lane engine this CPU has, ns per message and GB/s for the engine on
//! one thread and on all of rayon's, the `blake3` crate called per message, and
//! SHA-256 per message; then 256 MiB through `hash::blake3(data, None)` and
//! `blake3::hash`. With `thresholds`, also the measurements behind the constants
//! of `hopgate_core::hash`; with `spin avx512 64`, 5 s of one engine on one size
//! (for `perf`). Every timing is the best of several runs.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use hopgate_core::hash;
use sha2::{Digest, Sha256};

const RUNS: usize = 5;

/// Runs for the threshold measurements: two cores shared with other work make
/// single runs of a few microseconds noisy.
const THRESHOLD_RUNS: usize = 25;

/// Best wall time of `RUNS` calls of `f`.
fn best(f: impl FnMut()) -> Duration {
    best_of(RUNS, f)
}

/// Best wall time of `runs` calls of `f`.
fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("at least one run")
}

fn row(label: &str, n: usize, bytes: usize, t: Duration) {
    let ns = t.as_secs_f64() * 1e9 / n as f64;
    let gbs = bytes as f64 / t.as_secs_f64() / 1e9;
    println!("  {label:<40} {ns:>9.2} ns/msg {gbs:>7.2} GB/s");
}

fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a thread")
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// Lengths of `n` messages of `size` bytes; `size == 0` means lengths 0..=512
/// from a fixed pseudo-random sequence (the engine then orders them).
fn lengths(n: usize, size: usize) -> Vec<usize> {
    match size {
        0 => (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % 513).collect(),
        _ => vec![size; n],
    }
}

/// `buf` cut into consecutive messages of `lens` bytes.
fn slices<'a>(buf: &'a [u8], lens: &[usize]) -> Vec<&'a [u8]> {
    let mut at = 0;
    lens.iter()
        .map(|&len| {
            at += len;
            &buf[at - len..at]
        })
        .collect()
}

/// `n` messages of `size` bytes (0: mixed, see [`lengths`]) cut from one buffer.
fn batch(n: usize, size: usize) {
    let lens = lengths(n, size);
    let bytes: usize = lens.iter().sum();
    let buf = data(bytes);
    let msgs = slices(&buf, &lens);
    let what = if size == 0 { "0..=512".to_string() } else { size.to_string() };
    println!("{n} x {what} B messages ({} threads for rayon)", rayon::current_num_threads());
    let mut out = vec![[0u8; 32]; n];
    let single = one_thread();
    for (name, lanes) in hash::available_backends() {
        let t = best(|| single.install(|| hash::blake3_many_with(name, None, &msgs, &mut out)));
        row(&format!("lanes {name} ({lanes}), 1 thread"), n, bytes, t);
        let t = best(|| hash::blake3_many_with(name, None, &msgs, &mut out));
        row(&format!("lanes {name} ({lanes}), rayon"), n, bytes, t);
    }
    let mut check = vec![[0u8; 32]; n];
    let t = best(|| {
        for (o, m) in check.iter_mut().zip(&msgs) {
            *o = *blake3::hash(m).as_bytes();
        }
    });
    assert_eq!(out, check, "engine and crate disagree");
    row("blake3 crate per message, 1 thread", n, bytes, t);
    let t = best(|| {
        for (o, m) in out.iter_mut().zip(&msgs) {
            *o = Sha256::digest(m).into();
        }
    });
    row("sha256 per message, 1 thread", n, bytes, t);
    let t = best(|| hash::sha256_many(&msgs, &mut out));
    row("sha256_many, rayon", n, bytes, t);
}

fn one_input() {
    let buf = data(256 << 20);
    println!("one input of 256 MiB ({} threads for rayon)", rayon::current_num_threads());
    let show = |label: &str, t: Duration| {
        let gbs = buf.len() as f64 / t.as_secs_f64() / 1e9;
        println!("  {label:<40} {:>9.2} ms     {gbs:>7.2} GB/s", t.as_secs_f64() * 1e3);
    };
    show(
        "hash::blake3(data, None)",
        best(|| {
            black_box(hash::blake3(&buf, None));
        }),
    );
    show(
        "blake3::hash (one thread)",
        best(|| {
            black_box(blake3::hash(&buf));
        }),
    );
    assert_eq!(hash::blake3(&buf, None), *blake3::hash(&buf).as_bytes());
}

/// Batches of `size`-byte messages, 32 MiB in all, one thread: `blake3_many`
/// (the lane engine below `CRATE_BYTES`, the crate from there) against the crate
/// per message (behind `CRATE_BYTES`: the engine's rate per byte hardly depends
/// on the size, the crate's jumps when 16 chunks fill its widest SIMD).
fn crate_threshold() {
    let single = one_thread();
    let total = 32 << 20;
    let buf = data(total);
    println!(
        "blake3_many ({}, crate from {} B) vs blake3 crate per message, 1 thread, 32 MiB per batch",
        hash::backend(),
        hash::CRATE_BYTES
    );
    for size in [1024, 1025, 2048, 4096, 8192, 12 << 10, 16 << 10, 32 << 10, 64 << 10] {
        let msgs: Vec<&[u8]> = buf.chunks_exact(size).collect();
        let n = msgs.len();
        let mut out = vec![[0u8; 32]; n];
        let lanes = best(|| single.install(|| hash::blake3_many(&msgs, &mut out)));
        let krate = best(|| {
            for (o, m) in out.iter_mut().zip(&msgs) {
                *o = *blake3::hash(m).as_bytes();
            }
        });
        println!(
            "  {size:>7} B: blake3_many {:>6.2} GB/s, crate {:>6.2} GB/s",
            (n * size) as f64 / lanes.as_secs_f64() / 1e9,
            (n * size) as f64 / krate.as_secs_f64() / 1e9
        );
    }
}

/// Batches of 64-byte messages of growing total size, hashed by `hash_one` (which
/// must stay on its thread) on one thread and in two halves on two.
fn batch_threshold(label: &str, hash_one: fn(&[&[u8]], &mut [[u8; 32]])) {
    let buf = data(4 << 20);
    println!("64 B messages, batch total, {label}: 1 thread vs 2");
    for total in [8 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20] {
        let msgs: Vec<&[u8]> = buf[..total].chunks_exact(64).collect();
        let mut out = vec![[0u8; 32]; msgs.len()];
        let reps = (4 << 20) / total;
        let one = best_of(THRESHOLD_RUNS, || {
            for _ in 0..reps {
                hash_one(&msgs, &mut out);
            }
        });
        let (a, b) = msgs.split_at(msgs.len() / 2);
        let (oa, ob) = out.split_at_mut(msgs.len() / 2);
        let two = best_of(THRESHOLD_RUNS, || {
            for _ in 0..reps {
                rayon::join(|| hash_one(a, &mut oa[..]), || hash_one(b, &mut ob[..]));
            }
        });
        println!(
            "  {:>5} KiB: 1 thread {:>8.2} us, 2 threads {:>8.2} us",
            total >> 10,
            one.as_secs_f64() * 1e6 / reps as f64,
            two.as_secs_f64() * 1e6 / reps as f64
        );
    }
}

/// The measurements behind `PARALLEL_BYTES` (BLAKE3 and SHA-256 batches) and
/// `ONE_INPUT_PARALLEL_BYTES` (`update` vs `update_rayon`).
fn parallel_threshold() {
    batch_threshold(&format!("lanes {}", hash::backend()), |msgs, out| {
        // Calls below `PARALLEL_BYTES` stay on the calling thread.
        for (m, o) in msgs.chunks(512).zip(out.chunks_mut(512)) {
            hash::blake3_many(m, o);
        }
    });
    batch_threshold("sha256", |msgs, out| {
        for (o, m) in out.iter_mut().zip(msgs) {
            *o = Sha256::digest(m).into();
        }
    });
    println!("one input: update vs update_rayon");
    let big = data(2 << 20);
    for size in [64 << 10, 128 << 10, 192 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20] {
        let reps = (16 << 20) / size;
        let input = &big[..size];
        let one = best_of(THRESHOLD_RUNS, || {
            for _ in 0..reps {
                black_box(hash::blake3(input, NonZeroUsize::new(1)));
            }
        });
        let many = best_of(THRESHOLD_RUNS, || {
            for _ in 0..reps {
                let mut h = blake3::Hasher::new();
                h.update_rayon(input);
                black_box(h.finalize());
            }
        });
        println!(
            "  {:>5} KiB: update {:>8.2} us, update_rayon {:>8.2} us",
            size >> 10,
            one.as_secs_f64() * 1e6 / reps as f64,
            many.as_secs_f64() * 1e6 / reps as f64
        );
    }
}

/// One engine on one message size (0: mixed), 1M messages, on the calling thread only,
/// `seconds` long: something to point `perf` at.
fn spin(backend: &str, size: usize, seconds: f64) {
    let n = 1 << 20;
    let lens = lengths(n, size);
    let bytes: usize = lens.iter().sum();
    let buf = data(bytes);
    let msgs = slices(&buf, &lens);
    let mut out = vec![[0u8; 32]; n];
    let single = one_thread();
    let t = Instant::now();
    let mut calls = 0;
    while t.elapsed().as_secs_f64() < seconds {
        single.install(|| hash::blake3_many_with(backend, None, &msgs, &mut out));
        calls += 1;
    }
    row(&format!("lanes {backend}, {size} B, 1 thread"), n * calls, bytes * calls, t.elapsed());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [spin_arg, backend, size] = &args[..] {
        if spin_arg == "spin" {
            spin(backend, size.parse().expect("a size in bytes"), 5.0);
            return;
        }
    }
    println!("backend: {} ({} lanes)", hash::backend(), hash::lanes());
    batch(1 << 20, 64);
    batch(1 << 20, 256);
    batch(1 << 20, 0);
    one_input();
    if std::env::args().nth(1).as_deref() == Some("thresholds") {
        crate_threshold();
        parallel_threshold();
    }
}
