//! Building chains that only narrow (SPEC §1) and verifying many chains at once with
//! the precedence of SPEC §4.
//!
//! The builders reuse the verifier's own checks: a new link is encoded, appended,
//! parsed back and judged by [`attenuation`], so a chain the builder accepts is one
//! the verifier accepts, by construction.

use std::collections::HashSet;

use rand_core::{OsRng, RngCore};
use rayon::prelude::*;

use crate::sig::{self, Message, SigItem, SigningKey};
use crate::wire::{self, Anchor, Cap, Chain, CommonFields, InvocationFields, Link, INVOKE_DOMAIN, LINK_DOMAIN};
use crate::{Code, Error, Result};

/// Below this many chains, parsing and judging stay on the calling thread.
const PARALLEL_CHAINS: usize = 64;

/// What a verifier trusts and when it is asked.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    /// Issuer keys accepted for link 0.
    pub trusted: &'a HashSet<[u8; 32]>,
    /// The verifier's clock (unix seconds).
    pub now: u64,
    /// When set, link 0's session id must equal it.
    pub session: Option<&'a [u8; 16]>,
    /// Revoked links, by revocation id (BLAKE3 of the link's signature).
    pub revoked: &'a HashSet<[u8; 32]>,
}

/// The signed message of a link.
pub fn link_message<'a>(link: &Link<'a>) -> Message<'a> {
    Message { prefix: LINK_DOMAIN, body: link.body }
}

/// The key that must have signed link `i`: the issuer for link 0, else the holder of
/// link i − 1.
pub fn signer_of<'a>(chain: &Chain<'a>, i: usize) -> &'a [u8; 32] {
    match chain.links[i].anchor {
        Anchor::Grant { issuer, .. } => issuer,
        Anchor::Delegation { .. } => chain.links[i - 1].holder,
    }
}

/// Appends one signature item per link of `chain`.
pub fn push_signatures<'a>(chain: &Chain<'a>, items: &mut Vec<SigItem<'a>>) {
    for (i, link) in chain.links.iter().enumerate() {
        items.push(SigItem { msg: link_message(link), sig: link.sig, pk: signer_of(chain, i) });
    }
}

/// Attenuation of `child` against `parent` (SPEC §1, rules 1–4, in that order).
pub fn attenuation(parent: &Link<'_>, child: &Link<'_>) -> Option<Code> {
    if !child.caps().all(|c| parent.caps().any(|p| p.covers(&c))) {
        return Some(Code::ScopeWidened);
    }
    if child.budget > parent.budget || child.unit != parent.unit {
        return Some(Code::BudgetWidened);
    }
    if child.not_before < parent.not_before || child.not_after > parent.not_after {
        return Some(Code::TimeWidened);
    }
    if parent.max_depth == 0 || child.max_depth > parent.max_depth - 1 {
        return Some(Code::DepthExceeded);
    }
    None
}

/// Time, session (link 0 only) and revocation of link `i` (SPEC §4 step (e), 9–12).
pub fn validity(link: &Link<'_>, i: usize, policy: &Policy<'_>) -> Option<Code> {
    if policy.now < link.not_before {
        return Some(Code::NotYetValid);
    }
    if policy.now >= link.not_after {
        return Some(Code::Expired);
    }
    if let (0, Some(expected), Anchor::Grant { session_id, .. }) = (i, policy.session, link.anchor) {
        if session_id != expected {
            return Some(Code::SessionMismatch);
        }
    }
    if !policy.revoked.is_empty() && policy.revoked.contains(&link.revocation_id()) {
        return Some(Code::Revoked);
    }
    None
}

/// Step (d) of SPEC §4 for the links: does every `prev_sig` name the previous signature?
pub fn links_unbroken(chain: &Chain<'_>) -> bool {
    chain.links.windows(2).all(|pair| match pair[1].anchor {
        Anchor::Delegation { prev_sig } => prev_sig == pair[0].sig,
        Anchor::Grant { .. } => false,
    })
}

/// Step (e) of SPEC §4: link by link, attenuation against the parent (skipped when
/// `attenuated` says it was already verified, as for a cached chain), then validity.
pub fn link_rules(chain: &Chain<'_>, policy: &Policy<'_>, attenuated: bool) -> Code {
    for (i, link) in chain.links.iter().enumerate() {
        let widened = if i > 0 && !attenuated { attenuation(&chain.links[i - 1], link) } else { None };
        if let Some(code) = widened.or_else(|| validity(link, i, policy)) {
            return code;
        }
    }
    Code::Ok
}

