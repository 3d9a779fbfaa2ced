"""Raw SPEC §2 encoding for the soak (bench/soak.py): hostile chains and invocations.

The builders of both implementations refuse to make a link that widens its parent, a
lying length or a bad string, so the soak writes such bytes here. A chain is decoded
into ``RawLink`` values, one field is changed, and the changed link and every link
after it are signed again (``resign``) so that the one intended defect is the first
one a verifier meets (or, when several are made at once, whichever SPEC §4 puts
first). Being a third encoder, independent of both implementations, it also checks
their byte layout: a valid chain made here must be accepted by both.

``TorsionKey`` signs with a public key that carries a small-order component and
a nonce point that carries another: the signature satisfies SPEC §3's cofactored
equation but not the cofactorless one that libsodium checks, so the reference gate
takes its pure-Python path and must still agree with the native core.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional, Protocol, Sequence

import hopgate
from hopgate.reference._ed25519 import _B, _IDENTITY, _L, _P, _Point, _add, _mul
from hopgate.reference._ed25519 import _decode_point as _decode

LINK_DOMAIN = b"hopgate/v1/link\x00"
INVOKE_DOMAIN = b"hopgate/v1/invoke\x00"
CHAIN_MAGIC = b"HGC1"
INVOCATION_MAGIC = b"HGI1"
MAX_LINKS = 16
MAX_CAPS = 64
MAX_CHAIN_LEN = 65536
U64_MAX = 2**64 - 1

Cap = tuple[bytes, bytes]


class Signer(Protocol):
    """A native ``hopgate.SigningKey`` or a ``TorsionKey``."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, msg: bytes) -> bytes: ...


def _s(raw: bytes) -> bytes:
    return bytes([len(raw) & 0xFF]) + raw


@dataclass
class RawLink:
    """One link's fields, free of any SPEC check; ``body()`` encodes them."""

    kind: int
    holder: bytes
    not_before: int
    not_after: int
    max_depth: int
    budget: int
    unit: bytes
    nonce: bytes
    caps: list[Cap]
    meta_digest: bytes = bytes(32)
    issuer: bytes = bytes(32)  # kind 0
    session_id: bytes = bytes(16)  # kind 0
    prev_sig: bytes = bytes(64)  # kind 1
    signature: bytes = bytes(64)
    ncap: Optional[int] = None  # overrides len(caps) on the wire
    body_len_delta: int = 0
    extra: bytes = b""  # appended inside the body

    def body(self) -> bytes:
        out = bytes([self.kind & 0xFF])
        if self.kind == 0:
            out += self.issuer + self.session_id
        else:
            out += self.prev_sig
        out += self.holder + struct.pack(
            "<QQBQ",
            self.not_before & U64_MAX,
            self.not_after & U64_MAX,
            self.max_depth & 0xFF,
            self.budget & U64_MAX,
        )
        out += _s(self.unit) + self.nonce
        out += bytes([(self.ncap if self.ncap is not None else len(self.caps)) & 0xFF])
        for resource, ability in self.caps:
            out += _s(resource) + _s(ability)
        return out + self.meta_digest + self.extra

    def copy(self) -> RawLink:
        return replace(self, caps=list(self.caps))


def from_link(link: hopgate.Link) -> RawLink:
    """A parsed link (``hopgate.Link``) as a ``RawLink``."""
    return RawLink(
        kind=link.kind,
        holder=link.holder,
        not_before=link.not_before,
        not_after=link.not_after,
        max_depth=link.max_depth,
        budget=link.budget,
        unit=link.unit.encode(),
        nonce=link.nonce,
        caps=[(r.encode(), a.encode()) for r, a in link.caps],
        meta_digest=link.meta_digest,
        issuer=link.issuer or bytes(32),
        session_id=link.session_id or bytes(16),
        prev_sig=link.prev_sig or bytes(64),
        signature=link.signature,
    )


def encode_chain(links: Sequence[RawLink], n: Optional[int] = None, magic: bytes = CHAIN_MAGIC) -> bytes:
    """Frame the links as they are (no signing, no checks); ``n`` overrides the count byte."""
    out = bytearray(magic)
    out.append((len(links) if n is None else n) & 0xFF)
    for link in links:
        body = link.body()
        out += struct.pack("<I", (len(body) + link.body_len_delta) & 0xFFFFFFFF) + body + link.signature
    return bytes(out)


