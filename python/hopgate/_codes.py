"""Decision codes of SPEC §4: stable integers shared by the native core and the reference."""

from __future__ import annotations

import enum

__all__ = ["Code", "REASONS"]


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
    COST_BELOW_PRICE = 18


#: One sentence per code, for people (logs, HTTP error bodies).
REASONS: dict[Code, str] = {
    Code.OK: "allowed",
    Code.MALFORMED: "the chain or invocation bytes do not parse",
    Code.UNTRUSTED_ISSUER: "link 0 is not signed by a trusted issuer",
    Code.BAD_SIGNATURE: "a link or invocation signature is invalid",
    Code.BROKEN_LINK: "a link does not point at the previous signature, or the invocation at the last",
    Code.SCOPE_WIDENED: "a delegation grants a capability its parent does not cover",
    Code.BUDGET_WIDENED: "a delegation raises the budget or changes its unit",
    Code.TIME_WIDENED: "a delegation is valid outside its parent's window",
    Code.DEPTH_EXCEEDED: "a delegation goes deeper than max_depth allows",
    Code.NOT_YET_VALID: "a link is not valid yet",
    Code.EXPIRED: "a link has expired",
    Code.SESSION_MISMATCH: "the grant belongs to another session",
    Code.REVOKED: "a link of the chain is revoked",
    Code.SCOPE_DENIED: "the chain does not grant this ability on this resource",
    Code.COST_EXCEEDS_GRANT: "the cost exceeds the last link's budget",
    Code.STALE_INVOCATION: "the invocation timestamp is outside the allowed clock skew",
    Code.REPLAY: "the invocation nonce was already used",
    Code.BUDGET_EXHAUSTED: "the budget of some link on the chain cannot cover the cost",
    Code.COST_BELOW_PRICE: "the invocation's signed cost is below the price the gate requires for this request",
}
