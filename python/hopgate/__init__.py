"""hopgate: verify agent delegation chains and enforce spending budgets at line rate.

The public API (SPEC §7) is the same whichever implementation backs it: the native
Rust core (``hopgate._native``), or, where no wheel exists for the platform, the
pure-Python ``hopgate.reference``. ``hopgate.BACKEND`` says which one is in use.
"""

from __future__ import annotations

from ._audit import AuditReport, GateRecord, SettleRecord, Settlement
from ._codes import REASONS, Code
from ._decision import Account, Decision, Requirement
from .errors import (
    AffineError,
    AuditError,
    InternalError,
    BudgetExhaustedError,
    DelegationError,
    HopgateError,
    InputError,
    MalformedError,
    OverrunError,
)

try:
    from ._native import (
        AuditLog,
        Budget,
        Chain,
        Gate,
        Invocation,
        Ledger,
        Link,
        Receipt,
        Reservation,
        SigningKey,
        audit_verify,
        blake3,
        blake3_many,
        from_text,
        hash_backend,
        mac_many,
        parse_invocation,
        sha256_many,
        to_text,
        verify,
        verify_batch,
        verify_chains,
    )

    BACKEND = "native"
except ImportError:  # pragma: no cover - exercised only where no wheel exists
    from .reference import (  # type: ignore[assignment]
        AuditLog,
        Budget,
        Chain,
        Gate,
        Invocation,
        Ledger,
        Link,
        Receipt,
        Reservation,
        SigningKey,
        audit_verify,
        blake3,
        blake3_many,
        from_text,
        hash_backend,
        mac_many,
        parse_invocation,
        sha256_many,
        to_text,
        verify,
        verify_batch,
        verify_chains,
    )

    BACKEND = "reference"

__all__ = [
    "BACKEND",
    "REASONS",
    "Account",
    "AffineError",
    "AuditError",
    "InternalError",
    "AuditLog",
    "AuditReport",
    "Budget",
    "BudgetExhaustedError",
    "Chain",
    "Code",
    "Decision",
    "DelegationError",
    "Gate",
    "GateRecord",
    "HopgateError",
    "InputError",
    "Invocation",
    "Ledger",
    "Link",
    "MalformedError",
    "OverrunError",
    "Receipt",
    "Requirement",
    "Reservation",
    "SettleRecord",
    "Settlement",
    "SigningKey",
    "audit_verify",
    "blake3",
    "blake3_many",
    "from_text",
    "hash_backend",
    "mac_many",
    "parse_invocation",
    "sha256_many",
    "to_text",
    "verify",
    "verify_batch",
    "verify_chains",
]
