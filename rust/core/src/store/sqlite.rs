//! The SQLite store (SPEC §5.8, layout in §5.9): one file, WAL, shared by the
//! processes of one host. Every step is one `BEGIN IMMEDIATE` transaction (a gate
//! batch is one), so SQLite's write lock serialises the processes and a step that
//! fails, or a process killed in the middle of one, leaves nothing of it behind.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{failed, host_ms, reservation_id, Admission, Held, Local, RootClock, Settled, Step, Store, StoreKind};
use crate::audit::Settlement;
use crate::ledger::{Account, AccountId, NEVER};
use crate::{Code, Error, Result};

/// The layout this code reads and writes (SPEC §5.9).
const FORMAT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS roots(root BLOB PRIMARY KEY, clock BLOB NOT NULL, retention BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS accounts(root BLOB, id BLOB, cap BLOB, spent BLOB, reserved BLOB,
                                    overrun BLOB, expires BLOB, PRIMARY KEY(root, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS accounts_expiry ON accounts(root, expires);
CREATE TABLE IF NOT EXISTS nonces(root BLOB, nonce BLOB, ts BLOB, PRIMARY KEY(root, nonce)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_age ON nonces(root, ts);
CREATE TABLE IF NOT EXISTS reservations(id BLOB PRIMARY KEY, root BLOB NOT NULL, path BLOB NOT NULL,
                                        amount BLOB NOT NULL, deadline INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_deadline ON reservations(deadline);
CREATE TABLE IF NOT EXISTS settled(id BLOB PRIMARY KEY, kind TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS settled_at ON settled(at);
INSERT OR IGNORE INTO meta VALUES('format', 1);
";

/// A u64 as SQLite holds it: 8 big-endian bytes, so that byte order is numeric order.
fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn from_be(b: &[u8]) -> rusqlite::Result<u64> {
    let bytes: [u8; 8] =
        b.try_into().map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, i64::try_from(b.len()).unwrap_or(-1)))?;
    Ok(u64::from_be_bytes(bytes))
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn err(e: rusqlite::Error) -> Error {
    failed("sqlite", e)
}

/// An account row: the account and its expiry.
type Row = (Account, u64);

/// A reservation row as read: id, root, path, amount.
type ReservationRow = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Option<Connection>>,
    local: Local,
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger file at `path`.
    pub fn open(path: &Path, lease: Duration, timeout: Duration) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| failed(&format!("sqlite: opening {}", path.display()), e))?;
        conn.busy_timeout(timeout).map_err(err)?;
        // Switching a new file to WAL takes a lock that SQLite's busy handler does not
        // wait for: processes opening one new file at once retry until `timeout`.
        let started = std::time::Instant::now();
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < timeout =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => break other.map_err(err)?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(failed(
                "sqlite",
                format!("{} cannot use write-ahead logging (journal_mode={mode})", path.display()),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;")).map_err(err)?;
        let format: i64 =
            conn.query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| r.get(0)).map_err(err)?;
        if format != FORMAT {
            return Err(failed(
                "sqlite",
                format!("{} holds ledger format {format}; this hopgate reads {FORMAT}", path.display()),
            ));
        }
        Ok(SqliteStore { conn: Mutex::new(Some(conn)), local: Local::new(lease) })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction, after forfeiting the expired
    /// leases; commits only if it succeeds.
    fn with<T>(&self, body: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let mut guard = self.lock();
        let conn = guard.as_mut().ok_or_else(|| failed("sqlite", "the ledger was closed"))?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        sweep(&tx, host_ms()).map_err(err)?;
        let out = body(&tx).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Runs `body` on a read transaction (no write lock, nothing swept).
    fn read<T>(&self, body: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let guard = self.lock();
        let conn = guard.as_ref().ok_or_else(|| failed("sqlite", "the ledger was closed"))?;
        body(conn).map_err(err)
    }
}

fn account_row(tx: &Connection, root: &AccountId, id: &AccountId) -> rusqlite::Result<Option<Row>> {
    tx.prepare_cached("SELECT cap, spent, reserved, overrun, expires FROM accounts WHERE root = ?1 AND id = ?2")?
        .query_row(params![&root[..], &id[..]], |r| {
            let acc = Account {
                cap: from_be(&r.get::<_, Vec<u8>>(0)?)?,
                spent: from_be(&r.get::<_, Vec<u8>>(1)?)?,
                reserved: from_be(&r.get::<_, Vec<u8>>(2)?)?,
                overrun: from_be(&r.get::<_, Vec<u8>>(3)?)?,
            };
            Ok((acc, from_be(&r.get::<_, Vec<u8>>(4)?)?))
        })
        .optional()
}

fn write_account(tx: &Connection, root: &AccountId, id: &AccountId, (a, expires): &Row) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO accounts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?.execute(params![
        &root[..],
        &id[..],
        &be(a.cap)[..],
        &be(a.spent)[..],
        &be(a.reserved)[..],
        &be(a.overrun)[..],
        &be(*expires)[..]
    ])?;
    Ok(())
}

fn root_clock(tx: &Connection, root: &AccountId) -> rusqlite::Result<RootClock> {
    let row = tx
        .prepare_cached("SELECT clock, retention FROM roots WHERE root = ?1")?
        .query_row([&root[..]], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .optional()?;
    match row {
        Some((clock, retention)) => Ok(RootClock { clock: from_be(&clock)?, retention: from_be(&retention)? }),
        None => Ok(RootClock::default()),
    }
}

/// Applies a settlement of `reserved`, charging `charge`, to the accounts of `path`
/// (concatenated ids) that still exist under `root`.
fn settle_accounts(tx: &Connection, root: &AccountId, path: &[u8], reserved: u64, charge: u64) -> rusqlite::Result<()> {
    for chunk in path.chunks_exact(32) {
        let id: AccountId = chunk.try_into().expect("chunks of 32");
        if let Some((mut acc, expires)) = account_row(tx, root, &id)? {
            Step::settle(&mut acc, reserved, charge);
            write_account(tx, root, &id, &(acc, expires))?;
        }
    }
    Ok(())
}

/// Forfeits every reservation whose lease ended before `now_ms`, and forgets
/// settlements older than [`super::SETTLED_MEMORY_MS`].
fn sweep(tx: &Transaction<'_>, now_ms: u64) -> rusqlite::Result<()> {
    let expired: Vec<ReservationRow> = tx
        .prepare_cached("SELECT id, root, path, amount FROM reservations WHERE deadline < ?1")?
        .query_map([ms(now_ms)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, root, path, amount) in expired {
        let root: AccountId = root.as_slice().try_into().map_err(|_| rusqlite::Error::InvalidQuery)?;
        let amount = from_be(&amount)?;
        settle_accounts(tx, &root, &path, amount, amount)?;
        tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?.execute([&id])?;
        tx.prepare_cached("INSERT OR REPLACE INTO settled VALUES (?1, 'F', ?2)")?.execute(params![&id, ms(now_ms)])?;
    }
    tx.prepare_cached("DELETE FROM settled WHERE at < ?1")?
        .execute([ms(now_ms.saturating_sub(super::SETTLED_MEMORY_MS))])?;
    Ok(())
}

/// Records a reservation of `amount` on `path` under `root`, leased until `deadline`.
fn insert_reservation(
    tx: &Connection,
    id: &[u8; 16],
    path: &[AccountId],
    amount: u64,
    deadline: u64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO reservations VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![
        &id[..],
        &path[0][..],
        path.concat(),
        &be(amount)[..],
        ms(deadline)
    ])?;
    Ok(())
}

/// The accounts a batch touched, read once and written back once.
#[derive(Default)]
struct Cache {
    rows: HashMap<(AccountId, AccountId), (Option<Row>, bool)>,
}

impl Cache {
    fn get(&mut self, tx: &Connection, root: &AccountId, id: &AccountId) -> rusqlite::Result<Option<Row>> {
        if let Some((row, _)) = self.rows.get(&(*root, *id)) {
            return Ok(*row);
        }
        let row = account_row(tx, root, id)?;
        self.rows.insert((*root, *id), (row, false));
        Ok(row)
    }

    fn put(&mut self, root: &AccountId, id: &AccountId, row: Row) {
        self.rows.insert((*root, *id), (Some(row), true));
    }

    fn flush(self, tx: &Connection) -> rusqlite::Result<()> {
        for ((root, id), (row, dirty)) in self.rows {
            if let (Some(row), true) = (row, dirty) {
                write_account(tx, &root, &id, &row)?;
            }
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }

    fn local(&self) -> Option<&Local> {
        Some(&self.local)
    }

    fn admit(&self, now: u64, batch: &[Admission<'_>]) -> Result<Vec<std::result::Result<Held, Code>>> {
        let retention = self.replay_window();
        let deadline = host_ms().saturating_add(self.local.lease_ms);
        self.with(|tx| {
            let mut clocks: HashMap<AccountId, RootClock> = HashMap::new();
            let mut cache = Cache::default();
            let mut out = Vec::with_capacity(batch.len());
            for a in batch {
                let root = a.path[0].0;
                let clock = match clocks.get(&root) {
                    Some(c) => *c,
                    None => {
                        let c = root_clock(tx, &root)?.raised(now, retention);
                        forget(tx, &root, &c)?;
                        clocks.insert(root, c);
                        c
                    }
                };
                let held: bool = tx
                    .prepare_cached("SELECT 1 FROM nonces WHERE root = ?1 AND nonce = ?2")?
                    .exists(params![&root[..], &a.nonce[..]])?;
                let mut rows = Vec::with_capacity(a.path.len());
                for (id, _) in a.path {
                    rows.push(cache.get(tx, &root, id)?);
                }
                match Step::admit(&clock, held, a, &rows) {
                    Err(code) => out.push(Err(code)),
                    Ok(rows) => {
                        for ((id, _), row) in a.path.iter().zip(rows) {
                            cache.put(&root, id, row);
                        }
                        let id = reservation_id();
                        let path: Vec<AccountId> = a.path.iter().map(|(id, _)| *id).collect();
                        insert_reservation(tx, &id, &path, a.amount, deadline)?;
                        tx.prepare_cached("INSERT INTO nonces VALUES (?1, ?2, ?3)")?.execute(params![
                            &root[..],
                            &a.nonce[..],
                            &be(a.timestamp)[..]
                        ])?;
                        out.push(Ok(Held { id, path, amount: a.amount }));
                    }
                }
            }
            cache.flush(tx)?;
            for (root, c) in clocks {
                tx.prepare_cached("INSERT OR REPLACE INTO roots VALUES (?1, ?2, ?3)")?.execute(params![
                    &root[..],
                    &be(c.clock)[..],
                    &be(c.retention)[..]
                ])?;
            }
            Ok(out)
        })
    }

    fn reserve(&self, path: &[(AccountId, u64)], amount: u64) -> Result<Held> {
        let deadline = host_ms().saturating_add(self.local.lease_ms);
        let root = path[0].0;
        let held = self.with(|tx| {
            let mut rows = Vec::with_capacity(path.len());
            for (id, _) in path {
                rows.push(account_row(tx, &root, id)?);
            }
            let Some(rows) = Step::reserve(path, &vec![NEVER; path.len()], amount, &rows) else { return Ok(None) };
            for ((id, _), row) in path.iter().zip(rows) {
                write_account(tx, &root, id, &row)?;
            }
            let id = reservation_id();
            let ids: Vec<AccountId> = path.iter().map(|(id, _)| *id).collect();
            insert_reservation(tx, &id, &ids, amount, deadline)?;
            Ok(Some(Held { id, path: ids, amount }))
        })?;
        held.ok_or_else(|| Error::refused(Code::BudgetExhausted, "an account on the path has no room for the amount"))
    }

    fn settle(&self, held: &Held, kind: Settlement, charged: u64) -> Result<Settled> {
        let now_ms = host_ms();
        self.with(|tx| {
            let row: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = tx
                .prepare_cached("SELECT root, path, amount FROM reservations WHERE id = ?1")?
                .query_row([&held.id[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((root, path, amount)) = row else {
                let letter: Option<String> = tx
                    .prepare_cached("SELECT kind FROM settled WHERE id = ?1")?
                    .query_row([&held.id[..]], |r| r.get(0))
                    .optional()?;
                return Ok(Step::after(letter.as_deref()));
            };
            let root: AccountId = root.as_slice().try_into().map_err(|_| rusqlite::Error::InvalidQuery)?;
            let amount = from_be(&amount)?;
            settle_accounts(tx, &root, &path, amount, Step::charge(kind, amount, charged))?;
            tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?.execute([&held.id[..]])?;
            tx.prepare_cached("INSERT OR REPLACE INTO settled VALUES (?1, ?2, ?3)")?.execute(params![
                &held.id[..],
                Step::letter(kind),
                ms(now_ms)
            ])?;
            Ok(Settled::Now)
        })
    }

    fn seen(&self, root: &AccountId, nonce: &[u8; 16], timestamp: u64, now: u64) -> Result<bool> {
        let retention = self.replay_window();
        self.read(|conn| {
            let clock = root_clock(conn, root)?.raised(now, retention);
            let held = conn
                .prepare_cached("SELECT 1 FROM nonces WHERE root = ?1 AND nonce = ?2")?
                .exists(params![&root[..], &nonce[..]])?;
            Ok(held || clock.forgets(timestamp))
        })
    }

    fn account(&self, root: Option<&AccountId>, id: &AccountId) -> Result<Option<Account>> {
        if let Some(root) = root {
            return self.read(|conn| Ok(account_row(conn, root, id)?.map(|(a, _)| a)));
        }
        let roots: Vec<Vec<u8>> = self.read(|conn| {
            conn.prepare_cached("SELECT root FROM accounts WHERE id = ?1 LIMIT 2")?
                .query_map([&id[..]], |r| r.get(0))?
                .collect()
        })?;
        match roots.as_slice() {
            [] => Ok(None),
            [root] => {
                let root: AccountId = root.as_slice().try_into().map_err(|_| failed("sqlite", "a damaged root id"))?;
                self.read(|conn| Ok(account_row(conn, &root, id)?.map(|(a, _)| a)))
            }
            _ => Err(Error::input("root", "this account id is held under several roots: pass root=")),
        }
    }

    fn accounts(&self) -> Result<Vec<(AccountId, Account)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT id, cap, spent, reserved, overrun FROM accounts")?;
            let rows = stmt.query_map([], |r| {
                let id: Vec<u8> = r.get(0)?;
                let id: AccountId = id.as_slice().try_into().map_err(|_| rusqlite::Error::InvalidQuery)?;
                let acc = Account {
                    cap: from_be(&r.get::<_, Vec<u8>>(1)?)?,
                    spent: from_be(&r.get::<_, Vec<u8>>(2)?)?,
                    reserved: from_be(&r.get::<_, Vec<u8>>(3)?)?,
                    overrun: from_be(&r.get::<_, Vec<u8>>(4)?)?,
                };
                Ok((id, acc))
            })?;
            rows.collect()
        })
    }

    fn nonces_len(&self, now: u64) -> Result<usize> {
        let retention = self.replay_window();
        self.read(|conn| {
            let roots: Vec<Vec<u8>> = conn
                .prepare("SELECT root FROM roots")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut n = 0usize;
            for root in roots {
                let root: AccountId = root.as_slice().try_into().map_err(|_| rusqlite::Error::InvalidQuery)?;
                let c = root_clock(conn, &root)?.raised(now, retention);
                let first = c.clock.saturating_sub(c.retention);
                let count: i64 = conn
                    .prepare_cached("SELECT COUNT(*) FROM nonces WHERE root = ?1 AND ts >= ?2")?
                    .query_row(params![&root[..], &be(first)[..]], |r| r.get(0))?;
                n += usize::try_from(count).unwrap_or(0);
            }
            Ok(n)
        })
    }

    fn close(&self) {
        self.lock().take();
    }
}

/// Forgets what the root's clock `c` lets it forget (SPEC §5.8): nonces with
/// `ts + retention < clock`, and accounts closed (`expires <= clock`) that hold no
/// reservation.
fn forget(tx: &Connection, root: &AccountId, c: &RootClock) -> rusqlite::Result<()> {
    if c.clock > c.retention {
        tx.prepare_cached("DELETE FROM nonces WHERE root = ?1 AND ts < ?2")?
            .execute(params![&root[..], &be(c.clock - c.retention)[..]])?;
    }
    tx.prepare_cached("DELETE FROM accounts WHERE root = ?1 AND expires <= ?2 AND reserved = ?3")?.execute(params![
        &root[..],
        &be(c.clock)[..],
        &be(0)[..]
    ])?;
    Ok(())
}
