//! The gate where a service meets it: what the server requires and prices, the body
//! it binds, the ledger's on-path accounts, replay retention across gates, and
//! per-root isolation. Each attack is a test by name.

use std::sync::{Arc, Mutex};

use hopgate_core::audit::{self, AuditLog, Fsync, Settlement};
use hopgate_core::chain;
use hopgate_core::gate::{Gate, Request, Requirement};
use hopgate_core::ledger::{Ledger, Limits};
use hopgate_core::sig::SigningKey;
use hopgate_core::wire::CommonFields;
use hopgate_core::Code;

mod common;
use common::{gate, grant, invoke, key, NOW};

fn decide(gate: &Gate, request: Request<'_>, now: u64) -> Code {
    let mut out = gate.check_requests(&[request], now).unwrap();
    let outcome = out.pop().unwrap();
    if let Some(r) = outcome.reservation {
        let amount = r.amount();
        r.commit(amount).unwrap();
    }
    outcome.code
}

#[test]
fn attack_route_not_bound() {
    // The chain covers api/*; the server is serving api/admin and says so.
    let holder = key(2);
    let c = grant(&holder, 100, NOW + 100, 1);
    let inv = invoke(&c, &holder, "api/search", 1, NOW, 1, b"");
    let g = gate(Ledger::new(), 30, 300);
    let need = Requirement { ability: "call", resource: "api/admin", price: 1 };
    let req = Request { require: Some(need), ..Request::new(&c, &inv) };
    assert_eq!(g.precheck(&req, NOW).unwrap(), Code::ScopeDenied);
    assert_eq!(decide(&g, req, NOW), Code::ScopeDenied);
    let wrong_ability = Requirement { ability: "delete", resource: "api/search", price: 1 };
    assert_eq!(decide(&g, Request { require: Some(wrong_ability), ..req }, NOW), Code::ScopeDenied);
    let right = Requirement { ability: "call", resource: "api/search", price: 1 };
    assert_eq!(decide(&g, Request { require: Some(right), ..req }, NOW), Code::Ok);
}

