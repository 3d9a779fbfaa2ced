"""The gate of SPEC §6 for the reference: one allow/deny decision per request.

A request is a chain plus an invocation signed by the chain's final holder.
``Gate.check_batch`` judges requests in list order, each by SPEC §4 (first
failure wins), and for an allowed request consumes its nonce and reserves its
cost on every link of the chain, in one atomic step of the ledger. The requests
of a call that reach the ledger step go to the ledger together, in input order,
so that a durable store takes the whole call in one transaction per root.

The server, not the client, says what a request is: a gate may be given the
request's body (``payload``), whose BLAKE3 must be the invocation's signed
``payload_digest`` (else ``BAD_SIGNATURE``, judged right after the signatures),
and what the route requires (``require=(ability, resource, price)``): the
invocation must name exactly that ability and resource (else ``SCOPE_DENIED``,
judged before the last link's scope) and sign a cost of at least ``price``
(else ``COST_BELOW_PRICE``, judged after ``COST_EXCEEDS_GRANT`` and before
``STALE_INVOCATION``). ``Gate.precheck`` runs every step up to the replay
check (read only) and consumes, reserves and records nothing.

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
from contextlib import suppress
from typing import Literal, Optional, Union, overload

import numpy as np
import numpy.typing as npt

from .._audit import GateRecord
from .._codes import Code
from .._decision import Decision, Requirement
from ..errors import InputError, MalformedError, StoreError
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
from ._store import Step
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


def _payload(value: object, what: str) -> Optional[bytes]:
    return None if value is None else as_bytes(value, what)


def _requirement(value: object, what: str) -> Optional[Requirement]:
    if value is None:
        return None
    if not isinstance(value, tuple) or len(value) != 3:
        raise InputError(
            f"{what}: expected None or an (ability, resource, price) tuple, got {type(value).__name__}"
        )
    ability, resource, price = value
    for part, name in ((ability, "ability"), (resource, "resource")):
        if not isinstance(part, str):
            raise InputError(f"{what}.{name}: expected str, got {type(part).__name__}")
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate names nothing an invocation can carry (its strings
            # are UTF-8), and the native module cannot hold it: refused alike.
            raise InputError(f"{what}.{name}: not encodable as UTF-8") from None
    return ability, resource, check_uint(price, 64, f"{what}.price")


def _per_request(values: object, count: int, what: str) -> list[object]:
    """``payloads`` or ``requires``: None, or one entry per request."""
    if values is None:
        return [None] * count
    if not isinstance(values, (list, tuple)):
        raise InputError(
            f"{what}: expected None or a list with one entry per request, got {type(values).__name__}"
        )
    if len(values) != count:
        raise InputError(f"{what}: {len(values)} items, expected {count} (one per request)")
    return list(values)


class Gate:
    """Decides requests: a chain plus an invocation signed by its final holder.

    ``trusted`` holds the 32-byte issuer keys; an invocation is fresh iff
    ``|timestamp - now| <= skew``; a consumed nonce is remembered at least until
    ``timestamp + replay_window`` (which must be at least ``2 * skew``);
    ``session`` (16 bytes) is the session id link 0 must carry, if given;
    ``revoked`` holds revocation ids. Gates given one ``ledger`` share its
    accounts and its nonces; ``ledger=None`` gives the gate a ledger of its
    own. ``cache_size`` bounds the verified-chain cache (0 disables it).

    A consumed nonce is remembered by the ledger for the longest
    ``replay_window`` of the gates built on it, so a nonce consumed through a
    short-window gate is still refused by a long-window one.
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
        # Last, once nothing can refuse the gate: a gate that was never built
        # does not lengthen the ledger's memory.
        ledger._retain(self._replay_window)

    @property
    def audit(self) -> Optional[AuditLog]:
        """The audit log this gate appends to, or None."""
        return self._audit

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

    def check(
        self,
        chain: object,
        invocation: object,
        now: Optional[int] = None,
        *,
        payload: object = None,
        require: Optional[Requirement] = None,
    ) -> Decision:
        """Decide one request; an allowed ``Decision`` carries the reservation.

        ``payload`` (bytes-like): the request body, which the invocation's
        ``payload_digest`` must cover. ``require=(ability, resource, price)``:
        what the server asks of this request. A durable ledger's store that
        fails raises ``StoreError``: nothing is allowed.
        """
        chain_items, invocation_items, when = self._requests([chain], [invocation], now)
        payloads = [_payload(payload, "payload")]
        requires = [_requirement(require, "require")]
        codes, reservations, receipts = self._run(
            chain_items, invocation_items, when, payloads, requires
        )
        return Decision(Code(int(codes[0])), reservations[0], receipts[0])

    def precheck(
        self,
        chain: object,
        invocation: object,
        now: Optional[int] = None,
        *,
        require: Optional[Requirement] = None,
    ) -> Code:
        """The code ``check`` would give if the budget step passed: every step up
        to and including the replay check (read only), without a payload. It
        consumes no nonce, reserves nothing and writes no audit record (a server
        can refuse early, before reading a body, a replayed request included).
        A durable ledger's store that fails raises ``StoreError``."""
        chain_items, invocation_items, when = self._requests([chain], [invocation], now)
        requirement = _requirement(require, "require")
        verdict = self._judge(chain_items[0], invocation_items[0], when, None, requirement)
        if isinstance(verdict, Step):
            # Read only: a remembered nonce, or one the ledger may have forgotten.
            return Code.REPLAY if self._ledger._seen(verdict, when) else Code.OK
        return verdict

    @overload
    def check_batch(
        self,
        chains: Sequence[object],
        invocations: Sequence[object],
        now: Optional[int] = None,
        *,
        payloads: Optional[Sequence[object]] = None,
        requires: Optional[Sequence[Optional[Requirement]]] = None,
        receipts: Literal[False] = False,
    ) -> tuple[npt.NDArray[np.uint8], list[Optional[Reservation]]]: ...

    @overload
    def check_batch(
        self,
        chains: Sequence[object],
        invocations: Sequence[object],
        now: Optional[int] = None,
        *,
        payloads: Optional[Sequence[object]] = None,
        requires: Optional[Sequence[Optional[Requirement]]] = None,
        receipts: Literal[True],
    ) -> tuple[npt.NDArray[np.uint8], list[Optional[Reservation]], list[Optional[Receipt]]]: ...

    def check_batch(
        self,
        chains: Sequence[object],
        invocations: Sequence[object],
        now: Optional[int] = None,
        *,
        payloads: Optional[Sequence[object]] = None,
        requires: Optional[Sequence[Optional[Requirement]]] = None,
        receipts: bool = False,
    ) -> Union[
        tuple[npt.NDArray[np.uint8], list[Optional[Reservation]]],
        tuple[npt.NDArray[np.uint8], list[Optional[Reservation]], list[Optional[Receipt]]],
    ]:
        """Decide requests in list order: one ``Code`` per request (a ``uint8``
        array) and, for each allowed one, its ``Reservation`` (else None). With
        ``receipts=True`` a third list holds each request's audit ``Receipt``
        (None without an audit log).

        ``payloads`` and ``requires``, if given, hold one entry per request
        (None, or what ``check`` takes as ``payload`` and ``require``).

        ``now`` defaults to the current unix time. Arguments of the wrong shape
        raise ``InputError`` before any request is decided. If the audit log
        cannot be written, every reservation of the batch is released and the
        error raised: nothing is allowed without its record. A durable ledger's
        store that fails raises ``StoreError``: nothing of the batch is allowed.
        """
        chain_items, invocation_items, when = self._requests(chains, invocations, now)
        count = len(chain_items)
        payload_items = [
            _payload(p, f"payloads[{i}]")
            for i, p in enumerate(_per_request(payloads, count, "payloads"))
        ]
        require_items = [
            _requirement(r, f"requires[{i}]")
            for i, r in enumerate(_per_request(requires, count, "requires"))
        ]
        codes, reservations, audit_receipts = self._run(
            chain_items, invocation_items, when, payload_items, require_items
        )
        if receipts:
            return codes, reservations, audit_receipts
        return codes, reservations

    def _requests(
        self, chains: object, invocations: object, now: Optional[int]
    ) -> tuple[list[bytes], list[bytes], int]:
        """The requests' bytes and the time they are judged at, or ``InputError``."""
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
        return chain_items, invocation_items, when

    def _run(
        self,
        chain_items: list[bytes],
        invocation_items: list[bytes],
        when: int,
        payloads: Sequence[Optional[bytes]],
        requires: Sequence[Optional[Requirement]],
    ) -> tuple[npt.NDArray[np.uint8], list[Optional[Reservation]], list[Optional[Receipt]]]:
        """Decide checked requests in order, then append their audit records."""
        codes = np.zeros(len(chain_items), dtype=np.uint8)
        reservations: list[Optional[Reservation]] = [None] * len(chain_items)
        steps: list[tuple[int, Step]] = []
        items = zip(chain_items, invocation_items, payloads, requires)
        for i, (raw_chain, raw_invocation, payload, requirement) in enumerate(items):
            verdict = self._judge(raw_chain, raw_invocation, when, payload, requirement)
            if isinstance(verdict, Step):
                steps.append((i, verdict))
            else:
                codes[i] = verdict
        # (f) replay and (g) the reservation, one atomic ledger step per request,
        # in input order. A store that fails raises StoreError: nothing is allowed.
        if steps:
            admitted = self._ledger._admit([step for _, step in steps], when)
            for (i, _), (code, reservation) in zip(steps, admitted):
                codes[i] = code
                reservations[i] = reservation
        audit_receipts: list[Optional[Receipt]] = [None] * len(chain_items)
        if self._audit is not None:
            records = [
                GateRecord(Code(int(code)), when, blake3_digest(c), blake3_digest(i)).to_bytes()
                for code, c, i in zip(codes, chain_items, invocation_items)
            ]
            # Only an allowed decision is owed durability on its own: every refusal
            # can be caused without a key (forged or replayed), and must not buy
            # one disk flush per request.
            urgent = any(int(code) == Code.OK for code in codes)
            try:
                audit_receipts = list(self._audit._append(records, urgent=urgent))
            except BaseException:
                for r in reservations:
                    if r is not None:
                        # A store that cannot release leaves it to the lease.
                        with suppress(StoreError):
                            r.release()
                raise
            for k, r in enumerate(reservations):
                if r is not None:
                    r._recorded(self._audit, blake3_digest(invocation_items[k]))
        return codes, reservations, audit_receipts

    # -- one request, SPEC §4 order ---------------------------------------

    def _judge(
        self,
        raw_chain: bytes,
        raw_invocation: bytes,
        now: int,
        payload: Optional[bytes],
        requirement: Optional[Requirement],
    ) -> Union[Code, Step]:
        """One request in SPEC §4 order up to the ledger: the first failure, or
        the ledger ``Step`` (replay and reservation) it reached."""
        try:  # (a)
            links = parse_chain(raw_chain)
            invocation = parse_invocation(raw_invocation)
        except MalformedError:
            return Code.MALFORMED
        if links[0].issuer not in self._trusted:  # (b)
            return Code.UNTRUSTED_ISSUER
        last = links[-1]
        digest = blake3_digest(raw_chain)
        cached = self._cache_hit(digest)

        # (c) the invocation is signed by the holder named in the last link.
        if not cached and not link_signatures_valid(links):
            return Code.BAD_SIGNATURE
        if not verify(INVOKE_DOMAIN + invocation.body, invocation.signature, last.holder):
            return Code.BAD_SIGNATURE
        # The signed digest must cover the body the server received.
        if payload is not None and blake3_digest(payload) != invocation.payload_digest:
            return Code.BAD_SIGNATURE
        # (d)
        if not cached and not links_connected(links):
            return Code.BROKEN_LINK
        if invocation.tail_sig != last.signature:
            return Code.BROKEN_LINK

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
            return code

        # (f) The server's route names one exact ability and resource: a chain
        # granting "pay/*" may not be spent on "pay/x" where the route is "pay/y".
        if requirement is not None and (
            invocation.ability != requirement[0] or invocation.resource != requirement[1]
        ):
            return Code.SCOPE_DENIED
        if not any(cap_covers(cap, (invocation.resource, invocation.ability)) for cap in last.caps):
            return Code.SCOPE_DENIED
        if invocation.cost > last.budget:
            return Code.COST_EXCEEDS_GRANT
        # The signed cost is what the ledger reserves: below the price, the
        # request would spend less than it costs (cost 0 spends nothing).
        if requirement is not None and invocation.cost < requirement[2]:
            return Code.COST_BELOW_PRICE
        if abs(invocation.timestamp - now) > self._skew:
            return Code.STALE_INVOCATION
        return Step(
            path=tuple((blake3_digest(link.signature), link.budget) for link in links),
            expires=tuple(link.not_after for link in links),
            cost=invocation.cost,
            nonce=invocation.nonce,
            timestamp=invocation.timestamp,
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

