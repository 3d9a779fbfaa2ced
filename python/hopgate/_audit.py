"""What audit logs answer, shared by the native log and the reference log.

The file format, the torn-tail rule and the receipts are described in
``docs/SPEC.md`` §9 and in the core's ``audit`` module. Several processes that
audit (the workers of one service) each write a log of their own in one
directory (``open_worker_log``); ``verify_logs`` checks such a directory and
``AuditLogsReport.spending`` sums its settlements (SPEC §9.5).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, Optional, TypeVar, Union

from ._codes import Code
from .errors import AuditError

if TYPE_CHECKING:
    from ._native import AuditLog

__all__ = [
    "AccountSpending",
    "AuditLogsReport",
    "AuditReport",
    "GateRecord",
    "GATE_RECORD_KIND",
    "GATE_RECORD_LEN",
    "LogCopy",
    "SETTLE_RECORD_KIND",
    "SettleRecord",
    "Settlement",
    "Spending",
    "audit_log_files",
    "audit_verify_logs",
    "audit_worker_log",
    "log_records",
    "open_worker_log",
    "spending",
    "verify_logs",
]

StrPath = Union[str, "os.PathLike[str]"]
logger = logging.getLogger("hopgate.audit")

#: First byte of a gate's record ("G").
GATE_RECORD_KIND = 0x47
#: Bytes in a gate's record.
GATE_RECORD_LEN = 2 + 8 + 32 + 32
#: First byte of a settlement record ("S").
SETTLE_RECORD_KIND = 0x53
_SETTLE_FIXED = 2 + 8 + 8 + 32 + 1
#: Bytes in a log's header, and what a frame adds around its body (length, chain value,
#: tag): the framing every reader of a log walks.
HEADER_LEN = 32
FRAME_OVERHEAD = 4 + 32 + 32
_FRAME_TRAILER = FRAME_OVERHEAD - 4


@dataclass(frozen=True)
class AuditReport:
    """The result of verifying an audit log.

    ``records`` and ``bytes`` count what verified (everything when ``ok``). When
    something did not, ``reason`` says what, ``offset`` is the byte offset of the
    bad frame, and ``first_bad`` is its record index (``None`` when the header
    itself is bad: wrong magic, version or key).
    """

    records: int
    bytes: int
    first_bad: Optional[int] = None
    offset: Optional[int] = None
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True iff the whole log verified."""
        return self.reason is None

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.records} records, {self.bytes} bytes"
        where = "the header" if self.first_bad is None else f"record {self.first_bad}"
        return f"BAD at {where} (offset {self.offset}): {self.reason}"


class GateRecord(NamedTuple):
    """The record a gate appends for one decision:
    ``"G" | code u8 | now u64 LE | BLAKE3(chain) | BLAKE3(invocation)``."""

    code: Code
    now: int
    chain_digest: bytes
    invocation_digest: bytes

    @classmethod
    def from_bytes(cls, record: bytes) -> GateRecord:
        """Decodes a gate's record; ``ValueError`` for anything else."""
        record = bytes(record)
        if len(record) != GATE_RECORD_LEN or record[0] != GATE_RECORD_KIND:
            raise ValueError(
                f"not a gate record: expected {GATE_RECORD_LEN} bytes starting with 'G', "
                f"got {len(record)} bytes"
            )
        return cls(
            Code(record[1]),
            int.from_bytes(record[2:10], "little"),
            record[10:42],
            record[42:74],
        )

    def to_bytes(self) -> bytes:
        """The record's bytes, as the gate writes them."""
        return (
            bytes([GATE_RECORD_KIND, int(self.code)])
            + self.now.to_bytes(8, "little")
            + self.chain_digest
            + self.invocation_digest
        )


class Settlement(enum.IntEnum):
    """How a gate's reservation was settled (the second byte of its record)."""

    COMMIT = 1
    RELEASE = 2
    FORFEIT = 3


