"""The Redis store of ``Ledger.open("redis://...")`` and ``"redis+cluster://..."``
(SPEC §5.8, layout §5.9), over redis-py.

Every key of a root carries the hash tag ``{R}`` (the root's 64 hex digits), so
a root lives in one slot of a cluster and one step touches one slot:

=======================  ======  ==============================================
``hg1:{R}:meta``         hash    ``clock``, ``retention`` (16 hex digits each)
``hg1:{R}:acct``         hash    account id -> cap spent reserved overrun expires
``hg1:{R}:n:<nonce>``    string  the nonce's timestamp, kept while it can matter
``hg1:{R}:res``          hash    reservation id -> amount, then the path's ids
``hg1:{R}:lease``        zset    reservation id, scored by its deadline (ms)
``hg1:{R}:done:<id>``    string  ``C``, ``R`` or ``F``, for ``SETTLED_MEMORY``
=======================  ======  ==============================================

A step is an optimistic transaction, redis-py's idiom: ``WATCH`` the root's
keys (and the nonce and settlement keys it asks about), read what the step
needs, apply the rules of ``_durable`` with Python's exact integers, then queue
the writes after ``MULTI``; ``EXEC`` applies them only if no watched key changed
meanwhile, and the step is retried on fresh state otherwise (until ``timeout``).
A gate batch is one transaction for all of its roots on a standalone server, and
one per root on a cluster (a transaction cannot span slots).

The store's time, for leases, is the server's ``TIME``. redis-py's own retries
are turned off: a command is never sent twice, so an ``EXEC`` whose reply was
lost is a ``StoreError``, and the reservations it may have made are released by
id when the store answers again (or forfeited at their lease).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional, TypeVar, Union

from .._audit import Settlement
from .._codes import Code
from .._decision import Account
from ..errors import HopgateError, InputError, StoreError
from ._durable import SETTLED_MEMORY_MS, DurableHold, DurableStore, Lease, RootState, Row
from ._store import U64_MAX, Hold, PathEntry, Step, Store

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException, WatchError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - the reference extra installs it
    raise ImportError(
        "a redis:// ledger needs the redis package: pip install 'hopgate[reference]'"
    ) from exc

__all__ = ["RedisStore"]

T = TypeVar("T")

ACCOUNT_ID_LEN = 32
#: A time to live beyond this is no expiry: Redis refuses an expiry that passes
#: its 64-bit millisecond clock, and 2**53 ms is 285,000 years.
MAX_TTL_MS = 1 << 53


def hex16(value: int) -> str:
    """A u64 as Redis holds it: 16 lower-case hex digits."""
    return f"{value:016x}"


def _u64s(text: object, count: int, what: str) -> list[int]:
    """``count`` u64 written one after another as 16 hex digits each."""
    if not isinstance(text, str) or len(text) != 16 * count:
        raise StoreError(f"Redis store: {what} holds {text!r}, not {count} u64")
    try:
        return [int(text[i:i + 16], 16) for i in range(0, len(text), 16)]
    except ValueError:
        raise StoreError(f"Redis store: {what} holds {text!r}, not {count} u64") from None


def _row(text: object, what: str) -> Row:
    return Row(*_u64s(text, 5, what))


def _lease(rid: bytes, text: object) -> Lease:
    """A ``res`` entry: the amount (16 hex digits), then the path's ids (64 each)."""
    if not isinstance(text, str) or len(text) < 16 + 64 or (len(text) - 16) % 64:
        raise StoreError(f"Redis store: reservation {rid.hex()} holds {text!r}")
    try:
        ids = tuple(bytes.fromhex(text[i:i + 64]) for i in range(16, len(text), 64))
    except ValueError:
        raise StoreError(f"Redis store: reservation {rid.hex()} holds {text!r}") from None
    return Lease(rid, _u64s(text[:16], 1, f"reservation {rid.hex()}")[0], ids)


def _mget(pipe: Any, keys: list[str]) -> list[Optional[str]]:
    # redis-py's cluster pipeline refuses its mget() wrapper even for keys of one
    # slot; the command itself is what a single slot allows.
    found: list[Optional[str]] = pipe.execute_command("MGET", *keys)
    return found


