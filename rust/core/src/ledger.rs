//! The affine budget ledger (SPEC §5) and the replay-nonce set that gates sharing a
//! ledger share (SPEC §5.5). A ledger keeps its state in a [`Store`]: the memory store
//! here (SPEC §5.1 to §5.7), or a durable one of [`crate::store`] (SPEC §5.8).
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
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::audit::{self, AuditLog, Settlement};
use crate::store::{Admission, Held, Settled, Step, Store, StoreKind, Url};
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

/// Why a settlement returned an error. The ledger is settled either way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// More was charged than reserved.
    #[error(transparent)]
    Overrun(#[from] Overrun),
    /// The settlement record could not be appended to the audit log.
    #[error(transparent)]
    Audit(Error),
    /// A durable store failed while settling: the reservation is left to its lease,
    /// which forfeits it (never less than the truth is charged).
    #[error(transparent)]
    Store(Error),
    /// The reservation's lease forfeited it before: its full amount (held here)
    /// stands as spent, and nothing changed now.
    #[error("the reservation's lease expired before it was settled: its {0} stands as spent")]
    LeaseExpired(u64),
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

/// Default of [`Limits::max_accounts`]: about 250 MB at most (docs/FORMAT.md §3).
pub const DEFAULT_MAX_ACCOUNTS: usize = 1_000_000;
/// Default of [`Limits::max_nonces`]: about 80 MB at most.
pub const DEFAULT_MAX_NONCES: usize = 1_000_000;
/// The default per-root share of accounts is never below this (a chain's 16 links),
/// unless the ledger itself holds fewer.
pub const MIN_ACCOUNTS_PER_ROOT: usize = 16;
/// An account opened without an expiry (by [`Ledger::budget`]) is never forgotten.
pub const NEVER: u64 = u64::MAX;

/// Bounds on what a ledger remembers; every one is a count of at least 1.
///
/// A *root* is the first account of a path: for a gate, the revocation id of link 0,
/// so every chain under one grant shares it. The per-root bounds keep one grant's
/// traffic from exhausting what every other grant needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Accounts held at once. When full, accounts of expired links that hold no
    /// reservation are forgotten; if that frees nothing, a reservation that needs a
    /// new account is refused (`BUDGET_EXHAUSTED`). Accounts in use, and the accounts
    /// of the path being reserved, are never dropped.
    pub max_accounts: usize,
    /// Replay nonces held at once. When full, the root holding the most nonces
    /// forgets its earliest one (see [`NonceSet`]).
    pub max_nonces: usize,
    /// Accounts one root may hold at once (same pruning, then `BUDGET_EXHAUSTED`).
    pub max_accounts_per_root: usize,
    /// Nonces one root may hold at once; when full, that root forgets its earliest.
    pub max_nonces_per_root: usize,
}

impl Limits {
    /// `max_accounts` and `max_nonces` with the default per-root shares: a tenth of
    /// the accounts, but room for at least one whole chain ([`MIN_ACCOUNTS_PER_ROOT`],
    /// or `max_accounts` if smaller), and all of the nonces (the nonce set's eviction
    /// already takes from the biggest root first).
    pub fn new(max_accounts: usize, max_nonces: usize) -> Self {
        Limits {
            max_accounts,
            max_nonces,
            max_accounts_per_root: (max_accounts / 10).max(max_accounts.min(MIN_ACCOUNTS_PER_ROOT)),
            max_nonces_per_root: max_nonces,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(DEFAULT_MAX_ACCOUNTS, DEFAULT_MAX_NONCES)
    }
}

/// An account and the time after which nothing can spend through it.
#[derive(Clone, Copy)]
struct Slot {
    account: Account,
    /// The link's `not_after` (a gate opened it), or [`NEVER`] (a budget did).
    expires: u64,
    /// The root of the path that opened it.
    root: AccountId,
}

/// Why a reservation that needs new accounts cannot open them.
enum NoRoom {
    Horizon,
    Total(usize),
    Root(usize),
}

/// Every account, bounded by `max` in all and `max_per_root` per root.
///
/// Forgetting an account is safe only once nothing can spend through it again: its
/// link has expired (every chain through it is `EXPIRED`, because a child's
/// `not_after` is at most its parent's) and it holds no reservation. `now` is given
/// by callers and may step backwards, so the largest expiry ever forgotten is kept
/// as `horizon`, and an account expiring at or before it is never opened again:
/// otherwise a request dated in the past would find it empty and spend its cap twice.
/// For the same reason the accounts of the path being reserved are never forgotten
/// while it is decided: the request's own `now` may be earlier than the latest one,
/// and its accounts still valid at it.
struct Accounts {
    map: HashMap<AccountId, Slot>,
    expiries: BinaryHeap<Reverse<(u64, AccountId)>>,
    horizon: Option<u64>,
    /// The latest `now` a gate reserved at; budgets have no clock of their own.
    now: u64,
    max: usize,
    max_per_root: usize,
    /// How many accounts each root holds.
    per_root: HashMap<AccountId, usize>,
}

impl Accounts {
    fn new(max: usize, max_per_root: usize) -> Self {
        Accounts {
            map: HashMap::new(),
            expiries: BinaryHeap::new(),
            horizon: None,
            now: 0,
            max,
            max_per_root,
            per_root: HashMap::new(),
        }
    }

