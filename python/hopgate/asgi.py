"""A gate in front of any ASGI application: ``GateMiddleware``.

Each gated HTTP request carries two headers in the text form of SPEC §2 (base64url
without padding)::

    Hopgate-Chain: <the delegation chain>
    Hopgate-Invocation: <an invocation signed by the chain's final holder>

The server, not the client, decides what a request needs and what it costs. The route
map ``require`` is a required argument (a middleware without one refuses to start):
for each route, the ability and resource the invocation must name exactly and the
route's price, the least cost the invocation must have signed::

    app = GateMiddleware(app, gate=hopgate.Gate(trusted=[issuer_pk]),
                         require={("POST", "/search"): ("call", "billing/search", 2)},
                         audience="billing/")
    # or, with Starlette / FastAPI:
    app.add_middleware(GateMiddleware, gate=gate, require=routes, audience="billing/",
                       exempt_paths=["/health"])

``require`` is either a dict from ``(method, path)`` (exact matches of
``scope["method"]`` and ``scope["path"]``, no normalisation) to ``(ability, resource,
price)`` or ``(ability, resource)`` (price 1), checked when the middleware is built; or,
for templated routes, a callable ``require(scope) -> (ability, resource, price) | None``,
whose answer is checked on every request. A price is an int of at least 1, so no gated
request is free. ``audience`` (a prefix such as ``"billing/"``) makes every required
resource start with it, so services that trust the same issuer stay apart: a dict entry
outside it is refused at construction, a callable's answer outside it is a configuration
error (500, logged at CRITICAL), never an allow.

The gate decides (``gate.check(chain, invocation, payload=body, require=(ability,
resource, price))``), so the rules live in one place: an invocation for another ability
or resource is ``SCOPE_DENIED``, one whose signed cost is below the price is
``COST_BELOW_PRICE``, and one whose ``payload_digest`` is not BLAKE3 of the request body
is ``BAD_SIGNATURE``. The body is always bound: a body the holder did not sign could be
swapped by anyone who sees the headers on their way. An allowed request is passed on to the application with the
decision and its reservation in ``scope["state"]["hopgate"]`` (a ``GateState``;
Starlette and FastAPI show it as ``request.state.hopgate``).

Each request, in this order (the first refusal answers it):

1. ``exempt_paths`` (exact ``scope["path"]`` matches, any scope type) and ``lifespan``
   pass through untouched; a ``websocket`` on any other path is closed (1008) before it
   is accepted: it carries no invocation the gate could check;
2. no requirement for the route (a dict miss, or the callable answers None): 404
   ``NO_ROUTE``, before any header is looked at. 404 rather than 403 or 405: to the
   gate the route does not exist, and a status that depended on the credentials or on
   other methods of the path would tell a prober what is served;
3. a declared ``Content-Length`` above ``max_body``: 413 ``BODY_TOO_LARGE``, nothing read
   (one that is not a decimal number: 400 ``BAD_CONTENT_LENGTH``);
4. the two headers (missing, repeated or not base64url: 401 ``MALFORMED``);
5. a request that declares a body (a ``Content-Length`` above 0, or a
   ``Transfer-Encoding``): ``gate.precheck(chain, invocation, require=...)`` checks every
   signature and rule that needs no body, consuming no nonce and reserving nothing. If it
   denies, the body is never read (a client that sent ``Expect: 100-continue`` is never
   asked for it). Where the gate may have an audit log, ``gate.check`` without the
   payload then makes the audited decision, which denies the same way; only a gate whose
   ``audit`` attribute is None is answered with precheck's code alone (a gate that does
   not say is taken to be audited: a refusal missing from the audit trail costs more
   than a second check). Otherwise the body is read, at most ``max_body`` bytes: a
   stream that goes past it is answered 413 at once and the rest is never read;
6. ``gate.check(chain, invocation, payload=body, require=...)``; a request that declares
   no body is checked with ``payload=b""`` (an invocation signed over a non-empty payload
   is then ``BAD_SIGNATURE``), and the application reads an empty body whatever the
   connection carries: it only ever sees the bytes the holder signed.

Statuses (``STATUS``). Every refusal is JSON ``{"code": <int or null>, "name": "<NAME>",
"reason": "<sentence>"}`` with a ``Hopgate-Decision: <NAME>`` header; ``code`` is null
for the refusals that are not a gate decision:

- 400 ``BAD_CONTENT_LENGTH``: a Content-Length that is not one decimal number;
- 401 (with ``WWW-Authenticate: Hopgate``): a missing, repeated or undecodable header
  and ``MALFORMED`` (code 1), ``UNTRUSTED_ISSUER``, ``BAD_SIGNATURE``, ``BROKEN_LINK``,
  ``STALE_INVOCATION``: the request does not prove who sends it, now;
- 403: the sender is known but not allowed (scope, cost, price, widening, depth,
  validity window, session, revocation);
- 404 ``NO_ROUTE``: the route has no requirement (above);
- 409 for ``REPLAY``: the invocation was valid and has been used already; the client
  must sign a fresh one. 409 rather than 403 so that a client retrying after a lost
  response can tell "already done" from "never allowed" (``replay_status`` changes it);
- 413 ``BODY_TOO_LARGE`` (with ``Connection: close``): the body is longer than
  ``max_body``;
- 429 for ``BUDGET_EXHAUSTED``: allowed in principle, but the money is spent or
  reserved by requests in flight;
- 500 ``MISCONFIGURED``: a callable ``require`` answered something that is not a valid
  requirement, outside ``audience``, or raised (the details go to the log, not to the
  client);
- 503 ``STORE_UNAVAILABLE``: the gate's durable ledger store failed (``hopgate.StoreError``
  from ``precheck`` or ``check``: unreachable, too slow, or an error; SPEC §5.8). Nothing
  was allowed and the application is not called; the error goes to the log (ERROR). A
  client may retry; if the lost step had consumed its nonce, the retry is ``REPLAY`` and
  needs a fresh invocation.

An allowed request's response carries ``Hopgate-Decision: OK`` and, when the gate has an
audit log, ``Hopgate-Receipt`` (base64url of ``bytes(decision.receipt)``).

Settlement (the reservation is affine, SPEC §5; the middleware never leaves it open).
The reservation is the invocation's signed cost, the most the holder agreed to pay; what
is committed is decided by the server:

- the application may settle it itself (``state.reservation.commit(n)`` or
  ``.release()``); the middleware then leaves it alone;
- otherwise it sets ``state.cost`` to what the request really cost (default: the
  route's price), and the middleware commits that, never more than the reservation: a
  cost above it is clamped to it and logged (logger ``hopgate.asgi``), a cost that is not
  an int of at least 0 commits the whole reservation and is logged; the unused part is
  released;
- a response with a status below 500 commits once the application has returned, and so
  does one whose client went away after the response started (the client got a
  response: an ``http.disconnect`` the application received, a ``send`` that raised
  ``OSError``, or the request cancelled by the server);
- the reservation is released (nothing spent) when the application answers 5xx,
  returns or raises before starting a response, or raises before the last body message
  of a response below 500 while the client is still there, unless it set ``state.cost``
  first: what the application says was spent is committed whatever happens next, so a
  failure the client can provoke never makes done work free. An exception after a
  complete response below 500 (a failing background task) still commits: the client
  got what it paid for.
- a settlement that fails in a durable store (``hopgate.StoreError``: the reservation is
  left to its lease, which forfeits it; ``hopgate.LeaseExpiredError``: the lease already
  did) is logged (ERROR), and the response, sent or not, is left as the application made
  it: the work is done, and the store charges the whole reservation at the latest.

Threading: by default the gate runs inline, on the event loop: a request with a cached
chain costs one invocation signature check, two when it declares a body (``precheck``,
then ``check``). Measured in process on the 2-core development machine (a trivial
application, no socket; ``bench/asgi_load.py``), the whole middleware takes about 55 µs
per request without a body and 110 µs with one, and a hop to the loop's thread pool
doubles that, so the hop costs more than the work. ``threaded=True`` runs ``precheck``
and ``check`` in the default thread pool (``loop.run_in_executor``, asyncio only) for
gates that mostly see cold or long chains, whose several signature checks should not
block the loop; if the request is cancelled while a check runs, the reservation it
returns is released.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from types import MappingProxyType
from typing import Any, Mapping, Optional, Protocol, TypeVar, Union, cast

from . import Chain, Code, Decision, Reservation, from_text, to_text
from ._codes import REASONS
from ._decision import Requirement
from .errors import HopgateError, LeaseExpiredError, StoreError

__all__ = ["STATUS", "GateMiddleware", "GateState", "RequireFn", "Requirement", "RouteMap"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: ``require`` as a dict: ``{(method, path): (ability, resource, price)}``, price optional.
RouteMap = Mapping[tuple[str, str], Union[tuple[str, str], tuple[str, str, int]]]
#: ``require`` as a callable, for templated routes: the scope's requirement, or None.
RequireFn = Callable[[Scope], Optional[Requirement]]

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
        Code.COST_BELOW_PRICE: 403,
        Code.REPLAY: 409,
        Code.BUDGET_EXHAUSTED: 429,
    }
)

_CHAIN_HEADER = b"hopgate-chain"
_INVOCATION_HEADER = b"hopgate-invocation"
# SPEC §2.7: a whole invocation is at most 712 bytes, so its text is at most 950
# characters; anything longer is refused before it is decoded.
_MAX_INVOCATION_TEXT = 950
_MAX_PRICE = (1 << 64) - 1
_HTTP_METHOD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+-.^_`|~0123456789")
_NO_ROUTE = "no route of this server matches the request's method and path"
_MISCONFIGURED = "the server cannot decide what this route requires"
_TOO_LARGE = "the request body is longer than this server accepts"
_STORE_UNAVAILABLE = "the server's ledger store is unavailable; nothing was allowed"

_T = TypeVar("_T")


class _Gate(Protocol):
    """What the middleware needs of a gate: ``hopgate.Gate`` and ``hopgate.reference.Gate``."""

    def check(
        self,
        chain: Chain,
        invocation: bytes,
        now: Optional[int] = None,
        *,
        payload: Optional[bytes] = None,
        require: Optional[Requirement] = None,
    ) -> Decision: ...

    def precheck(
        self, chain: Chain, invocation: bytes, now: Optional[int] = None, *, require: Optional[Requirement] = None
    ) -> Code: ...


class GateState:
    """An allowed request, as the application sees it in ``scope["state"]["hopgate"]``.

    Set ``cost`` to what the request really cost before returning (``None``, the
    default, commits the route's price; never more than ``reserved`` is committed), or
    settle ``reservation`` yourself.
    """

    __slots__ = ("chain", "cost", "decision", "invocation", "requirement")

    def __init__(self, decision: Decision, chain: Chain, invocation: bytes, requirement: Requirement) -> None:
        self.decision = decision
        self.chain = chain
        self.invocation = invocation
        self.requirement = requirement
        self.cost: Optional[int] = None

    @property
    def reservation(self) -> Reservation:
        """The reservation of this request's cost on every link of the chain."""
        reservation = self.decision.reservation
        assert reservation is not None, "a GateState is made only for allowed decisions"
        return cast(Reservation, reservation)

    @property
    def reserved(self) -> int:
        """The amount reserved: the invocation's signed cost (at least ``price``)."""
        return self.reservation.amount

    @property
    def price(self) -> int:
        """The route's price: what is committed when the application sets no ``cost``."""
        return self.requirement[2]

    def __repr__(self) -> str:
        return (
            f"GateState(requirement={self.requirement!r}, reserved={self.reserved}, cost={self.cost}, "
            f"settled={self.reservation.settled})"
        )


class _Refused(Exception):
    """A request answered by the middleware itself: a gate denial (``code``) or a refusal
    that is not a gate decision (``code`` None: no route, body too large, ...)."""

    def __init__(self, status: int, code: Optional[Code], name: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.name = name
        self.reason = reason


class _Misconfigured(Exception):
    """A callable ``require`` answered something the middleware must not act on."""


class GateMiddleware:
    """Checks every gated HTTP request's chain and invocation with ``gate`` (module docs).

    Arguments: ``app`` the ASGI application behind the gate; ``gate`` a
    ``hopgate.Gate`` (or ``hopgate.reference.Gate``); ``require`` the route map (a dict
    ``{(method, path): (ability, resource, price)}``, price optional, default 1) or a
    callable ``require(scope)`` answering ``(ability, resource, price)`` or None;
    ``audience`` a prefix every required resource must start with; ``max_body`` the
    longest request body read, in bytes; ``threaded`` run the gate in a worker thread;
    ``exempt_paths`` paths served without a check (any method); ``replay_status`` the
    status of ``REPLAY`` (409, or 403 for deployments that want every authorization
    failure to look alike).

    Raises ``TypeError`` or ``ValueError`` (naming the entry) for a route map, audience
    or limit that could not be enforced as written.
    """

    def __init__(
        self,
        app: ASGIApp,
        gate: _Gate,
        *,
        require: Union[RouteMap, RequireFn],
        audience: Optional[str] = None,
        max_body: int = 1 << 20,
        threaded: bool = False,
        exempt_paths: Iterable[str] = (),
        replay_status: int = 409,
    ) -> None:
        if audience is not None and not isinstance(audience, str):
            raise TypeError(f"audience: expected a str prefix or None, got {type(audience).__name__}")
        if audience == "":
            raise ValueError("audience: the empty prefix would admit every resource; use None for no audience")
        if audience is not None and not audience.endswith("/"):
            # "billing" would also admit "billing-admin/...": a prefix ends at a segment.
            raise ValueError(f"audience: must end with '/' (a whole path segment, such as 'billing/'), got {audience!r}")
        if isinstance(max_body, bool) or not isinstance(max_body, int):
            raise TypeError(f"max_body: expected an int (bytes), got {type(max_body).__name__}")
        if max_body < 0:
            raise ValueError(f"max_body: expected at least 0 bytes, got {max_body}")
        if isinstance(exempt_paths, str):
            raise TypeError("exempt_paths: expected an iterable of paths, got one str")
        self.app = app
        self.gate = gate
        self.audience = audience
        self.max_body = max_body
        self.threaded = threaded
        self.exempt_paths = frozenset(exempt_paths)
        self._routes: Optional[dict[tuple[str, str], Requirement]] = None
        self._require_fn: Optional[RequireFn] = None
        if isinstance(require, Mapping):
            self._routes = _route_map(require, audience, self.exempt_paths)
        elif callable(require):
            self._require_fn = require
        else:
            raise TypeError(
                "require: expected a dict {(method, path): (ability, resource, price)} or a callable "
                f"require(scope), got {type(require).__name__}"
            )
        # Only an audited gate gets a second, audited answer for what precheck refused:
        # without a log, that second check would only double the cost of a refusal. A
        # gate without an `audit` attribute may have a log: it gets the second check.
        self._audited = getattr(gate, "audit", self) is not None
        self._status = dict(STATUS)
        self._status[Code.REPLAY] = replay_status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            # A websocket (or any other scope) carries no invocation the gate could
            # check: refused unless its path is exempt, never passed through.
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "not gated by hopgate"})
            return
        try:
            requirement = self._requirement(scope)
            if requirement is None:
                raise _Refused(404, None, "NO_ROUTE", _NO_ROUTE)
            declared = _declared_length(scope, self.max_body)
            chain, invocation = _read_headers(scope)
            if declared == 0:
                body = b""
            else:
                read = await self._read_body(receive, chain, invocation, requirement)
                if read is None:  # the client went away before sending its body
                    return
                body = read
            decision = await self._check(chain, invocation, None, body, requirement)
        except _Refused as refused:
            await self._answer(send, refused)
            return
        except StoreError as e:
            # Failing closed (SPEC §5.8): the store allowed nothing. Never a 500 with a
            # traceback: an outage is an answer the client can act on.
            logger.error(
                "hopgate: the ledger store failed for %s %s (%s: %s); answering 503",
                scope.get("method"), scope.get("path"), type(e).__name__, e,
            )
            await self._answer(send, _Refused(503, None, "STORE_UNAVAILABLE", _STORE_UNAVAILABLE))
            return
        if not decision.allowed:
            await self._answer(send, self._denial(decision.code))
            return
        # From here to the `try` in _serve, no await: a cancellation cannot strand the
        # reservation.
        state = GateState(decision, chain, invocation, requirement)
        await self._serve(scope, _replay(body, receive), send, state)

    def _requirement(self, scope: Scope) -> Optional[Requirement]:
        if self._routes is not None:
            return self._routes.get((scope.get("method", ""), scope.get("path", "")))
        assert self._require_fn is not None
        try:
            answer = self._require_fn(scope)
            if answer is None:
                return None
            requirement = _requirement(answer, "require(scope)")
            if self.audience is not None and not requirement[1].startswith(self.audience):
                raise _Misconfigured(f"resource {requirement[1]!r} is outside audience {self.audience!r}")
        except Exception as e:
            # Loud, and a refusal: a route the server cannot decide is never an allow.
            logger.critical(
                "hopgate: require(scope) for %s %s: %s: %s; answering 500",
                scope.get("method"), scope.get("path"), type(e).__name__, e,
                exc_info=not isinstance(e, _Misconfigured),
            )
            raise _Refused(500, None, "MISCONFIGURED", _MISCONFIGURED) from None
        return requirement

    async def _read_body(
        self, receive: Receive, chain: Chain, invocation: bytes, requirement: Requirement
    ) -> Optional[bytes]:
        """The body, once ``precheck`` allows reading it; None if the client went away."""
        now = int(time.time())
        code = Code(await self._run(functools.partial(self.gate.precheck, chain, invocation, now, require=requirement)))
        if code is not Code.OK:
            if self._audited:
                # The same `now`, no payload: the audited check stops where precheck did.
                decision = await self._check(chain, invocation, now, None, requirement)
                if decision.allowed:  # cannot happen with the same now; never serve it
                    cast(Reservation, decision.reservation).release()
                    logger.error("hopgate: precheck said %s but check allowed; refusing", code.name)
                else:
                    code = decision.code
            raise self._denial(code)
        return await _read_bounded(receive, self.max_body)

    async def _run(self, call: Callable[[], _T]) -> _T:
        if not self.threaded:
            return call()
        return await asyncio.get_running_loop().run_in_executor(None, call)

    async def _check(
        self, chain: Chain, invocation: bytes, now: Optional[int], payload: Optional[bytes], requirement: Requirement
    ) -> Decision:
        call = functools.partial(self.gate.check, chain, invocation, now, payload=payload, require=requirement)
        if not self.threaded:
            return call()
        future = asyncio.get_running_loop().run_in_executor(None, call)
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
        status = 0  # set once the response start has been sent
        complete = False
        gone = False  # the client went away

        async def receive_watched() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status, complete, gone
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
                # Set before sending: the application has done its work, and a client
                # gone by now (the send raises) is charged like one that leaves later.
                status = int(message["status"])
            try:
                await send(message)
            except OSError:  # ASGI 2.4: a send to a client that has gone raises OSError
                gone = True
                raise
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True

        scope.setdefault("state", {})["hopgate"] = state
        try:
            await self.app(scope, receive_watched, send_with_headers)
        except BaseException as e:
            # A server cancels the request when its client goes away.
            gone = gone or isinstance(e, asyncio.CancelledError)
            _settle(state, spent=0 < status < 500 and (complete or gone))
            raise
        _settle(state, spent=0 < status < 500)

    def _denial(self, code: Code) -> _Refused:
        return _Refused(self._status.get(code, 403), code, code.name, REASONS[code])

    async def _answer(self, send: Send, refused: _Refused) -> None:
        body = json.dumps(
            {"code": None if refused.code is None else int(refused.code), "name": refused.name, "reason": refused.reason}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"hopgate-decision", refused.name.encode()),
        ]
        if refused.status == 401:
            headers.append((b"www-authenticate", b"Hopgate"))
        if refused.status == 413:
            # The rest of the body is never read: the connection cannot carry another request.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _route_map(
    routes: RouteMap, audience: Optional[str], exempt: frozenset[str]
) -> dict[tuple[str, str], Requirement]:
    """``require`` as given, checked entry by entry, with every price filled in."""
    if not routes:
        raise ValueError("require: the route map is empty (every request would be refused)")
    out: dict[tuple[str, str], Requirement] = {}
    for key, value in routes.items():
        where = f"require[{key!r}]"
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
            raise TypeError(f"require: key {key!r}: expected a (method, path) tuple of two str")
        method, path = key
        if not method or not set(method) <= _HTTP_METHOD_CHARS or method != method.upper():
            raise ValueError(f"{where}: method must be an upper-case HTTP method such as 'POST', got {method!r}")
        if not path.startswith("/"):
            raise ValueError(f"{where}: path must start with '/', got {path!r}")
        if path in exempt:
            raise ValueError(f"{where}: path {path!r} is also in exempt_paths, so it would never be gated")
        requirement = _requirement(value, where)
        if audience is not None and not requirement[1].startswith(audience):
            raise ValueError(f"{where}: resource {requirement[1]!r} is outside audience {audience!r}")
        out[(method, path)] = requirement
    return out


