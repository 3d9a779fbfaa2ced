//! The byte format of chains and invocations (SPEC §2): constants, total parsing into
//! borrowed views, and encoding.
//!
//! Parsing is total: every byte string yields a view or [`Error::Malformed`] naming
//! the field and its offset; lengths are checked before every slice, nothing panics.
//! Views borrow the input (strings are `&str` into it), so parsing a chain allocates
//! one `Vec` of links and nothing else.

use crate::{Error, Result};

/// Magic prefix of a chain.
pub const CHAIN_MAGIC: &[u8; 4] = b"HGC1";
/// Magic prefix of an invocation.
pub const INVOCATION_MAGIC: &[u8; 4] = b"HGI1";
/// Most links in one chain.
pub const MAX_LINKS: usize = 16;
/// Most capabilities in one link.
pub const MAX_CAPS: usize = 64;
/// Longest chain, in bytes.
pub const MAX_CHAIN_LEN: usize = 65_536;
/// Longest `str` field, in bytes (its length is one byte).
pub const MAX_STR: usize = 255;
/// Domain prefix of a link's signed message.
pub const LINK_DOMAIN: &[u8] = b"hopgate/v1/link\x00";
/// Domain prefix of an invocation's signed message.
pub const INVOKE_DOMAIN: &[u8] = b"hopgate/v1/invoke\x00";
/// Kind byte of link 0.
pub const KIND_GRANT: u8 = 0;
/// Kind byte of every later link.
pub const KIND_DELEGATION: u8 = 1;
/// Bytes of an invocation body besides its two strings and their length bytes.
const INVOCATION_FIXED: usize = 64 + 8 + 8 + 16 + 32;

/// A capability: a resource and an ability, both opaque strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap<'a> {
    /// What is acted on, e.g. `"files/reports/*"`.
    pub resource: &'a str,
    /// What may be done, e.g. `"payments/refund"`.
    pub ability: &'a str,
}

/// `covers(p, c)` of SPEC §1: `p == "*"`, or `p == c`, or `p` ends with `"/*"` and `c`
/// starts with `p` less its final `*`.
pub fn covers(p: &str, c: &str) -> bool {
    p == "*" || p == c || p.strip_suffix('*').is_some_and(|prefix| prefix.ends_with('/') && c.starts_with(prefix))
}

impl Cap<'_> {
    /// True iff both parts of `self` cover the parts of `other`.
    pub fn covers(&self, other: &Cap<'_>) -> bool {
        covers(self.resource, other.resource) && covers(self.ability, other.ability)
    }
}

/// What anchors a link: the issuer for link 0, the previous signature for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor<'a> {
    /// Link 0 (kind 0).
    Grant {
        /// The principal's key that signs link 0.
        issuer: &'a [u8; 32],
        /// Binds the grant to one session of the principal.
        session_id: &'a [u8; 16],
    },
    /// Link i ≥ 1 (kind 1).
    Delegation {
        /// Must equal the signature of link i − 1.
        prev_sig: &'a [u8; 64],
    },
}

/// One parsed link, borrowing the chain's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Link<'a> {
    /// The signed body (without the domain prefix).
    pub body: &'a [u8],
    /// The link's signature.
    pub sig: &'a [u8; 64],
    /// Issuer or previous signature.
    pub anchor: Anchor<'a>,
    /// Who holds the authority after this link.
    pub holder: &'a [u8; 32],
    /// Valid from (unix seconds, inclusive).
    pub not_before: u64,
    /// Valid until (unix seconds, exclusive).
    pub not_after: u64,
    /// How many delegations may still follow.
    pub max_depth: u8,
    /// The most that may be spent through this link.
    pub budget: u64,
    /// The budget's unit (e.g. `"usd-cents"`).
    pub unit: &'a str,
    /// Makes otherwise equal links distinct.
    pub nonce: &'a [u8; 16],
    /// Raw capability list, validated at parse time; read it with [`Link::caps`].
    caps_raw: &'a [u8],
    /// BLAKE3 of out-of-band metadata, or zeros.
    pub meta_digest: &'a [u8; 32],
}

impl<'a> Link<'a> {
    /// The capabilities, decoded lazily from the validated bytes (no allocation).
    pub fn caps(&self) -> Caps<'a> {
        Caps { rest: self.caps_raw }
    }

    /// The issuer's key for link 0, `None` for delegations.
    pub fn issuer(&self) -> Option<&'a [u8; 32]> {
        match self.anchor {
            Anchor::Grant { issuer, .. } => Some(issuer),
            Anchor::Delegation { .. } => None,
        }
    }

    /// BLAKE3 of the signature: the link's revocation id and ledger account.
    pub fn revocation_id(&self) -> [u8; 32] {
        *blake3::hash(self.sig).as_bytes()
    }
}