    /// Forgets accounts that expired at or before `self.now`, hold nothing, and are
    /// not on `keep` (the path being reserved).
    fn prune(&mut self, keep: &[(AccountId, u64)]) {
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
                Some(slot) if slot.account.reserved > 0 || keep.iter().any(|(k, _)| *k == id) => {
                    busy.push(Reverse((when, id)))
                }
                Some(slot) => {
                    let root = slot.root;
                    self.map.remove(&id);
                    if let Some(n) = self.per_root.get_mut(&root) {
                        *n -= 1;
                        if *n == 0 {
                            self.per_root.remove(&root);
                        }
                    }
                    self.horizon = Some(self.horizon.map_or(when, |h| h.max(when)));
                }
            }
        }
        self.expiries.extend(busy);
    }

    /// Whether the accounts of `path` that do not exist yet may be opened.
    fn may_open(
        &mut self,
        path: &[(AccountId, u64)],
        expires: &dyn Fn(usize) -> u64,
    ) -> std::result::Result<(), NoRoom> {
        let new: Vec<usize> = (0..path.len()).filter(|&i| !self.map.contains_key(&path[i].0)).collect();
        if new.is_empty() {
            return Ok(());
        }
        if new.iter().any(|&i| self.horizon.is_some_and(|h| expires(i) <= h)) {
            return Err(NoRoom::Horizon);
        }
        let root = path[0].0;
        let over = |a: &Accounts| {
            if a.map.len() + new.len() > a.max {
                Some(NoRoom::Total(a.max))
            } else if a.per_root.get(&root).copied().unwrap_or(0) + new.len() > a.max_per_root {
                Some(NoRoom::Root(a.max_per_root))
            } else {
                None
            }
        };
        if over(self).is_some() {
            self.prune(path);
        }
        over(self).map_or(Ok(()), Err)
    }

    /// The account `id`, opened with `cap` and `expires` under `root` if new; an
    /// existing one keeps its cap and root and lives as long as the longest-lived of
    /// its openers.
    fn open(&mut self, id: AccountId, cap: u64, expires: u64, root: AccountId) -> &mut Account {
        let per_root = &mut self.per_root;
        let slot = self.map.entry(id).or_insert_with(|| {
            *per_root.entry(root).or_insert(0) += 1;
            Slot { account: Account { cap, ..Account::default() }, expires: 0, root }
        });
        if expires > slot.expires {
            slot.expires = expires;
            if expires != NEVER {
                self.expiries.push(Reverse((expires, id)));
            }
        }
        &mut slot.account
    }
}

/// One root's remembered nonces: nonce → invocation timestamp, a queue by
/// timestamp for eviction, and the root's horizon.
#[derive(Default)]
struct RootNonces {
    timestamps: HashMap<[u8; 16], u64>,
    queue: BinaryHeap<Reverse<(u64, [u8; 16])>>,
    horizon: Option<u64>,
}

impl RootNonces {
    fn live(&self, entry: &(u64, [u8; 16])) -> bool {
        self.timestamps.get(&entry.1) == Some(&entry.0)
    }