def _requirement(value: object, where: str) -> Requirement:
    """``(ability, resource[, price])`` checked: names an invocation can carry, price >= 1."""
    if not isinstance(value, tuple) or len(value) not in (2, 3):
        raise TypeError(f"{where}: expected (ability, resource, price) or (ability, resource), got {value!r}")
    ability, resource = value[0], value[1]
    price = value[2] if len(value) == 3 else 1
    for name, text in (("ability", ability), ("resource", resource)):
        if not isinstance(text, str):
            raise TypeError(f"{where}: {name} must be a str, got {type(text).__name__}")
        # SPEC §2: an invocation's names are 1..=255 bytes of UTF-8 without NUL; a
        # requirement outside that could never be met.
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"{where}: {name} is not valid UTF-8: {text!r}") from None
        if not 1 <= size <= 255 or "\0" in text:
            raise ValueError(f"{where}: {name} must be 1 to 255 bytes of UTF-8 without NUL, got {text!r}")
    if isinstance(price, bool) or not isinstance(price, int):
        raise TypeError(f"{where}: price must be an int, got {type(price).__name__}")
    if not 1 <= price <= _MAX_PRICE:
        raise ValueError(f"{where}: price must be at least 1 (no gated request is free) and below 2**64, got {price}")
    return (ability, resource, price)