class SettleRecord(NamedTuple):
    """The record a gate's reservation appends when it is settled:
    ``"S" | kind u8 | reserved u64 LE | charged u64 LE | BLAKE3(invocation) | n u8
    | account id (32) * n``, the chain's accounts root first. The invocation digest
    links it to the gate's record of the decision."""

    kind: Settlement
    reserved: int
    charged: int
    invocation_digest: bytes
    accounts: tuple[bytes, ...]

    @property
    def overrun(self) -> int:
        """What was charged beyond the reservation."""
        return max(0, self.charged - self.reserved)

    @classmethod
    def from_bytes(cls, record: bytes) -> SettleRecord:
        """Decodes a settlement record; ``ValueError`` for anything else."""
        record = bytes(record)
        if len(record) < _SETTLE_FIXED or record[0] != SETTLE_RECORD_KIND:
            raise ValueError(f"not a settlement record: {len(record)} bytes starting with {record[:1]!r}")
        n = record[_SETTLE_FIXED - 1]
        if len(record) != _SETTLE_FIXED + 32 * n or record[1] not in Settlement._value2member_map_:
            raise ValueError(f"not a settlement record: kind {record[1]}, {n} accounts in {len(record)} bytes")
        accounts = tuple(record[_SETTLE_FIXED + 32 * i : _SETTLE_FIXED + 32 * (i + 1)] for i in range(n))
        return cls(
            Settlement(record[1]),
            int.from_bytes(record[2:10], "little"),
            int.from_bytes(record[10:18], "little"),
            record[18:50],
            accounts,
        )

    def to_bytes(self) -> bytes:
        """The record's bytes, as a settled reservation writes them."""
        return (
            bytes([SETTLE_RECORD_KIND, int(self.kind)])
            + self.reserved.to_bytes(8, "little")
            + self.charged.to_bytes(8, "little")
            + self.invocation_digest
            + bytes([len(self.accounts)])
            + b"".join(self.accounts)
        )


def log_records(log: BinaryIO, end: int) -> Iterator[bytes]:
    """The record bodies of an audit log, read one frame at a time from the open
    file ``log`` up to byte ``end``. It only walks the framing: verify the log first
    (``audit_verify``) and pass the verified length (``report.bytes``); ``ValueError``
    where the framing does not hold."""
    for body, _ in _frames(log, end):
        yield body


def _frames(log: BinaryIO, end: int) -> Iterator[tuple[bytes, bytes]]:
    """``(body, stored chain value)`` of each frame up to byte ``end`` (``log_records``)."""
    log.seek(HEADER_LEN)
    pos = HEADER_LEN
    while pos < end:
        head = log.read(4)
        size = int.from_bytes(head, "little")
        if len(head) < 4 or pos + 4 + size + _FRAME_TRAILER > end:
            raise ValueError(f"a frame at offset {pos} is cut short")
        body = log.read(size)
        trailer = log.read(_FRAME_TRAILER)
        if len(body) < size or len(trailer) < _FRAME_TRAILER:
            raise ValueError(f"a frame at offset {pos} is cut short")
        yield body, trailer[:32]
        pos += 4 + size + _FRAME_TRAILER


@dataclass
class Spending:
    """What an audit log says was spent, per account, and how many records it could
    not read as settlements although they start like one (another application's
    records: ``AuditLog.append`` takes any bytes)."""

    accounts: dict[bytes, AccountSpending]
    unreadable: int = 0


@dataclass
class AccountSpending:
    """What an audit log says was spent through one account."""

    spent: int = 0
    overrun: int = 0
    commits: int = 0
    releases: int = 0
    forfeits: int = 0
    reserved: int = 0


def spending(records: Iterable[bytes]) -> Spending:
    """Spending per account id, summed over the settlement records among
    ``records``; other records are skipped, and counted when they start with the
    settlement kind but do not decode as one."""
    return _add_spending(Spending({}), records)


def _add_spending(out: Spending, records: Iterable[bytes]) -> Spending:
    for body in records:
        if not body or body[0] != SETTLE_RECORD_KIND:
            continue
        try:
            record = SettleRecord.from_bytes(body)
        except ValueError:
            out.unreadable += 1
            continue
        for account in record.accounts:
            entry = out.accounts.setdefault(account, AccountSpending())
            entry.spent += record.charged
            entry.overrun += record.overrun
            entry.reserved += record.reserved
            if record.kind is Settlement.COMMIT:
                entry.commits += 1
            elif record.kind is Settlement.RELEASE:
                entry.releases += 1
            else:
                entry.forfeits += 1
    return out


# ---------------------------------------------------------------------------
# Several processes: one log each, in one directory (SPEC §9.5)
# ---------------------------------------------------------------------------

_L = TypeVar("_L")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9.-]+")
_NAME_ATTEMPTS = 8


def worker_log_name() -> str:
    """A new file name for this process's log: ``<UTC time>-<host>-<pid>-<random>.log``,
    for example ``20260101T120000.123456Z-web1-4242-9f86d081.log``.

    The time (to the microsecond) and 32 random bits tell apart two processes of one
    host that had the same pid one after the other, so a name is never reused; in name
    order, the logs of a directory are in the order their processes opened them (by
    their hosts' clocks). The name is informative only: verifiers do not read it.
    """
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000))
    host = _NOT_IN_NAME.sub("_", socket.gethostname())[:64] or "host"
    return f"{stamp}.{now // 1000 % 1_000_000:06d}Z-{host}-{os.getpid()}-{secrets.token_hex(4)}.log"


