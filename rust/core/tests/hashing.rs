//! Hashing over many messages: every lane engine this CPU has, against the
//! `blake3` crate (and BLAKE3's official vectors), for every length up to four
//! chunks, random batches, every batch size around each lane width, keyed mode,
//! unaligned messages, batches big enough for rayon; the one-input `blake3` on
//! every thread count; `sha256_many` against `sha2`.

use std::num::NonZeroUsize;

use hopgate_core::hash::{self, available_backends, blake3_many_with, PARALLEL_BYTES};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// BLAKE3's official test vectors (`tests/vectors/blake3.json`, shared with the
/// Python tests): the key, and per case the input length and the first 32 bytes
/// of `hash` and `keyed_hash`. Input byte `i` is `i % 251`.
fn official_vectors() -> ([u8; 32], Vec<(usize, String, String)>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/blake3.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let key: [u8; 32] = json["key"].as_str().unwrap().as_bytes().try_into().unwrap();
    let cases = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let first32 = |k: &str| c[k].as_str().unwrap()[..64].to_owned();
            (c["input_len"].as_u64().unwrap() as usize, first32("hash"), first32("keyed_hash"))
        })
        .collect::<Vec<_>>();
    assert_eq!(cases.len(), 22);
    (key, cases)
}

/// Every lane width an engine may have (portable 8, NEON 4, AVX2 8, AVX-512 16).
const WIDTHS: [usize; 3] = [4, 8, 16];

/// Bytes `i % 251`, as in the official vectors.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn random(rng: &mut ChaCha20Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

fn reference(key: Option<&[u8; 32]>, msg: &[u8]) -> [u8; 32] {
    match key {
        Some(key) => *blake3::keyed_hash(key, msg).as_bytes(),
        None => *blake3::hash(msg).as_bytes(),
    }
}

/// Hashes `msgs` as one batch on `backend` and compares every digest with the
/// `blake3` crate's; `what` names the batch in a failure.
fn check(backend: &str, key: Option<&[u8; 32]>, msgs: &[&[u8]], what: &str) {
    let mut out = vec![[0xA5u8; 32]; msgs.len()];
    blake3_many_with(backend, key, msgs, &mut out);
    for (i, (m, d)) in msgs.iter().zip(&out).enumerate() {
        assert!(
            *d == reference(key, m),
            "{backend}, keyed: {}, {what}: message {i} of {} ({} bytes) differs",
            key.is_some(),
            msgs.len(),
            m.len()
        );
    }
}

fn backends() -> Vec<(&'static str, usize)> {
    let all = available_backends();
    assert_eq!(all.last().map(|b| b.0), Some("portable"), "portable is always there, last");
    all
}

/// A key for the keyed runs of the differential tests.
const KEY: &[u8; 32] = &[0x5a; 32];
const KEYS: [Option<&[u8; 32]>; 2] = [None, Some(KEY)];

#[test]
fn backend_is_one_this_cpu_has_and_lanes_match() {
    let all = backends();
    let name = hash::backend();
    let lanes = all.iter().find(|b| b.0 == name).map(|b| b.1);
    assert_eq!(lanes, Some(hash::lanes()), "backend {name:?} among {all:?}");
    // Unless the environment asks for another, it is the best one.
    if std::env::var_os("HOPGATE_HASH_BACKEND").is_none() {
        assert_eq!(name, all[0].0);
    }
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(all.iter().any(|b| b.0 == "avx512"), std::arch::is_x86_feature_detected!("avx512f"));
        assert_eq!(all.iter().any(|b| b.0 == "avx2"), std::arch::is_x86_feature_detected!("avx2"));
    }
}

/// The child side of `environment_picks_the_backend`: set, this names the backend
/// that `HOPGATE_HASH_BACKEND` must have given this process.
const EXPECT_VAR: &str = "HOPGATE_TEST_EXPECT_BACKEND";

