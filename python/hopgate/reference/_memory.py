"""The memory store of a reference ``Ledger()`` (SPEC §5.1 to §5.7): accounts,
reservations and replay nonces in the memory of one process.

One ``threading.Lock`` guards all of its state: the accounts and the replay
nonces that gates sharing the ledger consult. Holding it across the whole
check-then-update of a reservation is what makes a reservation atomic and
linearizable.

Rules of SPEC §5.1 and §5.2 that this module implements:

* An account is opened by the first reservation on it that succeeds, with the
  cap its path names (``Ledger.budget`` and ``Budget.delegate`` open nothing),
  so a refused reservation leaves the ledger exactly as it was. Until then the
  path's cap stands in for it (``remaining``, ``delegate``).
* An account that already exists keeps its cap, whatever cap a later path names.

Each account remembers the root of the path that opened it, and replay nonces
are kept per root, so that one grant's traffic cannot crowd out what every
other grant needs.

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
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Optional

from .._audit import Settlement
from .._codes import Code
from .._decision import Account
from ..errors import BudgetExhaustedError
from ._store import NEVER, U64_MAX, Hold, PathEntry, Step, Store, short_id

__all__ = ["MemoryStore"]


class _AccountState:
    """The mutable state of one account; only touched with the store's lock held."""

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


class _RootNonces:
    """The nonces one root remembers: nonce -> timestamp, and a min-heap of
    (timestamp, nonce) holding exactly the same entries, earliest first."""

    __slots__ = ("times", "heap")

    def __init__(self) -> None:
        self.times: dict[bytes, int] = {}
        self.heap: list[tuple[int, bytes]] = []


class MemoryHold(Hold):
    """A reservation of a memory ledger: the very accounts it holds its amount on."""

    __slots__ = ("accounts",)

    def __init__(self, ids: tuple[bytes, ...], amount: int, accounts: tuple[_AccountState, ...]) -> None:
        super().__init__(ids, amount)
        self.accounts = accounts


def _forfeit_locked(accounts: Sequence[_AccountState], amount: int) -> None:
    # The money-safe default: the caller may have spent what it reserved.
    for state in accounts:
        state.reserved -= amount
        state.spent = min(state.spent + amount, U64_MAX)


