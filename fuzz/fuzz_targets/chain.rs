//! Chain parsing and verification (SPEC §2, §4 steps (a)–(e)).
//!
//! The first byte picks a mode:
//! - raw (`% 4 == 0`): the rest is chain bytes. `Chain::parse` must not panic; a parsed
//!   chain must re-encode to the same bytes, and `verify_chains` must say MALFORMED
//!   exactly when parsing fails.
//! - text (`% 4 == 1`): the rest is a `Hopgate-Chain` header value. The strict decoder
//!   gives each byte string one text form: decoding then encoding returns the input.
//! - recipe (otherwise): the rest is a recipe. A real chain of 1..=4 links is built
//!   and signed from fixed keys (narrowing, or widened, mis-signed, mis-linked,
//!   malformed as the input says), the input picks a policy, and `verify_chains` must
//!   give exactly the code that `hopgate_fuzz::Recipe::expected` (an independent model
//!   of SPEC §4) gives; any changed byte must never be OK; a batch must give each item
//!   the code it gets alone; and the core builders (`chain::grant`, `chain::delegate`)
//!   must build the same bytes or refuse with the model's code.
#![no_main]

use std::collections::HashSet;

use hopgate_core::chain::{self, Delegation};
use hopgate_core::wire::{self, Anchor, Chain};
use hopgate_core::Code;
use hopgate_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => raw(rest),
        1 => text(rest),
        _ => recipe(rest),
    }
});

/// Properties of any byte string offered as a chain.
fn raw(bytes: &[u8]) {
    let parsed = Chain::parse(bytes);
    let policy = ModelPolicy { trusted: trusted_default(), now: T0 + 1000, session: None, revoked: HashSet::new() };
    match &parsed {
        Err(e) => assert_eq!(e.code(), Code::Malformed, "a parse error is MALFORMED"),
        Ok(chain) => check_parsed(bytes, chain),
    }
    // Only chains from a trusted issuer cost signature checks; raw inputs rarely are.
    let codes = chain::verify_chains(&[bytes], &policy.as_policy());
    assert_eq!(codes.len(), 1);
    assert_spec_code(codes[0]);
    assert_eq!(codes[0] == Code::Malformed, parsed.is_err(), "MALFORMED iff the parse fails");
    // The text form round-trips for every byte string.
    let text = wire::to_text(bytes);
    assert_eq!(wire::from_text(&text).ok().as_deref(), Some(bytes), "text form does not round-trip");
}

/// A parsed chain is exactly its fields, re-encoded.
fn check_parsed(bytes: &[u8], chain: &Chain<'_>) {
    assert!(bytes.len() <= wire::MAX_CHAIN_LEN);
    assert_eq!(chain.bytes, bytes);
    let n = chain.links.len();
    assert!((1..=wire::MAX_LINKS).contains(&n));
    assert_eq!(bytes[4] as usize, n);
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(wire::CHAIN_MAGIC);
    out.push(n as u8);
    for (i, link) in chain.links.iter().enumerate() {
        let f = fields_of(link);
        // What the parser accepted, the encoder's validation accepts too.
        f.validate().expect("a parsed link has valid fields");
        assert!(link.not_before < link.not_after);
        let ncap = f.caps.len();
        assert!((1..=wire::MAX_CAPS).contains(&ncap));
        let body = match (i, link.anchor) {
            (0, Anchor::Grant { issuer, session_id }) => {
                assert_eq!(link.issuer(), Some(issuer));
                let core = wire::encode_grant_body(issuer, session_id, &f);
                assert_eq!(core, encode_grant_raw(issuer, session_id, &f), "core encoder != docs/SPEC.md §2");
                core
            }
            (i, Anchor::Delegation { prev_sig }) if i > 0 => {
                assert_eq!(link.issuer(), None);
                wire::encode_delegation_body(prev_sig, &f)
            }
            (i, a) => panic!("link {i} has anchor {a:?}"),
        };
        assert_eq!(body, link.body, "link {i}: re-encoded body differs");
        assert_eq!(link.revocation_id(), *blake3::hash(link.sig).as_bytes());
        wire::encode_link(&mut out, link.body, link.sig);
    }
    assert_eq!(out, bytes, "re-encoded chain differs");
    assert!(chain.first().issuer().is_some());
    assert!(std::ptr::eq(chain.last(), &chain.links[n - 1]));
}

/// The strict text form: decode then encode is the identity, and what decodes parses
/// the same as the bytes would.
fn text(raw: &[u8]) {
    let Ok(s) = std::str::from_utf8(raw) else { return };
    if let Ok(bytes) = wire::from_text(s) {
        assert_eq!(wire::to_text(&bytes), s, "two text forms decode to the same bytes");
        if let Ok(chain) = Chain::parse(&bytes) {
            check_parsed(&bytes, &chain);
        }
    }
}

