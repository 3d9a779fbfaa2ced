//! The signature rules (SPEC §3): RFC 8032 known answers, the speccheck cases under
//! each rule, batch == single on mixes of valid and invalid items, and the encodings
//! where the drop-in rules part ways.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use hopgate_core::sig::{
    verify, verify_batch, verify_batch_with, verify_with, Message, Rule, SigItem, SigningKey,
    ITEMWISE_PARALLEL_THRESHOLD,
};
use sha2::{Digest, Sha512};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

#[test]
fn rfc8032_known_answers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/rfc8032.json");
    let vectors: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let field = |k: &str| case[k].as_str().unwrap().to_owned();
        let (sk, pk, msg, sig) = (field("seed"), field("public_key"), field("message"), field("signature"));
        let key = SigningKey::from_seed_slice(&unhex(&sk)).unwrap();
        assert_eq!(key.public_key().to_vec(), unhex(&pk));
        let msg = unhex(&msg);
        let produced = key.sign(Message::plain(&msg));
        assert_eq!(produced.to_vec(), unhex(&sig));
        assert!(verify(Message::plain(&msg), &produced, &unhex(&pk)));
    }
}

fn speccheck() -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/speccheck_cases.json");
    let text = std::fs::read_to_string(path).expect("tests/vectors/speccheck_cases.json");
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    vectors["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let f = |k: &str| unhex(c[k].as_str().unwrap());
            (f("message"), f("signature"), f("pub_key"))
        })
        .collect()
}

#[test]
fn speccheck_cases_single_and_batch() {
    let expected = [false, false, false, true, true, true, false, false, false, false, false, false];
    let cases = speccheck();
    assert_eq!(cases.len(), 12);
    let single: Vec<bool> = cases.iter().map(|(m, s, k)| verify(Message::plain(m), s, k)).collect();
    assert_eq!(single, expected);
    let items: Vec<SigItem<'_>> =
        cases.iter().map(|(m, s, k)| SigItem { msg: Message::plain(m), sig: s, pk: k }).collect();
    assert_eq!(verify_batch(&items), expected);
    // Repeated many times so that the batch path (groups, parallel) is the one used.
    let many: Vec<SigItem<'_>> = items.iter().cycle().take(12 * 40).copied().collect();
    let out = verify_batch(&many);
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, expected[i % 12], "item {i}");
    }
}

#[test]
fn batch_equals_single_on_mixes() {
    let keys: Vec<SigningKey> = (0..7).map(|_| SigningKey::generate()).collect();
    let msgs: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_le_bytes().repeat(i as usize % 5 + 1)).collect();
    let mut sigs: Vec<[u8; 64]> = msgs.iter().enumerate().map(|(i, m)| keys[i % 7].sign(Message::plain(m))).collect();
    // Corrupt a scattered set in different ways.
    for i in (0..300).step_by(37) {
        sigs[i][5] ^= 1; // R changes
    }
    for i in (3..300).step_by(53) {
        sigs[i][40] ^= 0x10; // S changes
    }
    sigs[299][63] |= 0xf0; // S >= L
    let pks: Vec<[u8; 32]> = (0..300).map(|i| *keys[i % 7].public_key()).collect();
    let mut bad_key = pks[10];
    bad_key[0] ^= 2;
    let items: Vec<SigItem<'_>> = (0..300)
        .map(|i| SigItem { msg: Message::plain(&msgs[i]), sig: &sigs[i], pk: if i == 10 { &bad_key } else { &pks[i] } })
        .collect();
    let batch = verify_batch(&items);
    let single: Vec<bool> = items.iter().map(|it| verify(it.msg, it.sig, it.pk)).collect();
    assert_eq!(batch, single);
    assert!(single.iter().filter(|v| !**v).count() >= 14);
    assert!(single.iter().filter(|v| **v).count() > 250);
}