#[test]
fn environment_picks_the_backend() {
    if let Ok(want) = std::env::var(EXPECT_VAR) {
        assert_eq!(hash::backend(), want);
        let msgs: [&[u8]; 3] = [b"", b"abc", &[7; 3000]];
        let mut out = [[0u8; 32]; 3];
        hash::blake3_many(&msgs[..], &mut out);
        assert!(msgs.iter().zip(&out).all(|(m, d)| *d == reference(None, m)));
        return;
    }
    // Each case in a fresh process (the choice is made once per process): every
    // backend this CPU has by name, one it may lack, and nonsense (the best).
    let all = backends();
    let best = all[0].0;
    let mut cases: Vec<(String, &str)> = all.iter().map(|b| (b.0.to_uppercase(), b.0)).collect();
    let neon = if all.iter().any(|b| b.0 == "neon") { "neon" } else { best };
    cases.extend([("neon".to_string(), neon), ("sse9".to_string(), best), (String::new(), best)]);
    let exe = std::env::current_exe().expect("the test binary");
    let listed = std::process::Command::new(&exe).args(["--list", "--exact", "environment_picks_the_backend"]).output();
    if !listed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("environment_picks_the_backend")) {
        // Under qemu-user (the aarch64 run on an x86_64 host) the binary cannot
        // start itself again; the in-process tests still cover every engine.
        eprintln!("skipped: {} cannot re-run itself here", exe.display());
        return;
    }
    for (value, want) in cases {
        let child = std::process::Command::new(&exe)
            .args(["--exact", "environment_picks_the_backend", "--test-threads=1"])
            .env("HOPGATE_HASH_BACKEND", &value)
            .env(EXPECT_VAR, want)
            .output()
            .expect("the test binary runs");
        let said = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && said.contains("1 passed"),
            "HOPGATE_HASH_BACKEND={value:?} should give {want}:\n{said}{}",
            String::from_utf8_lossy(&child.stderr)
        );
    }
}

#[test]
#[should_panic(expected = "not on this CPU")]
fn unknown_backend_is_refused() {
    let none: [&[u8]; 0] = [];
    blake3_many_with("sse9", None, &none[..], &mut []);
}

#[test]
#[should_panic(expected = "one output row per message")]
fn output_length_must_match() {
    let msgs: [&[u8]; 2] = [b"a", b"b"];
    hash::blake3_many(&msgs[..], &mut [[0; 32]]);
}

#[test]
#[should_panic(expected = "one output row per message")]
fn mac_output_length_must_match() {
    let msgs: [&[u8]; 1] = [b"a"];
    hash::mac_many(&[0; 32], &msgs[..], &mut []);
}

#[test]
#[should_panic(expected = "one output row per message")]
fn sha256_output_length_must_match() {
    let none: [&[u8]; 0] = [];
    hash::sha256_many(&none[..], &mut [[0; 32]]);
}

#[test]
fn official_vectors_on_every_backend_in_one_batch() {
    let (vector_key, vectors) = official_vectors();
    let data = pattern(102_400);
    let msgs: Vec<&[u8]> = vectors.iter().map(|v| &data[..v.0]).collect();
    for (backend, _) in backends() {
        for (key, column) in [(None, 1), (Some(&vector_key), 2)] {
            let mut out = vec![[0u8; 32]; msgs.len()];
            blake3_many_with(backend, key, msgs.as_slice(), &mut out);
            for (v, d) in vectors.iter().zip(&out) {
                let want = if column == 1 { &v.1 } else { &v.2 };
                assert_eq!(&hex::encode(d), want, "{backend}, keyed: {}, length {}", key.is_some(), v.0);
            }
        }
    }
    // And through the public functions.
    let mut out = vec![[0u8; 32]; msgs.len()];
    hash::blake3_many(msgs.as_slice(), &mut out);
    assert!(vectors.iter().zip(&out).all(|(v, d)| hex::encode(d) == v.1));
    hash::mac_many(&vector_key, msgs.as_slice(), &mut out);
    assert!(vectors.iter().zip(&out).all(|(v, d)| hex::encode(d) == v.2));
}

#[test]
fn every_length_to_4096_in_one_mixed_batch() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let patterned = pattern(4096);
    let random_bytes = random(&mut rng, 4096);
    for (backend, _) in backends() {
        for key in KEYS {
            for (name, data) in [("pattern", &patterned), ("random", &random_bytes)] {
                let msgs: Vec<&[u8]> = (0..=4096).map(|len| &data[..len]).collect();
                check(backend, key, &msgs, &format!("lengths 0..=4096, {name}"));
                // Reversed: the engine's ordering by block count must put digests back.
                let rev: Vec<&[u8]> = msgs.iter().rev().copied().collect();
                check(backend, key, &rev, &format!("lengths 4096..=0, {name}"));
            }
        }
    }
}

