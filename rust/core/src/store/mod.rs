//! Where a ledger keeps its accounts, nonces and reservations (SPEC §5.8): the
//! [`Store`] trait, and the durable stores behind `Ledger::open` — [`sqlite`] for the
//! processes of one host and [`redis`] for a fleet.
//!
//! The rules of a durable step are written once, here ([`Step`]), over the state of
//! one root; each store only loads that state, hands it to [`Step`] and writes back
//! what changed, inside one transaction (SQLite) or one script (Redis, whose Lua
//! applies the same rules where the data lives; `tests/test_store_*.py` checks that
//! both stores and the reference agree).

pub mod redis;
pub mod sqlite;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::audit::Settlement;
use crate::ledger::{Account, AccountId};
use crate::{Code, Error, Result};

/// How long a durable store remembers how a reservation was settled (ms): a retried
/// settlement within it changes nothing (SPEC §5.8).
pub const SETTLED_MEMORY_MS: u64 = 24 * 60 * 60 * 1000;

/// Default lease of a durable reservation (SPEC §5.8).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default time a durable store may take to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What kind of store a ledger keeps its state in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// The memory of this process (`Ledger::new`).
    Memory,
    /// An SQLite file shared by the processes of one host.
    Sqlite,
    /// A Redis server.
    Redis,
    /// A Redis Cluster, sharded by root.
    RedisCluster,
}

impl StoreKind {
    /// The name Python's `Ledger.store` gives.
    pub const fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "sqlite",
            StoreKind::Redis => "redis",
            StoreKind::RedisCluster => "redis-cluster",
        }
    }
}

/// One request that reached the ledger step of a gate (SPEC §5.7).
#[derive(Clone, Copy, Debug)]
pub struct Admission<'a> {
    /// The invocation's nonce.
    pub nonce: &'a [u8; 16],
    /// The invocation's timestamp.
    pub timestamp: u64,
    /// The chain's accounts and caps, root first ([`crate::ledger::chain_path`]).
    pub path: &'a [(AccountId, u64)],
    /// Each link's `not_after`.
    pub expires: &'a [u64],
    /// The cost to reserve.
    pub amount: u64,
}

/// A reservation as its store holds it.
#[derive(Debug)]
pub struct Held {
    /// Its id in the store (random; all zero in a memory store, which needs none).
    pub id: [u8; 16],
    /// The accounts it is held on, root first.
    pub path: Vec<AccountId>,
    /// The amount held.
    pub amount: u64,
}

/// What a settlement found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Settled now.
    Now,
    /// It was settled before, not by its lease (a retried settlement): nothing changed.
    Before,
    /// Its lease forfeited it before: nothing changed, the full amount stands as spent.
    Forfeited,
}

