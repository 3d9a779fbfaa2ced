"""Decision codes of SPEC §4: stable integers shared by the native core and the reference."""

from __future__ import annotations

import enum

__all__ = ["Code"]


class Code(enum.IntEnum):
    """Why a chain or a request was allowed or denied (SPEC §4).

    The integers are part of the wire contract: they never change meaning.
    Checks run in the order of the table; the first failure is reported.
    """

    OK = 0
    MALFORMED = 1
    UNTRUSTED_ISSUER = 2
    BAD_SIGNATURE = 3
    BROKEN_LINK = 4
    SCOPE_WIDENED = 5
    BUDGET_WIDENED = 6
    TIME_WIDENED = 7
    DEPTH_EXCEEDED = 8
    NOT_YET_VALID = 9
    EXPIRED = 10
    SESSION_MISMATCH = 11
    REVOKED = 12
    SCOPE_DENIED = 13
    COST_EXCEEDS_GRANT = 14
    STALE_INVOCATION = 15
    REPLAY = 16
    BUDGET_EXHAUSTED = 17
