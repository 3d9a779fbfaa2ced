"""Delegation chains for the reference: the ``Chain`` builder and ``verify_chains``.

This module owns the chain-level rules of SPEC §1 and §4: attenuation (one
function, used by both the builders and the verifier, so that a builder never
produces a link the verifier would refuse), the order in which a verifier
reports the first failure, and the refusals of ``grant``/``delegate``/``invoke``.

Builders check in this order and build nothing when they refuse:

1. argument shapes (wrong types, key lengths, strings, capability counts, time
   order: ``InputError``, as natively; more than 16 links or more than 65,536
   bytes: ``DelegationError(code=MALFORMED)``);
2. the signing key must be the current holder (``BAD_SIGNATURE``);
3. attenuation, in SPEC order (delegate), or scope and cost (invoke).
"""

from __future__ import annotations

import operator
import os
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Optional, Protocol, Tuple

import numpy as np
import numpy.typing as npt

from .._codes import Code
from ..errors import DelegationError, InputError, MalformedError
from ._batch import as_bytes, batch_items, is_buffer
from ._ed25519 import SigningKey, verify
from ._hash import blake3_digest
from ._wire import (
    CHAIN_MAGIC,
    INVOKE_DOMAIN,
    KIND_DELEGATION,
    KIND_GRANT,
    LINK_DOMAIN,
    MAX_CHAIN_LEN,
    MAX_LINKS,
    Cap,
    Link,
    cap_covers,
    check_fixed,
    check_uint,
    decode_text,
    encode_chain,
    encode_invocation,
    encode_invocation_body,
    encode_link_body,
    encode_text,
    normalize_caps,
    parse_chain,
)

__all__ = [
    "Chain",
    "verify_chains",
    "attenuation_failure",
    "chain_code",
    "link_signatures_valid",
    "links_connected",
    "terms_code",
]

_ZERO_SESSION = b"\x00" * 16
_ZERO_DIGEST = b"\x00" * 32
_NONCE_LEN = 16
_SIGNATURE_LEN = 64
# Framing of one more link: u32 body_len + body + sig[64].
_LINK_OVERHEAD = 4 + _SIGNATURE_LEN


class _Terms(Protocol):
    """What attenuation compares: the terms a link grants to its holder."""

    @property
    def caps(self) -> Tuple[Cap, ...]: ...
    @property
    def budget(self) -> int: ...
    @property
    def unit(self) -> str: ...
    @property
    def not_before(self) -> int: ...
    @property
    def not_after(self) -> int: ...
    @property
    def max_depth(self) -> int: ...


class _ProposedTerms(NamedTuple):
    """The terms of a link a builder is about to sign."""

    caps: Tuple[Cap, ...]
    budget: int
    unit: str
    not_before: int
    not_after: int
    max_depth: int


def attenuation_failure(parent: _Terms, child: _Terms) -> Optional[Tuple[Code, str]]:
    """The first attenuation rule of SPEC §1 that ``child`` breaks, or None.

    Rules are checked in SPEC order (scope, budget/unit, time, depth), so the
    code is the one a verifier reports.
    """
    for cap in child.caps:
        if not any(cap_covers(granted, cap) for granted in parent.caps):
            return Code.SCOPE_WIDENED, f"capability {cap!r} is not covered by the parent's"
    if child.budget > parent.budget:
        return Code.BUDGET_WIDENED, (
            f"budget {child.budget} is larger than the parent's {parent.budget}"
        )
    if child.unit != parent.unit:
        return Code.BUDGET_WIDENED, (
            f"unit {child.unit!r} differs from the parent's {parent.unit!r}"
        )
    if child.not_before < parent.not_before or child.not_after > parent.not_after:
        return Code.TIME_WIDENED, (
            f"window [{child.not_before}, {child.not_after}) is not inside the "
            f"parent's [{parent.not_before}, {parent.not_after})"
        )
    if parent.max_depth == 0:
        return Code.DEPTH_EXCEEDED, "the parent allows no further delegation (max_depth 0)"
    if child.max_depth > parent.max_depth - 1:
        return Code.DEPTH_EXCEEDED, (
            f"max_depth {child.max_depth} is more than the parent's "
            f"{parent.max_depth} - 1"
        )
    return None


def _check_signing_key(key: object, name: str) -> SigningKey:
    if not isinstance(key, SigningKey):
        raise InputError(f"{name}: expected a SigningKey, got {type(key).__name__}")
    return key


