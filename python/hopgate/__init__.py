"""hopgate: verify agent delegation chains and enforce spending budgets at line rate.

The public API (SPEC §7) is the same whichever implementation backs it: the native
Rust core (``hopgate._native``), or, where no wheel exists for the platform, the
pure-Python ``hopgate.reference``. ``hopgate.BACKEND`` says which one is in use.
"""

from __future__ import annotations

from ._codes import REASONS, Code
from ._decision import Account, Decision
from .errors import (
    AffineError,
    BudgetExhaustedError,
    DelegationError,
    HopgateError,
    InputError,
    MalformedError,
    OverrunError,
)

try:
    from ._native import (
        Budget,
        Chain,
        Gate,
        Ledger,
        Link,
        Reservation,
        SigningKey,
        blake3_many,
        sha256_many,
        verify,
        verify_batch,
        verify_chains,
    )

    BACKEND = "native"
except ImportError:  # pragma: no cover - exercised only where no wheel exists
    from .reference import (  # type: ignore[assignment]
        Budget,
        Chain,
        Gate,
        Ledger,
        Link,
        Reservation,
        SigningKey,
        blake3_many,
        sha256_many,
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
    "Budget",
    "BudgetExhaustedError",
    "Chain",
    "Code",
    "Decision",
    "DelegationError",
    "Gate",
    "HopgateError",
    "InputError",
    "Ledger",
    "Link",
    "MalformedError",
    "OverrunError",
    "Reservation",
    "SigningKey",
    "blake3_many",
    "sha256_many",
    "verify",
    "verify_batch",
    "verify_chains",
]
