//! The signature layer of Biscuit tokens (format v2/v3, as biscuit-auth 6 reads them):
//! the protobuf container decoded, and every signature checked, exactly as
//! `Biscuit::from_bytes(bytes, root_public_key)` does before it reads any Datalog.
//!
//! What is checked, in biscuit-auth's order (the first failure is the answer):
//!
//! 1. The container decodes as prost 0.10 decodes `schema.proto`'s `Biscuit`: the same
//!    varints (at most ten bytes, the tenth below 2), keys (wire types 0 to 5, field 0
//!    refused), unknown fields skipped (groups matched by tag, at most
//!    [`RECURSION_LIMIT`] deep), repeated occurrences of a singular message merged,
//!    of a bytes or integer field the last one kept, `required` fields defaulted when
//!    absent.
//! 2. Keys, block by block: the authority's next key, then each block's next key and
//!    its external signature (only in a block of signature version 1, and never on the
//!    authority), then the proof (a next secret must be 32 bytes). An Ed25519 key must
//!    be 32 bytes that decompress; an algorithm other than Ed25519 and P-256 is refused.
//! 3. Signatures, in block order: the authority's by the root key, each block's by the
//!    previous block's next key (payload version 0 or 1, [`payload_v0`] and
//!    [`payload_v1`]), each external signature by its own key over the version-1
//!    external payload; signatures must be 64 bytes. Then the proof: a next secret whose
//!    public key is the last next key (unsealed), or a final signature by the last next
//!    key over the last block (sealed).
//!
//! Every Ed25519 signature is judged by ed25519-dalek's `verify_strict`, which
//! biscuit-auth calls ([`sig::verify_dalek_strict`]). That rule is cofactorless, so
//! the signatures of a batch are checked item by item, all of them at once on rayon's
//! pool, and each token's answer is then read in its own order.
//!
//! P-256 (secp256r1) keys are not verified here: a token that reaches one, at the point
//! where biscuit-auth would parse it, is answered [`FailureKind::UnsupportedAlgorithm`],
//! never guessed either way. Errors that biscuit-auth meets before that point are
//! reported as it reports them.
//!
//! Not checked: the Datalog inside the blocks (symbols, facts, rules, their versions),
//! which `from_bytes` decodes after this layer. A token that passes here can still be
//! refused there, but only if the holders of its keys signed such content.

use rayon::prelude::*;

use crate::key_cache;
use crate::sig::{self, Message, SigItem, SigningKey};

/// prost's limit on nested messages and groups: a field skipped inside this many
/// nested groups or messages is refused ("recursion limit reached").
pub const RECURSION_LIMIT: u32 = 100;
/// The longest varint protobuf allows.
pub const MAX_VARINT_LEN: usize = 10;
/// `schema.proto`'s `PublicKey.Algorithm.Ed25519`.
pub const ALGORITHM_ED25519: i32 = 0;
/// `schema.proto`'s `PublicKey.Algorithm.SECP256R1` (P-256).
pub const ALGORITHM_SECP256R1: i32 = 1;
/// Below this many tokens the containers are decoded and their keys parsed on the calling
/// thread. A token's plan costs 6 µs or more (a key decompressed, or an unsealed token's
/// secret turned into its public key, about 13 µs), against about 10 µs for handing a call
/// to rayon's pool. Measured on two cores with one-block tokens: with 64 here a batch of 63
/// took 35 µs a token and one of 64 took 27; with 4, a batch of 4 takes 43 µs a token against
/// 46 on the calling thread, and from 8 on a batch reaches the 26-28 µs of large ones when
/// the second core is free.
pub const PARALLEL_MIN: usize = 4;

const SIGNATURE_LEN: usize = sig::SIGNATURE_LEN;

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The bytes do not decode as biscuit-auth decodes a token, or a key, a signature or
    /// a block version in it has a form biscuit-auth refuses.
    Format,
    /// A signature does not verify, or the proof does not match the last block.
    Signature,
    /// The token uses an algorithm this verifier does not check (P-256).
    UnsupportedAlgorithm,
}

impl FailureKind {
    /// The kind's name, as the Python API spells it.
    pub const fn name(self) -> &'static str {
        match self {
            FailureKind::Format => "format",
            FailureKind::Signature => "signature",
            FailureKind::UnsupportedAlgorithm => "unsupported_algorithm",
        }
    }
}

/// A refused token: the kind and a sentence naming the block and what failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub kind: FailureKind,
    /// Where and what, for people.
    pub message: String,
}

