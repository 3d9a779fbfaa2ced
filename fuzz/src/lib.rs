//! Shared pieces of hopgate's fuzz targets: a byte cursor that turns fuzzer input
//! into decisions, deterministic keys, a chain "recipe" that builds real, properly
//! signed chains (narrowing or widening) from that input, and an independent model
//! of SPEC §4's decision for such a chain (the oracle the targets compare with).
//!
//! Nothing here calls libFuzzer, so `examples/seed_corpus.rs` can use it without
//! the fuzzing runtime.
//!
//! The model is written from docs/SPEC.md, not from the core's code:
//! `covers`, the attenuation rules and the check order are restated here on purpose,
//! so a mistake in the core shows up as a disagreement.

use std::collections::HashSet;
use std::sync::OnceLock;

use hopgate_core::sig::{Message, SigningKey};
use hopgate_core::wire::{self, CommonFields, LINK_DOMAIN};
use hopgate_core::Code;

/// The clock the recipes are built around (unix seconds).
pub const T0: u64 = 1_700_000_000;

/// Keys from fixed seeds `[i + 1; 32]`. 0 and 1 are the trusted issuers, 7 is never
/// trusted; every key may be a holder.
pub const NKEYS: usize = 8;
/// Index of the issuer key that no policy trusts.
pub const UNTRUSTED: usize = 7;

/// The deterministic key pool (computed once per process).
pub fn keys() -> &'static [SigningKey] {
    static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
    KEYS.get_or_init(|| (0..NKEYS).map(|i| SigningKey::from_seed(&[i as u8 + 1; 32])).collect())
}

/// Public key of pool key `i`.
pub fn pk(i: usize) -> [u8; 32] {
    *keys()[i].public_key()
}

/// Signs a link body with pool key `i`.
pub fn sign_link(i: usize, body: &[u8]) -> [u8; 64] {
    memo_sign(i, LINK_DOMAIN, body)
}

/// Slots of the signature memo (direct-mapped).
const MEMO_SLOTS: usize = 1 << 13;
/// Longest body the memo keeps (longer ones are signed every time).
const MEMO_BODY: usize = 640;

struct MemoSlot {
    used: bool,
    key: u8,
    invoke: bool,
    len: u16,
    body: [u8; MEMO_BODY],
    sig: [u8; 64],
}

/// Ed25519 signing is deterministic, and mutated inputs keep most of their links and
/// invocations, so signatures are remembered: signing is the costliest step of
/// building a recipe and not what the targets test (they verify, which is never
/// memoized). The memo is allocated once: a per-input allocation that outlives the
/// input would make libFuzzer re-run the input to look for a leak.
fn memo_sign(i: usize, prefix: &'static [u8], body: &[u8]) -> [u8; 64] {
    use std::hash::{Hash, Hasher};
    static MEMO: OnceLock<std::sync::Mutex<Vec<MemoSlot>>> = OnceLock::new();
    let sign = || keys()[i].sign(Message { prefix, body });
    if body.len() > MEMO_BODY {
        return sign();
    }
    let invoke = prefix != LINK_DOMAIN;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (i, invoke, body).hash(&mut h);
    let at = h.finish() as usize % MEMO_SLOTS;
    let memo = MEMO.get_or_init(|| {
        let empty = || MemoSlot { used: false, key: 0, invoke: false, len: 0, body: [0; MEMO_BODY], sig: [0; 64] };
        std::sync::Mutex::new((0..MEMO_SLOTS).map(|_| empty()).collect())
    });
    let mut slots = memo.lock().unwrap_or_else(|e| e.into_inner());
    let slot = &mut slots[at];
    if slot.used && usize::from(slot.key) == i && slot.invoke == invoke && &slot.body[..usize::from(slot.len)] == body {
        return slot.sig;
    }
    let sig = sign();
    slot.used = true;
    slot.key = i as u8;
    slot.invoke = invoke;
    slot.len = body.len() as u16;
    slot.body[..body.len()].copy_from_slice(body);
    slot.sig = sig;
    sig
}

