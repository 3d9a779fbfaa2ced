"""The SQLite store of ``Ledger.open("sqlite:...")`` (SPEC §5.8, layout §5.9).

One file shared by the processes of one host: WAL journal, ``synchronous=FULL``
(a step that returned survives a power cut), ``busy_timeout`` = the ledger's
``timeout``. Every step is one ``BEGIN IMMEDIATE`` transaction, which takes the
file's write lock at once: steps of all processes are serialized, and a step
happens whole or not at all. Each write transaction first forfeits every
reservation whose lease ended, in every root, and forgets settlements older than
``SETTLED_MEMORY``; a gate step also forgets its root's nonces and idle closed
accounts that the clock made unnecessary.

u64 values are stored as 8 big-endian bytes, so that SQLite's byte-wise BLOB
comparison is numeric comparison (``ts < ?``, ``expires <= ?`` in the pruning
statements). Lease deadlines and settlement times are milliseconds of the host's
clock (``INTEGER``).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Optional

from .._audit import Settlement
from .._codes import Code
from .._decision import Account
from ..errors import HopgateError, InputError, StoreError
from ._durable import SETTLED_MEMORY_MS, DurableHold, DurableStore, Lease, RootState, Row
from ._store import U64_MAX, Hold, PathEntry, Step, Store

__all__ = ["SqliteStore"]

FORMAT = 1
ACCOUNT_ID_LEN = 32

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS roots(root BLOB PRIMARY KEY, clock BLOB NOT NULL,"
    " retention BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS accounts(root BLOB, id BLOB, cap BLOB, spent BLOB,"
    " reserved BLOB, overrun BLOB, expires BLOB, PRIMARY KEY(root, id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS accounts_expiry ON accounts(root, expires)",
    "CREATE TABLE IF NOT EXISTS nonces(root BLOB, nonce BLOB, ts BLOB,"
    " PRIMARY KEY(root, nonce)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS nonces_age ON nonces(root, ts)",
    "CREATE TABLE IF NOT EXISTS reservations(id BLOB PRIMARY KEY, root BLOB NOT NULL,"
    " path BLOB NOT NULL, amount BLOB NOT NULL, deadline INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS reservations_deadline ON reservations(deadline)",
    "CREATE TABLE IF NOT EXISTS settled(id BLOB PRIMARY KEY, kind TEXT NOT NULL,"
    " at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS settled_at ON settled(at)",
)


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def from_u64(raw: bytes) -> int:
    if not isinstance(raw, bytes) or len(raw) != 8:
        raise StoreError(f"the store holds {raw!r} where a u64 (8 bytes) belongs")
    return int.from_bytes(raw, "big")


def _split_path(raw: bytes) -> tuple[bytes, ...]:
    if not raw or len(raw) % ACCOUNT_ID_LEN:
        raise StoreError(f"the store holds a reservation path of {len(raw)} bytes")
    return tuple(raw[i:i + ACCOUNT_ID_LEN] for i in range(0, len(raw), ACCOUNT_ID_LEN))


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(exc) or "busy" in str(exc)


def _now_ms() -> int:
    """The store's time for leases: the host's clock."""
    return time.time_ns() // 1_000_000


class SqliteStore(DurableStore):
    """Accounts, nonces and reservations in one SQLite file (SPEC §5.9)."""

    kind = "sqlite"

    def __init__(self, path: str, *, lease: float, timeout: float) -> None:
        # One connection, used by one thread at a time (under the lock): a transaction
        # at a time.
        super().__init__(lease)
        self._path = path
        self._lease_ms = math.ceil(lease * 1000)
        self._db: Optional[sqlite3.Connection] = None
        with self._failing_closed():
            db = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db = db
            try:
                db.execute(f"PRAGMA busy_timeout = {max(1, math.ceil(timeout * 1000))}")
                self._use_wal(db, timeout)
                db.execute("PRAGMA synchronous = FULL")
                with self._transaction() as tx:
                    for statement in SCHEMA:
                        tx.execute(statement)
                    row = tx.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                    if row is None:
                        tx.execute("INSERT INTO meta(key, value) VALUES ('format', ?)", (FORMAT,))
                    elif row[0] != FORMAT:
                        raise StoreError(
                            f"{path}: a ledger store of format {row[0]}; this version "
                            f"reads format {FORMAT}"
                        )
            except BaseException:
                self.close()
                raise

    def _use_wal(self, db: sqlite3.Connection, timeout: float) -> None:
        """Switch the file to write-ahead logging (a no-op once it is). Processes
        opening one new file at once contend for the lock this takes, and SQLite's
        busy handler does not wait for it: so wait here, up to ``timeout``."""
        give_up = time.monotonic() + timeout
        while True:
            try:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= give_up:
                    raise
                time.sleep(0.005)
        if str(mode).lower() != "wal":
            raise StoreError(f"SQLite store {self._path}: cannot use a WAL journal ({mode})")

    # -- transactions ---------------------------------------------------------

    @contextmanager
    def _failing_closed(self) -> Iterator[None]:
        """Any failure of SQLite or of the file is a ``StoreError``."""
        try:
            yield
        except HopgateError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"SQLite store {self._path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"SQLite store {self._path}: the ledger is closed")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the file's write lock at once."""
        with self._lock, self._failing_closed():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot, taking no write lock."""
        with self._lock, self._failing_closed():
            db = self._connection()
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    def _begin_step(self, db: sqlite3.Connection) -> int:
        """What every write transaction does first: forfeit every reservation whose
        lease ended (all roots), forget old settlements. Returns the store's time."""
        now_ms = _now_ms()
        expired: dict[bytes, list[Lease]] = {}
        for rid, root, path, amount in db.execute(
            "SELECT id, root, path, amount FROM reservations WHERE deadline <= ?", (now_ms,)
        ):
            expired.setdefault(root, []).append(Lease(rid, from_u64(amount), _split_path(path)))
        for root, leases in expired.items():
            state = self._load(db, root, {i for lease in leases for i in lease.ids})
            state.forfeit(leases)
            self._save(db, state, now_ms)
        db.execute("DELETE FROM settled WHERE at <= ?", (now_ms - SETTLED_MEMORY_MS,))
        return now_ms

    def _load(
        self, db: sqlite3.Connection, root: bytes, ids: Iterable[bytes], nonces: Collection[bytes] = ()
    ) -> RootState:
        row = db.execute("SELECT clock, retention FROM roots WHERE root = ?", (root,)).fetchone()
        clock, retention = (0, 0) if row is None else (from_u64(row[0]), from_u64(row[1]))
        accounts = {}
        for account_id in ids:
            found = db.execute(
                "SELECT cap, spent, reserved, overrun, expires FROM accounts"
                " WHERE root = ? AND id = ?",
                (root, account_id),
            ).fetchone()
            if found is not None:
                accounts[account_id] = Row(*(from_u64(value) for value in found))
        held = {
            nonce
            for nonce in nonces
            if db.execute(
                "SELECT 1 FROM nonces WHERE root = ? AND nonce = ?", (root, nonce)
            ).fetchone()
        }
        return RootState(root, clock, retention, accounts, held)

    def _save(self, db: sqlite3.Connection, state: RootState, now_ms: int) -> None:
        root = state.root
        if state.ticked:
            db.execute(
                "INSERT OR REPLACE INTO roots(root, clock, retention) VALUES (?, ?, ?)",
                (root, u64(state.clock), u64(state.retention)),
            )
        db.executemany(
            "INSERT OR REPLACE INTO accounts(root, id, cap, spent, reserved, overrun, expires)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (root, account_id, u64(row.cap), u64(row.spent), u64(row.reserved),
                 u64(row.overrun), u64(row.expires))
                for account_id in sorted(state.changed)
                for row in (state.accounts[account_id],)
            ],
        )
        db.executemany(
            "INSERT INTO nonces(root, nonce, ts) VALUES (?, ?, ?)",
            [(root, nonce, u64(timestamp)) for nonce, timestamp in state.recorded],
        )
        db.executemany(
            "INSERT INTO reservations(id, root, path, amount, deadline) VALUES (?, ?, ?, ?, ?)",
            [
                (lease.rid, root, b"".join(lease.ids), u64(lease.amount), deadline)
                for lease, deadline in state.opened
            ],
        )
        for rid, letter in state.closed.items():
            db.execute("DELETE FROM reservations WHERE id = ?", (rid,))
            db.execute(
                "INSERT OR REPLACE INTO settled(id, kind, at) VALUES (?, ?, ?)", (rid, letter, now_ms)
            )

    def _prune(self, db: sqlite3.Connection, state: RootState) -> None:
        """Forget what the root's clock made unnecessary: nonces with
        ``ts + retention < clock``, and closed accounts holding no reservation."""
        if state.clock > state.retention:
            db.execute(
                "DELETE FROM nonces WHERE root = ? AND ts < ?",
                (state.root, u64(state.clock - state.retention)),
            )
        db.execute(
            "DELETE FROM accounts WHERE root = ? AND expires <= ? AND reserved = ?",
            (state.root, u64(state.clock), u64(0)),
        )

    # -- Store ----------------------------------------------------------------

    def admit(self, steps: Sequence[Step], now: int) -> list[tuple[Code, Optional[Hold]]]:
        if not steps:
            return []
        retention = self._retention
        by_root: dict[bytes, list[int]] = {}
        for i, step in enumerate(steps):
            by_root.setdefault(step.root, []).append(i)
        results: list[tuple[Code, Optional[Hold]]] = [(Code.OK, None)] * len(steps)
        with self._transaction() as db:
            now_ms = self._begin_step(db)
            for root, indices in by_root.items():
                ids = {account_id for i in indices for account_id, _ in steps[i].path}
                state = self._load(db, root, ids, {steps[i].nonce for i in indices})
                state.tick(now, retention)
                for i in indices:
                    step = steps[i]
                    code, rid = state.admit(step, now_ms + self._lease_ms)
                    hold = None
                    if rid is not None:
                        hold = DurableHold(root, rid, tuple(a for a, _ in step.path), step.cost)
                    results[i] = (code, hold)
                self._save(db, state, now_ms)
                self._prune(db, state)
        return results

    def seen(self, step: Step, now: int) -> bool:
        with self._reading() as db:
            state = self._load(db, step.root, (), (step.nonce,))
        state.tick(now, self._retention)
        return state.seen(step.nonce, step.timestamp)

    def reserve(self, path: Sequence[PathEntry], amount: int) -> Hold:
        root = path[0][0]
        with self._transaction() as db:
            now_ms = self._begin_step(db)
            state = self._load(db, root, [account_id for account_id, _ in path])
            rid = state.reserve(path, amount, [U64_MAX] * len(path), now_ms + self._lease_ms)
            self._save(db, state, now_ms)
        return DurableHold(root, rid, tuple(account_id for account_id, _ in path), amount)

    def state(self, path: Sequence[PathEntry]) -> list[Account]:
        with self._reading() as db:
            state = self._load(db, path[0][0], [account_id for account_id, _ in path])
        return [
            (state.accounts[account_id].account() if account_id in state.accounts
             else Account(cap, 0, 0, 0))
            for account_id, cap in path
        ]

    def settle(self, hold: Hold, kind: Settlement, charged: int) -> None:
        assert isinstance(hold, DurableHold)
        refused: Optional[HopgateError] = None
        with self._transaction() as db:
            now_ms = self._begin_step(db)
            lease = None
            found = db.execute(
                "SELECT path, amount FROM reservations WHERE id = ?", (hold.rid,)
            ).fetchone()
            if found is not None:
                lease = Lease(hold.rid, from_u64(found[1]), _split_path(found[0]))
            done = db.execute("SELECT kind FROM settled WHERE id = ?", (hold.rid,)).fetchone()
            state = self._load(db, hold.root, hold.ids if lease is None else lease.ids)
            try:
                state.settle(hold.rid, lease, None if done is None else str(done[0]), kind, charged)
            except HopgateError as exc:
                refused = exc  # nothing to write; the forfeits of _begin_step stand
            else:
                self._save(db, state, now_ms)
        if refused is not None:
            raise refused

    def abandon(self, hold: Hold) -> None:
        # The collector must not wait on the file: the lease forfeits it.
        pass

    def account(self, account_id: bytes, root: Optional[bytes]) -> Optional[Account]:
        with self._reading() as db:
            if root is None:
                rows = db.execute(
                    "SELECT cap, spent, reserved, overrun FROM accounts WHERE id = ? LIMIT 2",
                    (account_id,),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT cap, spent, reserved, overrun FROM accounts WHERE root = ? AND id = ?",
                    (root, account_id),
                ).fetchall()
        if len(rows) > 1:
            raise InputError(
                "root: this account id is held under several roots; name the root"
            )
        return Account(*(from_u64(value) for value in rows[0])) if rows else None

    def accounts(self) -> dict[bytes, Account]:
        found: dict[bytes, Account] = {}
        with self._reading() as db:
            for account_id, *counters in db.execute(
                "SELECT id, cap, spent, reserved, overrun FROM accounts ORDER BY root, id"
            ):
                # An id under several roots (only budgets can name one so) is
                # given under the least root.
                found.setdefault(account_id, Account(*(from_u64(value) for value in counters)))
        return found

    def nonces(self, now: int) -> int:
        held = 0
        retention = self._retention
        with self._reading() as db:
            for ts, clock, root_retention in db.execute(
                "SELECT n.ts, r.clock, r.retention FROM nonces AS n JOIN roots AS r USING (root)"
            ):
                state = RootState(b"", from_u64(clock), from_u64(root_retention), {}, set())
                state.tick(now, retention)
                if not state.seen(b"", from_u64(ts)):
                    held += 1
        return held

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()
