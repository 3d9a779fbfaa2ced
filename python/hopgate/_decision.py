"""What a gate answers: shared by the native gate and the reference gate."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Optional, Protocol, Tuple

from ._codes import REASONS, Code

if TYPE_CHECKING:
    from typing_extensions import TypeVar
elif sys.version_info >= (3, 13):
    from typing import TypeVar
else:
    import typing

    def TypeVar(name: str, *, default: object, **kwargs: Any) -> Any:
        """``typing.TypeVar`` before Python 3.13, which has no ``default`` (PEP 696).
        Defaults matter to type checkers only, and they read typing_extensions'."""
        return typing.TypeVar(name, **kwargs)


__all__ = ["Account", "Decision", "ReceiptLike", "Requirement", "ReservationLike"]


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


class ReservationLike(Protocol):
    """A reservation of either implementation (``hopgate.Reservation``, native or
    reference): for code that handles decisions of both."""

    @property
    def amount(self) -> int: ...

    @property
    def settled(self) -> bool: ...

    def commit(self, actual: Optional[int] = None) -> None: ...

    def release(self) -> None: ...

    def __enter__(self) -> ReservationLike: ...

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Optional[bool]: ...


class ReceiptLike(Protocol):
    """An audit receipt of either implementation (``hopgate.Receipt``, native or reference)."""

    @property
    def index(self) -> int: ...

    @property
    def chain(self) -> bytes: ...

    @property
    def tag(self) -> bytes: ...

    def is_authentic(self, key: bytes) -> bool: ...

    def __bytes__(self) -> bytes: ...


# A native gate's decisions are Decision[hopgate.Reservation, hopgate.Receipt]; a bare
# ``Decision`` means either implementation's.
_R = TypeVar("_R", bound=ReservationLike, covariant=True, default=ReservationLike)
_C = TypeVar("_C", bound=ReceiptLike, covariant=True, default=ReceiptLike)


@dataclass(frozen=True)
class Decision(Generic[_R, _C]):
    """A gate's answer to one request.

    ``reservation`` is set only when ``code`` is ``Code.OK``: the cost is reserved on
    every account of the chain, and the caller must ``commit(actual)`` it once the
    work is done or ``release()`` it if nothing was spent. ``held`` is the same
    reservation, typed as present, for code that has checked ``allowed``. ``receipt``
    is the ``Receipt`` of the decision's audit record when the gate has an audit log
    (for denials too), else ``None``.
    """

    code: Code
    reservation: Optional[_R] = None
    receipt: Optional[_C] = None

    @property
    def allowed(self) -> bool:
        return self.code is Code.OK

    @property
    def reason(self) -> str:
        return REASONS[self.code]

    @property
    def held(self) -> _R:
        """The reservation of an allowed decision.

        Raises ``ValueError`` for a denial, which holds none: check ``allowed`` (or
        ``code``) first, or catch it.
        """
        if self.reservation is None:
            raise ValueError(
                f"the request was denied ({self.code.name}: {self.reason}), so the decision "
                "holds no reservation; check decision.allowed before using decision.held"
            )
        return self.reservation

    def __bool__(self) -> bool:
        return self.allowed
