"""The runtime budget ledger of SPEC §5 for the reference: the ``Ledger`` and its
affine handles, ``Budget`` and ``Reservation``.

Every link of a chain is an account, keyed by its revocation id (BLAKE3 of its
signature) with cap = the link's budget. A reservation over a path holds the
amount on *every* account of the path, so the middle links of a chain bind as
much as its ends, and two siblings under one parent can never spend more than
the parent's cap together (the delegation fan-out race). A path may not name
one account twice (``InputError``): the amount would be held twice on it.

Where the accounts and nonces live is the ledger's store (``_store``):
``Ledger()`` keeps them in this process (``_memory``, SPEC §5.1 to §5.7) and
``Ledger.open(url)`` in a durable store that processes share (``_sqlite``,
``_redis``, SPEC §5.8). The gate, ``Budget`` and ``Reservation`` call the same
store methods whichever it is.

``Budget`` and ``Reservation`` are affine handles: they cannot be copied or
pickled, a ``Reservation`` is settled (committed, released or forfeited) exactly
once, and a ``Budget`` that delegated is replaced by the fresh handle that
``delegate`` returned. Any second use raises ``AffineError``. Which handle is
spent is guarded by the ledger's own lock, taken only to flip that state, never
across a store's work.

A reservation of a durable store also has a lease: unsettled at its deadline, it
is forfeited by the store. A settlement the store could not make raises
``StoreError`` and spends the handle: the reservation is left to its lease, which
forfeits it (never less than the truth is charged); one the lease overtook raises
``LeaseExpiredError``.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, NoReturn, Optional, Protocol, SupportsIndex, Union

from .._audit import SettleRecord, Settlement
from .._codes import Code
from .._decision import Account
from ..errors import (
    AffineError,
    DelegationError,
    InputError,
    LeaseExpiredError,
    OverrunError,
    StoreError,
)
from ._batch import as_bytes, is_buffer
from ._hash import blake3_digest
from ._memory import MemoryStore
from ._store import Hold, PathEntry, Step, Store, open_store, short_id
from ._wire import check_fixed, check_uint

__all__ = ["Ledger", "Budget", "Reservation"]

ACCOUNT_ID_LEN = 32
DEFAULT_MAX_ACCOUNTS = 1_000_000
DEFAULT_MAX_NONCES = 1_000_000
#: The default per-root share of accounts is never below a whole chain's 16 links
#: (unless the ledger itself holds fewer).
MIN_ACCOUNTS_PER_ROOT = 16


class _LinkLike(Protocol):
    @property
    def signature(self) -> bytes: ...
    @property
    def budget(self) -> int: ...


class _RecordSink(Protocol):
    """Where settlement records go: the reference ``AuditLog``."""

    def _append(self, bodies: Sequence[bytes], *, urgent: bool) -> list[Any]: ...

    def _append_later(self, body: bytes) -> None: ...

    @property
    def _lock(self) -> AbstractContextManager[Any]: ...


class _ChainLike(Protocol):
    """A chain of either implementation: all the ledger needs is its links."""

    @property
    def links(self) -> Sequence[_LinkLike]: ...


PathSource = Union[_ChainLike, Iterable[PathEntry]]


def _path_entries(path: object) -> list[PathEntry]:
    """Validate a path given as a chain or as (account_id, cap) pairs."""
    links = getattr(path, "links", None)
    entries: list[PathEntry] = []
    if links is not None:
        for i, link in enumerate(links):
            signature = as_bytes(getattr(link, "signature", None), f"path.links[{i}].signature")
            entries.append(
                (blake3_digest(signature), check_uint(getattr(link, "budget", None), 64,
                                                      f"path.links[{i}].budget"))
            )
    elif isinstance(path, str) or is_buffer(path) or not isinstance(path, Iterable):
        raise InputError(
            "path: expected a Chain or a sequence of (account_id, cap) pairs, "
            f"got {type(path).__name__}"
        )
    else:
        for i, item in enumerate(path):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise InputError(f"path[{i}]: expected an (account_id, cap) pair")
            account_id, cap = item
            entries.append(
                (
                    check_fixed(account_id, ACCOUNT_ID_LEN, f"path[{i}].account_id"),
                    check_uint(cap, 64, f"path[{i}].cap"),
                )
            )
    if not entries:
        raise InputError("path: must name at least one account")
    seen: set[bytes] = set()
    for i, (account_id, _) in enumerate(entries):
        if account_id in seen:
            raise InputError(f"path[{i}]: account {short_id(account_id)} appears twice")
        seen.add(account_id)
    return entries


class _Affine:
    """Refuses copying and pickling: a handle on money exists exactly once."""

    __slots__ = ()

    def _refuse(self) -> NoReturn:
        raise TypeError(f"a {type(self).__name__} cannot be copied or pickled")

    def __copy__(self) -> NoReturn:
        self._refuse()

    def __deepcopy__(self, memo: object) -> NoReturn:
        self._refuse()

    def __reduce__(self) -> NoReturn:
        self._refuse()

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        self._refuse()


class Ledger:
    """Accounts (cap, spent, reserved, overrun) keyed by 32-byte ids, and the
    replay nonces of the gates that share it.

    ``Ledger()`` keeps them in this process; ``Ledger.open(url)`` in a durable
    store shared by every process given the URL. Thread-safe: each reservation
    over a whole path, and each gate's ledger step, is one atomic step.
    """

    _store: Store
    _handles: threading.Lock

    def __init__(
        self,
        *,
        max_accounts: int = DEFAULT_MAX_ACCOUNTS,
        max_nonces: int = DEFAULT_MAX_NONCES,
        max_accounts_per_root: Optional[int] = None,
        max_nonces_per_root: Optional[int] = None,
    ) -> None:
        accounts = _count(max_accounts, "max_accounts")
        nonces = _count(max_nonces, "max_nonces")
        self._store = MemoryStore(
            max_accounts=accounts,
            max_nonces=nonces,
            max_accounts_per_root=(
                max(accounts // 10, min(accounts, MIN_ACCOUNTS_PER_ROOT))
                if max_accounts_per_root is None
                else _count(max_accounts_per_root, "max_accounts_per_root")
            ),
            max_nonces_per_root=(
                nonces
                if max_nonces_per_root is None
                else _count(max_nonces_per_root, "max_nonces_per_root")
            ),
        )
        self._handles = threading.Lock()

    @classmethod
    def open(cls, url: str, *, lease: float = 30.0, timeout: float = 2.0) -> Ledger:
        """A ledger in the durable store ``url`` names (SPEC §5.8), shared by every
        process given the same URL: ``sqlite:///abs/path.db``,
        ``sqlite:relative/path.db``, ``redis://host:port/db`` or
        ``redis+cluster://host:port``.

        A reservation unsettled ``lease`` seconds after it was made is forfeited;
        a store that does not answer within ``timeout`` seconds fails
        (``StoreError``), and a gate then allows nothing.
        """
        ledger = cls.__new__(cls)
        ledger._store = open_store(url, lease, timeout)
        ledger._handles = threading.Lock()
        return ledger

    # -- public -----------------------------------------------------------

    @property
    def store(self) -> str:
        """Where the state lives: "memory", "sqlite", "redis" or "redis-cluster"."""
        return self._store.kind

    @property
    def lease(self) -> Optional[float]:
        """Seconds before an unsettled reservation is forfeited; None for a memory
        ledger, whose reservations live until they are settled or dropped."""
        return self._store.lease

    def close(self) -> None:
        """Let go of the store; later use of a durable ledger raises ``StoreError``.
        A memory ledger has nothing to let go of."""
        self._store.close()

    def budget(self, path: PathSource) -> Budget:
        """A handle on a path: a ``Chain`` (one account per link, cap = budget) or
        a sequence of ``(account_id, cap)`` pairs, root first.

        Accounts are opened by the first reservation on them, with the cap the
        path names; an account that already exists keeps its cap.
        """
        return Budget._create(self, _path_entries(path))

    def account(self, account_id: bytes, *, root: Optional[bytes] = None) -> Optional[Account]:
        """A snapshot of one account, or None if it is not held (never opened, or
        opened under another ``root`` than the one given). A Redis ledger keeps
        accounts per root and needs ``root``."""
        key = check_fixed(account_id, ACCOUNT_ID_LEN, "account_id")
        under = None if root is None else check_fixed(root, ACCOUNT_ID_LEN, "root")
        return self._store.account(key, under)

    def accounts(self) -> dict[bytes, Account]:
        """A snapshot of every account, by id."""
        return self._store.accounts()

    @property
    def max_accounts(self) -> Optional[int]:
        """The most accounts this ledger holds at once (None: a durable store,
        which forgets by age only)."""
        return self._store.max_accounts if isinstance(self._store, MemoryStore) else None

    @property
    def max_nonces(self) -> Optional[int]:
        """The most replay nonces this ledger remembers at once (None: a durable
        store)."""
        return self._store.max_nonces if isinstance(self._store, MemoryStore) else None

    @property
    def max_accounts_per_root(self) -> Optional[int]:
        """The most accounts opened with one root that this ledger holds at once
        (None: a durable store)."""
        store = self._store
        return store.max_accounts_per_root if isinstance(store, MemoryStore) else None

    @property
    def max_nonces_per_root(self) -> Optional[int]:
        """The most replay nonces this ledger remembers for one root at once
        (None: a durable store)."""
        store = self._store
        return store.max_nonces_per_root if isinstance(store, MemoryStore) else None

    @property
    def replay_window(self) -> int:
        """How long a nonce is remembered after its timestamp: the longest
        ``replay_window`` of any gate built on this ledger (0 before any)."""
        return self._store.replay_window

    def nonces(self, now: Optional[int] = None) -> int:
        """How many replay nonces are remembered at ``now`` (default: the clock);
        for a durable store, those it holds that no root's clock made prunable."""
        when = int(time.time()) if now is None else check_uint(now, 64, "now")
        return self._store.nonces(when)

    def __repr__(self) -> str:
        store = self._store
        if isinstance(store, MemoryStore):
            return f"Ledger(accounts={store.size()})"
        return f"Ledger.open({store.url!r})"

    # -- internal ---------------------------------------------------------

    def _retain(self, replay_window: int) -> None:
        """A gate with ``replay_window`` decides on this ledger: remember every
        nonce at least that long, whichever gate consumed it, so that no gate
        sharing the ledger finds a nonce forgotten while it still counts as fresh."""
        self._store.retain(replay_window)

    def _admit(self, steps: Sequence[Step], now: int) -> list[tuple[Code, Optional[Reservation]]]:
        """The ledger steps of a gate call (SPEC §5.7), in order: replay (16) and
        the reservation (17) of each request, atomically."""
        return [
            (code, None if hold is None else Reservation._create(self, hold))
            for code, hold in self._store.admit(steps, now)
        ]

    def _seen(self, step: Step, now: int) -> bool:
        """Whether ``step`` would be refused as a replay at ``now``, read only."""
        return self._store.seen(step, now)