class _Keys:
    """The keys of one root (SPEC §5.9)."""

    __slots__ = ("prefix", "meta", "acct", "res", "lease")

    def __init__(self, root: bytes) -> None:
        self.prefix = f"hg1:{{{root.hex()}}}:"
        self.meta = self.prefix + "meta"
        self.acct = self.prefix + "acct"
        self.res = self.prefix + "res"
        self.lease = self.prefix + "lease"

    @property
    def root_keys(self) -> tuple[str, str, str, str]:
        """The keys that live and expire together."""
        return self.meta, self.acct, self.res, self.lease

    def nonce(self, nonce: bytes) -> str:
        return f"{self.prefix}n:{nonce.hex()}"

    def done(self, rid: bytes) -> str:
        return f"{self.prefix}done:{rid.hex()}"


class _Transaction:
    """One optimistic transaction: reads with the keys watched, then writes."""

    def __init__(self, pipe: Any, now_ms: int, lease_ms: int) -> None:
        self.pipe = pipe
        self.now_ms = now_ms
        self.deadline = now_ms + lease_ms
        self.opened: list[DurableHold] = []
        # Per root, meta's `until` as read: the latest not_after of its accounts.
        self.until: dict[bytes, Optional[int]] = {}

    def load(
        self,
        root: bytes,
        ids: Iterable[bytes],
        nonces: Collection[bytes] = (),
        rids: Collection[bytes] = (),
    ) -> tuple[RootState, dict[bytes, Optional[Lease]], dict[bytes, Optional[str]]]:
        """The root's state, with every lease that ended forfeited; and, for each
        of ``rids``, the reservation as stored and how it was settled."""
        pipe, keys = self.pipe, _Keys(root)
        extra = [keys.nonce(n) for n in nonces] + [keys.done(rid) for rid in rids]
        if extra:
            pipe.watch(*extra)
        expired = [bytes.fromhex(rid) for rid in pipe.zrangebyscore(keys.lease, "-inf", self.now_ms)]
        wanted = list(dict.fromkeys([*expired, *rids]))
        leases: dict[bytes, Optional[Lease]] = {}
        if wanted:
            for rid, text in zip(wanted, pipe.hmget(keys.res, [rid.hex() for rid in wanted])):
                leases[rid] = None if text is None else _lease(rid, text)
        clock, retention, until = pipe.hmget(keys.meta, ["clock", "retention", "until"])
        account_ids = list(dict.fromkeys(
            [root, *ids, *(i for lease in leases.values() if lease is not None for i in lease.ids)]
        ))
        accounts = {
            account_id: _row(text, f"account {account_id.hex()}")
            for account_id, text in zip(
                account_ids, pipe.hmget(keys.acct, [i.hex() for i in account_ids])
            )
            if text is not None
        }
        # Accounts written without `until` (by another writer) never expire early.
        self.until[root] = (
            _u64s(until, 1, "until")[0] if until is not None else (U64_MAX if accounts else None)
        )
        held: set[bytes] = set()
        if nonces:
            found = _mget(pipe, [keys.nonce(n) for n in nonces])
            held = {n for n, ts in zip(nonces, found) if ts is not None}
        done: dict[bytes, Optional[str]] = {}
        if rids:
            done = dict(zip(rids, _mget(pipe, [keys.done(rid) for rid in rids])))
        state = RootState(
            root,
            0 if clock is None else _u64s(clock, 1, "clock")[0],
            0 if retention is None else _u64s(retention, 1, "retention")[0],
            accounts,
            held,
        )
        # A lease that ended unsettled is forfeited; one whose entry is gone
        # (the store lost it) only leaves the lease set.
        state.forfeit(leases.get(rid) or Lease(rid, 0, ()) for rid in expired)
        return state, {rid: leases.get(rid) for rid in rids}, done

    def write(self, state: RootState, latest: Optional[int] = None) -> None:
        """Queue what the rules changed; the pipeline must be in ``MULTI``.
        ``latest``: a ``not_after`` of a path this step judged."""
        if not state.dirty:
            return
        pipe, keys = self.pipe, _Keys(state.root)
        if state.ticked:
            pipe.hset(keys.meta, mapping={
                "clock": hex16(state.clock), "retention": hex16(state.retention)
            })
        if state.changed:
            pipe.hset(keys.acct, mapping={
                account_id.hex(): "".join(hex16(value) for value in (
                    row.cap, row.spent, row.reserved, row.overrun, row.expires))
                for account_id in sorted(state.changed)
                for row in (state.accounts[account_id],)
            })
        for nonce, timestamp in state.recorded:
            # Held until the clock passes timestamp + retention (SPEC §5.9).
            until = min(timestamp + state.retention, U64_MAX)
            ttl_ms = (until + 1 - state.clock) * 1000
            if until == U64_MAX or ttl_ms > MAX_TTL_MS:
                pipe.set(keys.nonce(nonce), hex16(timestamp), nx=True)
            else:
                pipe.set(keys.nonce(nonce), hex16(timestamp), nx=True, px=ttl_ms)
        for lease, deadline in state.opened:
            pipe.hset(keys.res, lease.rid.hex(), hex16(lease.amount) + "".join(i.hex() for i in lease.ids))
            pipe.zadd(keys.lease, {lease.rid.hex(): deadline})
        for rid, letter in state.closed.items():
            pipe.hdel(keys.res, rid.hex())
            pipe.zrem(keys.lease, rid.hex())
            pipe.set(keys.done(rid), letter, px=SETTLED_MEMORY_MS)
        # The root's keys expire together, `retention` seconds after its clock
        # passes the latest not_after of its accounts; never while a budget's
        # account (no expiry) is among them. Every path starts at the root's
        # account, whose expiry is therefore the root's latest.
        expiries = [row.expires for row in state.accounts.values()]
        stored = self.until.get(state.root)
        expiries += [e for e in (latest, stored) if e is not None]
        if not expiries:
            return
        # meta's `until` is kept as a native writer keeps it (SPEC §5.9).
        pipe.hset(keys.meta, "until", hex16(max(expiries)))
        until = min(max(expiries) + state.retention, U64_MAX)
        ttl_ms = max(until - state.clock, 1) * 1000
        for key in keys.root_keys:
            if until == U64_MAX or ttl_ms > MAX_TTL_MS:
                pipe.persist(key)
            else:
                pipe.pexpire(key, ttl_ms)