impl Failure {
    fn format(message: impl Into<String>) -> Self {
        Failure { kind: FailureKind::Format, message: message.into() }
    }
    fn signature(message: impl Into<String>) -> Self {
        Failure { kind: FailureKind::Signature, message: message.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A token's answer: its revocation ids (the signature of each block, authority first,
/// as biscuit-auth's `revocation_identifiers` gives them), borrowed from the token, or
/// why it was refused.
pub type Verdict<'a> = Result<Vec<&'a [u8]>, Failure>;

// ---------------------------------------------------------------------------------
// The protobuf container, decoded as prost 0.10 decodes it.

/// A decoding error: what and at which byte offset of the token.
#[derive(Debug)]
struct DecodeError {
    what: &'static str,
    offset: usize,
}

type Decoded<T> = Result<T, DecodeError>;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over a message's bytes. Offsets are reported relative to the whole token.
#[derive(Debug)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn error(&self, what: &'static str) -> DecodeError {
        DecodeError { what, offset: self.base + self.pos }
    }

    /// LEB128, at most [`MAX_VARINT_LEN`] bytes, the tenth below 2 (prost's check
    /// against values past `u64::MAX`). Non-minimal encodings are accepted, as prost does.
    fn varint(&mut self) -> Decoded<u64> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let Some(&byte) = self.buf.get(self.pos + i) else { return Err(self.error("invalid varint")) };
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == MAX_VARINT_LEN - 1 && byte >= 2 {
                    return Err(self.error("invalid varint"));
                }
                self.pos += i + 1;
                return Ok(value);
            }
        }
        Err(self.error("invalid varint"))
    }

    /// A field key: `(field number, wire type)`.
    fn key(&mut self) -> Decoded<(u32, u8)> {
        let start = self.pos;
        let key = self.varint()?;
        let Ok(key) = u32::try_from(key) else {
            return Err(DecodeError { what: "invalid key value", offset: self.base + start });
        };
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return Err(DecodeError { what: "invalid wire type value", offset: self.base + start });
        }
        let tag = key >> 3;
        if tag == 0 {
            return Err(DecodeError { what: "invalid tag value: 0", offset: self.base + start });
        }
        Ok((tag, wire))
    }

    /// The next `len` bytes, and their offset in the token.
    fn take(&mut self, len: u64) -> Decoded<(&'a [u8], usize)> {
        let left = (self.buf.len() - self.pos) as u64;
        if len > left {
            return Err(self.error("buffer underflow"));
        }
        let start = self.pos;
        self.pos += len as usize; // len <= left, which fits in usize
        Ok((&self.buf[start..self.pos], self.base + start))
    }

    /// A length-delimited field's contents, and their offset in the token.
    fn delimited(&mut self) -> Decoded<(&'a [u8], usize)> {
        let len = self.varint()?;
        self.take(len)
    }

    /// Skips an unknown field as prost's `skip_field` does; `depth_left` is prost's
    /// recursion budget at this point.
    fn skip(&mut self, tag: u32, wire: u8, depth_left: u32) -> Decoded<()> {
        if depth_left == 0 {
            return Err(self.error("recursion limit reached"));
        }
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            FIXED32 => self.take(4).map(drop),
            LEN => self.delimited().map(drop),
            START_GROUP => loop {
                let (inner_tag, inner_wire) = self.key()?;
                if inner_wire == END_GROUP {
                    if inner_tag != tag {
                        return Err(self.error("unexpected end group tag"));
                    }
                    return Ok(());
                }
                self.skip(inner_tag, inner_wire, depth_left - 1)?;
            },
            _ => Err(self.error("unexpected end group tag")),
        }
    }

    /// Checks a known field's wire type.
    fn expect(&self, wire: u8, expected: u8) -> Decoded<()> {
        if wire == expected {
            Ok(())
        } else {
            Err(self.error("invalid wire type"))
        }
    }

    /// A nested message's bytes (prost checks its recursion budget before entering).
    fn message(&mut self, wire: u8, depth_left: u32) -> Decoded<Reader<'a>> {
        self.expect(wire, LEN)?;
        if depth_left == 0 {
            return Err(self.error("recursion limit reached"));
        }
        let (bytes, offset) = self.delimited()?;
        Ok(Reader::new(bytes, offset))
    }
}

/// `PublicKey { required Algorithm algorithm = 1; required bytes key = 2; }`
#[derive(Clone, Copy, Debug, Default)]
struct Key<'a> {
    algorithm: i32,
    key: &'a [u8],
}

/// `ExternalSignature { required bytes signature = 1; required PublicKey publicKey = 2; }`
#[derive(Clone, Copy, Debug, Default)]
struct External<'a> {
    signature: &'a [u8],
    public_key: Key<'a>,
}

/// `SignedBlock`, fields 1 to 5.
#[derive(Clone, Copy, Debug, Default)]
struct SignedBlock<'a> {
    block: &'a [u8],
    next_key: Key<'a>,
    signature: &'a [u8],
    external: Option<External<'a>>,
    version: Option<u32>,
}

/// `Proof { oneof Content { bytes nextSecret = 1; bytes finalSignature = 2; } }`
#[derive(Clone, Copy, Debug)]
enum Proof<'a> {
    NextSecret(&'a [u8]),
    FinalSignature(&'a [u8]),
}

/// `Biscuit`: the authority merged from all its occurrences, each block's message
/// bytes (decoded again when used: a token of many tiny blocks costs a slice each, not
/// a decoded block each), and the proof.
#[derive(Debug, Default)]
struct Container<'a> {
    authority: SignedBlock<'a>,
    blocks: Vec<Reader<'a>>,
    proof: Option<Proof<'a>>,
}

