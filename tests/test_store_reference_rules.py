"""SPEC §5.8–5.9 for the reference's durable stores, rule by rule: `hopgate.reference`'s
`Ledger.open` on an SQLite file, a Redis server and a Redis Cluster (real servers, from
conftest's fixtures).

Each rule is checked through the public API (two ledgers opened on one URL stand for two
processes), and the stored bytes are read back with sqlite3 and a raw RESP client, so that
the layout is the one a native process sharing the store expects.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

import hopgate.reference as ref
from hopgate.reference import Chain, Gate, Ledger, SigningKey

from _servers import RedisCluster, RedisServer, Resp, free_port

ISSUER = SigningKey.from_seed(b"\x71" * 32)
HOLDER = SigningKey.from_seed(b"\x72" * 32)
CHILD = SigningKey.from_seed(b"\x73" * 32)
TRUSTED = [ISSUER.public_key]
ABILITY, RESOURCE = "call", "api/x"
U64_MAX = 2**64 - 1
SETTLED_MEMORY_MS = 24 * 60 * 60 * 1000

ALL_STORES = ["sqlite", "redis", "redis-cluster"]
stores = pytest.mark.parametrize("store_url", ALL_STORES, indirect=True)
sqlite_and_redis = pytest.mark.parametrize("store_url", ["sqlite", "redis"], indirect=True)


def now() -> int:
    return int(time.time())


def grant(budget: int = 100, not_after: Optional[int] = None, tag: int = 1) -> Chain:
    """ISSUER grants HOLDER `budget`, valid from an hour ago until `not_after` (default:
    in a day); `tag` makes a distinct grant, so a distinct root."""
    t = now()
    return Chain.grant(ISSUER, HOLDER.public_key, [("api/*", ABILITY)], budget, "usd", t - 3600,
                       t + 86400 if not_after is None else not_after, 3, nonce=bytes([tag]) * 16)


def invoke(chain: Chain, cost: int, timestamp: int, nonce: Optional[bytes] = None, key: SigningKey = HOLDER) -> bytes:
    return chain.invoke(key, ABILITY, RESOURCE, cost, timestamp=timestamp, nonce=nonce)


@pytest.fixture
def opened(store_url: str) -> Iterator[list[Ledger]]:
    """Ledgers opened on the test's store, closed at the end."""
    ledgers: list[Ledger] = []
    yield ledgers
    for ledger in ledgers:
        ledger.close()


def open_ledger(opened: list[Ledger], url: str, **options: Any) -> Ledger:
    ledger = Ledger.open(url, **options)
    opened.append(ledger)
    return ledger


# -- replay, the clock, closed links -----------------------------------------------------


@stores
def test_a_nonce_is_allowed_once_across_two_ledgers(store_url: str, opened: list[Ledger]) -> None:
    one = Gate(TRUSTED, ledger=open_ledger(opened, store_url))
    two = Gate(TRUSTED, ledger=open_ledger(opened, store_url))
    chain, t = grant(), now()
    inv = invoke(chain, 5, t)
    assert two.precheck(bytes(chain), inv, now=t) == ref.Code.OK
    decision = one.check(bytes(chain), inv, now=t)
    assert decision.code == ref.Code.OK
    assert two.precheck(bytes(chain), inv, now=t) == ref.Code.REPLAY
    assert two.check(bytes(chain), inv, now=t).code == ref.Code.REPLAY
    codes, reservations = two.check_batch([bytes(chain)], [inv], now=t)
    assert list(codes) == [ref.Code.REPLAY] and reservations == [None]
    # The same nonce under another root is another nonce.
    other = grant(tag=2)
    same_nonce = invoke(other, 5, t, nonce=ref.parse_invocation(inv).nonce)
    assert two.check(bytes(other), same_nonce, now=t).code == ref.Code.OK
    # Only the allowed request consumed anything.
    root = chain.revocation_ids[0]
    assert two.ledger.account(root, root=root) == ref.Account(100, 0, 5, 0)
    assert one.ledger.nonces(t) == 2


