"""hopgate.asgi.GateMiddleware: end to end through uvicorn and httpx on a real socket, and
in process (httpx.ASGITransport) for the branches that need no socket.

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
from collections.abc import Iterator
from typing import Any, Optional

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import hopgate
from hopgate import Code
from hopgate.asgi import STATUS, GateMiddleware, GateState, _release_abandoned

from craft import invocation as craft_invocation
from test_gate import ISSUER, A, B

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

PATH = "/api/orders"


def text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_chain(budget: int = 50) -> Any:
    """ISSUER -> A -> B, valid around the current time; B may call api/*."""
    now = int(time.time())
    grant = hopgate.Chain.grant(ISSUER, A.public_key, [("api/*", "call")], 100, "usd", now - 600, now + 3600, 2,
                                nonce=os.urandom(16))
    return grant.delegate(A, B.public_key, budget=budget)


def raw(chain: Any, resource: str = "api/orders", cost: int = 5, body: bytes = b"") -> bytes:
    """An invocation the builder would refuse to make (out of scope, over the grant)."""
    return craft_invocation(B, chain.tail_signature, "call", resource, cost, int(time.time()), os.urandom(16),
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
    if "x-boom" in request.headers:
        raise RuntimeError("the tool failed")
    if "x-status" in request.headers:
        return Response(status_code=int(request.headers["x-status"]))
    if "x-release" in request.headers:
        state.reservation.release()
    if "x-actual" in request.headers:
        state.cost = int(request.headers["x-actual"])
    return JSONResponse({"reserved": state.reserved, "body": body.decode()})


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True, "gated": "hopgate" in request.scope.get("state", {})})


def make_app(gate: Any, **kw: Any) -> Starlette:
    app = Starlette(routes=[Route(PATH, orders, methods=["POST"]), Route("/health", health)])
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


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Any, str]]:
    gate = hopgate.Gate([ISSUER.public_key], skew=30, replay_window=300)
    with Server(make_app(gate)) as server:
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
    assert r.json() == {"reserved": 5, "body": body.decode()}
    assert r.headers["hopgate-decision"] == "OK" and "hopgate-receipt" not in r.headers
    assert settled(gate, chain) == [(3, 0), (3, 0)]
    # Default: the reserved amount is committed.
    r = client.post(PATH, content=b"", headers=headers(chain, cost=4))
    assert r.status_code == 200
    assert settled(gate, chain) == [(7, 0), (7, 0)]


def test_tampered_chain_is_bad_signature(served: tuple[Any, str], client: httpx.Client) -> None:
    gate, chain = served[0], make_chain()
    h = headers(chain)
    raw = bytearray(bytes(chain))
    raw[60] ^= 0x01  # inside link 0's holder_pk (offset 58..90): both signatures now fail
    h["Hopgate-Chain"] = text(bytes(raw))
    assert_denied(client.post(PATH, headers=h), 401, Code.BAD_SIGNATURE)
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
    assert client.post(PATH, headers=headers(chain, cost=40)).status_code == 200
    assert_denied(client.post(PATH, headers=headers(chain, cost=20)), 429, Code.BUDGET_EXHAUSTED)
    assert client.post(PATH, headers=headers(chain, cost=10)).status_code == 200
    assert settled(gate, chain) == [(50, 0), (50, 0)]


def test_missing_header_is_401(served: tuple[Any, str], client: httpx.Client) -> None:
    chain = make_chain()
    h = headers(chain)
    only_chain = {"Hopgate-Chain": h["Hopgate-Chain"]}
    body = assert_denied(client.post(PATH, headers=only_chain), 401, Code.MALFORMED)
    assert body["reason"] == "the Hopgate-Invocation header is missing"
    body = assert_denied(client.post(PATH), 401, Code.MALFORMED)
    assert body["reason"] == "the Hopgate-Chain header is missing"


def test_wrong_body_is_refused_before_the_gate(served: tuple[Any, str], client: httpx.Client) -> None:
    gate, chain = served[0], make_chain()
    h = headers(chain, cost=5, body=b'{"order": 42}')
    body = assert_denied(client.post(PATH, content=b'{"order": 43}', headers=h), 401, Code.BAD_SIGNATURE)
    assert "payload_digest" in body["reason"]
    # Nothing reserved and the nonce not consumed: the genuine request still goes through.
    assert settled(gate, chain) == [(0, 0), (0, 0)]
    assert client.post(PATH, content=b'{"order": 42}', headers=h).status_code == 200
    assert settled(gate, chain) == [(5, 0), (5, 0)]


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


# --------------------------------------------------------------------------- in process


def call(app: Any, method: str = "POST", path: str = PATH, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


@pytest.fixture
def gate() -> Any:
    return hopgate.Gate([ISSUER.public_key], skew=30, replay_window=300)


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


def test_repeated_header_is_malformed(gate: Any) -> None:
    chain = make_chain()
    h = headers(chain)
    raw = [(k, v) for k, v in h.items()] + [("Hopgate-Chain", h["Hopgate-Chain"])]
    body = assert_denied(call(make_app(gate), headers=raw), 401, Code.MALFORMED)
    assert body["reason"] == "more than one Hopgate-Chain header"


def test_denial_statuses(gate: Any) -> None:
    chain = make_chain()
    app = make_app(gate)
    assert_denied(call(app, headers=headers(chain, invocation=raw(chain, resource="files/x"))), 403,
                  Code.SCOPE_DENIED)
    assert_denied(call(app, headers=headers(chain, invocation=raw(chain, cost=51))), 403, Code.COST_EXCEEDS_GRANT)
    stale = int(time.time()) - 3600
    assert_denied(call(app, headers=headers(chain, timestamp=stale)), 401, Code.STALE_INVOCATION)
    stranger = hopgate.Gate([A.public_key])
    assert_denied(call(make_app(stranger), headers=headers(chain)), 401, Code.UNTRUSTED_ISSUER)
    gate.revoke(chain.revocation_ids[1])
    assert_denied(call(app, headers=headers(chain)), 403, Code.REVOKED)
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_every_denial_code_has_a_status() -> None:
    assert set(STATUS) == set(Code) - {Code.OK}
    assert {STATUS[c] for c in (Code.MALFORMED, Code.UNTRUSTED_ISSUER, Code.BAD_SIGNATURE, Code.BROKEN_LINK,
                                Code.STALE_INVOCATION)} == {401}
    assert STATUS[Code.REPLAY] == 409 and STATUS[Code.BUDGET_EXHAUSTED] == 429
    assert {STATUS[c] for c in Code if 5 <= c <= 14} == {403}


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
    assert settled(gate, chain) == [(6, 0), (6, 0)]  # a client error is still served work


def test_app_may_settle_the_reservation_itself(gate: Any) -> None:
    chain = make_chain()
    r = call(make_app(gate), headers=headers(chain, cost=6, extra={"x-release": "1"}))
    assert r.status_code == 200
    assert settled(gate, chain) == [(0, 0), (0, 0)]


def test_cost_above_the_reservation_is_charged_and_logged(gate: Any, caplog: pytest.LogCaptureFixture) -> None:
    chain = make_chain()
    with caplog.at_level(logging.WARNING, logger="hopgate.asgi"):
        r = call(make_app(gate), headers=headers(chain, cost=6, extra={"x-actual": "8"}))
    assert r.status_code == 200
    assert settled(gate, chain) == [(8, 0), (8, 0)]
    assert gate.ledger.account(chain.revocation_ids[1]).overrun == 2
    assert "above its reservation" in caplog.text


def test_cost_the_ledger_refuses_commits_the_reservation(gate: Any, caplog: pytest.LogCaptureFixture) -> None:
    chain = make_chain()
    with caplog.at_level(logging.ERROR, logger="hopgate.asgi"):
        r = call(make_app(gate), headers=headers(chain, cost=6, extra={"x-actual": "-1"}))
    assert r.status_code == 200
    assert settled(gate, chain) == [(6, 0), (6, 0)]
    assert "cannot commit cost -1" in caplog.text


def test_unbound_body(gate: Any) -> None:
    chain = make_chain()
    h = headers(chain, body=b"signed")
    assert_denied(call(make_app(gate), headers=h, content=b"other"), 401, Code.BAD_SIGNATURE)
    r = call(make_app(gate, bind_body=False), headers=h, content=b"other")
    assert r.status_code == 200 and r.json()["body"] == "other"


def test_chunked_body_is_read_whole_and_replayed(gate: Any) -> None:
    chain = make_chain()
    body = os.urandom(3000).hex().encode()

    async def chunks() -> Any:
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    r = call(make_app(gate), headers=headers(chain, body=body), content=chunks())
    assert r.status_code == 200 and r.json()["body"] == body.decode()


def test_receipt_header_with_an_audit_log(gate: Any, tmp_path: Any) -> None:
    key = os.urandom(32)
    chain = make_chain()
    with hopgate.AuditLog(tmp_path / "decisions.log", key=key) as log:
        audited = hopgate.Gate([ISSUER.public_key], audit=log)
        r = call(make_app(audited), headers=headers(chain))
        assert r.status_code == 200
        raw = r.headers["hopgate-receipt"]
        receipt = hopgate.Receipt.from_bytes(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        assert log.verify_receipt(receipt) and receipt.is_authentic(key)
        record = hopgate.GateRecord.from_bytes(log.read(receipt.index, receipt.index + 1)[0])
        assert record.code is Code.OK


def test_non_http_scopes_pass_through(gate: Any) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def never() -> Any:
        raise AssertionError("the middleware must not read")

    async def discard(message: Any) -> None:
        raise AssertionError("the middleware must not answer")

    middleware = GateMiddleware(app, gate=gate)
    for kind in ("lifespan", "websocket"):
        asyncio.run(middleware({"type": kind, "path": PATH, "headers": []}, never, discard))
    assert seen == ["lifespan", "websocket"]


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


def test_body_reason_is_json() -> None:
    # The error body is JSON with exactly three keys, whatever the code.
    app = make_app(hopgate.Gate([ISSUER.public_key]))
    r = call(app)
    assert set(json.loads(r.content)) == {"code", "name", "reason"}
    assert r.headers["content-type"] == "application/json"