def _count(value: object, name: str) -> int:
    """A limit: an integer of at least 1."""
    number = check_uint(value, 64, name)
    if number < 1:
        raise InputError(f"{name}: must be at least 1, got {number}")
    return number


class Budget(_Affine):
    """A handle on a path of ledger accounts, made by ``Ledger.budget``.

    ``delegate`` consumes the handle and returns a fresh one on the same path
    plus a child handle one account longer.
    """

    __slots__ = ("_ledger", "_path", "_live")
    _ledger: Ledger
    _path: list[PathEntry]
    _live: bool

    def __init__(self) -> None:
        raise TypeError("a Budget is made by Ledger.budget(path) or Budget.delegate")

    @classmethod
    def _create(cls, ledger: Ledger, path: list[PathEntry]) -> Budget:
        budget = object.__new__(cls)
        budget._ledger = ledger
        budget._path = path
        budget._live = True
        return budget

    def _check_live(self) -> None:
        """With the ledger's handle lock held."""
        if not self._live:
            raise AffineError(
                "this Budget delegated and was replaced by the handle delegate() returned"
            )

    @property
    def path(self) -> list[PathEntry]:
        """The (account id, cap) pairs of this handle, root first."""
        with self._ledger._handles:
            self._check_live()
            return list(self._path)

    def reserve(self, amount: int) -> Reservation:
        """Hold ``amount`` on every account of the path; ``BudgetExhaustedError``
        (and no change) if any account lacks room."""
        amount = check_uint(amount, 64, "amount")
        ledger = self._ledger
        with ledger._handles:
            self._check_live()
        return Reservation._create(ledger, ledger._store.reserve(self._path, amount))

    def remaining(self) -> int:
        """The most a reservation could hold right now: the least room on the path."""
        with self._ledger._handles:
            self._check_live()
        # An overrun can push spent + reserved past the cap; there is no room then.
        return min(
            max(0, account.cap - account.spent - account.reserved)
            for account in self._ledger._store.state(self._path)
        )

    def delegate(self, cap: int, account_id: Optional[bytes] = None) -> tuple[Budget, Budget]:
        """Consume this handle; return (a fresh handle on the same path, a child
        handle whose path adds the account ``account_id`` (default: 32 random
        bytes) with ``cap``).

        ``DelegationError(code=BUDGET_WIDENED)`` if ``cap`` exceeds the cap of
        this path's last account (its cap in the ledger once opened, else the
        cap the path names); a refused delegation consumes nothing.
        """
        cap = check_uint(cap, 64, "cap")
        child_id = (
            os.urandom(ACCOUNT_ID_LEN)
            if account_id is None
            else check_fixed(account_id, ACCOUNT_ID_LEN, "account_id")
        )
        ledger = self._ledger
        with ledger._handles:
            self._check_live()
            if any(existing == child_id for existing, _ in self._path):
                raise InputError(f"account_id: {short_id(child_id)} is already on the path")
            self._live = False  # claimed: a concurrent second delegate is refused
        try:
            parent_cap = ledger._store.state(self._path)[-1].cap
            if cap > parent_cap:
                raise DelegationError(
                    f"delegation refused: cap {cap} is larger than the parent's {parent_cap}",
                    Code.BUDGET_WIDENED,
                )
        except BaseException:
            with ledger._handles:
                self._live = True
            raise
        child_path = [*self._path, (child_id, cap)]
        return Budget._create(ledger, self._path), Budget._create(ledger, child_path)

    def __repr__(self) -> str:
        if not self._live:
            return "Budget(<delegated>)"
        return f"Budget(accounts={len(self._path)}, last={short_id(self._path[-1][0])})"


