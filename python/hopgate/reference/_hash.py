"""Batch hashing for the reference: BLAKE3 (blake3-py) and SHA-256 (hashlib).

Both take a list of bytes-like objects, or one buffer plus Arrow-layout
``offsets`` (see ``_batch``), and return an ``(n, 32)`` ``uint8`` array, one
digest per row. A plain loop: the baseline the native batch hashers are
measured against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from blake3 import blake3

from ._batch import batch_items

__all__ = ["blake3_digest", "blake3_many", "sha256_many"]

DIGEST_LEN = 32


def blake3_digest(data: bytes) -> bytes:
    """BLAKE3-256 of ``data`` (chain digests, revocation ids, payload digests)."""
    return blake3(data).digest()


def _sha256_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _many(
    hash_one: Callable[[bytes], bytes], data: object, offsets: object | None
) -> npt.NDArray[np.uint8]:
    items = batch_items(data, offsets, "data")
    out = np.empty((len(items), DIGEST_LEN), dtype=np.uint8)
    for row, item in enumerate(items):
        out[row] = np.frombuffer(hash_one(item), dtype=np.uint8)
    return out


def blake3_many(data: object, offsets: object | None = None) -> npt.NDArray[np.uint8]:
    """BLAKE3-256 of each item, as an ``(n, 32)`` ``uint8`` array."""
    return _many(blake3_digest, data, offsets)


def sha256_many(data: object, offsets: object | None = None) -> npt.NDArray[np.uint8]:
    """SHA-256 of each item, as an ``(n, 32)`` ``uint8`` array."""
    return _many(_sha256_digest, data, offsets)
