//! HDP provenance records (the `hdp` 0.1 format of the HDP SDKs): what each signature of a
//! record signs, and every signature of many records checked in one batch.
//!
//! A record's issuer signs its root, `{hdp, header, principal, scope, chain: []}` in
//! canonical JSON ([`crate::jcs`]), and each hop of its `chain`: hop `i` signs the canonical
//! JSON array of the root signature's text followed by hops `1..i`, hop `i` without its own
//! `hop_signature` member. Signatures are 86-character base64url texts (unpadded; the four
//! unused bits of the last character are ignored, as the SDKs' decoders ignore them) and are
//! judged by the rule of the SDKs' Ed25519 library, [`Rule::Openssl`].
//!
//! Which records are well formed (the SDKs' input validation) and in which order their
//! failures are reported are the caller's: this module only needs the members it reads.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, Engine};

use crate::jcs::{self, Json};
use crate::sig::{self, Message, Rule, SigItem};
use crate::{Error, Result};

/// The unpadded base64url of the SDKs' decoders: stray bits in the last character allowed.
const SIGNATURE_TEXT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// The messages of one record, and the signature each must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The root's message, then hop 1's, hop 2's, ...
    pub messages: Vec<Vec<u8>>,
    /// The decoded signature of each message; `None` where the text is not one (wrong
    /// alphabet or length), or, for the root, where `signature.alg` is not `"Ed25519"`.
    pub signatures: Vec<Option<[u8; 64]>>,
}

fn member<'a>(value: &'a Json, name: &'static str) -> Result<&'a Json> {
    value.get(name).ok_or_else(|| Error::input("record", format!("no member {name:?}")))
}

fn text<'a>(value: &'a Json, name: &'static str) -> Result<&'a str> {
    match member(value, name)? {
        Json::String(s) => Ok(s),
        _ => Err(Error::input("record", format!("{name:?} is not a string"))),
    }
}

fn canonical_error(error: jcs::CanonicalError) -> Error {
    Error::input("record", error.to_string())
}

fn signature(text: &str) -> Option<[u8; 64]> {
    if text.len() != 86 {
        return None;
    }
    SIGNATURE_TEXT.decode(text).ok()?.try_into().ok()
}

/// What each signature of `record` signs.
pub fn signed(record: &Json) -> Result<Signed> {
    let mut out = Signed { messages: Vec::new(), signatures: Vec::new() };
    each_signed(record, &mut |message, signature| {
        out.messages.push(message);
        out.signatures.push(signature);
    })?;
    Ok(out)
}

/// Calls `f` with each message of `record` and the signature it must carry, the root's
/// first, one at a time (a record's messages together grow with the square of its hops).
fn each_signed(record: &Json, f: &mut dyn FnMut(Vec<u8>, Option<[u8; 64]>)) -> Result<()> {
    let root_signature = member(record, "signature")?;
    let root_text = text(root_signature, "value")?;
    let hops = match member(record, "chain")? {
        Json::Array(hops) => hops,
        _ => return Err(Error::input("record", "\"chain\" is not an array")),
    };

    // The root: the members in canonical (sorted) order, written out directly.
    let mut root = b"{\"chain\":[]".to_vec();
    for name in ["hdp", "header", "principal", "scope"] {
        root.extend_from_slice(b",\"");
        root.extend_from_slice(name.as_bytes());
        root.extend_from_slice(b"\":");
        jcs::write_canonical(member(record, name)?, &mut root).map_err(canonical_error)?;
    }
    root.push(b'}');
    let is_ed25519 = matches!(root_signature.get("alg"), Some(Json::String(alg)) if alg == "Ed25519");
    f(root, if is_ed25519 { signature(root_text) } else { None });

    // Hop i's message is the shared prefix `[root_text,hop_1,...,hop_{i-1}` plus hop i
    // unsigned: each hop is written in canonical form once, signed and unsigned.
    let mut prefix = vec![b'['];
    jcs::write_canonical(&Json::String(root_text.to_owned()), &mut prefix).map_err(canonical_error)?;
    for hop in hops {
        let Json::Object(members) = hop else {
            return Err(Error::input("record", "a hop is not an object"));
        };
        let sig = signature(text(hop, "hop_signature")?);
        let mut message = prefix.clone();
        message.push(b',');
        jcs::write_object(members.iter().filter(|(k, _)| k != "hop_signature"), &mut message)
            .map_err(canonical_error)?;
        message.push(b']');
        f(message, sig);
        prefix.push(b',');
        jcs::write_canonical(hop, &mut prefix).map_err(canonical_error)?;
    }
    Ok(())
}

/// Messages held at once, in bytes, before they are checked: a record of many hops signs
/// messages whose sizes add up with the square of its hops, so they are checked as they
/// come, in batches of about this much.
pub const BATCH_BYTES: usize = 32 << 20;

/// Messages waiting for their signatures to be checked, and where each verdict goes.
#[derive(Default)]
struct Pending {
    messages: Vec<Vec<u8>>,
    signatures: Vec<[u8; 64]>,
    places: Vec<(usize, usize)>,
    bytes: usize,
}

