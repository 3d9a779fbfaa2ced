//! Biscuit tokens' signature layer (`hopgate_core::biscuit`).
//!
//! The first byte picks a mode:
//! - raw (even): the rest is token bytes, verified against a fixed root. Decoding and
//!   verifying never panic; one token alone, the same token three times in a batch, and
//!   beside a valid token give the same answer; revocation ids are 64-byte slices of the
//!   token, one per block; a token that verifies still verifies, with the same ids, with
//!   an unknown field appended (prost skips it).
//! - recipe (odd): a token built here, written from biscuit's SPECIFICATIONS.md (1 to 4
//!   blocks, signature version 0 or 1, a third-party block, sealed or not, a rootKeyId),
//!   must verify with its signatures as revocation ids; the same token under another
//!   root, with a bit of a block's signature flipped, or cut in half never verifies.
#![no_main]

use hopgate_core::biscuit::testing::{build, Recipe};
use hopgate_core::biscuit::{self, FailureKind};
use hopgate_core::sig::SigningKey;
use libfuzzer_sys::fuzz_target;

fn root() -> SigningKey {
    SigningKey::from_seed(&core::array::from_fn(|i| i as u8))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        raw(rest);
    } else {
        recipe(rest);
    }
});

fn raw(token: &[u8]) {
    let root = *root().public_key();
    let single = biscuit::verify(token, &root);
    let many = biscuit::verify_many(&[token, token, token], &root);
    assert!(many.iter().all(|v| *v == single), "batch and single differ");
    let (valid, ids) = recipe_token(&[1, 2, 3]);
    let beside = biscuit::verify_many(&[&valid, token], &root);
    assert_eq!(beside[0].as_ref().ok(), Some(&ids.iter().map(|s| s.as_slice()).collect::<Vec<_>>()));
    assert_eq!(beside[1], single, "a neighbour changed the answer");
    match single {
        Ok(ids) => {
            assert!(!ids.is_empty());
            for id in &ids {
                assert_eq!(id.len(), 64);
                let start = id.as_ptr() as usize - token.as_ptr() as usize;
                assert!(start + 64 <= token.len(), "a revocation id outside the token");
            }
            let mut longer = token.to_vec();
            longer.extend_from_slice(&[0x48, 0x00]);
            assert_eq!(biscuit::verify(&longer, &root).map(|v| v.len()), Ok(ids.len()));
        }
        Err(f) => assert!(!f.message.is_empty()),
    }
}

/// A token from the input's choices, and its block signatures.
fn recipe_token(choice: &[u8]) -> (Vec<u8>, Vec<[u8; 64]>) {
    let pick = |i: usize| choice.get(i).copied().unwrap_or(0);
    let n = 1 + usize::from(pick(0) % 4);
    let root = root();
    let keys: Vec<SigningKey> = (0..n).map(|i| SigningKey::from_seed(&[pick(4).wrapping_add(i as u8); 32])).collect();
    let external = SigningKey::from_seed(&[0xee; 32]);
    let blocks: Vec<Vec<u8>> = (0..n).map(|i| vec![pick(7 + i); 1 + usize::from(pick(11 + i) % 40)]).collect();
    build(&Recipe {
        root: &root,
        keys: &keys,
        external: &external,
        blocks: &blocks,
        version: u32::from(pick(1) % 2),
        third_party: Some(usize::from(pick(2) % 5)),
        sealed: pick(3) % 2 == 1,
        root_key_id: (pick(5) % 3 == 0).then(|| u64::from(pick(6)) << 20),
    })
}

fn recipe(choice: &[u8]) {
    let (token, sigs) = recipe_token(choice);
    let root = *root().public_key();
    let ids: Vec<&[u8]> = sigs.iter().map(|s| s.as_slice()).collect();
    assert_eq!(biscuit::verify(&token, &root), Ok(ids.clone()), "a token built here does not verify");

    let other = *SigningKey::from_seed(&[0x55; 32]).public_key();
    assert_eq!(biscuit::verify(&token, &other).map_err(|f| f.kind), Err(FailureKind::Signature));

    // A changed byte inside a signature or a block's data never verifies.
    let at = choice.get(20).copied().unwrap_or(0) as usize;
    let sig = &sigs[at % sigs.len()];
    let pos = token.windows(64).position(|w| w == sig).expect("the signature is in the token");
    let mut changed = token.clone();
    changed[pos + at % 64] ^= 1 << (at % 8);
    assert!(biscuit::verify(&changed, &root).is_err(), "a changed signature verifies");

    // Cut in half: refused, beside the whole token that still verifies.
    if sigs.len() > 1 {
        let cut = biscuit::verify_many(&[&token[..token.len() / 2], &token], &root);
        assert!(cut[0].is_err() && cut[1].is_ok());
    }
}
