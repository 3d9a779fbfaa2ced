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

/// Default of [`Limits::max_accounts`]: about 250 MB at most (docs/FORMAT.md, "Limits").
pub const DEFAULT_MAX_ACCOUNTS: usize = 1_000_000;
/// Default of [`Limits::max_nonces`]: about 80 MB at most.
pub const DEFAULT_MAX_NONCES: usize = 1_000_000;
/// An account opened without an expiry (by [`Ledger::budget`]) is never forgotten.
pub const NEVER: u64 = u64::MAX;

/// Bounds on what a ledger remembers; both are counts and must be at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Accounts held at once. When full, accounts of expired links that hold no
    /// reservation are forgotten; if that frees nothing, a reservation that needs a
    /// new account is refused (`BUDGET_EXHAUSTED`). Accounts in use are never dropped.
    pub max_accounts: usize,
    /// Replay nonces held at once. When full, the nonce that expires first is
    /// forgotten and the horizon raised to its expiry (see [`NonceSet`]).
    pub max_nonces: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_accounts: DEFAULT_MAX_ACCOUNTS, max_nonces: DEFAULT_MAX_NONCES }
    }
}

/// An account and the time after which nothing can spend through it.
#[derive(Clone, Copy)]
struct Slot {
    account: Account,
    /// The link's `not_after` (a gate opened it), or [`NEVER`] (a budget did).
    expires: u64,
}

/// Every account, bounded by `max`.
///
/// Forgetting an account is safe only once nothing can spend through it again: its
/// link has expired (every chain through it is `EXPIRED`, because a child's
/// `not_after` is at most its parent's) and it holds no reservation. `now` is given
/// by callers and may step backwards, so the largest expiry ever forgotten is kept
/// as `horizon`, and an account expiring at or before it is never opened again:
/// otherwise a request dated in the past would find it empty and spend its cap twice.
struct Accounts {
    map: HashMap<AccountId, Slot>,
    expiries: BinaryHeap<Reverse<(u64, AccountId)>>,
    horizon: Option<u64>,
    /// The latest `now` a gate reserved at; budgets have no clock of their own.
    now: u64,
    max: usize,
}

impl Accounts {
    fn new(max: usize) -> Self {
        Accounts { map: HashMap::new(), expiries: BinaryHeap::new(), horizon: None, now: 0, max }
    }

    /// Forgets accounts that expired at or before `self.now` and hold nothing.
    fn prune(&mut self) {
        let mut busy = Vec::new();
        while let Some(&Reverse((when, id))) = self.expiries.peek() {
            if when > self.now {
                break;
            }
            self.expiries.pop();
            match self.map.get(&id) {
                // A stale entry: the account was forgotten, or now never expires.
                Some(slot) if slot.expires != when => {}
                None => {}
                Some(slot) if slot.account.reserved > 0 => busy.push(Reverse((when, id))),
                Some(_) => {
                    self.map.remove(&id);
                    self.horizon = Some(self.horizon.map_or(when, |h| h.max(when)));
                }
            }
        }
        self.expiries.extend(busy);
    }

    /// Whether the accounts of `path` that do not exist yet may be opened.
    fn may_open(&mut self, path: &[(AccountId, u64)], expires: &dyn Fn(usize) -> u64) -> bool {
        let new: Vec<usize> = (0..path.len()).filter(|&i| !self.map.contains_key(&path[i].0)).collect();
        if new.iter().any(|&i| self.horizon.is_some_and(|h| expires(i) <= h)) {
            return false;
        }
        if self.map.len() + new.len() > self.max {
            self.prune();
        }
        self.map.len() + new.len() <= self.max
    }

    /// The account `id`, opened with `cap` and `expires` if new; an existing one
    /// keeps its cap and lives as long as the longest-lived of its openers.
    fn open(&mut self, id: AccountId, cap: u64, expires: u64) -> &mut Account {
        let slot = self.map.entry(id).or_insert(Slot { account: Account { cap, ..Account::default() }, expires: 0 });
        if expires > slot.expires {
            slot.expires = expires;
            if expires != NEVER {
                self.expiries.push(Reverse((expires, id)));
            }
        }
        &mut slot.account
    }
}

