//! Where the time of a batch verification goes, step by step, on one thread.
//!
//! `cargo run --release --example profile_batch -p hopgate-core [n] [bad_every]`
//! Prints per-signature microseconds for each step of `sig::verify_batch`, measured on
//! the same primitives it uses, and the whole call on one thread and on all cores.
//! Last, for the item-by-item rules: small batches on the calling thread and on rayon's
//! pool, which is what `ITEMWISE_PARALLEL_THRESHOLD` is set from.

use std::time::Instant;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use hopgate_core::sig::{verify, verify_batch, verify_with, Message, Rule, SigItem, SigningKey};
use rayon::prelude::*;
use sha2::{Digest, Sha512};

fn per_item(label: &str, n: usize, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    println!("{label:<44} {:>8.2} µs/sig", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(4096);
    let keys: Vec<SigningKey> = (0..n).map(|_| SigningKey::generate()).collect();
    let msgs: Vec<[u8; 64]> = (0..n).map(|i| [(i % 251) as u8; 64]).collect();
    let sigs: Vec<[u8; 64]> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(Message::plain(m))).collect();
    let items: Vec<SigItem<'_>> =
        (0..n).map(|i| SigItem { msg: Message::plain(&msgs[i]), sig: &sigs[i], pk: keys[i].public_key() }).collect();
    println!("n = {n}, distinct keys");
    let mut pts = Vec::new();
    per_item("decompress A (one per key)", n, || {
        pts = keys.iter().map(|k| CompressedEdwardsY(*k.public_key()).decompress().unwrap()).collect()
    });
    let mut rs = Vec::new();
    per_item("decompress R", n, || {
        rs = sigs.iter().map(|s| CompressedEdwardsY(s[..32].try_into().unwrap()).decompress().unwrap()).collect()
    });
    per_item("small-order checks (A and R)", n, || assert!(pts.iter().chain(&rs).all(|p| !p.is_small_order())));
    let mut ks = Vec::new();
    per_item("k = SHA-512(R || A || M) mod L", n, || {
        ks = items
            .iter()
            .map(|it| {
                let h = Sha512::new().chain_update(&it.sig[..32]).chain_update(it.pk).chain_update(it.msg.body);
                Scalar::from_bytes_mod_order_wide(&h.finalize().into())
            })
            .collect()
    });
    let zs: Vec<Scalar> = (0..n as u64).map(|i| Scalar::from(i * 0x9e37_79b9 + 1)).collect();
    per_item("multiscalar mul, 2n points (R and A terms)", n, || {
        let scalars = zs.iter().cloned().chain(zs.iter().zip(&ks).map(|(z, k)| z * k));
        let points = rs.iter().chain(&pts).cloned();
        let _ = EdwardsPoint::vartime_multiscalar_mul(scalars, points);
    });
    per_item("verify, one at a time", n, || assert!(items.iter().all(|it| verify(it.msg, it.sig, it.pk))));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    per_item("verify_batch, 1 thread", n, || assert!(pool.install(|| verify_batch(&items)).iter().all(|&v| v)));
    per_item("verify_batch, all cores", n, || assert!(verify_batch(&items).iter().all(|&v| v)));
    // Bad signatures spread evenly (1 in BAD_EVERY, default 50): the cost of finding them.
    let bad_every: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let mut bad_sigs = sigs.clone();
    for s in bad_sigs.iter_mut().step_by(bad_every) {
        s[40] ^= 1;
    }
    let bad: Vec<SigItem<'_>> = items.iter().zip(&bad_sigs).map(|(it, s)| SigItem { sig: s, ..*it }).collect();
    per_item(&format!("verify_batch, all cores, 1 in {bad_every} bad"), n, || {
        assert_eq!(verify_batch(&bad).iter().filter(|&&v| !v).count(), n.div_ceil(bad_every))
    });
    for rule in [Rule::Libsodium, Rule::Openssl] {
        for m in [2, 4, 8, 16, 32, 256] {
            let few = &items[..m.min(n)];
            let reps = 200;
            let time = |f: &dyn Fn() -> usize| {
                let t = Instant::now();
                for _ in 0..reps {
                    assert_eq!(f(), few.len());
                }
                t.elapsed().as_secs_f64() * 1e6 / (reps * few.len()) as f64
            };
            let serial = time(&|| few.iter().filter(|it| verify_with(rule, it.msg, it.sig, it.pk)).count());
            let parallel = time(&|| few.par_iter().filter(|it| verify_with(rule, it.msg, it.sig, it.pk)).count());
            println!("{rule:<9} n = {m:<3} serial {serial:>7.2} µs/sig, rayon {parallel:>7.2} µs/sig");
        }
    }
}
