"""The exception tree of hopgate, shared by the native core and the reference.

The native module raises these same classes (it imports them), so
``except hopgate.MalformedError`` works whichever implementation is in use.
"""

from __future__ import annotations

from ._codes import Code

__all__ = [
    "HopgateError",
    "MalformedError",
    "DelegationError",
    "InputError",
    "AffineError",
    "OverrunError",
    "BudgetExhaustedError",
    "AuditError",
    "StoreError",
    "LeaseExpiredError",
    "InternalError",
    "BiscuitError",
]


class HopgateError(Exception):
    """Base class of every error hopgate raises on purpose."""


class MalformedError(HopgateError, ValueError):
    """Bytes that do not parse as SPEC §2 says (decision code ``MALFORMED``).

    ``field`` names the wire field and ``offset`` is its byte offset in the input.
    """

    code = Code.MALFORMED

    def __init__(self, message: str, field: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.field = field
        self.offset = offset


class DelegationError(HopgateError, ValueError):
    """A builder refused to create a link or an invocation that would not verify.

    ``code`` is the decision a verifier would return for the refused object
    (for example ``Code.SCOPE_WIDENED`` for a delegation that widens scope).
    """

    def __init__(self, message: str, code: int = Code.MALFORMED) -> None:
        super().__init__(message)
        self.code = Code(code)


class InputError(HopgateError, ValueError):
    """An argument of the wrong shape: a key of the wrong length, bad offsets, ..."""


class AffineError(HopgateError):
    """A budget or reservation handle was used after it was consumed.

    A reservation is committed or released exactly once; a budget that delegated is
    replaced by the fresh handle ``delegate`` returned (SPEC §5).
    """


class OverrunError(HopgateError):
    """``commit(actual)`` spent more than was reserved.

    Raised *after* charging: the full ``actual`` amount counts as spent on every
    account of the path, and the excess is recorded as an overrun.
    """

    def __init__(self, message: str, reserved: int = 0, actual: int = 0) -> None:
        super().__init__(message)
        self.reserved = reserved
        self.actual = actual


class BudgetExhaustedError(HopgateError):
    """Some account on the path has no room for the amount (decision code 17)."""

    code = Code.BUDGET_EXHAUSTED


class AuditError(HopgateError):
    """An audit log that does not verify where it must: a bad header, the wrong
    key, or a damaged last record found when opening it (a torn tail is repaired,
    not raised).

    ``record`` is the first bad record (``None`` for the header) and ``offset`` the
    byte offset of its frame.
    """

    def __init__(self, message: str, record: int | None = None, offset: int = 0) -> None:
        super().__init__(message)
        self.record = record
        self.offset = offset


class StoreError(HopgateError, OSError):
    """A durable ledger store (SPEC §5.8) failed: it could not be reached, did not
    answer within the ledger's ``timeout``, or returned an error.

    A gate that meets it allows nothing of the call (the request or the whole batch),
    and what a store step did not finish it did not do: a step is one transaction or
    one script call.
    """


class LeaseExpiredError(HopgateError):
    """A reservation was settled after its lease had forfeited it (SPEC §5.8).

    The forfeit stands: its full amount counts as spent, and nothing changed now.
    """


class InternalError(HopgateError, RuntimeError):
    """A bug in hopgate: the native core panicked, and the panic was caught.

    Nothing is left half-done that could allow a request: a gate batch that fails
    this way releases its reservations, and shared state stays consistent (see
    ``rust/python/src/errors.rs``). The message says where it happened; please
    report it.
    """


# Biscuit tokens (``hopgate.biscuit``). ``verify_signatures`` returns these in its list, one
# per refused token, rather than raising them: a batch answers every token.


class BiscuitError(HopgateError, ValueError):
    """A Biscuit token that biscuit-auth's ``Biscuit.from_bytes`` would refuse at its
    signature layer, or that hopgate cannot judge (``UnsupportedAlgorithm``)."""


class FormatError(BiscuitError):
    """The token does not decode as biscuit-auth decodes it, or a key, signature, block
    version or proof in it has a form biscuit-auth refuses."""


class SignatureError(BiscuitError):
    """A signature of the token does not verify, or its proof does not match its last block."""


class UnsupportedAlgorithm(BiscuitError):
    """The token reaches a P-256 (secp256r1) key, which hopgate does not verify."""