/// Iterator over a link's capabilities.
#[derive(Clone, Debug)]
pub struct Caps<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Caps<'a> {
    type Item = Cap<'a>;
    fn next(&mut self) -> Option<Cap<'a>> {
        // The bytes were validated by `parse_caps`; a failure here only ends iteration.
        let mut r = Reader { buf: self.rest, pos: 0 };
        let resource = r.str("cap.resource").ok()?;
        let ability = r.str("cap.ability").ok()?;
        self.rest = self.rest.get(r.pos..)?;
        Some(Cap { resource, ability })
    }
}

/// A parsed chain.
#[derive(Clone, Debug)]
pub struct Chain<'a> {
    /// The whole encoding.
    pub bytes: &'a [u8],
    /// Its links, link 0 first.
    pub links: Vec<Link<'a>>,
}

impl<'a> Chain<'a> {
    /// Parses `bytes` as SPEC §2's `Chain`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        crate::fault::inject("parse");
        if bytes.len() > MAX_CHAIN_LEN {
            return Err(malformed("chain", 0, "longer than 65536 bytes"));
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take("magic", 4)? != CHAIN_MAGIC {
            return Err(malformed("magic", 0, "not HGC1"));
        }
        let n_at = r.pos;
        let n = r.u8("n")? as usize;
        if !(1..=MAX_LINKS).contains(&n) {
            return Err(malformed("n", n_at, "link count not in 1..=16"));
        }
        let mut links = Vec::with_capacity(n);
        for i in 0..n {
            links.push(parse_link(&mut r, i)?);
        }
        r.end()?;
        Ok(Chain { bytes, links })
    }

    /// The last link (a parsed chain has at least one).
    pub fn last(&self) -> &Link<'a> {
        &self.links[self.links.len() - 1]
    }

    /// Link 0.
    pub fn first(&self) -> &Link<'a> {
        &self.links[0]
    }
}

fn parse_link<'a>(r: &mut Reader<'a>, index: usize) -> Result<Link<'a>> {
    let len_at = r.pos;
    let body_len = r.u32("body_len")? as usize;
    let body_at = r.pos;
    let body = r.take("body", body_len)?;
    let sig = r.array::<64>("sig")?;
    let mut b = Reader { buf: body, pos: 0 };
    let link = parse_body(&mut b, body, sig, index).map_err(|e| rebase(e, body_at))?;
    if b.pos != body.len() {
        return Err(malformed("body_len", len_at, "does not equal the parsed body length"));
    }
    Ok(link)
}

/// Parses a link body; offsets in errors are relative to the body.
fn parse_body<'a>(b: &mut Reader<'a>, body: &'a [u8], sig: &'a [u8; 64], index: usize) -> Result<Link<'a>> {
    let kind = b.u8("kind")?;
    let anchor = match (index, kind) {
        (0, KIND_GRANT) => Anchor::Grant { issuer: b.array("issuer_pk")?, session_id: b.array("session_id")? },
        (i, KIND_DELEGATION) if i > 0 => Anchor::Delegation { prev_sig: b.array("prev_sig")? },
        (0, _) => return Err(malformed("kind", 0, "link 0 must be kind 0 (grant)")),
        _ => return Err(malformed("kind", 0, "links after the first must be kind 1 (delegation)")),
    };
    let holder = b.array("holder_pk")?;
    let not_before = b.u64("not_before")?;
    let na_at = b.pos;
    let not_after = b.u64("not_after")?;
    if not_before >= not_after {
        return Err(malformed("not_after", na_at, "not_after must be > not_before"));
    }
    Ok(Link {
        body,
        sig,
        anchor,
        holder,
        not_before,
        not_after,
        max_depth: b.u8("max_depth")?,
        budget: b.u64("budget")?,
        unit: b.str("unit")?,
        nonce: b.array("nonce")?,
        caps_raw: parse_caps(b)?,
        meta_digest: b.array("meta_digest")?,
    })
}

fn parse_caps<'a>(b: &mut Reader<'a>) -> Result<&'a [u8]> {
    let n_at = b.pos;
    let ncap = b.u8("ncap")? as usize;
    if !(1..=MAX_CAPS).contains(&ncap) {
        return Err(malformed("ncap", n_at, "capability count not in 1..=64"));
    }
    let start = b.pos;
    for _ in 0..ncap {
        b.str("cap.resource")?;
        b.str("cap.ability")?;
    }
    Ok(&b.buf[start..b.pos])
}

