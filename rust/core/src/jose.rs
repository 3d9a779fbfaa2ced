//! Compact JSON Web Signatures (RFC 7515 §7.1) split and base64url-decoded as PyJWT 2.x
//! reads them, for `hopgate.jwt`: the part of decoding a token that needs no JSON, done for
//! a whole batch at once (on all cores above [`PARALLEL_MIN`] tokens).
//!
//! The split is PyJWT's: the signature is what follows the last `.`, the header what
//! precedes the first `.` of the rest, and the payload everything between (dots included,
//! which then fail as base64url). Each segment is decoded on its own and its failure kept
//! apart, so that the caller can raise the first error in PyJWT's order (header, header
//! JSON, payload unless RFC 7797's `b64: false` leaves it undecoded, signature).

use base64::Engine;
use rayon::prelude::*;

/// Tokens below this many are split on the calling thread (rayon's hand-off costs more than
/// splitting a few hundred bytes).
pub const PARALLEL_MIN: usize = 64;

/// A token split at its dots, each segment decoded, or `None` where the segment is not
/// base64url as PyJWT accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compact {
    /// Length of the signing input: the token up to (not including) its last `.`.
    pub signing_input_len: usize,
    /// The header segment decoded (its JSON is the caller's to parse).
    pub header: Option<Vec<u8>>,
    /// The payload segment decoded (`None`: not base64url). Unused when the header says
    /// `b64: false`: then only [`Compact::payload_segment_empty`] counts.
    pub payload: Option<Vec<u8>>,
    /// Whether the payload segment is empty (RFC 7797's detached form requires it).
    pub payload_segment_empty: bool,
    /// The signature segment decoded.
    pub signature: Option<Vec<u8>>,
}

/// One base64url segment: the URL-safe alphabet, unpadded or padded with one or two `=` to
/// a multiple of four characters; the unused low bits of the last character zero (so every
/// byte string has one spelling). `None` for anything else (`+`, `/`, whitespace, a lone
/// last character, stray bits, three `=`, padding that does not complete a quantum).
pub fn base64url(segment: &[u8]) -> Option<Vec<u8>> {
    let body_len = segment.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let padding = segment.len() - body_len;
    if padding > 2 || (padding > 0 && !segment.len().is_multiple_of(4)) {
        return None;
    }
    // The engine refuses characters outside the alphabet, a body of 4k + 1 characters and
    // non-zero trailing bits (its default configuration), and any `=` left in the body.
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&segment[..body_len]).ok()
}

/// Splits and decodes one token; `None` when it has fewer than two dots.
pub fn split(token: &[u8]) -> Option<Compact> {
    let last = token.iter().rposition(|&b| b == b'.')?;
    let signing_input = &token[..last];
    let first = signing_input.iter().position(|&b| b == b'.')?;
    let payload_segment = &signing_input[first + 1..];
    Some(Compact {
        signing_input_len: last,
        header: base64url(&signing_input[..first]),
        payload: base64url(payload_segment),
        payload_segment_empty: payload_segment.is_empty(),
        signature: base64url(&token[last + 1..]),
    })
}

/// [`split`] of every token, in order.
pub fn split_many(tokens: &[&[u8]]) -> Vec<Option<Compact>> {
    if tokens.len() < PARALLEL_MIN {
        tokens.iter().map(|t| split(t)).collect()
    } else {
        tokens.par_iter().map(|t| split(t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_takes_padding_that_completes_a_quantum() {
        assert_eq!(base64url(b"YQ"), Some(b"a".to_vec()));
        assert_eq!(base64url(b"YQ=="), Some(b"a".to_vec()));
        assert_eq!(base64url(b"YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64url(b""), Some(vec![]));
        assert_eq!(base64url(b"YQ="), None); // padded, not to a multiple of four
        assert_eq!(base64url(b"YQ==="), None);
        assert_eq!(base64url(b"===="), None);
    }

    #[test]
    fn base64url_refuses_other_alphabets_and_stray_bits() {
        assert_eq!(base64url(b"-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(base64url(b"+/8"), None);
        assert_eq!(base64url(b"YR"), None); // low bits set
        assert_eq!(base64url(b"Y"), None); // 4k + 1 characters
        assert_eq!(base64url(b"Y Q"), None);
        assert_eq!(base64url(b"Y=Q"), None);
    }

    #[test]
    fn split_is_pyjwts() {
        assert_eq!(split(b"a.b"), None);
        assert_eq!(split(b"abc"), None);
        let c = split(b"YQ.a.b.YQ").unwrap(); // dots in the payload
        assert_eq!(
            (c.signing_input_len, c.header, c.payload, c.signature),
            (6, Some(b"a".to_vec()), None, Some(b"a".to_vec()))
        );
        let c = split(b"YQ..").unwrap();
        assert!(c.payload_segment_empty);
        assert_eq!((c.payload, c.signature), (Some(vec![]), Some(vec![])));
    }

    #[test]
    fn split_many_keeps_order_on_both_paths() {
        let tokens: Vec<Vec<u8>> =
            (0..PARALLEL_MIN * 2).map(|i| format!("YQ.{}.YQ", "YQ".repeat(i % 3)).into_bytes()).collect();
        for n in [3, tokens.len()] {
            let refs: Vec<&[u8]> = tokens[..n].iter().map(|t| t.as_slice()).collect();
            let out = split_many(&refs);
            for (t, c) in refs.iter().zip(out) {
                assert_eq!(Some(c.unwrap()), split(t));
            }
        }
    }
}
