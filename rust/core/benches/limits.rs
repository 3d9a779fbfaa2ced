//! The limits of this machine next to hopgate-core's engines: what the underlying crates
//! do on the same inputs and the same cores, measured in one run.
//!
//!     cargo bench --locked -p hopgate-core --bench limits [-- --quick] [-- --json OUT.json]
//!
//! Each figure is the best of several repetitions (`Instant`), one warm-up first. Rows pair
//! a hopgate engine with its limit: BLAKE3 of many messages against the `blake3` crate on
//! the same bytes as one buffer on every core (`update_rayon`); SHA-256 of many messages
//! against `sha2` on one core times the cores; `verify_batch` against ed25519-dalek's
//! `verify_batch` split over the cores (keys read from bytes, and decoded beforehand);
//! single verification under the cofactorless rule against dalek's `verify`; and the parts
//! of a batch on their own (point decompression, the multiscalar multiplication). The JSON
//! (with the CPU features detected) is what `bench/peers.py` reads to print the Python
//! figures as fractions of these limits.

use std::hint::black_box;
use std::time::Instant;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hopgate_core::sig::{self, Message, Rule, SigItem};
use hopgate_core::{hash, key_cache};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use sha2::Digest;

/// Best seconds of `reps` calls of `f` after one warm-up call.
fn best<R>(reps: usize, mut f: impl FnMut() -> R) -> f64 {
    black_box(f());
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

struct Row {
    /// What `bench/peers.py` names this limit by.
    key: String,
    group: &'static str,
    case: String,
    unit: &'static str,
    hopgate: f64,
    limit: f64,
    limit_name: &'static str,
}

impl Row {
    /// hopgate's figure as a fraction of the limit (throughputs: hopgate / limit; times:
    /// limit / hopgate), so that 1.0 is "at the limit" and more is past it.
    fn fraction(&self) -> f64 {
        if self.unit == "GB/s" {
            self.hopgate / self.limit
        } else {
            self.limit / self.hopgate
        }
    }
}

fn cpu_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(if std::arch::is_x86_feature_detected!($f) { found.push($f); })*};
        }
        detect!("sse4.1", "avx2", "avx512f", "avx512vl", "avx512ifma", "sha", "bmi2", "adx");
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(if std::arch::is_aarch64_feature_detected!($f) { found.push($f); })*};
        }
        detect!("neon", "sha2", "sha3");
    }
    found
}

fn messages(rng: &mut ChaCha20Rng, n: usize, size: usize) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
    let mut buf = vec![0u8; n * size];
    rng.fill_bytes(&mut buf);
    (buf, (0..n).map(|i| i * size..(i + 1) * size).collect())
}

fn hashing(rows: &mut Vec<Row>, rng: &mut ChaCha20Rng, quick: bool) {
    let cores = rayon::current_num_threads();
    let total = if quick { 16 << 20 } else { 256 << 20 };
    for size in [64usize, 256] {
        let n = total / size;
        let (buf, ranges) = messages(rng, n, size);
        let slices: Vec<&[u8]> = ranges.iter().map(|r| &buf[r.clone()]).collect();
        let mut out = vec![[0u8; 32]; n];
        let reps = if quick { 3 } else { 5 };
        let gbs = |s: f64| (n * size) as f64 / s / 1e9;
        let theirs = best(reps, || blake3::Hasher::new().update_rayon(&buf).finalize());
        // The slices, then the same bytes as one buffer cut by offsets (what
        // `blake3_many(data, offsets)` hands the core from Python): no slice per message.
        let offsets: Vec<i64> = (0..=n).map(|i| (i * size) as i64).collect();
        let cut = hash::Cut::new(&buf, &offsets).expect("offsets of the buffer");
        let by_slices = best(reps, || hash::blake3_many(slices.as_slice(), &mut out));
        let by_cut = best(reps, || hash::blake3_many(&cut, &mut out));
        for (key, case, ours) in [("blake3", "", by_slices), ("blake3-cut", ", buffer+offsets", by_cut)] {
            rows.push(Row {
                key: format!("{key}/{size}"),
                group: "blake3",
                case: format!("{n} x {size} B{case}"),
                unit: "GB/s",
                hopgate: gbs(ours),
                limit: gbs(theirs),
                limit_name: "blake3 crate, one buffer, update_rayon",
            });
        }
        let ours = best(reps, || hash::sha256_many(slices.as_slice(), &mut out));
        let one_core = best(reps, || slices.iter().map(|m| sha2::Sha256::digest(m)[0]).fold(0u8, |a, b| a ^ b));
        rows.push(Row {
            key: format!("sha256/{size}"),
            group: "sha256",
            case: format!("{n} x {size} B"),
            unit: "GB/s",
            hopgate: gbs(ours),
            limit: gbs(one_core) * cores as f64,
            limit_name: "sha2 crate, one core x cores",
        });
    }
}

