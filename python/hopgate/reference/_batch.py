"""Batch input conversion shared by every batch function of the reference.

hopgate's batch functions (``verify_batch``, ``verify_chains``, ``blake3_many``,
``sha256_many``) take their items in one of two forms (SPEC §7):

* a list (any non-buffer iterable) of bytes-like objects, one per item; or
* one contiguous buffer plus ``offsets``, an array of n+1 integer offsets in the
  Arrow layout: item i is ``buffer[offsets[i]:offsets[i+1]]``.

Fixed-size items (signatures, public keys) may also come as one buffer of
exactly n * size bytes, for example a numpy ``(n, 64)`` ``uint8`` array.

This module owns those conversions and the argument checks that go with them,
so that every batch function accepts and refuses exactly the same inputs. The
reference copies every item into ``bytes``: it is the simple baseline, and a
copy also means memory that Python code can mutate is never read twice.
"""

from __future__ import annotations

from collections.abc import Iterable
import numpy as np

from ..errors import InputError

__all__ = ["as_bytes", "is_buffer", "batch_items", "fixed_items"]

def is_buffer(obj: object) -> bool:
    """Whether ``obj`` exposes the buffer protocol (bytes, bytearray, numpy, ...)."""
    try:
        memoryview(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError):
        return False
    return True


def as_bytes(obj: object, what: str) -> bytes:
    """Copy a bytes-like object into ``bytes``.

    Only buffers of single-byte items that are C-contiguous are accepted: a
    buffer of ``int32`` or a strided numpy view is almost certainly a caller
    mistake, and refusing it keeps the reference's idea of "bytes-like" the same
    as the native module's.
    """
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError):
        raise InputError(
            f"{what}: expected a bytes-like object, got {type(obj).__name__}"
        ) from None
    with view:
        if view.itemsize != 1:
            raise InputError(
                f"{what}: expected a buffer of single bytes, got items of "
                f"{view.itemsize} bytes (format {view.format!r})"
            )
        if not view.c_contiguous:
            raise InputError(f"{what}: buffer is not C-contiguous")
        return view.tobytes()


def _offsets_list(offsets: object, buffer_len: int) -> list[int]:
    """Check an Arrow-layout offsets array and return it as Python ints."""
    try:
        array = np.asarray(offsets)
    except Exception as exc:  # numpy raises a variety of types on odd input
        raise InputError(f"offsets: not an array of integers ({exc})") from None
    if array.ndim != 1:
        raise InputError(f"offsets: must be 1-D, got {array.ndim} dimensions")
    if array.size < 1:
        raise InputError("offsets: need at least one entry (n + 1 offsets for n items)")
    if array.dtype.kind not in "iu":
        raise InputError(f"offsets: must be integers, got dtype {array.dtype}")
    values = [int(v) for v in array.tolist()]
    if values[0] < 0:
        raise InputError(f"offsets: first offset {values[0]} is negative")
    for i in range(1, len(values)):
        if values[i] < values[i - 1]:
            raise InputError(
                f"offsets[{i}] = {values[i]} is less than offsets[{i - 1}] = {values[i - 1]}"
            )
    if values[-1] > buffer_len:
        raise InputError(
            f"offsets: last offset {values[-1]} is past the end of the "
            f"{buffer_len}-byte buffer"
        )
    return values


def batch_items(data: object, offsets: object | None, what: str) -> list[bytes]:
    """Turn a batch argument (list of bytes-like, or buffer + offsets) into items."""
    if offsets is None:
        if is_buffer(data):
            raise InputError(
                f"{what}: a single buffer needs `offsets`; "
                "otherwise pass a list of bytes-like objects"
            )
        if isinstance(data, str) or not isinstance(data, Iterable):
            raise InputError(
                f"{what}: expected a list of bytes-like objects, got "
                f"{type(data).__name__}"
            )
        return [as_bytes(item, f"{what}[{i}]") for i, item in enumerate(data)]
    if not is_buffer(data):
        raise InputError(
            f"{what}: `offsets` is given, so {what} must be one buffer, got "
            f"{type(data).__name__}"
        )
    buffer = as_bytes(data, what)
    bounds = _offsets_list(offsets, len(buffer))
    return [buffer[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def fixed_items(data: object, n: int, size: int, what: str) -> list[bytes]:
    """Split n fixed-size items given as one buffer of n * size bytes or a list.

    Items of a list are not length-checked here: a signature or key of the
    wrong length is an input the signature rule rejects, not an argument error.
    """
    if is_buffer(data):
        buffer = as_bytes(data, what)
        if len(buffer) != n * size:
            raise InputError(
                f"{what}: buffer of {len(buffer)} bytes, expected {n} x {size} = "
                f"{n * size} bytes"
            )
        return [buffer[i * size : (i + 1) * size] for i in range(n)]
    if isinstance(data, str) or not isinstance(data, Iterable):
        raise InputError(
            f"{what}: expected a list of bytes-like objects or one buffer, got "
            f"{type(data).__name__}"
        )
    items = [as_bytes(item, f"{what}[{i}]") for i, item in enumerate(data)]
    if len(items) != n:
        raise InputError(f"{what}: {len(items)} items, expected {n} (one per message)")
    return items