/// A ledger's state: accounts, replay nonces and reservations (SPEC §5). Every method
/// is one atomic step; a durable store's failure is [`Error::Store`] and changes nothing.
pub trait Store: Send + Sync {
    /// What kind of store this is.
    fn kind(&self) -> StoreKind;
    /// A memory store's bounds (a durable store forgets by age only: None).
    fn limits(&self) -> Option<crate::ledger::Limits> {
        None
    }
    /// A durable store's settings in this process (None in memory).
    fn local(&self) -> Option<&Local> {
        None
    }
    /// A durable store's lease on reservations (None in memory).
    fn lease(&self) -> Option<Duration> {
        self.local().map(|l| Duration::from_millis(l.lease_ms))
    }
    /// Keeps every nonce for at least `window` seconds past its timestamp.
    fn retain(&self, window: u64) -> Result<()> {
        if let Some(l) = self.local() {
            l.retention.fetch_max(window, Ordering::Relaxed);
        }
        Ok(())
    }
    /// The retention this process applies: the longest window of its gates (a durable
    /// store's roots keep the longest of every process that stepped on them).
    fn replay_window(&self) -> u64 {
        self.local().map_or(0, |l| l.retention.load(Ordering::Relaxed))
    }
    /// The gate's ledger step for each admission, in order, at `now`: `Ok` with the
    /// reservation, or the refusal (16 or 17). One transaction or script call per root.
    fn admit(&self, now: u64, batch: &[Admission<'_>]) -> Result<Vec<std::result::Result<Held, Code>>>;
    /// Reserves `amount` on `path` for a budget (no clock, no expiry); refused with
    /// [`Error::Refused`] (17).
    fn reserve(&self, path: &[(AccountId, u64)], amount: u64) -> Result<Held>;
    /// Settles `held` as `kind`, charging `charged`.
    fn settle(&self, held: &Held, kind: Settlement, charged: u64) -> Result<Settled>;
    /// Whether `nonce` of `root`, dated `timestamp`, counts as seen at `now`, changing
    /// nothing.
    fn seen(&self, root: &AccountId, nonce: &[u8; 16], timestamp: u64, now: u64) -> Result<bool>;
    /// One account; `root` narrows the search (a Redis store needs it).
    fn account(&self, root: Option<&AccountId>, id: &AccountId) -> Result<Option<Account>>;
    /// Every account.
    fn accounts(&self) -> Result<Vec<(AccountId, Account)>>;
    /// How many nonces are held at `now` (a durable store counts what it may not forget yet).
    fn nonces_len(&self, now: u64) -> Result<usize>;
    /// Lets go of connections and files; later steps fail with [`Error::Store`].
    fn close(&self) {}
}

/// What a durable store's process knows of itself: its lease on reservations, and the
/// longest replay window of its gates.
pub struct Local {
    /// The lease, in ms.
    pub lease_ms: u64,
    retention: AtomicU64,
}

impl Local {
    /// `lease`, and no gate yet.
    pub fn new(lease: Duration) -> Self {
        Local { lease_ms: millis(lease), retention: AtomicU64::new(0) }
    }
}

/// A store failure: changes nothing, and makes a gate allow nothing.
pub(crate) fn failed(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::Store { reason: format!("{what}: {reason}") }
}

/// Milliseconds since the epoch on this host's clock.
pub(crate) fn host_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh reservation id.
pub(crate) fn reservation_id() -> [u8; 16] {
    crate::chain::random_nonce()
}

/// Milliseconds in `d`, at least 1.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A root's counters (SPEC §5.8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootClock {
    /// The latest `now` of a gate step on the root.
    pub clock: u64,
    /// The longest replay window any process applied to the root.
    pub retention: u64,
}

impl RootClock {
    /// Raised for a gate step at `now` by a process whose retention is `retention`.
    ///
    /// What the root may have forgotten is what its threshold `clock − retention` ever
    /// passed, so the threshold never moves back: a longer window takes effect only as
    /// far as the clock has advanced past the old threshold (a nonce it would cover may
    /// be forgotten already, and is refused instead). Without this, a gate joining with
    /// a longer window would bring forgotten nonces back to life.
    pub fn raised(self, now: u64, retention: u64) -> Self {
        let floor = self.clock.saturating_sub(self.retention);
        let clock = self.clock.max(now);
        RootClock { clock, retention: self.retention.max(retention.min(clock - floor)) }
    }

    /// True iff a nonce dated `ts` may have been forgotten: `ts + retention < clock`.
    pub fn forgets(&self, ts: u64) -> bool {
        ts.saturating_add(self.retention) < self.clock
    }

    /// True iff nothing can reserve through a link with this `not_after` any more.
    pub fn closes(&self, not_after: u64) -> bool {
        not_after <= self.clock
    }
}

/// The rules of one durable step on one root's state, which the store loaded: the
/// accounts of the path (None: not opened) and whether the nonce is held.
pub struct Step;

impl Step {
    /// A gate's admission (SPEC §5.8): replay, closed links, room. `Ok` with the
    /// accounts to write (each opened with the path's cap, `reserved += amount`,
    /// expiring at the latest of its openers).
    pub fn admit(
        root: &RootClock,
        nonce_held: bool,
        a: &Admission<'_>,
        accounts: &[Option<(Account, u64)>],
    ) -> std::result::Result<Vec<(Account, u64)>, Code> {
        if nonce_held || root.forgets(a.timestamp) {
            return Err(Code::Replay);
        }
        if a.expires.iter().any(|&t| root.closes(t)) {
            return Err(Code::BudgetExhausted);
        }
        Self::reserve(a.path, a.expires, a.amount, accounts).ok_or(Code::BudgetExhausted)
    }

