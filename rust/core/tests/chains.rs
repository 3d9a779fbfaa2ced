//! Chains in the core: builder round trip, decisions, and total parsing.

use std::collections::HashSet;

use hopgate_core::chain::{self, Delegation, Policy, Request};
use hopgate_core::sig::SigningKey;
use hopgate_core::wire::{Chain, CommonFields, Invocation};
use hopgate_core::{Code, Error};

const NOW: u64 = 1_750_000_000;

fn fields(holder: &SigningKey) -> CommonFields {
    CommonFields {
        holder: *holder.public_key(),
        not_before: NOW - 10,
        not_after: NOW + 10,
        max_depth: 2,
        budget: 100,
        unit: "usd".into(),
        nonce: [7; 16],
        caps: vec![("files/*".into(), "read".into())],
        meta_digest: [0; 32],
    }
}

#[test]
fn build_verify_and_refuse() {
    let keys: Vec<SigningKey> = (1..=4u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
    let c0 = chain::grant(&keys[0], &[0; 16], &fields(&keys[1])).unwrap();
    let d = Delegation { budget: Some(50), ..Default::default() };
    let c1 = chain::delegate(&c0, &keys[1], keys[2].public_key(), d).unwrap();
    let trusted: HashSet<[u8; 32]> = [*keys[0].public_key()].into();
    let none = HashSet::new();
    let policy = Policy { trusted: &trusted, now: NOW, session: None, revoked: &none };
    assert_eq!(chain::verify_chains(&[&c0, &c1], &policy), vec![Code::Ok, Code::Ok]);
    let late = Policy { now: NOW + 10, ..policy };
    assert_eq!(chain::verify_chains(&[&c1], &late), vec![Code::Expired]);

    let wide = Delegation { budget: Some(51), ..Default::default() };
    let err = chain::delegate(&c1, &keys[2], keys[3].public_key(), wide).unwrap_err();
    assert_eq!(err.code(), Code::BudgetWidened);
    let err = chain::delegate(&c1, &keys[3], keys[3].public_key(), Delegation::default()).unwrap_err();
    assert_eq!(err.code(), Code::BadSignature);

    let req = Request { ability: "read", resource: "files/a", cost: 5, timestamp: NOW, nonce: None, payload: b"x" };
    let inv = chain::invoke(&c1, &keys[2], &req).unwrap();
    let parsed = Invocation::parse(&inv).unwrap();
    assert_eq!(parsed.tail_sig, Chain::parse(&c1).unwrap().last().sig);
    assert_eq!((parsed.ability, parsed.resource, parsed.cost), ("read", "files/a", 5));
    let denied = Request { ability: "write", ..req };
    assert_eq!(chain::invoke(&c1, &keys[2], &denied).unwrap_err().code(), Code::ScopeDenied);
}

#[test]
fn parsing_is_total() {
    let k = SigningKey::from_seed(&[9; 32]);
    let good = chain::grant(&k, &[0; 16], &fields(&k)).unwrap();
    // A small deterministic generator: no extra dependency, same inputs every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut bytes = good.clone();
        for _ in 0..(next() % 4 + 1) {
            match next() % 3 {
                0 => {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] ^= 1 << (next() % 8);
                }
                1 => bytes.truncate((next() as usize) % (bytes.len() + 1)),
                _ => bytes.push(next() as u8),
            }
            if bytes.is_empty() {
                break;
            }
        }
        match Chain::parse(&bytes) {
            Ok(_) | Err(Error::Malformed { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
        let _ = Invocation::parse(&bytes);
    }
}