/// A cursor over fuzzer input. Reads past the end yield zeros, so every input is a
/// complete recipe and short inputs stay cheap.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    /// Next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    /// Little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Little-endian u64.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// A value in `0..n` (`n >= 1`).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n >= 1);
        if n <= 256 {
            self.u8() as usize % n
        } else {
            self.u16() as usize % n
        }
    }

    /// True with probability about `num / 256`.
    pub fn chance(&mut self, num: u8) -> bool {
        self.u8() < num
    }

    /// A fixed-size array (zero-padded past the end).
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for x in &mut out {
            *x = self.u8();
        }
        out
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

/// Resources the recipes draw from (pattern and concrete names, unicode included).
pub const RESOURCES: &[&str] = &[
    "*",
    "files/*",
    "files/reports/*",
    "files/reports/q3.pdf",
    "files/reports",
    "files/reports/",
    "files*",
    "files/../x",
    "db/users/*",
    "db/users/42",
    "é/*",
    "é/ü",
];
/// Abilities the recipes draw from.
pub const ABILITIES: &[&str] =
    &["*", "read", "write", "payments/*", "payments/refund", "payments/refund/*", "payments", "payments/"];
/// Tails appended to a `".../*"` pattern to narrow it.
pub const SUFFIXES: &[&str] = &["", "a", "q3.pdf", "sub/*", "x/y", "*", "ü/*"];
/// Budget units.
pub const UNITS: &[&str] = &["usd-cents", "tokens", "USD-cents"];

/// Turns raw bytes into a wire `str` (1..=255 bytes of UTF-8 without NUL).
pub fn sanitize(raw: &[u8]) -> String {
    let mut s: String = String::from_utf8_lossy(raw).chars().filter(|&c| c != '\0').collect();
    while s.len() > wire::MAX_STR {
        s.pop();
    }
    if s.is_empty() {
        s.push('x');
    }
    s
}

/// A string from `vocab`, or (rarely) one made of raw input bytes.
pub fn pick_str(inp: &mut Input<'_>, vocab: &[&str]) -> String {
    let tag = inp.u8();
    if tag >= 240 {
        let n = 1 + inp.below(24);
        sanitize(inp.take(n))
    } else {
        vocab[tag as usize % vocab.len()].to_owned()
    }
}

/// A string that `p` covers (SPEC §1), chosen by the input.
pub fn narrow(inp: &mut Input<'_>, p: &str, vocab: &[&str]) -> String {
    match inp.below(4) {
        0 => p.to_owned(),
        _ if p == "*" => pick_str(inp, vocab),
        _ if p.ends_with("/*") => {
            let mut s = p[..p.len() - 1].to_owned();
            s.push_str(SUFFIXES[inp.below(SUFFIXES.len())]);
            if s.len() > wire::MAX_STR {
                p.to_owned()
            } else {
                s
            }
        }
        _ => p.to_owned(),
    }
}

/// SPEC §1's `covers`, restated independently of the core.
pub fn model_covers(p: &str, c: &str) -> bool {
    if p == "*" || p == c {
        return true;
    }
    let (pb, cb) = (p.as_bytes(), c.as_bytes());
    pb.len() >= 2
        && pb[pb.len() - 2..] == *b"/*"
        && cb.len() >= pb.len() - 1
        && cb[..pb.len() - 1] == pb[..pb.len() - 1]
}

/// SPEC §1 attenuation rules 1–4 of `child` against `parent`, in order.
pub fn model_attenuation(parent: &CommonFields, child: &CommonFields) -> Option<Code> {
    let scope_ok =
        child.caps.iter().all(|(r, a)| parent.caps.iter().any(|(pr, pa)| model_covers(pr, r) && model_covers(pa, a)));
    if !scope_ok {
        return Some(Code::ScopeWidened);
    }
    if child.budget > parent.budget || child.unit != parent.unit {
        return Some(Code::BudgetWidened);
    }
    if child.not_before < parent.not_before || child.not_after > parent.not_after {
        return Some(Code::TimeWidened);
    }
    if parent.max_depth == 0 || u16::from(child.max_depth) + 1 > u16::from(parent.max_depth) {
        return Some(Code::DepthExceeded);
    }
    None
}