fn merge_key<'a>(key: &mut Key<'a>, mut r: Reader<'a>, depth: u32) -> Decoded<()> {
    while !r.at_end() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                r.expect(wire, VARINT)?;
                key.algorithm = r.varint()? as i32; // prost's int32: truncated
            }
            2 => {
                r.expect(wire, LEN)?;
                key.key = r.delimited()?.0;
            }
            _ => r.skip(tag, wire, depth)?,
        }
    }
    Ok(())
}

fn merge_external<'a>(ext: &mut External<'a>, mut r: Reader<'a>, depth: u32) -> Decoded<()> {
    while !r.at_end() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                r.expect(wire, LEN)?;
                ext.signature = r.delimited()?.0;
            }
            2 => merge_key(&mut ext.public_key, r.message(wire, depth)?, depth - 1)?,
            _ => r.skip(tag, wire, depth)?,
        }
    }
    Ok(())
}

fn merge_signed_block<'a>(b: &mut SignedBlock<'a>, mut r: Reader<'a>, depth: u32) -> Decoded<()> {
    while !r.at_end() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                r.expect(wire, LEN)?;
                b.block = r.delimited()?.0;
            }
            2 => merge_key(&mut b.next_key, r.message(wire, depth)?, depth - 1)?,
            3 => {
                r.expect(wire, LEN)?;
                b.signature = r.delimited()?.0;
            }
            4 => {
                let inner = r.message(wire, depth)?;
                merge_external(b.external.get_or_insert_with(External::default), inner, depth - 1)?;
            }
            5 => {
                r.expect(wire, VARINT)?;
                b.version = Some(r.varint()? as u32); // prost's uint32: truncated
            }
            _ => r.skip(tag, wire, depth)?,
        }
    }
    Ok(())
}

fn merge_proof<'a>(proof: &mut Option<Proof<'a>>, mut r: Reader<'a>, depth: u32) -> Decoded<()> {
    while !r.at_end() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                r.expect(wire, LEN)?;
                *proof = Some(Proof::NextSecret(r.delimited()?.0));
            }
            2 => {
                r.expect(wire, LEN)?;
                *proof = Some(Proof::FinalSignature(r.delimited()?.0));
            }
            _ => r.skip(tag, wire, depth)?,
        }
    }
    Ok(())
}

fn decode_container(token: &[u8]) -> Decoded<Container<'_>> {
    let mut c = Container::default();
    let mut r = Reader::new(token, 0);
    let depth = RECURSION_LIMIT;
    // A `Proof` message seen at all, even empty, is a `Proof` with no content.
    while !r.at_end() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                r.expect(wire, VARINT)?;
                r.varint()?; // rootKeyId: a key provider's concern, not a fixed root key's
            }
            2 => merge_signed_block(&mut c.authority, r.message(wire, depth)?, depth - 1)?,
            3 => {
                let inner = r.message(wire, depth)?;
                // Decoded now for its errors (prost decodes every block before anything
                // else is looked at), kept as bytes.
                let kept = Reader::new(inner.buf, inner.base);
                merge_signed_block(&mut SignedBlock::default(), inner, depth - 1)?;
                c.blocks.push(kept);
            }
            4 => merge_proof(&mut c.proof, r.message(wire, depth)?, depth - 1)?,
            _ => r.skip(tag, wire, depth)?,
        }
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------
// Signed payloads (biscuit-auth's `crypto` module, written from SPECIFICATIONS.md).

/// Block signature version 0: `block || algorithm (i32 LE) || next key`, with the
/// external signature, if any, between the block and the algorithm.
pub fn payload_v0(out: &mut Vec<u8>, block: &[u8], external_sig: Option<&[u8]>, algorithm: i32, next_key: &[u8]) {
    out.extend_from_slice(block);
    if let Some(s) = external_sig {
        out.extend_from_slice(s);
    }
    out.extend_from_slice(&algorithm.to_le_bytes());
    out.extend_from_slice(next_key);
}

/// Block signature version 1: tagged fields, the previous block's signature for every
/// block but the authority (`previous: None`), and the external signature if any.
pub fn payload_v1(
    out: &mut Vec<u8>,
    block: &[u8],
    algorithm: i32,
    next_key: &[u8],
    previous: Option<&[u8]>,
    external_sig: Option<&[u8]>,
) {
    out.extend_from_slice(b"\0BLOCK\0\0VERSION\0");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(b"\0PAYLOAD\0");
    out.extend_from_slice(block);
    out.extend_from_slice(b"\0ALGORITHM\0");
    out.extend_from_slice(&algorithm.to_le_bytes());
    out.extend_from_slice(b"\0NEXTKEY\0");
    out.extend_from_slice(next_key);
    if let Some(p) = previous {
        out.extend_from_slice(b"\0PREVSIG\0");
        out.extend_from_slice(p);
    }
    if let Some(s) = external_sig {
        out.extend_from_slice(b"\0EXTERNALSIG\0");
        out.extend_from_slice(s);
    }
}