#[test]
fn wrong_lengths_fail_without_panicking() {
    let key = SigningKey::generate();
    let sig = key.sign(Message::plain(b"m"));
    assert!(!verify(Message::plain(b"m"), &sig[..63], key.public_key()));
    assert!(!verify(Message::plain(b"m"), &sig, &key.public_key()[..31]));
    assert!(!verify(Message::plain(b"m"), &[], &[]));
    let items = [SigItem { msg: Message::plain(b"m"), sig: &sig[..10], pk: key.public_key() }];
    assert_eq!(verify_batch(&items), vec![false]);
    assert_eq!(verify_batch(&[]), Vec::<bool>::new());
}

#[test]
fn a_large_batch_where_every_item_fails_early() {
    // Found by the million-item test: a batch above the parallel threshold in which
    // no item passes the per-item checks used to divide by zero.
    let key = SigningKey::generate();
    let bad_s = [0xFF; 64]; // S >= L: refused before the equation
    for n in [47, 48, 49, 1000] {
        let items: Vec<SigItem<'_>> =
            (0..n).map(|_| SigItem { msg: Message::plain(b"m"), sig: &bad_s, pk: key.public_key() }).collect();
        assert_eq!(verify_batch(&items), vec![false; n], "n = {n}");
        let short: Vec<SigItem<'_>> =
            (0..n).map(|_| SigItem { msg: Message::plain(b"m"), sig: &bad_s[..5], pk: key.public_key() }).collect();
        assert_eq!(verify_batch(&short), vec![false; n], "n = {n}");
    }
}

#[test]
fn prefix_and_body_hash_as_concatenation() {
    let key = SigningKey::generate();
    let sig = key.sign(Message { prefix: b"dom\0", body: b"body" });
    assert!(verify(Message::plain(b"dom\0body"), &sig, key.public_key()));
}

#[test]
fn every_small_order_point_is_rejected_as_key_and_as_r() {
    let key = SigningKey::generate();
    let good = key.sign(Message::plain(b"m"));
    for t in EIGHT_TORSION {
        let enc = t.compress().to_bytes();
        assert!(t.is_small_order());
        // As the public key, with any signature.
        assert!(!verify(Message::plain(b"m"), &good, &enc));
        // As R, with the real key.
        let mut sig = good;
        sig[..32].copy_from_slice(&enc);
        assert!(!verify(Message::plain(b"m"), &sig, key.public_key()));
    }
}

/// Each rule's answers on the 12 speccheck cases. Known answers from ed25519-speccheck's
/// results.md (rows "LibSodium" and "OpenSSL-3.0"), confirmed against PyNaCl and
/// pyca/cryptography by tests/test_signature_rules.py.
const SPECCHECK_EXPECTED: [(Rule, [bool; 12]); 3] = {
    const T: bool = true;
    const F: bool = false;
    [
        (Rule::Strict, [F, F, F, T, T, T, F, F, F, F, F, F]),
        (Rule::Libsodium, [F, F, F, T, F, F, F, F, F, F, F, F]),
        (Rule::Openssl, [T, T, T, T, F, F, F, F, F, F, F, T]),
    ]
};

#[test]
fn speccheck_cases_under_each_rule_single_and_batch() {
    let cases = speccheck();
    let items: Vec<SigItem<'_>> =
        cases.iter().map(|(m, s, k)| SigItem { msg: Message::plain(m), sig: s, pk: k }).collect();
    for (rule, expected) in SPECCHECK_EXPECTED {
        let single: Vec<bool> = items.iter().map(|it| verify_with(rule, it.msg, it.sig, it.pk)).collect();
        assert_eq!(single, expected, "{rule}");
        assert_eq!(verify_batch_with(&items, rule), expected, "{rule}");
        let many: Vec<SigItem<'_>> = items.iter().cycle().take(12 * 40).copied().collect();
        for (i, v) in verify_batch_with(&many, rule).iter().enumerate() {
            assert_eq!(*v, expected[i % 12], "{rule}, item {i}");
        }
    }
}

#[test]
fn rule_names() {
    for rule in Rule::ALL {
        assert_eq!(Rule::from_name(rule.name()).unwrap(), rule);
        assert_eq!(rule.name().parse::<Rule>().unwrap(), rule);
    }
    assert_eq!(Rule::default(), Rule::Strict);
    for bad in ["", "Strict", "sodium", "openssl ", "dalek"] {
        let message = Rule::from_name(bad).unwrap_err().to_string();
        for name in ["strict", "libsodium", "openssl"] {
            assert!(message.contains(name), "{message}");
        }
    }
}