/// True iff the fields encode (1..=255-byte strings, 1..=64 caps, `not_before < not_after`).
pub fn fields_valid(f: &CommonFields) -> bool {
    f.validate().is_ok()
}

/// One link of a recipe.
#[derive(Clone, Debug)]
pub struct PlannedLink {
    /// The fields as encoded.
    pub fields: CommonFields,
    /// Pool index of the key that signs the link.
    pub signer: usize,
    /// For a delegation, a `prev_sig` other than the previous link's signature.
    pub prev_override: Option<[u8; 64]>,
}

/// A chain recipe: issuer, session and links, drawn from fuzzer input.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// Pool index of the key named as `issuer_pk` in link 0.
    pub issuer: usize,
    /// Link 0's session id.
    pub session_id: [u8; 16],
    /// Link 0 first.
    pub links: Vec<PlannedLink>,
}

/// A built chain and what the recipe knows about it.
pub struct Built {
    /// The chain's bytes.
    pub bytes: Vec<u8>,
    /// Per link: its signature.
    pub sigs: Vec<[u8; 64]>,
    /// Per link: its encoded body.
    pub bodies: Vec<Vec<u8>>,
    /// Per link: its byte offset in `bytes` (the `body_len` field).
    pub offsets: Vec<usize>,
}

/// Session ids the recipes and policies use.
pub const SESSIONS: [[u8; 16]; 2] = [[0; 16], [0x5e; 16]];

fn caps_for(inp: &mut Input<'_>) -> Vec<(String, String)> {
    let n = if inp.chance(8) { 1 + inp.below(wire::MAX_CAPS) } else { 1 + inp.below(3) };
    (0..n).map(|_| (pick_str(inp, RESOURCES), pick_str(inp, ABILITIES))).collect()
}

fn grant_fields(inp: &mut Input<'_>) -> CommonFields {
    let holder = pk(inp.below(NKEYS));
    let (not_before, not_after) = match inp.below(16) {
        0 => (0, 1 + u64::from(inp.u32())),
        1 => (T0, u64::MAX),
        2 => (u64::MAX - 1, u64::MAX),
        3 => {
            // Not `not_before < not_after`: the chain is MALFORMED.
            let nb = T0 + u64::from(inp.u16());
            (nb, nb - u64::from(inp.u8() % 2))
        }
        _ => {
            let nb = T0 + u64::from(inp.u16());
            (nb, nb + 1 + u64::from(inp.u32() % 1_000_000))
        }
    };
    let budget = match inp.below(4) {
        0 => inp.u64(),
        1 => u64::MAX,
        _ => u64::from(inp.u16()),
    };
    CommonFields {
        holder,
        not_before,
        not_after,
        max_depth: if inp.chance(16) { inp.u8() } else { inp.u8() % 8 },
        budget,
        unit: if inp.chance(8) { pick_str(inp, UNITS) } else { UNITS[0].to_owned() },
        nonce: inp.array(),
        caps: caps_for(inp),
        meta_digest: if inp.chance(32) { inp.array() } else { [0; 32] },
    }
}

