"""A gate in front of any ASGI application: ``GateMiddleware``.

Each HTTP request must carry two headers in the text form of SPEC §2 (base64url
without padding)::

    Hopgate-Chain: <the delegation chain>
    Hopgate-Invocation: <an invocation signed by the chain's final holder>

The middleware asks ``gate.check(chain, invocation)`` (at the current time) and either
answers the request itself with a JSON error, or passes it on to the application with
the decision and its reservation in ``scope["state"]["hopgate"]`` (a ``GateState``;
Starlette and FastAPI show it as ``request.state.hopgate``). It is a plain ASGI
middleware with no dependency on any framework::

    app = GateMiddleware(app, gate=hopgate.Gate(trusted=[issuer_pk]))
    # or, with Starlette / FastAPI:
    app.add_middleware(GateMiddleware, gate=gate, exempt_paths=["/health"])

Statuses (``STATUS``). A denied request gets ``{"code": <int>, "name": "<CODE_NAME>",
"reason": "<sentence>"}`` and a ``Hopgate-Decision: <CODE_NAME>`` header:

- 401 (with ``WWW-Authenticate: Hopgate``): a missing, repeated or undecodable header
  and ``MALFORMED`` (code 1), ``UNTRUSTED_ISSUER``, ``BAD_SIGNATURE``, ``BROKEN_LINK``,
  ``STALE_INVOCATION``: the request does not prove who sends it, now.
- 403: the sender is known but not allowed (scope, cost, widening, depth, validity
  window, session, revocation).
- 409 for ``REPLAY``: the invocation was valid and has been used already; the client
  must sign a fresh one. 409 rather than 403 so that a client retrying after a lost
  response can tell "already done" from "never allowed" (``replay_status`` changes it).
- 429 for ``BUDGET_EXHAUSTED``: allowed in principle, but the money is spent or
  reserved by requests in flight.

An allowed request's response carries ``Hopgate-Decision: OK`` and, when the gate has an
audit log, ``Hopgate-Receipt`` (base64url of ``bytes(decision.receipt)``).

Body binding (``bind_body=True``, the default): the invocation's ``payload_digest``
(signed by the holder) must equal BLAKE3 of the request body. The middleware reads the
whole body, compares, and replays it to the application. A mismatch is answered with
401 ``BAD_SIGNATURE`` ("the request body does not match the invocation's
payload_digest") *before* the gate runs, so a request with a swapped body consumes no
nonce, reserves nothing and writes no audit record. The invocation is read with
``hopgate.parse_invocation`` (the core's parser); one that does not parse is left to the
gate, which calls it ``MALFORMED``.

Settlement (the reservation is affine, SPEC §5; the middleware never leaves it open):

- the application may settle it itself (``state.reservation.commit(n)`` or
  ``.release()``); the middleware then leaves it alone;
- otherwise it sets ``state.cost`` to what the request really cost (default: the
  reserved amount), and once the application has returned, a response with a status
  below 500 commits that cost; the unused part of the reservation is released. A cost
  above the reservation is charged and logged (``OverrunError``, logger
  ``hopgate.asgi``), never raised into the server after the response was sent;
- the reservation is released (nothing spent) when the application raises before the
  last body message of a response below 500, answers 5xx, or returns without a
  response. An exception after a complete response below 500 (a failing background
  task) still commits: the client got what it paid for.

Threading: by default ``gate.check`` runs inline, on the event loop: a request with a
cached chain costs one invocation signature check, and measured in process
(``bench/asgi_load.py``, 2-core machine) the whole middleware takes about 80 µs per
request inline against about 160 µs with a hop to the loop's thread pool, so the hop
costs more than the work. ``threaded=True`` runs it in the default thread pool
(``loop.run_in_executor``, asyncio only) for gates that mostly see cold or long chains,
whose several signature checks should not block the loop; if the request is cancelled
while that check runs, the reservation it returns is released.

Non-HTTP scopes (``lifespan``, ``websocket``) and ``exempt_paths`` (exact matches of
``scope["path"]``) pass through untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from types import MappingProxyType
from typing import Any, Mapping, Optional, cast

from . import Chain, Code, Decision, Gate, OverrunError, Reservation, blake3, from_text, parse_invocation, to_text
from ._codes import REASONS
from .errors import HopgateError

__all__ = ["STATUS", "GateMiddleware", "GateState"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("hopgate.asgi")

#: HTTP status of each denial (the module docstring says why each).
STATUS: Mapping[Code, int] = MappingProxyType(
    {
        Code.MALFORMED: 401,
        Code.UNTRUSTED_ISSUER: 401,
        Code.BAD_SIGNATURE: 401,
        Code.BROKEN_LINK: 401,
        Code.STALE_INVOCATION: 401,
        Code.SCOPE_WIDENED: 403,
        Code.BUDGET_WIDENED: 403,
        Code.TIME_WIDENED: 403,
        Code.DEPTH_EXCEEDED: 403,
        Code.NOT_YET_VALID: 403,
        Code.EXPIRED: 403,
        Code.SESSION_MISMATCH: 403,
        Code.REVOKED: 403,
        Code.SCOPE_DENIED: 403,
        Code.COST_EXCEEDS_GRANT: 403,
        Code.REPLAY: 409,
        Code.BUDGET_EXHAUSTED: 429,
    }
)

_CHAIN_HEADER = b"hopgate-chain"
_INVOCATION_HEADER = b"hopgate-invocation"
# FORMAT §2.7: a whole invocation is at most 712 bytes, so its text is at most 950
# characters; anything longer is refused before it is decoded.
_MAX_INVOCATION_TEXT = 950
_BODY_MISMATCH = "the request body does not match the invocation's payload_digest"


class GateState:
    """An allowed request, as the application sees it in ``scope["state"]["hopgate"]``.

    Set ``cost`` to what the request really cost before returning (``None``, the
    default, commits the reserved amount), or settle ``reservation`` yourself.
    """

    __slots__ = ("chain", "cost", "decision", "invocation")

    def __init__(self, decision: Decision, chain: Chain, invocation: bytes) -> None:
        self.decision = decision
        self.chain = chain
        self.invocation = invocation
        self.cost: Optional[int] = None

    @property
    def reservation(self) -> Reservation:
        """The reservation of this request's cost on every link of the chain."""
        reservation = self.decision.reservation
        assert reservation is not None, "a GateState is made only for allowed decisions"
        return cast(Reservation, reservation)

    @property
    def reserved(self) -> int:
        """The amount reserved: the invocation's cost."""
        return self.reservation.amount

    def __repr__(self) -> str:
        return f"GateState(reserved={self.reserved}, cost={self.cost}, settled={self.reservation.settled})"


