//! The affine budget ledger (SPEC §5) and the replay-nonce set that gates sharing a
//! ledger share (SPEC §6).
//!
//! Every link of a chain is an account, keyed by its revocation id, capped by the
//! link's budget. Spending through a chain reserves on **every** account of its path
//! at once, under one lock, so the whole operation is linearizable: two siblings
//! with caps of 100 under a parent with a cap of 100 can never spend 200 together.
//!
//! [`Reservation`] and [`Budget`] stand for money, so they are not `Clone`, and the
//! operations that end them take `self`: a second commit, a commit after release, or
//! the use of a budget after it delegated do not compile (see
//! `tests/compile_fail/`). A reservation dropped without `commit` or `release` is
//! forfeited: its amount counts as spent, because the holder may have spent it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::{Code, Error, Result};

/// An account's key: the revocation id (BLAKE3 of the signature) of a link.
pub type AccountId = [u8; 32];

/// The accounts of a chain (SPEC §5): per link, its revocation id capped by its
/// budget, root first.
pub fn chain_path(chain: &crate::wire::Chain<'_>) -> Vec<(AccountId, u64)> {
    chain.links.iter().map(|l| (l.revocation_id(), l.budget)).collect()
}

/// One account's state, in the chain's unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// The link's budget.
    pub cap: u64,
    /// Committed (or forfeited) spending, overruns included.
    pub spent: u64,
    /// Held by reservations not yet settled.
    pub reserved: u64,
    /// Spending beyond what was reserved (`commit(actual > reserved)`).
    pub overrun: u64,
}

impl Account {
    /// What may still be reserved.
    pub fn room(&self) -> u64 {
        self.cap.saturating_sub(self.spent.saturating_add(self.reserved))
    }
}

/// `commit(actual)` charged more than was reserved. The charge stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spent {actual}, more than the {reserved} reserved; charged in full and recorded as an overrun")]
pub struct Overrun {
    /// What was reserved.
    pub reserved: u64,
    /// What was charged.
    pub actual: u64,
}

#[derive(Default)]
struct Accounts {
    map: HashMap<AccountId, Account>,
}

/// Single-use request nonces, each remembered until its expiry. Entries are pruned
/// as time passes, so memory stays proportional to rate × window, never to history.
#[derive(Default)]
pub struct NonceSet {
    expiry: HashMap<[u8; 16], u64>,
    queue: BinaryHeap<Reverse<(u64, [u8; 16])>>,
}

impl NonceSet {
    /// Forgets every nonce whose expiry is before `now`.
    pub fn prune(&mut self, now: u64) {
        while let Some(Reverse((when, nonce))) = self.queue.peek().copied() {
            if when >= now {
                break;
            }
            self.queue.pop();
            if self.expiry.get(&nonce) == Some(&when) {
                self.expiry.remove(&nonce);
            }
        }
    }

    /// True iff `nonce` is remembered (and not expired at `now`).
    pub fn contains(&self, nonce: &[u8; 16], now: u64) -> bool {
        self.expiry.get(nonce).is_some_and(|&when| when >= now)
    }

    /// Remembers `nonce` until `expiry`.
    pub fn insert(&mut self, nonce: [u8; 16], expiry: u64) {
        let when = self.expiry.entry(nonce).or_insert(expiry);
        *when = (*when).max(expiry);
        self.queue.push(Reverse((*when, nonce)));
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    /// True when no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }
}

struct Inner {
    accounts: Mutex<Accounts>,
    nonces: Mutex<NonceSet>,
}

/// The ledger. Cloning it shares it (gates given one ledger share budgets and nonces);
/// authority lives in [`Budget`] and [`Reservation`], which cannot be cloned.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

// A panic while a lock is held cannot leave an account half-updated: every update
// below is computed first and written without any call that can panic, so a
// poisoned lock is still consistent and is simply taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Ledger {
            inner: Arc::new(Inner { accounts: Mutex::new(Accounts::default()), nonces: Mutex::new(NonceSet::default()) }),
        }
    }

    /// A budget handle on `path` (account id, cap), root first.
    pub fn budget(&self, path: Vec<(AccountId, u64)>) -> Result<Budget> {
        if path.is_empty() {
            return Err(Error::input("path", "a budget needs at least one account"));
        }
        if path.iter().enumerate().any(|(i, (id, _))| path[..i].iter().any(|(seen, _)| seen == id)) {
            return Err(Error::input("path", "an account appears twice (the amount would be held on it twice)"));
        }
        Ok(Budget { ledger: self.clone(), path })
    }

    /// Reserves `amount` on every account of `path`, atomically; accounts are created
    /// on first use with the cap given (an existing account keeps its cap). Fails,
    /// changing nothing, unless every account has room.
    pub fn reserve(&self, path: &[(AccountId, u64)], amount: u64) -> Result<Reservation> {
        let mut accounts = lock(&self.inner.accounts);
        let fits = path.iter().all(|(id, cap)| {
            let acc = accounts.map.get(id).copied().unwrap_or(Account { cap: *cap, ..Account::default() });
            u128::from(acc.spent) + u128::from(acc.reserved) + u128::from(amount) <= u128::from(acc.cap)
        });
        if !fits {
            return Err(Error::refused(Code::BudgetExhausted, "an account on the path has no room for the amount"));
        }
        for (id, cap) in path {
            let acc = accounts.map.entry(*id).or_insert(Account { cap: *cap, ..Account::default() });
            // Cannot overflow: spent + reserved + amount <= cap <= u64::MAX was checked.
            acc.reserved += amount;
        }
        Ok(Reservation { ledger: self.clone(), path: path.iter().map(|(id, _)| *id).collect(), amount, settled: false })
    }

    /// Replay check and reservation as one step (SPEC §6 steps 16 and 17): `nonce`
    /// must be unused at `now`; then `amount` is reserved on `path`; only when both
    /// succeed is the nonce remembered until `expiry`. Two requests with one nonce can
    /// never both pass, and a refused request consumes nothing.
    pub fn admit(
        &self,
        nonce: &[u8; 16],
        now: u64,
        expiry: u64,
        path: &[(AccountId, u64)],
        amount: u64,
    ) -> std::result::Result<Reservation, Code> {
        let mut nonces = lock(&self.inner.nonces);
        nonces.prune(now);
        if nonces.contains(nonce, now) {
            return Err(Code::Replay);
        }
        let reservation = self.reserve(path, amount).map_err(|_| Code::BudgetExhausted)?;
        nonces.insert(*nonce, expiry);
        Ok(reservation)
    }

    /// One account's state.
    pub fn account(&self, id: &AccountId) -> Option<Account> {
        lock(&self.inner.accounts).map.get(id).copied()
    }

    /// Every account's state.
    pub fn accounts(&self) -> Vec<(AccountId, Account)> {
        lock(&self.inner.accounts).map.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// How many nonces the replay set holds now (after pruning at `now`).
    pub fn nonces_len(&self, now: u64) -> usize {
        let mut nonces = lock(&self.inner.nonces);
        nonces.prune(now);
        nonces.len()
    }

    fn settle(&self, path: &[AccountId], reserved: u64, charge: u64) {
        let mut accounts = lock(&self.inner.accounts);
        for id in path {
            if let Some(acc) = accounts.map.get_mut(id) {
                acc.reserved = acc.reserved.saturating_sub(reserved);
                acc.spent = acc.spent.saturating_add(charge);
                acc.overrun = acc.overrun.saturating_add(charge.saturating_sub(reserved));
            }
        }
    }
}