/// What a third party signs (external signature, version 1): the block and the
/// signature of the block before it.
pub fn payload_external(out: &mut Vec<u8>, block: &[u8], previous: &[u8]) {
    out.extend_from_slice(b"\0EXTERNAL\0\0VERSION\0");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(b"\0PAYLOAD\0");
    out.extend_from_slice(block);
    out.extend_from_slice(b"\0PREVSIG\0");
    out.extend_from_slice(previous);
}

/// What the final signature of a sealed token signs: the last block, its next key
/// and its signature.
pub fn payload_seal(out: &mut Vec<u8>, block: &[u8], algorithm: i32, next_key: &[u8], signature: &[u8]) {
    out.extend_from_slice(block);
    out.extend_from_slice(&algorithm.to_le_bytes());
    out.extend_from_slice(next_key);
    out.extend_from_slice(signature);
}

// ---------------------------------------------------------------------------------
// From container to a list of checks.

/// Which signature a step checks: named in a failure only, so that the success path
/// formats no text.
#[derive(Clone, Copy, Debug)]
enum Which {
    /// Block `i`'s own signature (0: the authority's).
    Block(usize),
    /// Block `i`'s external (third-party) signature.
    External(usize),
    /// The final signature of a sealed token.
    Seal,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Which::Block(i) => write!(f, "{}'s signature", BlockName(*i)),
            Which::External(i) => write!(f, "{}'s external signature", BlockName(*i)),
            Which::Seal => f.write_str("the proof's final signature (sealed token)"),
        }
    }
}

/// A block's name in messages: "the authority block", "block 2".
struct BlockName(usize);

impl std::fmt::Display for BlockName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("the authority block"),
            i => write!(f, "block {i}"),
        }
    }
}

/// One step of a token's verification, in biscuit-auth's order: signature `sig` by
/// `key` over `payload` (a range of the token's payload arena).
#[derive(Debug)]
struct Step<'a> {
    key: &'a [u8],
    sig: &'a [u8],
    payload: (usize, usize),
    which: Which,
}

/// A token reduced to its signature checks, or refused before any signature.
struct Plan<'a> {
    steps: Vec<Step<'a>>,
    /// What ends the token after the steps: `None` when they are all that is left.
    then: Option<Failure>,
    revocation_ids: Vec<&'a [u8]>,
    arena: Vec<u8>,
    /// Whether the token was decoded and its keys read: the next step is the root's.
    deserialized: bool,
}

/// A block after its keys were parsed: the block, its next key, its external key.
struct KeyedBlock<'a> {
    block: SignedBlock<'a>,
    next: &'a [u8],
    external_key: Option<&'a [u8]>,
}

/// An Ed25519 key as `PublicKey::from_proto` accepts it, or the failure; `block` and
/// `what` ("next key", "external key") name it.
fn ed25519_key<'a>(key: &Key<'a>, block: usize, what: &str) -> Result<&'a [u8], Failure> {
    let what = || format!("{}'s {what}", BlockName(block));
    match key.algorithm {
        ALGORITHM_ED25519 => {}
        ALGORITHM_SECP256R1 => {
            return Err(Failure {
                kind: FailureKind::UnsupportedAlgorithm,
                message: format!("{} is a P-256 (secp256r1) key, which this verifier does not check", what()),
            })
        }
        other => return Err(Failure::format(format!("{}: unexpected key algorithm {other}", what()))),
    }
    let Ok(bytes) = <&[u8; 32]>::try_from(key.key) else {
        return Err(Failure::format(format!("{}: an Ed25519 key must be 32 bytes, got {}", what(), key.key.len())));
    };
    if key_cache::decompress(bytes).is_none() {
        return Err(Failure::format(format!("{}: not the encoding of a point on the curve", what())));
    }
    Ok(key.key)
}

/// A failure at decoding, with prost's description and the offset.
fn decode_failure(e: DecodeError) -> Failure {
    Failure::format(format!("deserialization error at offset {}: {}", e.offset, e.what))
}

/// Decodes the container and lists the token's checks in biscuit-auth's order, up to
/// the first failure that needs no signature.
fn plan<'a>(token: &'a [u8], root: &'a [u8]) -> Plan<'a> {
    let mut p =
        Plan { steps: Vec::new(), then: None, revocation_ids: Vec::new(), arena: Vec::new(), deserialized: false };
    if let Err(f) = plan_into(token, root, &mut p) {
        p.then = Some(f);
    }
    p
}