/// Fields for a child of `parent`: a legal narrowing, then (when the input says so)
/// widened in one or more ways.
fn child_fields(inp: &mut Input<'_>, parent: &CommonFields) -> CommonFields {
    let ncap = 1 + inp.below(3);
    let mut caps: Vec<(String, String)> = (0..ncap)
        .map(|_| {
            let (pr, pa) = &parent.caps[inp.below(parent.caps.len())];
            (narrow(inp, pr, RESOURCES), narrow(inp, pa, ABILITIES))
        })
        .collect();
    let span = parent.not_after - parent.not_before.min(parent.not_after);
    let mut not_before = parent.not_before.saturating_add(u64::from(inp.u16()) % span.max(1));
    if not_before >= parent.not_after {
        not_before = parent.not_before;
    }
    let room = parent.not_after - not_before; // >= 1 for a valid parent
    let mut not_after = not_before.saturating_add(1 + u64::from(inp.u32()) % room.max(1));
    if not_after > parent.not_after {
        not_after = parent.not_after;
    }
    let mut budget = match inp.below(3) {
        0 => parent.budget,
        _ => parent.budget.checked_rem(u64::from(inp.u16()) + 1).unwrap_or(0).min(parent.budget),
    };
    let mut max_depth = parent.max_depth.saturating_sub(1 + inp.below(2) as u8);
    let mut unit = parent.unit.clone();
    // Widening, each independently (the model decides what the verifier must say).
    let widen = inp.u8();
    if widen & 0x80 != 0 {
        match widen & 0x7 {
            0 => caps.push((pick_str(inp, RESOURCES), pick_str(inp, ABILITIES))),
            1 => budget = parent.budget.saturating_add(1 + u64::from(inp.u8())),
            2 => unit = pick_str(inp, UNITS),
            3 => not_before = parent.not_before.saturating_sub(1 + u64::from(inp.u8())),
            4 => not_after = parent.not_after.saturating_add(1 + u64::from(inp.u8())),
            5 => max_depth = parent.max_depth,
            6 => max_depth = inp.u8(),
            _ => {
                caps = caps_for(inp);
                budget = inp.u64();
            }
        }
        if not_before >= not_after {
            not_after = not_before.saturating_add(1);
            if not_before >= not_after {
                not_before = not_after - 1;
            }
        }
    }
    caps.truncate(wire::MAX_CAPS);
    CommonFields {
        holder: pk(inp.below(NKEYS)),
        not_before,
        not_after,
        max_depth,
        budget,
        unit,
        nonce: inp.array(),
        caps,
        meta_digest: [0; 32],
    }
}

impl Recipe {
    /// Draws a recipe of 1..=`max_links` links from the input.
    pub fn draw(inp: &mut Input<'_>, max_links: usize) -> Recipe {
        let issuer = match inp.below(16) {
            0 => UNTRUSTED,
            1 | 2 => 1,
            _ => 0,
        };
        let session_id = SESSIONS[inp.below(2)];
        let n = 1 + inp.below(max_links);
        let mut links: Vec<PlannedLink> = Vec::with_capacity(n);
        for i in 0..n {
            let fields = if i == 0 { grant_fields(inp) } else { child_fields(inp, &links[i - 1].fields) };
            // The right signer: the issuer for link 0, the previous holder after that.
            let right = if i == 0 { issuer } else { key_of(&links[i - 1].fields.holder) };
            let signer = if inp.chance(10) { (right + 1 + inp.below(NKEYS - 1)) % NKEYS } else { right };
            let prev_override = (i > 0 && inp.chance(6)).then(|| inp.array::<64>());
            links.push(PlannedLink { fields, signer, prev_override });
            if !fields_valid(&links[i].fields) {
                break; // a malformed link ends the recipe: nothing after it is reached
            }
        }
        Recipe { issuer, session_id, links }
    }

    /// Encodes and signs the recipe. Bodies are encoded by hand (widening links too),
    /// signatures are real.
    pub fn build(&self) -> Built {
        let mut bytes = Vec::with_capacity(512 * self.links.len());
        bytes.extend_from_slice(wire::CHAIN_MAGIC);
        bytes.push(self.links.len() as u8);
        let mut sigs: Vec<[u8; 64]> = Vec::with_capacity(self.links.len());
        let mut bodies = Vec::with_capacity(self.links.len());
        let mut offsets = Vec::with_capacity(self.links.len());
        for (i, l) in self.links.iter().enumerate() {
            let body = if i == 0 {
                encode_grant_raw(&pk(self.issuer), &self.session_id, &l.fields)
            } else {
                encode_delegation_raw(&l.prev_override.unwrap_or(sigs[i - 1]), &l.fields)
            };
            let sig = sign_link(l.signer, &body);
            offsets.push(bytes.len());
            wire::encode_link(&mut bytes, &body, &sig);
            sigs.push(sig);
            bodies.push(body);
        }
        Built { bytes, sigs, bodies, offsets }
    }

