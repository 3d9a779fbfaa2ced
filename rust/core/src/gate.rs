//! The gate (SPEC §6): every check of SPEC §4 for a batch of requests, with a
//! verified-chain cache, replay protection and reservations on the ledger.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rayon::prelude::*;

use crate::audit::{self, AuditLog, Receipt};
use crate::chain::{self, Policy};
use crate::ledger::{self, Ledger, Reservation};
use crate::sig::{self, Message, SigItem};
use crate::store::Admission;
use crate::wire::{Chain, Invocation, INVOKE_DOMAIN};
use crate::{Code, Error, Result};

/// A chain's accounts and caps, and each link's `not_after`.
type PathAndExpiries = (Vec<(ledger::AccountId, u64)>, Vec<u64>);

/// Below this many requests, parsing stays on the calling thread.
const PARALLEL_REQUESTS: usize = 64;

/// The most prechecked invocations remembered (32 bytes each), at most `cache_size`.
const PRECHECKED: usize = 65_536;

/// Default of [`GateConfig::cache_size`].
pub const DEFAULT_CACHE_SIZE: usize = 100_000;
/// Default of [`GateConfig::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 65_536;

/// How a gate is set up.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// Issuer keys accepted for link 0.
    pub trusted: HashSet<[u8; 32]>,
    /// An invocation is fresh iff `|timestamp - now| <= skew` (seconds).
    pub skew: u64,
    /// How long a consumed nonce is remembered after its timestamp (seconds);
    /// at least `2 * skew`, so a replay is either remembered or stale. The ledger
    /// keeps nonces for the longest window of all the gates that share it.
    pub replay_window: u64,
    /// When set, link 0's session id must equal it.
    pub session: Option<[u8; 16]>,
    /// How many verified chains the cache remembers (0 disables it); 32 bytes each.
    pub cache_size: usize,
    /// The most requests one `check_batch` call takes (at least 1); a larger batch is
    /// an input error, refused before anything is decided. A batch's working memory
    /// is linear in its size (a parsed chain, a digest and its signatures per request).
    pub max_batch: usize,
}

impl GateConfig {
    /// A configuration with SPEC §6's defaults and `trusted` issuers.
    pub fn new(trusted: HashSet<[u8; 32]>) -> Self {
        GateConfig {
            trusted,
            skew: 30,
            replay_window: 300,
            session: None,
            cache_size: DEFAULT_CACHE_SIZE,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// What the gate decided for one request; `reservation` is set iff `code` is OK.
#[derive(Debug)]
pub struct Outcome {
    /// The decision.
    pub code: Code,
    /// The cost, reserved on every account of the chain.
    pub reservation: Option<Reservation>,
    /// The receipt of the decision's audit record, when the gate has an audit log.
    pub receipt: Option<Receipt>,
}

/// What the server requires of one request: the invocation must name exactly this
/// ability and resource (else `SCOPE_DENIED`) and sign a cost of at least `price`
/// (else `COST_BELOW_PRICE`). The server, not the client, decides what a request
/// needs and costs; without a requirement the gate only checks that the chain
/// covers what the invocation asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement<'a> {
    /// The ability the request exercises.
    pub ability: &'a str,
    /// The resource it touches.
    pub resource: &'a str,
    /// The least cost the invocation may sign.
    pub price: u64,
}

/// One request at a gate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// The chain's bytes.
    pub chain: &'a [u8],
    /// The invocation's bytes.
    pub invocation: &'a [u8],
    /// The request body, when the gate is to bind it: BLAKE3 of it must equal the
    /// invocation's `payload_digest` (else `BAD_SIGNATURE`).
    pub payload: Option<&'a [u8]>,
    /// What the server requires of it.
    pub require: Option<Requirement<'a>>,
}

impl<'a> Request<'a> {
    /// A request with neither a payload to bind nor a requirement.
    pub fn new(chain: &'a [u8], invocation: &'a [u8]) -> Self {
        Request { chain, invocation, payload: None, require: None }
    }
}

/// Chain digests whose signatures, links and attenuation are verified: two
/// generations of at most `cap / 2` each (rounded down; one generation of 1 when
/// `cap` is 1). A hit in the old generation is promoted;
/// when the new one fills, the old one is dropped. Lookups and inserts are O(1),
/// memory is bounded by `cap` digests, and what was used recently survives, which is
/// what a least-recently-used cache is for.
struct VerifiedCache {
    cap: usize,
    young: HashSet<[u8; 32]>,
    old: HashSet<[u8; 32]>,
}

impl VerifiedCache {
    fn new(cap: usize) -> Self {
        VerifiedCache { cap, young: HashSet::new(), old: HashSet::new() }
    }