fn plan_into<'a>(token: &'a [u8], root: &'a [u8], p: &mut Plan<'a>) -> Result<(), Failure> {
    let c = decode_container(token).map_err(decode_failure)?;

    // An unsealed token's next secret, as the public key it derives. The last block's next
    // key is then checked against it without decompressing it: the key a secret derives is
    // a canonical encoding of a curve point, so equal bytes decompress and the format check
    // has nothing to refuse (a key that differs is decompressed as any other). The last
    // key, fresh in every token, then never enters the process's key cache.
    let derived = match c.proof {
        Some(Proof::NextSecret(secret)) => {
            <&[u8; 32]>::try_from(secret).ok().map(|seed| *SigningKey::from_seed(seed).public_key())
        }
        _ => None,
    };
    let last = c.blocks.len();
    let next_key = |key: &Key<'a>, block: usize| -> Result<&'a [u8], Failure> {
        match derived {
            Some(d) if block == last && key.algorithm == ALGORITHM_ED25519 && key.key == d.as_slice() => Ok(key.key),
            _ => ed25519_key(key, block, "next key"),
        }
    };

    // Deserialization: keys and external signatures, block by block, then the proof.
    let authority_next = next_key(&c.authority.next_key, 0)?;
    if c.authority.external.is_some() {
        return Err(Failure::format("the authority block must not contain an external signature"));
    }
    let mut blocks: Vec<KeyedBlock<'a>> = Vec::with_capacity(c.blocks.len());
    for (i, r) in c.blocks.into_iter().enumerate() {
        let mut b = SignedBlock::default();
        merge_signed_block(&mut b, r, RECURSION_LIMIT - 1).map_err(decode_failure)?;
        let name = BlockName(i + 1);
        let next = next_key(&b.next_key, i + 1)?;
        let external_key = match &b.external {
            None => None,
            Some(_) if b.version != Some(1) => {
                return Err(Failure::format(format!(
                    "{name}: an external signature needs block signature version 1, got {}",
                    b.version.map_or("none".to_string(), |v| v.to_string())
                )))
            }
            Some(e) => Some(ed25519_key(&e.public_key, i + 1, "external key")?),
        };
        blocks.push(KeyedBlock { block: b, next, external_key });
    }
    let last_next = blocks.last().map_or(authority_next, |b| b.next);
    let proof = match c.proof {
        None => return Err(Failure::format("could not find proof")),
        Some(Proof::NextSecret(secret)) => {
            if secret.len() != 32 {
                return Err(Failure::format(format!(
                    "the proof's next secret: an Ed25519 private key must be 32 bytes, got {}",
                    secret.len()
                )));
            }
            Proof::NextSecret(secret)
        }
        Some(proof @ Proof::FinalSignature(_)) => proof,
    };

    // Verification, in order: each step a signature, or a failure that ends the list.
    p.deserialized = true;
    let authority = c.authority;
    p.revocation_ids.push(authority.signature);
    let verify = |p: &mut Plan<'a>, key: &'a [u8], sig: &'a [u8], which: Which, build: &dyn Fn(&mut Vec<u8>)| {
        if sig.len() != SIGNATURE_LEN {
            return Err(Failure::format(format!("{which}: a signature must be 64 bytes, got {}", sig.len())));
        }
        let start = p.arena.len();
        build(&mut p.arena);
        p.steps.push(Step { key, sig, payload: (start, p.arena.len()), which });
        Ok(())
    };
    let alg = ALGORITHM_ED25519;
    match authority.version.unwrap_or(0) {
        0 => verify(p, root, authority.signature, Which::Block(0), &|out| {
            payload_v0(out, authority.block, None, alg, authority_next)
        })?,
        1 => verify(p, root, authority.signature, Which::Block(0), &|out| {
            payload_v1(out, authority.block, alg, authority_next, None, None)
        })?,
        v => return Err(Failure::format(format!("the authority block: unsupported block version {v}"))),
    }
    let (mut current, mut previous) = (authority_next, authority.signature);
    for (i, KeyedBlock { block: b, next, external_key }) in blocks.iter().enumerate() {
        let name = BlockName(i + 1);
        p.revocation_ids.push(b.signature);
        let ext_sig = b.external.map(|e| e.signature);
        let which = Which::Block(i + 1);
        match b.version.unwrap_or(0) {
            0 => verify(p, current, b.signature, which, &|out| payload_v0(out, b.block, ext_sig, alg, next))?,
            1 => verify(p, current, b.signature, which, &|out| {
                payload_v1(out, b.block, alg, next, Some(previous), ext_sig)
            })?,
            v => return Err(Failure::format(format!("{name}: unsupported block version {v}"))),
        }
        if let (Some(ext_key), Some(e)) = (external_key, b.external) {
            verify(p, ext_key, e.signature, Which::External(i + 1), &|out| payload_external(out, b.block, previous))?;
        }
        current = next;
        previous = b.signature;
    }
    match proof {
        Proof::NextSecret(_) => {
            // `derived` is the secret's public key (32 bytes, checked above).
            if derived.as_ref().map(|d| d.as_slice()) != Some(last_next) {
                return Err(Failure::signature("the proof's next secret does not match the last block's next key"));
            }
        }
        Proof::FinalSignature(seal) => {
            let (block, signature) =
                blocks.last().map_or((authority.block, authority.signature), |b| (b.block.block, b.block.signature));
            verify(p, current, seal, Which::Seal, &|out| payload_seal(out, block, alg, last_next, signature))?;
        }
    }
    Ok(())
}

