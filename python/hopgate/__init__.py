"""hopgate: verify agent delegation chains and enforce spending budgets at line rate.

The public API (SPEC §7) is the same whichever implementation backs it: the native
Rust core (``hopgate._native``), or, where no wheel exists for the platform, the
pure-Python ``hopgate.reference``. ``hopgate.BACKEND`` says which one is in use.

Falling back to the reference is never silent: importing hopgate then warns
(``RuntimeWarning``) with the reason the native module could not be imported. When the
reference cannot be imported either (its dependencies come with the ``reference`` extra),
importing hopgate raises an ``ImportError`` that names both causes.
"""

from __future__ import annotations

import warnings

from ._audit import (
    AuditLogsReport,
    AuditReport,
    GateRecord,
    LogCopy,
    SettleRecord,
    Settlement,
    audit_verify_logs,
    audit_worker_log,
)
from ._codes import REASONS, Code
from ._decision import Account, Decision, ReceiptLike, Requirement, ReservationLike
from ._key_cache import KeyCacheInfo
from .errors import (
    AffineError,
    AuditError,
    LeaseExpiredError,
    StoreError,
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
        key_cache_clear,
        key_cache_info,
        key_cache_resize,
        mac_many,
        parse_invocation,
        sha256_many,
        to_text,
        verify,
        verify_batch,
        verify_chains,
    )

    BACKEND = "native"
except ImportError as native_error:  # no wheel for this platform, or a broken install
    try:
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
            key_cache_clear,
            key_cache_info,
            key_cache_resize,
            mac_many,
            parse_invocation,
            sha256_many,
            to_text,
            verify,
            verify_batch,
            verify_chains,
        )
    except ImportError as reference_error:
        raise ImportError(
            f"hopgate cannot import its native module ({native_error}), and the pure-Python "
            f"reference it falls back to cannot be imported either ({reference_error}): it needs "
            "the reference extra, pip install 'hopgate[reference]' (or install a hopgate wheel "
            "built for this platform)"
        ) from reference_error
    warnings.warn(
        f"hopgate: the native module cannot be imported ({native_error}); using the pure-Python "
        "reference, hopgate.reference (the same decisions, far slower)",
        RuntimeWarning,
        stacklevel=2,
    )
    BACKEND = "reference"


def _version() -> str:
    """The installed distribution's version; "0+unknown" when its metadata is missing
    (the package imported from a source tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hopgate")
    except PackageNotFoundError:
        return "0+unknown"


__version__: str = _version()

__all__ = [
    "BACKEND",
    "REASONS",
    "Account",
    "AffineError",
    "AuditError",
    "LeaseExpiredError",
    "StoreError",
    "InternalError",
    "AuditLog",
    "AuditLogsReport",
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
    "LogCopy",
    "MalformedError",
    "OverrunError",
    "Receipt",
    "ReceiptLike",
    "Requirement",
    "Reservation",
    "ReservationLike",
    "SettleRecord",
    "Settlement",
    "SigningKey",
    "audit_verify",
    "audit_verify_logs",
    "audit_worker_log",
    "blake3",
    "blake3_many",
    "from_text",
    "hash_backend",
    "KeyCacheInfo",
    "key_cache_clear",
    "key_cache_info",
    "key_cache_resize",
    "mac_many",
    "parse_invocation",
    "sha256_many",
    "to_text",
    "verify",
    "verify_batch",
    "verify_chains",
]