def open_worker_log(open_log: Callable[[Path], _L], directory: StrPath) -> _L:
    """A new log of this process alone: creates a file with a name of its own in
    ``directory`` (``worker_log_name``; created exclusively, so no two processes ever
    share one) and returns ``open_log(path)``, which writes its header.

    ``directory`` must exist. A failure is logged at CRITICAL (logger
    ``hopgate.audit``: a worker that cannot audit must not fade away unnoticed) and
    raised; the file, if it was created, is removed.
    """
    folder = Path(directory)
    path: Optional[Path] = None
    try:
        for attempt in range(_NAME_ATTEMPTS):
            candidate = folder / worker_log_name()
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            except FileExistsError:
                if attempt + 1 == _NAME_ATTEMPTS:
                    raise
                continue
            os.close(fd)
            path = candidate
            break
        assert path is not None
        return open_log(path)
    except Exception as e:
        if path is not None:
            try:
                os.unlink(path)
            except OSError:
                pass
        logger.critical(
            "hopgate: process %d cannot open an audit log of its own in %s (%s: %s); it cannot "
            "record decisions, so it must not serve",
            os.getpid(), folder, type(e).__name__, e,
        )
        raise


def audit_log_files(directory: StrPath) -> list[Path]:
    """The logs a directory holds, as ``audit_verify_logs`` reads it: every regular file
    directly in it (symbolic links followed) whose name does not start with ``.``, in
    name order. Subdirectories are not read."""
    with os.scandir(directory) as entries:
        found = [(entry.name, Path(entry.path)) for entry in entries if not entry.name.startswith(".") and entry.is_file()]
    return [path for _, path in sorted(found)]


class LogCopy(NamedTuple):
    """A log whose first ``records`` records are those of ``original``, among them
    ``settlements`` settlement records: a copy of that log, or of its beginning,
    whose spending would be counted twice. Two workers' logs start alike only when
    their first decisions were the same request at the same second; that they also
    share a settlement would take one reservation settled in two processes."""

    original: Path
    records: int
    settlements: int

    def __str__(self) -> str:
        return (
            f"a copy of {self.original}: its first {self.records} records, {self.settlements} "
            "settlements among them, are that log's (they would be counted twice)"
        )