class Reservation(_Affine):
    """An amount held on every account of a path, settled exactly once.

    ``commit(actual)`` charges ``actual`` and releases the rest; ``release()``
    says nothing was spent. Leaving a ``with`` block, or being collected,
    without either forfeits: the held amount counts as spent.
    """

    __slots__ = ("_ledger", "_hold", "_settled", "_record")
    _ledger: Ledger
    _hold: Hold
    _settled: bool
    # Where the settlement is recorded (a gate's audit log), and the digest of
    # the invocation it settles.
    _record: Optional[tuple[_RecordSink, bytes]]

    def __init__(self) -> None:
        raise TypeError("a Reservation is made by Budget.reserve or a Gate")

    @classmethod
    def _create(cls, ledger: Ledger, hold: Hold) -> Reservation:
        reservation = object.__new__(cls)
        reservation._ledger = ledger
        reservation._hold = hold
        reservation._settled = False
        reservation._record = None
        return reservation

    def _recorded(self, log: _RecordSink, invocation_digest: bytes) -> Reservation:
        """Append a settlement record to ``log`` when this is settled."""
        self._record = (log, invocation_digest)
        return self

    def _settlement(self, kind: Settlement, charged: int) -> Optional[bytes]:
        if self._record is None:
            return None
        hold = self._hold
        return SettleRecord(kind, hold.amount, charged, self._record[1], hold.ids).to_bytes()

    def _write(self, kind: Settlement, charged: int) -> None:
        """Append the settlement record, if any; the ledger is settled already."""
        record = self._settlement(kind, charged)
        if record is not None and self._record is not None:
            self._record[0]._append([record], urgent=True)

    def _recording(self) -> AbstractContextManager[Any]:
        """The audit log's lock, held while settling and appending the record, so
        the log holds settlements in the order the ledger saw them (the gate never
        holds the ledger's lock while it takes this one)."""
        return nullcontext() if self._record is None else self._record[0]._lock

    @property
    def amount(self) -> int:
        """The amount held on every account of the path."""
        return self._hold.amount

    @property
    def settled(self) -> bool:
        """Whether this reservation was committed, released or forfeited."""
        return self._settled

    def _claim(self) -> None:
        """Mark this reservation settled, or raise ``AffineError`` if it was."""
        with self._ledger._handles:
            if self._settled:
                raise AffineError("this Reservation was already committed, released or forfeited")
            self._settled = True

    def _settle(self, kind: Settlement, charged: int) -> None:
        """Settle in the store, then append the record. A store that failed leaves
        the reservation to its lease (SPEC §5.8); one whose lease forfeited the
        reservation is recorded as that forfeit."""
        self._claim()
        try:
            self._ledger._store.settle(self._hold, kind, charged)
        except LeaseExpiredError:
            self._write(Settlement.FORFEIT, self._hold.amount)
            raise
        self._write(kind, charged)

    def commit(self, actual: Optional[int] = None) -> None:
        """Charge ``actual`` (default: the reserved amount) on every account and
        release the rest.

        If ``actual`` exceeds the reservation, the whole of it is still charged
        and the excess recorded as an overrun on every account; then
        ``OverrunError`` is raised (money already spent is never forgotten).
        """
        amount = self._hold.amount
        charged = amount if actual is None else check_uint(actual, 64, "actual")
        with self._recording():
            self._settle(Settlement.COMMIT, charged)
        if charged > amount:
            raise OverrunError(
                f"committed {charged}, {charged - amount} more than the {amount} reserved; "
                "charged in full and recorded as an overrun",
                reserved=amount,
                actual=charged,
            )

    def release(self) -> None:
        """Return the whole amount: nothing was spent."""
        with self._recording():
            self._settle(Settlement.RELEASE, 0)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        with self._recording():
            with self._ledger._handles:
                if self._settled:
                    return
                self._settled = True
            try:
                self._ledger._store.settle(self._hold, Settlement.FORFEIT, self._hold.amount)
            except (StoreError, LeaseExpiredError):
                pass  # a durable store's lease forfeits it, or did already
            self._forfeit_record()

    def _forfeit_record(self) -> None:
        # Nobody to report a failed write to (the next append on a broken log
        # fails loudly), as when the core drops a reservation.
        record = self._settlement(Settlement.FORFEIT, self._hold.amount)
        if record is not None and self._record is not None:
            self._record[0]._append_later(record)

    def __del__(self) -> None:
        # No other reference exists, so nothing can settle concurrently, and no
        # lock is taken here: the store queues the forfeit, or leaves it to the
        # lease.
        if getattr(self, "_settled", True):
            return
        self._settled = True
        self._ledger._store.abandon(self._hold)
        self._forfeit_record()
        warnings.warn(
            f"a Reservation of {self._hold.amount} was neither committed nor released; "
            "it is forfeited (counted as spent)",
            ResourceWarning,
            source=self,
        )

    def __repr__(self) -> str:
        state = "settled" if self._settled else "open"
        return f"Reservation(amount={self._hold.amount}, {state})"