@stores
def test_a_batch_is_decided_in_input_order(store_url: str, opened: list[Ledger]) -> None:
    gate = Gate(TRUSTED, ledger=open_ledger(opened, store_url))
    chain, other, t = grant(budget=10), grant(budget=10, tag=2), now()
    same = invoke(chain, 1, t)
    requests = [(chain, same), (other, invoke(other, 6, t)), (chain, same), (chain, invoke(chain, 10, t)),
                (other, invoke(other, 5, t)), (chain, invoke(chain, 4, t))]
    codes, reservations = gate.check_batch([bytes(c) for c, _ in requests], [i for _, i in requests], now=t)
    assert list(codes) == [0, 0, 16, 17, 17, 0]
    assert [r is not None for r in reservations] == [True, True, False, False, False, True]
    assert gate.ledger.account(chain.revocation_ids[0], root=chain.revocation_ids[0]) == ref.Account(10, 0, 5, 0)
    assert gate.ledger.account(other.revocation_ids[0], root=other.revocation_ids[0]) == ref.Account(10, 0, 6, 0)


@stores
def test_the_roots_clock_refuses_what_it_may_have_forgotten(store_url: str, opened: list[Ledger]) -> None:
    """A nonce counts as seen when `timestamp + retention < clock`: a request dated behind
    its root's clock by more than the retention is refused, even never seen before."""
    behind = Gate(TRUSTED, skew=30, replay_window=60, ledger=open_ledger(opened, store_url))
    ahead = Gate(TRUSTED, skew=30, replay_window=60, ledger=open_ledger(opened, store_url))
    chain, t = grant(), now()
    assert ahead.check(bytes(chain), invoke(chain, 1, t), now=t).code == ref.Code.OK  # clock = t
    old = invoke(chain, 1, t - 61)  # fresh at its own now, but t - 61 + 60 < clock
    assert behind.precheck(bytes(chain), old, now=t - 61) == ref.Code.REPLAY
    assert behind.check(bytes(chain), old, now=t - 61).code == ref.Code.REPLAY
    recent = invoke(chain, 1, t - 60)  # t - 60 + 60 = clock: may still be held, so judged
    assert behind.check(bytes(chain), recent, now=t - 60).code == ref.Code.OK
    # Another root has a clock of its own.
    fresh_root = grant(tag=3)
    assert behind.check(bytes(fresh_root), invoke(fresh_root, 1, t - 61), now=t - 61).code == ref.Code.OK


@stores
def test_a_link_closed_by_the_clock_reserves_nothing(store_url: str, opened: list[Ledger]) -> None:
    """A reservation through a link whose not_after <= the root's clock is 17, even at a
    `now` at which the link is still valid."""
    gate = Gate(TRUSTED, ledger=open_ledger(opened, store_url))
    late = Gate(TRUSTED, ledger=open_ledger(opened, store_url))
    t = now()
    root_chain = grant()
    short = root_chain.delegate(HOLDER, CHILD.public_key, budget=50, not_after=t + 10)
    assert late.check(bytes(root_chain), invoke(root_chain, 1, t + 20), now=t + 20).code == ref.Code.OK
    # At t + 5 the short link is valid (not EXPIRED), but the root's clock is t + 20.
    inv = invoke(short, 1, t + 5, key=CHILD)
    assert gate.check(bytes(short), inv, now=t + 5).code == ref.Code.BUDGET_EXHAUSTED
    assert gate.ledger.account(short.revocation_ids[1], root=short.revocation_ids[0]) is None
    # A 17 consumes no nonce: the same invocation through a valid path would pass.
    assert gate.precheck(bytes(short), inv, now=t + 5) == ref.Code.OK


# -- leases, idempotent settlement -------------------------------------------------------


@stores
def test_an_unsettled_reservation_is_forfeited_at_its_lease(store_url: str, opened: list[Ledger]) -> None:
    gate = Gate(TRUSTED, ledger=open_ledger(opened, store_url, lease=0.3))
    other = open_ledger(opened, store_url, lease=5.0)
    assert gate.ledger.lease == 0.3 and other.lease == 5.0
    chain, t = grant(), now()
    root = chain.revocation_ids[0]
    held = gate.check(bytes(chain), invoke(chain, 10, t), now=t).reservation
    assert held is not None
    time.sleep(0.5)
    # The next step on the root, by any process, forfeits it: spent += 10, reserved -= 10.
    kept = Gate(TRUSTED, ledger=other).check(bytes(chain), invoke(chain, 3, t), now=t).reservation
    assert kept is not None
    assert other.account(root, root=root) == ref.Account(100, 10, 3, 0)
    with pytest.raises(ref.LeaseExpiredError):
        held.commit(1)
    assert held.settled
    assert other.account(root, root=root) == ref.Account(100, 10, 3, 0)  # nothing changed
    kept.commit(2)
    assert other.account(root, root=root) == ref.Account(100, 12, 0, 0)