    fn hit(&mut self, digest: &[u8; 32]) -> bool {
        if self.young.contains(digest) {
            return true;
        }
        if self.old.remove(digest) {
            self.insert(*digest);
            return true;
        }
        false
    }

    fn insert(&mut self, digest: [u8; 32]) {
        if self.cap == 0 {
            return;
        }
        // Two generations of at most cap / 2 (a lone one of 1 when cap is 1), so
        // the total never exceeds cap, odd caps included.
        if self.young.len() >= (self.cap / 2).max(1) {
            self.old = std::mem::take(&mut self.young);
            if self.cap == 1 {
                self.old.clear();
            }
        }
        self.young.insert(digest);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// True iff `digest` was there; it is gone afterwards (a use-once entry).
    fn take(&mut self, digest: &[u8; 32]) -> bool {
        self.young.remove(digest) || self.old.remove(digest)
    }
}

/// The key of a prechecked request: the chain's digest and the invocation's bytes,
/// which together fix the invocation's signer (the last link's holder).
fn prechecked_key(chain_digest: &[u8; 32], invocation: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(chain_digest);
    h.update(invocation);
    *h.finalize().as_bytes()
}

/// Outcomes not yet handed to the caller. Dropping them (an error return, or a
/// panic unwinding) releases their reservations instead of forfeiting them: the
/// caller never held them, so nothing can have been spent.
struct Unsettled(Vec<Outcome>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        for o in self.0.drain(..) {
            if let Some(r) = o.reservation {
                // Never recorded (the audit handle is attached only after the
                // decisions' records are written); a durable store that cannot take
                // the release leaves the reservation to its lease.
                let _ = r.release();
            }
        }
    }
}

/// A gate: cheap to share between threads (`&Gate` is enough to check requests).
pub struct Gate {
    config: GateConfig,
    revoked: RwLock<HashSet<[u8; 32]>>,
    ledger: Ledger,
    cache: Mutex<VerifiedCache>,
    /// Requests whose invocation signature [`Gate::precheck`] verified, keyed by
    /// BLAKE3(chain digest | invocation bytes): the check that follows (after the
    /// body is read) need not verify it again.
    prechecked: Mutex<VerifiedCache>,
    audit: Option<Arc<Mutex<AuditLog>>>,
}

/// One request after parsing.
struct Parsed<'a> {
    chain: Chain<'a>,
    inv: Invocation<'a>,
    digest: [u8; 32],
    payload: Option<&'a [u8]>,
    require: Option<Requirement<'a>>,
}

impl Gate {
    /// A gate on `ledger` (shared with other gates given the same ledger).
    pub fn new(config: GateConfig, revoked: HashSet<[u8; 32]>, ledger: Ledger) -> Result<Self> {
        let twice_skew = 2 * u128::from(config.skew);
        if u128::from(config.replay_window) < twice_skew {
            return Err(Error::input(
                "replay_window",
                format!("must be at least 2 * skew ({twice_skew}), got {}", config.replay_window),
            ));
        }
        if config.max_batch == 0 {
            return Err(Error::input("max_batch", "must be at least 1"));
        }
        let cache = Mutex::new(VerifiedCache::new(config.cache_size));
        let prechecked = Mutex::new(VerifiedCache::new(config.cache_size.min(PRECHECKED)));
        // The ledger remembers nonces for the longest window of any gate on it, so
        // no gate sharing it can admit what another still holds fresh.
        ledger.retain(config.replay_window)?;
        Ok(Gate { config, revoked: RwLock::new(revoked), ledger, cache, prechecked, audit: None })
    }

