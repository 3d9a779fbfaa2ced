"""hopgate.asgi.GateMiddleware: end to end through uvicorn and httpx on a real socket, and
in process (httpx.ASGITransport, or the ASGI calls made by hand) for the branches that
need no socket. Every test runs on both gates (native and reference).

Every reservation must be settled by the middleware: ResourceWarning (a forfeited,
garbage-collected reservation) is an error in this module, and each test checks the
ledger afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any, Optional

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import hopgate
import hopgate.reference
from hopgate import Code
from hopgate.asgi import STATUS, GateMiddleware, GateState, RouteMap, _release_abandoned

from craft import invocation as craft_invocation
from test_gate import ISSUER, A, B

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

PATH = "/api/orders"
STREAM = "/api/stream"
PRICE = 2
ROUTES: RouteMap = {
    ("POST", PATH): ("call", "api/orders", PRICE),
    ("POST", STREAM): ("call", "api/stream", 3),
    ("GET", PATH): ("call", "api/orders"),  # price 1
}
IMPLS = {"native": hopgate, "reference": hopgate.reference}


def text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_chain(budget: int = 50, caps: Optional[list[tuple[str, str]]] = None) -> Any:
    """ISSUER -> A -> B, valid around the current time; B may call api/* (default)."""
    now = int(time.time())
    grant = hopgate.Chain.grant(ISSUER, A.public_key, caps or [("api/*", "call")], 100, "usd", now - 600,
                                now + 3600, 2, nonce=os.urandom(16))
    return grant.delegate(A, B.public_key, budget=budget)


def raw(chain: Any, resource: str = "api/orders", cost: int = 5, body: bytes = b"", ability: str = "call") -> bytes:
    """An invocation the builder would refuse to make (out of scope, over the grant)."""
    return craft_invocation(B, chain.tail_signature, ability, resource, cost, int(time.time()), os.urandom(16),
                            hopgate.blake3(body))


def headers(chain: Any, cost: int = 5, body: bytes = b"", resource: str = "api/orders",
            timestamp: Optional[int] = None, invocation: Optional[bytes] = None,
            extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    if invocation is None:
        invocation = chain.invoke(B, "call", resource, cost, timestamp=timestamp, payload=body)
    return {"Hopgate-Chain": chain.to_text(), "Hopgate-Invocation": text(invocation), **(extra or {})}


async def orders(request: Request) -> Response:
    body = await request.body()
    state: GateState = request.state.hopgate
    if "x-cost-first" in request.headers:
        state.cost = int(request.headers["x-cost-first"])
    if "x-boom" in request.headers:
        raise RuntimeError("the tool failed")
    if "x-status" in request.headers:
        return Response(status_code=int(request.headers["x-status"]))
    if "x-release" in request.headers:
        state.reservation.release()
    if "x-actual" in request.headers:
        state.cost = int(request.headers["x-actual"])
    if "x-sleep" in request.headers:
        await asyncio.sleep(float(request.headers["x-sleep"]))
    return JSONResponse({"reserved": state.reserved, "price": state.price, "body": body.decode()})


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(200):  # 10 s unless the client leaves
            yield b"chunk %d\n" % i
            await asyncio.sleep(0.05)

    return StreamingResponse(chunks())


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True, "gated": "hopgate" in request.scope.get("state", {})})


def make_app(gate: Any, **kw: Any) -> Starlette:
    app = Starlette(routes=[Route(PATH, orders, methods=["GET", "POST"]), Route(STREAM, stream, methods=["POST"]),
                            Route("/health", health)])
    kw.setdefault("require", ROUTES)
    app.add_middleware(GateMiddleware, gate=gate, exempt_paths=["/health"], **kw)
    return app


def accounts(gate: Any, chain: Any) -> list[tuple[int, int]]:
    """(spent, reserved) of each link's account (0, 0 if never charged)."""
    out = []
    for rid in chain.revocation_ids:
        a = gate.ledger.account(rid)
        out.append((0, 0) if a is None else (a.spent, a.reserved))
    return out


def settled(gate: Any, chain: Any, timeout: float = 5.0) -> list[tuple[int, int]]:
    """``accounts`` once nothing is reserved any more. Through a real server the client
    can read the response before the middleware has settled (it settles after the
    last body message is sent), so wait for that, up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(reserved for _, reserved in accounts(gate, chain)) and time.monotonic() < deadline:
        time.sleep(0.005)
    return accounts(gate, chain)


def assert_denied(r: httpx.Response, status: int, code: Code) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["hopgate-decision"] == code.name
    body: dict[str, Any] = r.json()
    assert body["code"] == int(code) and body["name"] == code.name and body["reason"]
    assert "hopgate-receipt" not in r.headers
    if status == 401:
        assert r.headers["www-authenticate"] == "Hopgate"
    return body


def assert_refused(r: httpx.Response, status: int, name: str) -> dict[str, Any]:
    """A refusal that is not a gate decision: ``code`` is null."""
    assert r.status_code == status, r.text
    assert r.headers["hopgate-decision"] == name
    body: dict[str, Any] = r.json()
    assert body["code"] is None and body["name"] == name and body["reason"]
    return body


# --------------------------------------------------------------------------- a real server


class Server:
    """uvicorn on 127.0.0.1, on a free port, in a background thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        # uvicorn installs signal handlers only on the main thread: none here.
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive()


@pytest.fixture(scope="module", params=sorted(IMPLS))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    gate = IMPLS[request.param].Gate([ISSUER.public_key], skew=30, replay_window=300)
    with Server(make_app(gate, max_body=64 * 1024)) as server:
        yield gate, server.url


@pytest.fixture
def client(served: tuple[Any, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1], timeout=10) as c:
        yield c


def test_allowed_request_commits_the_actual_cost(served: tuple[Any, str], client: httpx.Client) -> None:
    gate, chain = served[0], make_chain()
    body = b'{"order": 42}'
    r = client.post(PATH, content=body, headers=headers(chain, cost=5, body=body, extra={"x-actual": "3"}))
    assert r.status_code == 200, r.text
    assert r.json() == {"reserved": 5, "price": PRICE, "body": body.decode()}
    assert r.headers["hopgate-decision"] == "OK" and "hopgate-receipt" not in r.headers
    assert settled(gate, chain) == [(3, 0), (3, 0)]
    # Default: the route's price is committed, not what the client signed for.
    r = client.post(PATH, content=b"", headers=headers(chain, cost=4))
    assert r.status_code == 200
    assert settled(gate, chain) == [(3 + PRICE, 0), (3 + PRICE, 0)]


def test_tampered_chain_is_bad_signature(served: tuple[Any, str], client: httpx.Client) -> None:
    gate, chain = served[0], make_chain()
    h = headers(chain)
    raw = bytearray(bytes(chain))
    raw[60] ^= 0x01  # inside link 0's holder_pk (offset 58..90): both signatures now fail
    h["Hopgate-Chain"] = text(bytes(raw))
    assert_denied(client.post(PATH, headers=h), 401, Code.BAD_SIGNATURE)
    assert_denied(client.post(PATH, headers=h, content=b"x" * 1000), 401, Code.BAD_SIGNATURE)
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_replayed_invocation_is_409(served: tuple[Any, str], client: httpx.Client) -> None:
    gate, chain = served[0], make_chain()
    h = headers(chain, cost=2)
    assert client.post(PATH, headers=h).status_code == 200
    body = assert_denied(client.post(PATH, headers=h), 409, Code.REPLAY)
    assert body["reason"] == hopgate.REASONS[Code.REPLAY]
    assert settled(gate, chain) == [(2, 0), (2, 0)]


def test_over_budget_is_429(served: tuple[Any, str], client: httpx.Client) -> None:
    gate, chain = served[0], make_chain(budget=50)
    assert client.post(PATH, headers=headers(chain, cost=40, extra={"x-actual": "40"})).status_code == 200
    assert_denied(client.post(PATH, headers=headers(chain, cost=20)), 429, Code.BUDGET_EXHAUSTED)
    assert client.post(PATH, headers=headers(chain, cost=10, extra={"x-actual": "10"})).status_code == 200
    assert settled(gate, chain) == [(50, 0), (50, 0)]


def test_missing_header_is_401(served: tuple[Any, str], client: httpx.Client) -> None:
    chain = make_chain()
    h = headers(chain)
    only_chain = {"Hopgate-Chain": h["Hopgate-Chain"]}
    body = assert_denied(client.post(PATH, headers=only_chain), 401, Code.MALFORMED)
    assert body["reason"] == "the Hopgate-Invocation header is missing"
    body = assert_denied(client.post(PATH), 401, Code.MALFORMED)
    assert body["reason"] == "the Hopgate-Chain header is missing"


def test_wrong_body_is_bad_signature_and_consumes_nothing(served: tuple[Any, str], client: httpx.Client) -> None:
    gate, chain = served[0], make_chain()
    h = headers(chain, cost=5, body=b'{"order": 42}')
    body = assert_denied(client.post(PATH, content=b'{"order": 43}', headers=h), 401, Code.BAD_SIGNATURE)
    assert body["reason"] == hopgate.REASONS[Code.BAD_SIGNATURE]
    # No body at all: checked against the empty payload, which the holder did not sign.
    assert_denied(client.post(PATH, headers=h), 401, Code.BAD_SIGNATURE)
    # Nothing reserved and the nonce not consumed: the genuine request still goes through.
    assert settled(gate, chain) == [(0, 0), (0, 0)]
    assert client.post(PATH, content=b'{"order": 42}', headers=h).status_code == 200
    assert settled(gate, chain) == [(PRICE, 0), (PRICE, 0)]


def test_app_raising_releases_the_reservation(served: tuple[Any, str], client: httpx.Client,
                                              caplog: pytest.LogCaptureFixture) -> None:
    gate, chain = served[0], make_chain()
    with caplog.at_level(logging.CRITICAL, logger="uvicorn.error"):  # the traceback uvicorn logs
        r = client.post(PATH, headers=headers(chain, cost=9, extra={"x-boom": "1"}))
    assert r.status_code == 500
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_exempt_path_over_the_socket(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"ok": True, "gated": False}
    assert "hopgate-decision" not in r.headers


def test_no_route_over_the_socket(served: tuple[Any, str], client: httpx.Client) -> None:
    gate, chain = served[0], make_chain()
    h = headers(chain)
    assert_refused(client.delete(PATH, headers=h), 404, "NO_ROUTE")
    assert_refused(client.post("/api/orders/", headers=h), 404, "NO_ROUTE")  # no normalisation
    assert settled(gate, chain) == [(0, 0), (0, 0)]
    assert client.post(PATH, headers=h).status_code == 200  # the nonce was not consumed


def test_body_larger_than_max_body_over_the_socket(served: tuple[Any, str], client: httpx.Client) -> None:
    gate, chain = served[0], make_chain()
    body = os.urandom(64 * 1024 + 1)
    h = headers(chain, body=body)
    r = client.post(PATH, headers=h, content=body)
    assert_refused(r, 413, "BODY_TOO_LARGE")
    assert r.headers["connection"] == "close"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    assert_refused(client.post(PATH, headers=h, content=chunks()), 413, "BODY_TOO_LARGE")
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_disconnect_mid_stream_over_the_socket_commits(served: tuple[Any, str]) -> None:
    gate, chain = served[0], make_chain()
    with httpx.Client(base_url=served[1], timeout=10) as c:
        with c.stream("POST", STREAM, headers=headers(chain, resource="api/stream", cost=7)) as r:
            assert r.status_code == 200
            assert next(r.iter_raw()).startswith(b"chunk 0")
        # Leaving the block closes the connection with 199 chunks unsent.
    # Settled well before the stream could have ended: by the disconnect.
    assert settled(gate, chain, timeout=3) == [(3, 0), (3, 0)]


# --------------------------------------------------------------------------- in process


def call(app: Any, method: str = "POST", path: str = PATH, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


@pytest.fixture
def gate(impl: ModuleType) -> Any:
    return impl.Gate([ISSUER.public_key], skew=30, replay_window=300)


class Spy:
    """A gate that counts what the middleware asks of it (and may claim an audit log)."""

    def __init__(self, gate: Any, audit: Any = None) -> None:
        self.gate, self.audit = gate, audit
        self.calls: list[tuple[str, Any, Any]] = []

    def precheck(self, chain: Any, invocation: bytes, now: Optional[int] = None, *, require: Any = None) -> Code:
        self.calls.append(("precheck", None, require))
        code: Code = self.gate.precheck(chain, invocation, now, require=require)
        return code

    def check(self, chain: Any, invocation: bytes, now: Optional[int] = None, *, payload: Any = None,
              require: Any = None) -> Any:
        self.calls.append(("check", payload, require))
        return self.gate.check(chain, invocation, now, payload=payload, require=require)


class Wire:
    """Drives one ASGI request by hand: what the middleware receives, and what it sends."""

    def __init__(self, method: str = "POST", path: str = PATH, headers: Optional[dict[str, str]] = None,
                 chunks: Any = (), spec_version: str = "2.3") -> None:
        self.scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "http_version": "1.1",
            "method": method, "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "scheme": "http", "server": ("gate", 80), "client": ("127.0.0.1", 50000),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
        }
        self.chunks = iter(chunks)
        self.received = 0  # body messages handed to the middleware
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        chunk = next(self.chunks, None)
        if chunk is None:  # the client leaves a little later
            await asyncio.sleep(0.05)
            return {"type": "http.disconnect"}
        self.received += 1
        body, more = chunk
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))

    def run(self, app: Any) -> Wire:
        asyncio.run(app(self.scope, self.receive, self.send))
        return self

    @property
    def status(self) -> int:
        status: int = self.sent[0]["status"]
        return status

    @property
    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def unreachable(name: str) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError(f"{name} must not run")

    return app


def body_chunks(body: bytes, size: int) -> list[tuple[bytes, bool]]:
    """``body`` as http.request messages of ``size`` bytes."""
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    return [(p, i < len(parts) - 1) for i, p in enumerate(parts)]


# ---- the attacks


def test_attack_route_not_bound(gate: Any) -> None:
    """A chain for ("api/search", "call") and an invocation for it open only POST /search."""
    admin_ran: list[bool] = []

    async def search(request: Request) -> Response:
        return JSONResponse({"results": []})

    async def delete_users(request: Request) -> Response:
        admin_ran.append(True)
        return JSONResponse({"deleted": "everyone"})

    app = Starlette(routes=[Route("/search", search, methods=["POST"]),
                            Route("/admin/users", delete_users, methods=["DELETE", "POST"])])
    app.add_middleware(GateMiddleware, gate=gate, require={("POST", "/search"): ("call", "api/search", 1),
                                                           ("DELETE", "/admin/users"): ("delete", "admin/users", 1)})
    chain = make_chain(caps=[("api/search", "call")])
    h = headers(chain, cost=1, resource="api/search")
    # The invocation is genuine, unexpired and within budget; it names another route.
    assert_denied(call(app, "DELETE", "/admin/users", headers=h), 403, Code.SCOPE_DENIED)
    # An invocation that names the admin route is outside the chain's grant.
    forged = raw(chain, ability="delete", resource="admin/users", cost=1)
    assert_denied(call(app, "DELETE", "/admin/users", headers=headers(chain, invocation=forged)), 403,
                  Code.SCOPE_DENIED)
    # A method or path the route map does not name has no route at all.
    assert_refused(call(app, "POST", "/admin/users", headers=h), 404, "NO_ROUTE")
    assert_refused(call(app, "DELETE", "/admin/users/", headers=h), 404, "NO_ROUTE")
    assert not admin_ran
    assert settled(gate, chain) == [(0, 0), (0, 0)]
    assert call(app, "POST", "/search", headers=h).status_code == 200  # the nonce was never consumed
    assert settled(gate, chain) == [(1, 0), (1, 0)]


def test_attack_route_not_bound_templated(gate: Any) -> None:
    """A callable ``require`` binds the path's parameters into the resource."""
    def require(scope: Any) -> Optional[tuple[str, str, int]]:
        parts = scope["path"].split("/")
        if scope["method"] == "POST" and len(parts) == 3 and parts[1] == "orders" and parts[2].isdigit():
            return ("call", f"api/orders/{parts[2]}", 1)
        return None

    chain = make_chain()
    app = make_app(gate, require=require)
    h = headers(chain, cost=1, resource="api/orders/7")
    assert_denied(call(app, path="/orders/8", headers=h), 403, Code.SCOPE_DENIED)
    assert_refused(call(app, path="/orders/x", headers=h), 404, "NO_ROUTE")
    assert_refused(call(app, "GET", "/orders/7", headers=h), 404, "NO_ROUTE")
    assert settled(gate, chain) == [(0, 0), (0, 0)]
    # Starlette has no /orders/7 route: the gate allowed it, the app answers 404 (a served request).
    assert call(app, path="/orders/7", headers=h).status_code == 404
    assert settled(gate, chain) == [(1, 0), (1, 0)]


def test_attack_cost_zero_on_spent_budget(gate: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The server sets the price: 50 concurrent requests on a cap of 10 can never spend past it."""
    chain = make_chain(budget=10)
    app = make_app(gate)

    async def burst(cost: int, extra: dict[str, str]) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate") as c:
            return list(await asyncio.gather(*(
                c.post(PATH, headers=headers(chain, cost=cost, extra=extra)) for _ in range(50))))

    # Signed cost 0, below the price: refused by the gate before any reservation.
    responses = asyncio.run(burst(0, {"x-actual": "5", "x-sleep": "0.05"}))
    for r in responses:
        assert_denied(r, 403, Code.COST_BELOW_PRICE)
    assert settled(gate, chain) == [(0, 0), (0, 0)]
    # Signed cost = price, and the application claims a real cost of 9 for each: the
    # middleware commits at most each reservation, so the cap holds.
    with caplog.at_level(logging.WARNING, logger="hopgate.asgi"):
        responses = asyncio.run(burst(PRICE, {"x-actual": "9", "x-sleep": "0.05"}))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429] * 45, statuses
    assert settled(gate, chain) == [(10, 0), (10, 0)]
    assert gate.ledger.account(chain.revocation_ids[1]).overrun == 0
    assert "above its reservation" in caplog.text
    # On the spent budget, cost 0 is still COST_BELOW_PRICE (the price is judged before the ledger).
    for r in asyncio.run(burst(0, {})):
        assert_denied(r, 403, Code.COST_BELOW_PRICE)
    assert_denied(call(app, headers=headers(chain, cost=PRICE)), 429, Code.BUDGET_EXHAUSTED)
    assert settled(gate, chain) == [(10, 0), (10, 0)]


def test_attack_invocation_for_other_audience(impl: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    """Billing and search trust the same issuer; an invocation for one never opens the other."""
    ledger = impl.Ledger()
    billing_gate = impl.Gate([ISSUER.public_key], ledger=ledger)
    search_gate = impl.Gate([ISSUER.public_key], ledger=ledger)
    inner = unreachable("billing")
    billing = GateMiddleware(inner, gate=billing_gate, require={("POST", "/charge"): ("call", "billing/charge", 5)},
                             audience="billing/")
    search_ran: list[str] = []

    async def search_app(scope: Any, receive: Any, send: Any) -> None:
        search_ran.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    search = GateMiddleware(search_app, gate=search_gate,
                            require={("POST", "/query"): ("call", "search/query", 1)}, audience="search/")
    chain = make_chain(caps=[("search/*", "call"), ("billing/*", "read")])
    h = headers(chain, cost=5, resource="search/query")
    wire = Wire("POST", "/charge", h).run(billing)
    assert wire.status == 403 and wire.json["name"] == "SCOPE_DENIED"

    # A route map that reaches outside the audience does not start.
    with pytest.raises(ValueError, match="outside audience 'billing/'"):
        GateMiddleware(inner, gate=billing_gate, require={("POST", "/q"): ("call", "search/query", 1)},
                       audience="billing/")
    # A callable that does: 500 and a CRITICAL log line, never an allow.
    leaky = GateMiddleware(inner, gate=billing_gate, require=lambda scope: ("call", "search" + scope["path"], 1),
                           audience="billing/")
    with caplog.at_level(logging.CRITICAL, logger="hopgate.asgi"):
        wire = Wire("POST", "/query", h).run(leaky)
    assert wire.status == 500 and wire.json == {"code": None, "name": "MISCONFIGURED",
                                                "reason": wire.json["reason"]}
    assert "outside audience 'billing/'" in caplog.text
    assert "search/query" not in json.dumps(wire.json)  # details stay in the log
    assert settled(billing_gate, chain) == [(0, 0), (0, 0)]
    # Refused twice, consumed nowhere: the search service still takes it.
    assert Wire("POST", "/query", h).run(search).status == 200 and search_ran == ["/query"]
    assert settled(search_gate, chain) == [(1, 0), (1, 0)]


@pytest.mark.parametrize("declared", [True, False])
def test_attack_body_larger_than_max_body(gate: Any, declared: bool) -> None:
    """413 as soon as the body passes max_body, declared or streamed; nothing read past
    it, nothing reserved, no nonce consumed."""
    chain = make_chain()
    body = os.urandom(1 << 19).hex().encode()  # 1 MiB
    h = headers(chain, body=body)
    h.update({"Content-Length": str(len(body))} if declared else {"Transfer-Encoding": "chunked"})
    chunks = body_chunks(body, 64 * 1024)  # 16 messages
    wire = Wire(headers=h, chunks=chunks).run(GateMiddleware(unreachable("app"), gate=gate, require=ROUTES,
                                                             max_body=256 * 1024))
    assert wire.status == 413 and wire.json["name"] == "BODY_TOO_LARGE" and wire.json["code"] is None
    assert (b"connection", b"close") in wire.sent[0]["headers"]
    # Declared: nothing read at all. Streamed: the fifth 64 KiB message passes 256 KiB; no more.
    assert wire.received == (0 if declared else 5)
    # A lying Content-Length (small) does not help: the stream is counted.
    if declared:
        h["Content-Length"] = "10"
        wire = Wire(headers=h, chunks=chunks).run(GateMiddleware(unreachable("app"), gate=gate, require=ROUTES,
                                                                 max_body=256 * 1024))
        assert wire.status == 413 and wire.received == 5
        h["Content-Length"] = str(len(body))
    assert settled(gate, chain) == [(0, 0), (0, 0)]
    # The same invocation is still fresh: a server that takes bigger bodies serves it.
    roomy = make_app(gate, max_body=2 << 20)
    r = call(roomy, headers={k: v for k, v in h.items() if k != "Transfer-Encoding"}, content=body)
    assert r.status_code == 200 and r.json()["body"] == body.decode()
    assert settled(gate, chain) == [(PRICE, 0), (PRICE, 0)]


def test_attack_disconnect_after_response_start(impl: ModuleType) -> None:
    """A client that leaves after the response started has had a response: the price is
    committed, whichever way the server tells the application."""
    gate = impl.Gate([ISSUER.public_key])
    price = 3

    def run(app: Any, wire: Wire, *, cancel_after: Optional[float] = None) -> list[tuple[int, int]]:
        chain = make_chain()
        wire.scope["headers"] += [(b"hopgate-chain", chain.to_text().encode()),
                                  (b"hopgate-invocation", text(chain.invoke(B, "call", "api/stream", 7)).encode())]
        middleware = GateMiddleware(app, gate=gate, require={("POST", STREAM): ("call", "api/stream", price)})

        async def go() -> None:
            task = asyncio.ensure_future(middleware(wire.scope, wire.receive, wire.send))
            if cancel_after is None:
                await task
                return
            await asyncio.sleep(cancel_after)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        try:
            asyncio.run(go())
        except (OSError, RuntimeError, ClientDisconnect):
            pass
        return settled(gate, chain)

    spent, released = [(price, 0), (price, 0)], [(0, 0), (0, 0)]

    # ASGI 2.4: a send to a gone client raises OSError (Starlette turns it into ClientDisconnect).
    class Gone(Wire):
        async def send(self, message: Any) -> None:
            if message["type"] == "http.response.body" and len(self.sent) >= 2:
                raise OSError("the client went away")
            await super().send(message)

    starlette = Starlette(routes=[Route(STREAM, stream, methods=["POST"])])
    assert run(starlette, Gone(path=STREAM, spec_version="2.4")) == spent

    # ASGI 2.3: the application hears http.disconnect and stops streaming.
    assert run(starlette, Wire(path=STREAM)) == spent

    async def started_then_waits(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await asyncio.sleep(60)

    # The server cancels the request when its client goes.
    assert run(started_then_waits, Wire(path=STREAM), cancel_after=0.05) == spent

    async def leaves_on_disconnect(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()  # the body
        assert (await receive())["type"] == "http.disconnect"
        raise RuntimeError("the client went away")

    assert run(leaves_on_disconnect, Wire(path=STREAM)) == spent

    # Before the response starts, a client that leaves got nothing: released.
    async def waits_then_returns(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        assert (await receive())["type"] == "http.disconnect"

    async def waits_then_starts(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(60)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    assert run(waits_then_returns, Wire(path=STREAM)) == released
    assert run(waits_then_starts, Wire(path=STREAM), cancel_after=0.05) == released

    # The application did its work and started answering, but the client was gone by
    # then (the start raises): charged like a client that leaves after the start, the
    # same on every server whether it raises or drops the send.
    class GoneAtStart(Wire):
        async def send(self, message: Any) -> None:
            raise OSError("the client went away")

    assert run(starlette, GoneAtStart(path=STREAM, spec_version="2.4")) == spent

    # The application failing mid-stream while its client is still there: released.
    async def fails_mid_stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("the tool failed")

    assert run(fails_mid_stream, Wire(path=STREAM)) == released


# ---- the order of the checks


@pytest.mark.parametrize("case", ["bad_signature", "untrusted", "other_resource", "below_price", "stale",
                                  "over_grant"])
def test_precheck_failures_never_read_the_body(impl: ModuleType, case: str) -> None:
    gate = impl.Gate([ISSUER.public_key])
    spy = Spy(gate)
    chain = make_chain()
    body = b'{"order": 42}'
    invocation = {
        "other_resource": raw(chain, resource="api/refunds", body=body),
        "below_price": raw(chain, cost=PRICE - 1, body=body),
        "stale": chain.invoke(B, "call", "api/orders", 5, timestamp=int(time.time()) - 3600, payload=body),
        "over_grant": raw(chain, cost=51, body=body),
    }.get(case) or chain.invoke(B, "call", "api/orders", 5, payload=body)
    h = headers(chain, invocation=invocation, extra={"Content-Length": str(len(body))})
    if case == "bad_signature":
        tampered = bytearray(invocation)
        tampered[-1] ^= 1
        h["Hopgate-Invocation"] = text(bytes(tampered))
    if case == "untrusted":
        spy.gate = gate = impl.Gate([A.public_key])
    expected = {"bad_signature": Code.BAD_SIGNATURE, "untrusted": Code.UNTRUSTED_ISSUER,
                "other_resource": Code.SCOPE_DENIED, "below_price": Code.COST_BELOW_PRICE,
                "stale": Code.STALE_INVOCATION, "over_grant": Code.COST_EXCEEDS_GRANT}[case]

    def never() -> Iterator[tuple[bytes, bool]]:
        raise AssertionError("the body was read")
        yield b"", False

    wire = Wire(headers=h, chunks=never()).run(GateMiddleware(unreachable("app"), gate=spy, require=ROUTES))
    assert (wire.status, wire.json["code"]) == (STATUS[expected], int(expected))
    assert [name for name, _, _ in spy.calls] == ["precheck"]  # no audit log: precheck's word stands
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_attack_replayed_headers_never_get_their_body_read(impl: ModuleType) -> None:
    # Captured headers replayed within the skew: refused before a byte of the body is read.
    gate = impl.Gate([ISSUER.public_key])
    chain = make_chain()
    body = b"x" * 1000
    invocation = chain.invoke(B, "call", "api/orders", 5, payload=body)
    h = headers(chain, invocation=invocation, extra={"Content-Length": str(len(body))})
    first = Wire(headers=h, chunks=[(body, False)]).run(make_app(gate))
    assert first.status == 200

    def never() -> Iterator[tuple[bytes, bool]]:
        raise AssertionError("the body was read")
        yield b"", False

    again = Wire(headers=h, chunks=never()).run(GateMiddleware(unreachable("app"), gate=gate, require=ROUTES))
    assert (again.status, again.json["name"]) == (409, "REPLAY")


def test_precheck_failure_with_an_audit_log_is_audited(impl: ModuleType, tmp_path: Any) -> None:
    chain = make_chain()
    body = b"payload"
    with impl.AuditLog(tmp_path / "decisions.log", key=os.urandom(32)) as log:
        gate = impl.Gate([ISSUER.public_key], audit=log)
        spy = Spy(gate, audit=log)
        h = headers(chain, invocation=raw(chain, cost=PRICE - 1, body=body), extra={"Content-Length": "7"})
        wire = Wire(headers=h, chunks=[]).run(GateMiddleware(unreachable("app"), gate=spy, require=ROUTES))
        assert wire.status == 403 and wire.json["name"] == "COST_BELOW_PRICE" and wire.received == 0
        # The audited check runs without the body, with the route's requirement.
        assert spy.calls == [("precheck", None, ("call", "api/orders", PRICE)),
                             ("check", None, ("call", "api/orders", PRICE))]
        assert len(log) == 1
        assert hopgate.GateRecord.from_bytes(log.read(0, 1)[0]).code is Code.COST_BELOW_PRICE
        # A gate whose audit log the middleware cannot see is treated as audited.
        bare = Spy(gate)
        del bare.audit
        wire = Wire(headers=h, chunks=[]).run(GateMiddleware(unreachable("app"), gate=bare, require=ROUTES))
        assert wire.status == 403 and [name for name, _, _ in bare.calls] == ["precheck", "check"]
        assert len(log) == 2
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_declared_body_is_prechecked_then_bound(gate: Any) -> None:
    spy = Spy(gate)
    chain = make_chain()
    body = b'{"order": 42}'
    h = headers(chain, body=body)
    r = call(make_app(spy), headers=h, content=body)
    assert r.status_code == 200 and r.json()["body"] == body.decode()
    requirement = ("call", "api/orders", PRICE)
    assert spy.calls == [("precheck", None, requirement), ("check", body, requirement)]
    assert settled(gate, chain) == [(PRICE, 0), (PRICE, 0)]


def test_no_declared_body_skips_precheck(gate: Any) -> None:
    spy = Spy(gate)
    chain = make_chain()
    app = make_app(spy)
    r = call(app, "GET", PATH, headers=headers(chain, cost=1))
    assert r.status_code == 200 and r.json()["body"] == ""
    assert spy.calls == [("check", b"", ("call", "api/orders", 1))]
    # A GET whose invocation signs a non-empty payload: the empty payload does not match it.
    assert_denied(call(app, "GET", PATH, headers=headers(chain, cost=1, body=b"x")), 401, Code.BAD_SIGNATURE)
    # Content-Length: 0 is no body either.
    spy.calls.clear()
    wire = Wire(headers=headers(chain, extra={"Content-Length": "0"}), chunks=[(b"", False)]).run(app)
    assert wire.status == 200 and spy.calls == [("check", b"", ("call", "api/orders", PRICE))]
    assert settled(gate, chain) == [(1 + PRICE, 0), (1 + PRICE, 0)]


def test_undeclared_body_never_reaches_the_app(gate: Any) -> None:
    """Body bytes on a request that declared none were not checked: the app sees none."""
    chain = make_chain()
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        first = await receive()
        seen.append(first["body"])
        assert not first["more_body"]
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wire = Wire(headers=headers(chain), chunks=[(b"unsigned", True), (b"more", False)])
    wire.run(GateMiddleware(app, gate=gate, require=ROUTES))
    assert wire.status == 204 and seen == [b""]
    assert settled(gate, chain) == [(PRICE, 0), (PRICE, 0)]


def test_no_route_is_404_before_any_header(gate: Any) -> None:
    class Untouchable(list[Any]):
        def __iter__(self) -> Any:
            raise AssertionError("a header was read")

    for method, path in (("DELETE", PATH), ("POST", "/nowhere"), ("POST", PATH.upper())):
        wire = Wire(method, path, chunks=())
        wire.scope["headers"] = Untouchable()
        wire.run(GateMiddleware(unreachable("app"), gate=gate, require=ROUTES))
        assert wire.status == 404
        assert wire.json == {"code": None, "name": "NO_ROUTE", "reason": wire.json["reason"]}
        assert (b"hopgate-decision", b"NO_ROUTE") in wire.sent[0]["headers"]
    r = call(make_app(gate, require=lambda scope: None))
    assert_refused(r, 404, "NO_ROUTE")


def test_constructor_requires_a_route_map(gate: Any) -> None:
    app = unreachable("app")
    with pytest.raises(TypeError, match="require"):
        GateMiddleware(app, gate=gate)  # type: ignore[call-arg]
    # Starlette builds its middleware when the server starts the app: it refuses to start.
    unrouted = Starlette()
    unrouted.add_middleware(GateMiddleware, gate=gate)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="require"):
        unrouted.build_middleware_stack()
    with pytest.raises(TypeError, match="require"):
        make_app(gate, require=None).build_middleware_stack()
    with pytest.raises(TypeError, match="bind_body"):
        GateMiddleware(app, gate=gate, require=ROUTES, bind_body=False)  # type: ignore[call-arg]


@pytest.mark.parametrize("require, error, message", [
    ({}, ValueError, "empty"),
    ({("post", "/s"): ("call", "api/s")}, ValueError, "upper-case HTTP method"),
    ({("POST", "s"): ("call", "api/s")}, ValueError, "must start with '/'"),
    ({("POST",): ("call", "api/s")}, TypeError, "expected a \\(method, path\\) tuple"),
    ({"/s": ("call", "api/s")}, TypeError, "expected a \\(method, path\\) tuple"),
    ({("POST", "/s"): ("call", "api/s", 0)}, ValueError, "price must be at least 1"),
    ({("POST", "/s"): ("call", "api/s", -5)}, ValueError, "price must be at least 1"),
    ({("POST", "/s"): ("call", "api/s", 1 << 64)}, ValueError, "below 2\\*\\*64"),
    ({("POST", "/s"): ("call", "api/s", 1.5)}, TypeError, "price must be an int"),
    ({("POST", "/s"): ("call", "api/s", True)}, TypeError, "price must be an int"),
    ({("POST", "/s"): ("call",)}, TypeError, "expected \\(ability, resource, price\\)"),
    ({("POST", "/s"): ["call", "api/s", 1]}, TypeError, "expected \\(ability, resource, price\\)"),
    ({("POST", "/s"): ("call", "api/s", 1, 2)}, TypeError, "expected \\(ability, resource, price\\)"),
    ({("POST", "/s"): ("call", b"api/s")}, TypeError, "resource must be a str"),
    ({("POST", "/s"): ("", "api/s")}, ValueError, "ability must be 1 to 255 bytes"),
    ({("POST", "/s"): ("call", "x" * 256)}, ValueError, "resource must be 1 to 255 bytes"),
    ({("POST", "/s"): ("call", "api\0s")}, ValueError, "without NUL"),
    ({("POST", "/s"): ("call", "api/\udc80")}, ValueError, "not valid UTF-8"),
    ({("POST", "/health"): ("call", "api/h")}, ValueError, "also in exempt_paths"),
    ("/s", TypeError, "expected a dict"),
])
def test_route_map_is_checked_at_construction(gate: Any, require: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        GateMiddleware(unreachable("app"), gate=gate, require=require, exempt_paths=["/health"])


@pytest.mark.parametrize("kw, error", [({"audience": ""}, ValueError), ({"audience": b"api/"}, TypeError),
                                       ({"max_body": -1}, ValueError), ({"max_body": 1.0}, TypeError),
                                       ({"exempt_paths": "/health"}, TypeError)])
def test_settings_are_checked_at_construction(gate: Any, kw: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        GateMiddleware(unreachable("app"), gate=gate, require=ROUTES, **kw)


@pytest.mark.parametrize("answer", [("call", "api/orders", 0), ("call", "api/orders", "1"), "api/orders",
                                    ("call", "api/orders", 1, 1), RuntimeError("lookup failed")])
def test_callable_require_answering_nonsense_is_500(gate: Any, answer: Any, caplog: pytest.LogCaptureFixture) -> None:
    def require(scope: Any) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    chain = make_chain()
    with caplog.at_level(logging.CRITICAL, logger="hopgate.asgi"):
        r = call(make_app(gate, require=require), headers=headers(chain))
    assert_refused(r, 500, "MISCONFIGURED")
    assert "require(scope) for POST /api/orders" in caplog.text
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_bad_content_length_is_400(gate: Any) -> None:
    chain = make_chain()
    for value in ("ten", "-1", "1e3", ""):
        wire = Wire(headers=headers(chain, extra={"Content-Length": value}), chunks=[(b"", False)])
        wire.run(GateMiddleware(unreachable("app"), gate=gate, require=ROUTES))
        assert wire.status == 400 and wire.json["name"] == "BAD_CONTENT_LENGTH" and wire.received == 0
    wire = Wire(headers=headers(chain, extra={"Content-Length": "9" * 40}), chunks=[(b"", False)])
    wire.run(GateMiddleware(unreachable("app"), gate=gate, require=ROUTES))
    assert wire.status == 413 and wire.received == 0
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_client_leaving_during_the_body_reserves_nothing(gate: Any) -> None:
    chain = make_chain()
    body = b"0123456789"
    wire = Wire(headers=headers(chain, body=body, extra={"Content-Length": "10"}), chunks=[(body[:4], True)])
    wire.run(GateMiddleware(unreachable("app"), gate=gate, require=ROUTES))
    assert wire.sent == [] and wire.received == 1
    assert settled(gate, chain) == [(0, 0), (0, 0)]


# ---- statuses and settlement


@pytest.mark.parametrize("bad", ["!!!!", "AAAA=", "AAAAA", "AB", "A A"])
def test_invocation_not_base64url_is_malformed(gate: Any, bad: str) -> None:
    # "AB": 12 bits for one byte, the last 4 must be zero ("AA" is the only text of b"\0").
    chain = make_chain()
    h = headers(chain)
    h["Hopgate-Invocation"] = bad
    assert_denied(call(make_app(gate), headers=h), 401, Code.MALFORMED)
    h["Hopgate-Invocation"] = "A" * 2000
    assert_denied(call(make_app(gate), headers=h), 401, Code.MALFORMED)


def test_chain_not_base64url_or_not_a_chain_is_malformed(gate: Any) -> None:
    chain = make_chain()
    for bad in (chain.to_text() + "=", chain.to_text()[:-1] + "*", text(b"HGC1\x01")):
        h = headers(chain)
        h["Hopgate-Chain"] = bad
        body = assert_denied(call(make_app(gate), headers=h), 401, Code.MALFORMED)
        assert body["reason"].startswith("Hopgate-Chain: ")


def test_invocation_that_does_not_parse_is_malformed(gate: Any) -> None:
    chain = make_chain()
    good = chain.invoke(B, "call", "api/orders", 1)
    for bad in (good[:50], good + b"\0", b"XXXX" + good[4:]):
        assert_denied(call(make_app(gate), headers=headers(chain, invocation=bad)), 401, Code.MALFORMED)
        assert_denied(call(make_app(gate), headers=headers(chain, invocation=bad), content=b"x"), 401,
                      Code.MALFORMED)


def test_repeated_header_is_malformed(gate: Any) -> None:
    chain = make_chain()
    h = headers(chain)
    raw = [(k, v) for k, v in h.items()] + [("Hopgate-Chain", h["Hopgate-Chain"])]
    body = assert_denied(call(make_app(gate), headers=raw), 401, Code.MALFORMED)
    assert body["reason"] == "more than one Hopgate-Chain header"


def test_denial_statuses(gate: Any, impl: ModuleType) -> None:
    chain = make_chain()
    app = make_app(gate)
    assert_denied(call(app, headers=headers(chain, invocation=raw(chain, resource="files/x"))), 403,
                  Code.SCOPE_DENIED)
    assert_denied(call(app, headers=headers(chain, invocation=raw(chain, cost=51))), 403, Code.COST_EXCEEDS_GRANT)
    assert_denied(call(app, headers=headers(chain, cost=PRICE - 1)), 403, Code.COST_BELOW_PRICE)
    stale = int(time.time()) - 3600
    assert_denied(call(app, headers=headers(chain, timestamp=stale)), 401, Code.STALE_INVOCATION)
    stranger = impl.Gate([A.public_key])
    assert_denied(call(make_app(stranger), headers=headers(chain)), 401, Code.UNTRUSTED_ISSUER)
    gate.revoke(chain.revocation_ids[1])
    assert_denied(call(app, headers=headers(chain)), 403, Code.REVOKED)
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_every_denial_code_has_a_status() -> None:
    assert set(STATUS) == set(Code) - {Code.OK}
    assert {STATUS[c] for c in (Code.MALFORMED, Code.UNTRUSTED_ISSUER, Code.BAD_SIGNATURE, Code.BROKEN_LINK,
                                Code.STALE_INVOCATION)} == {401}
    assert STATUS[Code.REPLAY] == 409 and STATUS[Code.BUDGET_EXHAUSTED] == 429
    assert {STATUS[c] for c in Code if 5 <= c <= 14} == {403} and STATUS[Code.COST_BELOW_PRICE] == 403


def test_replay_status_can_be_403(gate: Any) -> None:
    chain, app = make_chain(), make_app(gate, replay_status=403)
    h = headers(chain)
    assert call(app, headers=h).status_code == 200
    assert_denied(call(app, headers=h), 403, Code.REPLAY)


@pytest.mark.parametrize("threaded", [True, False])
def test_server_error_releases_and_success_commits(gate: Any, threaded: bool) -> None:
    chain, app = make_chain(), make_app(gate, threaded=threaded)
    assert call(app, headers=headers(chain, cost=6, extra={"x-status": "503"})).status_code == 503
    assert call(app, headers=headers(chain, cost=6, extra={"x-boom": "1"})).status_code == 500
    assert settled(gate, chain) == [(0, 0), (0, 0)]
    assert call(app, headers=headers(chain, cost=6, extra={"x-status": "404"})).status_code == 404
    assert settled(gate, chain) == [(PRICE, 0), (PRICE, 0)]  # a client error is still served work
    body = b"with a body: prechecked in the thread too"
    assert call(app, headers=headers(chain, cost=6, body=body), content=body).status_code == 200
    assert_denied(call(app, headers=headers(chain, cost=6, body=body), content=b"other"), 401, Code.BAD_SIGNATURE)
    assert settled(gate, chain) == [(2 * PRICE, 0), (2 * PRICE, 0)]


def test_attack_work_made_free_by_a_failure_after_it(gate: Any) -> None:
    # The application did costly work and said so (state.cost), then failed or
    # answered 5xx: what it said was spent is committed, not released.
    chain, app = make_chain(), make_app(gate)
    assert call(app, headers=headers(chain, cost=6, extra={"x-cost-first": "5", "x-boom": "1"})).status_code == 500
    assert call(app, headers=headers(chain, cost=6, extra={"x-cost-first": "4", "x-status": "503"})).status_code == 503
    assert settled(gate, chain) == [(9, 0), (9, 0)]


def test_app_may_settle_the_reservation_itself(gate: Any) -> None:
    chain = make_chain()
    r = call(make_app(gate), headers=headers(chain, cost=6, extra={"x-release": "1"}))
    assert r.status_code == 200
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_cost_within_the_reservation_is_committed(gate: Any) -> None:
    chain = make_chain()
    assert call(make_app(gate), headers=headers(chain, cost=6, extra={"x-actual": "6"})).status_code == 200
    assert call(make_app(gate), headers=headers(chain, cost=6, extra={"x-actual": "0"})).status_code == 200
    assert settled(gate, chain) == [(6, 0), (6, 0)]


def test_cost_above_the_reservation_is_clamped_and_logged(gate: Any, caplog: pytest.LogCaptureFixture) -> None:
    chain = make_chain()
    with caplog.at_level(logging.WARNING, logger="hopgate.asgi"):
        r = call(make_app(gate), headers=headers(chain, cost=6, extra={"x-actual": "8"}))
    assert r.status_code == 200
    assert settled(gate, chain) == [(6, 0), (6, 0)]
    assert gate.ledger.account(chain.revocation_ids[1]).overrun == 0
    assert "above its reservation of 6" in caplog.text


def test_cost_the_ledger_refuses_commits_the_reservation(gate: Any, caplog: pytest.LogCaptureFixture) -> None:
    chain = make_chain()
    with caplog.at_level(logging.ERROR, logger="hopgate.asgi"):
        r = call(make_app(gate), headers=headers(chain, cost=6, extra={"x-actual": "-1"}))
    assert r.status_code == 200
    assert settled(gate, chain) == [(6, 0), (6, 0)]
    assert "cannot commit cost -1" in caplog.text


def test_chunked_body_is_read_whole_and_replayed(gate: Any) -> None:
    chain = make_chain()
    body = os.urandom(3000).hex().encode()

    async def chunks() -> Any:
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    r = call(make_app(gate), headers=headers(chain, body=body), content=chunks())
    assert r.status_code == 200 and r.json()["body"] == body.decode()


def test_body_of_exactly_max_body_is_read(gate: Any) -> None:
    chain = make_chain()
    body = b"x" * 4096
    assert call(make_app(gate, max_body=4096), headers=headers(chain, body=body), content=body).status_code == 200
    assert_refused(call(make_app(gate, max_body=4095), headers=headers(chain, body=body), content=body), 413,
                   "BODY_TOO_LARGE")
    assert settled(gate, chain) == [(PRICE, 0), (PRICE, 0)]


def test_receipt_header_with_an_audit_log(impl: ModuleType, tmp_path: Any) -> None:
    key = os.urandom(32)
    chain = make_chain()
    with impl.AuditLog(tmp_path / "decisions.log", key=key) as log:
        audited = impl.Gate([ISSUER.public_key], audit=log)
        r = call(make_app(audited), headers=headers(chain))
        assert r.status_code == 200
        raw = r.headers["hopgate-receipt"]
        receipt = impl.Receipt.from_bytes(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        assert log.verify_receipt(receipt) and receipt.is_authentic(key)
        record = hopgate.GateRecord.from_bytes(log.read(receipt.index, receipt.index + 1)[0])
        assert record.code is Code.OK


def test_lifespan_passes_through(gate: Any) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def never() -> Any:
        raise AssertionError("the middleware must not read")

    async def discard(message: Any) -> None:
        raise AssertionError("the middleware must not answer")

    middleware = GateMiddleware(app, gate=gate, require=ROUTES)
    asyncio.run(middleware({"type": "lifespan"}, never, discard))
    assert seen == ["lifespan"]


def test_attack_websocket_bypasses_the_gate(gate: Any) -> None:
    # A websocket carries no invocation: on a gated path it is closed before it is
    # accepted, never handed to the application; on an exempt path it passes.
    seen: list[str] = []
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])

    async def never() -> Any:
        raise AssertionError("the middleware must not read")

    async def record(message: Any) -> None:
        sent.append(message)

    middleware = GateMiddleware(app, gate=gate, require=ROUTES, exempt_paths=["/ws-open"])
    asyncio.run(middleware({"type": "websocket", "path": PATH, "headers": []}, never, record))
    assert seen == [] and sent == [{"type": "websocket.close", "code": 1008, "reason": "not gated by hopgate"}]
    asyncio.run(middleware({"type": "websocket", "path": "/ws-open", "headers": []}, never, record))
    assert seen == ["/ws-open"] and len(sent) == 1


def test_audience_is_a_whole_segment(gate: Any) -> None:
    with pytest.raises(ValueError, match="must end with '/'"):
        GateMiddleware(make_app(gate), gate=gate, require={("POST", "/a"): ("call", "billing-admin/x", 1)},
                       audience="billing")


def test_exempt_path_in_process(gate: Any) -> None:
    r = call(make_app(gate), "GET", "/health")
    assert r.status_code == 200 and r.json() == {"ok": True, "gated": False}


def test_abandoned_check_releases_its_reservation(gate: Any) -> None:
    """The callback used when a request is cancelled while its check runs in a thread."""
    chain = make_chain()

    async def go() -> None:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(gate.check(chain, chain.invoke(B, "call", "api/x", 7)))
        assert accounts(gate, chain) == [(0, 7), (0, 7)]
        _release_abandoned(future)
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError())
        _release_abandoned(failed)  # nothing to release

    asyncio.run(go())
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_a_forfeited_reservation_would_fail_this_module(gate: Any) -> None:
    """The ResourceWarning filter above is live: an unsettled reservation is caught."""
    chain = make_chain()
    with pytest.warns(ResourceWarning):
        gate.check(chain, chain.invoke(B, "call", "api/x", 1))
        gc.collect()


def test_body_reason_is_json(gate: Any) -> None:
    # The error body is JSON with exactly three keys, whatever the refusal.
    for r in (call(make_app(gate)), call(make_app(gate), "PUT")):
        assert set(json.loads(r.content)) == {"code", "name", "reason"}
        assert r.headers["content-type"] == "application/json"
