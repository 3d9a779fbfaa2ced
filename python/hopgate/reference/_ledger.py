"""The runtime budget ledger of SPEC §5 for the reference: accounts, budgets, reservations.

Every link of a chain is an account, keyed by its revocation id (BLAKE3 of its
signature) with cap = the link's budget. A reservation over a path holds the
amount on *every* account of the path, so the middle links of a chain bind as
much as its ends, and two siblings under one parent can never spend more than
the parent's cap together (the delegation fan-out race).

One ``threading.Lock`` per ledger guards all of its state: the accounts and the
replay nonces that gates sharing this ledger consult. Holding it across the whole
check-then-update of a reservation is what makes ``reserve`` atomic and
linearizable.

``Budget`` and ``Reservation`` are affine handles: they cannot be copied or
pickled, a ``Reservation`` is settled (committed, released or forfeited) exactly
once, and a ``Budget`` that delegated is replaced by the fresh handle that
``delegate`` returned. Any second use raises ``AffineError``.

Rules of SPEC §5.1 and §5.2 that this module implements:

* An account is opened by the first reservation on it that succeeds, with the
  cap its path names (``Ledger.budget`` and ``Budget.delegate`` open nothing),
  so a refused reservation leaves the ledger exactly as it was. Until then the
  path's cap stands in for it (``remaining``, ``delegate``).
* An account that already exists keeps its cap, whatever cap a later path names.
* A path may not name one account twice (``InputError``): the amount would be
  held twice on it.

The root of a path is its first account: for a gate, the revocation id of link 0,
so every chain under one grant shares it. Each account remembers the root of the
path that opened it, and replay nonces are kept per root, so that one grant's
traffic cannot crowd out what every other grant needs.

Limits (the same rules as the core's ``ledger::Limits``, SPEC §5.5, §5.6 and §8):

* At most ``max_accounts`` accounts, and at most ``max_accounts_per_root`` opened
  with one root (default: a tenth of ``max_accounts``, but room for a whole
  16-link chain, or all of a smaller ledger). When a
  reservation needs new accounts and either bound would be passed, accounts a gate
  opened whose link has expired (``not_after <= now``, the latest ``now`` a gate
  reserved at) and that hold no reservation are forgotten, except those on the
  path being reserved (forgetting one would hand that path a fresh, empty account
  to spend again); if that frees too little, the reservation is refused
  (``BUDGET_EXHAUSTED``). Accounts opened by ``Ledger.budget`` never expire. The
  largest expiry forgotten is the account horizon: an account expiring at or
  before it is never opened again, so a request dated in the past cannot find a
  forgotten account empty.
* Replay nonces are keyed by ``(root, nonce)`` and remembered by the invocation's
  timestamp until ``timestamp + replay_window``, where ``replay_window`` is the
  longest window of any gate built on this ledger (its retention; a gate that
  joins with a longer window makes every remembered nonce live longer). A nonce
  whose expiry has passed is forgotten and its root's horizon raised to its
  timestamp. A root holds at most ``max_nonces_per_root`` nonces (default
  ``max_nonces``) and the ledger at most ``max_nonces``: recording one more first
  forgets that root's earliest nonce (smallest timestamp, then smallest nonce
  bytes), or, when the ledger is full, the earliest nonce of the root holding the
  most (ties: the smallest root id), raising that root's horizon to the timestamp
  forgotten. A request whose root remembers its nonce, or whose timestamp is at or
  before its root's horizon, is refused as ``REPLAY`` (it may have been seen), so
  a clock that steps back cannot bring a forgotten nonce back to life. A root left
  with no nonce keeps its horizon until the horizon is past the retention at some
  ``now``; then it is folded into the ledger's global horizon, which every root
  obeys (it refuses nothing fresh at that ``now``; only a clock stepping back by
  more than the retention makes it refuse fresh requests of any root), so memory
  stays bounded by rate x window rather than by every root ever seen.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import TracebackType
from typing import Any, NoReturn, Optional, Protocol, SupportsIndex, Tuple, Union

from .._audit import SettleRecord, Settlement
from .._codes import Code
from .._decision import Account
from ..errors import (
    AffineError,
    BudgetExhaustedError,
    DelegationError,
    InputError,
    OverrunError,
)
from ._batch import as_bytes, is_buffer
from ._hash import blake3_digest
from ._wire import check_fixed, check_uint

__all__ = ["Ledger", "Budget", "Reservation"]

ACCOUNT_ID_LEN = 32
DEFAULT_MAX_ACCOUNTS = 1_000_000
DEFAULT_MAX_NONCES = 1_000_000
#: The default per-root share of accounts is never below a whole chain's 16 links
#: (unless the ledger itself holds fewer).
MIN_ACCOUNTS_PER_ROOT = 16
U64_MAX = (1 << 64) - 1
#: The expiry of an account that is never forgotten (opened by a budget).
NEVER = U64_MAX

#: One step of a path: (account id, cap).
PathEntry = Tuple[bytes, int]


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


class _AccountState:
    """The mutable state of one account; only touched with the ledger lock held."""

    __slots__ = ("cap", "spent", "reserved", "overrun")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.spent = 0
        self.reserved = 0
        self.overrun = 0

    def room(self) -> int:
        # An overrun can push spent + reserved past the cap; there is no room then.
        return max(0, self.cap - self.spent - self.reserved)

    def snapshot(self) -> Account:
        return Account(self.cap, self.spent, self.reserved, self.overrun)


def _short(account_id: bytes) -> str:
    return account_id.hex()[:16] + "..."


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
            raise InputError(f"path[{i}]: account {_short(account_id)} appears twice")
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


class _RootNonces:
    """The nonces one root remembers: nonce -> timestamp, and a min-heap of
    (timestamp, nonce) holding exactly the same entries, earliest first."""

    __slots__ = ("times", "heap")

    def __init__(self) -> None:
        self.times: dict[bytes, int] = {}
        self.heap: list[tuple[int, bytes]] = []


class Ledger:
    """In-process accounts (cap, spent, reserved, overrun) keyed by 32-byte ids.

    Thread-safe: one lock guards every account and the replay nonces, so a
    reservation over a whole path is atomic.
    """

    def __init__(
        self,
        *,
        max_accounts: int = DEFAULT_MAX_ACCOUNTS,
        max_nonces: int = DEFAULT_MAX_NONCES,
        max_accounts_per_root: Optional[int] = None,
        max_nonces_per_root: Optional[int] = None,
    ) -> None:
        self._max_accounts = _count(max_accounts, "max_accounts")
        self._max_nonces = _count(max_nonces, "max_nonces")
        self._max_accounts_per_root = (
            max(self._max_accounts // 10, min(self._max_accounts, MIN_ACCOUNTS_PER_ROOT))
            if max_accounts_per_root is None
            else _count(max_accounts_per_root, "max_accounts_per_root")
        )
        self._max_nonces_per_root = (
            self._max_nonces
            if max_nonces_per_root is None
            else _count(max_nonces_per_root, "max_nonces_per_root")
        )
        self._lock = threading.Lock()
        self._accounts: dict[bytes, _AccountState] = {}
        # The root each account was opened with, and how many accounts each
        # root holds (a root holding none has no entry).
        self._account_root: dict[bytes, bytes] = {}
        self._root_accounts: dict[bytes, int] = {}
        # When each account may be forgotten, a min-heap of (expires, id) over
        # the accounts that expire, the account horizon, and the latest gate time.
        self._expires: dict[bytes, int] = {}
        self._account_heap: list[tuple[int, bytes]] = []
        self._account_horizon: Optional[int] = None
        self._now = 0
        # Replay protection for the gates sharing this ledger, per root: the
        # nonces each root remembers, a min-heap of (timestamp, root, nonce)
        # over every root so that pruning is cheap (it may hold entries a root
        # already forgot), and each root's horizon. A root left with no nonce
        # keeps its horizon (in ``_emptied``, by horizon) until the horizon is
        # past the retention; then it is folded into the global horizon, so
        # memory stays bounded by rate x window, not by the roots ever seen.
        self._replay_window = 0
        self._nonce_roots: dict[bytes, _RootNonces] = {}
        self._nonce_count = 0
        self._nonce_heap: list[tuple[int, bytes, bytes]] = []
        self._nonce_horizons: dict[bytes, int] = {}
        self._emptied: list[tuple[int, bytes]] = []
        self._nonce_horizon: Optional[int] = None
        # Reservations forfeited by the garbage collector, not yet applied.
        # ``__del__`` may run while this very thread holds the (non-reentrant)
        # lock, so it only queues (deque.append is atomic); whoever takes the
        # lock next applies the queue before doing anything else.
        self._orphans: deque[tuple[tuple[_AccountState, ...], int]] = deque()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            while self._orphans:
                accounts, amount = self._orphans.popleft()
                _forfeit_locked(accounts, amount)
            yield

    # -- public -----------------------------------------------------------

    def budget(self, path: PathSource) -> Budget:
        """A handle on a path: a ``Chain`` (one account per link, cap = budget) or
        a sequence of ``(account_id, cap)`` pairs, root first.

        Accounts are opened by the first reservation on them, with the cap the
        path names; an account that already exists keeps its cap.
        """
        return Budget._create(self, _path_entries(path))

    def account(self, account_id: bytes) -> Optional[Account]:
        """A snapshot of one account, or None if it was never opened."""
        key = check_fixed(account_id, ACCOUNT_ID_LEN, "account_id")
        with self._locked():
            state = self._accounts.get(key)
            return None if state is None else state.snapshot()

    def accounts(self) -> dict[bytes, Account]:
        """A consistent snapshot of every account."""
        with self._locked():
            return {key: state.snapshot() for key, state in self._accounts.items()}

    @property
    def max_accounts(self) -> int:
        """The most accounts this ledger holds at once."""
        return self._max_accounts

    @property
    def max_nonces(self) -> int:
        """The most replay nonces this ledger remembers at once."""
        return self._max_nonces

    @property
    def max_accounts_per_root(self) -> int:
        """The most accounts opened with one root that this ledger holds at once."""
        return self._max_accounts_per_root

    @property
    def max_nonces_per_root(self) -> int:
        """The most replay nonces this ledger remembers for one root at once."""
        return self._max_nonces_per_root

    @property
    def replay_window(self) -> int:
        """How long a nonce is remembered after its timestamp: the longest
        ``replay_window`` of any gate built on this ledger (0 before any)."""
        with self._locked():
            return self._replay_window

    def nonces(self, now: Optional[int] = None) -> int:
        """How many replay nonces are remembered at ``now`` (default: the clock)."""
        when = int(time.time()) if now is None else check_uint(now, 64, "now")
        with self._locked():
            self._prune_nonces_locked(when)
            return self._nonce_count

    def __repr__(self) -> str:
        return f"Ledger(accounts={len(self._accounts)})"

    # -- internal ---------------------------------------------------------

    def _retain(self, replay_window: int) -> None:
        """A gate with ``replay_window`` decides on this ledger: remember every
        nonce at least that long, whichever gate consumed it, so that no gate
        sharing the ledger finds a nonce forgotten while it still counts as fresh."""
        with self._locked():
            self._replay_window = max(self._replay_window, replay_window)

    # -- internal: callers hold the lock ----------------------------------

    def _state_locked(self, account_id: bytes, cap: int) -> _AccountState:
        """The account, or a fresh one with ``cap`` that is not stored yet."""
        state = self._accounts.get(account_id)
        return _AccountState(cap) if state is None else state

    def _reserve_locked(
        self, path: Sequence[PathEntry], amount: int, expires: Optional[Sequence[int]] = None
    ) -> Reservation:
        """Hold ``amount`` on every account of ``path``, or change nothing and
        raise ``BudgetExhaustedError``. Account ``i`` may be forgotten after
        ``expires[i]`` (a link's ``not_after``); without ``expires``, never."""
        until = [NEVER] * len(path) if expires is None else list(expires)
        states: list[tuple[bytes, _AccountState]] = []
        for account_id, cap in path:
            state = self._state_locked(account_id, cap)  # stored only on success
            if state.spent + state.reserved + amount > state.cap:
                raise BudgetExhaustedError(
                    f"account {_short(account_id)} has {state.room()} left of its cap "
                    f"{state.cap}; {amount} requested"
                )
            states.append((account_id, state))
        root = path[0][0]
        new = [i for i, (account_id, _) in enumerate(path) if account_id not in self._accounts]
        if new:
            horizon = self._account_horizon
            if horizon is not None and any(until[i] <= horizon for i in new):
                raise BudgetExhaustedError(
                    "an account on the path expired and was forgotten; it cannot be opened again"
                )
            if (
                len(self._accounts) + len(new) > self._max_accounts
                or self._root_accounts.get(root, 0) + len(new) > self._max_accounts_per_root
            ):
                self._prune_accounts_locked({account_id for account_id, _ in path})
            if len(self._accounts) + len(new) > self._max_accounts:
                raise BudgetExhaustedError(
                    f"the ledger cannot open another account (max_accounts = {self._max_accounts})"
                )
            if self._root_accounts.get(root, 0) + len(new) > self._max_accounts_per_root:
                raise BudgetExhaustedError(
                    f"the ledger cannot open another account under root {_short(root)} "
                    f"(max_accounts_per_root = {self._max_accounts_per_root})"
                )
        for (account_id, state), expiry in zip(states, until):
            if account_id not in self._accounts:
                self._accounts[account_id] = state
                self._account_root[account_id] = root
                self._root_accounts[root] = self._root_accounts.get(root, 0) + 1
            if expiry > self._expires.get(account_id, 0):
                self._expires[account_id] = expiry
                if expiry != NEVER:
                    heapq.heappush(self._account_heap, (expiry, account_id))
            state.reserved += amount
        return Reservation._create(
            self, tuple(state for _, state in states), tuple(account_id for account_id, _ in states), amount
        )

    def _prune_accounts_locked(self, keep: set[bytes]) -> None:
        """Forget accounts whose link expired at or before the latest gate time,
        that hold no reservation and that are not in ``keep`` (the path being
        reserved: its accounts' state was just judged to have room)."""
        heap = self._account_heap
        kept: list[tuple[int, bytes]] = []
        while heap and heap[0][0] <= self._now:
            when, account_id = heapq.heappop(heap)
            state = self._accounts.get(account_id)
            if state is None or self._expires.get(account_id) != when:
                continue  # forgotten already, or it lives longer now
            if state.reserved > 0 or account_id in keep:
                kept.append((when, account_id))
                continue
            del self._accounts[account_id]
            del self._expires[account_id]
            root = self._account_root.pop(account_id)
            left = self._root_accounts[root] - 1
            if left:
                self._root_accounts[root] = left
            else:
                del self._root_accounts[root]
            self._account_horizon = when if self._account_horizon is None else max(self._account_horizon, when)
        for entry in kept:
            heapq.heappush(heap, entry)

    def _forget_earliest_nonce_locked(self, root: bytes, remembered: _RootNonces) -> None:
        """Forget the earliest nonce of ``root`` and raise its horizon to its timestamp."""
        when, nonce = heapq.heappop(remembered.heap)
        del remembered.times[nonce]
        self._nonce_count -= 1
        horizon = self._nonce_horizons.get(root)
        self._nonce_horizons[root] = when if horizon is None else max(horizon, when)
        if not remembered.times:
            del self._nonce_roots[root]
            heapq.heappush(self._emptied, (self._nonce_horizons[root], root))

    def _prune_nonces_locked(self, now: int) -> None:
        """Forget every nonce whose expiry (timestamp + retention, saturating at
        u64::MAX, which no ``now`` passes) is before ``now``."""
        heap, window = self._nonce_heap, self._replay_window
        while heap and heap[0][0] + window < now:
            when, root, nonce = heapq.heappop(heap)
            remembered = self._nonce_roots.get(root)
            if remembered is None or remembered.times.get(nonce) != when:
                continue  # the root forgot it already, to make room
            # Entries leave this heap in (timestamp, root, nonce) order, so this
            # is the root's earliest nonce: the top of its own heap.
            self._forget_earliest_nonce_locked(root, remembered)
        # A root with no nonce left is only its horizon: once that is past the
        # retention (stale at this ``now``), fold it into the global horizon.
        emptied = self._emptied
        while emptied and emptied[0][0] + window < now:
            horizon, root = heapq.heappop(emptied)
            if root not in self._nonce_roots and self._nonce_horizons.get(root) == horizon:
                del self._nonce_horizons[root]
                self._nonce_horizon = horizon if self._nonce_horizon is None else max(self._nonce_horizon, horizon)

    def _seen(self, root: bytes, nonce: bytes, timestamp: int, now: int) -> bool:
        """Whether the nonce would be refused as a replay at ``now``, read only:
        remembered under an expiry not before ``now``, or at or before a horizon."""
        with self._locked():
            remembered = self._nonce_roots.get(root)
            when = None if remembered is None else remembered.times.get(nonce)
            if when is not None and min(when + self._replay_window, U64_MAX) >= now:
                return True
            return self._horizon_covers(root, timestamp)

    def _horizon_covers(self, root: bytes, timestamp: int) -> bool:
        return any(
            horizon is not None and timestamp <= horizon
            for horizon in (self._nonce_horizons.get(root), self._nonce_horizon)
        )

    def _seen_locked(self, root: bytes, nonce: bytes, timestamp: int) -> bool:
        remembered = self._nonce_roots.get(root)
        if remembered is not None and nonce in remembered.times:
            return True
        return self._horizon_covers(root, timestamp)

    def _record_nonce_locked(self, root: bytes, nonce: bytes, timestamp: int) -> None:
        remembered = self._nonce_roots.get(root)
        if remembered is not None and len(remembered.times) >= self._max_nonces_per_root:
            self._forget_earliest_nonce_locked(root, remembered)
        elif self._nonce_count >= self._max_nonces:
            # Take from the root holding the most: one root's flood pushes out
            # its own nonces before anyone else's.
            biggest, its = min(
                self._nonce_roots.items(), key=lambda item: (-len(item[1].times), item[0])
            )
            self._forget_earliest_nonce_locked(biggest, its)
        remembered = self._nonce_roots.setdefault(root, _RootNonces())
        remembered.times[nonce] = timestamp
        heapq.heappush(remembered.heap, (timestamp, nonce))
        heapq.heappush(self._nonce_heap, (timestamp, root, nonce))
        self._nonce_count += 1

    def _admit(
        self,
        path: Sequence[PathEntry],
        expires: Sequence[int],
        amount: int,
        nonce: bytes,
        timestamp: int,
        now: int,
    ) -> tuple[Code, Optional[Reservation]]:
        """Steps 16 and 17 of a gate, under one lock: two requests carrying one
        nonce under one root can never both pass, and only an allowed request
        consumes its nonce. Account ``i`` of ``path`` may be forgotten after
        ``expires[i]``."""
        root = path[0][0]
        with self._locked():
            self._prune_nonces_locked(now)
            if self._seen_locked(root, nonce, timestamp):
                return Code.REPLAY, None
            self._now = max(self._now, now)
            try:
                reservation = self._reserve_locked(path, amount, expires)
            except BudgetExhaustedError:
                return Code.BUDGET_EXHAUSTED, None
            self._record_nonce_locked(root, nonce, timestamp)
            return Code.OK, reservation


def _count(value: object, name: str) -> int:
    """A limit: an integer of at least 1."""
    number = check_uint(value, 64, name)
    if number < 1:
        raise InputError(f"{name}: must be at least 1, got {number}")
    return number


def _forfeit_locked(accounts: Sequence[_AccountState], amount: int) -> None:
    # The money-safe default: the caller may have spent what it reserved.
    for state in accounts:
        state.reserved -= amount
        state.spent = min(state.spent + amount, U64_MAX)


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

    def _check_live_locked(self) -> None:
        if not self._live:
            raise AffineError(
                "this Budget delegated and was replaced by the handle delegate() returned"
            )

    @property
    def path(self) -> list[PathEntry]:
        """The (account id, cap) pairs of this handle, root first."""
        with self._ledger._locked():
            self._check_live_locked()
            return list(self._path)

    def reserve(self, amount: int) -> Reservation:
        """Hold ``amount`` on every account of the path; ``BudgetExhaustedError``
        (and no change) if any account lacks room."""
        amount = check_uint(amount, 64, "amount")
        with self._ledger._locked():
            self._check_live_locked()
            return self._ledger._reserve_locked(self._path, amount)

    def remaining(self) -> int:
        """The most a reservation could hold right now: the least room on the path."""
        with self._ledger._locked():
            self._check_live_locked()
            ledger = self._ledger
            return min(ledger._state_locked(account_id, cap).room() for account_id, cap in self._path)

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
        with ledger._locked():
            self._check_live_locked()
            if any(existing == child_id for existing, _ in self._path):
                raise InputError(f"account_id: {_short(child_id)} is already on the path")
            parent_cap = ledger._state_locked(*self._path[-1]).cap
            if cap > parent_cap:
                raise DelegationError(
                    f"delegation refused: cap {cap} is larger than the parent's {parent_cap}",
                    Code.BUDGET_WIDENED,
                )
            self._live = False
            child_path = [*self._path, (child_id, cap)]
            return Budget._create(ledger, self._path), Budget._create(ledger, child_path)

    def __repr__(self) -> str:
        if not self._live:
            return "Budget(<delegated>)"
        return f"Budget(accounts={len(self._path)}, last={_short(self._path[-1][0])})"


class Reservation(_Affine):
    """An amount held on every account of a path, settled exactly once.

    ``commit(actual)`` charges ``actual`` and releases the rest; ``release()``
    says nothing was spent. Leaving a ``with`` block, or being collected,
    without either forfeits: the held amount counts as spent.
    """

    __slots__ = ("_ledger", "_accounts", "_ids", "_amount", "_settled", "_record")
    _ledger: Ledger
    _accounts: tuple[_AccountState, ...]
    _ids: tuple[bytes, ...]
    _amount: int
    _settled: bool
    # Where the settlement is recorded (a gate's audit log), and the digest of
    # the invocation it settles.
    _record: Optional[tuple[_RecordSink, bytes]]

    def __init__(self) -> None:
        raise TypeError("a Reservation is made by Budget.reserve or a Gate")

    @classmethod
    def _create(
        cls, ledger: Ledger, accounts: tuple[_AccountState, ...], ids: tuple[bytes, ...], amount: int
    ) -> Reservation:
        reservation = object.__new__(cls)
        reservation._ledger = ledger
        reservation._accounts = accounts
        reservation._ids = ids
        reservation._amount = amount
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
        return SettleRecord(kind, self._amount, charged, self._record[1], self._ids).to_bytes()

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
        return self._amount

    @property
    def settled(self) -> bool:
        """Whether this reservation was committed, released or forfeited."""
        return self._settled

    def _settle_locked(self) -> None:
        if self._settled:
            raise AffineError("this Reservation was already committed, released or forfeited")
        self._settled = True

    def commit(self, actual: Optional[int] = None) -> None:
        """Charge ``actual`` (default: the reserved amount) on every account and
        release the rest.

        If ``actual`` exceeds the reservation, the whole of it is still charged
        and the excess recorded as an overrun on every account; then
        ``OverrunError`` is raised (money already spent is never forgotten).
        """
        charged = self._amount if actual is None else check_uint(actual, 64, "actual")
        excess = max(0, charged - self._amount)
        with self._recording():
            with self._ledger._locked():
                self._settle_locked()
                for state in self._accounts:
                    state.reserved -= self._amount
                    # u64 counters, saturating as the core's do (SPEC §8.3).
                    state.spent = min(state.spent + charged, U64_MAX)
                    state.overrun = min(state.overrun + excess, U64_MAX)
            self._write(Settlement.COMMIT, charged)
        if excess:
            raise OverrunError(
                f"committed {charged}, {excess} more than the {self._amount} reserved; "
                "charged in full and recorded as an overrun",
                reserved=self._amount,
                actual=charged,
            )

    def release(self) -> None:
        """Return the whole amount: nothing was spent."""
        with self._recording():
            with self._ledger._locked():
                self._settle_locked()
                for state in self._accounts:
                    state.reserved -= self._amount
            self._write(Settlement.RELEASE, 0)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        with self._recording():
            with self._ledger._locked():
                if self._settled:
                    return
                self._settled = True
                _forfeit_locked(self._accounts, self._amount)
            self._forfeit_record()

    def _forfeit_record(self) -> None:
        # Nobody to report a failed write to (the next append on a broken log
        # fails loudly), as when the core drops a reservation.
        record = self._settlement(Settlement.FORFEIT, self._amount)
        if record is not None and self._record is not None:
            self._record[0]._append_later(record)

    def __del__(self) -> None:
        # No other reference exists, so nothing can settle concurrently; the
        # lock is not taken here (see Ledger._orphans).
        if getattr(self, "_settled", True):
            return
        self._settled = True
        self._ledger._orphans.append((self._accounts, self._amount))
        self._forfeit_record()
        warnings.warn(
            f"a Reservation of {self._amount} was neither committed nor released; "
            "it is forfeited (counted as spent)",
            ResourceWarning,
            source=self,
        )

    def __repr__(self) -> str:
        state = "settled" if self._settled else "open"
        return f"Reservation(amount={self._amount}, {state})"