def _declared_length(scope: Scope, max_body: int) -> Optional[int]:
    """The body length the request declares: 0 for none, None for an unknown length
    (Transfer-Encoding); ``_Refused`` for a bad or too large Content-Length."""
    lengths: list[bytes] = []
    chunked = False
    for name, value in scope.get("headers", ()):
        key = bytes(name).lower()
        if key == b"content-length":
            lengths.append(bytes(value).strip())
        elif key == b"transfer-encoding":
            chunked = True
    if not lengths:
        return None if chunked else 0
    if len(set(lengths)) != 1 or not lengths[0].isdigit():
        raise _Refused(400, None, "BAD_CONTENT_LENGTH", "the Content-Length header is not one decimal number")
    # Twenty digits are more than any max_body; int() of a long digit string is slow.
    if len(lengths[0]) > 20 or int(lengths[0]) > max_body:
        raise _Refused(413, None, "BODY_TOO_LARGE", _TOO_LARGE)
    return None if chunked else int(lengths[0])


def _read_headers(scope: Scope) -> tuple[Chain, bytes]:
    """The chain and invocation of the request, or ``_Refused`` (401 MALFORMED)."""
    found: dict[bytes, list[bytes]] = {_CHAIN_HEADER: [], _INVOCATION_HEADER: []}
    for name, value in scope.get("headers", ()):
        key = bytes(name).lower()
        if key in found:
            found[key].append(bytes(value))
    values: list[bytes] = []
    for name, title in ((_CHAIN_HEADER, "Hopgate-Chain"), (_INVOCATION_HEADER, "Hopgate-Invocation")):
        if not found[name]:
            raise _malformed(f"the {title} header is missing")
        if len(found[name]) > 1:
            raise _malformed(f"more than one {title} header")
        values.append(found[name][0])
    try:
        chain = Chain.from_text(values[0].decode("latin-1"))
    except HopgateError as e:
        raise _malformed(f"Hopgate-Chain: {e}") from None
    return chain, _decode_text(values[1], "Hopgate-Invocation")