@sqlite_and_redis
def test_a_budget_reservation_has_a_lease_too(store_url: str, opened: list[Ledger]) -> None:
    ledger = open_ledger(opened, store_url, lease=0.2)
    account_id = b"\x42" * 32
    budget = ledger.budget([(account_id, 50)])
    held = budget.reserve(20)
    assert budget.remaining() == 30
    time.sleep(0.35)
    budget.reserve(5).release()  # a step on the root forfeits the expired one
    assert ledger.account(account_id, root=account_id) == ref.Account(50, 20, 0, 0)
    with pytest.raises(ref.LeaseExpiredError):
        held.release()
    assert budget.remaining() == 30


@stores
def test_settling_is_idempotent_by_reservation_id(store_url: str, opened: list[Ledger]) -> None:
    """A retried settlement (after a lost reply) is the same store step again: nothing
    changes. The handle refuses a second use, so the retry is made on the store itself."""
    gate = Gate(TRUSTED, ledger=open_ledger(opened, store_url))
    chain, t = grant(), now()
    root = chain.revocation_ids[0]
    reservation = gate.check(bytes(chain), invoke(chain, 10, t), now=t).reservation
    assert isinstance(reservation, ref.Reservation)
    reservation.commit(7)
    assert gate.ledger.account(root, root=root) == ref.Account(100, 7, 0, 0)
    store, hold = gate.ledger._store, reservation._hold
    store.settle(hold, ref.Settlement.COMMIT, 7)
    store.settle(hold, ref.Settlement.COMMIT, 9)  # the same kind: a no-op, whatever the amount
    assert gate.ledger.account(root, root=root) == ref.Account(100, 7, 0, 0)
    with pytest.raises(ref.AffineError):
        store.settle(hold, ref.Settlement.RELEASE, 0)
    store.settle(hold, ref.Settlement.FORFEIT, 10)  # dropping a settled handle changes nothing
    assert gate.ledger.account(root, root=root) == ref.Account(100, 7, 0, 0)
    with pytest.raises(ref.AffineError):
        reservation.commit()


@stores
def test_overrun_and_release_in_a_durable_store(store_url: str, opened: list[Ledger]) -> None:
    gate = Gate(TRUSTED, ledger=open_ledger(opened, store_url))
    chain, t = grant(), now()
    root, link = chain.revocation_ids[0], chain.delegate(HOLDER, CHILD.public_key, budget=40)
    first = gate.check(bytes(link), invoke(link, 10, t, key=CHILD), now=t).reservation
    second = gate.check(bytes(link), invoke(link, 10, t, key=CHILD), now=t).reservation
    assert first is not None and second is not None
    with pytest.raises(ref.OverrunError):
        first.commit(15)
    second.release()
    child = link.revocation_ids[1]
    assert gate.ledger.account(root, root=root) == ref.Account(100, 15, 0, 5)
    assert gate.ledger.account(child, root=root) == ref.Account(40, 15, 0, 5)
    with pytest.raises(ref.AffineError):
        second.release()


@stores
def test_leaving_a_with_block_forfeits_at_once(store_url: str, opened: list[Ledger]) -> None:
    gate = Gate(TRUSTED, ledger=open_ledger(opened, store_url))
    chain, t = grant(), now()
    root = chain.revocation_ids[0]
    reservation = gate.check(bytes(chain), invoke(chain, 8, t), now=t).reservation
    assert reservation is not None
    with reservation:
        pass
    assert reservation.settled
    assert gate.ledger.account(root, root=root) == ref.Account(100, 8, 0, 0)


# -- failing closed ----------------------------------------------------------------------