fn draw_policy(inp: &mut Input<'_>, recipe: &Recipe, built: &Built) -> ModelPolicy {
    let (lo, hi) = recipe.window();
    let now = match inp.below(10) {
        0 => lo,
        1 => hi.wrapping_sub(1),
        2 => hi,
        3 => lo.wrapping_sub(1),
        4 => inp.u64(),
        5 => T0 + u64::from(inp.u32()),
        _ if lo < hi => lo + inp.u64() % (hi - lo),
        _ => lo,
    };
    let trusted = match inp.below(16) {
        0 => HashSet::new(),
        1 => [pk(1)].into_iter().collect(),
        _ => trusted_default(),
    };
    let session = match inp.below(4) {
        0 => Some(SESSIONS[0]),
        1 => Some(SESSIONS[1]),
        _ => None,
    };
    let mut revoked = HashSet::new();
    match inp.below(8) {
        0 => {
            revoked.insert(*blake3::hash(&built.sigs[inp.below(built.sigs.len())]).as_bytes());
        }
        1 => {
            revoked.insert(inp.array());
        }
        _ => {}
    }
    ModelPolicy { trusted, now, session, revoked }
}

fn recipe(data: &[u8]) {
    let mut inp = Input::new(data);
    let recipe = Recipe::draw(&mut inp, 4);
    let built = recipe.build();
    let policy = draw_policy(&mut inp, &recipe, &built);
    let expected = recipe.expected(&built, &policy);
    let tampered = tamper(&mut inp, &built.bytes);
    let flags = inp.u8();

    // What was built parses back to the recipe (unless the recipe is malformed).
    match Chain::parse(&built.bytes) {
        Ok(chain) => {
            assert!(recipe.well_formed(), "a malformed recipe parsed");
            check_parsed(&built.bytes, &chain);
            assert_eq!(chain.links.len(), recipe.links.len());
            assert_eq!(chain.first().issuer(), Some(&pk(recipe.issuer)));
            for (l, p) in chain.links.iter().zip(&recipe.links) {
                assert_eq!(fields_of(l), p.fields);
            }
        }
        Err(e) => {
            assert!(!recipe.well_formed(), "a well-formed recipe failed to parse: {e}");
        }
    }

    // One batch with both chains; the original must get the model's code, the
    // tampered one never OK.
    let p = policy.as_policy();
    let codes = chain::verify_chains(&[&built.bytes, &tampered], &p);
    assert_eq!(codes.len(), 2);
    codes.iter().copied().for_each(assert_spec_code);
    assert_eq!(codes[0], expected, "verify_chains disagrees with the SPEC §4 model; recipe {recipe:?}");
    assert_ne!(codes[1], Code::Ok, "a changed chain verified");
    // Alone, each item gets the code it got in the batch.
    if flags & 3 == 1 {
        assert_eq!(chain::verify_chains(&[&tampered], &p), [codes[1]], "batch and single disagree");
    }
    if flags & 3 == 2 {
        assert_eq!(chain::verify_chains(&[&built.bytes], &p), [codes[0]], "batch and single disagree");
    }
    // The core builders: same bytes for what a verifier accepts, the model's code otherwise.
    if flags & 4 != 0 && recipe.well_formed() {
        check_builders(&recipe, &built);
    }
}

fn check_builders(recipe: &Recipe, built: &Built) {
    let first = &recipe.links[0];
    let end0 = built.offsets.get(1).copied().unwrap_or(built.bytes.len());
    if first.signer == recipe.issuer {
        let g = chain::grant(&keys()[recipe.issuer], &recipe.session_id, &first.fields).expect("valid grant refused");
        assert_eq!(g[5..], built.bytes[5..end0], "chain::grant built other bytes");
    } else {
        return;
    }
    for i in 1..recipe.links.len() {
        let l = &recipe.links[i];
        if l.prev_override.is_some() {
            return; // the builder cannot mis-link
        }
        let prefix_end = built.offsets[i];
        let mut prefix = built.bytes[..prefix_end].to_vec();
        prefix[4] = i as u8;
        let d = Delegation {
            caps: Some(l.fields.caps.clone()),
            budget: Some(l.fields.budget),
            unit: Some(l.fields.unit.clone()),
            not_before: Some(l.fields.not_before),
            not_after: Some(l.fields.not_after),
            max_depth: Some(l.fields.max_depth),
            nonce: Some(l.fields.nonce),
            meta_digest: Some(l.fields.meta_digest),
        };
        let parent = &recipe.links[i - 1].fields;
        let r = chain::delegate(&prefix, &keys()[l.signer], &l.fields.holder, d);
        let want =
            if pk(l.signer) != parent.holder { Some(Code::BadSignature) } else { model_attenuation(parent, &l.fields) };
        match (r, want) {
            (Ok(bytes), None) => {
                let end = built.offsets.get(i + 1).copied().unwrap_or(built.bytes.len());
                assert_eq!(bytes[5..], built.bytes[5..end], "chain::delegate built other bytes");
                assert_eq!(bytes[4] as usize, i + 1);
            }
            (Err(e), Some(code)) => assert_eq!(e.code(), code, "delegate refused with another code: {e}"),
            (r, want) => panic!("delegate gave {:?}, model says {want:?}", r.map(|b| b.len())),
        }
        if want.is_some() {
            return; // the built chain goes on from a link the builder refused
        }
    }
}