    /// Drops forgotten entries from the front of the queue, and rebuilds the queue
    /// when most of it is forgotten, so that it stays proportional to what is held.
    fn tidy(&mut self) {
        while self.queue.peek().is_some_and(|Reverse(e)| !self.live(e)) {
            self.queue.pop();
        }
        if self.queue.len() > 2 * self.timestamps.len() + 16 {
            self.queue = self.timestamps.iter().map(|(n, t)| Reverse((*t, *n))).collect();
        }
    }

    fn forget(&mut self, nonce: &[u8; 16], ts: u64) {
        self.timestamps.remove(nonce);
        self.horizon = Some(self.horizon.map_or(ts, |h| h.max(ts)));
    }
}

/// Single-use request nonces, kept per root (the replay identity is `(root, nonce)`:
/// an invocation is bound to its chain by `tail_sig`, so it can only ever come back
/// under the same root).
///
/// A nonce is remembered with its invocation timestamp until `timestamp + retention`
/// has passed, where `retention` is the longest replay window of any gate on the
/// ledger: a gate that accepts older timestamps makes every gate's nonces live
/// longer. Entries are pruned as time passes, so memory stays proportional to rate
/// × window, never to history.
///
/// Each root has a *horizon*: the largest timestamp of a nonce it forgot, because it
/// expired or to make room. A nonce of that root dated at or before it may have been
/// seen and forgotten, so it is refused as a replay (as an IPsec anti-replay window
/// drops what falls left of it); this also keeps a forgotten nonce dead when `now`
/// steps back. A root left with no nonce keeps its horizon until the horizon itself
/// is past the retention at some `now`; then the root is dropped and its horizon
/// folded into the set's global horizon, which every root obeys. At that `now` the
/// global horizon refuses nothing fresh, and memory stays bounded by rate × window
/// instead of growing with every root ever seen. The price: if the clock later steps
/// back by more than the retention, a fresh request of any root dated at or before
/// the global horizon is refused as a replay (never is a replay allowed).
///
/// Making room takes from the root that holds the most nonces (ties: the smallest
/// root id) and, within a root, the nonce with the smallest timestamp (ties: the
/// smallest nonce), so one root's flood can only push out its own nonces; a root at
/// `max_per_root` makes room from itself.
pub struct NonceSet {
    roots: HashMap<AccountId, RootNonces>,
    by_time: BinaryHeap<Reverse<(u64, AccountId, [u8; 16])>>,
    sizes: BTreeSet<(Reverse<usize>, AccountId)>,
    /// Roots left with no nonce, by horizon: dropped once the horizon is stale.
    emptied: BinaryHeap<Reverse<(u64, AccountId)>>,
    total: usize,
    horizon: Option<u64>,
    retention: u64,
    max: usize,
    max_per_root: usize,
}

impl Default for NonceSet {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_NONCES, DEFAULT_MAX_NONCES)
    }
}

impl NonceSet {
    /// An empty set that holds at most `max` nonces in all and `max_per_root` per root
    /// (both at least one), with a retention of 0 until [`NonceSet::retain`].
    pub fn new(max: usize, max_per_root: usize) -> Self {
        NonceSet {
            roots: HashMap::new(),
            by_time: BinaryHeap::new(),
            sizes: BTreeSet::new(),
            emptied: BinaryHeap::new(),
            total: 0,
            horizon: None,
            retention: 0,
            max: max.max(1),
            max_per_root: max_per_root.max(1),
        }
    }

    /// Remembers every nonce for at least `window` seconds past its timestamp from
    /// now on (the retention never shrinks).
    pub fn retain(&mut self, window: u64) {
        self.retention = self.retention.max(window);
    }

    /// The retention: how long after its timestamp a nonce is remembered.
    pub fn retention(&self) -> u64 {
        self.retention
    }

    fn expiry(&self, ts: u64) -> u64 {
        ts.saturating_add(self.retention)
    }

    fn resize(&mut self, root: &AccountId, before: usize, after: usize) {
        self.sizes.remove(&(Reverse(before), *root));
        if after > 0 {
            self.sizes.insert((Reverse(after), *root));
        }
    }

    /// Forgets `root`'s earliest nonce to make room.
    fn evict(&mut self, root: &AccountId) {
        let Some(r) = self.roots.get_mut(root) else { return };
        r.tidy();
        let Some(Reverse((ts, nonce))) = r.queue.pop() else { return };
        let before = r.timestamps.len();
        r.forget(&nonce, ts);
        r.tidy();
        self.total -= 1;
        self.resize(root, before, before - 1);
        if before == 1 {
            self.emptied.push(Reverse((ts, *root)));
        }
    }

