"""The gate of SPEC §6 for the reference: one allow/deny decision per request.

A request is a chain plus an invocation signed by the chain's final holder.
``Gate.check_batch`` judges requests in list order, each by SPEC §4 (first
failure wins), and for an allowed request consumes its nonce and reserves its
cost on every link of the chain, in one step under the ledger's lock.

Chain-level rules come from ``_chain`` (the same functions ``verify_chains``
uses), so the gate cannot drift from the verifier. Signatures are verified one
at a time with ``verify``: this is the baseline the native batched gate is
measured against.

Verified-chain cache: an LRU of chain digests (BLAKE3 of the chain bytes) whose
link signatures, ``prev_sig`` links and attenuation all passed. A chain's bytes
fix all three and the trusted set of a gate never changes, so a hit may skip
them; validity time, session and revocation depend on the request and are
checked every time, as are the invocation's signature and ``tail_sig``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Literal, Optional, Union, overload

import numpy as np
import numpy.typing as npt

from .._audit import GateRecord
from .._codes import Code
from .._decision import Decision
from ..errors import InputError, MalformedError
from ._audit import AuditLog, Receipt
from ._batch import as_bytes, batch_items, is_buffer
from ._chain import (
    _key_set,
    attenuation_failure,
    link_signatures_valid,
    links_connected,
    terms_code,
)
from ._ed25519 import verify
from ._hash import blake3_digest
from ._ledger import Ledger, Reservation
from ._wire import INVOKE_DOMAIN, cap_covers, check_fixed, check_uint, parse_chain, parse_invocation

__all__ = ["Gate"]

SESSION_ID_LEN = 16
REVOCATION_ID_LEN = 32
PUBLIC_KEY_LEN = 32


def _chain_items(chains: object) -> list[bytes]:
    """Chain bytes from a list of bytes-like objects or ``Chain`` objects (of
    either implementation: both convert with ``bytes()``)."""
    if isinstance(chains, str) or is_buffer(chains) or not isinstance(chains, Iterable):
        raise InputError(
            f"chains: expected a list of bytes-like or Chain objects, got {type(chains).__name__}"
        )
    items = []
    for i, chain in enumerate(chains):
        if not is_buffer(chain) and hasattr(type(chain), "__bytes__"):
            items.append(bytes(chain))
        else:
            items.append(as_bytes(chain, f"chains[{i}]"))
    return items


class Gate:
    """Decides requests: a chain plus an invocation signed by its final holder.

    ``trusted`` holds the 32-byte issuer keys; an invocation is fresh iff
    ``|timestamp - now| <= skew``; a consumed nonce is remembered until
    ``timestamp + replay_window`` (which must be at least ``2 * skew``);
    ``session`` (16 bytes) is the session id link 0 must carry, if given;
    ``revoked`` holds revocation ids. Gates given one ``ledger`` share its
    accounts and its nonce set; ``ledger=None`` gives the gate a ledger of its
    own. ``cache_size`` bounds the verified-chain cache (0 disables it).
    """

    def __init__(
        self,
        trusted: Iterable[bytes],
        skew: int = 30,
        replay_window: int = 300,
        session: Optional[bytes] = None,
        revoked: Optional[Iterable[bytes]] = (),
        ledger: Optional[Ledger] = None,
        audit: object = None,
        cache_size: int = 100_000,
        max_batch: int = 65_536,
    ) -> None:
        self._trusted = _key_set(trusted, PUBLIC_KEY_LEN, "trusted")
        self._skew = check_uint(skew, 64, "skew")
        self._replay_window = check_uint(replay_window, 64, "replay_window")
        if self._replay_window < 2 * self._skew:
            # A shorter window would forget a nonce while its invocation is
            # still fresh, and the same invocation could be replayed.
            raise InputError(
                f"replay_window: {self._replay_window} is less than 2 * skew "
                f"({2 * self._skew})"
            )
        self._session = None if session is None else check_fixed(session, SESSION_ID_LEN, "session")
        self._revoked = _key_set((), REVOCATION_ID_LEN, "revoked") if revoked is None else _key_set(
            revoked, REVOCATION_ID_LEN, "revoked")
        if ledger is None:
            ledger = Ledger()
        elif not isinstance(ledger, Ledger):
            raise InputError(
                f"ledger: expected a hopgate.reference.Ledger, got {type(ledger).__name__}"
            )
        self._ledger = ledger
        if audit is not None and not isinstance(audit, AuditLog):
            raise InputError(
                f"audit: expected a hopgate.reference.AuditLog, got {type(audit).__name__}"
            )
        self._audit = audit
        self._cache_size = check_uint(cache_size, 64, "cache_size")
        self._max_batch = check_uint(max_batch, 64, "max_batch")
        if self._max_batch < 1:
            raise InputError("max_batch: must be at least 1")
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        # Guards the cache and revoke() (the ledger has its own lock; the two
        # are never held together).
        self._lock = threading.Lock()

    @property
    def ledger(self) -> Ledger:
        """The ledger this gate reserves on and records nonces in."""
        return self._ledger

    @property
    def cache_size(self) -> int:
        """The most verified chains the cache holds."""
        return self._cache_size

    @property
    def max_batch(self) -> int:
        """The most requests one ``check_batch`` call takes."""
        return self._max_batch

    @property
    def cached(self) -> int:
        """How many verified chains the cache holds."""
        with self._lock:
            return len(self._cache)

    def revoke(self, revocation_id: bytes) -> None:
        """Deny, from now on, every chain containing the link with this revocation id."""
        key = check_fixed(revocation_id, REVOCATION_ID_LEN, "revocation_id")
        with self._lock:
            # Copy on write: a check in progress reads one consistent set.
            self._revoked = self._revoked | {key}

    def check(self, chain: object, invocation: object, now: Optional[int] = None) -> Decision:
        """Decide one request; an allowed ``Decision`` carries the reservation."""
        codes, reservations, receipts = self.check_batch([chain], [invocation], now, receipts=True)
        return Decision(Code(int(codes[0])), reservations[0], receipts[0])

    @overload
    def check_batch(
        self,
        chains: Sequence[object],
        invocations: Sequence[object],
        now: Optional[int] = None,
        *,
        receipts: Literal[False] = False,
    ) -> tuple[npt.NDArray[np.uint8], list[Optional[Reservation]]]: ...

    @overload
    def check_batch(
        self,
        chains: Sequence[object],
        invocations: Sequence[object],
        now: Optional[int] = None,
        *,
        receipts: Literal[True],
    ) -> tuple[npt.NDArray[np.uint8], list[Optional[Reservation]], list[Optional[Receipt]]]: ...

    def check_batch(
        self,
        chains: Sequence[object],
        invocations: Sequence[object],
        now: Optional[int] = None,
        *,
        receipts: bool = False,
    ) -> Union[
        tuple[npt.NDArray[np.uint8], list[Optional[Reservation]]],
        tuple[npt.NDArray[np.uint8], list[Optional[Reservation]], list[Optional[Receipt]]],
    ]:
        """Decide requests in list order: one ``Code`` per request (a ``uint8``
        array) and, for each allowed one, its ``Reservation`` (else None). With
        ``receipts=True`` a third list holds each request's audit ``Receipt``
        (None without an audit log).

        ``now`` defaults to the current unix time. Arguments of the wrong shape
        raise ``InputError`` before any request is decided. If the audit log
        cannot be written, every reservation of the batch is released and the
        error raised: nothing is allowed without its record.
        """
        chain_items = _chain_items(chains)
        invocation_items = batch_items(invocations, None, "invocations")
        if len(chain_items) != len(invocation_items):
            raise InputError(
                f"invocations: {len(invocation_items)} items, expected "
                f"{len(chain_items)} (one per chain)"
            )
        if len(chain_items) > self._max_batch:
            raise InputError(
                f"requests: {len(chain_items)} requests in one batch, more than "
                f"max_batch = {self._max_batch}"
            )
        when = int(time.time()) if now is None else check_uint(now, 64, "now")
        codes = np.zeros(len(chain_items), dtype=np.uint8)
        reservations: list[Optional[Reservation]] = []
        for i, (raw_chain, raw_invocation) in enumerate(zip(chain_items, invocation_items)):
            code, reservation = self._decide(raw_chain, raw_invocation, when)
            codes[i] = code
            reservations.append(reservation)
        audit_receipts: list[Optional[Receipt]] = [None] * len(chain_items)
        if self._audit is not None:
            records = [
                GateRecord(Code(int(code)), when, blake3_digest(c), blake3_digest(i)).to_bytes()
                for code, c, i in zip(codes, chain_items, invocation_items)
            ]
            try:
                audit_receipts = list(self._audit.append_many(records))
            except BaseException:
                for r in reservations:
                    if r is not None:
                        r.release()
                raise
        if receipts:
            return codes, reservations, audit_receipts
        return codes, reservations

    # -- one request, SPEC §4 order ---------------------------------------

    def _decide(
        self, raw_chain: bytes, raw_invocation: bytes, now: int
    ) -> tuple[Code, Optional[Reservation]]:
        try:  # (a)
            links = parse_chain(raw_chain)
            invocation = parse_invocation(raw_invocation)
        except MalformedError:
            return Code.MALFORMED, None
        if links[0].issuer not in self._trusted:  # (b)
            return Code.UNTRUSTED_ISSUER, None
        last = links[-1]
        digest = blake3_digest(raw_chain)
        cached = self._cache_hit(digest)

        # (c) the invocation is signed by the holder named in the last link.
        if not cached and not link_signatures_valid(links):
            return Code.BAD_SIGNATURE, None
        if not verify(INVOKE_DOMAIN + invocation.body, invocation.signature, last.holder):
            return Code.BAD_SIGNATURE, None
        # (d)
        if not cached and not links_connected(links):
            return Code.BROKEN_LINK, None
        if invocation.tail_sig != last.signature:
            return Code.BROKEN_LINK, None

        # (e) Attenuation is judged for all links first, to decide caching (a
        # chain that is merely expired still goes in the cache); if it fails,
        # terms_code finds the failure again at its place in SPEC order.
        attenuated = cached or all(
            attenuation_failure(parent, child) is None
            for parent, child in zip(links, links[1:])
        )
        if attenuated and not cached:
            self._cache_insert(digest)
        code = terms_code(
            links, now, self._session, self._revoked, check_attenuation=not attenuated
        )
        if code is not Code.OK:
            return code, None

        # (f)
        if not any(cap_covers(cap, (invocation.resource, invocation.ability)) for cap in last.caps):
            return Code.SCOPE_DENIED, None
        if invocation.cost > last.budget:
            return Code.COST_EXCEEDS_GRANT, None
        if abs(invocation.timestamp - now) > self._skew:
            return Code.STALE_INVOCATION, None
        # (f) replay and (g) the reservation, atomically in the ledger.
        path = [(blake3_digest(link.signature), link.budget) for link in links]
        return self._ledger._admit(
            path,
            [link.not_after for link in links],
            invocation.cost,
            invocation.nonce,
            # u64 arithmetic, saturating, as the core does.
            expiry=min(invocation.timestamp + self._replay_window, (1 << 64) - 1),
            now=now,
        )

    # -- verified-chain cache (LRU) ---------------------------------------

    def _cache_hit(self, digest: bytes) -> bool:
        with self._lock:
            if digest not in self._cache:
                return False
            self._cache.move_to_end(digest)
            return True

    def _cache_insert(self, digest: bytes) -> None:
        if self._cache_size == 0:
            return
        with self._lock:
            self._cache[digest] = None
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def __repr__(self) -> str:
        return (
            f"Gate(trusted={len(self._trusted)}, skew={self._skew}, "
            f"replay_window={self._replay_window}, {self._ledger!r})"
        )

