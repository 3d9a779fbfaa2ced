//! The gate (SPEC §6) and its ledger (SPEC §5), against a model.
//!
//! The input sets up a gate (cache of 0..=4 chains, so eviction happens; skew, replay
//! window, session, revoked links, sometimes a tiny `max_batch`) and then runs 1..=3
//! `check_batch` calls of 1..=3 requests at a clock that only moves forward. Requests use a small pool of real chains built from fixed
//! keys (valid ones of 1 to 3 links whose budgets fan out, an untrusted issuer, a
//! widening link, a short window), changed copies of them, or raw bytes; invocations
//! are encoded and signed here, with fields from the input: valid, replayed nonces
//! (a pool of four), stale timestamps, costs over the grant or over what is left,
//! a wrong signer, a wrong `tail_sig`, or changed bytes. Between batches links may be
//! revoked and every reservation is settled as the input says (commit within or over
//! the amount, release, or drop, which forfeits).
//!
//! Checked after every batch and every settlement:
//! - one outcome per request, a reservation iff the code is OK, for the request's
//!   cost on the chain's path;
//! - every code equals the model's: SPEC §4 order, the chain part from
//!   `Recipe::expected` for pool chains (or `verify_chains` plus the invocation's
//!   signature for changed ones), then scope, cost, freshness, replay (a model nonce
//!   set: a nonce is never allowed twice in its window) and budget (a model ledger);
//! - the ledger's accounts equal the model's exactly, and no account has
//!   `spent + reserved > cap + overrun` (only an overrun can exceed a cap);
//! - the replay set's size equals the model's; the cache never holds more than its
//!   two generations allow;
//! - the first batch, checked one request at a time on a fresh identical gate, gives
//!   the same codes.
#![no_main]

use std::collections::{HashMap, HashSet};

use hopgate_core::chain;
use hopgate_core::gate::{Gate, GateConfig};
use hopgate_core::ledger::{Account, Ledger, SettleError};
use hopgate_core::sig::{self, Message};
use hopgate_core::wire::{self, Chain, Invocation, InvocationFields, INVOKE_DOMAIN};
use hopgate_core::Code;
use hopgate_fuzz::*;
use libfuzzer_sys::fuzz_target;

/// Nonces that requests reuse, so replays happen.
const NONCES: [[u8; 16]; 4] = [[0xa0; 16], [0xa1; 16], [0xa2; 16], [0xa3; 16]];

/// One request and what the model needs to judge it.
struct Req {
    chain: Vec<u8>,
    inv: Vec<u8>,
    /// The pool chain, when `chain` is one unchanged.
    pool: Option<usize>,
    /// Invocation fields as signed, when `inv` is unchanged; with the signer.
    fields: Option<(InvocationFields, usize)>,
}

#[derive(Default)]
struct Model {
    accounts: HashMap<[u8; 32], Account>,
    /// (root account, nonce) -> expiry: the replay identity is per root.
    nonces: HashMap<([u8; 32], [u8; 16]), u64>,
    revoked: HashSet<[u8; 32]>,
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let skew = [0, 1, 30, 300][inp.below(4)];
    let replay_window = match inp.below(8) {
        0 if skew > 0 => 2 * skew - 1, // refused
        1 => 2 * skew,
        2 => u64::MAX,
        _ => 2 * skew + u64::from(inp.u16()),
    };
    let session = match inp.below(4) {
        0 => Some(SESSIONS[0]),
        1 => Some(SESSIONS[1]),
        _ => None,
    };
    let cache_size = inp.below(5);
    // From `GateConfig::new`, so fields added later keep their defaults.
    let mut config = GateConfig::new(trusted_default());
    config.skew = skew;
    config.replay_window = replay_window;
    config.session = session;
    config.cache_size = cache_size;
    if inp.chance(16) {
        config.max_batch = inp.below(4); // 0 is refused
    }
    let mut model = Model::default();
    if inp.chance(24) {
        model.revoked.insert(link_id(&mut inp));
    }
    let gate = match Gate::new(config.clone(), model.revoked.clone(), Ledger::new()) {
        Ok(g) => g,
        Err(e) => {
            assert!(replay_window < 2 * skew || config.max_batch == 0, "gate refused a valid config: {e}");
            assert_eq!(e.code(), Code::Malformed);
            return;
        }
    };
    assert!(replay_window >= 2 * skew, "gate accepted replay_window < 2 * skew");
    assert!(config.max_batch >= 1, "gate accepted max_batch 0");