    /// Forgets every nonce whose expiry is before `now`.
    pub fn prune(&mut self, now: u64) {
        while let Some(&Reverse((ts, root, nonce))) = self.by_time.peek() {
            if self.expiry(ts) >= now {
                break;
            }
            self.by_time.pop();
            let Some(r) = self.roots.get_mut(&root) else { continue };
            if !r.live(&(ts, nonce)) {
                continue;
            }
            let before = r.timestamps.len();
            r.forget(&nonce, ts);
            r.tidy();
            let horizon = r.horizon.unwrap_or(ts);
            self.total -= 1;
            self.resize(&root, before, before - 1);
            if before == 1 {
                self.emptied.push(Reverse((horizon, root)));
            }
        }
        // A root with no nonce left is only its horizon: once that is past the
        // retention (stale at this `now`), fold it into the global horizon.
        while let Some(&Reverse((h, root))) = self.emptied.peek() {
            if self.expiry(h) >= now {
                break;
            }
            self.emptied.pop();
            if self.roots.get(&root).is_some_and(|r| r.timestamps.is_empty() && r.horizon == Some(h)) {
                self.roots.remove(&root);
                self.horizon = Some(self.horizon.map_or(h, |g| g.max(h)));
            }
        }
        if self.by_time.len() > 2 * self.total + 16 {
            self.by_time = self
                .roots
                .iter()
                .flat_map(|(root, r)| r.timestamps.iter().map(move |(n, t)| Reverse((*t, *root, *n))))
                .collect();
        }
    }

    /// True iff `nonce` of `root`, dated `ts`, may have been used: it is remembered,
    /// or `ts` is at or before the root's horizon or the global one. Call
    /// [`NonceSet::prune`] at the request's `now` first.
    pub fn seen(&self, root: &AccountId, nonce: &[u8; 16], ts: u64) -> bool {
        let r = self.roots.get(root);
        r.is_some_and(|r| r.timestamps.contains_key(nonce))
            || [r.and_then(|r| r.horizon), self.horizon].iter().flatten().any(|&h| ts <= h)
    }

    /// Remembers `nonce` of `root`, dated `ts`, making room first when the root or
    /// the set is full.
    pub fn insert(&mut self, root: AccountId, nonce: [u8; 16], ts: u64) {
        let held = self.roots.get(&root).map_or(0, |r| r.timestamps.len());
        if self.roots.get(&root).is_some_and(|r| r.timestamps.contains_key(&nonce)) {
            let r = self.roots.get_mut(&root).expect("checked above");
            let when = r.timestamps.get_mut(&nonce).expect("checked above");
            if ts > *when {
                *when = ts;
                r.queue.push(Reverse((ts, nonce)));
                self.by_time.push(Reverse((ts, root, nonce)));
            }
            return;
        }
        if held >= self.max_per_root {
            self.evict(&root);
        } else if self.total >= self.max {
            if let Some(&(_, biggest)) = self.sizes.first() {
                self.evict(&biggest);
            }
        }
        let r = self.roots.entry(root).or_default();
        let before = r.timestamps.len();
        r.timestamps.insert(nonce, ts);
        r.queue.push(Reverse((ts, nonce)));
        self.by_time.push(Reverse((ts, root, nonce)));
        self.total += 1;
        self.resize(&root, before, before + 1);
    }

    /// True iff what makes `nonce` of `root`, dated `ts`, look seen goes away when
    /// pruning at `now`: it is remembered only under an expiry before `now`, and no
    /// horizon covers `ts`.
    fn expired(&self, root: &AccountId, nonce: &[u8; 16], ts: u64, now: u64) -> bool {
        let remembered = self.roots.get(root).and_then(|r| r.timestamps.get(nonce));
        remembered.is_some_and(|&t| self.expiry(t) < now)
            && ![self.root_horizon(root), self.horizon].iter().flatten().any(|&h| ts <= h)
    }

    /// The global horizon: nonces of every root dated at or before it are refused.
    pub fn horizon(&self) -> Option<u64> {
        self.horizon
    }