    /// A reservation of `amount` on `path` (expiries `expires`) given the accounts
    /// loaded: the accounts to write, or None when one has no room.
    pub fn reserve(
        path: &[(AccountId, u64)],
        expires: &[u64],
        amount: u64,
        accounts: &[Option<(Account, u64)>],
    ) -> Option<Vec<(Account, u64)>> {
        let mut out = Vec::with_capacity(path.len());
        for (i, (_, cap)) in path.iter().enumerate() {
            let until = expires.get(i).copied().unwrap_or(crate::ledger::NEVER);
            let (mut acc, was) =
                accounts.get(i).copied().flatten().unwrap_or((Account { cap: *cap, ..Account::default() }, 0));
            if u128::from(acc.spent) + u128::from(acc.reserved) + u128::from(amount) > u128::from(acc.cap) {
                return None;
            }
            // Cannot overflow: spent + reserved + amount <= cap <= u64::MAX.
            acc.reserved += amount;
            out.push((acc, was.max(until)));
        }
        Some(out)
    }

    /// Settling `reserved` as `charged` on one account (SPEC §5.3).
    pub fn settle(acc: &mut Account, reserved: u64, charged: u64) {
        acc.reserved = acc.reserved.saturating_sub(reserved);
        acc.spent = acc.spent.saturating_add(charged);
        acc.overrun = acc.overrun.saturating_add(charged.saturating_sub(reserved));
    }

    /// What a settlement of `kind` charges for a reservation of `amount`.
    pub fn charge(kind: Settlement, amount: u64, charged: u64) -> u64 {
        match kind {
            Settlement::Commit => charged,
            Settlement::Release => 0,
            Settlement::Forfeit => amount,
        }
    }

    /// The tombstone letter of `kind` (SPEC §5.9).
    pub fn letter(kind: Settlement) -> &'static str {
        match kind {
            Settlement::Commit => "C",
            Settlement::Release => "R",
            Settlement::Forfeit => "F",
        }
    }

    /// What a settlement of `kind` finds when the reservation is gone and the
    /// tombstone says `letter` (None: no tombstone).
    pub fn after(letter: Option<&str>) -> Settled {
        match letter {
            Some("C") | Some("R") => Settled::Before,
            _ => Settled::Forfeited,
        }
    }
}

/// A URL of `Ledger::open`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    /// `sqlite:///abs/path` or `sqlite:relative/path`.
    Sqlite(std::path::PathBuf),
    /// `redis://...`, passed on as written.
    Redis(String),
    /// `redis+cluster://host:port`, as `redis://host:port` for the client.
    RedisCluster(String),
}

impl Url {
    /// Parses `url` (SPEC §5.8).
    pub fn parse(url: &str) -> Result<Url> {
        let bad = |why: &str| Error::input("url", format!("{why} (got {:?})", redact(url)));
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = match rest.strip_prefix("//") {
                Some(abs) if abs.starts_with('/') => abs,
                Some(_) => return Err(bad("an SQLite URL is sqlite:///absolute/path or sqlite:relative/path")),
                None => rest,
            };
            if path.is_empty() || path.ends_with('/') || path.contains('?') || path.contains('\0') {
                return Err(bad("an SQLite URL names a file: sqlite:///absolute/path or sqlite:relative/path"));
            }
            return Ok(Url::Sqlite(path.into()));
        }
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
                return Err(bad("a Redis Cluster URL is redis+cluster://host:port (any node, no database)"));
            }
            return Ok(Url::RedisCluster(format!("redis://{}", rest.trim_end_matches('/'))));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            if url.len() <= "redis://".len() {
                return Err(bad("a Redis URL is redis://host:port/db"));
            }
            return Ok(Url::Redis(url.to_string()));
        }
        Err(bad("expected sqlite:///path, redis://host:port/db or redis+cluster://host:port"))
    }
}