def _malformed(reason: str) -> _Refused:
    return _Refused(401, Code.MALFORMED, Code.MALFORMED.name, reason)


def _decode_text(text: bytes, title: str) -> bytes:
    """The header's bytes through the core's strict text decoder, or ``_Refused``."""
    if len(text) > _MAX_INVOCATION_TEXT:
        raise _malformed(f"{title}: longer than any invocation")
    try:
        return from_text(text.decode("latin-1"))
    except HopgateError as e:
        raise _malformed(f"{title}: {e}") from None


async def _read_bounded(receive: Receive, max_body: int) -> Optional[bytes]:
    """The whole request body, or None if the client disconnected first; ``_Refused``
    (413) as soon as it passes ``max_body``, without reading further."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > max_body:
            raise _Refused(413, None, "BODY_TOO_LARGE", _TOO_LARGE)
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the application ``body`` (the bytes the gate checked) as
    the whole request body; after it, only what is not body (``http.disconnect``)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        while True:
            # Body bytes the request did not declare were never checked: never passed on.
            message = await receive()
            if message["type"] != "http.request":
                return message

    return replay


def _settle(state: GateState, *, spent: bool) -> None:
    """Commits ``state.cost`` (or the price), at most the reservation, if ``spent``;
    else releases."""
    reservation = state.reservation
    if reservation.settled:  # the application settled it itself
        return
    reserved, cost = state.reserved, state.cost
    if not spent and cost is None:
        _settled(reservation.release)
        return
    # Spent, or the application said what the work cost before it failed: the work
    # was done, and a failure the client can provoke must not make it free.
    if cost is None:
        amount = min(state.price, reserved)
    elif isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        # Charge the reservation in full rather than forfeit it, which would also charge
        # it but warn only at GC time.
        logger.error("hopgate: cannot commit cost %r (not an int >= 0); committing the reserved %s", cost, reserved)
        amount = reserved
    elif cost > reserved:
        # The holder signed for `reserved` at most: the rest is not theirs to pay.
        logger.warning("hopgate: request cost %s, above its reservation of %s: committing %s", cost, reserved, reserved)
        amount = reserved
    else:
        amount = cost
    _settled(reservation.commit, amount)


def _settled(settle: Callable[..., None], *amount: int) -> None:
    """``settle(*amount)``, where the application has run and its response stands: a
    durable store's failure to settle is logged, never raised into the response."""
    try:
        settle(*amount)
    except LeaseExpiredError as e:
        logger.error("hopgate: the reservation's lease had expired before it was settled; its whole amount "
                     "stands as spent (%s)", e)
    except StoreError as e:
        logger.error("hopgate: the ledger store failed to settle a reservation (%s: %s); its lease will "
                     "forfeit it (the whole amount is charged)", type(e).__name__, e)


def _release_abandoned(future: "asyncio.Future[Decision]") -> None:
    if future.cancelled() or future.exception() is not None:
        return
    reservation = future.result().reservation
    if reservation is not None and not reservation.settled:
        _settled(reservation.release)