    let initial_revoked = model.revoked.clone();
    let mut now = T0 + 1000 + u64::from(inp.u16());
    let batches = 1 + inp.below(3).min(inp.below(3));
    let compare_single = inp.chance(64);
    for b in 0..batches {
        now += match inp.below(8) {
            0 => u64::from(inp.u16()),
            1 => skew + 1,
            2 => replay_window.min(1 << 40),
            _ => u64::from(inp.u8() % 4),
        };
        if b > 0 && inp.chance(24) {
            let id = link_id(&mut inp);
            gate.revoke(id);
            model.revoked.insert(id);
        }
        let n = 1 + inp.below(3).min(inp.below(4));
        let reqs: Vec<Req> = (0..n).map(|_| draw_request(&mut inp, now, skew)).collect();
        let pairs: Vec<(&[u8], &[u8])> = reqs.iter().map(|r| (&r.chain[..], &r.inv[..])).collect();
        let outcomes = match gate.check_batch(&pairs, now) {
            Ok(o) => o,
            Err(e) => {
                // Only an over-long batch is refused, before anything is decided.
                assert!(n > config.max_batch, "check_batch failed without an audit log: {e}");
                assert_eq!(e.code(), Code::Malformed);
                check_ledger(&gate, &model, now);
                continue;
            }
        };
        assert!(n <= config.max_batch, "a batch over max_batch was decided");
        assert_eq!(outcomes.len(), n, "one outcome per request");

        let policy = ModelPolicy { trusted: config.trusted.clone(), now, session, revoked: model.revoked.clone() };
        let mut codes = Vec::with_capacity(n);
        let mut held = Vec::new();
        for (r, o) in reqs.iter().zip(outcomes) {
            assert_spec_code(o.code);
            assert!(o.receipt.is_none());
            let (want, path, cost) = judge(r, &policy, &config, &mut model);
            assert_eq!(o.code, want, "gate code differs from the model");
            assert_eq!(o.reservation.is_some(), o.code == Code::Ok, "reservation iff OK");
            if let Some(res) = o.reservation {
                assert_eq!(res.amount(), cost);
                let ids: Vec<[u8; 32]> = path.iter().map(|(id, _)| *id).collect();
                assert_eq!(res.path(), &ids[..]);
                held.push(res);
            }
            codes.push(o.code);
        }
        check_ledger(&gate, &model, now);
        assert!(gate.cached() <= cache_size, "cache holds {} > its bound {cache_size}", gate.cached());

        if b == 0 && compare_single {
            // The same requests one by one on a fresh, identical gate.
            let fresh = Gate::new(config.clone(), initial_revoked.clone(), Ledger::new()).expect("same config");
            let mut keep = Vec::new();
            for (i, pair) in pairs.iter().enumerate() {
                let mut o = fresh.check_batch(std::slice::from_ref(pair), now).expect("no audit log");
                assert_eq!(o.len(), 1);
                assert_eq!(o[0].code, codes[i], "request {i}: batch and one-by-one disagree");
                keep.extend(o.pop().and_then(|o| o.reservation));
            }
            keep.into_iter().for_each(|r| r.release().expect("no audit log"));
        }

        // Settle every reservation as the input says.
        for res in held {
            let amount = res.amount();
            let path: Vec<[u8; 32]> = res.path().to_vec();
            let (charge, outcome) = match inp.below(4) {
                0 => {
                    let actual = amount.checked_add(1).map_or(inp.u64(), |m| inp.u64() % m);
                    (
                        actual,
                        res.commit(actual).map_err(|e| match e {
                            SettleError::Overrun(o) => o.actual,
                            e => panic!("a memory ledger without an audit log: {e}"),
                        }),
                    )
                }
                1 => {
                    let actual = amount.saturating_add(1 + u64::from(inp.u8()));
                    (
                        actual,
                        res.commit(actual).map_err(|e| match e {
                            SettleError::Overrun(o) => o.actual,
                            e => panic!("a memory ledger without an audit log: {e}"),
                        }),
                    )
                }
                2 => {
                    res.release().expect("no audit log");
                    (0, Ok(()))
                }
                _ => {
                    drop(res); // forfeited: counts as spent
                    (amount, Ok(()))
                }
            };
            assert_eq!(outcome.is_err(), charge > amount, "Overrun iff actual > reserved");
            for id in &path {
                let acc = model.accounts.get_mut(id).expect("reserved account exists");
                acc.reserved -= amount;
                acc.spent = acc.spent.saturating_add(charge);
                acc.overrun = acc.overrun.saturating_add(charge.saturating_sub(amount));
            }
            check_ledger(&gate, &model, now);
        }
    }
}