/// An amount held on every account of a path, to be settled exactly once.
///
/// ```compile_fail
/// # use hopgate_core::ledger::Ledger;
/// let ledger = Ledger::new();
/// let r = ledger.reserve(&[([0; 32], 10)], 5).unwrap();
/// let twin = r.clone(); // a reservation cannot be cloned
/// ```
pub struct Reservation {
    ledger: Ledger,
    path: Vec<AccountId>,
    amount: u64,
    settled: bool,
}

impl Reservation {
    /// The amount held.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The accounts it is held on, root first.
    pub fn path(&self) -> &[AccountId] {
        &self.path
    }

    /// Spends `actual` and releases the rest. Charging more than was reserved still
    /// charges it all, records the excess as an overrun, and returns [`Overrun`].
    pub fn commit(mut self, actual: u64) -> std::result::Result<(), Overrun> {
        self.settled = true;
        self.ledger.settle(&self.path, self.amount, actual);
        if actual > self.amount {
            return Err(Overrun { reserved: self.amount, actual });
        }
        Ok(())
    }

    /// Releases the whole amount: the statement that nothing was spent.
    pub fn release(mut self) {
        self.settled = true;
        self.ledger.settle(&self.path, self.amount, 0);
    }
}

impl Drop for Reservation {
    /// Forfeits an unsettled reservation: its amount counts as spent.
    fn drop(&mut self) {
        if !self.settled {
            self.ledger.settle(&self.path, self.amount, self.amount);
        }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").field("amount", &self.amount).field("links", &self.path.len()).finish()
    }
}

/// The right to reserve on a path of accounts. Not `Clone`; delegating consumes it
/// and hands back a fresh parent handle beside the child.
pub struct Budget {
    ledger: Ledger,
    path: Vec<(AccountId, u64)>,
}

impl Budget {
    /// The path, root first.
    pub fn path(&self) -> &[(AccountId, u64)] {
        &self.path
    }

    /// Reserves `amount` on every account of the path.
    pub fn reserve(&self, amount: u64) -> Result<Reservation> {
        self.ledger.reserve(&self.path, amount)
    }

    /// What could be reserved now: the least room on the path.
    pub fn remaining(&self) -> u64 {
        let accounts = lock(&self.ledger.inner.accounts);
        self.path
            .iter()
            .map(|(id, cap)| accounts.map.get(id).map_or(*cap, Account::room))
            .min()
            .unwrap_or(0)
    }

    /// Splits off a child account with `cap` (at most this budget's own cap) under
    /// `id`. Consumes `self` and returns `(parent, child)`; a refusal hands `self`
    /// back unchanged beside the error, so nothing is lost.
    pub fn delegate(self, id: AccountId, cap: u64) -> std::result::Result<(Budget, Budget), (Budget, Error)> {
        if self.path.iter().any(|(seen, _)| *seen == id) {
            return Err((self, Error::input("account_id", "already on this budget's path")));
        }
        // An account that exists keeps the cap it was opened with; that is the cap to narrow.
        let own = self.path.last().map_or(0, |(last, c)| self.ledger.account(last).map_or(*c, |a| a.cap));
        if cap > own {
            let e = Error::refused(Code::BudgetWidened, format!("a child cap of {cap} exceeds the parent's {own}"));
            return Err((self, e));
        }
        let mut child = self.path.clone();
        child.push((id, cap));
        let ledger = self.ledger.clone();
        Ok((self, Budget { ledger, path: child }))
    }
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("links", &self.path.len()).finish()
    }
}