    /// This gate, appending one record per decision to `log` (shared with whoever
    /// else holds it).
    pub fn with_audit(mut self, log: Arc<Mutex<AuditLog>>) -> Self {
        self.audit = Some(log);
        self
    }

    /// The audit log, if any.
    pub fn audit(&self) -> Option<&Arc<Mutex<AuditLog>>> {
        self.audit.as_ref()
    }

    /// The ledger budgets are reserved on.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The configuration.
    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    /// Revokes a link (by revocation id) for every later request.
    pub fn revoke(&self, id: [u8; 32]) {
        self.revoked.write().unwrap_or_else(PoisonError::into_inner).insert(id);
    }

    /// How many verified chains are cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Decides a batch of `(chain, invocation)` requests at `now`, in order; see
    /// [`Gate::check_requests`].
    pub fn check_batch(&self, requests: &[(&[u8], &[u8])], now: u64) -> Result<Vec<Outcome>> {
        let requests: Vec<Request<'_>> = requests.iter().map(|&(c, i)| Request::new(c, i)).collect();
        self.check_requests(&requests, now)
    }

    /// Decides a batch of requests at `now`, in input order: a later request sees the
    /// nonces and reservations of the earlier ones. Every signature not covered by
    /// the cache (all links of uncached chains, every invocation) is checked in one
    /// batch.
    ///
    /// With an audit log, the batch's records are appended in one write after the
    /// decisions and each outcome carries its receipt. If that append fails, every
    /// reservation of the batch is released and the error returned: no request is
    /// allowed without its record. (Nonces of allowed requests stay consumed, so a
    /// retry needs a new invocation; refusing is the safe side.) A batch with no
    /// allowed request is written without forcing it to the disk: every refusal can be
    /// caused without a key (a forged or replayed request), and must not buy one fsync
    /// per request; it reaches the disk with the next synced append (see
    /// [`crate::audit::AuditLog::append_many_with`]).
    ///
    /// If anything panics while the batch holds reservations, they are released as
    /// the panic unwinds: no caller ever saw them, so nothing was spent through them.
    pub fn check_requests(&self, requests: &[Request<'_>], now: u64) -> Result<Vec<Outcome>> {
        if requests.len() > self.config.max_batch {
            return Err(Error::input(
                "requests",
                format!("{} requests in one batch, more than max_batch = {}", requests.len(), self.config.max_batch),
            ));
        }
        let (parsed, verdicts) = self.verify(requests, now);
        // (f) replay and (g) the ledger, for every request that passed the rest, as one
        // step of the ledger's store (one transaction or script call per root).
        let paths: Vec<Option<PathAndExpiries>> = parsed
            .iter()
            .zip(&verdicts)
            .map(|(p, v)| match (p, v) {
                (Ok(p), Ok(())) => {
                    Some((ledger::chain_path(&p.chain), p.chain.links.iter().map(|l| l.not_after).collect()))
                }
                _ => None,
            })
            .collect();
        let admissions: Vec<Admission<'_>> = parsed
            .iter()
            .zip(&paths)
            .filter_map(|(p, path)| {
                let (Ok(p), Some((path, expires))) = (p, path) else { return None };
                Some(Admission { nonce: p.inv.nonce, timestamp: p.inv.timestamp, path, expires, amount: p.inv.cost })
            })
            .collect();
        let mut admitted =
            if admissions.is_empty() { Vec::new() } else { self.ledger.admit(now, &admissions)? }.into_iter();
        let mut outcomes = Unsettled(Vec::with_capacity(parsed.len()));
        for (p, verdict) in parsed.iter().zip(verdicts) {
            let code = match (p, verdict) {
                (Ok(_), Ok(())) => match admitted.next().unwrap_or(Err(Code::BudgetExhausted)) {
                    Ok(reservation) => {
                        outcomes.0.push(Outcome { code: Code::Ok, reservation: Some(reservation), receipt: None });
                        continue;
                    }
                    Err(code) => code,
                },
                (_, Err(code)) => code,
                (Err(code), Ok(())) => *code,
            };
            outcomes.0.push(Outcome { code, reservation: None, receipt: None });
        }
        crate::fault::inject("gate");
        if let Some(log) = &self.audit {
            let digests = |i: usize, p: &std::result::Result<Parsed<'_>, Code>| match p {
                Ok(p) => p.digest,
                Err(_) => *blake3::hash(requests[i].chain).as_bytes(),
            };
            let invocations: Vec<&[u8]> = requests.iter().map(|r| r.invocation).collect();
            let mut inv_digests = vec![[0u8; 32]; requests.len()];
            crate::hash::blake3_many(&invocations, &mut inv_digests);
            let records: Vec<[u8; audit::GATE_RECORD_LEN]> = parsed
                .iter()
                .enumerate()
                .map(|(i, p)| audit::gate_record(now, outcomes.0[i].code, &digests(i, p), &inv_digests[i]))
                .collect();
            let refs: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
            // Only an allowed decision is owed durability on its own: every refusal can be
            // caused without any key (a replayed or forged request), so a batch of refusals
            // is written and synced with the next allowed one.
            let urgent = outcomes.0.iter().any(|o| o.code == Code::Ok);
            // On an error, `outcomes` drops here and releases every reservation.
            let receipts = log.lock().unwrap_or_else(PoisonError::into_inner).append_many_with(&refs, urgent)?;
            for ((o, r), digest) in outcomes.0.iter_mut().zip(receipts).zip(inv_digests) {
                o.receipt = Some(r);
                o.reservation = o.reservation.take().map(|res| res.recorded(Arc::clone(log), digest));
            }
        }
        Ok(std::mem::take(&mut outcomes.0))
    }

