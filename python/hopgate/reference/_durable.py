"""The rules of SPEC §5.8 that both durable stores apply, to one root's state.

A store transaction reads what it needs of a root into a ``RootState``: the
root's clock and retention, the accounts of the paths at hand, which of the
nonces asked about the store holds. The rules below run on it with Python's
exact integers, then the store writes back what changed: SQLite inside one
``BEGIN IMMEDIATE`` transaction, Redis inside one ``WATCH``/``MULTI``/``EXEC``.
The transaction is the atomic step of SPEC §5.8; the rules live here once, so
that the two stores cannot drift apart.

What differs from a memory ledger (SPEC §5.5 to §5.7):

* Each root has a clock, raised by every gate step on it to the step's ``now``,
  and a retention, raised to the ledger's ``replay_window``. A nonce counts as
  seen when the store holds it, or when ``timestamp + retention < clock``
  (saturating): it may have been forgotten. A link whose ``not_after`` is at or
  before the clock is closed: nothing is reserved through it any more.
* Every reservation has a 16-byte random id and a lease. One whose lease ended
  unsettled is forfeited (``spent += amount``) by the next step on its root, and
  how each reservation was settled is kept for ``SETTLED_MEMORY``, so that a
  settlement retried after a lost reply changes nothing, and a settlement after
  the lease is refused with ``LeaseExpiredError``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

from .._audit import Settlement
from .._codes import Code
from .._decision import Account
from ..errors import AffineError, BudgetExhaustedError, LeaseExpiredError
from ._store import U64_MAX, Hold, PathEntry, Step, Store, short_id

__all__ = [
    "KIND_LETTERS",
    "RESERVATION_ID_LEN",
    "SETTLED_MEMORY_MS",
    "DurableHold",
    "Lease",
    "RootState",
    "Row",
]

#: How long a store remembers how a reservation was settled (24 hours).
SETTLED_MEMORY_MS = 24 * 60 * 60 * 1000
RESERVATION_ID_LEN = 16
#: A settlement as the stores write it.
KIND_LETTERS = {Settlement.COMMIT: "C", Settlement.RELEASE: "R", Settlement.FORFEIT: "F"}
_KIND_NAMES = {"C": "committed", "R": "released", "F": "forfeited"}


class DurableStore(Store):
    """What a durable store keeps of this process: its lease on reservations, and the
    longest replay window of its gates (each root keeps the longest of every process
    that stepped on it)."""

    def __init__(self, lease: float) -> None:
        self._lease = lease
        self._retention = 0
        self._lock = threading.Lock()

    @property
    def lease(self) -> Optional[float]:
        return self._lease

    def retain(self, replay_window: int) -> None:
        with self._lock:
            self._retention = max(self._retention, replay_window)

    @property
    def replay_window(self) -> int:
        return self._retention


@dataclass
class Row:
    """One stored account: its four counters and when it closes."""

    cap: int
    spent: int = 0
    reserved: int = 0
    overrun: int = 0
    expires: int = 0

    def account(self) -> Account:
        return Account(self.cap, self.spent, self.reserved, self.overrun)


@dataclass(frozen=True)
class Lease:
    """A stored reservation: its id, amount and path (account ids, root first)."""

    rid: bytes
    amount: int
    ids: tuple[bytes, ...]


class DurableHold(Hold):
    """A reservation of a durable store: the root and id it is stored under."""

    __slots__ = ("root", "rid")

    def __init__(self, root: bytes, rid: bytes, ids: tuple[bytes, ...], amount: int) -> None:
        super().__init__(ids, amount)
        self.root = root
        self.rid = rid


@dataclass
class RootState:
    """One root as read inside one store transaction, and what to write back.

    ``accounts`` holds the rows read (an account absent from it is not opened),
    ``held`` the nonces asked about that the store holds. The rules record their
    effects in ``changed`` (account ids), ``recorded`` (nonces), ``opened``
    (reservations with their deadlines, ms) and ``closed`` (reservation id ->
    settlement letter), and set ``ticked`` when the clock or retention rose.
    """

    root: bytes
    clock: int
    retention: int
    accounts: dict[bytes, Row]
    held: set[bytes]
    ticked: bool = False
    changed: set[bytes] = field(default_factory=set)
    recorded: list[tuple[bytes, int]] = field(default_factory=list)
    opened: list[tuple[Lease, int]] = field(default_factory=list)
    closed: dict[bytes, str] = field(default_factory=dict)

    @property
    def dirty(self) -> bool:
        return bool(self.ticked or self.changed or self.recorded or self.opened or self.closed)

    def tick(self, now: int, retention: int) -> None:
        """A gate step at ``now`` on a ledger keeping nonces ``retention`` seconds.
        The root's clock and retention are written back even when they did not
        rise: every gate step on a root writes it (Redis watches it)."""
        # The threshold clock - retention never moves back: what it passed may be
        # forgotten, so a longer window counts only from there (SPEC §5.8).
        threshold = max(self.clock - self.retention, 0)
        self.clock = max(self.clock, now)
        self.retention = max(self.retention, min(retention, self.clock - threshold))
        self.ticked = True

    def seen(self, nonce: bytes, timestamp: int) -> bool:
        """Held, or so old that it may have been forgotten."""
        return nonce in self.held or min(timestamp + self.retention, U64_MAX) < self.clock

    def admit(self, step: Step, deadline: int) -> tuple[Code, Optional[bytes]]:
        """A gate's ledger step after ``tick``: 16, 17, or 0 with the id of the
        reservation (lease until ``deadline``, ms)."""
        if self.seen(step.nonce, step.timestamp):
            return Code.REPLAY, None
        if any(expiry <= self.clock for expiry in step.expires):
            return Code.BUDGET_EXHAUSTED, None
        try:
            rid = self.reserve(step.path, step.cost, step.expires, deadline)
        except BudgetExhaustedError:
            return Code.BUDGET_EXHAUSTED, None
        self.held.add(step.nonce)
        self.recorded.append((step.nonce, step.timestamp))
        return Code.OK, rid

    def reserve(
        self, path: Sequence[PathEntry], amount: int, expires: Sequence[int], deadline: int
    ) -> bytes:
        """Hold ``amount`` on every account of ``path`` (account ``i`` closing at
        ``expires[i]``), or change nothing and raise ``BudgetExhaustedError``."""
        rows = []
        for account_id, cap in path:
            row = self.accounts.get(account_id)
            if row is None:
                row = Row(cap)  # stored only if the whole path has room
            if row.spent + row.reserved + amount > row.cap:
                room = max(0, row.cap - row.spent - row.reserved)
                raise BudgetExhaustedError(
                    f"account {short_id(account_id)} has {room} left of its cap "
                    f"{row.cap}; {amount} requested"
                )
            rows.append(row)
        for (account_id, _), row, expiry in zip(path, rows, expires):
            row.reserved += amount  # at most cap: cannot pass u64
            row.expires = max(row.expires, expiry)
            self.accounts[account_id] = row
            self.changed.add(account_id)
        rid = os.urandom(RESERVATION_ID_LEN)
        self.opened.append((Lease(rid, amount, tuple(account_id for account_id, _ in path)), deadline))
        return rid

    def forfeit(self, leases: Iterable[Lease]) -> None:
        """These leases ended unsettled: their amounts count as spent."""
        for lease in leases:
            self._close(lease, "F", lease.amount)

    def settle(
        self, rid: bytes, lease: Optional[Lease], done: Optional[str], kind: Settlement, charged: int
    ) -> None:
        """Settle the reservation ``rid``: ``lease`` is it as stored (None once
        settled or forgotten), ``done`` how it was settled (None if unknown).

        The same settlement again changes nothing; after a forfeit,
        ``LeaseExpiredError``; after the other of commit and release,
        ``AffineError``. Neither changes anything."""
        letter = KIND_LETTERS[kind]
        done = self.closed.get(rid, done)
        if lease is not None and rid not in self.closed:
            self._close(lease, letter, charged)
        elif done == letter or (kind is Settlement.FORFEIT and done is not None):
            return
        elif done is None or done == "F":
            raise LeaseExpiredError(
                "the reservation's lease ended before it was settled: it was forfeited "
                "and its amount counts as spent"
            )
        else:
            raise AffineError(f"this reservation was already {_KIND_NAMES[done]}")

    def _close(self, lease: Lease, letter: str, charged: int) -> None:
        # SPEC §5.3: reserved -= amount; spent += charged and any excess is an
        # overrun, both saturating (§8.3). An account missing here was forgotten
        # with its root: there is nothing left to charge.
        excess = max(0, charged - lease.amount)
        for account_id in lease.ids:
            row = self.accounts.get(account_id)
            if row is None:
                continue
            row.reserved = max(0, row.reserved - lease.amount)
            row.spent = min(row.spent + charged, U64_MAX)
            row.overrun = min(row.overrun + excess, U64_MAX)
            self.changed.add(account_id)
        self.closed[lease.rid] = letter