    /// True iff every link's fields are encodable (else the chain is MALFORMED).
    pub fn well_formed(&self) -> bool {
        self.links.iter().all(|l| fields_valid(&l.fields))
    }

    /// SPEC §4 steps (a)–(e) for this recipe's chain, computed from the recipe alone.
    pub fn expected(&self, built: &Built, policy: &ModelPolicy) -> Code {
        if !self.well_formed() || built.bytes.len() > wire::MAX_CHAIN_LEN {
            return Code::Malformed;
        }
        if !policy.trusted.contains(&pk(self.issuer)) {
            return Code::UntrustedIssuer;
        }
        for (i, l) in self.links.iter().enumerate() {
            let right = if i == 0 { pk(self.issuer) } else { self.links[i - 1].fields.holder };
            if pk(l.signer) != right {
                return Code::BadSignature;
            }
        }
        for (i, l) in self.links.iter().enumerate().skip(1) {
            if l.prev_override.is_some_and(|p| p != built.sigs[i - 1]) {
                return Code::BrokenLink;
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            if i > 0 {
                if let Some(code) = model_attenuation(&self.links[i - 1].fields, &l.fields) {
                    return code;
                }
            }
            if policy.now < l.fields.not_before {
                return Code::NotYetValid;
            }
            if policy.now >= l.fields.not_after {
                return Code::Expired;
            }
            if i == 0 && policy.session.is_some_and(|s| s != self.session_id) {
                return Code::SessionMismatch;
            }
            if policy.revoked.contains(blake3::hash(&built.sigs[i]).as_bytes()) {
                return Code::Revoked;
            }
        }
        Code::Ok
    }

    /// The window in which every link is valid, if any: `[lo, hi)`.
    pub fn window(&self) -> (u64, u64) {
        let lo = self.links.iter().map(|l| l.fields.not_before).max().unwrap_or(0);
        let hi = self.links.iter().map(|l| l.fields.not_after).min().unwrap_or(0);
        (lo, hi)
    }
}

/// The pool index of public key `holder` (every holder is a pool key).
pub fn key_of(holder: &[u8; 32]) -> usize {
    (0..NKEYS).find(|&i| pk(i) == *holder).expect("holders are pool keys")
}

/// A policy owned by the target (the core's `Policy` borrows from it).
pub struct ModelPolicy {
    /// Trusted issuer keys.
    pub trusted: HashSet<[u8; 32]>,
    /// The verifier's clock.
    pub now: u64,
    /// Expected session id.
    pub session: Option<[u8; 16]>,
    /// Revoked link ids.
    pub revoked: HashSet<[u8; 32]>,
}

impl ModelPolicy {
    /// Borrowed as the core's policy.
    pub fn as_policy(&self) -> hopgate_core::chain::Policy<'_> {
        hopgate_core::chain::Policy {
            trusted: &self.trusted,
            now: self.now,
            session: self.session.as_ref(),
            revoked: &self.revoked,
        }
    }
}

/// The usual trusted set: pool keys 0 and 1.
pub fn trusted_default() -> HashSet<[u8; 32]> {
    [pk(0), pk(1)].into_iter().collect()
}