    /// What [`Gate::check_requests`] would decide for `request` before the budget
    /// step, with the payload left unbound: SPEC §4 (a) to (f), REPLAY included (read
    /// only: a nonce the ledger remembers, or one at or before a horizon), `Code::Ok`
    /// when all of them pass. It consumes no nonce, reserves nothing and writes no
    /// audit record (it may cache a verified chain). A server calls it to authenticate
    /// a request before reading its body, so that a replayed request is refused
    /// before its body is read.
    ///
    /// A durable store that fails to answer the replay check is an error: nothing is
    /// decided.
    pub fn precheck(&self, request: &Request<'_>, now: u64) -> Result<Code> {
        let request = Request { payload: None, ..*request };
        let (parsed, verdicts) = self.verify(std::slice::from_ref(&request), now);
        let mut code = verdicts.into_iter().next().map_or(Code::Ok, |v| v.err().unwrap_or(Code::Ok));
        if let (Code::Ok, Some(Ok(p))) = (code, parsed.first()) {
            let root = p.chain.first().revocation_id();
            if self.ledger.seen(&root, p.inv.nonce, p.inv.timestamp, now)? {
                code = Code::Replay;
            }
        }
        if let (Code::Ok, Some(Ok(p))) = (code, parsed.first()) {
            self.prechecked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(prechecked_key(&p.digest, request.invocation));
        }
        Ok(code)
    }

    /// Steps (a) to (f) before the replay check, for every request of a batch.
    #[allow(clippy::type_complexity)]
    fn verify<'a>(
        &self,
        requests: &[Request<'a>],
        now: u64,
    ) -> (Vec<std::result::Result<Parsed<'a>, Code>>, Vec<std::result::Result<(), Code>>) {
        // (a) parse, (b) trusted issuer: what fails here is decided already.
        let parse = |r: &Request<'a>| -> std::result::Result<Parsed<'a>, Code> {
            let (Ok(chain), Ok(inv)) = (Chain::parse(r.chain), Invocation::parse(r.invocation)) else {
                return Err(Code::Malformed);
            };
            if !chain.first().issuer().is_some_and(|k| self.config.trusted.contains(k)) {
                return Err(Code::UntrustedIssuer);
            }
            Ok(Parsed { chain, inv, digest: *blake3::hash(r.chain).as_bytes(), payload: r.payload, require: r.require })
        };
        let parsed: Vec<std::result::Result<Parsed<'a>, Code>> = if requests.len() >= PARALLEL_REQUESTS {
            requests.par_iter().map(parse).collect()
        } else {
            requests.iter().map(parse).collect()
        };

