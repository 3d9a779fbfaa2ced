//! Compact JWS tokens split and base64url-decoded (`hopgate_core::jose`), the parser under
//! `hopgate.jwt` and `hopgate.aip`.
//!
//! The input is a token: raw bytes, or (one input in two) one built from three segments
//! of the input's bytes, each either encoded (the URL-safe alphabet, padded or not) or raw,
//! joined by dots and with extra dots sometimes. Properties: splitting never panics; a
//! token has a split iff it has two dots; the signing input is the token up to its last
//! dot and the header what precedes the first dot; every decoded segment re-encodes to
//! exactly the segment (without its padding), so each byte string has one spelling; an
//! encoded segment always decodes to what was encoded; `split_many` (both sides of its
//! rayon threshold) agrees with `split` token by token.
#![no_main]

use base64::Engine;
use hopgate_core::jose::{self, PARALLEL_MIN};
use hopgate_fuzz::Input;
use libfuzzer_sys::fuzz_target;

const URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn segment(inp: &mut Input<'_>) -> (Vec<u8>, Option<Vec<u8>>) {
    let len = inp.below(40);
    let bytes = inp.take(len).to_vec();
    match inp.below(3) {
        0 => (bytes, None),
        1 => (URL.encode(&bytes).into_bytes(), Some(bytes)),
        _ => {
            let mut text = URL.encode(&bytes).into_bytes();
            text.resize(text.len().next_multiple_of(4), b'=');
            (text, Some(bytes))
        }
    }
}

fn check_decoded(seg: &[u8], decoded: &Option<Vec<u8>>) {
    if let Some(d) = decoded {
        let bare = &seg[..seg.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1)];
        assert_eq!(URL.encode(d).as_bytes(), bare, "a second spelling of {d:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mut expected: [Option<Vec<u8>>; 3] = [None, None, None];
    let token = if inp.chance(128) {
        let parts: Vec<_> = (0..3).map(|_| segment(&mut inp)).collect();
        let mut token = Vec::new();
        for (i, (text, bytes)) in parts.into_iter().enumerate() {
            if i > 0 {
                token.push(b'.');
            }
            token.extend_from_slice(&text);
            expected[i] = bytes;
        }
        token
    } else {
        inp.rest().to_vec()
    };
    let dots = token.iter().filter(|&&b| b == b'.').count();
    let split = jose::split(&token);
    assert_eq!(split.is_some(), dots >= 2);
    if let Some(c) = &split {
        let last = token.iter().rposition(|&b| b == b'.').expect("two dots");
        let first = token.iter().position(|&b| b == b'.').expect("two dots");
        assert_eq!(c.signing_input_len, last);
        assert_eq!(c.payload_segment_empty, first + 1 == last);
        check_decoded(&token[..first], &c.header);
        check_decoded(&token[first + 1..last], &c.payload);
        check_decoded(&token[last + 1..], &c.signature);
        if dots == 2 {
            // A built token's encoded segments decode to what was encoded.
            for (want, got) in expected.iter().zip([&c.header, &c.payload, &c.signature]) {
                if let Some(want) = want {
                    assert_eq!(got.as_ref(), Some(want));
                }
            }
        }
    }
    let copies = if inp.chance(16) { PARALLEL_MIN + 1 } else { 2 };
    let batch: Vec<&[u8]> = (0..copies).map(|_| token.as_slice()).collect();
    assert!(jose::split_many(&batch).iter().all(|c| *c == split));
});