#[test]
fn attack_cost_zero_on_spent_budget() {
    let holder = key(2);
    let c = grant(&holder, 10, NOW + 100, 1);
    let g = gate(Ledger::new(), 30, 300);
    let need = Requirement { ability: "call", resource: "api/x", price: 1 };
    for n in 0..50u8 {
        let inv = invoke(&c, &holder, "api/x", 0, NOW, n, b"");
        let req = Request { require: Some(need), ..Request::new(&c, &inv) };
        assert_eq!(g.precheck(&req, NOW).unwrap(), Code::CostBelowPrice);
        assert_eq!(decide(&g, req, NOW), Code::CostBelowPrice);
    }
    // Nothing was reserved or consumed: a priced request still gets the whole cap.
    let mut allowed = 0;
    for n in 100..120u8 {
        let inv = invoke(&c, &holder, "api/x", 1, NOW, n, b"");
        if decide(&g, Request { require: Some(need), ..Request::new(&c, &inv) }, NOW) == Code::Ok {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
}

#[test]
fn the_price_is_checked_after_the_grant_and_before_freshness() {
    let holder = key(2);
    let c = grant(&holder, 10, NOW + 100, 1);
    let g = gate(Ledger::new(), 30, 300);
    let need = Requirement { ability: "call", resource: "api/x", price: 5 };
    // Below the price and stale: COST_BELOW_PRICE comes first.
    let inv = invoke(&c, &holder, "api/x", 4, NOW - 500, 2, b"");
    assert_eq!(decide(&g, Request { require: Some(need), ..Request::new(&c, &inv) }, NOW), Code::CostBelowPrice);
    let inv = invoke(&c, &holder, "api/x", 5, NOW - 500, 3, b"");
    assert_eq!(decide(&g, Request { require: Some(need), ..Request::new(&c, &inv) }, NOW), Code::StaleInvocation);
}

#[test]
fn the_payload_is_bound_after_the_signatures() {
    let holder = key(2);
    let c = grant(&holder, 10, NOW + 100, 1);
    let g = gate(Ledger::new(), 30, 300);
    let inv = invoke(&c, &holder, "api/x", 1, NOW, 1, b"{\"a\":1}");
    let swapped = Request { payload: Some(b"{\"a\":2}"), ..Request::new(&c, &inv) };
    assert_eq!(decide(&g, swapped, NOW), Code::BadSignature);
    // The refused body consumed nothing: the right one is allowed.
    assert_eq!(g.ledger().nonces_len(NOW).unwrap(), 0);
    let right = Request { payload: Some(b"{\"a\":1}"), ..Request::new(&c, &inv) };
    assert_eq!(decide(&g, right, NOW), Code::Ok);
    // No payload: not bound.
    let inv = invoke(&c, &holder, "api/x", 1, NOW, 2, b"anything");
    assert_eq!(decide(&g, Request::new(&c, &inv), NOW), Code::Ok);
}

#[test]
fn precheck_consumes_nothing() {
    let holder = key(2);
    let c = grant(&holder, 1, NOW + 100, 1);
    let g = gate(Ledger::new(), 30, 300);
    let inv = invoke(&c, &holder, "api/x", 1, NOW, 1, b"");
    for _ in 0..3 {
        assert_eq!(g.precheck(&Request::new(&c, &inv), NOW).unwrap(), Code::Ok);
    }
    assert_eq!(g.ledger().nonces_len(NOW).unwrap(), 0);
    assert_eq!(g.ledger().accounts().unwrap().len(), 0);
    assert_eq!(decide(&g, Request::new(&c, &inv), NOW), Code::Ok);
    // A replay is refused by the precheck too (read only), so its body is never read.
    assert_eq!(g.precheck(&Request::new(&c, &inv), NOW).unwrap(), Code::Replay);
    assert_eq!(decide(&g, Request::new(&c, &inv), NOW), Code::Replay);
    // Later it is stale first, and the precheck prunes nothing.
    assert_eq!(g.precheck(&Request::new(&c, &inv), NOW + 99).unwrap(), Code::StaleInvocation);
    assert_eq!(g.ledger().nonces_len(NOW).unwrap(), 1);
}

#[test]
fn attack_pruned_on_path_account_reset() {
    // A full ledger whose latest `now` is past the grant's not_after: the grant's
    // account is prunable at that time, but a request dated earlier still spends
    // through it (via a new delegation, which needs a new account), and the grant's
    // account must keep what was spent.
    let (holder, sub) = (key(2), key(3));
    let limits = Limits { max_accounts_per_root: 10, ..Limits::new(2, 100) };
    let g = gate(Ledger::with_limits(limits).unwrap(), 30, 300);
    let c = grant(&holder, 100, NOW + 50, 1);
    let other = grant(&holder, 100, NOW + 10_000, 2);
    let d = chain::Delegation { budget: Some(100), ..Default::default() };
    let child = chain::delegate(&c, &holder, sub.public_key(), d).unwrap();
    let spend = |chain: &[u8], who: &SigningKey, cost, now, n| {
        decide(&g, Request::new(chain, &invoke(chain, who, "api/x", cost, now, n, b"")), now)
    };
    assert_eq!(spend(&c, &holder, 60, NOW, 1), Code::Ok);
    // Another grant, dated after c's expiry: the ledger's clock moves past it.
    assert_eq!(spend(&other, &holder, 1, NOW + 60, 2), Code::Ok);
    // Back to a time when c is valid, through a delegation that needs an account:
    // the ledger is full, and c's account is on this path, so it is not pruned.
    assert_eq!(spend(&child, &sub, 30, NOW + 40, 3), Code::BudgetExhausted);
    let root = hopgate_core::wire::Chain::parse(&c).unwrap().first().revocation_id();
    let account = g.ledger().account(None, &root).unwrap().unwrap();
    assert_eq!((account.spent, account.reserved), (60, 0));
    assert_eq!(spend(&c, &holder, 41, NOW + 40, 4), Code::BudgetExhausted);
    assert_eq!(spend(&c, &holder, 40, NOW + 40, 5), Code::Ok);
}

#[test]
fn attack_replay_across_gates_with_different_windows() {
    let holder = key(2);
    let c = grant(&holder, 100, NOW + 10_000, 1);
    let ledger = Ledger::new();
    let short = gate(ledger.clone(), 30, 60);
    let long = gate(ledger.clone(), 300, 600);
    assert_eq!(ledger.replay_window(), 600);
    let inv = invoke(&c, &holder, "api/x", 1, NOW, 1, b"");
    assert_eq!(decide(&short, Request::new(&c, &inv), NOW), Code::Ok);
    // 200 s later the short gate's own window has passed; the long gate still
    // accepts the timestamp, and must still remember the nonce.
    assert_eq!(decide(&long, Request::new(&c, &inv), NOW + 200), Code::Replay);
    // A gate that joins later with a longer window extends what is remembered.
    let inv2 = invoke(&c, &holder, "api/x", 1, NOW + 700, 2, b"");
    assert_eq!(decide(&short, Request::new(&c, &inv2), NOW + 700), Code::Ok);
    let longer = gate(ledger.clone(), 900, 1_800);
    assert_eq!(decide(&longer, Request::new(&c, &inv2), NOW + 1_500), Code::Replay);
}

#[test]
fn attack_nonce_flood_other_root_unaffected() {
    let (attacker, victim) = (key(2), key(3));
    let a = grant(&attacker, u64::MAX, NOW + 10_000, 1);
    let v = grant(&victim, 1_000, NOW + 10_000, 2);
    let ledger = Ledger::with_limits(Limits::new(1_000, 50)).unwrap();
    let g = gate(ledger, 30, 300);
    // The victim's requests are dated now; the attacker's now + skew, so the
    // victim's nonces are the first to expire.
    let victim_invs: Vec<Vec<u8>> = (0..10u8).map(|n| invoke(&v, &victim, "api/x", 1, NOW, n, b"")).collect();
    for inv in &victim_invs[..5] {
        assert_eq!(decide(&g, Request::new(&v, inv), NOW), Code::Ok);
    }
    let mut flooded = 0;
    for n in 0..200u8 {
        let inv = invoke(&a, &attacker, "api/x", 0, NOW + 30, n, b"");
        match decide(&g, Request::new(&a, &inv), NOW) {
            Code::Ok => flooded += 1,
            // Once the set is full the attacker's root makes room from itself, and its
            // horizon then refuses its own requests dated as early as the one forgotten.
            code => assert_eq!(code, Code::Replay),
        }
    }
    assert_eq!(flooded, 46, "the attacker fills the set, then pushes out its own nonce once");
    for inv in &victim_invs[5..] {
        assert_eq!(decide(&g, Request::new(&v, inv), NOW), Code::Ok, "a fresh victim request");
    }
    for inv in &victim_invs {
        assert_eq!(decide(&g, Request::new(&v, inv), NOW), Code::Replay, "the victim's nonces are all remembered");
    }
    assert_eq!(g.ledger().nonces_len(NOW).unwrap(), 50);
}

#[test]
fn attack_account_flood_other_root_unaffected() {
    let (attacker, victim, sub) = (key(2), key(3), key(4));
    let a = grant(&attacker, 1_000, NOW + 10_000, 1);
    let ledger = Ledger::with_limits(Limits::new(100, 1_000)).unwrap();
    assert_eq!(ledger.limits().unwrap().max_accounts_per_root, 16, "a tenth, but room for a whole chain");
    let g = gate(ledger, 30, 300);
    // The attacker mints delegations: each is a new account under its root.
    let mut refused = 0;
    for n in 0..40u8 {
        let d = chain::Delegation { budget: Some(1), nonce: Some([n; 16]), ..Default::default() };
        let child = chain::delegate(&a, &attacker, sub.public_key(), d).unwrap();
        let inv = invoke(&child, &sub, "api/x", 1, NOW, n, b"");
        match decide(&g, Request::new(&child, &inv), NOW) {
            Code::Ok => {}
            Code::BudgetExhausted => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(refused, 40 - 15, "the root account plus 15 children fill the root's share of 16");
    let v = grant(&victim, 10, NOW + 10_000, 2);
    let inv = invoke(&v, &victim, "api/x", 1, NOW, 99, b"");
    assert_eq!(decide(&g, Request::new(&v, &inv), NOW), Code::Ok);
}

fn scratch_log(name: &str) -> (std::path::PathBuf, Arc<Mutex<AuditLog>>) {
    let dir = std::env::temp_dir().join(format!("hopgate-edge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = AuditLog::open(&dir.join("audit.log"), &[5; 32], Fsync::Always).unwrap();
    (dir, Arc::new(Mutex::new(log)))
}

#[test]
fn settlements_are_recorded_with_their_accounts() {
    let holder = key(2);
    let c = grant(&holder, 100, NOW + 100, 1);
    let root = hopgate_core::wire::Chain::parse(&c).unwrap().first().revocation_id();
    let (dir, log) = scratch_log("settle");
    let g = gate(Ledger::new(), 30, 300).with_audit(Arc::clone(&log));
    let invs: Vec<Vec<u8>> = (0..3u8).map(|n| invoke(&c, &holder, "api/x", 10, NOW, n, b"")).collect();
    let take =
        |inv: &[u8]| g.check_requests(&[Request::new(&c, inv)], NOW).unwrap().pop().unwrap().reservation.unwrap();
    let (a, b, f) = (take(&invs[0]), take(&invs[1]), take(&invs[2]));
    assert!(matches!(a.commit(12), Err(hopgate_core::ledger::SettleError::Overrun(_))));
    b.release().unwrap();
    drop(f);
    let records = log.lock().unwrap().read(0, 10).unwrap();
    assert_eq!(records.len(), 6, "three decisions, three settlements");
    let digest = |inv: &[u8]| *blake3::hash(inv).as_bytes();
    let expected = [
        audit::settle_record(Settlement::Commit, 10, 12, &digest(&invs[0]), &[root]),
        audit::settle_record(Settlement::Release, 10, 0, &digest(&invs[1]), &[root]),
        audit::settle_record(Settlement::Forfeit, 10, 10, &digest(&invs[2]), &[root]),
    ];
    assert_eq!(&records[3..], &expected[..]);
    assert_eq!(&records[3][..2], &[b'S', 1]);
    assert_eq!(u64::from_le_bytes(records[3][10..18].try_into().unwrap()), 12);
    assert_eq!(g.ledger().account(None, &root).unwrap().unwrap().spent, 22);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn attack_untrusted_denials_are_not_synced_one_by_one() {
    let (holder, stranger) = (key(2), key(9));
    let (dir, log) = scratch_log("unsynced");
    let g = gate(Ledger::new(), 30, 300).with_audit(Arc::clone(&log));
    let fields = CommonFields {
        holder: *holder.public_key(),
        not_before: NOW - 1_000,
        not_after: NOW + 100,
        max_depth: 0,
        budget: 10,
        unit: "usd".into(),
        nonce: [1; 16],
        caps: vec![("api/*".into(), "call".into())],
        meta_digest: [0; 32],
    };
    let untrusted = chain::grant(&stranger, &[0; 16], &fields).unwrap();
    let inv = invoke(&untrusted, &holder, "api/x", 1, NOW, 1, b"");
    for _ in 0..3 {
        assert_eq!(decide(&g, Request::new(&untrusted, &inv), NOW), Code::UntrustedIssuer);
        assert!(log.lock().unwrap().unsynced(), "an unauthenticated denial is written, not synced");
    }
    assert_eq!(decide(&g, Request::new(&untrusted, b"garbage"), NOW), Code::Malformed);
    assert!(log.lock().unwrap().unsynced());
    let c = grant(&holder, 10, NOW + 100, 1);
    let inv = invoke(&c, &holder, "api/x", 1, NOW, 2, b"");
    let out = g.check_requests(&[Request::new(&c, &inv)], NOW).unwrap();
    assert!(!log.lock().unwrap().unsynced(), "an authenticated decision syncs everything before it");
    drop(out);
    assert_eq!(log.lock().unwrap().len(), 6);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_precheck_vouches_only_for_the_same_bytes() {
    let holder = key(2);
    let c = grant(&holder, 10, NOW + 100, 1);
    let g = gate(Ledger::new(), 30, 300);
    let inv = invoke(&c, &holder, "api/x", 1, NOW, 1, b"");
    assert_eq!(g.precheck(&Request::new(&c, &inv), NOW).unwrap(), Code::Ok);
    let mut forged = inv.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(decide(&g, Request::new(&c, &forged), NOW), Code::BadSignature);
    // The same bytes under another chain (same tail, so a broken link) are verified
    // again, not taken from the precheck.
    let other = grant(&holder, 10, NOW + 100, 2);
    assert_eq!(decide(&g, Request::new(&other, &inv), NOW), Code::BrokenLink);
    assert_eq!(decide(&g, Request::new(&c, &inv), NOW), Code::Ok);
    // Used once: a replay of the same bytes is verified again and refused as a replay.
    assert_eq!(decide(&g, Request::new(&c, &inv), NOW), Code::Replay);
}