/// Every token decoded and its steps planned, on rayon's pool from [`PARALLEL_MIN`] tokens on.
fn plans<'a>(tokens: &[&'a [u8]], root: &'a [u8]) -> Vec<Plan<'a>> {
    if tokens.len() >= PARALLEL_MIN {
        tokens.par_iter().map(|t| plan(t, root)).collect()
    } else {
        tokens.iter().map(|t| plan(t, root)).collect()
    }
}

/// What [`verify_many`] answers when the root key is a P-256 (secp256r1) key, which this
/// verifier does not check: biscuit-auth decodes a token and reads its keys before the root
/// judges the authority block's signature, so a failure met by then stands; any other
/// token is answered [`FailureKind::UnsupportedAlgorithm`], never guessed.
pub fn verify_many_p256_root<'a>(tokens: &[&'a [u8]]) -> Vec<Verdict<'a>> {
    // The root is only read by the signature steps, which are not checked here.
    plans(tokens, &[])
        .into_iter()
        .map(|p| match p.then {
            Some(f) if !p.deserialized => Err(f),
            _ => Err(Failure {
                kind: FailureKind::UnsupportedAlgorithm,
                message: "the root key is a P-256 (secp256r1) key, which this verifier does not check".into(),
            }),
        })
        .collect()
}

/// Verifies the signature layer of one token against `root` (32 bytes, an Ed25519
/// public key); [`verify_many`] of one.
pub fn verify<'a>(token: &'a [u8], root: &'a [u8; 32]) -> Verdict<'a> {
    verify_many(&[token], root).pop().unwrap_or_else(|| Err(Failure::format("no answer")))
}

/// Verifies the signature layer of every token against `root`, as biscuit-auth 6's
/// `Biscuit::from_bytes(token, root)` does; `out[i]` answers `tokens[i]`.
///
/// The containers are decoded first (on rayon's pool from [`PARALLEL_MIN`] tokens on),
/// then every signature of every token is checked in one itemwise batch
/// ([`sig::verify_batch_dalek_strict`]), and each token's answer is the first failing
/// step in its own order. A root key that does not decompress is refused as
/// biscuit-auth's `PublicKey::from_bytes` refuses it, for every token.
pub fn verify_many<'a>(tokens: &[&'a [u8]], root: &'a [u8; 32]) -> Vec<Verdict<'a>> {
    if key_cache::decompress(root).is_none() {
        let f = Failure::format("the root public key is not the encoding of a point on the curve");
        return tokens.iter().map(|_| Err(f.clone())).collect();
    }
    let plans = plans(tokens, root);
    let items: Vec<SigItem<'_>> = plans
        .iter()
        .flat_map(|p| {
            p.steps.iter().map(move |Step { key, sig, payload, .. }| SigItem {
                msg: Message::plain(&p.arena[payload.0..payload.1]),
                sig,
                pk: key,
            })
        })
        .collect();
    let ok = sig::verify_batch_dalek_strict(&items);
    drop(items);
    let mut ok = ok.into_iter();
    plans
        .into_iter()
        .map(|p| {
            let mut failed = None;
            for step in &p.steps {
                let good = ok.next().unwrap_or(false);
                if failed.is_none() && !good {
                    failed = Some(Failure::signature(format!("{} does not verify", step.which)));
                }
            }
            match failed.or(p.then) {
                Some(f) => Err(f),
                None => Ok(p.revocation_ids),
            }
        })
        .collect()
}

/// Writing tokens, for the tests and the fuzz target (not part of the API).
#[doc(hidden)]
pub mod testing {
    use super::{payload_external, payload_seal, payload_v0, payload_v1};
    use crate::sig::{Message, SigningKey};

    /// A protobuf varint.
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field.
    pub fn field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
        varint(out, u64::from(tag) << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// A varint field.
    pub fn int_field(out: &mut Vec<u8>, tag: u32, v: u64) {
        varint(out, u64::from(tag) << 3);
        varint(out, v);
    }

    /// A `PublicKey` message: algorithm `alg`, the key's bytes.
    pub fn key_msg(alg: u64, key: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        int_field(&mut m, 1, alg);
        field(&mut m, 2, key);
        m
    }

    /// A token to write, from biscuit's specification.
    pub struct Recipe<'a> {
        /// The root key, which signs the authority block.
        pub root: &'a SigningKey,
        /// Block i's next key (the one that signs block i + 1, or the proof).
        pub keys: &'a [SigningKey],
        /// The third-party key of the block `third_party`.
        pub external: &'a SigningKey,
        /// Each block's data (as many as `keys`).
        pub blocks: &'a [Vec<u8>],
        /// The signature payload version of every block (a third-party block is always 1).
        pub version: u32,
        /// The block (not the authority) that carries an external signature.
        pub third_party: Option<usize>,
        /// Sealed (a final signature) or not (the last next key's secret).
        pub sealed: bool,
        /// A `rootKeyId` field first, when given.
        pub root_key_id: Option<u64>,
    }

