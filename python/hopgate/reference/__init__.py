"""hopgate.reference: the pure-Python implementation of hopgate.

Idiomatic Python over PyNaCl (libsodium), hashlib and blake3-py, with the same
API and the same decisions as the native module: the honest baseline that
benchmarks compare against, and the oracle of the differential tests.

Where libsodium's Ed25519 rule differs from SPEC §3 (it checks the cofactorless
equation), ``verify`` adds the missing checks in Python; see ``_ed25519``. The
drop-in rules (``verify(..., rule="libsodium")`` and ``rule="openssl"``) are answered
by PyNaCl and pyca/cryptography themselves.
"""

from __future__ import annotations

from .._audit import AuditLogsReport, AuditReport, GateRecord, LogCopy, SettleRecord, Settlement
from .._codes import Code
from .._decision import Account, Decision, Requirement
from ..errors import (
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
from ._audit import AuditLog, Receipt, audit_verify
from ._audit_workers import audit_verify_logs, audit_worker_log
from ._chain import Chain, verify_chains
from ._ed25519 import (
    DEFAULT_KEY_CACHE_CAPACITY,
    SigningKey,
    key_cache_clear,
    key_cache_info,
    key_cache_resize,
    verify,
    verify_batch,
)
from ._gate import Gate
from ._jose import jws_split
from ._hdp import canonical_json, hdp_verify
from ._biscuit import biscuit_verify
from ._hash import blake3, blake3_many, hash_backend, mac_many, sha256_many
from ._ledger import Budget, Ledger, Reservation
from ._wire import Invocation, Link, from_text, parse_invocation, to_text

__all__ = [
    "Code",
    "HopgateError",
    "MalformedError",
    "DelegationError",
    "InputError",
    "AffineError",
    "OverrunError",
    "BudgetExhaustedError",
    "SettleRecord",
    "Settlement",
    "SigningKey",
    "verify",
    "verify_batch",
    "DEFAULT_KEY_CACHE_CAPACITY",
    "key_cache_clear",
    "key_cache_info",
    "key_cache_resize",
    "Chain",
    "Link",
    "Invocation",
    "verify_chains",
    "jws_split",
    "hdp_verify",
    "canonical_json",
    "biscuit_verify",
    "blake3",
    "blake3_many",
    "mac_many",
    "sha256_many",
    "hash_backend",
    "parse_invocation",
    "from_text",
    "to_text",
    "Ledger",
    "Budget",
    "Reservation",
    "Gate",
    "Decision",
    "Requirement",
    "Account",
    "AuditError",
    "LeaseExpiredError",
    "StoreError",
    "InternalError",
    "AuditLog",
    "AuditLogsReport",
    "AuditReport",
    "GateRecord",
    "LogCopy",
    "Receipt",
    "audit_verify",
    "audit_verify_logs",
    "audit_worker_log",
]
