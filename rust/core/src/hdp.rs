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
    let root_signature = member(record, "signature")?;
    let root_text = text(root_signature, "value")?;
    let hops = match member(record, "chain")? {
        Json::Array(hops) => hops,
        _ => return Err(Error::input("record", "\"chain\" is not an array")),
    };
    let mut messages = Vec::with_capacity(hops.len() + 1);
    let mut signatures = Vec::with_capacity(hops.len() + 1);

    // The root: the members in canonical (sorted) order, written out directly.
    let mut root = b"{\"chain\":[]".to_vec();
    for name in ["hdp", "header", "principal", "scope"] {
        root.extend_from_slice(b",\"");
        root.extend_from_slice(name.as_bytes());
        root.extend_from_slice(b"\":");
        jcs::write_canonical(member(record, name)?, &mut root).map_err(canonical_error)?;
    }
    root.push(b'}');
    messages.push(root);
    let is_ed25519 = matches!(root_signature.get("alg"), Some(Json::String(alg)) if alg == "Ed25519");
    signatures.push(if is_ed25519 { signature(root_text) } else { None });

    // Hop i's message is the shared prefix `[root_text,hop_1,...,hop_{i-1}` plus hop i
    // unsigned: each hop is written in canonical form once, signed and unsigned.
    let mut prefix = vec![b'['];
    jcs::write_canonical(&Json::String(root_text.to_owned()), &mut prefix).map_err(canonical_error)?;
    for hop in hops {
        let Json::Object(members) = hop else {
            return Err(Error::input("record", "a hop is not an object"));
        };
        let mut message = prefix.clone();
        message.push(b',');
        jcs::write_object(members.iter().filter(|(k, _)| k != "hop_signature"), &mut message)
            .map_err(canonical_error)?;
        message.push(b']');
        messages.push(message);
        signatures.push(signature(text(hop, "hop_signature")?));
        prefix.push(b',');
        jcs::write_canonical(hop, &mut prefix).map_err(canonical_error)?;
    }
    Ok(Signed { messages, signatures })
}

/// For each record, the verdict on each of its signatures (root first, then each hop), all
/// of them checked against `public_key` in one batch; or the record's structural error.
pub fn verify_records(records: &[Json], public_key: &[u8]) -> Vec<Result<Vec<bool>>> {
    let signed: Vec<Result<Signed>> = records.iter().map(signed).collect();
    let items: Vec<SigItem<'_>> = signed
        .iter()
        .flatten()
        .flat_map(|s| s.messages.iter().zip(&s.signatures))
        .filter_map(|(msg, sig)| Some(SigItem { msg: Message::plain(msg), sig: sig.as_ref()?, pk: public_key }))
        .collect();
    let mut verdicts = sig::verify_batch_with(&items, Rule::Openssl).into_iter();
    signed
        .into_iter()
        .map(|s| {
            let s = s?;
            Ok(s.signatures.iter().map(|sig| sig.is_some() && verdicts.next().unwrap_or(false)).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn structural_errors_name_the_member() {
        let record = Json::Object(vec![("chain".into(), Json::Array(vec![]))]);
        let error = signed(&record).unwrap_err();
        assert!(error.to_string().contains("\"signature\""), "{error}");
    }
}