/// `url` with any password replaced by `***`, for messages and `repr`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // The last '@' before the path ends the credentials: a password may hold '@'.
    let authority = rest.split('/').next().unwrap_or(rest);
    let (auth, host) = match authority.rfind('@').map(|i| (&rest[..i], &rest[i + 1..])) {
        Some((auth, host)) if !auth.contains('/') => (auth, host),
        _ => return url.to_string(),
    };
    let user = auth.split_once(':').map_or(auth, |(u, _)| u);
    if auth.contains(':') {
        format!("{scheme}://{user}:***@{host}")
    } else {
        format!("{scheme}://***@{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(Url::parse("sqlite:///tmp/a.db").unwrap(), Url::Sqlite("/tmp/a.db".into()));
        assert_eq!(Url::parse("sqlite:a/b.db").unwrap(), Url::Sqlite("a/b.db".into()));
        assert!(Url::parse("sqlite://host/a.db").is_err());
        assert!(Url::parse("sqlite:").is_err());
        assert!(Url::parse("sqlite:///tmp/").is_err());
        assert_eq!(Url::parse("redis://127.0.0.1:6379/0").unwrap(), Url::Redis("redis://127.0.0.1:6379/0".into()));
        assert_eq!(
            Url::parse("redis+cluster://127.0.0.1:7000").unwrap(),
            Url::RedisCluster("redis://127.0.0.1:7000".into())
        );
        assert!(Url::parse("redis+cluster://127.0.0.1:7000/1").is_err());
        assert!(Url::parse("postgres://x").is_err());
        assert_eq!(redact("redis://user:secret@h:1/0"), "redis://user:***@h:1/0");
        assert_eq!(redact("redis://secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact("redis://u:p@ss@h:1/0"), "redis://u:***@h:1/0");
    }

    #[test]
    fn step_rules() {
        let root = RootClock { clock: 100, retention: 10 };
        let path = [([1u8; 32], 5u64), ([2u8; 32], 3u64)];
        let a = Admission { nonce: &[0; 16], timestamp: 95, path: &path, expires: &[200, 150], amount: 3 };
        let out = Step::admit(&root, false, &a, &[None, None]).unwrap();
        assert_eq!(out[1].0.reserved, 3);
        assert_eq!(out[0].1, 200);
        assert_eq!(Step::admit(&root, true, &a, &[None, None]), Err(Code::Replay));
        assert_eq!(Step::admit(&root, false, &Admission { timestamp: 89, ..a }, &[None, None]), Err(Code::Replay));
        assert_eq!(
            Step::admit(&root, false, &Admission { expires: &[200, 100], ..a }, &[None, None]),
            Err(Code::BudgetExhausted)
        );
        assert_eq!(Step::admit(&root, false, &Admission { amount: 4, ..a }, &[None, None]), Err(Code::BudgetExhausted));
        let full = Account { cap: 3, spent: 1, ..Account::default() };
        assert_eq!(Step::admit(&root, false, &a, &[None, Some((full, 150))]), Err(Code::BudgetExhausted));
        assert!(!RootClock { clock: u64::MAX, retention: 10 }.forgets(u64::MAX - 5));
        // A longer window never lowers the threshold clock - retention.
        let c = RootClock { clock: 1_000, retention: 2 }.raised(1_003, 10);
        assert_eq!((c.clock, c.retention), (1_003, 5));
        assert!(c.forgets(997) && !c.forgets(998));
        assert_eq!(c.raised(1_010, 10).retention, 10);
        assert_eq!(RootClock::default().raised(500, 300).retention, 300);
        assert_eq!(RootClock::default().raised(100, 300).retention, 100);
    }
}