class MemoryStore(Store):
    """In-process accounts (cap, spent, reserved, overrun) keyed by 32-byte ids."""

    kind = "memory"

    def __init__(
        self,
        *,
        max_accounts: int,
        max_nonces: int,
        max_accounts_per_root: int,
        max_nonces_per_root: int,
    ) -> None:
        self.max_accounts = max_accounts
        self.max_nonces = max_nonces
        self.max_accounts_per_root = max_accounts_per_root
        self.max_nonces_per_root = max_nonces_per_root
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
        self._orphans: deque[MemoryHold] = deque()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            while self._orphans:
                orphan = self._orphans.popleft()
                _forfeit_locked(orphan.accounts, orphan.amount)
            yield

    # -- Store ----------------------------------------------------------------

    def retain(self, replay_window: int) -> None:
        with self._locked():
            self._replay_window = max(self._replay_window, replay_window)

    @property
    def replay_window(self) -> int:
        with self._locked():
            return self._replay_window

    def admit(self, steps: Sequence[Step], now: int) -> list[tuple[Code, Optional[Hold]]]:
        return [self._admit(step, now) for step in steps]

    def _admit(self, step: Step, now: int) -> tuple[Code, Optional[Hold]]:
        """Steps 16 and 17 of a gate, under one lock: two requests carrying one
        nonce under one root can never both pass, and only an allowed request
        consumes its nonce."""
        root = step.root
        with self._locked():
            self._prune_nonces_locked(now)
            if self._seen_locked(root, step.nonce, step.timestamp):
                return Code.REPLAY, None
            self._now = max(self._now, now)
            try:
                hold = self._reserve_locked(step.path, step.cost, step.expires)
            except BudgetExhaustedError:
                return Code.BUDGET_EXHAUSTED, None
            self._record_nonce_locked(root, step.nonce, step.timestamp)
            return Code.OK, hold

    def seen(self, step: Step, now: int) -> bool:
        """Remembered under an expiry not before ``now``, or at or before a horizon."""
        root = step.root
        with self._locked():
            remembered = self._nonce_roots.get(root)
            when = None if remembered is None else remembered.times.get(step.nonce)
            if when is not None and min(when + self._replay_window, U64_MAX) >= now:
                return True
            return self._horizon_covers(root, step.timestamp)

    def reserve(self, path: Sequence[PathEntry], amount: int) -> Hold:
        with self._locked():
            return self._reserve_locked(path, amount)

    def state(self, path: Sequence[PathEntry]) -> list[Account]:
        with self._locked():
            return [self._state_locked(account_id, cap).snapshot() for account_id, cap in path]

    def settle(self, hold: Hold, kind: Settlement, charged: int) -> None:
        assert isinstance(hold, MemoryHold)
        amount = hold.amount
        with self._locked():
            if kind is Settlement.FORFEIT:
                _forfeit_locked(hold.accounts, amount)
                return
            excess = max(0, charged - amount)
            for state in hold.accounts:
                state.reserved -= amount
                # u64 counters, saturating as the core's do (SPEC §8.3).
                state.spent = min(state.spent + charged, U64_MAX)
                state.overrun = min(state.overrun + excess, U64_MAX)

    def abandon(self, hold: Hold) -> None:
        # The garbage collector may run this while this very thread holds the
        # (non-reentrant) lock, so it only queues (deque.append is atomic);
        # whoever takes the lock next applies the queue first.
        assert isinstance(hold, MemoryHold)
        self._orphans.append(hold)

    def account(self, account_id: bytes, root: Optional[bytes]) -> Optional[Account]:
        with self._locked():
            state = self._accounts.get(account_id)
            if state is None or (root is not None and self._account_root[account_id] != root):
                return None
            return state.snapshot()

    def accounts(self) -> dict[bytes, Account]:
        with self._locked():
            return {key: state.snapshot() for key, state in self._accounts.items()}

    def nonces(self, now: int) -> int:
        with self._locked():
            self._prune_nonces_locked(now)
            return self._nonce_count

    def size(self) -> int:
        """How many accounts are held."""
        return len(self._accounts)

    # -- callers hold the lock ------------------------------------------------

    def _state_locked(self, account_id: bytes, cap: int) -> _AccountState:
        """The account, or a fresh one with ``cap`` that is not stored yet."""
        state = self._accounts.get(account_id)
        return _AccountState(cap) if state is None else state

    def _reserve_locked(
        self, path: Sequence[PathEntry], amount: int, expires: Optional[Sequence[int]] = None
    ) -> MemoryHold:
        """Hold ``amount`` on every account of ``path``, or change nothing and
        raise ``BudgetExhaustedError``. Account ``i`` may be forgotten after
        ``expires[i]`` (a link's ``not_after``); without ``expires``, never."""
        until = [NEVER] * len(path) if expires is None else list(expires)
        states: list[tuple[bytes, _AccountState]] = []
        for account_id, cap in path:
            state = self._state_locked(account_id, cap)  # stored only on success
            if state.spent + state.reserved + amount > state.cap:
                raise BudgetExhaustedError(
                    f"account {short_id(account_id)} has {state.room()} left of its cap "
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
                len(self._accounts) + len(new) > self.max_accounts
                or self._root_accounts.get(root, 0) + len(new) > self.max_accounts_per_root
            ):
                self._prune_accounts_locked({account_id for account_id, _ in path})
            if len(self._accounts) + len(new) > self.max_accounts:
                raise BudgetExhaustedError(
                    f"the ledger cannot open another account (max_accounts = {self.max_accounts})"
                )
            if self._root_accounts.get(root, 0) + len(new) > self.max_accounts_per_root:
                raise BudgetExhaustedError(
                    f"the ledger cannot open another account under root {short_id(root)} "
                    f"(max_accounts_per_root = {self.max_accounts_per_root})"
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
        return MemoryHold(
            tuple(account_id for account_id, _ in states), amount, tuple(state for _, state in states)
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
        if remembered is not None and len(remembered.times) >= self.max_nonces_per_root:
            self._forget_earliest_nonce_locked(root, remembered)
        elif self._nonce_count >= self.max_nonces:
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
