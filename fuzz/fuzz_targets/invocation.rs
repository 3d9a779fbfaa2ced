//! Invocation parsing and building (SPEC §2 `Invocation`, `chain::invoke`).
//!
//! The first byte picks a mode:
//! - raw (`% 4` is 0 or 2): the rest is invocation bytes. `Invocation::parse` must not
//!   panic; a parsed invocation re-encodes to the same bytes, fits the size formula,
//!   does not also parse as a chain, and its text form round-trips.
//! - text (`% 4 == 1`): the rest is a `Hopgate-Invocation` header value, which must
//!   decode and encode back to itself.
//! - recipe (`% 4 == 3`): `chain::invoke` on a fixed, valid chain with fields from the
//!   input. It must refuse exactly what the model refuses, with the model's code;
//!   what it builds must parse to the same fields, bind the chain's last signature,
//!   carry BLAKE3(payload), and verify under the final holder's key; a changed byte
//!   must make it fail to parse or to verify.
#![no_main]

use hopgate_core::chain::{self, Request};
use hopgate_core::sig::{self, Message};
use hopgate_core::wire::{self, Chain, Invocation, InvocationFields, INVOKE_DOMAIN};
use hopgate_core::Code;
use hopgate_fuzz::*;
use libfuzzer_sys::fuzz_target;

/// Largest valid invocation (SPEC §2.7).
const MAX_INVOCATION: usize = 712;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 | 2 => raw(rest),
        1 => text(rest),
        _ => built(rest),
    }
});

fn check_parsed(bytes: &[u8], inv: &Invocation<'_>) {
    assert!(bytes.len() <= MAX_INVOCATION);
    assert_eq!(inv.bytes, bytes);
    let (a, r) = (inv.ability.len(), inv.resource.len());
    assert!((1..=255).contains(&a) && (1..=255).contains(&r));
    assert!(!inv.ability.contains('\0') && !inv.resource.contains('\0'));
    assert_eq!(inv.body.len(), 130 + a + r, "body size formula");
    assert_eq!(bytes.len(), 4 + 4 + inv.body.len() + 64);
    let fields = InvocationFields {
        tail_sig: *inv.tail_sig,
        ability: inv.ability.to_owned(),
        resource: inv.resource.to_owned(),
        cost: inv.cost,
        timestamp: inv.timestamp,
        nonce: *inv.nonce,
        payload_digest: *inv.payload_digest,
    };
    let body = fields.encode_body().expect("parsed fields encode");
    assert_eq!(body, inv.body, "re-encoded body differs");
    assert_eq!(wire::encode_invocation(&body, inv.sig), bytes, "re-encoded invocation differs");
    assert!(Chain::parse(bytes).is_err(), "bytes parse as a chain and an invocation");
}

fn raw(bytes: &[u8]) {
    match Invocation::parse(bytes) {
        Ok(inv) => check_parsed(bytes, &inv),
        Err(e) => assert_eq!(e.code(), Code::Malformed),
    }
    let text = wire::to_text(bytes);
    assert_eq!(wire::from_text(&text).ok().as_deref(), Some(bytes), "text form does not round-trip");
}

fn text(raw: &[u8]) {
    let Ok(s) = std::str::from_utf8(raw) else { return };
    if let Ok(bytes) = wire::from_text(s) {
        // One text form per byte string, up to the one line ending the decoder ignores.
        let bare = s.strip_suffix("\r\n").or_else(|| s.strip_suffix('\n')).unwrap_or(s);
        assert_eq!(wire::to_text(&bytes), bare, "two text forms decode to the same bytes");
        if let Ok(inv) = Invocation::parse(&bytes) {
            check_parsed(&bytes, &inv);
        }
    }
}

/// A string for a request field: usually valid, sometimes empty or too long.
fn field(inp: &mut Input<'_>, valid: String) -> String {
    match inp.below(64) {
        0 => String::new(),
        1 => "é".repeat(128), // 256 bytes
        2 => "a\0b".to_owned(),
        _ => valid,
    }
}

fn built(data: &[u8]) {
    let mut inp = Input::new(data);
    let pool = pool();
    let pc = &pool[inp.below(pool.len())];
    let last = pc.last();
    let holder = if inp.chance(12) { inp.below(NKEYS) } else { pc.holder() };
    let (ability, resource) = draw_request_scope(&mut inp, last);
    let ability = field(&mut inp, ability);
    let resource = field(&mut inp, resource);
    let cost = match inp.below(4) {
        0 => inp.u64(),
        1 => last.budget,
        2 => last.budget.saturating_add(1),
        _ => u64::from(inp.u16()) % last.budget.saturating_add(1),
    };
    let timestamp = if inp.chance(64) { inp.u64() } else { T0 + u64::from(inp.u32()) };
    let nonce: [u8; 16] = inp.array();
    let plen = inp.below(80);
    let payload = inp.take(plen);
    let tamper_with = inp.u8();

    let req = Request { ability: &ability, resource: &resource, cost, timestamp, nonce: Some(nonce), payload };
    let result = chain::invoke(&pc.built.bytes, &keys()[holder], &req);
    let valid_str = |s: &str| !s.is_empty() && s.len() <= 255 && !s.contains('\0');
    let want = if !valid_str(&ability) || !valid_str(&resource) {
        Some(Code::Malformed)
    } else if holder != pc.holder() {
        Some(Code::BadSignature)
    } else {
        model_grant_covers(last, &ability, &resource, cost)
    };
    let bytes = match (result, want) {
        (Ok(bytes), None) => bytes,
        (Err(e), Some(code)) => {
            assert_eq!(e.code(), code, "invoke refused with another code: {e}");
            return;
        }
        (r, want) => panic!("invoke gave {:?}, model says {want:?}", r.map(|b| b.len())),
    };

    let inv = Invocation::parse(&bytes).expect("invoke built an invocation that does not parse");
    check_parsed(&bytes, &inv);
    assert_eq!(inv.tail_sig, pc.built.sigs.last().expect("links"), "tail_sig is not the last signature");
    assert_eq!((inv.ability, inv.resource, inv.cost, inv.timestamp), (&*ability, &*resource, cost, timestamp));
    assert_eq!(inv.nonce, &nonce);
    assert_eq!(inv.payload_digest, blake3::hash(payload).as_bytes());
    let holder_pk = pk(pc.holder());
    let msg = |body| Message { prefix: INVOKE_DOMAIN, body };
    assert!(sig::verify(msg(inv.body), inv.sig, &holder_pk), "invoke's signature does not verify");
    // Byte-exact against an invocation encoded and signed here.
    let fields = InvocationFields {
        tail_sig: *inv.tail_sig,
        ability: ability.clone(),
        resource: resource.clone(),
        cost,
        timestamp,
        nonce,
        payload_digest: *blake3::hash(payload).as_bytes(),
    };
    let body = fields.encode_body().expect("valid fields");
    if tamper_with & 1 != 0 {
        assert_eq!(wire::encode_invocation(&body, &sign_invocation(pc.holder(), &body)), bytes);
    }
    assert_eq!(wire::from_text(&wire::to_text(&bytes)).ok().as_deref(), Some(&bytes[..]));

    // Any change is refused: by the parser or by the signature rule.
    let changed = tamper(&mut inp, &bytes);
    if let Ok(t) = Invocation::parse(&changed) {
        check_parsed(&changed, &t);
        assert!(!sig::verify(msg(t.body), t.sig, &holder_pk), "a changed invocation still verifies");
    }
}