def test_a_stopped_redis_server_fails_closed(redis_db: RedisServer) -> None:
    gate = Gate(TRUSTED, ledger=Ledger.open(redis_db.url, lease=1.0, timeout=0.5))
    chain, t = grant(), now()
    root = chain.revocation_ids[0]
    held = gate.check(bytes(chain), invoke(chain, 10, t), now=t).reservation
    assert held is not None
    redis_db.kill9()
    try:
        inv = invoke(chain, 1, t)
        with pytest.raises(ref.StoreError) as info:
            gate.check(bytes(chain), inv, now=t)
        assert isinstance(info.value, OSError)
        with pytest.raises(ref.StoreError):
            gate.check_batch([bytes(chain), b"not a chain"], [inv, b""], now=t)
        with pytest.raises(ref.StoreError):
            gate.precheck(bytes(chain), inv, now=t)
        with pytest.raises(ref.StoreError):
            held.commit(4)
        assert held.settled  # spent: the reservation is left to its lease
        with pytest.raises(ref.StoreError):
            Ledger.open(redis_db.url, timeout=0.5)
        # A refusal decided before the ledger step needs no store.
        assert gate.check(b"not a chain", inv, now=t).code == ref.Code.MALFORMED
    finally:
        redis_db.start()
    time.sleep(1.2)  # past the lease: the next step on the root forfeits it, 10 spent
    decision = gate.check(bytes(chain), invoke(chain, 1, t), now=t)
    assert decision.code == ref.Code.OK and decision.reservation is not None
    decision.reservation.release()
    assert gate.ledger.account(root, root=root) == ref.Account(100, 10, 0, 0)
    gate.ledger.close()
    with pytest.raises(ref.StoreError):
        gate.check(bytes(chain), invoke(chain, 1, t), now=t)


