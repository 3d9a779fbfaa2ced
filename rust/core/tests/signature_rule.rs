//! The signature rule (SPEC §3): RFC 8032 known answers, the speccheck cases, and
//! batch == single on mixes of valid and invalid items.

use hopgate_core::sig::{verify, verify_batch, Message, SigItem, SigningKey};

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
    use curve25519_dalek::constants::EIGHT_TORSION;
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
