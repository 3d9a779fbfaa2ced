"""The exception tree of hopgate, shared by the native core and the reference.

The native module raises these same classes (it imports them), so
``except hopgate.MalformedError`` works whichever implementation is in use.
"""

from __future__ import annotations

from ._codes import Code

__all__ = ["HopgateError", "MalformedError", "DelegationError", "InputError"]


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