#[test]
fn strict_with_is_strict() {
    let key = SigningKey::generate();
    let sig = key.sign(Message::plain(b"m"));
    for rule in Rule::ALL {
        assert!(verify_with(rule, Message::plain(b"m"), &sig, key.public_key()), "{rule}");
        assert!(!verify_with(rule, Message::plain(b"n"), &sig, key.public_key()), "{rule}");
        assert!(!verify_with(rule, Message::plain(b"m"), &sig[..63], key.public_key()), "{rule}");
        assert!(!verify_with(rule, Message::plain(b"m"), &sig, &key.public_key()[..31]), "{rule}");
        assert_eq!(verify_batch_with(&[], rule), Vec::<bool>::new());
    }
}

fn k_of(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(
        &Sha512::new().chain_update(r).chain_update(a).chain_update(msg).finalize().into(),
    )
}

fn sig_of(r: &[u8; 32], s: &Scalar) -> [u8; 64] {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(r);
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

fn answers(msg: &[u8], sig: &[u8], pk: &[u8]) -> [bool; 3] {
    Rule::ALL.map(|rule| verify_with(rule, Message::plain(msg), sig, pk))
}

/// p = 2^255 - 19 plus `y` (for y < 19, the non-canonical alias of y), little-endian.
fn p_plus(y: u8) -> [u8; 32] {
    let mut b = [0xff; 32];
    b[0] = 0xed + y;
    b[31] = 0x7f;
    b
}

/// A key of small order signs anything under OpenSSL's rule once `[k]A` vanishes:
/// with R = [r]B and S = r the equation is `[k]A == 0`. Encodings that only OpenSSL
/// decodes (y >= p, x = 0 with the sign bit) behave as the point they stand for.
#[test]
fn small_order_and_non_canonical_keys() {
    let r = Scalar::from(123_456_789u64);
    let big_r = EdwardsPoint::mul_base(&r).compress().to_bytes();
    let sig = sig_of(&big_r, &r);
    let identity = EdwardsPoint::default().compress().to_bytes();
    let mut keys: Vec<[u8; 32]> = vec![identity, p_plus(1)];
    for mut k in [identity, p_plus(1)] {
        k[31] |= 0x80; // x = 0 with the sign bit set
        keys.push(k);
    }
    for pk in keys {
        // [k]A = 0 for every k: OpenSSL accepts any message; libsodium and strict refuse.
        for msg in [&b"a"[..], b"b", b""] {
            assert_eq!(answers(msg, &sig, &pk), [false, false, true], "{}", hex::encode(pk));
        }
    }
    // Every small-order point, written with either sign bit, and the aliases p and
    // p + 1: libsodium and strict refuse them all; OpenSSL accepts exactly when [k]A = 0.
    let mut encodings: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|t| t.compress().to_bytes()).collect();
    encodings.extend([p_plus(0), p_plus(1)]);
    let mut openssl_accepts = 0;
    for enc in encodings {
        for sign in [0u8, 0x80] {
            let mut pk = enc;
            pk[31] ^= sign;
            let a = CompressedEdwardsY(pk).decompress().expect("small-order encodings decode");
            for msg in [&b"0"[..], b"1", b"2", b"3"] {
                let expected = (k_of(&big_r, &pk, msg) * a).is_identity();
                assert_eq!(answers(msg, &sig, &pk), [false, false, expected], "{}", hex::encode(pk));
                openssl_accepts += usize::from(expected);
            }
        }
    }
    assert!(openssl_accepts >= 16, "{openssl_accepts}");
}

/// R of small order is never decoded by OpenSSL: R = identity with S = k·a makes
/// `[S]B - [k]A` the identity, whose encoding is R.
#[test]
fn identity_r_passes_only_openssl() {
    let key = SigningKey::from_seed(&[7; 32]);
    let a = clamped_scalar(&[7; 32]);
    let identity = EdwardsPoint::default().compress().to_bytes();
    for msg in [&b"x"[..], b"y", b""] {
        let s = k_of(&identity, key.public_key(), msg) * a;
        assert_eq!(answers(msg, &sig_of(&identity, &s), key.public_key()), [false, false, true]);
    }
}