def test_a_step_whose_reply_was_lost_is_released_when_the_store_answers(
    redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXEC applied, its reply lost: StoreError (nothing allowed), and the reservation it
    made is released by id at the next step that succeeds; its nonce stays consumed."""
    import redis

    gate = Gate(TRUSTED, ledger=Ledger.open(redis_db.url))
    chain, t = grant(), now()
    root = chain.revocation_ids[0]
    execute = redis.client.Pipeline.execute

    def lose_the_reply(self: Any, *args: Any, **kwargs: Any) -> Any:
        execute(self, *args, **kwargs)
        raise redis.ConnectionError("the reply was lost")

    lost = invoke(chain, 7, t)
    monkeypatch.setattr(redis.client.Pipeline, "execute", lose_the_reply)
    with pytest.raises(ref.StoreError):
        gate.check(bytes(chain), lost, now=t)
    monkeypatch.undo()
    assert gate.ledger.account(root, root=root) == ref.Account(100, 0, 7, 0)  # it did happen
    assert gate.check(bytes(chain), lost, now=t).code == ref.Code.REPLAY
    assert gate.ledger.account(root, root=root) == ref.Account(100, 0, 0, 0)  # released
    gate.ledger.close()


def test_an_unreachable_redis_and_a_locked_sqlite_file_fail_closed(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ref.StoreError):
        Ledger.open(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    assert time.monotonic() - started < 5
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    gate = Gate(TRUSTED, ledger=Ledger.open(url, timeout=0.2))
    blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    chain, t = grant(), now()
    try:
        with pytest.raises(ref.StoreError):
            gate.check(bytes(chain), invoke(chain, 1, t), now=t)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert gate.check(bytes(chain), invoke(chain, 1, t), now=t).code == ref.Code.OK
    gate.ledger.close()


# -- the stored bytes (SPEC §5.9) --------------------------------------------------------


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


SQLITE_SCHEMA = {
    "meta": [("key", "TEXT", 0, 1), ("value", "INTEGER", 1, 0)],
    "roots": [("root", "BLOB", 0, 1), ("clock", "BLOB", 1, 0), ("retention", "BLOB", 1, 0)],
    # The primary key of a WITHOUT ROWID table is NOT NULL by SQLite's own rule.
    "accounts": [("root", "BLOB", 1, 1), ("id", "BLOB", 1, 2), ("cap", "BLOB", 0, 0), ("spent", "BLOB", 0, 0),
                 ("reserved", "BLOB", 0, 0), ("overrun", "BLOB", 0, 0), ("expires", "BLOB", 0, 0)],
    "nonces": [("root", "BLOB", 1, 1), ("nonce", "BLOB", 1, 2), ("ts", "BLOB", 0, 0)],
    "reservations": [("id", "BLOB", 0, 1), ("root", "BLOB", 1, 0), ("path", "BLOB", 1, 0),
                     ("amount", "BLOB", 1, 0), ("deadline", "INTEGER", 1, 0)],
    "settled": [("id", "BLOB", 0, 1), ("kind", "TEXT", 1, 0), ("at", "INTEGER", 1, 0)],
}
SQLITE_INDEXES = {"accounts_expiry": ("accounts", ["root", "expires"]), "nonces_age": ("nonces", ["root", "ts"]),
                  "reservations_deadline": ("reservations", ["deadline"]), "settled_at": ("settled", ["at"])}


def test_the_sqlite_layout(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(f"sqlite://{path}", lease=7.5)
    gate = Gate(TRUSTED, replay_window=120, ledger=ledger)
    chain, t = grant(budget=1000), now()
    link = chain.delegate(HOLDER, CHILD.public_key, budget=300, not_after=t + 600)
    inv = invoke(link, 9, t - 2, key=CHILD)
    before = time.time_ns() // 1_000_000
    reservation = gate.check(bytes(link), inv, now=t).reservation
    after = time.time_ns() // 1_000_000
    assert reservation is not None
    budget_id = b"\x5a" * 32
    ledger.budget([(budget_id, 70)]).reserve(70).commit()

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == set(SQLITE_SCHEMA)
        for table, columns in SQLITE_SCHEMA.items():
            got = [(c[1], c[2], c[3], c[5]) for c in db.execute(f"PRAGMA table_info({table})")]
            assert got == columns, table
        without_rowid = {name for name, sql in db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
                         if "WITHOUT ROWID" in sql}
        assert without_rowid == {"accounts", "nonces"}
        for index, (table, indexed) in SQLITE_INDEXES.items():
            assert db.execute("SELECT tbl_name FROM sqlite_master WHERE name = ?", (index,)).fetchone() == (table,)
            assert [c[2] for c in db.execute(f"PRAGMA index_info({index})")] == indexed
        assert db.execute("SELECT key, value FROM meta").fetchall() == [("format", 1)]

        root, child = link.revocation_ids
        assert db.execute("SELECT root, clock, retention FROM roots").fetchall() == [(root, u64(t), u64(120))]
        rows = db.execute("SELECT root, id, cap, spent, reserved, overrun, expires FROM accounts").fetchall()
        assert sorted(rows) == sorted([
            (root, root, u64(1000), u64(0), u64(9), u64(0), u64(chain.links[0].not_after)),
            (root, child, u64(300), u64(0), u64(9), u64(0), u64(t + 600)),
            (budget_id, budget_id, u64(70), u64(70), u64(0), u64(0), u64(U64_MAX)),
        ])
        nonce = ref.parse_invocation(inv).nonce
        assert db.execute("SELECT root, nonce, ts FROM nonces").fetchall() == [(root, nonce, u64(t - 2))]
        (rid, res_root, res_path, amount, deadline), = db.execute("SELECT * FROM reservations").fetchall()
        assert len(rid) == 16 and res_root == root and res_path == root + child and amount == u64(9)
        assert before + 7500 <= deadline <= after + 7500
        (budget_rid, kind, at), = db.execute("SELECT id, kind, at FROM settled").fetchall()
        assert len(budget_rid) == 16 and kind == "C" and before <= at <= time.time_ns() // 1_000_000
        reservation.release()
        assert db.execute("SELECT kind FROM settled WHERE id = ?", (rid,)).fetchone() == ("R",)
        assert db.execute("SELECT count(*) FROM reservations").fetchone() == (0,)
    finally:
        db.close()
        ledger.close()


def test_sqlite_forgets_by_the_clock(tmp_path: Path) -> None:
    """Nonces with ts + retention < clock, and closed accounts holding nothing, are
    forgotten at a gate step on their root; open reservations keep their accounts."""
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(f"sqlite://{path}")
    gate = Gate(TRUSTED, skew=10, replay_window=20, ledger=ledger)
    t = now()
    chain = grant()
    short = chain.delegate(HOLDER, CHILD.public_key, budget=50, not_after=t + 5)
    gate.check(bytes(short), invoke(short, 1, t, key=CHILD), now=t).reservation.commit()  # type: ignore[union-attr]
    held = gate.check(bytes(chain), invoke(chain, 1, t + 1), now=t + 1).reservation
    assert held is not None
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM nonces").fetchone() == (2,)
        gate.check(bytes(chain), invoke(chain, 1, t + 22), now=t + 22).reservation.release()  # type: ignore[union-attr]
        # t + 20 < t + 22: the first nonce went; t + 1 + 20 = t + 21 < t + 22: the second too.
        assert [ts for (ts,) in db.execute("SELECT ts FROM nonces")] == [u64(t + 22)]
        ids = {i for (i,) in db.execute("SELECT id FROM accounts")}
        assert ids == {chain.revocation_ids[0]}  # the closed child account, idle, is gone
        assert ledger.account(short.revocation_ids[1]) is None
        assert ledger.account(chain.revocation_ids[0]) == ref.Account(100, 1, 1, 0)
    finally:
        db.close()
        held.release()
        ledger.close()


def hgetall(r: Resp, key: str) -> dict[str, str]:
    reply = r("HGETALL", key)
    assert isinstance(reply, list)
    items = [v.decode() for v in reply if isinstance(v, bytes)]
    return dict(zip(items[::2], items[1::2]))


def pttl(r: Resp, key: str) -> int:
    reply = r("PTTL", key)
    assert isinstance(reply, int)
    return reply


def redis_time_ms(r: Resp) -> int:
    reply = r("TIME")
    assert isinstance(reply, list) and all(isinstance(v, bytes) for v in reply)
    seconds, micros = (int(v) for v in reply if isinstance(v, bytes))
    return seconds * 1000 + micros // 1000


def check_redis_layout(url: str, node_of: Callable[[str], Resp]) -> None:
    """The layout of SPEC §5.9; ``node_of(key)`` is a client of the node holding ``key``."""
    ledger = Ledger.open(url, lease=7.5)
    gate = Gate(TRUSTED, replay_window=120, ledger=ledger)
    chain, t = grant(budget=1000), now()
    client = node_of(f"hg1:{{{chain.revocation_ids[0].hex()}}}:meta")
    link = chain.delegate(HOLDER, CHILD.public_key, budget=300, not_after=t + 600)
    inv = invoke(link, 9, t - 2, key=CHILD)
    before = redis_time_ms(client)
    reservation = gate.check(bytes(link), inv, now=t).reservation
    after = redis_time_ms(client)
    assert reservation is not None
    root, child = link.revocation_ids
    tag = f"hg1:{{{root.hex()}}}:"
    assert node_of(tag + "meta") is client
    hexes = f"{1000:016x}{0:016x}{9:016x}{0:016x}{chain.links[0].not_after:016x}"
    assert hgetall(client, tag + "meta") == {
        "clock": f"{t:016x}", "retention": f"{120:016x}", "until": f"{chain.links[0].not_after:016x}",
    }
    assert hgetall(client, tag + "acct") == {
        root.hex(): hexes,
        child.hex(): f"{300:016x}{0:016x}{9:016x}{0:016x}{t + 600:016x}",
    }
    nonce_key = tag + "n:" + ref.parse_invocation(inv).nonce.hex()
    assert client("GET", nonce_key) == f"{t - 2:016x}".encode()
    # Held for (timestamp + retention + 1 - clock) seconds.
    assert (t - 2 + 120 + 1 - t) * 1000 - 5000 < pttl(client, nonce_key) <= (t - 2 + 120 + 1 - t) * 1000
    (rid_hex, entry), = hgetall(client, tag + "res").items()
    assert len(rid_hex) == 32 and entry == f"{9:016x}" + root.hex() + child.hex()
    reply = client("ZRANGE", tag + "lease", 0, -1, "WITHSCORES")
    assert isinstance(reply, list) and reply[0] == rid_hex.encode()
    assert isinstance(reply[1], bytes) and before + 7500 <= int(float(reply[1])) <= after + 7500
    # The root's keys expire together, `retention` seconds after the clock passes the
    # latest not_after of its accounts.
    lifetime = (chain.links[0].not_after + 120 - t) * 1000
    for suffix in ("meta", "acct", "res", "lease"):
        assert lifetime - 5000 < pttl(client, tag + suffix) <= lifetime, suffix
    reservation.commit(4)
    assert client("GET", tag + "done:" + rid_hex) == b"C"
    assert SETTLED_MEMORY_MS - 5000 < pttl(client, tag + "done:" + rid_hex) <= SETTLED_MEMORY_MS
    assert client("EXISTS", tag + "res") == 0 and client("EXISTS", tag + "lease") == 0
    assert hgetall(client, tag + "acct")[root.hex()] == f"{1000:016x}{4:016x}{0:016x}{0:016x}" + \
        f"{chain.links[0].not_after:016x}"
    # A budget's accounts never expire, nor do the keys of its root.
    budget_id = b"\x5b" * 32
    ledger.budget([(budget_id, 70)]).reserve(70).commit()
    budget_tag = f"hg1:{{{budget_id.hex()}}}:"
    client = node_of(budget_tag + "acct")
    assert hgetall(client, budget_tag + "acct") == {budget_id.hex(): f"{70:016x}{70:016x}{0:016x}{0:016x}{U64_MAX:016x}"}
    assert pttl(client, budget_tag + "acct") == -1
    # Budgets have no clock: meta holds only `until`, never.
    assert hgetall(client, budget_tag + "meta") == {"until": f"{U64_MAX:016x}"}
    ledger.close()


def test_the_redis_layout(redis_db: RedisServer) -> None:
    with redis_db.client() as client:
        check_redis_layout(redis_db.url, lambda key: client)


def test_the_redis_cluster_layout_keeps_a_root_in_one_slot(redis_cluster: RedisCluster) -> None:
    clients: dict[int, Resp] = {}

    def node_of(key: str) -> Resp:
        port = redis_cluster.owner(redis_cluster.keyslot(key))
        if port not in clients:
            clients[port] = Resp(port)
        return clients[port]

    try:
        check_redis_layout(redis_cluster.url, node_of)
    finally:
        for client in clients.values():
            client.close()
    keys = redis_cluster.keys_by_node("hg1:*")
    for tag in {key.split(b"}")[0] for node_keys in keys.values() for key in node_keys}:
        holders = [port for port, node_keys in keys.items() if any(k.startswith(tag + b"}") for k in node_keys)]
        assert len(holders) == 1, tag  # every key of a root on one node


# -- the API around the stores -----------------------------------------------------------


def test_store_names_leases_and_bounds(sqlite_url: str, redis_db: RedisServer, redis_cluster: RedisCluster) -> None:
    memory = Ledger()
    assert (memory.store, memory.lease, memory.max_accounts) == ("memory", None, 1_000_000)
    for url, name in [(sqlite_url, "sqlite"), (redis_db.url, "redis"), (redis_cluster.url, "redis-cluster")]:
        ledger = Ledger.open(url)
        try:
            assert (ledger.store, ledger.lease, ledger.replay_window) == (name, 30.0, 0)
            assert (ledger.max_accounts, ledger.max_nonces) == (None, None)
            assert repr(ledger) == f"Ledger.open({url!r})"
            Gate(TRUSTED, replay_window=90, ledger=ledger)
            assert ledger.replay_window == 90
        finally:
            ledger.close()


def test_account_needs_a_root_on_redis_only(sqlite_url: str, redis_db: RedisServer) -> None:
    for url in (sqlite_url, redis_db.url):
        ledger = Ledger.open(url)
        gate = Gate(TRUSTED, ledger=ledger)
        chain, t = grant(), now()
        root = chain.revocation_ids[0]
        gate.check(bytes(chain), invoke(chain, 3, t), now=t).reservation.commit()  # type: ignore[union-attr]
        assert ledger.account(root, root=root) == ref.Account(100, 3, 0, 0)
        assert ledger.account(root, root=b"\x01" * 32) is None
        assert ledger.accounts() == {root: ref.Account(100, 3, 0, 0)}
        assert ledger.nonces(t) == 1
        assert ledger.nonces(t + 301) == 0  # prunable at a later now
        if ledger.store == "redis":
            with pytest.raises(ref.InputError, match="root"):
                ledger.account(root)
        else:
            assert ledger.account(root) == ref.Account(100, 3, 0, 0)
        ledger.close()


@pytest.mark.parametrize("url, names", [
    ("sqlite:", "no file"),
    ("sqlite://", "no file"),
    ("sqlite://host/x.db", "host"),
    ("sqlite:/abs/x.db", "sqlite:///abs"),
    ("sqlite::memory:", "not a file"),
    ("sqlite:///tmp/", "directory"),
    ("sqlite:x.db?mode=ro", "query"),
    ("redis://127.0.0.1/0", "port"),
    ("redis://127.0.0.1:6379", "database"),
    ("redis://127.0.0.1:6379/", "database"),
    ("redis://127.0.0.1:6379/x", "database"),
    ("redis://:6379/0", "host"),
    ("redis://user:pw@127.0.0.1:6379/0", "credentials"),
    ("redis://127.0.0.1:6379/0?ssl=1", "query"),
    ("redis://127.0.0.1:99999/0", "port"),
    ("redis+cluster://127.0.0.1:6379/0", "database"),
    ("redis+cluster://127.0.0.1", "port"),
    ("rediss://127.0.0.1:6379/0", "unknown store"),
    ("postgres://x", "unknown store"),
    ("ledger.db", "unknown store"),
])
def test_urls_are_read_strictly(url: str, names: str) -> None:
    with pytest.raises(ref.InputError, match=names):
        Ledger.open(url)


@pytest.mark.parametrize("name, value", [
    ("lease", 0), ("lease", -1.0), ("lease", float("inf")), ("lease", float("nan")), ("lease", "30"),
    ("lease", True), ("timeout", 0.0), ("timeout", float("inf")), ("timeout", None),
])
def test_lease_and_timeout_are_positive_finite_seconds(tmp_path: Path, name: str, value: object) -> None:
    options: dict[str, Any] = {name: value}
    with pytest.raises(ref.InputError, match=name):
        Ledger.open(f"sqlite://{tmp_path / 'x.db'}", **options)
    assert not (tmp_path / "x.db").exists()


def test_a_relative_sqlite_path_and_another_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Ledger.open("sqlite:sub.db").close()
    assert (tmp_path / "sub.db").exists()
    db = sqlite3.connect(tmp_path / "sub.db")
    db.execute("UPDATE meta SET value = 2 WHERE key = 'format'")
    db.commit()
    db.close()
    with pytest.raises(ref.StoreError, match="format 2"):
        Ledger.open("sqlite:sub.db")
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ref.StoreError):
        Ledger.open("sqlite:junk.db")


# -- processes on one SQLite file --------------------------------------------------------


def _race(url: str, chain: bytes, invocation: bytes, t: int, start_at: float) -> int:
    gate = Gate(TRUSTED, ledger=Ledger.open(url))
    time.sleep(max(0.0, start_at - time.time()))
    decision = gate.check(chain, invocation, now=t)
    if decision.reservation is not None:
        decision.reservation.commit()
    gate.ledger.close()
    return int(decision.code)


def test_processes_on_one_sqlite_file_allow_a_nonce_once(sqlite_url: str) -> None:
    chain, t = grant(budget=100), now()
    Ledger.open(sqlite_url).close()  # the schema, before the race
    same = invoke(chain, 4, t)
    jobs = [(sqlite_url, bytes(chain), same, t)] * 3 + [(sqlite_url, bytes(chain), invoke(chain, 4, t), t)
                                                       for _ in range(3)]
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        start_at = time.time() + 3.0
        codes = sorted(pool.starmap(_race, [(*job, start_at) for job in jobs]))
    # One of the three copies is allowed, and each of the three distinct requests.
    assert codes == [0, 0, 0, 0, 16, 16]
    ledger = Ledger.open(sqlite_url)
    assert ledger.account(chain.revocation_ids[0]) == ref.Account(100, 16, 0, 0)
    ledger.close()
