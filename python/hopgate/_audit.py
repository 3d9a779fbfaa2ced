"""What audit logs answer, shared by the native log and the reference log.

The file format, the torn-tail rule and the receipts are described in
``docs/SPEC.md`` §9 and in the core's ``audit`` module.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple, Optional

from ._codes import Code

__all__ = [
    "AccountSpending",
    "AuditReport",
    "GateRecord",
    "GATE_RECORD_KIND",
    "GATE_RECORD_LEN",
    "SETTLE_RECORD_KIND",
    "SettleRecord",
    "Settlement",
    "Spending",
    "log_records",
    "spending",
]

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
    log.seek(HEADER_LEN)
    pos = HEADER_LEN
    while pos < end:
        head = log.read(4)
        size = int.from_bytes(head, "little")
        if len(head) < 4 or pos + 4 + size + _FRAME_TRAILER > end:
            raise ValueError(f"a frame at offset {pos} is cut short")
        body = log.read(size)
        log.seek(_FRAME_TRAILER, 1)
        yield body
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
    out = Spending({})
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