/// Single-use request nonces, each remembered until its expiry, at most `max` at
/// once. Entries are pruned as time passes, so memory stays proportional to rate ×
/// window, never to history.
///
/// `horizon` is the largest expiry of a nonce forgotten before its time, or pruned
/// at a `now` that later stepped back. A nonce expiring at or before it may have been
/// seen and forgotten, so it is refused as a replay (as an IPsec anti-replay window
/// drops what falls left of it). At steady state the horizon trails the oldest
/// remembered timestamp: with `max_nonces` above the number of requests in any
/// `2 * skew` seconds (only those can still be fresh), no fresh request is ever
/// refused for it; above that rate the oldest-dated fresh requests are refused as
/// replays, and a replay is never allowed.
pub struct NonceSet {
    expiry: HashMap<[u8; 16], u64>,
    queue: BinaryHeap<Reverse<(u64, [u8; 16])>>,
    horizon: Option<u64>,
    max: usize,
}

impl Default for NonceSet {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_MAX_NONCES)
    }
}

impl NonceSet {
    /// An empty set that holds at most `max` nonces (at least one).
    pub fn with_capacity(max: usize) -> Self {
        NonceSet { expiry: HashMap::new(), queue: BinaryHeap::new(), horizon: None, max: max.max(1) }
    }

    /// Forgets the nonce that expires first, if its expiry is before `before`
    /// (`None`: whenever it expires).
    fn forget_first(&mut self, before: Option<u64>) -> bool {
        while let Some(Reverse((when, nonce))) = self.queue.peek().copied() {
            if before.is_some_and(|b| when >= b) {
                return false;
            }
            self.queue.pop();
            if self.expiry.get(&nonce) == Some(&when) {
                self.expiry.remove(&nonce);
                self.horizon = Some(self.horizon.map_or(when, |h| h.max(when)));
                return true;
            }
        }
        false
    }

    /// Forgets every nonce whose expiry is before `now`.
    pub fn prune(&mut self, now: u64) {
        while self.forget_first(Some(now)) {}
    }

    /// True iff `nonce`, expiring at `expiry`, may have been used: it is remembered
    /// (and not expired at `now`), or it expires at or before the horizon.
    pub fn seen(&self, nonce: &[u8; 16], expiry: u64, now: u64) -> bool {
        self.expiry.get(nonce).is_some_and(|&when| when >= now) || self.horizon.is_some_and(|h| expiry <= h)
    }

    /// Remembers `nonce` until `expiry`, forgetting the nonce that expires first
    /// when the set is full.
    pub fn insert(&mut self, nonce: [u8; 16], expiry: u64) {
        if !self.expiry.contains_key(&nonce) && self.expiry.len() >= self.max {
            self.forget_first(None);
        }
        let when = self.expiry.entry(nonce).or_insert(expiry);
        *when = (*when).max(expiry);
        self.queue.push(Reverse((*when, nonce)));
    }

    /// The horizon: nonces expiring at or before it are refused.
    pub fn horizon(&self) -> Option<u64> {
        self.horizon
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
    limits: Limits,
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
    /// An empty ledger with the default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default()).expect("the default limits are valid")
    }

    /// An empty ledger that remembers at most what `limits` allows.
    pub fn with_limits(limits: Limits) -> Result<Self> {
        for (name, v) in [("max_accounts", limits.max_accounts), ("max_nonces", limits.max_nonces)] {
            if v == 0 {
                return Err(Error::input(name, "must be at least 1"));
            }
        }
        let inner = Inner {
            accounts: Mutex::new(Accounts::new(limits.max_accounts)),
            nonces: Mutex::new(NonceSet::with_capacity(limits.max_nonces)),
        };
        Ok(Ledger { inner: Arc::new(inner), limits })
    }