#[test]
fn every_length_to_4096_in_batches_of_one_length() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    // A batch of `lanes + 1` distinct messages of each length: windows of one buffer.
    let data = random(&mut rng, 4096 + 17);
    for (backend, lanes) in backends() {
        for len in 0..=4096 {
            // Keyed for odd lengths only: both modes see every block count.
            let key = if len % 2 == 1 { Some(KEY) } else { None };
            let msgs: Vec<&[u8]> = (0..=lanes).map(|s| &data[s..s + len]).collect();
            check(backend, key, &msgs, &format!("{} messages of {len} bytes", lanes + 1));
        }
    }
}

#[test]
fn random_batches() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let data = random(&mut rng, 8192 + 4096);
    for round in 0..24 {
        let count = (rng.next_u32() % 301) as usize;
        // Half the batches short messages only, half up to 8 KiB.
        let max = if round % 2 == 0 { 1024 } else { 8192 };
        let msgs: Vec<&[u8]> = (0..count)
            .map(|_| {
                let len = rng.next_u32() as usize % (max + 1);
                let start = rng.next_u32() as usize % 4096;
                &data[start..start + len]
            })
            .collect();
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        for (backend, _) in backends() {
            for k in [None, Some(&key)] {
                check(backend, k, &msgs, &format!("random batch {round}"));
            }
        }
    }
}

#[test]
fn batch_sizes_around_every_lane_width() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let data = random(&mut rng, 3000 + 64);
    let mut sizes = vec![0, 1];
    for n in WIDTHS {
        sizes.extend([n - 1, n, n + 1, 2 * n + 3]);
    }
    for (backend, _) in backends() {
        for &count in &sizes {
            for key in KEYS {
                // One length for the whole batch, and lengths that differ.
                for len in [0, 1, 64, 65, 1024, 1025, 3000] {
                    let msgs: Vec<&[u8]> = (0..count).map(|i| &data[i..i + len]).collect();
                    check(backend, key, &msgs, &format!("{count} messages of {len} bytes"));
                }
                let msgs: Vec<&[u8]> = (0..count).map(|i| &data[i..i + (i * 97) % 3000]).collect();
                check(backend, key, &msgs, &format!("{count} messages of mixed lengths"));
            }
        }
    }
}

#[test]
fn unaligned_messages() {
    let data = pattern(4096 + 64);
    for (backend, _) in backends() {
        for key in KEYS {
            for offset in [1, 3, 7, 31, 33, 63] {
                let msgs: Vec<&[u8]> = [0, 1, 63, 64, 65, 200, 1024, 1025, 2500, 4096]
                    .iter()
                    .map(|&len| &data[offset..offset + len])
                    .collect();
                check(backend, key, &msgs, &format!("offset {offset}"));
                // Back to back at odd offsets: message i starts where i - 1 ended.
                let mut at = offset;
                let chained: Vec<&[u8]> = (0..40)
                    .map(|i| {
                        let m = &data[at..at + 13 * i % 101];
                        at += m.len();
                        m
                    })
                    .collect();
                check(backend, key, &chained, &format!("chained from offset {offset}"));
            }
        }
    }
}

#[test]
fn batches_above_the_parallel_threshold() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let data = random(&mut rng, 2 * PARALLEL_BYTES + 70_000);
    // Uniform 64-byte messages (no ordering), mixed short ones (ordered), and
    // multi-chunk ones, each batch at least twice the threshold.
    let uniform: Vec<&[u8]> = data.chunks_exact(64).collect();
    let mixed: Vec<&[u8]> = (0..3 * PARALLEL_BYTES / 500).map(|i| &data[i * 7..i * 7 + (i * 31) % 1000]).collect();
    let long: Vec<&[u8]> = (0..60).map(|i| &data[i * 1000..i * 1000 + 1025 + i * 97]).collect();
    let huge: Vec<&[u8]> = (0..3).map(|i| &data[i..i + PARALLEL_BYTES + 70_000 - i * 1000]).collect();
    for (backend, _) in backends() {
        for key in KEYS {
            check(backend, key, &uniform, "uniform 64-byte messages");
            check(backend, key, &mixed, "mixed short messages");
            check(backend, key, &long, "multi-chunk messages");
            check(backend, key, &huge, "messages above the crate threshold");
        }
    }
    let mut out = vec![[0u8; 32]; mixed.len()];
    hash::blake3_many(mixed.as_slice(), &mut out);
    assert!(mixed.iter().zip(&out).all(|(m, d)| *d == reference(None, m)));
}