/// A revocation id of some pool link, or a random one.
fn link_id(inp: &mut Input<'_>) -> [u8; 32] {
    let pool = pool();
    let pc = &pool[inp.below(pool.len())];
    if inp.chance(32) {
        return inp.array();
    }
    *blake3::hash(&pc.built.sigs[inp.below(pc.built.sigs.len())]).as_bytes()
}

fn draw_request(inp: &mut Input<'_>, now: u64, skew: u64) -> Req {
    let pool = pool();
    let idx = inp.below(pool.len());
    let pc = &pool[idx];
    let last = pc.last();
    let (ability, resource) = draw_request_scope(inp, last);
    let cost = match inp.below(8) {
        0 => inp.u64(),
        1 => last.budget.saturating_add(1),
        2 => last.budget,
        _ => u64::from(inp.u8()) % last.budget.saturating_add(1),
    };
    let timestamp = match inp.below(8) {
        0 => now.saturating_add(skew).saturating_add(1),
        1 => now.saturating_sub(skew).saturating_sub(1),
        2 => now.saturating_add(skew),
        3 => now.saturating_sub(skew),
        4 => inp.u64(),
        _ => now.saturating_add(u64::from(inp.u8()) % (skew + 1)).saturating_sub(u64::from(inp.u8()) % (skew + 1)),
    };
    let nonce = if inp.chance(96) { NONCES[inp.below(NONCES.len())] } else { inp.array() };
    let tail_sig = if inp.chance(8) {
        let other = &pool[inp.below(pool.len())];
        *other.built.sigs.last().expect("links")
    } else {
        *pc.built.sigs.last().expect("links")
    };
    let fields = InvocationFields {
        tail_sig,
        ability,
        resource,
        cost,
        timestamp,
        nonce,
        payload_digest: *blake3::hash(&[]).as_bytes(),
    };
    let body = fields.encode_body().expect("valid request strings");
    let signer = if inp.chance(8) { inp.below(NKEYS) } else { pc.holder() };
    let inv = wire::encode_invocation(&body, &sign_invocation(signer, &body));
    let mut req = Req { chain: pc.built.bytes.clone(), inv, pool: Some(idx), fields: Some((fields, signer)) };
    match inp.below(32) {
        0 => {
            req.chain = tamper(inp, &req.chain);
            req.pool = None;
        }
        1 => {
            req.inv = tamper(inp, &req.inv);
            req.fields = None;
        }
        2 => {
            let len = inp.below(300);
            req.chain = inp.take(len).to_vec();
            req.pool = None;
        }
        _ => {}
    }
    req
}