/// A parsed invocation.
#[derive(Clone, Copy, Debug)]
pub struct Invocation<'a> {
    /// The whole encoding.
    pub bytes: &'a [u8],
    /// The signed body.
    pub body: &'a [u8],
    /// Signature by the chain's final holder.
    pub sig: &'a [u8; 64],
    /// Must equal the last link's signature.
    pub tail_sig: &'a [u8; 64],
    /// What is being done.
    pub ability: &'a str,
    /// What it is done to.
    pub resource: &'a str,
    /// What it costs, in the chain's unit.
    pub cost: u64,
    /// When it was made (unix seconds).
    pub timestamp: u64,
    /// Single-use request id.
    pub nonce: &'a [u8; 16],
    /// BLAKE3 of the request payload.
    pub payload_digest: &'a [u8; 32],
}

impl<'a> Invocation<'a> {
    /// Parses `bytes` as SPEC §2's `Invocation`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        // Two strings of at most 255 bytes bound any valid invocation.
        const MAX: usize = 4 + 4 + INVOCATION_FIXED + 2 * (1 + MAX_STR) + 64;
        if bytes.len() > MAX {
            return Err(malformed("invocation", 0, "longer than any valid invocation"));
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take("magic", 4)? != INVOCATION_MAGIC {
            return Err(malformed("magic", 0, "not HGI1"));
        }
        let len_at = r.pos;
        let body_len = r.u32("body_len")? as usize;
        let body_at = r.pos;
        let body = r.take("body", body_len)?;
        let sig = r.array::<64>("sig")?;
        r.end()?;
        let mut b = Reader { buf: body, pos: 0 };
        let fields = (|| {
            let tail_sig = b.array::<64>("tail_sig")?;
            let ability = b.str("ability")?;
            let resource = b.str("resource")?;
            let cost = b.u64("cost")?;
            let timestamp = b.u64("timestamp")?;
            let nonce = b.array::<16>("nonce")?;
            let payload_digest = b.array::<32>("payload_digest")?;
            Ok((tail_sig, ability, resource, cost, timestamp, nonce, payload_digest))
        })()
        .map_err(|e| rebase(e, body_at))?;
        if b.pos != body.len() {
            return Err(malformed("body_len", len_at, "does not equal the parsed body length"));
        }
        let (tail_sig, ability, resource, cost, timestamp, nonce, payload_digest) = fields;
        Ok(Invocation { bytes, body, sig, tail_sig, ability, resource, cost, timestamp, nonce, payload_digest })
    }
}

fn malformed(field: &'static str, offset: usize, reason: &'static str) -> Error {
    Error::Malformed { field, offset, reason }
}

/// Shifts a body-relative offset to the whole input.
fn rebase(e: Error, by: usize) -> Error {
    match e {
        Error::Malformed { field, offset, reason } => Error::Malformed { field, offset: offset + by, reason },
        other => other,
    }
}

/// A cursor over bytes; every read checks the length first.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| malformed(field, self.pos, "truncated"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<&'a [u8; N]> {
        let at = self.pos;
        self.take(field, N)?.try_into().map_err(|_| malformed(field, at, "truncated"))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(*self.array::<4>(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(*self.array::<8>(field)?))
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str> {
        let at = self.pos;
        let len = self.u8(field)? as usize;
        if len == 0 {
            return Err(malformed(field, at, "empty string"));
        }
        let raw = self.take(field, len)?;
        let s = std::str::from_utf8(raw).map_err(|_| malformed(field, at, "not valid UTF-8"))?;
        if raw.contains(&0) {
            return Err(malformed(field, at, "contains NUL"));
        }
        Ok(s)
    }

    fn end(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(malformed("trailing", self.pos, "bytes after the end"))
        }
    }
}

/// Checks that `s` may be a wire `str` (1..=255 bytes of UTF-8 without NUL).
pub fn check_str(field: &'static str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_STR || s.as_bytes().contains(&0) {
        return Err(Error::input(field, format!("{s:?} must be 1..=255 bytes of UTF-8 without NUL")));
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// The fields every link carries, owned, for encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommonFields {
    /// Next holder.
    pub holder: [u8; 32],
    /// Valid from.
    pub not_before: u64,
    /// Valid until (exclusive).
    pub not_after: u64,
    /// Delegations that may follow.
    pub max_depth: u8,
    /// Spending cap.
    pub budget: u64,
    /// Budget unit.
    pub unit: String,
    /// Uniqueness nonce.
    pub nonce: [u8; 16],
    /// Capabilities as (resource, ability).
    pub caps: Vec<(String, String)>,
    /// BLAKE3 of metadata, or zeros.
    pub meta_digest: [u8; 32],
}