def resign(
    links: list[RawLink],
    start: int,
    keyring: Mapping[bytes, Signer],
    keep_prev: frozenset[int] = frozenset(),
    signer_at: Optional[Mapping[int, Signer]] = None,
) -> bool:
    """Sign links ``start..`` again, in place, each by its rightful signer (link 0: its
    issuer, link i: the holder of link i-1), after pointing its ``prev_sig`` at the
    previous signature (except for the indices in ``keep_prev``). ``signer_at`` names
    another signer for some indices. False if a rightful signer's key is unknown."""
    for i in range(start, len(links)):
        link = links[i]
        if i > 0 and link.kind != 0 and i not in keep_prev:
            link.prev_sig = links[i - 1].signature
        signer = signer_at.get(i) if signer_at is not None else None
        if signer is None:
            pk = link.issuer if i == 0 else links[i - 1].holder
            signer = keyring.get(pk)
        if signer is None:
            return False
        link.signature = signer.sign(LINK_DOMAIN + link.body())
    return True


def invocation_body(
    tail_sig: bytes,
    ability: bytes,
    resource: bytes,
    cost: int,
    timestamp: int,
    nonce: bytes,
    payload_digest: bytes,
) -> bytes:
    return (
        tail_sig
        + _s(ability)
        + _s(resource)
        + struct.pack("<QQ", cost & U64_MAX, timestamp & U64_MAX)
        + nonce
        + payload_digest
    )


def frame_invocation(body: bytes, sig: bytes, body_len_delta: int = 0, magic: bytes = INVOCATION_MAGIC) -> bytes:
    return magic + struct.pack("<I", (len(body) + body_len_delta) & 0xFFFFFFFF) + body + sig


def sign_invocation(signer: Signer, body: bytes) -> bytes:
    return frame_invocation(body, signer.sign(INVOKE_DOMAIN + body))


# ---------------------------------------------------------------------------
# Edwards25519, just enough to make torsion-carrying keys and signatures
# (RFC 8032 §5.1, extended coordinates).
# ---------------------------------------------------------------------------

# The curve arithmetic is the reference's (hopgate.reference._ed25519); only the
# encoder, which verification never needs, is added here.


def _encode(p: _Point) -> bytes:
    x, y, z, _ = p
    zi = pow(z, -1, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _base_mul(scalar: int) -> _Point:
    return _mul(scalar, _B)


#: Encodings of small-order points and non-canonical encodings (as public keys they must
#: make every signature fail SPEC §3).
HOSTILE_KEYS: tuple[bytes, ...] = tuple(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",  # identity
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1
    )
)
_TORSION: tuple[_Point, ...] = tuple(
    p for p in (_decode(k) for k in HOSTILE_KEYS[1:6]) if p is not None
)


class TorsionKey:
    """Signs so that only SPEC §3's cofactored equation accepts: the public key is
    ``[a]B + T1`` and each nonce point ``[r]B + T2`` (T1, T2 of small order, T1 not
    the identity). ``[8]`` removes both, so the cofactored equation holds; the
    cofactorless one almost never does. Pure Python, a few ms per signature."""

    def __init__(self, seed: bytes, torsion: int) -> None:
        digest = hashlib.sha512(b"hopgate-soak torsion key" + seed).digest()
        self._a = int.from_bytes(digest[:32], "little") % _L or 1
        self._prefix = digest[32:]
        self._t1 = _TORSION[torsion % len(_TORSION)]
        self._public = _encode(_add(_base_mul(self._a), self._t1))
        self._count = 0

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, msg: bytes) -> bytes:
        r = int.from_bytes(hashlib.sha512(self._prefix + msg).digest(), "little") % _L
        t2 = _TORSION[r % len(_TORSION)] if r % 3 else _IDENTITY
        encoded_r = _encode(_add(_base_mul(r), t2))
        k = int.from_bytes(hashlib.sha512(encoded_r + self._public + msg).digest(), "little") % _L
        s = (r + k * self._a) % _L
        return encoded_r + s.to_bytes(32, "little")


def malleate(sig: bytes) -> bytes:
    """The same signature with S + L (a non-canonical S that SPEC §3 refuses)."""
    s = int.from_bytes(sig[32:], "little") + _L
    return sig[:32] + (s % 2**256).to_bytes(32, "little")


IDENTITY_SIGNATURE = HOSTILE_KEYS[0] + bytes(32)  # R = identity, S = 0


@dataclass
class Keyring:
    """Every signer the soak made, by public key."""

    by_pk: dict[bytes, Signer] = field(default_factory=dict)

    def add(self, signer: Signer) -> Signer:
        self.by_pk[signer.public_key] = signer
        return signer
