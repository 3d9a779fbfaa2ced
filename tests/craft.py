"""A third, deliberately raw encoder of SPEC §2 for building hostile inputs.

Neither implementation's builder will produce a widening link or a lying length, so
attack tests write bytes here: every field can be overridden, and each link is signed
with whatever key the test names. Being independent of both implementations, it also
checks that they agree with the SPEC's byte layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence, Union

LINK_DOMAIN = b"hopgate/v1/link\x00"
INVOKE_DOMAIN = b"hopgate/v1/invoke\x00"
NOW = 1_750_000_000

Str = Union[str, bytes]


def s(x: Str) -> bytes:
    raw = x.encode() if isinstance(x, str) else x
    return bytes([len(raw) & 0xFF]) + raw


@dataclass
class L:
    """One link's fields; `signer` is a SigningKey (any implementation's)."""

    signer: Any
    holder: bytes
    kind: Optional[int] = None  # None: 0 for link 0, 1 after
    session_id: bytes = bytes(16)
    prev_sig: Optional[bytes] = None  # None: the previous link's real signature
    not_before: int = NOW - 1000
    not_after: int = NOW + 100_000
    max_depth: int = 5
    budget: int = 1000
    unit: Str = "usd-cents"
    nonce: bytes = bytes(16)
    caps: Sequence[tuple[Str, Str]] = (("*", "*"),)
    ncap: Optional[int] = None
    meta_digest: bytes = bytes(32)
    body_len_delta: int = 0
    issuer: Optional[bytes] = None  # None: the signer's public key
    extra: bytes = b""  # appended inside the body

    def body(self, index: int, prev_sig: bytes) -> bytes:
        kind = self.kind if self.kind is not None else (0 if index == 0 else 1)
        out = bytes([kind])
        if kind == 0:
            out += (self.issuer if self.issuer is not None else self.signer.public_key) + self.session_id
        else:
            out += self.prev_sig if self.prev_sig is not None else prev_sig
        out += self.holder + struct.pack("<QQBQ", self.not_before, self.not_after, self.max_depth, self.budget)
        out += s(self.unit) + self.nonce
        out += bytes([self.ncap if self.ncap is not None else len(self.caps)])
        for res, ab in self.caps:
            out += s(res) + s(ab)
        return out + self.meta_digest + self.extra


@dataclass
class Built:
    data: bytes
    sigs: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


def build(links: Sequence[L], n: Optional[int] = None, magic: bytes = b"HGC1") -> Built:
    """Encodes and signs `links`; `n` overrides the link count byte."""
    out = magic + bytes([len(links) if n is None else n])
    built = Built(b"")
    prev = bytes(64)
    for i, link in enumerate(links):
        body = link.body(i, prev)
        sig = link.signer.sign(LINK_DOMAIN + body)
        out += struct.pack("<I", len(body) + link.body_len_delta) + body + sig
        built.sigs.append(sig)
        built.bodies.append(body)
        prev = sig
    built.data = out
    return built


def chain_of(keys: Sequence[Any], **common: Any) -> list[L]:
    """A straight chain keys[0] -> keys[1] -> ... with depth decreasing by one."""
    depth = common.pop("max_depth", len(keys) + 2)
    return [
        L(signer=keys[i], holder=keys[i + 1].public_key, max_depth=depth - i, **common)
        for i in range(len(keys) - 1)
    ]


def with_(link: L, **changes: Any) -> L:
    return replace(link, **changes)


def invocation(
    holder: Any,
    tail_sig: bytes,
    ability: Str = "read",
    resource: Str = "files/a",
    cost: int = 1,
    timestamp: int = NOW,
    nonce: bytes = bytes(16),
    payload_digest: bytes = bytes(32),
) -> bytes:
    body = tail_sig + s(ability) + s(resource) + struct.pack("<QQ", cost, timestamp) + nonce + payload_digest
    sig: bytes = holder.sign(INVOKE_DOMAIN + body)
    return b"HGI1" + struct.pack("<I", len(body)) + body + sig