class _Denied(Exception):
    """A request refused before the gate decides (headers, body binding)."""

    def __init__(self, code: Code, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class GateMiddleware:
    """Checks every HTTP request's chain and invocation with ``gate`` (module docs).

    Arguments: ``app`` the ASGI application behind the gate; ``gate`` a
    ``hopgate.Gate`` (or ``hopgate.reference.Gate``); ``bind_body`` require the
    invocation's ``payload_digest`` to be BLAKE3 of the request body; ``threaded`` run
    ``gate.check`` in a worker thread; ``exempt_paths`` paths served without a check;
    ``replay_status`` the status of ``REPLAY`` (409, or 403 for deployments that want
    every authorization failure to look alike).
    """

    def __init__(
        self,
        app: ASGIApp,
        gate: Gate,
        *,
        bind_body: bool = True,
        threaded: bool = False,
        exempt_paths: Iterable[str] = (),
        replay_status: int = 409,
    ) -> None:
        self.app = app
        self.gate = gate
        self.bind_body = bind_body
        self.threaded = threaded
        self.exempt_paths = frozenset(exempt_paths)
        self._status = dict(STATUS)
        self._status[Code.REPLAY] = replay_status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        try:
            chain, invocation = _read_headers(scope)
        except _Denied as denied:
            await self._deny(send, denied.code, denied.reason)
            return

        if self.bind_body:
            body = await _read_body(receive)
            if body is None:  # the client went away before sending its body
                return
            digest = _payload_digest(invocation)
            if digest is not None and digest != blake3(body):
                await self._deny(send, Code.BAD_SIGNATURE, _BODY_MISMATCH)
                return
            receive = _replay(body, receive)

        decision = await self._check(chain, invocation)
        if not decision.allowed:
            await self._deny(send, decision.code, decision.reason)
            return
        # From here to the `try`, no await: a cancellation cannot strand the reservation.
        state = GateState(decision, chain, invocation)
        await self._serve(scope, receive, send, state)

    async def _check(self, chain: Chain, invocation: bytes) -> Decision:
        if not self.threaded:
            return self.gate.check(chain, invocation)
        future = asyncio.get_running_loop().run_in_executor(None, self.gate.check, chain, invocation)
        try:
            # shield: a cancelled request must not drop a decision that holds a reservation.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_release_abandoned)
            raise

    async def _serve(self, scope: Scope, receive: Receive, send: Send, state: GateState) -> None:
        headers = [(b"hopgate-decision", b"OK")]
        if state.decision.receipt is not None:
            headers.append((b"hopgate-receipt", to_text(bytes(state.decision.receipt)).encode("ascii")))
        status = 0
        complete = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        scope.setdefault("state", {})["hopgate"] = state
        try:
            await self.app(scope, receive, send_with_headers)
        except BaseException:
            _settle(state, spent=complete and 0 < status < 500)
            raise
        _settle(state, spent=0 < status < 500)

    async def _deny(self, send: Send, code: Code, reason: str) -> None:
        status = self._status.get(code, 403)
        body = json.dumps({"code": int(code), "name": code.name, "reason": reason}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"hopgate-decision", code.name.encode()),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b"Hopgate"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _read_headers(scope: Scope) -> tuple[Chain, bytes]:
    """The chain and invocation of the request, or ``_Denied`` (401 MALFORMED)."""
    found: dict[bytes, list[bytes]] = {_CHAIN_HEADER: [], _INVOCATION_HEADER: []}
    for name, value in scope.get("headers", ()):
        key = bytes(name).lower()
        if key in found:
            found[key].append(bytes(value))
    values: list[bytes] = []
    for name, title in ((_CHAIN_HEADER, "Hopgate-Chain"), (_INVOCATION_HEADER, "Hopgate-Invocation")):
        if not found[name]:
            raise _Denied(Code.MALFORMED, f"the {title} header is missing")
        if len(found[name]) > 1:
            raise _Denied(Code.MALFORMED, f"more than one {title} header")
        values.append(found[name][0])
    try:
        chain = Chain.from_text(values[0].decode("latin-1"))
    except HopgateError as e:
        raise _Denied(Code.MALFORMED, f"Hopgate-Chain: {e}") from None
    return chain, _decode_text(values[1], "Hopgate-Invocation")


def _decode_text(text: bytes, title: str) -> bytes:
    """The header's bytes through the core's strict text decoder, or ``_Denied``."""
    if len(text) > _MAX_INVOCATION_TEXT:
        raise _Denied(Code.MALFORMED, f"{title}: longer than any invocation")
    try:
        return from_text(text.decode("latin-1"))
    except HopgateError as e:
        raise _Denied(Code.MALFORMED, f"{title}: {e}") from None


def _payload_digest(invocation: bytes) -> Optional[bytes]:
    """The invocation's ``payload_digest``, or None if it does not parse (the gate
    then answers ``MALFORMED``)."""
    try:
        return parse_invocation(invocation).payload_digest
    except HopgateError:
        return None


async def _read_body(receive: Receive) -> Optional[bytes]:
    """The whole request body; None if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(bytes(message.get("body", b"")))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the application the body already read, then the real one."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _settle(state: GateState, *, spent: bool) -> None:
    """Commits ``state.cost`` (or the reserved amount) if ``spent``, else releases."""
    reservation = state.reservation
    if reservation.settled:  # the application settled it itself
        return
    if not spent:
        reservation.release()
        return
    try:
        reservation.commit(state.cost)
    except OverrunError as e:
        logger.warning("hopgate: request cost %s, above its reservation of %s: %s", state.cost, state.reserved, e)
    except (HopgateError, TypeError, ValueError) as e:
        # A cost the ledger refuses (negative, not an int): charge the reservation in
        # full rather than forfeit it, which would also charge it but warn at GC time.
        logger.error("hopgate: cannot commit cost %r (%s); committing the reserved amount", state.cost, e)
        if not reservation.settled:
            reservation.commit()


def _release_abandoned(future: "asyncio.Future[Decision]") -> None:
    if future.cancelled() or future.exception() is not None:
        return
    reservation = future.result().reservation
    if reservation is not None and not reservation.settled:
        reservation.release()