struct Signed {
    msgs: Vec<Vec<u8>>,
    sigs: Vec<[u8; 64]>,
    pks: Vec<[u8; 32]>,
}

fn signed(rng: &mut ChaCha20Rng, n: usize) -> Signed {
    let mut out = Signed { msgs: Vec::new(), sigs: Vec::new(), pks: Vec::new() };
    for i in 0..n {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let key = SigningKey::from_bytes(&seed);
        let msg = format!("message {i}: a link of a delegation chain, about this long").into_bytes();
        out.sigs.push(key.sign(&msg).to_bytes());
        out.pks.push(key.verifying_key().to_bytes());
        out.msgs.push(msg);
    }
    out
}

fn signatures(rows: &mut Vec<Row>, rng: &mut ChaCha20Rng, quick: bool) {
    let cores = rayon::current_num_threads();
    let sizes: &[usize] = if quick { &[64, 1024] } else { &[64, 256, 1024, 4096] };
    for &n in sizes {
        let s = signed(rng, n);
        let reps = if quick { 3 } else { 7 };
        let items: Vec<SigItem<'_>> =
            (0..n).map(|i| SigItem { msg: Message::plain(&s.msgs[i]), sig: &s.sigs[i], pk: &s.pks[i] }).collect();
        let us = |t: f64| t / n as f64 * 1e6;
        // Keys never seen: the decoded-key cache emptied before each call.
        let fresh = best(reps, || {
            key_cache::clear();
            assert!(sig::verify_batch(&items).iter().all(|&ok| ok));
        });
        let cached = best(reps, || sig::verify_batch(&items));
        let chunk = n.div_ceil(cores).max(1);
        let msgs: Vec<&[u8]> = s.msgs.iter().map(Vec::as_slice).collect();
        let sigs: Vec<Signature> = s.sigs.iter().map(Signature::from_bytes).collect();
        let dalek_from_bytes = best(reps, || {
            msgs.par_chunks(chunk).zip(sigs.par_chunks(chunk)).zip(s.pks.par_chunks(chunk)).all(|((m, g), k)| {
                let keys: Vec<VerifyingKey> = k.iter().map(|k| VerifyingKey::from_bytes(k).expect("a key")).collect();
                ed25519_dalek::verify_batch(m, g, &keys).is_ok()
            })
        });
        let keys: Vec<VerifyingKey> = s.pks.iter().map(|k| VerifyingKey::from_bytes(k).expect("a key")).collect();
        let dalek_predecoded = best(reps, || {
            msgs.par_chunks(chunk)
                .zip(sigs.par_chunks(chunk))
                .zip(keys.par_chunks(chunk))
                .all(|((m, g), k)| ed25519_dalek::verify_batch(m, g, k).is_ok())
        });
        let case = format!("{n} distinct keys");
        rows.push(Row {
            key: format!("verify_batch/{n}/new"),
            group: "verify_batch",
            case: format!("{case}, keys new"),
            unit: "us/sig",
            hopgate: us(fresh),
            limit: us(dalek_from_bytes),
            limit_name: "ed25519-dalek verify_batch, keys from bytes, on all cores",
        });
        rows.push(Row {
            key: format!("verify_batch/{n}/seen"),
            group: "verify_batch",
            case: format!("{case}, keys seen before"),
            unit: "us/sig",
            hopgate: us(cached),
            limit: us(dalek_predecoded),
            limit_name: "ed25519-dalek verify_batch, keys decoded beforehand, on all cores",
        });
    }
    // One signature under the cofactorless rule (what PyJWT, AIP and HDP use).
    let s = signed(rng, 64);
    let reps = if quick { 200 } else { 2000 };
    let key = VerifyingKey::from_bytes(&s.pks[0]).expect("a key");
    let sig0 = Signature::from_bytes(&s.sigs[0]);
    let ours = best(reps, || sig::verify_with(Rule::Openssl, Message::plain(&s.msgs[0]), &s.sigs[0], &s.pks[0]));
    let theirs = best(reps, || key.verify(&s.msgs[0], &sig0).is_ok());
    rows.push(Row {
        key: "verify/openssl".into(),
        group: "verify",
        case: "one signature, rule openssl, key seen before".into(),
        unit: "us/sig",
        hopgate: ours * 1e6,
        limit: theirs * 1e6,
        limit_name: "ed25519-dalek VerifyingKey::verify (cofactorless), key decoded",
    });
}

