//! The ledger (SPEC §5): affinity at compile time, atomic reservations under
//! concurrency, overruns, forfeits, and the bounded replay set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hopgate_core::ledger::{Ledger, NonceSet, Overrun, SettleError};
use hopgate_core::Code;

#[test]
fn affinity_is_enforced_by_the_compiler() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}

#[test]
fn fanout_race_never_overshoots_and_reaches_the_cap() {
    // Parent cap 100, two siblings with caps 100 each: 16 threads spend 1 at a time
    // through either sibling until refused. Exactly 100 must be spent, every trial.
    for trial in 0..30u8 {
        let ledger = Ledger::new();
        let parent = ledger.budget(vec![([trial; 32], 100)]).unwrap();
        let (parent, a) = parent.delegate([100; 32], 100).map_err(|(_, e)| e).unwrap();
        let (_parent, b) = parent.delegate([101; 32], 100).map_err(|(_, e)| e).unwrap();
        let siblings = Arc::new([a, b]);
        let spent = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (siblings, spent) = (Arc::clone(&siblings), Arc::clone(&spent));
                std::thread::spawn(move || {
                    while let Ok(r) = siblings[t % 2].reserve(1) {
                        r.commit(1).unwrap();
                        spent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(spent.load(Ordering::Relaxed), 100, "trial {trial}");
        let root = ledger.account(None, &[trial; 32]).unwrap().unwrap();
        assert_eq!((root.spent, root.reserved), (100, 0));
        let a = ledger.account(None, &[100; 32]).unwrap().map_or(0, |acc| acc.spent);
        let b = ledger.account(None, &[101; 32]).unwrap().map_or(0, |acc| acc.spent);
        assert_eq!(a + b, 100);
    }
}

#[test]
fn settle_release_overrun_and_forfeit() {
    let ledger = Ledger::new();
    let path = [([1; 32], 100), ([2; 32], 40)];
    let r = ledger.reserve(&path, 30).unwrap();
    assert_eq!(ledger.reserve(&path, 11).unwrap_err().code(), Code::BudgetExhausted);
    assert_eq!(ledger.account(None, &[1; 32]).unwrap().unwrap().reserved, 30, "a refused reservation changes nothing");
    r.commit(20).unwrap();
    let acc = ledger.account(None, &[2; 32]).unwrap().unwrap();
    assert_eq!((acc.spent, acc.reserved), (20, 0));

    ledger.reserve(&path, 5).unwrap().release().unwrap();
    assert_eq!(ledger.account(None, &[2; 32]).unwrap().unwrap().spent, 20);

    let r = ledger.reserve(&path, 10).unwrap();
    assert_eq!(r.commit(25), Err(SettleError::Overrun(Overrun { reserved: 10, actual: 25 })));
    let acc = ledger.account(None, &[2; 32]).unwrap().unwrap();
    assert_eq!((acc.spent, acc.reserved, acc.overrun), (45, 0, 15));
    assert_eq!(ledger.account(None, &[1; 32]).unwrap().unwrap().spent, 45);

    // Over its cap now: nothing more fits on the child, the parent still has room.
    assert!(ledger.reserve(&path, 0).is_err());
    let forfeit = ledger.reserve(&path[..1], 7).unwrap();
    drop(forfeit);
    let acc = ledger.account(None, &[1; 32]).unwrap().unwrap();
    assert_eq!((acc.spent, acc.reserved), (52, 0), "a dropped reservation counts as spent");
}

#[test]
fn delegation_cannot_widen() {
    let ledger = Ledger::new();
    let budget = ledger.budget(vec![([1; 32], 10)]).unwrap();
    let (budget, err) = budget.delegate([2; 32], 11).unwrap_err();
    assert_eq!(err.code(), Code::BudgetWidened);
    assert_eq!(budget.remaining().unwrap(), 10, "a refused delegation hands the budget back");
}

#[test]
fn replay_set_stays_bounded_over_ten_million_requests() {
    // 1,000 requests a second for 10,000 seconds, timestamps within ±30 s, window 300 s.
    let (rate, skew, window) = (1_000u64, 30u64, 300u64);
    let mut set = NonceSet::default();
    set.retain(window);
    let root = [9u8; 32];
    let mut largest = 0;
    let mut seed = 1u64;
    for i in 0..10_000_000u64 {
        let now = 1_000_000 + i / rate;
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let ts = now - skew + (seed >> 33) % (2 * skew + 1);
        set.prune(now);
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&i.to_le_bytes());
        assert!(!set.seen(&root, &nonce, ts));
        set.insert(root, nonce, ts);
        largest = largest.max(set.len());
    }
    let bound = rate * (window + 2 * skew + 1);
    assert!(largest as u64 <= bound, "{largest} nonces held, bound {bound}");
    assert!(largest as u64 >= rate * window, "the window is honoured: {largest}");
}

#[test]
fn a_full_replay_set_refuses_no_fresh_request_when_it_covers_twice_the_skew() {
    // 1,000 requests a second, timestamps within ±30 s: at most 60,000 nonces can
    // still be fresh, so a set of 61,000 forgets only nonces that are stale anyway,
    // and its horizon never reaches a fresh request. One of 30,000 refuses them.
    let (rate, skew, window) = (1_000u64, 30u64, 300u64);
    for (max, refused) in [(61_000, false), (30_000, true)] {
        let mut set = NonceSet::new(max, max);
        set.retain(window);
        let root = [9u8; 32];
        let mut seed = 7u64;
        let mut any_refused = false;
        for i in 0..1_000_000u64 {
            let now = 1_000_000 + i / rate;
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let ts = now - skew + (seed >> 33) % (2 * skew + 1);
            set.prune(now);
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&i.to_le_bytes());
            if set.seen(&root, &nonce, ts) {
                any_refused = true;
                continue;
            }
            set.insert(root, nonce, ts);
            assert!(set.len() <= max);
            // A replay of it is always refused, remembered or beyond the horizon.
            assert!(set.seen(&root, &nonce, ts));
        }
        assert_eq!(any_refused, refused, "max_nonces = {max}");
        assert!(set.root_horizon(&root).is_some());
    }
}

#[test]
fn a_path_names_each_account_once() {
    let ledger = Ledger::new();
    assert!(ledger.budget(vec![([1; 32], 10), ([1; 32], 10)]).is_err());
    let budget = ledger.budget(vec![([1; 32], 10)]).unwrap();
    let (budget, err) = budget.delegate([1; 32], 5).unwrap_err();
    assert_eq!(err.code(), Code::Malformed);
    assert!(budget.delegate([2; 32], 5).is_ok());
}