/// True iff every link attenuates its parent: what a verified-chain cache may remember.
pub fn fully_attenuated(chain: &Chain<'_>) -> bool {
    chain.links.windows(2).all(|pair| attenuation(&pair[0], &pair[1]).is_none())
}

/// Steps (d) and (e) of SPEC §4 for a chain whose signatures were checked.
pub fn links_code(chain: &Chain<'_>, policy: &Policy<'_>) -> Code {
    if !links_unbroken(chain) {
        return Code::BrokenLink;
    }
    link_rules(chain, policy, false)
}

/// Verifies many chains (SPEC §4 steps (a)–(e)); one code per chain. Every signature
/// of every chain that gets that far goes into one batch.
pub fn verify_chains<'a>(chains: &[&'a [u8]], policy: &Policy<'_>) -> Vec<Code> {
    let parallel = chains.len() >= PARALLEL_CHAINS;
    let parse = |bytes: &&'a [u8]| Chain::parse(bytes);
    let parsed: Vec<Result<Chain<'a>>> =
        if parallel { chains.par_iter().map(parse).collect() } else { chains.iter().map(parse).collect() };

    // (a) parse, (b) trusted issuer; the survivors' signatures go into one batch.
    let mut early: Vec<Option<Code>> = Vec::with_capacity(chains.len());
    let mut items = Vec::new();
    let mut spans = Vec::with_capacity(chains.len());
    for p in &parsed {
        let start = items.len();
        let code = match p {
            Err(_) => Some(Code::Malformed),
            Ok(c) if !c.first().issuer().is_some_and(|k| policy.trusted.contains(k)) => Some(Code::UntrustedIssuer),
            Ok(c) => {
                push_signatures(c, &mut items);
                None
            }
        };
        early.push(code);
        spans.push(start..items.len());
    }
    let sig_ok = sig::verify_batch(&items);

    let judge = |((p, early), span): ((&Result<Chain<'_>>, &Option<Code>), &std::ops::Range<usize>)| {
        if let Some(code) = *early {
            return code;
        }
        match p {
            Ok(_) if !sig_ok[span.clone()].iter().all(|&v| v) => Code::BadSignature,
            Ok(chain) => links_code(chain, policy),
            Err(_) => Code::Malformed,
        }
    };
    if parallel {
        parsed.par_iter().zip(early.par_iter()).zip(spans.par_iter()).map(judge).collect()
    } else {
        parsed.iter().zip(early.iter()).zip(spans.iter()).map(judge).collect()
    }
}

/// A fresh random 16-byte nonce.
pub fn random_nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    OsRng.fill_bytes(&mut n);
    n
}

/// Builds link 0 signed by `issuer`: a one-link chain.
pub fn grant(issuer: &SigningKey, session_id: &[u8; 16], fields: &CommonFields) -> Result<Vec<u8>> {
    fields.validate()?;
    let body = wire::encode_grant_body(issuer.public_key(), session_id, fields);
    let sig = issuer.sign(Message { prefix: LINK_DOMAIN, body: &body });
    let mut out = Vec::with_capacity(4 + 1 + 4 + body.len() + 64);
    out.extend_from_slice(wire::CHAIN_MAGIC);
    out.push(1);
    wire::encode_link(&mut out, &body, &sig);
    finish(out)
}

/// What a delegation sets; `None` inherits the parent's value (and `max_depth`
/// defaults to the parent's minus one).
#[derive(Clone, Debug, Default)]
pub struct Delegation {
    /// Capabilities; each must be covered by one of the parent's.
    pub caps: Option<Vec<(String, String)>>,
    /// At most the parent's budget.
    pub budget: Option<u64>,
    /// Must equal the parent's unit.
    pub unit: Option<String>,
    /// At or after the parent's.
    pub not_before: Option<u64>,
    /// At or before the parent's.
    pub not_after: Option<u64>,
    /// At most the parent's minus one.
    pub max_depth: Option<u8>,
    /// Random when `None`.
    pub nonce: Option<[u8; 16]>,
    /// Zeros when `None`.
    pub meta_digest: Option<[u8; 32]>,
}