class Chain:
    """An immutable delegation chain: a grant followed by up to 15 delegations.

    A ``Chain`` always holds bytes that parse (SPEC §2); whether it verifies is
    for ``verify_chains`` (or a gate) to say. Builders return new chains.
    """

    __slots__ = ("_bytes", "_links")

    def __init__(self, data: object) -> None:
        """Parse chain bytes; ``MalformedError`` if they do not parse."""
        raw = as_bytes(data, "chain")
        self._links: Tuple[Link, ...] = tuple(parse_chain(raw))
        self._bytes = raw

    # -- building ---------------------------------------------------------

    @classmethod
    def grant(
        cls,
        issuer_sk: SigningKey,
        holder_pk: bytes,
        caps: Iterable[Cap],
        budget: int,
        unit: str,
        not_before: int,
        not_after: int,
        max_depth: int,
        session_id: bytes = _ZERO_SESSION,
        nonce: Optional[bytes] = None,
        meta_digest: Optional[bytes] = None,
    ) -> Chain:
        """A new chain of one link: ``issuer_sk`` grants ``holder_pk`` these terms.

        ``nonce`` defaults to 16 random bytes and ``meta_digest`` to 32 zero
        bytes; ``max_depth`` is how many delegations may follow.
        """
        issuer = _check_signing_key(issuer_sk, "issuer_sk")
        body = encode_link_body(
            kind=KIND_GRANT,
            issuer=issuer.public_key,
            session_id=session_id,
            holder=holder_pk,
            not_before=not_before,
            not_after=not_after,
            max_depth=max_depth,
            budget=budget,
            unit=unit,
            nonce=os.urandom(_NONCE_LEN) if nonce is None else nonce,
            caps=caps,
            meta_digest=_ZERO_DIGEST if meta_digest is None else meta_digest,
        )
        _check_chain_size(0, len(CHAIN_MAGIC) + 1, body)
        signature = issuer.sign(LINK_DOMAIN + body)
        return cls(encode_chain([(body, signature)]))

    def delegate(
        self,
        holder_sk: SigningKey,
        next_pk: bytes,
        caps: Optional[Iterable[Cap]] = None,
        budget: Optional[int] = None,
        unit: Optional[str] = None,
        not_before: Optional[int] = None,
        not_after: Optional[int] = None,
        max_depth: Optional[int] = None,
        nonce: Optional[bytes] = None,
        meta_digest: Optional[bytes] = None,
    ) -> Chain:
        """A new chain with one more link: the current holder delegates to ``next_pk``.

        Every term left as None is inherited from the last link, except
        ``max_depth``, which defaults to the last link's ``max_depth - 1``.
        Raises ``DelegationError`` (with the code a verifier would report)
        instead of building a link that would not verify.
        """
        holder = _check_signing_key(holder_sk, "holder_sk")
        parent = self._links[-1]
        if isinstance(caps, Iterable) and not isinstance(caps, (str, bytes)):
            caps = tuple(caps)  # read once: a generator would be empty the second time
        if max_depth is None:
            # With a parent at depth 0 this stays encodable; the depth rule
            # below then refuses it as DEPTH_EXCEEDED, not as a bad argument.
            max_depth = max(parent.max_depth - 1, 0)
        body = encode_link_body(
            kind=KIND_DELEGATION,
            prev_sig=parent.signature,
            holder=next_pk,
            not_before=parent.not_before if not_before is None else not_before,
            not_after=parent.not_after if not_after is None else not_after,
            max_depth=max_depth,
            budget=parent.budget if budget is None else budget,
            unit=parent.unit if unit is None else unit,
            nonce=os.urandom(_NONCE_LEN) if nonce is None else nonce,
            caps=parent.caps if caps is None else caps,
            meta_digest=_ZERO_DIGEST if meta_digest is None else meta_digest,
        )
        _check_chain_size(len(self._links), len(self._bytes), body)
        if holder.public_key != parent.holder:
            raise DelegationError(
                "the signing key is not the chain's current holder", Code.BAD_SIGNATURE
            )
        proposed = _ProposedTerms(
            caps=parent.caps if caps is None else normalize_caps(caps),
            budget=parent.budget if budget is None else operator.index(budget),
            unit=parent.unit if unit is None else unit,
            not_before=parent.not_before if not_before is None else operator.index(not_before),
            not_after=parent.not_after if not_after is None else operator.index(not_after),
            max_depth=operator.index(max_depth),
        )
        failure = attenuation_failure(parent, proposed)
        if failure is not None:
            code, reason = failure
            raise DelegationError(f"delegation refused: {reason}", code)
        signature = holder.sign(LINK_DOMAIN + body)
        pairs = [(link.body, link.signature) for link in self._links]
        pairs.append((body, signature))
        return Chain(encode_chain(pairs))

    def invoke(
        self,
        holder_sk: SigningKey,
        ability: str,
        resource: str,
        cost: int,
        nonce: Optional[bytes] = None,
        timestamp: Optional[int] = None,
        payload: bytes = b"",
    ) -> bytes:
        """Invocation bytes: the holder asks to use ``ability`` on ``resource``.

        ``timestamp`` defaults to now (unix seconds), ``nonce`` to 16 random
        bytes; the invocation carries ``BLAKE3(payload)``. Raises
        ``DelegationError`` for a request the gate would deny on the chain's
        own terms (wrong key, scope, cost).
        """
        holder = _check_signing_key(holder_sk, "holder_sk")
        body = encode_invocation_body(
            tail_sig=self.tail_signature,
            ability=ability,
            resource=resource,
            cost=cost,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            nonce=os.urandom(_NONCE_LEN) if nonce is None else nonce,
            payload_digest=blake3_digest(as_bytes(payload, "payload")),
        )
        last = self._links[-1]
        if holder.public_key != last.holder:
            raise DelegationError(
                "the signing key is not the chain's current holder", Code.BAD_SIGNATURE
            )
        if not any(cap_covers(granted, (resource, ability)) for granted in last.caps):
            raise DelegationError(
                f"({resource!r}, {ability!r}) is not covered by the last link",
                Code.SCOPE_DENIED,
            )
        if operator.index(cost) > last.budget:
            raise DelegationError(
                f"cost {cost} exceeds the last link's budget {last.budget}",
                Code.COST_EXCEEDS_GRANT,
            )
        return encode_invocation(body, holder.sign(INVOKE_DOMAIN + body))

    # -- bytes and text ---------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> Chain:
        """Parse chain bytes; ``MalformedError`` if they do not parse."""
        return cls(data)

    def __bytes__(self) -> bytes:
        return self._bytes

    def to_text(self) -> str:
        """The text form (base64url, no padding) for the ``Hopgate-Chain`` header."""
        return encode_text(self._bytes)

    @classmethod
    def from_text(cls, text: str) -> Chain:
        """Parse the text form; ``MalformedError`` if it is not strict base64url
        of chain bytes."""
        return cls(decode_text(text, "text"))

    # -- inspection -------------------------------------------------------

    @property
    def links(self) -> Tuple[Link, ...]:
        """The parsed links, grant first."""
        return self._links

    @property
    def issuer(self) -> bytes:
        """The issuer's public key (link 0)."""
        issuer = self._links[0].issuer
        assert issuer is not None  # parsing guarantees link 0 is a grant
        return issuer

    @property
    def holder(self) -> bytes:
        """The public key of the current (last) holder."""
        return self._links[-1].holder

    @property
    def session_id(self) -> bytes:
        """The session id the grant (link 0) is bound to."""
        session_id = self._links[0].session_id
        assert session_id is not None  # parsing guarantees link 0 is a grant
        return session_id

    @property
    def digest(self) -> bytes:
        """BLAKE3 of the chain bytes (the gate's cache key)."""
        return blake3_digest(self._bytes)

    @property
    def revocation_ids(self) -> list[bytes]:
        """BLAKE3 of each link's signature, link 0 first."""
        return [blake3_digest(link.signature) for link in self._links]

    @property
    def tail_signature(self) -> bytes:
        """The last link's signature, which an invocation names as ``tail_sig``."""
        return self._links[-1].signature

    def __len__(self) -> int:
        return len(self._links)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Chain):
            return NotImplemented
        return self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __repr__(self) -> str:
        return (
            f"Chain(links={len(self._links)}, issuer={self.issuer.hex()[:16]}..., "
            f"holder={self.holder.hex()[:16]}..., digest={self.digest.hex()[:16]}...)"
        )


