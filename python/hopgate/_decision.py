"""What a gate answers: shared by the native gate and the reference gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Tuple

from ._codes import REASONS, Code

__all__ = ["Account", "Decision", "Requirement"]


#: What a server requires of a request, given to ``Gate.check(require=...)``:
#: ``(ability, resource, price)``. The invocation must name exactly this ability and
#: resource (else ``SCOPE_DENIED``) and sign a cost of at least ``price`` (else
#: ``COST_BELOW_PRICE``).
Requirement = Tuple[str, str, int]


class Account(NamedTuple):
    """The state of one ledger account (one link of a chain), in the chain's unit."""

    cap: int
    spent: int
    reserved: int
    overrun: int


@dataclass(frozen=True)
class Decision:
    """A gate's answer to one request.

    ``reservation`` is set only when ``code`` is ``Code.OK``: the cost is reserved on
    every account of the chain, and the caller must ``commit(actual)`` it once the
    work is done or ``release()`` it if nothing was spent. ``receipt`` is the
    ``Receipt`` of the decision's audit record when the gate has an audit log.
    """

    code: Code
    reservation: Optional[Any] = None
    receipt: Optional[Any] = None

    @property
    def allowed(self) -> bool:
        return self.code is Code.OK

    @property
    def reason(self) -> str:
        return REASONS[self.code]

    def __bool__(self) -> bool:
        return self.allowed
