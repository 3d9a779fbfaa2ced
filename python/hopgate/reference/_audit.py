"""The audit log in plain Python over blake3-py: the same file, the same receipts,
the same reports and the same torn-tail rule as the native log.

File: a 32-byte header (``"HGA1"``, version 1, 11 zero bytes, a 16-byte key id)
then one frame per record: ``body_len u32 LE | body | chain (32) | tag (32)``, with
``chain_i = BLAKE3(chain_{i-1} | BLAKE3(body_i))`` from ``chain_-1 = BLAKE3(header)``
and ``tag_i = BLAKE3-keyed(key, "HGR1" | i u64 LE | chain_i)``. See SPEC §9.
"""

from __future__ import annotations

import hmac
from collections import deque
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, Optional, Union

from blake3 import blake3

from .._audit import FRAME_OVERHEAD, HEADER_LEN, AuditReport
from ..errors import AuditError, InputError
from ._batch import as_bytes, batch_items

try:  # POSIX: one writer at a time, as the native log.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["AuditLog", "Receipt", "audit_verify"]

MAGIC = b"HGA1"
VERSION = 1
MAX_RECORD = 1 << 24
_KEY_ID_CONTEXT = b"hopgate audit key id v1"
_RECEIPT_DOMAIN = b"HGR1"
_PROGRESS_BYTES = 8 << 20

StrPath = Union[str, "os.PathLike[str]"]
Progress = Optional[Callable[[int, int], object]]


def _key(key: object) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise InputError(f"key: expected 32 bytes, got {type(key).__name__}")
    k = bytes(key)
    if len(k) != 32:
        raise InputError(f"key: must be 32 bytes, got {len(k)}")
    return k


def header(key: bytes) -> bytes:
    """The header of a log sealed with ``key``."""
    key_id = blake3(_KEY_ID_CONTEXT, key=key).digest()[:16]
    return MAGIC + bytes([VERSION]) + bytes(11) + key_id


def _link(prev: bytes, body: bytes) -> bytes:
    return blake3(prev + blake3(body).digest()).digest()


def _tag(key: bytes, index: int, chain: bytes) -> bytes:
    return blake3(_RECEIPT_DOMAIN + index.to_bytes(8, "little") + chain, key=key).digest()


class Receipt:
    """What an append returns: the record's index, the log's chain value after it
    and a tag only the key holder can make."""

    __slots__ = ("_index", "_chain", "_tag")

    def __init__(self, index: int, chain: bytes, tag: bytes) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 2**64:
            raise InputError(f"index: expected an unsigned 64-bit int, got {index!r}")
        self._index = index
        self._chain = _fixed(chain, "chain")
        self._tag = _fixed(tag, "tag")

    @property
    def index(self) -> int:
        return self._index

    @property
    def chain(self) -> bytes:
        return self._chain

    @property
    def tag(self) -> bytes:
        return self._tag

    def is_authentic(self, key: bytes) -> bool:
        """True iff the tag was made with ``key`` (constant-time comparison)."""
        return hmac.compare_digest(_tag(_key(key), self._index, self._chain), self._tag)

    def __bytes__(self) -> bytes:
        return self._index.to_bytes(8, "little") + self._chain + self._tag

    @staticmethod
    def from_bytes(data: bytes) -> Receipt:
        raw = as_bytes(data, "receipt")
        if len(raw) != 72:
            raise InputError(f"invalid receipt: must be 72 bytes, got {len(raw)}")
        return Receipt(int.from_bytes(raw[:8], "little"), raw[8:40], raw[40:])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Receipt):
            return NotImplemented
        return bytes(self) == bytes(other)

    def __hash__(self) -> int:
        return hash(bytes(self))

    def __repr__(self) -> str:
        return f"Receipt(index={self._index}, chain={self._chain[:8].hex()}…)"


def _fixed(value: object, what: str) -> bytes:
    raw = as_bytes(value, what)
    if len(raw) != 32:
        raise InputError(f"{what}: must be 32 bytes, got {len(raw)}")
    return raw


def _header_problem(found: bytes, key: bytes) -> Optional[str]:
    want = header(key)
    if len(found) < HEADER_LEN:
        return "the file is shorter than an audit log header"
    if found[:4] != want[:4]:
        return "not a hopgate audit log (bad magic)"
    if found[4] != VERSION:
        return "unknown audit log version"
    if found[5:16] != want[5:16]:
        return "reserved header bytes are not zero"
    if found[16:HEADER_LEN] != want[16:]:
        return "the log was sealed with another key (key id differs)"
    return None