fn clamped_scalar(seed: &[u8; 32]) -> Scalar {
    let h: [u8; 64] = Sha512::digest(seed).into();
    let mut a = [0u8; 32];
    a.copy_from_slice(&h[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    Scalar::from_bytes_mod_order(a)
}

/// A key with a torsion component, A = [a]B + T (T of order 8). With R = [r]B + T_j
/// and S = r + k·a, `[S]B - [k]A = [r]B - [k]T`: the cofactorless equation holds iff
/// T_j = -[k]T, the cofactored one always. So the right T_j is accepted by every rule
/// and the seven others by strict alone.
#[test]
fn mixed_order_keys() {
    let seed = [9u8; 32];
    let a = clamped_scalar(&seed);
    let t = EIGHT_TORSION[1];
    let pk = (EdwardsPoint::mul_base(&a) + t).compress().to_bytes();
    let (mut all, mut strict_only) = (0, 0);
    for i in 0..64u64 {
        let r = Scalar::from(1000 + i);
        let msg = i.to_le_bytes();
        for tj in EIGHT_TORSION {
            let big_r = (EdwardsPoint::mul_base(&r) + tj).compress().to_bytes();
            let k = k_of(&big_r, &pk, &msg);
            let s = r + k * a;
            let holds = (k * t + tj).is_identity();
            let got = answers(&msg, &sig_of(&big_r, &s), &pk);
            if holds {
                assert_eq!(got, [true, true, true]);
                all += 1;
            } else {
                assert_eq!(got, [true, false, false]);
                strict_only += 1;
            }
        }
    }
    assert!(all >= 40 && strict_only >= 300, "{all} {strict_only}");
}

/// Non-canonical encodings y + p (y < 19). As A, only OpenSSL reads them (as y); as R,
/// every rule refuses them, since the re-encoded `[S]B - [k]A` is canonical.
#[test]
fn non_canonical_encodings() {
    let key = SigningKey::from_seed(&[3; 32]);
    let good = key.sign(Message::plain(b"m"));
    for y in 0..19u8 {
        for sign in [0u8, 0x80] {
            let mut enc = p_plus(y);
            enc[31] |= sign;
            let mut sig = good;
            sig[..32].copy_from_slice(&enc);
            assert_eq!(answers(b"m", &sig, key.public_key()), [false; 3]);
            // Re-sign with the non-canonical R hashed as given: still refused by all,
            // because [S]B - [k]A encodes canonically and cannot equal these bytes.
            let a = clamped_scalar(&[3; 32]);
            let s = k_of(&enc, key.public_key(), b"m") * a;
            assert_eq!(answers(b"m", &sig_of(&enc, &s), key.public_key()), [false; 3]);
        }
    }
}

/// The item-by-item rules answer the same on the calling thread and on rayon's pool
/// (below, at and above `ITEMWISE_PARALLEL_THRESHOLD`).
#[test]
fn itemwise_batches_around_the_threshold() {
    let key = SigningKey::generate();
    let msgs: Vec<[u8; 4]> = (0..64u32).map(|i| i.to_le_bytes()).collect();
    let mut sigs: Vec<[u8; 64]> = msgs.iter().map(|m| key.sign(Message::plain(m))).collect();
    for s in sigs.iter_mut().step_by(3) {
        s[40] ^= 1;
    }
    for n in [ITEMWISE_PARALLEL_THRESHOLD - 1, ITEMWISE_PARALLEL_THRESHOLD, 64] {
        let items: Vec<SigItem<'_>> =
            (0..n).map(|i| SigItem { msg: Message::plain(&msgs[i]), sig: &sigs[i], pk: key.public_key() }).collect();
        for rule in Rule::ALL {
            let expected: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
            assert_eq!(verify_batch_with(&items, rule), expected, "{rule}, n = {n}");
        }
    }
}
