//! The durable rules (SPEC §5.8) on the SQLite store: several ledgers on one file
//! stand for several processes (tests/test_store_processes.py runs real processes,
//! and Redis, from Python); a ledger opened again stands for a restart.

use std::path::PathBuf;
use std::time::Duration;

use hopgate_core::chain::{self, Request as Ask};
use hopgate_core::gate::{Gate, Request};
use hopgate_core::ledger::{Ledger, SettleError};
use hopgate_core::store::StoreKind;
use hopgate_core::{Code, Error};

mod common;
use common::{gate, grant, key, NOW};

fn scratch(name: &str) -> String {
    let dir: PathBuf = std::env::temp_dir().join(format!("hopgate-stores-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("ledger.db").display())
}

fn open(url: &str, lease_ms: u64) -> Ledger {
    Ledger::open(url, Duration::from_millis(lease_ms), Duration::from_secs(5)).unwrap()
}

fn invoke(chain: &[u8], cost: u64, ts: u64, nonce: u32) -> Vec<u8> {
    let mut n = [0u8; 16];
    n[..4].copy_from_slice(&nonce.to_le_bytes());
    let ask = Ask { ability: "call", resource: "api/x", cost, timestamp: ts, nonce: Some(n), payload: b"" };
    chain::invoke(chain, &key(2), &ask).unwrap()
}

fn check(g: &Gate, chain: &[u8], inv: &[u8], now: u64) -> (Code, Option<hopgate_core::ledger::Reservation>) {
    let out = g.check_requests(&[Request::new(chain, inv)], now).unwrap().pop().unwrap();
    (out.code, out.reservation)
}

#[test]
fn two_ledgers_on_one_file_share_budget_and_nonces() {
    let url = scratch("share");
    let (a, b) = (gate(open(&url, 30_000), 30, 300), gate(open(&url, 30_000), 30, 300));
    assert_eq!(a.ledger().kind(), StoreKind::Sqlite);
    let c = grant(&key(2), 10, NOW + 3_600, 1);
    let inv = invoke(&c, 6, NOW, 1);
    let (code, r) = check(&a, &c, &inv, NOW);
    assert_eq!(code, Code::Ok);
    r.unwrap().commit(6).unwrap();
    assert_eq!(check(&b, &c, &inv, NOW).0, Code::Replay, "the other ledger remembers the nonce");
    assert_eq!(b.precheck(&Request::new(&c, &inv), NOW).unwrap(), Code::Replay);
    assert_eq!(check(&b, &c, &invoke(&c, 5, NOW, 2), NOW).0, Code::BudgetExhausted, "6 of 10 spent elsewhere");
    let (code, r) = check(&b, &c, &invoke(&c, 4, NOW, 3), NOW);
    assert_eq!(code, Code::Ok);
    r.unwrap().release().unwrap();
    let root = hopgate_core::wire::Chain::parse(&c).unwrap().first().revocation_id();
    let acc = a.ledger().account(Some(&root), &root).unwrap().unwrap();
    assert_eq!((acc.cap, acc.spent, acc.reserved), (10, 6, 0));
}

#[test]
fn a_restart_forgets_nothing() {
    let url = scratch("restart");
    let c = grant(&key(2), 10, NOW + 3_600, 1);
    let inv = invoke(&c, 7, NOW, 1);
    {
        let g = gate(open(&url, 30_000), 30, 300);
        let (code, r) = check(&g, &c, &inv, NOW);
        assert_eq!(code, Code::Ok);
        r.unwrap().commit(7).unwrap();
    }
    let g = gate(open(&url, 30_000), 30, 300);
    assert_eq!(check(&g, &c, &inv, NOW + 1).0, Code::Replay);
    assert_eq!(check(&g, &c, &invoke(&c, 4, NOW, 2), NOW + 1).0, Code::BudgetExhausted);
}

#[test]
fn a_batch_is_one_step_in_input_order() {
    let url = scratch("batch");
    let g = gate(open(&url, 30_000), 30, 300);
    let c = grant(&key(2), 5, NOW + 3_600, 1);
    let invs: Vec<Vec<u8>> = (0..8).map(|i| invoke(&c, 1, NOW, i)).collect();
    let mut reqs: Vec<Request<'_>> = invs.iter().map(|i| Request::new(&c, i)).collect();
    reqs.push(Request::new(&c, &invs[0]));
    let out = g.check_requests(&reqs, NOW).unwrap();
    let codes: Vec<Code> = out.iter().map(|o| o.code).collect();
    assert_eq!(codes[..5], [Code::Ok; 5]);
    assert_eq!(codes[5..8], [Code::BudgetExhausted; 3]);
    assert_eq!(codes[8], Code::Replay, "the batch's own first request consumed the nonce");
}

#[test]
fn the_roots_clock_refuses_what_it_may_have_forgotten() {
    let url = scratch("clock");
    let (a, b) = (gate(open(&url, 30_000), 30, 300), gate(open(&url, 30_000), 30, 300));
    let c = grant(&key(2), 100, NOW + 3_600, 1);
    assert_eq!(check(&a, &c, &invoke(&c, 1, NOW + 1_000, 1), NOW + 1_000).0, Code::Ok);
    // A process whose clock is far behind: its fresh request is older than the
    // root's clock minus the retention, so it may have been forgotten: refused.
    assert_eq!(check(&b, &c, &invoke(&c, 1, NOW, 2), NOW).0, Code::Replay);
    // Within the retention it is decided on its merits.
    assert_eq!(check(&b, &c, &invoke(&c, 1, NOW + 750, 3), NOW + 750).0, Code::Ok);
}

#[test]
fn a_link_closed_at_the_roots_clock_is_refused() {
    let url = scratch("closed");
    let (a, b) = (gate(open(&url, 30_000), 30, 300), gate(open(&url, 30_000), 30, 300));
    let root = grant(&key(2), 100, NOW + 10_000, 1);
    let d = chain::Delegation { not_after: Some(NOW + 100), ..Default::default() };
    let child = chain::delegate(&root, &key(2), key(3).public_key(), d).unwrap();
    assert_eq!(check(&a, &root, &invoke(&root, 1, NOW + 200, 1), NOW + 200).0, Code::Ok);
    // A process whose clock is behind the root's still finds the child link valid by
    // its own `now`, but the root's clock has passed the link's not_after: closed.
    let ask =
        Ask { ability: "call", resource: "api/x", cost: 1, timestamp: NOW + 50, nonce: Some([9; 16]), payload: b"" };
    let inv = chain::invoke(&child, &key(3), &ask).unwrap();
    assert_eq!(check(&b, &child, &inv, NOW + 50).0, Code::BudgetExhausted);
    // A memory ledger decides by the request's own `now`.
    assert_eq!(check(&gate(Ledger::new(), 30, 300), &child, &inv, NOW + 50).0, Code::Ok);
}

#[test]
fn a_lease_forfeits_what_a_dead_holder_left() {
    let url = scratch("lease");
    let c = grant(&key(2), 10, NOW + 3_600, 1);
    let root = hopgate_core::wire::Chain::parse(&c).unwrap().first().revocation_id();
    let orphan = {
        let g = gate(open(&url, 200), 30, 300);
        let (code, r) = check(&g, &c, &invoke(&c, 4, NOW, 1), NOW);
        assert_eq!(code, Code::Ok);
        r.unwrap()
    };
    // The holder "dies": its handle is never settled, and no drop runs.
    std::mem::forget(orphan);
    let g = gate(open(&url, 200), 30, 300);
    let acc = g.ledger().account(Some(&root), &root).unwrap().unwrap();
    assert_eq!((acc.spent, acc.reserved), (0, 4), "held until its lease ends");
    std::thread::sleep(Duration::from_millis(300));
    let (code, r) = check(&g, &c, &invoke(&c, 6, NOW, 2), NOW);
    assert_eq!(code, Code::Ok, "the next step forfeited the orphan: 4 spent, 6 left");
    r.unwrap().commit(6).unwrap();
    let acc = g.ledger().account(Some(&root), &root).unwrap().unwrap();
    assert_eq!((acc.spent, acc.reserved), (10, 0));
}

#[test]
fn settling_after_the_lease_changes_nothing_and_says_so() {
    let url = scratch("late");
    let g = gate(open(&url, 100), 30, 300);
    let c = grant(&key(2), 10, NOW + 3_600, 1);
    let root = hopgate_core::wire::Chain::parse(&c).unwrap().first().revocation_id();
    let (_, r) = check(&g, &c, &invoke(&c, 4, NOW, 1), NOW);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(r.unwrap().commit(1), Err(SettleError::LeaseExpired(4)));
    let acc = g.ledger().account(Some(&root), &root).unwrap().unwrap();
    assert_eq!((acc.spent, acc.reserved), (4, 0), "the forfeit stands, charged once");
}

#[test]
fn a_budget_on_a_durable_ledger() {
    let url = scratch("budget");
    let ledger = open(&url, 30_000);
    let budget = ledger.budget(vec![([1; 32], 10)]).unwrap();
    let (parent, child) = budget.delegate([2; 32], 10).unwrap();
    let r = child.reserve(7).unwrap();
    assert!(matches!(parent.reserve(4), Err(Error::Refused { code: Code::BudgetExhausted, .. })));
    r.commit(3).unwrap();
    assert_eq!(parent.remaining().unwrap(), 7);
    assert_eq!(open(&url, 30_000).budget(vec![([1; 32], 10)]).unwrap().remaining().unwrap(), 7);
}

#[test]
fn a_closed_store_fails_closed() {
    let url = scratch("fail");
    let g = gate(open(&url, 30_000), 30, 300);
    let c = grant(&key(2), 10, NOW + 3_600, 1);
    g.ledger().close();
    let inv = invoke(&c, 1, NOW, 1);
    assert!(matches!(g.check_requests(&[Request::new(&c, &inv)], NOW), Err(Error::Store { .. })));
    assert!(matches!(g.precheck(&Request::new(&c, &inv), NOW), Err(Error::Store { .. })));
}

#[test]
fn urls_are_checked() {
    for bad in ["sqlite://host/x.db", "sqlite:", "mysql://x", "redis+cluster://h:1/2"] {
        assert!(
            matches!(Ledger::open(bad, Duration::from_secs(1), Duration::from_secs(1)), Err(Error::Input { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        Ledger::open("redis://127.0.0.1:1/0", Duration::from_secs(1), Duration::from_millis(200)),
        Err(Error::Store { .. })
    ));
}

#[test]
fn many_open_one_new_file_at_once() {
    for trial in 0..10 {
        let url = scratch(&format!("open-{trial}"));
        let barrier = std::sync::Barrier::new(16);
        std::thread::scope(|s| {
            let opened: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Ledger::open(&url, Duration::from_secs(30), Duration::from_secs(5)).map(|_| ())
                    })
                })
                .collect();
            for o in opened {
                assert_eq!(o.join().unwrap(), Ok(()), "trial {trial}");
            }
        });
    }
}