    /// What this ledger remembers at most.
    pub fn limits(&self) -> Limits {
        self.limits
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
    /// on first use with the cap given (an existing account keeps its cap) and never
    /// expire. Fails, changing nothing, unless every account has room and the ledger
    /// may open the new ones (`max_accounts`).
    pub fn reserve(&self, path: &[(AccountId, u64)], amount: u64) -> Result<Reservation> {
        self.reserve_until(path, &|_| NEVER, amount)
    }

    /// [`Ledger::reserve`] where account `i` of `path` may be forgotten after
    /// `expires(i)` (a link's `not_after`).
    fn reserve_until(&self, path: &[(AccountId, u64)], expires: &dyn Fn(usize) -> u64, amount: u64) -> Result<Reservation> {
        let mut accounts = lock(&self.inner.accounts);
        crate::fault::inject("reserve");
        let fits = path.iter().all(|(id, cap)| {
            let acc = accounts.map.get(id).map_or(Account { cap: *cap, ..Account::default() }, |s| s.account);
            u128::from(acc.spent) + u128::from(acc.reserved) + u128::from(amount) <= u128::from(acc.cap)
        });
        if !fits {
            return Err(Error::refused(Code::BudgetExhausted, "an account on the path has no room for the amount"));
        }
        if !accounts.may_open(path, expires) {
            return Err(Error::refused(
                Code::BudgetExhausted,
                format!("the ledger cannot open another account (max_accounts = {})", self.limits.max_accounts),
            ));
        }
        for (i, (id, cap)) in path.iter().enumerate() {
            // Cannot overflow: spent + reserved + amount <= cap <= u64::MAX was checked.
            accounts.open(*id, *cap, expires(i)).reserved += amount;
        }
        Ok(Reservation { ledger: self.clone(), path: path.iter().map(|(id, _)| *id).collect(), amount, settled: false })
    }

    /// Replay check and reservation as one step (SPEC §6 steps 16 and 17): `nonce`
    /// must be unused at `now`; then `amount` is reserved on `path`; only when both
    /// succeed is the nonce remembered until `expiry`. Two requests with one nonce can
    /// never both pass, and a refused request consumes nothing.
    ///
    /// `path` comes from [`chain_path`]: account `i` may be forgotten once
    /// `expires[i]` (link `i`'s `not_after`) has passed and nothing is reserved on it.
    pub fn admit(
        &self,
        nonce: &[u8; 16],
        now: u64,
        expiry: u64,
        path: &[(AccountId, u64)],
        expires: &[u64],
        amount: u64,
    ) -> std::result::Result<Reservation, Code> {
        let mut nonces = lock(&self.inner.nonces);
        nonces.prune(now);
        if nonces.seen(nonce, expiry, now) {
            return Err(Code::Replay);
        }
        {
            let mut accounts = lock(&self.inner.accounts);
            accounts.now = accounts.now.max(now);
        }
        let until = |i: usize| expires.get(i).copied().unwrap_or(NEVER);
        let reservation = self.reserve_until(path, &until, amount).map_err(|_| Code::BudgetExhausted)?;
        nonces.insert(*nonce, expiry);
        Ok(reservation)
    }

    /// One account's state.
    pub fn account(&self, id: &AccountId) -> Option<Account> {
        lock(&self.inner.accounts).map.get(id).map(|s| s.account)
    }

    /// Every account's state.
    pub fn accounts(&self) -> Vec<(AccountId, Account)> {
        lock(&self.inner.accounts).map.iter().map(|(k, v)| (*k, v.account)).collect()
    }

    /// How many accounts the ledger holds.
    pub fn accounts_len(&self) -> usize {
        lock(&self.inner.accounts).map.len()
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
            if let Some(Slot { account: acc, .. }) = accounts.map.get_mut(id) {
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
            .map(|(id, cap)| accounts.map.get(id).map_or(*cap, |s| s.account.room()))
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
