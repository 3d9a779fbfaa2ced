//! The gate (SPEC §6): every check of SPEC §4 for a batch of requests, with a
//! verified-chain cache, replay protection and reservations on the ledger.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rayon::prelude::*;

use crate::audit::{self, AuditLog, Receipt};
use crate::chain::{self, Policy};
use crate::ledger::{self, Ledger, Reservation};
use crate::sig::{self, Message, SigItem};
use crate::wire::{Chain, Invocation, INVOKE_DOMAIN};
use crate::{Code, Error, Result};

/// Below this many requests, parsing stays on the calling thread.
const PARALLEL_REQUESTS: usize = 64;

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
    /// at least `2 * skew`, so a replay is either remembered or stale.
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
}

/// Outcomes not yet handed to the caller. Dropping them (an error return, or a
/// panic unwinding) releases their reservations instead of forfeiting them: the
/// caller never held them, so nothing can have been spent.
struct Unsettled(Vec<Outcome>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        for o in self.0.drain(..) {
            if let Some(r) = o.reservation {
                r.release();
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
    audit: Option<Arc<Mutex<AuditLog>>>,
}

/// One request after parsing.
struct Parsed<'a> {
    chain: Chain<'a>,
    inv: Invocation<'a>,
    digest: [u8; 32],
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
        Ok(Gate { config, revoked: RwLock::new(revoked), ledger, cache, audit: None })
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

    /// Decides a batch of `(chain, invocation)` requests at `now`, in order. Every
    /// signature not covered by the cache (all links of uncached chains, every
    /// invocation) is checked in one batch.
    ///
    /// With an audit log, the batch's records are appended in one write after the
    /// decisions and each outcome carries its receipt. If that append fails, every
    /// reservation of the batch is released and the error returned: no request is
    /// allowed without its record. (Nonces of allowed requests stay consumed, so a
    /// retry needs a new invocation; refusing is the safe side.)
    ///
    /// If anything panics while the batch holds reservations, they are released as
    /// the panic unwinds: no caller ever saw them, so nothing was spent through them.
    pub fn check_batch<'a>(&self, requests: &[(&'a [u8], &'a [u8])], now: u64) -> Result<Vec<Outcome>> {
        if requests.len() > self.config.max_batch {
            return Err(Error::input(
                "requests",
                format!("{} requests in one batch, more than max_batch = {}", requests.len(), self.config.max_batch),
            ));
        }
        // (a) parse, (b) trusted issuer: what fails here is decided already.
        let parse = |&(c, i): &(&'a [u8], &'a [u8])| -> std::result::Result<Parsed<'a>, Code> {
            let (Ok(chain), Ok(inv)) = (Chain::parse(c), Invocation::parse(i)) else { return Err(Code::Malformed) };
            if !chain.first().issuer().is_some_and(|k| self.config.trusted.contains(k)) {
                return Err(Code::UntrustedIssuer);
            }
            Ok(Parsed { chain, inv, digest: *blake3::hash(c).as_bytes() })
        };
        let parsed: Vec<std::result::Result<Parsed<'a>, Code>> = if requests.len() >= PARALLEL_REQUESTS {
            requests.par_iter().map(parse).collect()
        } else {
            requests.iter().map(parse).collect()
        };

        // The cache decides which chains need their links checked.
        let cached: Vec<bool> = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            parsed.iter().map(|p| p.as_ref().is_ok_and(|p| cache.hit(&p.digest))).collect()
        };
        // (c) one batch: links of uncached chains, then the invocation, per request.
        let mut items: Vec<SigItem<'_>> = Vec::new();
        let mut spans = Vec::with_capacity(parsed.len());
        for (p, &hit) in parsed.iter().zip(&cached) {
            let start = items.len();
            if let Ok(p) = p {
                if !hit {
                    chain::push_signatures(&p.chain, &mut items);
                }
                let msg = Message { prefix: INVOKE_DOMAIN, body: p.inv.body };
                items.push(SigItem { msg, sig: p.inv.sig, pk: p.chain.last().holder });
            }
            spans.push(start..items.len());
        }
        let sig_ok = sig::verify_batch(&items);

        let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
        let policy = Policy { trusted: &self.config.trusted, now, session: self.config.session.as_ref(), revoked: &revoked };
        let mut outcomes = Unsettled(Vec::with_capacity(parsed.len()));
        for ((p, &hit), span) in parsed.iter().zip(&cached).zip(spans) {
            outcomes.0.push(match p {
                Err(code) => Outcome { code: *code, reservation: None, receipt: None },
                Ok(p) => self.decide(p, hit, sig_ok[span].iter().all(|&v| v), &policy),
            });
        }
        drop(revoked);
        crate::fault::inject("gate");
        if let Some(log) = &self.audit {
            let digests = |i: usize, p: &std::result::Result<Parsed<'_>, Code>| match p {
                Ok(p) => p.digest,
                Err(_) => *blake3::hash(requests[i].0).as_bytes(),
            };
            let invocations: Vec<&[u8]> = requests.iter().map(|r| r.1).collect();
            let mut inv_digests = vec![[0u8; 32]; requests.len()];
            crate::hash::blake3_many(&invocations, &mut inv_digests);
            let records: Vec<[u8; audit::GATE_RECORD_LEN]> = parsed
                .iter()
                .enumerate()
                .map(|(i, p)| audit::gate_record(now, outcomes.0[i].code, &digests(i, p), &inv_digests[i]))
                .collect();
            let refs: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
            // On an error, `outcomes` drops here and releases every reservation.
            let receipts = log.lock().unwrap_or_else(PoisonError::into_inner).append_many(&refs)?;
            for (o, r) in outcomes.0.iter_mut().zip(receipts) {
                o.receipt = Some(r);
            }
        }
        Ok(std::mem::take(&mut outcomes.0))
    }

    /// Steps (c)–(g) for one parsed request from a trusted issuer.
    fn decide(&self, p: &Parsed<'_>, cached: bool, signatures_ok: bool, policy: &Policy<'_>) -> Outcome {
        let deny = |code| Outcome { code, reservation: None, receipt: None };
        if !signatures_ok {
            return deny(Code::BadSignature);
        }
        let last = p.chain.last();
        if (!cached && !chain::links_unbroken(&p.chain)) || p.inv.tail_sig != last.sig {
            return deny(Code::BrokenLink);
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
            return deny(code);
        }
        if let Some(code) = chain::grant_covers(last, p.inv.ability, p.inv.resource, p.inv.cost) {
            return deny(code);
        }
        if p.inv.timestamp.abs_diff(policy.now) > self.config.skew {
            return deny(Code::StaleInvocation);
        }
        let path = ledger::chain_path(&p.chain);
        let expires: Vec<u64> = p.chain.links.iter().map(|l| l.not_after).collect();
        let expiry = p.inv.timestamp.saturating_add(self.config.replay_window);
        match self.ledger.admit(p.inv.nonce, policy.now, expiry, &path, &expires, p.inv.cost) {
            Ok(reservation) => Outcome { code: Code::Ok, reservation: Some(reservation), receipt: None },
            Err(code) => deny(code),
        }
    }
}
