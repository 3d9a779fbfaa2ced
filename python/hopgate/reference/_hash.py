"""Hashing for the reference: BLAKE3 (blake3-py) and SHA-256 (hashlib).

The batch hashers (``blake3_many``, ``sha256_many``, ``mac_many``) take a list
of bytes-like objects, or one buffer plus Arrow-layout ``offsets`` (see
``_batch``), and return an ``(n, 32)`` ``uint8`` array, one digest per row (written
into ``out=`` when given). A plain loop: the baseline the native batch hashers are
measured against.

``blake3`` hashes one input, optionally on several threads (blake3-py's
``max_threads``); ``hash_backend`` names the implementation, ``"reference"``.
Arguments are checked as the native module checks them, with the same
exception types: a key of the wrong length or a ``threads`` below 1 is an
``InputError`` (a ``ValueError``), a ``threads`` that is not an integer a
``TypeError``.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
# blake3-py's hasher class; the name `blake3` is this module's function.
from blake3 import blake3 as _Blake3

from ..errors import InputError
from ._batch import as_bytes, batch_items

__all__ = ["blake3", "blake3_digest", "blake3_many", "hash_backend", "mac_many", "sha256_many"]

DIGEST_LEN = 32
KEY_LEN = 32
# The largest `threads` the native module can take (it reads it as an int64).
_MAX_THREADS = 2**63 - 1


def blake3_digest(data: bytes) -> bytes:
    """BLAKE3-256 of ``data`` (chain digests, revocation ids, payload digests)."""
    return _Blake3(data).digest()


def _sha256_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _out_array(out: object, n: int) -> npt.NDArray[np.uint8]:
    """``out=``: a writable, C-contiguous ``(n, 32)`` ``uint8`` numpy array."""
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 2:
        raise InputError(f"out: expected a numpy uint8 array of shape ({n}, 32), got {type(out).__name__}")
    if out.shape != (n, DIGEST_LEN):
        raise InputError(f"out: expected shape ({n}, 32), got {list(out.shape)}")
    if not out.flags.c_contiguous:
        raise InputError("out: must be C-contiguous")
    if not out.flags.writeable:
        raise InputError("out: must be writable")
    return out


def _shares_memory(out: npt.NDArray[np.uint8], data: object) -> bool:
    """Whether ``out`` overlaps the memory of ``data`` (one buffer, or a list's items)."""
    items = data if isinstance(data, (list, tuple)) else [data]
    for item in items:
        if isinstance(item, bytes):
            continue  # immutable: a writable array never lies over it
        try:
            view = np.frombuffer(memoryview(item).cast("B"), dtype=np.uint8)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue  # not a plain buffer: refused by batch_items already
        if np.may_share_memory(out, view):
            return True
    return False


def _many(
    hash_one: Callable[[bytes], bytes], data: object, offsets: object | None, out: object | None
) -> npt.NDArray[np.uint8]:
    items = batch_items(data, offsets, "data")
    rows = np.empty((len(items), DIGEST_LEN), dtype=np.uint8) if out is None else _out_array(out, len(items))
    if out is not None and _shares_memory(rows, data):
        # As the native module refuses it: digests written over the bytes being hashed.
        raise InputError("out: shares memory with the data")
    for row, item in enumerate(items):
        rows[row] = np.frombuffer(hash_one(item), dtype=np.uint8)
    return rows


def blake3_many(data: object, offsets: object | None = None, *, out: object | None = None) -> npt.NDArray[np.uint8]:
    """BLAKE3-256 of each item, as an ``(n, 32)`` ``uint8`` array (``out``, when given)."""
    return _many(blake3_digest, data, offsets, out)


def sha256_many(data: object, offsets: object | None = None, *, out: object | None = None) -> npt.NDArray[np.uint8]:
    """SHA-256 of each item, as an ``(n, 32)`` ``uint8`` array (``out``, when given)."""
    return _many(_sha256_digest, data, offsets, out)


def mac_many(
    key: object, data: object, offsets: object | None = None, *, out: object | None = None
) -> npt.NDArray[np.uint8]:
    """BLAKE3 keyed hash (a MAC) of each item under a 32-byte ``key``, as ``(n, 32)``
    ``uint8`` (``out``, when given)."""
    key_bytes = as_bytes(key, "key")
    if len(key_bytes) != KEY_LEN:
        raise InputError(f"key: must be {KEY_LEN} bytes, got {len(key_bytes)}")
    return _many(lambda item: _Blake3(item, key=key_bytes).digest(), data, offsets, out)


def _threads(threads: object) -> int:
    """blake3-py's ``max_threads`` for hopgate's ``threads`` (None, or an int >= 1)."""
    if threads is None:
        return _Blake3.AUTO
    if isinstance(threads, bool):
        # `True` is an int to Python, but `threads=True` is a mistake, not "1 thread".
        raise TypeError("threads: expected None or an integer >= 1, got bool")
    try:
        n = operator.index(threads)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"threads: expected None or an integer >= 1, got {type(threads).__name__}"
        ) from None
    if n < 1:
        raise InputError(f"threads: must be at least 1, got {n}")
    if n > _MAX_THREADS:
        raise InputError(f"threads: {n} is out of range")
    return n


def blake3(data: object, threads: object = None) -> bytes:
    """BLAKE3-256 of one bytes-like ``data`` (32 bytes).

    ``threads``: ``None`` lets blake3-py decide (``blake3.AUTO``); an integer
    ``n >= 1`` uses at most ``n`` threads.
    """
    max_threads = _threads(threads)
    return _Blake3(as_bytes(data, "data"), max_threads=max_threads).digest()


def hash_backend() -> str:
    """The hashing implementation: always ``"reference"`` here."""
    return "reference"