class _Frame:
    __slots__ = ("index", "offset", "body", "chain", "tag")

    def __init__(self, index: int, offset: int, body: bytes, chain: bytes, tag: bytes) -> None:
        self.index, self.offset, self.body, self.chain, self.tag = index, offset, body, chain, tag

    @property
    def end(self) -> int:
        return self.offset + 4 + len(self.body) + 64

    def holds(self, key: bytes, prev: bytes) -> bool:
        return _link(prev, self.body) == self.chain and _tag(key, self.index, self.chain) == self.tag


class _TooLong(Exception):
    """A frame whose length is over ``MAX_RECORD``: ``index`` and ``offset`` name it."""

    def __init__(self, index: int, offset: int) -> None:
        super().__init__(index, offset)
        self.index, self.offset = index, offset


def _frames(data: bytes, stop_at: int) -> Iterator[_Frame]:
    """The complete frames after the header, lazily. Stops at the first frame that
    starts at or past ``stop_at`` or runs past the end of ``data``; raises ``_TooLong``
    for a length over the limit."""
    pos, index = HEADER_LEN, 0
    while pos < stop_at and len(data) - pos >= 4:
        size = int.from_bytes(data[pos : pos + 4], "little")
        if size > MAX_RECORD:
            raise _TooLong(index, pos)
        end = pos + 4 + size + 64
        if end > len(data):
            return
        yield _Frame(index, pos, data[pos + 4 : end - 64], data[end - 64 : end - 32], data[end - 32 : end])
        pos, index = end, index + 1


def _verify_bytes(data: bytes, key: bytes, progress: Progress) -> AuditReport:
    problem = _header_problem(data[:HEADER_LEN], key)
    if problem is not None:
        return AuditReport(0, 0, None, 0, problem)
    prev = blake3(data[:HEADER_LEN]).digest()
    pos, index, reported = HEADER_LEN, 0, HEADER_LEN
    total = len(data)
    try:
        for f in _frames(data, total):
            if _link(prev, f.body) != f.chain:
                return AuditReport(f.index, f.offset, f.index, f.offset, "the record does not match its chain value")
            if _tag(key, f.index, f.chain) != f.tag:
                reason = "the tag does not match (another key, or a changed record)"
                return AuditReport(f.index, f.offset, f.index, f.offset, reason)
            prev, pos, index = f.chain, f.end, f.index + 1
            if progress is not None and pos - reported >= _PROGRESS_BYTES:
                progress(pos, total)
                reported = pos
    except _TooLong as e:
        reason = f"the record length exceeds the limit of {MAX_RECORD} bytes"
        return AuditReport(e.index, e.offset, e.index, e.offset, reason)
    if pos < total:
        return _torn(index, pos)
    if progress is not None:
        progress(pos, total)
    return AuditReport(index, pos)


def _torn(index: int, pos: int) -> AuditReport:
    reason = "the last record is incomplete (a torn tail; opening the log truncates it)"
    return AuditReport(index, pos, index, pos, reason)


def audit_verify(path: StrPath, *, key: bytes, progress: Progress = None) -> AuditReport:
    """Verify the log at ``path`` with ``key`` without opening it for appending."""
    k = _key(key)
    with open(path, "rb") as f:
        return _verify_bytes(f.read(), k, progress)


def _fsync_policy(fsync: object) -> Optional[float]:
    """None: never; 0.0: after every append; seconds: at most that often."""
    if fsync is None or fsync is True:
        return 0.0
    if fsync is False:
        return None
    if isinstance(fsync, (int, float)):
        seconds = float(fsync)
        if not (seconds > 0 and seconds < 1e9):
            raise InputError(
                f"fsync: an interval must be a positive number of seconds, got {seconds}"
            )
        return seconds
    raise TypeError(f"fsync: expected True, False or seconds, got {type(fsync).__name__}")


def _damaged(record: Optional[int], offset: int, reason: str) -> AuditError:
    where = "the header" if record is None else f"record {record}"
    return AuditError(f"audit log damaged at {where}, offset {offset}: {reason}", record, offset)