fn put_str_raw(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes `Common` without validating (so malformed fields can be built); for valid
/// fields the bytes equal the core's encoder's (the chain target asserts it).
pub fn encode_common_raw(out: &mut Vec<u8>, f: &CommonFields) {
    out.extend_from_slice(&f.holder);
    out.extend_from_slice(&f.not_before.to_le_bytes());
    out.extend_from_slice(&f.not_after.to_le_bytes());
    out.push(f.max_depth);
    out.extend_from_slice(&f.budget.to_le_bytes());
    put_str_raw(out, &f.unit);
    out.extend_from_slice(&f.nonce);
    out.push(f.caps.len() as u8);
    for (r, a) in &f.caps {
        put_str_raw(out, r);
        put_str_raw(out, a);
    }
    out.extend_from_slice(&f.meta_digest);
}

/// A grant body, encoded here (SPEC §2.4).
pub fn encode_grant_raw(issuer: &[u8; 32], session_id: &[u8; 16], f: &CommonFields) -> Vec<u8> {
    let mut out = vec![wire::KIND_GRANT];
    out.extend_from_slice(issuer);
    out.extend_from_slice(session_id);
    encode_common_raw(&mut out, f);
    out
}

/// A delegation body, encoded here (SPEC §2.5).
pub fn encode_delegation_raw(prev_sig: &[u8; 64], f: &CommonFields) -> Vec<u8> {
    let mut out = vec![wire::KIND_DELEGATION];
    out.extend_from_slice(prev_sig);
    encode_common_raw(&mut out, f);
    out
}

/// The owned fields of a parsed link.
pub fn fields_of(link: &wire::Link<'_>) -> CommonFields {
    CommonFields {
        holder: *link.holder,
        not_before: link.not_before,
        not_after: link.not_after,
        max_depth: link.max_depth,
        budget: link.budget,
        unit: link.unit.to_owned(),
        nonce: *link.nonce,
        caps: link.caps().map(|c| (c.resource.to_owned(), c.ability.to_owned())).collect(),
        meta_digest: *link.meta_digest,
    }
}

/// Changes `bytes` so they certainly differ: flip one byte, cut the tail, or append.
pub fn tamper(inp: &mut Input<'_>, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match inp.below(8) {
        0 if !out.is_empty() => {
            let at = inp.below(out.len());
            out.truncate(at);
        }
        1 => out.push(inp.u8()),
        _ if !out.is_empty() => {
            let at = inp.u16() as usize % out.len();
            out[at] ^= inp.u8() | 1;
        }
        _ => out.push(0),
    }
    out
}

/// Asserts a code is one of SPEC §4's (a `Code` always is; this checks the numbering).
pub fn assert_spec_code(code: Code) {
    let n = code as u8;
    assert!(n <= 18, "code {n} is not a SPEC §4 code");
    assert_eq!(Code::ALL[n as usize], code, "Code::ALL is out of order");
}

/// One chain of the fixed pool: its recipe, bytes, and final holder.
pub struct PoolChain {
    /// How it was made (for the model).
    pub recipe: Recipe,
    /// The chain.
    pub built: Built,
}

impl PoolChain {
    /// Pool index of the final holder's key.
    pub fn holder(&self) -> usize {
        key_of(&self.recipe.links.last().expect("a chain has links").fields.holder)
    }

    /// The last link's fields.
    pub fn last(&self) -> &CommonFields {
        &self.recipe.links.last().expect("a chain has links").fields
    }

    /// The ledger path (revocation id, budget) of the chain, root first.
    pub fn path(&self) -> Vec<([u8; 32], u64)> {
        self.built
            .sigs
            .iter()
            .zip(&self.recipe.links)
            .map(|(s, l)| (*blake3::hash(s).as_bytes(), l.fields.budget))
            .collect()
    }
}

fn plain(
    holder: usize,
    caps: &[(&str, &str)],
    budget: u64,
    unit: &str,
    nb: u64,
    na: u64,
    depth: u8,
    n: u8,
) -> CommonFields {
    CommonFields {
        holder: pk(holder),
        not_before: nb,
        not_after: na,
        max_depth: depth,
        budget,
        unit: unit.to_owned(),
        nonce: [n; 16],
        caps: caps.iter().map(|(r, a)| (r.to_string(), a.to_string())).collect(),
        meta_digest: [0; 32],
    }
}