/// Appends a delegation to `chain`, signed by its current holder, naming `next`.
/// Refuses (nothing built) whatever a verifier would deny.
pub fn delegate(chain: &[u8], holder: &SigningKey, next: &[u8; 32], d: Delegation) -> Result<Vec<u8>> {
    let parsed = Chain::parse(chain)?;
    let parent = parsed.last();
    if parsed.links.len() >= wire::MAX_LINKS {
        return Err(Error::refused(Code::Malformed, "a chain holds at most 16 links"));
    }
    check_holder(parent, holder)?;
    let max_depth = match d.max_depth {
        Some(depth) => depth,
        None => parent.max_depth.checked_sub(1).ok_or_else(|| {
            Error::refused(Code::DepthExceeded, "the parent link allows no further delegation (max_depth 0)")
        })?,
    };
    let fields = CommonFields {
        holder: *next,
        not_before: d.not_before.unwrap_or(parent.not_before),
        not_after: d.not_after.unwrap_or(parent.not_after),
        max_depth,
        budget: d.budget.unwrap_or(parent.budget),
        unit: d.unit.unwrap_or_else(|| parent.unit.to_owned()),
        nonce: d.nonce.unwrap_or_else(random_nonce),
        caps: d.caps.unwrap_or_else(|| parent.caps().map(|c| (c.resource.into(), c.ability.into())).collect()),
        meta_digest: d.meta_digest.unwrap_or([0; 32]),
    };
    fields.validate()?;
    let body = wire::encode_delegation_body(parent.sig, &fields);
    let sig = holder.sign(Message { prefix: LINK_DOMAIN, body: &body });
    let mut out = Vec::with_capacity(chain.len() + 4 + body.len() + 64);
    out.extend_from_slice(chain);
    out[4] += 1;
    wire::encode_link(&mut out, &body, &sig);
    if out.len() > wire::MAX_CHAIN_LEN {
        return Err(Error::refused(Code::Malformed, "the chain would exceed 65536 bytes"));
    }
    let extended = Chain::parse(&out)?;
    let n = extended.links.len();
    if let Some(code) = attenuation(&extended.links[n - 2], &extended.links[n - 1]) {
        return Err(Error::refused(code, refusal_reason(code)));
    }
    drop(extended);
    Ok(out)
}

fn refusal_reason(code: Code) -> &'static str {
    match code {
        Code::ScopeWidened => "a capability is not covered by any capability of the parent link",
        Code::BudgetWidened => "the budget exceeds the parent's, or the unit differs",
        Code::TimeWidened => "the validity window is not inside the parent's",
        Code::DepthExceeded => "max_depth must be at most the parent's minus one",
        Code::ScopeDenied => "(resource, ability) is not covered by the last link",
        Code::CostExceedsGrant => "the cost exceeds the last link's budget",
        _ => "refused",
    }
}

fn check_holder(link: &Link<'_>, key: &SigningKey) -> Result<()> {
    if key.public_key() != link.holder {
        return Err(Error::refused(Code::BadSignature, "the signing key is not the chain's current holder"));
    }
    Ok(())
}

fn finish(out: Vec<u8>) -> Result<Vec<u8>> {
    if out.len() > wire::MAX_CHAIN_LEN {
        return Err(Error::refused(Code::Malformed, "the chain would exceed 65536 bytes"));
    }
    Chain::parse(&out)?;
    Ok(out)
}

/// SPEC §4 (f) codes 13 and 14: is the request within the last link's grant?
pub fn grant_covers(last: &Link<'_>, ability: &str, resource: &str, cost: u64) -> Option<Code> {
    let wanted = Cap { resource, ability };
    if !last.caps().any(|c| c.covers(&wanted)) {
        return Some(Code::ScopeDenied);
    }
    if cost > last.budget {
        return Some(Code::CostExceedsGrant);
    }
    None
}

/// What an invocation asks for.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// What is done.
    pub ability: &'a str,
    /// What it is done to.
    pub resource: &'a str,
    /// Cost in the chain's unit.
    pub cost: u64,
    /// Unix seconds.
    pub timestamp: u64,
    /// Random when `None`.
    pub nonce: Option<[u8; 16]>,
    /// The request body the invocation authorises.
    pub payload: &'a [u8],
}

/// Builds an invocation of `chain` signed by its final holder.
pub fn invoke(chain: &[u8], holder: &SigningKey, req: &Request<'_>) -> Result<Vec<u8>> {
    let parsed = Chain::parse(chain)?;
    let last = parsed.last();
    wire::check_str("ability", req.ability)?;
    wire::check_str("resource", req.resource)?;
    check_holder(last, holder)?;
    if let Some(code) = grant_covers(last, req.ability, req.resource, req.cost) {
        return Err(Error::refused(code, refusal_reason(code)));
    }
    let body = InvocationFields {
        tail_sig: *last.sig,
        ability: req.ability.to_owned(),
        resource: req.resource.to_owned(),
        cost: req.cost,
        timestamp: req.timestamp,
        nonce: req.nonce.unwrap_or_else(random_nonce),
        payload_digest: *blake3::hash(req.payload).as_bytes(),
    }
    .encode_body()?;
    let sig = holder.sign(Message { prefix: INVOKE_DOMAIN, body: &body });
    Ok(wire::encode_invocation(&body, &sig))
}