class AuditLog:
    """An append-only, hash-chained audit log sealed with a 32-byte ``key``.

    ``fsync``: True (the default; after every append call), False (never: a
    killed process loses nothing, a power cut may lose recent records) or a number
    of seconds (at most that often). Opening repairs a torn tail and refuses other
    damage with ``AuditError``; one writer at a time holds the file's lock.
    """

    def __init__(self, path: StrPath, *, key: bytes, fsync: object = None) -> None:
        self._key = _key(key)
        self._fsync = _fsync_policy(fsync)
        self._path = Path(path)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)
        self._file: BinaryIO = os.fdopen(fd, "r+b")
        self._closed = False
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise OSError(
                        f"cannot lock {self._path}: the log is already open for "
                        "appending (by this or another process); one log has one "
                        "writer: give each process its own with "
                        "hopgate.audit_worker_log(directory, key=...)"
                    ) from None
            self._records = 0
            self._recovered = 0
            self._head = blake3(header(self._key)).digest()
            self._offsets: list[int] = []
            self._last_sync = time.monotonic()
            self._unsynced = False
            # One appender at a time: gates and settling reservations share the log
            # across threads. Reentrant, because a settling reservation holds it while
            # it settles the ledger and appends its record. The garbage collector may
            # forfeit a reservation on any thread at any point, possibly one that is
            # appending or holds the ledger's lock: its record never waits for this
            # lock but goes to _deferred, written by the next append.
            self._lock = threading.RLock()
            self._appending = False
            self._deferred: deque[bytes] = deque()
            self._open()
        except BaseException:
            self._closed = True
            self._file.close()
            raise

    # -- opening -------------------------------------------------------------

    def _open(self) -> None:
        self._file.seek(0)
        data = self._file.read()
        want = header(self._key)
        if len(data) < HEADER_LEN:
            if data != want[: len(data)]:
                raise _damaged(None, 0, "not a hopgate audit log (a short file that is not a header)")
            self._file.truncate(0)
            self._file.write(want)
            self._sync_new()
            self._end = HEADER_LEN
            return
        problem = _header_problem(data[:HEADER_LEN], self._key)
        if problem is not None:
            raise _damaged(None, 0, problem)
        zero_from = len(data.rstrip(b"\0"))
        zero_from = max(zero_from, HEADER_LEN)
        before = self._head
        ring: list[_Frame] = []
        index = 0
        try:
            for f in _frames(data, zero_from):
                ring.append(f)
                if len(ring) > 2:
                    before = ring.pop(0).chain
                self._offsets.append(f.offset)
                index = f.index + 1
        except _TooLong as e:
            raise _damaged(
                e.index,
                e.offset,
                f"the record length exceeds the limit of {MAX_RECORD} bytes; run `hopgate audit verify`",
            ) from None
        keep, keep_end, head = self._keep(ring, before, zero_from, index)
        self._records = keep
        self._head = head
        del self._offsets[keep:]
        self._end = keep_end
        if keep_end < len(data):
            self._file.truncate(keep_end)
            self._recovered = len(data) - keep_end
            if self._fsync is not None:
                self._file.flush()
                os.fsync(self._file.fileno())

    def _keep(self, ring: list[_Frame], before: bytes, zero_from: int, records: int) -> tuple[int, int, bytes]:
        """What stays: the same rule as the native log (SPEC §9.4, torn tail)."""
        if not ring:
            return 0, HEADER_LEN, self._head
        last = ring[-1]
        prev_chain = ring[-2].chain if len(ring) == 2 else before
        if last.holds(self._key, prev_chain):
            return records, last.end, last.chain
        if len(ring) == 1 and zero_from < last.end:
            return records - 1, last.offset, self._head
        if len(ring) == 2 and zero_from < last.end and ring[0].holds(self._key, before):
            return records - 1, last.offset, ring[0].chain
        raise _damaged(
            last.index,
            last.offset,
            "the last record does not verify and is not a torn tail; run `hopgate audit verify`",
        )

    def _sync_new(self) -> None:
        if self._fsync is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        if hasattr(os, "O_DIRECTORY"):
            fd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- appending -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InputError(f"invalid audit log: {self._path} is closed")

    def append(self, record: bytes) -> Receipt:
        """Append one record; returns its ``Receipt``."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[bytes], offsets: object = None) -> list[Receipt]:
        """Append records in one write; returns their receipts in order."""
        return self._append(batch_items(records, offsets, "records"), urgent=True)

    def _append(self, bodies: Sequence[bytes], *, urgent: bool) -> list[Receipt]:
        """Append ``bodies``; ``urgent=False`` skips the sync an fsync=True log
        would force (the records reach the disk with the next urgent append, a
        ``sync`` or ``close``), for records nobody is owed."""
        with self._lock:
            self._check_open()
            self._appending = True
            try:
                receipts = self._append_now(bodies, urgent)
            finally:
                self._appending = False
            self._flush_deferred()
            return receipts

    def _flush_deferred(self) -> None:
        while self._deferred:
            late = []
            while self._deferred:
                late.append(self._deferred.popleft())
            self._append_now(late, True)

    def _append_later(self, body: bytes) -> None:
        """Append ``body`` now, or after the append under way on this thread; errors
        are dropped (a forfeit has nobody to report to, and a broken log fails the
        next append)."""
        if not self._lock.acquire(blocking=False):
            self._deferred.append(body)
            return
        try:
            if self._appending:
                self._deferred.append(body)
                return
            self._append([body], urgent=True)
        except (OSError, InputError):
            pass
        finally:
            self._lock.release()

    def _append_now(self, bodies: Sequence[bytes], urgent: bool) -> list[Receipt]:
        for i, body in enumerate(bodies):
            if len(body) > MAX_RECORD:
                raise InputError(f"invalid record: record {i} is longer than {MAX_RECORD} bytes")
        if not bodies:
            return []
        out = bytearray()
        receipts = []
        head = self._head
        offsets_new = []
        for i, body in enumerate(bodies):
            index = self._records + i
            head = _link(head, body)
            tag = _tag(self._key, index, head)
            offsets_new.append(self._end + len(out))
            out += len(body).to_bytes(4, "little") + body + head + tag
            receipts.append(Receipt(index, head, tag))
        try:
            self._file.seek(self._end)
            self._file.write(out)
            self._file.flush()
        except OSError:
            self._file.truncate(self._end)
            raise
        self._unsynced = True
        interval = self._fsync
        if interval is not None and time.monotonic() - self._last_sync >= interval and (urgent or interval > 0):
            self.sync()
        self._records += len(bodies)
        self._offsets.extend(offsets_new)
        self._end += len(out)
        self._head = head
        return receipts

    @property
    def unsynced(self) -> bool:
        """True while records have been written since the last sync (with
        ``fsync=True``, only a gate's refusals)."""
        return self._unsynced

    def sync(self) -> None:
        """Force appended records to the disk now."""
        with self._lock:
            self._check_open()
            if self._unsynced:
                os.fsync(self._file.fileno())
                self._unsynced = False
            self._last_sync = time.monotonic()

    def close(self) -> None:
        """Sync and let go of the file; later appends raise. Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            if self._fsync is not None:
                self.sync()
            self._closed = True
            self._file.close()

    # -- reading and checking ------------------------------------------------

    def read(self, start: int = 0, stop: Optional[int] = None) -> list[bytes]:
        """The bodies of records ``start`` up to (not including) ``stop``."""
        with self._lock:
            self._check_open()
            stop = self._records if stop is None else min(stop, self._records)
            out = []
            for i in range(start, stop):
                self._file.seek(self._offsets[i])
                size = int.from_bytes(self._file.read(4), "little")
                out.append(self._file.read(size))
            return out

    def verify(self, progress: Progress = None) -> AuditReport:
        """Check every record; returns an ``AuditReport``."""
        with open(self._path, "rb") as f:
            return _verify_bytes(f.read(self._end), self._key, progress)

    def verify_receipt(self, receipt: Receipt) -> bool:
        """True iff ``receipt`` was made with this log's key and the log still holds
        its chain value at its index."""
        self._check_open()
        if not isinstance(receipt, Receipt):
            raise TypeError(f"receipt: expected a hopgate.reference.Receipt, got {type(receipt).__name__}")
        with self._lock:
            if not receipt.is_authentic(self._key) or receipt.index >= self._records:
                return False
            self._file.seek(self._offsets[receipt.index])
            size = int.from_bytes(self._file.read(4), "little")
            self._file.seek(size, os.SEEK_CUR)
            return hmac.compare_digest(self._file.read(32), receipt.chain)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def path(self) -> Path:
        return self._path

    @property
    def head(self) -> bytes:
        """The last chain value (BLAKE3 of the header for an empty log)."""
        return self._head

    @property
    def recovered(self) -> int:
        """Bytes of torn tail cut off when the log was opened (0 if none)."""
        return self._recovered

    def __len__(self) -> int:
        return self._records

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Literal[False]:
        self.close()
        return False

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_unsynced", False) and self._fsync is not None:
            try:
                os.fsync(self._file.fileno())
            except (OSError, ValueError):
                pass

    def __repr__(self) -> str:
        return f"AuditLog({str(self._path)!r}, records={self._records}, closed={self._closed})"