    /// `root`'s horizon.
    pub fn root_horizon(&self, root: &AccountId) -> Option<u64> {
        self.roots.get(root).and_then(|r| r.horizon)
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Nonces `root` holds now.
    pub fn root_len(&self, root: &AccountId) -> usize {
        self.roots.get(root).map_or(0, |r| r.timestamps.len())
    }

    /// True when no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// The memory store: today's ledger, in this process (SPEC §5.1 to §5.7).
struct Memory {
    accounts: Mutex<Accounts>,
    nonces: Mutex<NonceSet>,
    limits: Limits,
}

/// Refuses a path that names one account twice: the amount would be held on it twice.
fn distinct(path: &[(AccountId, u64)]) -> Result<()> {
    if path.iter().enumerate().any(|(i, (id, _))| path[..i].iter().any(|(seen, _)| seen == id)) {
        return Err(Error::input("path", "an account appears twice (the amount would be held on it twice)"));
    }
    Ok(())
}

// A panic while a lock is held cannot leave an account half-updated: every update
// below is computed first and written without any call that can panic, so a
// poisoned lock is still consistent and is simply taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Memory {
    /// Reserves `amount` on every account of `path`, where account `i` may be
    /// forgotten after `expires(i)`.
    fn reserve_until(&self, path: &[(AccountId, u64)], expires: &dyn Fn(usize) -> u64, amount: u64) -> Result<Held> {
        let mut accounts = lock(&self.accounts);
        crate::fault::inject("reserve");
        let fits = path.iter().all(|(id, cap)| {
            let acc = accounts.map.get(id).map_or(Account { cap: *cap, ..Account::default() }, |s| s.account);
            u128::from(acc.spent) + u128::from(acc.reserved) + u128::from(amount) <= u128::from(acc.cap)
        });
        if !fits {
            return Err(Error::refused(Code::BudgetExhausted, "an account on the path has no room for the amount"));
        }
        if let Err(why) = accounts.may_open(path, expires) {
            let reason = match why {
                NoRoom::Horizon => "an account on the path expired and was forgotten; it cannot be opened again".into(),
                NoRoom::Total(max) => format!("the ledger cannot open another account (max_accounts = {max})"),
                NoRoom::Root(max) => {
                    format!("the root of this path cannot open another account (max_accounts_per_root = {max})")
                }
            };
            return Err(Error::refused(Code::BudgetExhausted, reason));
        }
        for (i, (id, cap)) in path.iter().enumerate() {
            // Cannot overflow: spent + reserved + amount <= cap <= u64::MAX was checked.
            accounts.open(*id, *cap, expires(i), path[0].0).reserved += amount;
        }
        Ok(Held { id: [0; 16], path: path.iter().map(|(id, _)| *id).collect(), amount })
    }

    /// SPEC §5.7 for one request.
    fn admit_one(&self, now: u64, a: &Admission<'_>) -> std::result::Result<Held, Code> {
        let Some(&(root, _)) = a.path.first() else { return Err(Code::BudgetExhausted) };
        let mut nonces = lock(&self.nonces);
        nonces.prune(now);
        if nonces.seen(&root, a.nonce, a.timestamp) {
            return Err(Code::Replay);
        }
        {
            let mut accounts = lock(&self.accounts);
            accounts.now = accounts.now.max(now);
        }
        let until = |i: usize| a.expires.get(i).copied().unwrap_or(NEVER);
        let held = self.reserve_until(a.path, &until, a.amount).map_err(|_| Code::BudgetExhausted)?;
        nonces.insert(root, *a.nonce, a.timestamp);
        Ok(held)
    }
}

impl Store for Memory {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn limits(&self) -> Option<Limits> {
        Some(self.limits)
    }

    fn retain(&self, window: u64) -> Result<()> {
        lock(&self.nonces).retain(window);
        Ok(())
    }

    fn replay_window(&self) -> u64 {
        lock(&self.nonces).retention()
    }