def _check_chain_size(links_before: int, bytes_before: int, body: bytes) -> None:
    if links_before + 1 > MAX_LINKS:
        raise DelegationError(
            f"a chain holds at most {MAX_LINKS} links", Code.MALFORMED
        )
    size = bytes_before + _LINK_OVERHEAD + len(body)
    if size > MAX_CHAIN_LEN:
        raise DelegationError(
            f"the chain would be {size} bytes, at most {MAX_CHAIN_LEN} allowed",
            Code.MALFORMED,
        )


# ---------------------------------------------------------------------------
# Verification (SPEC §4, steps a-e)
# ---------------------------------------------------------------------------


def chain_code(
    raw: bytes,
    trusted: frozenset[bytes],
    now: int,
    session: Optional[bytes],
    revoked: frozenset[bytes],
) -> Code:
    """The decision for one chain: the first failure in SPEC §4 order, or OK."""
    try:
        links = parse_chain(raw)
    except MalformedError:
        return Code.MALFORMED  # (a)
    if links[0].issuer not in trusted:
        return Code.UNTRUSTED_ISSUER  # (b)
    if not link_signatures_valid(links):
        return Code.BAD_SIGNATURE  # (c)
    if not links_connected(links):
        return Code.BROKEN_LINK  # (d)
    return terms_code(links, now, session, revoked)  # (e)


