"""What audit logs answer, shared by the native log and the reference log.

The file format, the torn-tail rule and the receipts are described in
``docs/FORMAT.md`` ("Audit log") and in the core's ``audit`` module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

from ._codes import Code

__all__ = ["AuditReport", "GateRecord", "GATE_RECORD_KIND", "GATE_RECORD_LEN"]

#: First byte of a gate's record ("G").
GATE_RECORD_KIND = 0x47
#: Bytes in a gate's record.
GATE_RECORD_LEN = 2 + 8 + 32 + 32


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