    fn admit(&self, now: u64, batch: &[Admission<'_>]) -> Result<Vec<std::result::Result<Held, Code>>> {
        Ok(batch.iter().map(|a| self.admit_one(now, a)).collect())
    }

    fn reserve(&self, path: &[(AccountId, u64)], amount: u64) -> Result<Held> {
        self.reserve_until(path, &|_| NEVER, amount)
    }

    fn settle(&self, held: &Held, kind: Settlement, charged: u64) -> Result<Settled> {
        let charge = Step::charge(kind, held.amount, charged);
        let mut accounts = lock(&self.accounts);
        for id in &held.path {
            if let Some(Slot { account, .. }) = accounts.map.get_mut(id) {
                Step::settle(account, held.amount, charge);
            }
        }
        Ok(Settled::Now)
    }

    fn seen(&self, root: &AccountId, nonce: &[u8; 16], timestamp: u64, now: u64) -> Result<bool> {
        let nonces = lock(&self.nonces);
        Ok(nonces.seen(root, nonce, timestamp) && !nonces.expired(root, nonce, timestamp, now))
    }

    fn account(&self, _root: Option<&AccountId>, id: &AccountId) -> Result<Option<Account>> {
        Ok(lock(&self.accounts).map.get(id).map(|s| s.account))
    }

    fn accounts(&self) -> Result<Vec<(AccountId, Account)>> {
        Ok(lock(&self.accounts).map.iter().map(|(k, v)| (*k, v.account)).collect())
    }

    fn nonces_len(&self, now: u64) -> Result<usize> {
        let mut nonces = lock(&self.nonces);
        nonces.prune(now);
        Ok(nonces.len())
    }
}

/// The ledger. Cloning it shares it (gates given one ledger share budgets and nonces);
/// authority lives in [`Budget`] and [`Reservation`], which cannot be cloned.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn Store>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// An empty ledger with the default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default()).expect("the default limits are valid")
    }

    /// An empty ledger that remembers at most what `limits` allows.
    pub fn with_limits(limits: Limits) -> Result<Self> {
        for (name, v) in [
            ("max_accounts", limits.max_accounts),
            ("max_nonces", limits.max_nonces),
            ("max_accounts_per_root", limits.max_accounts_per_root),
            ("max_nonces_per_root", limits.max_nonces_per_root),
        ] {
            if v == 0 {
                return Err(Error::input(name, "must be at least 1"));
            }
        }
        let memory = Memory {
            accounts: Mutex::new(Accounts::new(limits.max_accounts, limits.max_accounts_per_root)),
            nonces: Mutex::new(NonceSet::new(limits.max_nonces, limits.max_nonces_per_root)),
            limits,
        };
        Ok(Ledger { store: Arc::new(memory) })
    }

    /// A ledger kept in the durable store `url` names (SPEC §5.8): every process that
    /// opens the same URL shares it. Reservations are leased for `lease`; the store
    /// must answer within `timeout`.
    pub fn open(url: &str, lease: Duration, timeout: Duration) -> Result<Self> {
        if lease.is_zero() {
            return Err(Error::input("lease", "must be positive"));
        }
        if timeout.is_zero() {
            return Err(Error::input("timeout", "must be positive"));
        }
        let store: Arc<dyn Store> = match Url::parse(url)? {
            Url::Sqlite(path) => Arc::new(crate::store::sqlite::SqliteStore::open(&path, lease, timeout)?),
            Url::Redis(u) => Arc::new(crate::store::redis::RedisStore::open(&u, false, lease, timeout)?),
            Url::RedisCluster(u) => Arc::new(crate::store::redis::RedisStore::open(&u, true, lease, timeout)?),
        };
        Ok(Ledger { store })
    }

    /// Where this ledger keeps its state.
    pub fn kind(&self) -> StoreKind {
        self.store.kind()
    }

    /// A durable reservation's lease (None for a memory ledger).
    pub fn lease(&self) -> Option<Duration> {
        self.store.lease()
    }

    /// Lets go of the store's connections and files: later steps fail with
    /// [`Error::Store`]. A memory ledger is unchanged.
    pub fn close(&self) {
        self.store.close();
    }

    /// Keeps every nonce for at least `window` seconds after its timestamp: a gate
    /// calls this with its replay window, so that no gate sharing the ledger can
    /// admit a nonce another gate still considers fresh.
    pub fn retain(&self, window: u64) -> Result<()> {
        self.store.retain(window)
    }

    /// The longest replay window of any gate on this ledger (0 before any).
    pub fn replay_window(&self) -> u64 {
        self.store.replay_window()
    }

    /// What a memory ledger remembers at most (None for a durable store).
    pub fn limits(&self) -> Option<Limits> {
        self.store.limits()
    }

