"""Ed25519 arithmetic on integers and bytes that the tests use to craft triples (RFC 8032):
the group order, a seed's secret scalar, the challenge, and single-bit flips."""

from __future__ import annotations

import hashlib

L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point


def secret_scalar(seed: bytes) -> int:
    """The scalar a of RFC 8032 §5.1.5, so that a key's public key is [a]B."""
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return int.from_bytes(h, "little")


def challenge(r: bytes, a: bytes, msg: bytes) -> int:
    """k = SHA-512(R || A || M) mod L."""
    return int.from_bytes(hashlib.sha512(r + a + msg).digest(), "little") % L


def flip(data: bytes, bit: int) -> bytes:
    """`data` with bit `bit` (little-endian within each byte) inverted."""
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)