#[test]
fn one_input_on_every_thread_count() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let data = random(&mut rng, 3 << 20);
    let t = hash::ONE_INPUT_PARALLEL_BYTES;
    for len in [0, 1, 1024, 1025, t - 1, t, t + 1, 2 * t + 7, 1 << 20, 3 << 20] {
        let input = &data[..len];
        let want = reference(None, input);
        for threads in [None, NonZeroUsize::new(1), NonZeroUsize::new(2), NonZeroUsize::new(3)] {
            assert_eq!(hash::blake3(input, threads), want, "{len} bytes on {threads:?} threads");
        }
    }
    // Far more threads than the cap: capped, same digest.
    assert_eq!(hash::blake3(&data[..t], NonZeroUsize::new(100_000)), reference(None, &data[..t]));
}

#[test]
fn sha256_many_matches_sha2() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let data = random(&mut rng, 4096 + 1000);
    let lens = [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 4096];
    let small: Vec<&[u8]> = lens.iter().map(|&l| &data[1..1 + l]).collect();
    let big: Vec<&[u8]> = (0..2 * PARALLEL_BYTES / 1000).map(|i| &data[i % 999..i % 999 + 1000 + i % 3]).collect();
    for msgs in [&small, &big] {
        let mut out = vec![[0u8; 32]; msgs.len()];
        hash::sha256_many(msgs.as_slice(), &mut out);
        for (m, d) in msgs.iter().zip(&out) {
            assert_eq!(d[..], Sha256::digest(m)[..], "{} bytes", m.len());
        }
    }
    // A known answer: SHA-256("abc").
    let mut out = [[0u8; 32]];
    let msgs: [&[u8]; 1] = [b"abc"];
    hash::sha256_many(&msgs[..], &mut out);
    assert_eq!(hex::encode(out[0]), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn one_buffer_cut_by_offsets_hashes_as_its_slices() {
    let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    // Lengths around every boundary: empty, one block, one chunk, several, the crate's.
    let mut offsets = vec![3i64];
    for len in [0usize, 1, 63, 64, 65, 1023, 1024, 1025, 4096, 0, 17, 16_384, 2048] {
        offsets.push(offsets.last().copied().unwrap_or(0) + len as i64);
    }
    let slices: Vec<&[u8]> = offsets.windows(2).map(|w| &data[w[0] as usize..w[1] as usize]).collect();
    let cut = hash::Cut::new(&data, &offsets).expect("good offsets");
    let n = slices.len();
    assert_eq!(cut.bytes(), slices.iter().map(|s| s.len()).sum::<usize>());
    type Run<M> = fn(&M, &mut [[u8; 32]]);
    type Pair<'a> = (Run<hash::Cut<'a>>, Run<[&'a [u8]]>);
    let pairs: [Pair<'_>; 2] = [(hash::blake3_many, hash::blake3_many), (hash::sha256_many, hash::sha256_many)];
    for (by_cut, by_slices) in pairs {
        let (mut a, mut b) = (vec![[0u8; 32]; n], vec![[0u8; 32]; n]);
        by_cut(&cut, &mut a);
        by_slices(&slices, &mut b);
        assert_eq!(a, b);
    }
    let mut tags = vec![[0u8; 32]; n];
    hash::mac_many(&[9; 32], &cut, &mut tags);
    assert!(slices.iter().zip(&tags).all(|(m, t)| *t == reference(Some(&[9; 32]), m)));
}

#[test]
fn offsets_that_do_not_cut_the_buffer_are_refused() {
    use hash::OffsetError::*;
    let data = [0u8; 10];
    let cases: [(&[i64], hash::OffsetError); 5] = [
        (&[], Empty),
        (&[-1, 2], Negative(-1)),
        (&[0, 5, 4], Decreasing { index: 2, value: 4, previous: 5 }),
        (&[0, 11], PastEnd { index: 1, value: 11, len: 10 }),
        (&[11], PastEnd { index: 0, value: 11, len: 10 }),
    ];
    for (offsets, want) in cases {
        assert_eq!(hash::Cut::new(&data, offsets).err(), Some(want));
    }
    assert_eq!(
        Decreasing { index: 2, value: 4, previous: 5 }.to_string(),
        "offsets[2] = 4 is less than offsets[1] = 5"
    );
    assert!(hash::Cut::new(&data, &[10]).is_ok());
}