# The steps below are shared with the reference gate, which interleaves them with
# the invocation's own checks and skips (c), (d) and attenuation for cached chains.


def link_signatures_valid(links: Sequence[Link]) -> bool:
    """Step (c) for the links: link 0 signed by the issuer, link i by holder i-1."""
    signer = links[0].issuer
    for link in links:
        if not verify(LINK_DOMAIN + link.body, link.signature, signer):
            return False
        signer = link.holder
    return True


def links_connected(links: Sequence[Link]) -> bool:
    """Step (d) for the links: every ``prev_sig`` names the previous signature."""
    return all(child.prev_sig == parent.signature for parent, child in zip(links, links[1:]))


def terms_code(
    links: Sequence[Link],
    now: int,
    session: Optional[bytes],
    revoked: frozenset[bytes],
    *,
    check_attenuation: bool = True,
) -> Code:
    """Step (e), link by link from 0: attenuation (unless already known to pass),
    then validity time, session (link 0 only) and revocation."""
    for i, link in enumerate(links):
        if check_attenuation and i >= 1:
            failure = attenuation_failure(links[i - 1], link)
            if failure is not None:
                return failure[0]
        if now < link.not_before:
            return Code.NOT_YET_VALID
        if now >= link.not_after:
            return Code.EXPIRED
        if i == 0 and session is not None and link.session_id != session:
            return Code.SESSION_MISMATCH
        if blake3_digest(link.signature) in revoked:
            return Code.REVOKED
    return Code.OK


def _key_set(keys: object, size: int, what: str) -> frozenset[bytes]:
    if isinstance(keys, (str, bytes, bytearray, memoryview)) or not isinstance(keys, Iterable):
        raise InputError(f"{what}: expected an iterable of {size}-byte values")
    return frozenset(check_fixed(key, size, f"{what}[{i}]") for i, key in enumerate(keys))


def verify_chains(
    chains: object,
    trusted: Iterable[bytes],
    now: Optional[int] = None,
    session: Optional[bytes] = None,
    revoked: Optional[Iterable[bytes]] = (),
    *,
    offsets: object | None = None,
) -> npt.NDArray[np.uint8]:
    """One ``Code`` per chain, as a ``uint8`` array (SPEC §4, steps a-e).

    ``chains`` is a list of bytes-like objects or ``Chain`` objects, or one
    buffer with ``offsets`` (n + 1 integers, Arrow layout). ``trusted`` holds
    32-byte issuer keys; ``now`` defaults to the current unix time;
    ``session`` (16 bytes) is the expected session id of link 0, if any;
    ``revoked`` holds 32-byte revocation ids (BLAKE3 of a link signature).
    """
    if offsets is None and not is_buffer(chains) and isinstance(chains, Iterable):
        chains = [bytes(c) if isinstance(c, Chain) else c for c in chains]
    items = batch_items(chains, offsets, "chains")
    trusted_keys = _key_set(trusted, 32, "trusted")
    when = int(time.time()) if now is None else check_uint(now, 64, "now")
    expected_session = None if session is None else check_fixed(session, 16, "session")
    revoked_ids = _key_set(() if revoked is None else revoked, 32, "revoked")
    return np.array(
        [chain_code(raw, trusted_keys, when, expected_session, revoked_ids) for raw in items],
        dtype=np.uint8,
    )
