"""Where a reference ledger keeps its state (SPEC §5.8): the interface its stores share.

A ``Ledger`` talks to exactly one store through the methods of ``Store``; the
gate, ``Budget`` and ``Reservation`` never see which one it is:

* ``MemoryStore`` (``_memory``): ``Ledger()``, the accounts and nonces of one
  process, with the bounds and horizons of SPEC §5.5 and §5.6;
* ``SqliteStore`` (``_sqlite``): ``Ledger.open("sqlite:...")``, one file shared
  by the processes of one host;
* ``RedisStore`` (``_redis``): ``Ledger.open("redis://...")`` and
  ``"redis+cluster://..."``, a server shared by a fleet.

The two durable stores apply the same rules (``_durable``) to the state they
read inside one transaction. This module also reads the URLs of
``Ledger.open``, strictly: anything SPEC §5.8 does not name is an ``InputError``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Tuple

from .._audit import Settlement
from .._codes import Code
from .._decision import Account
from ..errors import InputError

__all__ = ["Hold", "PathEntry", "Step", "Store", "open_store"]

U64_MAX = (1 << 64) - 1
#: The expiry of an account that is never forgotten (opened by a budget).
NEVER = U64_MAX

#: One step of a path: (account id, cap).
PathEntry = Tuple[bytes, int]


def short_id(account_id: bytes) -> str:
    """An account id as error messages show it."""
    return account_id.hex()[:16] + "..."


@dataclass(frozen=True)
class Step:
    """A gate request that reached the ledger step (SPEC §5.7): reserve ``cost``
    on ``path`` (account ``i`` closing at ``expires[i]``, its link's ``not_after``)
    and consume ``nonce`` under the path's root."""

    path: Tuple[PathEntry, ...]
    expires: Tuple[int, ...]
    cost: int
    nonce: bytes
    timestamp: int

    @property
    def root(self) -> bytes:
        return self.path[0][0]


class Hold:
    """What a store keeps to settle one reservation later; each store extends it."""

    __slots__ = ("ids", "amount")

    def __init__(self, ids: Tuple[bytes, ...], amount: int) -> None:
        self.ids = ids
        self.amount = amount


class Store(ABC):
    """The state of one ledger. Every method is atomic: it happens whole or, for a
    durable store that fails, raises ``StoreError`` and does nothing."""

    #: ``Ledger.store``: "memory", "sqlite", "redis" or "redis-cluster".
    kind: str = ""
    #: The URL a durable store was opened with.
    url: str = ""

    @property
    def lease(self) -> Optional[float]:
        """Seconds an unsettled reservation lives before it is forfeited, or None
        where reservations have no lease (a memory ledger)."""
        return None

    @abstractmethod
    def retain(self, replay_window: int) -> None:
        """A gate with this window decides on the ledger (retention never falls)."""

    @property
    @abstractmethod
    def replay_window(self) -> int:
        """The longest ``replay_window`` of the gates built on this ledger."""

    @abstractmethod
    def admit(self, steps: Sequence[Step], now: int) -> list[tuple[Code, Optional[Hold]]]:
        """The ledger steps of a gate call, in order: each 0 with its reservation,
        16 or 17 (SPEC §5.7, §5.8)."""

    @abstractmethod
    def seen(self, step: Step, now: int) -> bool:
        """Whether ``step`` would be refused as a replay at ``now``, read only."""

    @abstractmethod
    def reserve(self, path: Sequence[PathEntry], amount: int) -> Hold:
        """A budget's reservation (no expiry, no clock); ``BudgetExhaustedError``
        and no change if an account lacks room."""

    @abstractmethod
    def state(self, path: Sequence[PathEntry]) -> list[Account]:
        """Each account of ``path`` as stored, or as the path would open it."""

    @abstractmethod
    def settle(self, hold: Hold, kind: Settlement, charged: int) -> None:
        """Settle ``hold`` (SPEC §5.3) charging ``charged``; a durable store raises
        ``LeaseExpiredError`` for one its lease forfeited."""

    @abstractmethod
    def abandon(self, hold: Hold) -> None:
        """``hold`` was garbage-collected unsettled: forfeit it, without blocking
        (the caller may be the garbage collector, anywhere in any thread)."""

    @abstractmethod
    def account(self, account_id: bytes, root: Optional[bytes]) -> Optional[Account]:
        """One account, or None."""

    @abstractmethod
    def accounts(self) -> dict[bytes, Account]:
        """Every account, by id."""

    @abstractmethod
    def nonces(self, now: int) -> int:
        """How many nonces are held at ``now``."""

    def close(self) -> None:
        """Let go of the store's connections."""


# -- Ledger.open(url) --------------------------------------------------------


def positive_seconds(value: object, name: str) -> float:
    """``lease`` and ``timeout``: a positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name}: expected a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"{name}: must be a positive, finite number of seconds, got {value!r}")
    return seconds


def sqlite_path(url: str) -> str:
    """The file of ``sqlite:///abs/path.db`` or ``sqlite:relative/path.db``."""
    rest = url[len("sqlite:"):]
    if rest.startswith("//"):
        if rest == "//":
            raise InputError(f"url: {url!r} names no file")
        if not rest.startswith("///"):
            raise InputError(
                f"url: {url!r} names a host; a SQLite file is sqlite:///abs/path.db "
                "or sqlite:relative/path.db"
            )
        path = rest[2:]
    elif rest.startswith("/"):
        raise InputError(f"url: {url!r}: an absolute path is written sqlite:///abs/path.db")
    else:
        path = rest
    if not path.strip("/"):
        raise InputError(f"url: {url!r} names no file")
    if path.endswith("/"):
        raise InputError(f"url: {url!r} names a directory, not a file")
    if "\x00" in path:
        raise InputError("url: the path contains a NUL character")
    if "?" in path or "#" in path:
        raise InputError(f"url: {url!r}: a SQLite URL takes no query and no fragment")
    if path == ":memory:" or path.startswith("file:"):
        # sqlite3 would open a private in-memory database or read a URI: neither
        # is a file that other processes share.
        raise InputError(f"url: {url!r} is not a file that processes can share")
    return path


def redis_address(url: str, *, cluster: bool) -> tuple[str, int, int, int]:
    """(host, port, db, replicas) of ``redis://host:port/db[?replicas=N]`` or
    ``redis+cluster://host:port``."""
    from urllib.parse import parse_qsl, urlsplit

    form = "redis+cluster://host:port" if cluster else "redis://host:port/db"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"url: {url!r} is not {form}: {exc}") from None
    if parts.username is not None or parts.password is not None:
        raise InputError(f"url: {url!r}: credentials are not part of {form}")
    replicas = 0
    if parts.fragment or "#" in url:
        raise InputError(f"url: {url!r}: {form} takes no fragment")
    if parts.query:
        query = parse_qsl(parts.query, keep_blank_values=True)
        if cluster or [name for name, _ in query] != ["replicas"]:
            raise InputError(f"url: {url!r}: the only query is replicas=N, on redis://host:port/db")
        count = query[0][1]
        if not (count.isascii() and count.isdigit()) or len(count) > 9:
            raise InputError(f"url: {url!r}: replicas must be a count of replicas, got {count!r}")
        replicas = int(count)
    host = parts.hostname
    if not host:
        raise InputError(f"url: {url!r} names no host ({form})")
    if port is None or port == 0:
        raise InputError(f"url: {url!r} names no port ({form})")
    if cluster:
        if parts.path:
            raise InputError(f"url: {url!r}: a cluster has no database number ({form})")
        return host, port, 0, 0
    digits = parts.path[1:] if parts.path.startswith("/") else ""
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        raise InputError(f"url: {url!r} names no database number ({form})")
    return host, port, int(digits), replicas


def open_store(url: object, lease: object, timeout: object) -> Store:
    """The durable store a URL names (SPEC §5.8)."""
    if not isinstance(url, str):
        raise InputError(f"url: expected str, got {type(url).__name__}")
    lease_s = positive_seconds(lease, "lease")
    timeout_s = positive_seconds(timeout, "timeout")
    scheme = url.partition(":")[0]
    store: Store
    if scheme == "sqlite":
        from ._sqlite import SqliteStore

        store = SqliteStore(sqlite_path(url), lease=lease_s, timeout=timeout_s)
    elif scheme in ("redis", "redis+cluster"):
        cluster = scheme == "redis+cluster"
        host, port, db, replicas = redis_address(url, cluster=cluster)
        # Imported here: redis-py is needed only by a ledger that uses it.
        from ._redis import RedisStore

        store = RedisStore(host, port, db, cluster=cluster, lease=lease_s, timeout=timeout_s,
                           replicas=replicas)
    else:
        raise InputError(
            f"url: unknown store {scheme!r}; expected sqlite:, redis:// or redis+cluster://"
        )
    store.url = url
    return store