    /// The token's bytes, and its block signatures (its revocation ids).
    pub fn build(r: &Recipe<'_>) -> (Vec<u8>, Vec<[u8; 64]>) {
        let mut token = Vec::new();
        if let Some(id) = r.root_key_id {
            int_field(&mut token, 1, id);
        }
        let mut sigs: Vec<[u8; 64]> = Vec::new();
        let mut signer = r.root;
        for (i, (next, data)) in r.keys.iter().zip(r.blocks).enumerate() {
            let ext = (r.third_party == Some(i) && i > 0).then(|| {
                let mut m = Vec::new();
                payload_external(&mut m, data, &sigs[i - 1]);
                r.external.sign(Message::plain(&m))
            });
            let version = if ext.is_some() { 1 } else { r.version };
            let mut m = Vec::new();
            let ext_ref = ext.as_ref().map(|s| s.as_slice());
            if version == 0 {
                payload_v0(&mut m, data, ext_ref, 0, next.public_key());
            } else {
                payload_v1(&mut m, data, 0, next.public_key(), (i > 0).then(|| sigs[i - 1].as_slice()), ext_ref);
            }
            let s = signer.sign(Message::plain(&m));
            let mut sb = Vec::new();
            field(&mut sb, 1, data);
            field(&mut sb, 2, &key_msg(0, next.public_key()));
            field(&mut sb, 3, &s);
            if let Some(e) = ext {
                let mut em = Vec::new();
                field(&mut em, 1, &e);
                field(&mut em, 2, &key_msg(0, r.external.public_key()));
                field(&mut sb, 4, &em);
            }
            if version != 0 {
                int_field(&mut sb, 5, u64::from(version));
            }
            field(&mut token, if i == 0 { 2 } else { 3 }, &sb);
            sigs.push(s);
            signer = next;
        }
        let mut proof = Vec::new();
        match (r.sealed, r.blocks.last(), sigs.last()) {
            (true, Some(last), Some(sig)) => {
                let mut m = Vec::new();
                payload_seal(&mut m, last, 0, signer.public_key(), sig);
                field(&mut proof, 2, &signer.sign(Message::plain(&m)));
            }
            _ => field(&mut proof, 1, signer.seed()),
        }
        field(&mut token, 4, &proof);
        (token, sigs)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{build as build_recipe, field, key_msg, Recipe};
    use super::*;

    struct Built {
        token: Vec<u8>,
        root: [u8; 32],
        sigs: Vec<[u8; 64]>,
    }

    /// A token of `n` blocks (the authority and n - 1 more), all signed with payload
    /// `version`, sealed or not; block `third_party` (if any) carries an external
    /// signature.
    fn build(n: usize, version: u32, sealed: bool, third_party: Option<usize>) -> Built {
        let root = SigningKey::from_seed(&[1; 32]);
        let keys: Vec<SigningKey> = (0..n).map(|i| SigningKey::from_seed(&[i as u8 + 2; 32])).collect();
        let external = SigningKey::from_seed(&[99; 32]);
        let blocks: Vec<Vec<u8>> = (0..n).map(|i| format!("block {i}").into_bytes()).collect();
        let recipe = Recipe {
            root: &root,
            keys: &keys,
            external: &external,
            blocks: &blocks,
            version,
            third_party,
            sealed,
            root_key_id: None,
        };
        let (token, sigs) = build_recipe(&recipe);
        Built { token, root: *root.public_key(), sigs }
    }

    fn ids(b: &Built) -> Vec<&[u8]> {
        b.sigs.iter().map(|s| s.as_slice()).collect()
    }

    #[test]
    fn biscuit_tokens_of_every_shape_verify_with_their_revocation_ids() {
        for n in 1..=4 {
            for version in [0, 1] {
                for sealed in [false, true] {
                    for tp in [None, Some(1), Some(n - 1)] {
                        let b = build(n, version, sealed, tp);
                        assert_eq!(verify(&b.token, &b.root), Ok(ids(&b)), "{n} {version} {sealed} {tp:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn biscuit_every_bit_flip_is_refused_or_changes_nothing_signed() {
        let b = build(3, 1, false, Some(2));
        let mut flipped = Vec::new();
        for i in 0..b.token.len() * 8 {
            let mut t = b.token.clone();
            t[i / 8] ^= 1 << (i % 8);
            flipped.push(t);
        }
        let refs: Vec<&[u8]> = flipped.iter().map(|t| t.as_slice()).collect();
        let out = verify_many(&refs, &b.root);
        for (t, v) in refs.iter().zip(&out) {
            assert_eq!(verify(t, &b.root).is_ok(), v.is_ok(), "batch and single agree");
        }
        // The only flips that keep the token valid turn the key of a `PublicKey`'s
        // algorithm field (0x08, set to 0 = Ed25519 anyway) into the key of an unknown
        // varint field (0x18, 0x28, 0x48): prost skips it and the algorithm defaults to 0.
        for (i, v) in out.iter().enumerate() {
            if v.is_ok() {
                assert_eq!((b.token[i / 8], i % 8 >= 4 && i % 8 <= 6), (0x08, true), "bit {i}");
            }
        }
        assert_eq!(out.iter().filter(|v| v.is_ok()).count(), 3 * 4, "three flips in each of the four keys");
    }

    #[test]
    fn biscuit_wrong_root_and_swapped_blocks_are_signature_failures() {
        let b = build(3, 0, true, None);
        let other = *SigningKey::from_seed(&[7; 32]).public_key();
        assert_eq!(verify(&b.token, &other).unwrap_err().kind, FailureKind::Signature);
        let b1 = build(2, 0, false, None);
        // Cut the token after the authority and glue on a block from another token.
        let mut t = b1.token.clone();
        t.truncate(t.len() - 36);
        let mut proof = Vec::new();
        field(&mut proof, 1, &[5; 32]);
        field(&mut t, 4, &proof);
        assert_eq!(verify(&t, &b1.root).unwrap_err().kind, FailureKind::Signature);
    }

    #[test]
    fn biscuit_decoding_is_prosts() {
        let root = [0u8; 32];
        let root = *SigningKey::from_seed(&root).public_key();
        let fmt = |t: &[u8]| verify(t, &root).unwrap_err();
        assert!(fmt(&[]).message.contains("next key"), "an empty token has a default authority");
        assert!(fmt(&[0x80; 11]).message.contains("invalid varint"));
        assert!(fmt(&[0x07]).message.contains("wire type"));
        assert!(fmt(&[0x00]).message.contains("tag value"));
        assert!(fmt(&[0x12, 0x05, 0x00]).message.contains("underflow"));
        assert!(fmt(&[0x2c]).message.contains("end group"));
        assert!(fmt(&[0x0c]).message.contains("wire type"), "field 1 is known: its wire type is checked first");
        // 100 nested groups of an unknown field are skipped; 101 are not.
        let nest = |d: usize| [vec![0x2b; d], vec![0x2c; d]].concat();
        assert!(!fmt(&nest(100)).message.contains("recursion"));
        assert!(fmt(&nest(101)).message.contains("recursion"));
        // The tenth byte of a varint may be 1, not 2.
        let mut t = vec![0x08];
        t.extend([0xff; 9]);
        t.push(0x01);
        assert!(!fmt(&t).message.contains("varint"));
        *t.last_mut().unwrap() = 0x02;
        assert!(fmt(&t).message.contains("varint"));
    }

    #[test]
    fn biscuit_p256_is_unsupported_and_unknown_algorithms_are_format_errors() {
        let b = build(2, 1, false, None);
        let mut t = Vec::new();
        let mut sb = Vec::new();
        field(&mut sb, 2, &key_msg(1, &[2; 33]));
        field(&mut t, 2, &sb);
        assert_eq!(verify(&t, &b.root).unwrap_err().kind, FailureKind::UnsupportedAlgorithm);
        let mut t = Vec::new();
        let mut sb = Vec::new();
        field(&mut sb, 2, &key_msg(7, &[2; 32]));
        field(&mut t, 2, &sb);
        assert_eq!(verify(&t, &b.root).unwrap_err().kind, FailureKind::Format);
        // A format error before the P-256 key wins; one after it is never reached.
        let mut t2 = t.clone();
        field(&mut t2, 3, &[0x0a, 0x05]);
        assert!(verify(&t2, &b.root).unwrap_err().message.contains("underflow"));
    }

    /// A key with a torsion component of order 8, A = [a]B + T: a signature (R = [r]B,
    /// S = r + k a) holds under dalek's cofactorless equation iff 8 divides k, where the
    /// strict (cofactored) rule accepts every one.
    #[test]
    fn dalek_strict_is_cofactorless_on_mixed_order_keys() {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        use sha2::{Digest, Sha512};

        let a = Scalar::from(0x1234_5678u64);
        let key = (B * a + EIGHT_TORSION[1]).compress().to_bytes();
        let (mut held, mut refused) = (0, 0);
        for i in 0..64u64 {
            let r = Scalar::from(1000 + i);
            let big_r = (B * r).compress().to_bytes();
            let msg = i.to_le_bytes();
            let h: [u8; 64] = Sha512::new().chain_update(big_r).chain_update(key).chain_update(msg).finalize().into();
            let k = Scalar::from_bytes_mod_order_wide(&h);
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&big_r);
            sig[32..].copy_from_slice((r + k * a).as_bytes());
            let dalek = sig::verify_dalek_strict(Message::plain(&msg), &sig, &key);
            assert_eq!(dalek, k.as_bytes()[0].is_multiple_of(8), "item {i}");
            assert!(sig::verify(Message::plain(&msg), &sig, &key), "the cofactored rule accepts every one");
            if dalek {
                held += 1;
            } else {
                refused += 1;
            }
        }
        assert!(held > 0 && refused > 0);
    }

    #[test]
    fn biscuit_small_order_keys_are_refused() {
        let b = build(1, 0, false, None);
        let identity = {
            let mut k = [0u8; 32];
            k[0] = 1;
            k
        };
        assert_eq!(verify(&b.token, &identity).unwrap_err().kind, FailureKind::Signature);
    }
}
