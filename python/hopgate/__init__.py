"""hopgate: verify agent delegation chains and enforce spending budgets at line rate.

The public API (SPEC §7) is the same whichever implementation backs it: the native
Rust core (``hopgate._native``), or, where no wheel exists for the platform, the
pure-Python ``hopgate.reference``. ``hopgate.BACKEND`` says which one is in use.
"""

from __future__ import annotations

from ._codes import Code
from .errors import DelegationError, HopgateError, InputError, MalformedError

try:
    from ._native import (
        Chain,
        Link,
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
        Chain,
        Link,
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
    "Chain",
    "Code",
    "DelegationError",
    "HopgateError",
    "InputError",
    "Link",
    "MalformedError",
    "SigningKey",
    "blake3_many",
    "sha256_many",
    "verify",
    "verify_batch",
    "verify_chains",
]