impl CommonFields {
    /// Checks the fields against SPEC §2's limits.
    pub fn validate(&self) -> Result<()> {
        check_str("unit", &self.unit)?;
        if !(1..=MAX_CAPS).contains(&self.caps.len()) {
            return Err(Error::input("caps", format!("need 1..=64 capabilities, got {}", self.caps.len())));
        }
        for (res, ab) in &self.caps {
            check_str("resource", res)?;
            check_str("ability", ab)?;
        }
        if self.not_before >= self.not_after {
            return Err(Error::input(
                "not_before",
                format!("not_before ({}) must be < not_after ({})", self.not_before, self.not_after),
            ));
        }
        Ok(())
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.holder);
        out.extend_from_slice(&self.not_before.to_le_bytes());
        out.extend_from_slice(&self.not_after.to_le_bytes());
        out.push(self.max_depth);
        out.extend_from_slice(&self.budget.to_le_bytes());
        put_str(out, &self.unit);
        out.extend_from_slice(&self.nonce);
        out.push(self.caps.len() as u8);
        for (res, ab) in &self.caps {
            put_str(out, res);
            put_str(out, ab);
        }
        out.extend_from_slice(&self.meta_digest);
    }
}

/// Encodes a link body of kind 0 (grant).
pub fn encode_grant_body(issuer: &[u8; 32], session_id: &[u8; 16], common: &CommonFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(KIND_GRANT);
    out.extend_from_slice(issuer);
    out.extend_from_slice(session_id);
    common.encode_into(&mut out);
    out
}

/// Encodes a link body of kind 1 (delegation).
pub fn encode_delegation_body(prev_sig: &[u8; 64], common: &CommonFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.push(KIND_DELEGATION);
    out.extend_from_slice(prev_sig);
    common.encode_into(&mut out);
    out
}

/// Appends one encoded link (`u32 body_len | body | sig`).
pub fn encode_link(out: &mut Vec<u8>, body: &[u8], sig: &[u8; 64]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(sig);
}

/// The fields of an invocation body, owned, for encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvocationFields {
    /// The chain's last signature.
    pub tail_sig: [u8; 64],
    /// What is being done.
    pub ability: String,
    /// What it is done to.
    pub resource: String,
    /// Cost in the chain's unit.
    pub cost: u64,
    /// Unix seconds.
    pub timestamp: u64,
    /// Single-use id.
    pub nonce: [u8; 16],
    /// BLAKE3 of the payload.
    pub payload_digest: [u8; 32],
}

impl InvocationFields {
    /// Encodes the body.
    pub fn encode_body(&self) -> Result<Vec<u8>> {
        check_str("ability", &self.ability)?;
        check_str("resource", &self.resource)?;
        let mut out = Vec::with_capacity(INVOCATION_FIXED + 2 + self.ability.len() + self.resource.len());
        out.extend_from_slice(&self.tail_sig);
        put_str(&mut out, &self.ability);
        put_str(&mut out, &self.resource);
        out.extend_from_slice(&self.cost.to_le_bytes());
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.payload_digest);
        Ok(out)
    }
}

/// `"HGI1" | u32 body_len | body | sig`.
pub fn encode_invocation(body: &[u8], sig: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 + body.len() + 64);
    out.extend_from_slice(INVOCATION_MAGIC);
    encode_link(&mut out, body, sig);
    out
}

/// The text form (HTTP headers `Hopgate-Chain`, `Hopgate-Invocation`): base64url
/// without padding.
pub fn to_text(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes the text form strictly: padding, characters outside the alphabet and
/// non-zero leftover bits are refused, so one byte string has exactly one text form.
/// One line ending (`\n` or `\r\n`) after it is ignored, as read from a file.
pub fn from_text(text: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    // One line ending after the text is not part of it: a file written with a final
    // newline reads back as the same bytes. Anything else stays refused.
    let text = text.strip_suffix("\r\n").or_else(|| text.strip_suffix('\n')).unwrap_or(text);
    if text.len() > 4 * MAX_CHAIN_LEN.div_ceil(3) {
        return Err(malformed("text", 0, "longer than the text form of any valid chain"));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|e| {
        let offset = match e {
            base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            _ => text.len(),
        };
        malformed("text", offset, "not base64url without padding")
    })
}