impl Pending {
    /// Checks every waiting signature against `key` (one batch, on all cores) and writes
    /// each verdict to its record's place; a record found malformed meanwhile keeps its error.
    fn check(&mut self, key: &[u8], out: &mut [Result<Vec<bool>>]) {
        let items: Vec<SigItem<'_>> = self
            .messages
            .iter()
            .zip(&self.signatures)
            .map(|(m, s)| SigItem { msg: Message::plain(m), sig: s, pk: key })
            .collect();
        let verdicts = sig::verify_batch_with(&items, Rule::Openssl);
        for (&(record, slot), ok) in self.places.iter().zip(verdicts) {
            if let Ok(v) = &mut out[record] {
                v[slot] = ok;
            }
        }
        *self = Pending::default();
    }
}

/// For each record, the verdict on each of its signatures (root first, then each hop), all
/// of them checked against `public_key` in batches of about [`BATCH_BYTES`] of messages;
/// or the record's structural error.
pub fn verify_records(records: &[Json], public_key: &[u8]) -> Vec<Result<Vec<bool>>> {
    verify_records_in(records, public_key, BATCH_BYTES)
}

fn verify_records_in(records: &[Json], public_key: &[u8], batch_bytes: usize) -> Vec<Result<Vec<bool>>> {
    let mut out: Vec<Result<Vec<bool>>> = Vec::with_capacity(records.len());
    let mut pending = Pending::default();
    for (r, record) in records.iter().enumerate() {
        let hops = match record.get("chain") {
            Some(Json::Array(hops)) => hops.len(),
            _ => 0,
        };
        out.push(Ok(vec![false; hops + 1]));
        let mut slot = 0;
        let shape = each_signed(record, &mut |message, signature| {
            if let Some(signature) = signature {
                pending.bytes += message.len();
                pending.messages.push(message);
                pending.signatures.push(signature);
                pending.places.push((r, slot));
            }
            slot += 1;
            if pending.bytes >= batch_bytes {
                pending.check(public_key, &mut out);
            }
        });
        if let Err(e) = shape {
            out[r] = Err(e);
        }
    }
    pending.check(public_key, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn signature_text_ignores_the_last_characters_unused_bits() {
        let zeros = "A".repeat(85);
        assert_eq!(signature(&format!("{zeros}A")), Some([0; 64]));
        // 'P' sets only bits the 64th byte does not use.
        assert_eq!(signature(&format!("{zeros}P")), Some([0; 64]));
        assert_eq!(signature(&format!("{zeros}Q")).map(|s| s[63]), Some(1));
        assert_eq!(signature(&format!("{zeros}+")), None);
        assert_eq!(signature(&zeros), None);
    }

    /// A record of `hops` hops signed by `key`, hop `bad` (if any) with a wrong signature.
    fn record(key: &sig::SigningKey, hops: usize, bad: Option<usize>) -> Json {
        let text = |s: [u8; 64]| Json::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s));
        let mut members = vec![
            ("hdp".to_string(), Json::String("0.1".into())),
            ("header".to_string(), Json::Object(vec![("n".into(), Json::Number(hops as f64))])),
            ("principal".to_string(), Json::Null),
            ("scope".to_string(), Json::Array(vec![])),
            ("chain".to_string(), Json::Array(vec![])),
            (
                "signature".to_string(),
                Json::Object(vec![("alg".into(), Json::String("Ed25519".into())), ("value".into(), text([0; 64]))]),
            ),
        ];
        let root = signed(&Json::Object(members.clone())).unwrap().messages.remove(0);
        members[5].1 = Json::Object(vec![
            ("alg".into(), Json::String("Ed25519".into())),
            ("value".into(), text(key.sign(Message::plain(&root)))),
        ]);
        for i in 0..hops {
            let hop =
                |sig| Json::Object(vec![("seq".into(), Json::Number(i as f64 + 1.0)), ("hop_signature".into(), sig)]);
            let Json::Array(chain) = &mut members[4].1 else { unreachable!() };
            chain.push(hop(text([0; 64])));
            let message = signed(&Json::Object(members.clone())).unwrap().messages.pop().unwrap();
            let mut sig = key.sign(Message::plain(&message));
            if bad == Some(i) {
                sig[0] ^= 1;
            }
            let Json::Array(chain) = &mut members[4].1 else { unreachable!() };
            *chain.last_mut().unwrap() = hop(text(sig));
        }
        Json::Object(members)
    }

    #[test]
    fn records_checked_in_many_small_batches_answer_as_in_one() {
        let key = sig::SigningKey::from_seed(&[7; 32]);
        let records = vec![record(&key, 6, None), record(&key, 9, Some(4)), Json::Null, record(&key, 0, None)];
        let one = verify_records(&records, key.public_key());
        assert_eq!(one[0].as_ref().unwrap(), &vec![true; 7]);
        let mut want = vec![true; 10];
        want[5] = false;
        assert_eq!(one[1].as_ref().unwrap(), &want);
        assert!(one[2].is_err());
        assert_eq!(one[3].as_ref().unwrap(), &vec![true]);
        for batch_bytes in [1, 100, 1000] {
            assert_eq!(verify_records_in(&records, key.public_key(), batch_bytes), one);
        }
    }

    #[test]
    fn structural_errors_name_the_member() {
        let record = Json::Object(vec![("chain".into(), Json::Array(vec![]))]);
        let error = signed(&record).unwrap_err();
        assert!(error.to_string().contains("\"signature\""), "{error}");
    }
}