fn pool_chain(issuer: usize, session: usize, links: Vec<CommonFields>) -> PoolChain {
    let mut planned: Vec<PlannedLink> = Vec::new();
    for (i, fields) in links.into_iter().enumerate() {
        let signer = if i == 0 { issuer } else { key_of(&planned[i - 1].fields.holder) };
        planned.push(PlannedLink { fields, signer, prev_override: None });
    }
    let recipe = Recipe { issuer, session_id: SESSIONS[session], links: planned };
    let built = recipe.build();
    PoolChain { recipe, built }
}

/// A small fixed pool of chains, built once per process: valid chains of 1 to 3 links
/// (two siblings whose budgets add up to more than their parent's), a grant of
/// `u64::MAX` with `max_depth` 0, one from an untrusted issuer, one whose second link
/// widens the budget, and one with a short window.
pub fn pool() -> &'static [PoolChain] {
    static POOL: OnceLock<Vec<PoolChain>> = OnceLock::new();
    POOL.get_or_init(|| {
        let day = 1_000_000;
        let g0 = plain(2, &[("files/reports/*", "read"), ("db/users/*", "*")], 1000, "usd-cents", T0, T0 + day, 3, 1);
        let d1 = plain(3, &[("files/reports/q3.pdf", "read")], 200, "usd-cents", T0, T0 + day, 2, 2);
        let d2 =
            plain(4, &[("files/reports/*", "read"), ("db/users/42", "write")], 900, "usd-cents", T0, T0 + day, 1, 3);
        let d3 = plain(5, &[("files/reports/q3.pdf", "read")], 150, "usd-cents", T0 + 10, T0 + day / 2, 0, 4);
        let wide = plain(3, &[("files/reports/q3.pdf", "read")], 5000, "usd-cents", T0, T0 + day, 1, 5);
        vec![
            pool_chain(0, 1, vec![g0.clone()]),
            pool_chain(0, 1, vec![g0.clone(), d1.clone()]),
            pool_chain(0, 1, vec![g0.clone(), d2]),
            pool_chain(0, 1, vec![g0.clone(), d1, d3]),
            pool_chain(1, 0, vec![plain(6, &[("*", "*")], u64::MAX, "tokens", 0, u64::MAX, 0, 6)]),
            pool_chain(UNTRUSTED, 0, vec![plain(2, &[("*", "*")], 100, "usd-cents", T0, T0 + day, 1, 7)]),
            pool_chain(0, 1, vec![g0, wide]),
            pool_chain(0, 0, vec![plain(5, &[("files/*", "*")], 50, "usd-cents", T0, T0 + 100, 1, 8)]),
        ]
    })
}

/// The expected code of steps (f) 13 and 14 for a request on a chain whose last link
/// is `last`.
pub fn model_grant_covers(last: &CommonFields, ability: &str, resource: &str, cost: u64) -> Option<Code> {
    if !last.caps.iter().any(|(r, a)| model_covers(r, resource) && model_covers(a, ability)) {
        return Some(Code::ScopeDenied);
    }
    if cost > last.budget {
        return Some(Code::CostExceedsGrant);
    }
    None
}

/// A request (ability, resource) on `last`'s caps: usually one it covers.
pub fn draw_request_scope(inp: &mut Input<'_>, last: &CommonFields) -> (String, String) {
    if inp.chance(40) {
        return (pick_str(inp, ABILITIES), pick_str(inp, RESOURCES));
    }
    let (r, a) = &last.caps[inp.below(last.caps.len())];
    let ability = narrow(inp, a, ABILITIES).replace('*', "x");
    let resource = narrow(inp, r, RESOURCES).replace('*', "x");
    (ability, resource)
}

/// Signs an invocation body with pool key `i`.
pub fn sign_invocation(i: usize, body: &[u8]) -> [u8; 64] {
    memo_sign(i, wire::INVOKE_DOMAIN, body)
}