        // The cache decides which chains need their links checked, and a precheck
        // which invocation signatures are verified already.
        let cached: Vec<bool> = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            parsed.iter().map(|p| p.as_ref().is_ok_and(|p| cache.hit(&p.digest))).collect()
        };
        let invocation_verified: Vec<bool> = {
            let mut seen = self.prechecked.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.len() == 0 {
                vec![false; parsed.len()]
            } else {
                parsed
                    .iter()
                    .zip(requests)
                    .map(|(p, r)| p.as_ref().is_ok_and(|p| seen.take(&prechecked_key(&p.digest, r.invocation))))
                    .collect()
            }
        };
        // (c) one batch: links of uncached chains, then the invocation, per request.
        let mut items: Vec<SigItem<'_>> = Vec::new();
        let mut spans = Vec::with_capacity(parsed.len());
        for ((p, &hit), &verified) in parsed.iter().zip(&cached).zip(&invocation_verified) {
            let start = items.len();
            if let Ok(p) = p {
                if !hit {
                    chain::push_signatures(&p.chain, &mut items);
                }
                if !verified {
                    let msg = Message { prefix: INVOKE_DOMAIN, body: p.inv.body };
                    items.push(SigItem { msg, sig: p.inv.sig, pk: p.chain.last().holder });
                }
            }
            spans.push(start..items.len());
        }
        let sig_ok = sig::verify_batch(&items);

        let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
        let policy =
            Policy { trusted: &self.config.trusted, now, session: self.config.session.as_ref(), revoked: &revoked };
        let verdicts = parsed
            .iter()
            .zip(&cached)
            .zip(spans)
            .map(|((p, &hit), span)| match p {
                Err(code) => Err(*code),
                Ok(p) => self.judge(p, hit, sig_ok[span].iter().all(|&v| v), &policy),
            })
            .collect();
        (parsed, verdicts)
    }

    /// Steps (c) to (f), up to STALE_INVOCATION, for one parsed request from a
    /// trusted issuer.
    fn judge(
        &self,
        p: &Parsed<'_>,
        cached: bool,
        signatures_ok: bool,
        policy: &Policy<'_>,
    ) -> std::result::Result<(), Code> {
        if !signatures_ok {
            return Err(Code::BadSignature);
        }
        // The body is part of what the holder signed, through its digest.
        if p.payload.is_some_and(|body| blake3::hash(body).as_bytes() != p.inv.payload_digest) {
            return Err(Code::BadSignature);
        }
        let last = p.chain.last();
        if (!cached && !chain::links_unbroken(&p.chain)) || p.inv.tail_sig != last.sig {
            return Err(Code::BrokenLink);
        }
        // Attenuation is judged once: a chain that passes it whole is cached and not
        // judged again below; one that fails is judged link by link, so that the
        // failure is reported in its SPEC §4 place.
        let attenuated = cached || chain::fully_attenuated(&p.chain);
        if attenuated && !cached {
            self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(p.digest);
        }
        let code = chain::link_rules(&p.chain, policy, attenuated);
        if code != Code::Ok {
            return Err(code);
        }
        if p.require.is_some_and(|r| r.ability != p.inv.ability || r.resource != p.inv.resource) {
            return Err(Code::ScopeDenied);
        }
        if let Some(code) = chain::grant_covers(last, p.inv.ability, p.inv.resource, p.inv.cost) {
            return Err(code);
        }
        if p.require.is_some_and(|r| p.inv.cost < r.price) {
            return Err(Code::CostBelowPrice);
        }
        if p.inv.timestamp.abs_diff(policy.now) > self.config.skew {
            return Err(Code::StaleInvocation);
        }
        Ok(())
    }
}