class RedisStore(DurableStore):
    """Accounts, nonces and reservations in Redis (SPEC §5.9)."""

    def __init__(
        self, host: str, port: int, db: int, *, cluster: bool, lease: float, timeout: float,
        replicas: int = 0,
    ) -> None:
        self.kind = "redis-cluster" if cluster else "redis"
        self._where = f"{host}:{port}" if cluster else f"{host}:{port}/{db}"
        super().__init__(lease)
        self._cluster = cluster
        self._lease_ms = math.ceil(lease * 1000)
        self._timeout = timeout
        # Replicas that must acknowledge every admission and reservation (``WAIT``).
        self._replicas = replicas
        # Reservations of a step whose reply was lost: released when the store
        # answers again (if the step happened at all).
        self._unsure: list[DurableHold] = []
        # No retries: a command that may have been applied is never sent again.
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0, supported_errors=()),
            "decode_responses": True,
        }
        self._client: Any = None
        with self._failing_closed():
            if cluster:
                self._client = RedisCluster(host=host, port=port, **options)
            else:
                self._client = redis.Redis(host=host, port=port, db=db, **options)
                self._client.ping()

    # -- transactions ---------------------------------------------------------

    @contextmanager
    def _failing_closed(self) -> Iterator[None]:
        """Any failure of the server or the connection is a ``StoreError``."""
        try:
            yield
        except HopgateError:
            raise
        except (redis.RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"Redis store {self._where}: {type(exc).__name__}: {exc}") from exc

    def _connection(self) -> Any:
        if self._client is None:
            raise StoreError(f"Redis store {self._where}: the ledger is closed")
        return self._client

    def _time_ms(self, client: Any, root: bytes) -> int:
        """The store's time: ``TIME`` of the server that holds the root."""
        if self._cluster:
            node = client.get_node_from_key(_Keys(root).meta)
            seconds, micros = client.time(target_nodes=node)
        else:
            seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def _transact(self, roots: Sequence[bytes], work: Callable[[_Transaction], T], *, wait: bool = False) -> T:
        """Run ``work`` as one transaction over ``roots`` (one slot on a cluster):
        it reads through ``load`` and queues writes after ``pipe.multi()``. With
        ``wait`` and ``replicas``, fewer replicas acknowledging it in time fail it
        (its reservations are released when the store answers again)."""
        give_up = time.monotonic() + self._timeout
        with self._failing_closed():
            client = self._connection()
            while True:
                with client.pipeline(transaction=True) as pipe:
                    pipe.watch(*(key for root in roots for key in _Keys(root).root_keys))
                    txn = _Transaction(pipe, self._time_ms(client, roots[0]), self._lease_ms)
                    outcome = work(txn)
                    try:
                        pipe.execute()
                    except WatchError:
                        # Another process changed the root meanwhile: decide again.
                        if time.monotonic() >= give_up:
                            raise StoreError(
                                f"Redis store {self._where}: the root stayed contended "
                                f"for {self._timeout} s"
                            ) from None
                        continue
                    except (redis.ConnectionError, redis.TimeoutError):
                        with self._lock:
                            self._unsure.extend(txn.opened)
                        raise
                    if wait and self._replicas:
                        acknowledged: Optional[int] = None
                        try:
                            # Half the timeout, so that the answer comes before the socket gives up.
                            acknowledged = int(client.wait(self._replicas, math.ceil(self._timeout * 500)))
                        except (redis.RedisError, OSError):
                            pass  # no answer: as unsure as a lost reply
                        if acknowledged is None or acknowledged < self._replicas:
                            with self._lock:
                                self._unsure.extend(txn.opened)
                            raise StoreError(
                                f"Redis store {self._where}: WAIT: {acknowledged} of the {self._replicas} "
                                "replicas asked acknowledged the step in time"
                            )
                    return outcome

    def _settle_unsure(self) -> None:
        """Release the reservations of steps whose reply was lost, if they exist:
        called after a step succeeded, when the store answers again."""
        with self._lock:
            unsure, self._unsure = self._unsure, []
        for i, hold in enumerate(unsure):
            try:
                self._settle(hold, Settlement.RELEASE, 0)
            except StoreError:
                with self._lock:
                    self._unsure[:0] = unsure[i:]
                return
            except HopgateError:
                pass  # never made, or settled already: nothing to release

    # -- Store ----------------------------------------------------------------

    def admit(self, steps: Sequence[Step], now: int) -> list[tuple[Code, Optional[Hold]]]:
        if not steps:
            return []
        self._settle_unsure()
        retention = self._retention
        by_root: dict[bytes, list[int]] = {}
        for i, step in enumerate(steps):
            by_root.setdefault(step.root, []).append(i)
        results: list[tuple[Code, Optional[Hold]]] = [(Code.OK, None)] * len(steps)

        def work(txn: _Transaction, roots: Sequence[bytes]) -> None:
            states = []
            for root in roots:
                indices = by_root[root]
                state, _, _ = txn.load(
                    root,
                    (account_id for i in indices for account_id, _ in steps[i].path),
                    list(dict.fromkeys(steps[i].nonce for i in indices)),
                )
                state.tick(now, retention)
                for i in indices:
                    step = steps[i]
                    code, rid = state.admit(step, txn.deadline)
                    hold = None
                    if rid is not None:
                        hold = DurableHold(root, rid, tuple(a for a, _ in step.path), step.cost)
                        txn.opened.append(hold)
                    results[i] = (code, hold)
                latest = max(e for i in indices for e in steps[i].expires)
                states.append((state, latest))
            txn.pipe.multi()
            for state, latest in states:
                txn.write(state, latest)

        # A standalone server takes the whole batch in one transaction; a
        # cluster one per root (one slot each).
        groups = [[root] for root in by_root] if self._cluster else [list(by_root)]
        for group in groups:
            self._transact(group, lambda txn: work(txn, group), wait=True)
        self._settle_unsure()
        return results

    def seen(self, step: Step, now: int) -> bool:
        keys = _Keys(step.root)
        with self._failing_closed():
            with self._connection().pipeline(transaction=True) as pipe:
                pipe.hmget(keys.meta, ["clock", "retention"])
                pipe.exists(keys.nonce(step.nonce))
                (clock, retention), held = pipe.execute()
        state = RootState(
            step.root,
            0 if clock is None else _u64s(clock, 1, "clock")[0],
            0 if retention is None else _u64s(retention, 1, "retention")[0],
            {},
            {step.nonce} if held else set(),
        )
        state.tick(now, self._retention)
        return state.seen(step.nonce, step.timestamp)

    def reserve(self, path: Sequence[PathEntry], amount: int) -> Hold:
        root = path[0][0]
        ids = tuple(account_id for account_id, _ in path)

        def work(txn: _Transaction) -> Union[DurableHold, HopgateError]:
            state, _, _ = txn.load(root, ids)
            outcome: Union[DurableHold, HopgateError]
            try:
                rid = state.reserve(path, amount, [U64_MAX] * len(path), txn.deadline)
            except HopgateError as exc:
                outcome = exc  # the forfeits of load are still written
            else:
                outcome = DurableHold(root, rid, ids, amount)
                txn.opened.append(outcome)
            txn.pipe.multi()
            txn.write(state)
            return outcome

        self._settle_unsure()
        outcome = self._transact([root], work, wait=True)
        self._settle_unsure()
        if isinstance(outcome, HopgateError):
            raise outcome
        return outcome

    def state(self, path: Sequence[PathEntry]) -> list[Account]:
        keys = _Keys(path[0][0])
        with self._failing_closed():
            found = self._connection().hmget(keys.acct, [account_id.hex() for account_id, _ in path])
        return [
            Account(cap, 0, 0, 0) if text is None else _row(text, f"account {account_id.hex()}").account()
            for (account_id, cap), text in zip(path, found)
        ]

    def settle(self, hold: Hold, kind: Settlement, charged: int) -> None:
        assert isinstance(hold, DurableHold)
        self._settle(hold, kind, charged)
        self._settle_unsure()

    def _settle(self, hold: DurableHold, kind: Settlement, charged: int) -> None:
        def work(txn: _Transaction) -> Optional[HopgateError]:
            state, leases, done = txn.load(hold.root, hold.ids, rids=[hold.rid])
            refused: Optional[HopgateError] = None
            try:
                state.settle(hold.rid, leases[hold.rid], done[hold.rid], kind, charged)
            except HopgateError as exc:
                refused = exc  # nothing changes; the forfeits of load are written
            txn.pipe.multi()
            txn.write(state)
            return refused

        refused = self._transact([hold.root], work)
        if refused is not None:
            raise refused

    def abandon(self, hold: Hold) -> None:
        # The collector must not wait on the network: the lease forfeits it.
        pass

    def account(self, account_id: bytes, root: Optional[bytes]) -> Optional[Account]:
        if root is None:
            raise InputError("root: a Redis ledger keeps accounts per root; name the root")
        with self._failing_closed():
            text = self._connection().hget(_Keys(root).acct, account_id.hex())
        return None if text is None else _row(text, f"account {account_id.hex()}").account()

    def accounts(self) -> dict[bytes, Account]:
        found: dict[bytes, tuple[bytes, Account]] = {}
        with self._failing_closed():
            client = self._connection()
            for key in client.scan_iter(match="hg1:{*}:acct", count=1000):
                root = bytes.fromhex(key[5:69])
                for field, text in client.hgetall(key).items():
                    account_id = bytes.fromhex(field)
                    account = _row(text, f"account {field}").account()
                    # An id under several roots (only budgets can name one so) is
                    # given under the least root, as the SQLite store does.
                    if account_id not in found or root < found[account_id][0]:
                        found[account_id] = (root, account)
        return {account_id: account for account_id, (_, account) in found.items()}

    def nonces(self, now: int) -> int:
        held = 0
        retention = self._retention
        roots: dict[str, tuple[int, int]] = {}
        with self._failing_closed():
            client = self._connection()
            for key in client.scan_iter(match="hg1:{*}:n:*", count=1000):
                tag = key[4:70]
                if tag not in roots:
                    clock, kept = client.hmget(f"hg1:{tag}:meta", ["clock", "retention"])
                    roots[tag] = (
                        0 if clock is None else _u64s(clock, 1, "clock")[0],
                        0 if kept is None else _u64s(kept, 1, "retention")[0],
                    )
                ts = client.get(key)
                if ts is None:
                    continue  # expired meanwhile
                clock, kept = roots[tag]
                if min(_u64s(ts, 1, key)[0] + max(kept, retention), U64_MAX) >= max(clock, now):
                    held += 1
        return held

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