@dataclass(frozen=True)
class AuditLogsReport:
    """The result of verifying several audit logs (a directory of worker logs).

    ``logs`` holds each log's ``AuditReport``, in name order; an empty file (a process
    stopped between creating its log and writing the header) is a log without records.
    ``copies`` names the logs that repeat another log's settlements (``LogCopy``). The
    logs verify (``ok``) when every one does and none is a copy; only then does
    ``spending()`` sum them.
    """

    logs: Mapping[Path, AuditReport]
    copies: Mapping[Path, LogCopy] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True iff every log verified and none is a copy of another."""
        return not self.copies and all(report.ok for report in self.logs.values())

    @property
    def records(self) -> int:
        """Records that verified, in all the logs."""
        return sum(report.records for report in self.logs.values())

    @property
    def bytes(self) -> int:
        """Bytes that verified, in all the logs."""
        return sum(report.bytes for report in self.logs.values())

    @property
    def problems(self) -> list[tuple[Path, str]]:
        """Each log that does not verify or is a copy, with what is wrong, in name order."""
        out: list[tuple[Path, str]] = []
        for path, report in self.logs.items():
            if not report.ok:
                out.append((path, str(report)))
            elif path in self.copies:
                out.append((path, f"BAD: {self.copies[path]}"))
        return out

    def spending(self) -> Spending:
        """Spending per account, summed over the settlement records of every log (each
        read up to its verified length, one frame at a time). ``AuditError`` naming the
        first bad log unless ``ok``: a sum over logs that do not verify means nothing."""
        if not self.ok:
            path, problem = self.problems[0]
            report = self.logs[path]
            if report.ok:  # a copy: its very first record repeats another log's
                raise AuditError(f"{path}: {problem}", 0, HEADER_LEN)
            raise AuditError(f"{path}: {problem}", report.first_bad, report.offset or 0)
        out = Spending({})
        for path, report in self.logs.items():
            if report.records:
                with open(path, "rb") as f:
                    _add_spending(out, log_records(f, report.bytes))
        return out

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        problems = dict(self.problems)
        lines = [f"{path}: {problems.get(path, report)}" for path, report in self.logs.items()]
        if problems:
            lines.append(f"BAD: {len(problems)} of {len(self.logs)} logs")
        else:
            lines.append(f"OK: {len(self.logs)} logs, {self.records} records, {self.bytes} bytes")
        return "\n".join(lines)


def verify_logs(
    logs: Union[StrPath, Iterable[StrPath]], *, key: bytes, verify: Callable[..., AuditReport]
) -> AuditLogsReport:
    """Verifies several logs with ``verify(path, key=key)`` (``audit_verify`` of one
    implementation): ``logs`` is a directory (``audit_log_files``), a file, or several
    of either. A file named twice, or by two links, is read once. Then looks for copies
    among the logs that verified (``LogCopy``).

    ``FileNotFoundError`` when there is no log at all (an empty directory); the
    ``OSError`` of a log that cannot be read.
    """
    given = [logs] if isinstance(logs, (str, os.PathLike)) else list(logs)
    paths: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for item in given:
        for path in audit_log_files(item) if os.path.isdir(item) else [Path(item)]:
            info = path.stat()
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                paths.append(path)
    if not paths:
        where = ", ".join(os.fspath(item) for item in given)
        raise FileNotFoundError(errno.ENOENT, "no audit log to verify (no regular file)", where)
    reports: dict[Path, AuditReport] = {}
    for path in paths:
        # No header yet: nothing was ever appended (the header is written, and synced,
        # before the log is handed out). Cutting a log to nothing is as visible as
        # deleting it, that is, not at all (SPEC §9.5).
        empty = os.path.getsize(path) == 0
        reports[path] = AuditReport(0, 0) if empty else verify(path, key=key)
    return AuditLogsReport(reports, _copies({p: r for p, r in reports.items() if r.ok and r.records}))


def _copies(logs: Mapping[Path, AuditReport]) -> dict[Path, LogCopy]:
    """The logs that share their first records, settlements among them, with a log
    earlier in name order. Two logs that verified with one key and share the chain
    value after record 0 share record 0 (BLAKE3 is collision resistant), so only
    logs that share a first chain value are compared, record by record."""
    by_first: dict[bytes, list[Path]] = {}
    for path in logs:
        with open(path, "rb") as f:
            f.seek(HEADER_LEN)
            size = int.from_bytes(f.read(4), "little")
            f.seek(HEADER_LEN + 4 + size)
            by_first.setdefault(f.read(32), []).append(path)
    copies: dict[Path, LogCopy] = {}
    for group in by_first.values():
        for i, later in enumerate(group):
            for earlier in group[:i]:
                if earlier in copies:
                    continue
                shared, settlements = _shared_prefix(earlier, logs[earlier].bytes, later, logs[later].bytes)
                if settlements:
                    copies[later] = LogCopy(earlier, shared, settlements)
                    break
    return copies


def _shared_prefix(a: Path, a_end: int, b: Path, b_end: int) -> tuple[int, int]:
    """(records, settlement records) that logs ``a`` and ``b`` share from their start."""
    shared = settlements = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for (body, chain), (_, other) in zip(_frames(fa, a_end), _frames(fb, b_end)):
            if chain != other:
                break
            shared += 1
            if body[:1] == bytes([SETTLE_RECORD_KIND]) and _is_settlement(body):
                settlements += 1
    return shared, settlements


def _is_settlement(body: bytes) -> bool:
    try:
        SettleRecord.from_bytes(body)
    except ValueError:
        return False
    return True


# The bindings of the implementation that ``hopgate`` imported (native, or the
# reference where there is no native module); ``hopgate.reference`` has its own.


def audit_worker_log(directory: StrPath, *, key: bytes, fsync: Union[bool, float, None] = None) -> AuditLog:
    """A new ``AuditLog`` of this process alone, in ``directory`` shared with the other
    processes of the service (the workers of ``uvicorn --workers N``, of gunicorn, ...).

    One log has one writer: ``AuditLog(path)`` on a file that another process holds
    raises ``OSError``. Each process calling this gets a file of its own, named after
    the time, the host and the process (``worker_log_name``), so that a restarted
    worker never appends to another's log. ``key`` and ``fsync`` are ``AuditLog``'s;
    all the logs of a directory take one key. Verify and sum them together with
    ``audit_verify_logs(directory, key=key)`` or ``hopgate audit verify DIR``
    (SPEC §9.5). ``directory`` must exist; a failure is logged at CRITICAL (logger
    ``hopgate.audit``) and raised.
    """
    from . import AuditLog as open_log

    return open_worker_log(lambda path: open_log(path, key=key, fsync=fsync), directory)


def audit_verify_logs(logs: Union[StrPath, Iterable[StrPath]], *, key: bytes) -> AuditLogsReport:
    """Verifies every log of a directory of worker logs (``audit_worker_log``), or the
    logs given, and looks for copies among them; ``report.spending()`` then sums their
    settlements. ``logs``: a directory (every regular file in it whose name does not
    start with ``.``), a file, or several of either. See ``verify_logs``."""
    from . import audit_verify

    return verify_logs(logs, key=key, verify=audit_verify)