/// The model's code for one request, applied to the model's nonces and ledger when
/// it is OK. Returns (code, ledger path, cost).
fn judge(r: &Req, policy: &ModelPolicy, config: &GateConfig, model: &mut Model) -> (Code, Vec<([u8; 32], u64)>, u64) {
    // (a) parse both.
    let (Ok(chain), Ok(inv)) = (Chain::parse(&r.chain), Invocation::parse(&r.inv)) else {
        return (Code::Malformed, Vec::new(), 0);
    };
    let path: Vec<([u8; 32], u64)> = chain.links.iter().map(|l| (*blake3::hash(l.sig).as_bytes(), l.budget)).collect();
    let holder = *chain.last().holder;
    // (b)-(e) for the chain: the recipe model for pool chains, verify_chains otherwise.
    let chain_code = match r.pool {
        Some(i) => {
            let pc = &pool()[i];
            pc.recipe.expected(&pc.built, policy)
        }
        None => chain::verify_chains(&[&r.chain], &policy.as_policy())[0],
    };
    // The invocation's signature, by the last link's holder.
    let inv_sig_ok = match &r.fields {
        Some((_, signer)) => pk(*signer) == holder,
        None => sig::verify(Message { prefix: INVOKE_DOMAIN, body: inv.body }, inv.sig, &holder),
    };
    let code = match chain_code {
        Code::Malformed | Code::UntrustedIssuer | Code::BadSignature => chain_code,
        _ if !inv_sig_ok => Code::BadSignature,
        Code::BrokenLink => Code::BrokenLink,
        _ if inv.tail_sig != chain.last().sig => Code::BrokenLink,
        Code::Ok => request_code(&chain, &inv, &path, policy.now, config, model),
        other => other,
    };
    (code, path, inv.cost)
}

/// Steps (f) and (g) for a request whose chain and signatures passed.
fn request_code(
    chain: &Chain<'_>,
    inv: &Invocation<'_>,
    path: &[([u8; 32], u64)],
    now: u64,
    config: &GateConfig,
    model: &mut Model,
) -> Code {
    let last = fields_of(chain.last());
    if let Some(code) = model_grant_covers(&last, inv.ability, inv.resource, inv.cost) {
        return code;
    }
    if inv.timestamp.abs_diff(now) > config.skew {
        return Code::StaleInvocation;
    }
    let key = (path[0].0, *inv.nonce);
    if model.nonces.get(&key).is_some_and(|&expiry| expiry >= now) {
        return Code::Replay;
    }
    let fits = path.iter().all(|(id, cap)| {
        let a = model.accounts.get(id).copied().unwrap_or(Account { cap: *cap, ..Account::default() });
        u128::from(a.spent) + u128::from(a.reserved) + u128::from(inv.cost) <= u128::from(a.cap)
    });
    if !fits {
        return Code::BudgetExhausted;
    }
    for (id, cap) in path {
        model.accounts.entry(*id).or_insert(Account { cap: *cap, ..Account::default() }).reserved += inv.cost;
    }
    let expiry = inv.timestamp.saturating_add(config.replay_window);
    let e = model.nonces.entry(key).or_insert(expiry);
    *e = (*e).max(expiry);
    Code::Ok
}

fn check_ledger(gate: &Gate, model: &Model, now: u64) {
    let mut got: Vec<([u8; 32], Account)> = gate.ledger().accounts().expect("a memory ledger");
    got.sort_by_key(|(id, _)| *id);
    let mut want: Vec<([u8; 32], Account)> = model.accounts.iter().map(|(k, v)| (*k, *v)).collect();
    want.sort_by_key(|(id, _)| *id);
    assert_eq!(got, want, "ledger accounts differ from the model");
    for (_, a) in &got {
        assert!(
            u128::from(a.spent) + u128::from(a.reserved) <= u128::from(a.cap) + u128::from(a.overrun),
            "an account holds more than its cap without an overrun: {a:?}"
        );
    }
    let live = model.nonces.values().filter(|&&e| e >= now).count();
    assert_eq!(gate.ledger().nonces_len(now).expect("a memory ledger"), live, "replay set size differs from the model");
}