    /// A budget handle on `path` (account id, cap), root first.
    pub fn budget(&self, path: Vec<(AccountId, u64)>) -> Result<Budget> {
        if path.is_empty() {
            return Err(Error::input("path", "a budget needs at least one account"));
        }
        distinct(&path)?;
        Ok(Budget { ledger: self.clone(), path })
    }

    fn reservation(&self, held: Held) -> Reservation {
        Reservation { ledger: self.clone(), held, settled: false, audit: None }
    }

    /// Reserves `amount` on every account of `path`, atomically; accounts are created
    /// on first use with the cap given (an existing account keeps its cap) and never
    /// expire. Fails, changing nothing, unless every account has room and the ledger
    /// may open the new ones (`max_accounts`).
    pub fn reserve(&self, path: &[(AccountId, u64)], amount: u64) -> Result<Reservation> {
        if path.is_empty() {
            return Err(Error::input("path", "a reservation needs at least one account"));
        }
        distinct(path)?;
        self.store.reserve(path, amount).map(|held| self.reservation(held))
    }

    /// The gate's ledger step (SPEC §5.7, §5.8) for each admission, in order, at
    /// `now`: replay check and reservation as one step, the nonce recorded only when
    /// both succeed. `path` comes from [`chain_path`]; account `i` may be forgotten
    /// once `expires[i]` (link `i`'s `not_after`) has passed and nothing is reserved
    /// on it. A store failure ([`Error::Store`]) allows nothing.
    pub fn admit(&self, now: u64, batch: &[Admission<'_>]) -> Result<Vec<std::result::Result<Reservation, Code>>> {
        for a in batch {
            if a.path.is_empty() {
                return Err(Error::input("path", "a reservation needs at least one account"));
            }
            distinct(a.path)?;
        }
        let held = self.store.admit(now, batch)?;
        Ok(held.into_iter().map(|h| h.map(|held| self.reservation(held))).collect())
    }

    /// What could be reserved on `path` now: the least room on it.
    pub fn remaining(&self, path: &[(AccountId, u64)]) -> Result<u64> {
        let Some(&(root, _)) = path.first() else { return Ok(0) };
        let mut least = u64::MAX;
        for (id, cap) in path {
            let room = self.account(Some(&root), id)?.map_or(*cap, |a| a.room());
            least = least.min(room);
        }
        Ok(least)
    }

    /// Whether `nonce` of `root`, dated `timestamp`, would be refused as a replay at
    /// `now`, without consuming or pruning anything.
    pub fn seen(&self, root: &AccountId, nonce: &[u8; 16], timestamp: u64, now: u64) -> Result<bool> {
        self.store.seen(root, nonce, timestamp, now)
    }

    /// One account's state; `root` (the path's first account) narrows the search, and
    /// a Redis store needs it.
    pub fn account(&self, root: Option<&AccountId>, id: &AccountId) -> Result<Option<Account>> {
        self.store.account(root, id)
    }

    /// Every account's state.
    pub fn accounts(&self) -> Result<Vec<(AccountId, Account)>> {
        self.store.accounts()
    }

    /// How many nonces the replay set holds now (after pruning at `now`).
    pub fn nonces_len(&self, now: u64) -> Result<usize> {
        self.store.nonces_len(now)
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
    held: Held,
    settled: bool,
    /// Where the settlement is recorded (a gate's audit log) and the digest of the
    /// invocation it settles.
    audit: Option<(Arc<Mutex<AuditLog>>, [u8; 32])>,
}

impl Reservation {
    /// The amount held.
    pub fn amount(&self) -> u64 {
        self.held.amount
    }

    /// The accounts it is held on, root first.
    pub fn path(&self) -> &[AccountId] {
        &self.held.path
    }

    /// Its id in a durable store (all zero in a memory ledger).
    pub fn id(&self) -> [u8; 16] {
        self.held.id
    }

    /// This reservation, appending a settlement record to `log` when it is settled
    /// ([`audit::settle_record`]); `invocation` is the digest of the request's
    /// invocation, which links the record to the gate's record of the decision.
    pub fn recorded(mut self, log: Arc<Mutex<AuditLog>>, invocation: [u8; 32]) -> Self {
        self.audit = Some((log, invocation));
        self
    }

    /// Settles the ledger (`charged` spent) and appends the settlement record, under
    /// the audit log's lock when there is one, so that the log holds settlements in
    /// the order the ledger saw them. (The audit lock is taken before the accounts
    /// lock here, and the gate never holds the accounts lock while it takes the audit
    /// lock, so the two cannot deadlock.) The ledger is settled even when the record
    /// cannot be written: money spent is never forgotten. A reservation its lease
    /// forfeited is recorded as that forfeit.
    fn settle(&self, kind: Settlement, charged: u64) -> std::result::Result<(), SettleError> {
        let Some((log, invocation)) = &self.audit else {
            return self.settle_store(kind, charged);
        };
        let mut log = lock(log);
        let outcome = self.settle_store(kind, charged);
        // A lease that forfeited it is recorded as that forfeit: the log then holds what
        // the ledger charged. A store that failed leaves it to the lease (no record).
        let (kind, charged) = match outcome {
            Ok(()) => (kind, charged),
            Err(SettleError::LeaseExpired(amount)) => (Settlement::Forfeit, amount),
            Err(e) => return Err(e),
        };
        let record = audit::settle_record(kind, self.held.amount, charged, invocation, &self.held.path);
        log.append(&record).map_err(SettleError::Audit)?;
        outcome
    }

    fn settle_store(&self, kind: Settlement, charged: u64) -> std::result::Result<(), SettleError> {
        match self.ledger.store.settle(&self.held, kind, charged) {
            Ok(Settled::Now) | Ok(Settled::Before) => Ok(()),
            Ok(Settled::Forfeited) => Err(SettleError::LeaseExpired(self.held.amount)),
            Err(e) => Err(SettleError::Store(e)),
        }
    }

    /// Spends `actual` and releases the rest. Charging more than was reserved still
    /// charges it all, records the excess as an overrun, and returns
    /// [`SettleError::Overrun`]. The ledger is settled before the settlement record
    /// is appended; a record that cannot be written is [`SettleError::Audit`].
    pub fn commit(mut self, actual: u64) -> std::result::Result<(), SettleError> {
        self.settled = true;
        self.settle(Settlement::Commit, actual)?;
        if actual > self.held.amount {
            return Err(Overrun { reserved: self.held.amount, actual }.into());
        }
        Ok(())
    }

    /// Releases the whole amount: the statement that nothing was spent. The error
    /// is a settlement record that could not be written (the ledger is settled), or
    /// a durable store's refusal.
    pub fn release(mut self) -> std::result::Result<(), SettleError> {
        self.settled = true;
        self.settle(Settlement::Release, 0)
    }
}

impl Drop for Reservation {
    /// Forfeits an unsettled reservation: its amount counts as spent.
    fn drop(&mut self) {
        if !self.settled {
            // A drop has nobody to report to; the ledger holds the charge (a durable
            // store that cannot be reached forfeits it at its lease), and a log that
            // cannot be written fails the next append loudly.
            let _ = self.settle(Settlement::Forfeit, self.held.amount);
        }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").field("amount", &self.held.amount).field("links", &self.held.path.len()).finish()
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

    /// The ledger it reserves on.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Reserves `amount` on every account of the path.
    pub fn reserve(&self, amount: u64) -> Result<Reservation> {
        self.ledger.reserve(&self.path, amount)
    }

    /// What could be reserved now: the least room on the path.
    pub fn remaining(&self) -> Result<u64> {
        self.ledger.remaining(&self.path)
    }

    /// Splits off a child account with `cap` (at most this budget's own cap) under
    /// `id`. Consumes `self` and returns `(parent, child)`; a refusal hands `self`
    /// back unchanged beside the error, so nothing is lost.
    pub fn delegate(self, id: AccountId, cap: u64) -> std::result::Result<(Budget, Budget), (Budget, Error)> {
        if self.path.iter().any(|(seen, _)| *seen == id) {
            return Err((self, Error::input("account_id", "already on this budget's path")));
        }
        // An account that exists keeps the cap it was opened with; that is the cap to narrow.
        let (last, named) = self.path[self.path.len() - 1];
        let own = match self.ledger.account(Some(&self.path[0].0), &last) {
            Ok(a) => a.map_or(named, |a| a.cap),
            Err(e) => return Err((self, e)),
        };
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