/// The parts of a batch on their own, on one core: no hopgate figure, the limit only.
fn parts(rng: &mut ChaCha20Rng, quick: bool) -> Vec<(String, f64)> {
    let n = if quick { 256 } else { 2048 };
    let reps = if quick { 3 } else { 7 };
    let points: Vec<EdwardsPoint> = (0..n)
        .map(|_| {
            let mut wide = [0u8; 64];
            rng.fill_bytes(&mut wide);
            EdwardsPoint::mul_base(&Scalar::from_bytes_mod_order_wide(&wide))
        })
        .collect();
    let compressed: Vec<CompressedEdwardsY> = points.iter().map(EdwardsPoint::compress).collect();
    let scalars: Vec<Scalar> = (0..n)
        .map(|_| {
            let mut wide = [0u8; 64];
            rng.fill_bytes(&mut wide);
            Scalar::from_bytes_mod_order_wide(&wide)
        })
        .collect();
    let decompress = best(reps, || compressed.iter().filter_map(|c| c.decompress()).count()) / n as f64;
    let compress = best(reps, || points.iter().map(|p| p.compress().0[0]).fold(0u8, |a, b| a ^ b)) / n as f64;
    let msm = best(reps, || EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)) / n as f64;
    let a = points[0];
    let double = best(reps, || {
        scalars
            .iter()
            .map(|k| EdwardsPoint::vartime_double_scalar_mul_basepoint(k, &a, k).compress().0[0])
            .fold(0u8, |x, y| x ^ y)
    }) / n as f64;
    vec![
        ("point decompression, one point".into(), decompress * 1e6),
        ("point compression (one inversion)".into(), compress * 1e6),
        (format!("multiscalar multiplication of {n} points, a point"), msm * 1e6),
        ("[a]A + [b]B, variable time, then compressed".into(), double * 1e6),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut rows = Vec::new();
    hashing(&mut rows, &mut rng, quick);
    signatures(&mut rows, &mut rng, quick);
    let parts = parts(&mut rng, quick);

    let features = cpu_features();
    let cores = rayon::current_num_threads();
    println!("# {} cores, CPU features: {}; hash engine {}", cores, features.join(" "), hash::backend());
    println!("{:<13} {:<34} {:>10} {:>10} {:>7}  limit", "group", "case", "hopgate", "limit", "of it");
    for r in &rows {
        println!(
            "{:<13} {:<34} {:>10.3} {:>10.3} {:>6.0}%  {} ({})",
            r.group,
            r.case,
            r.hopgate,
            r.limit,
            r.fraction() * 100.0,
            r.limit_name,
            r.unit
        );
    }
    for (what, us) in &parts {
        println!("{:<13} {:<34} {:>21.3} us (one core)", "part", what, us);
    }
    if let Some(path) = json {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = format!(
            "{{\"cores\": {cores}, \"features\": [{}], \"hash_engine\": {}, \"rows\": [\n",
            features.iter().map(|f| quote(f)).collect::<Vec<_>>().join(", "),
            quote(hash::backend())
        );
        let lines: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "  {{\"key\": {}, \"group\": {}, \"case\": {}, \"unit\": {}, \"hopgate\": {}, \"limit\": {}, \"limit_name\": {}}}",
                    quote(&r.key),
                    quote(r.group),
                    quote(&r.case),
                    quote(r.unit),
                    r.hopgate,
                    r.limit,
                    quote(r.limit_name)
                )
            })
            .chain(parts.iter().map(|(what, us)| format!("  {{\"group\": \"part\", \"case\": {}, \"unit\": \"us\", \"limit\": {us}}}", quote(what))))
            .collect();
        out.push_str(&lines.join(",\n"));
        out.push_str("\n]}\n");
        std::fs::write(&path, out).expect("write the JSON report");
        println!("# written to {path}");
    }
}
