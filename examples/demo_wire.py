"""The wire format of docs/SPEC.md §2, encoded by hand for the demo's forgeries.

The library's builders refuse to make what a verifier would deny (a delegation that
widens its parent, an invocation signed by a key that does not hold the chain), so the
demo encodes those few objects itself, from the byte layout the specification gives,
and signs them with real keys. Everything else in the demo is made with the public
builders. Nothing here checks its arguments: it is a demo's tool, not an API.
"""

from __future__ import annotations

import struct
from typing import Optional, Sequence, Tuple, Union

__all__ = [
    "INVOKE_DOMAIN",
    "KIND_DELEGATION",
    "KIND_GRANT",
    "LINK_DOMAIN",
    "cap_covers",
    "encode_chain",
    "encode_invocation",
    "encode_invocation_body",
    "encode_link_body",
]

#: The prefixes of the signed messages: a link signature is never an invocation's.
LINK_DOMAIN = b"hopgate/v1/link\x00"
INVOKE_DOMAIN = b"hopgate/v1/invoke\x00"
CHAIN_MAGIC = b"HGC1"
INVOCATION_MAGIC = b"HGI1"
KIND_GRANT = 0
KIND_DELEGATION = 1

Cap = Tuple[str, str]  # (resource, ability)


def _str(text: str) -> bytes:
    """``str``: a u8 length (1..=255), then UTF-8."""
    raw = text.encode()
    return bytes([len(raw)]) + raw


def encode_link_body(
    *,
    kind: int,
    issuer: Optional[bytes],
    session_id: Optional[bytes],
    prev_sig: Optional[bytes],
    holder: bytes,
    not_before: int,
    not_after: int,
    max_depth: int,
    budget: int,
    unit: str,
    nonce: bytes,
    caps: Sequence[Cap],
    meta_digest: bytes,
) -> bytes:
    """A link body: the grant header (kind 0, issuer, session id) or the delegation
    header (kind 1, the parent's signature), then the fields every link has."""
    if kind == KIND_GRANT:
        assert issuer is not None
        head = bytes([KIND_GRANT]) + issuer + (session_id or bytes(16))
    else:
        assert prev_sig is not None
        head = bytes([KIND_DELEGATION]) + prev_sig
    common = holder + struct.pack("<QQBQ", not_before, not_after, max_depth, budget)
    common += _str(unit) + nonce + bytes([len(caps)])
    common += b"".join(_str(resource) + _str(ability) for resource, ability in caps)
    return head + common + meta_digest


def encode_chain(links: Sequence[Tuple[bytes, Union[bytes, bytearray]]]) -> bytes:
    """Chain bytes from (body, signature) pairs, link 0 first."""
    framed = b"".join(struct.pack("<I", len(body)) + body + bytes(sig) for body, sig in links)
    return CHAIN_MAGIC + bytes([len(links)]) + framed


def encode_invocation_body(
    *,
    tail_sig: bytes,
    ability: str,
    resource: str,
    cost: int,
    timestamp: int,
    nonce: bytes,
    payload_digest: bytes,
) -> bytes:
    """An invocation body (the ability comes first here, unlike in a capability)."""
    return (tail_sig + _str(ability) + _str(resource) + struct.pack("<QQ", cost, timestamp)
            + nonce + payload_digest)


def encode_invocation(body: bytes, sig: bytes) -> bytes:
    """Invocation bytes: magic, body length, body, signature."""
    return INVOCATION_MAGIC + struct.pack("<I", len(body)) + body + sig


def covers(pattern: str, name: str) -> bool:
    """``*`` covers everything, a name covers itself, ``x/*`` covers every name that
    starts with ``x/``; nothing is normalised."""
    return pattern == "*" or pattern == name or (pattern.endswith("/*") and name.startswith(pattern[:-1]))


def cap_covers(parent: Cap, child: Cap) -> bool:
    """Whether capability ``parent`` covers ``child``: both the resource and the ability."""
    return covers(parent[0], child[0]) and covers(parent[1], child[1])
