"""hopgate.asgi.GateMiddleware when a durable ledger store fails (SPEC §5.8): a
``StoreError`` from ``precheck`` or ``check`` is 503 ``STORE_UNAVAILABLE`` and a log line,
never an allow and never a 500 with a traceback, and the application is not called; a
settlement that fails in the store (``StoreError``, ``LeaseExpiredError``) after the
application ran is logged and leaves the response as the application made it.

Unit level: a fake gate raises the store's errors; the ASGI calls are made by hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest

import hopgate
from hopgate import Code, Decision, LeaseExpiredError, StoreError
from hopgate.asgi import GateMiddleware, GateState

PATH = "/api/orders"
ROUTES = {("POST", PATH): ("call", "api/orders", 2)}
ISSUER, HOLDER = hopgate.SigningKey.generate(), hopgate.SigningKey.generate()


def gated_headers(body: bytes = b"") -> list[tuple[bytes, bytes]]:
    """Headers that decode (the fake gate decides nothing on them)."""
    now = int(time.time())
    chain = hopgate.Chain.grant(ISSUER, HOLDER.public_key, [("api/*", "call")], 100, "usd", now - 60, now + 3600, 1,
                                nonce=os.urandom(16))
    invocation = chain.invoke(HOLDER, "call", "api/orders", 5, payload=body)
    out = [(b"hopgate-chain", chain.to_text().encode()), (b"hopgate-invocation", hopgate.to_text(invocation).encode())]
    if body:
        out.append((b"content-length", str(len(body)).encode()))
    return out


@dataclass
class FakeReservation:
    """A reservation whose settlement fails as a durable store's can."""

    amount: int = 5
    fail: Optional[BaseException] = None
    calls: list[tuple[str, Optional[int]]] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return False

    def commit(self, actual: Optional[int] = None) -> None:
        self.calls.append(("commit", actual))
        if self.fail is not None:
            raise self.fail

    def release(self) -> None:
        self.calls.append(("release", None))
        if self.fail is not None:
            raise self.fail

    def __enter__(self) -> FakeReservation:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FakeGate:
    """``precheck`` and ``check`` answer ``precheck_answer`` / ``check_answer``, or raise it."""

    def __init__(self, *, precheck: object = Code.OK, check: object = None, audited: bool = False) -> None:
        self.precheck_answer = precheck
        self.check_answer = check
        self.audit = object() if audited else None
        self.calls: list[str] = []

    def precheck(self, chain: Any, invocation: bytes, now: Optional[int] = None, *, require: Any = None) -> Code:
        self.calls.append("precheck")
        if isinstance(self.precheck_answer, BaseException):
            raise self.precheck_answer
        assert isinstance(self.precheck_answer, Code)
        return self.precheck_answer

    def check(self, chain: Any, invocation: bytes, now: Optional[int] = None, *, payload: Optional[bytes] = None,
              require: Any = None) -> Decision:
        self.calls.append("check")
        if isinstance(self.check_answer, BaseException):
            raise self.check_answer
        assert isinstance(self.check_answer, Decision)
        return self.check_answer


class App:
    """Records its calls; answers ``status`` (after setting ``cost``), or raises ``boom``."""

    def __init__(self, status: int = 200, boom: Optional[BaseException] = None, cost: Optional[int] = None) -> None:
        self.status = status
        self.boom = boom
        self.cost = cost
        self.called = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called += 1
        state: GateState = scope["state"]["hopgate"]
        if self.cost is not None:
            state.cost = self.cost
        if self.boom is not None:
            raise self.boom
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})


@dataclass
class Exchange:
    sent: list[dict[str, Any]]
    received: int

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def exchange(middleware: GateMiddleware, body: bytes = b"") -> Exchange:
    scope = {"type": "http", "method": "POST", "path": PATH, "headers": gated_headers(body)}
    sent: list[dict[str, Any]] = []
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(middleware(scope, receive, send))
    return Exchange(sent, received)


def assert_unavailable(result: Exchange, app: App, caplog: pytest.LogCaptureFixture) -> None:
    assert result.status == 503
    assert result.headers[b"hopgate-decision"] == b"STORE_UNAVAILABLE"
    assert json.loads(result.body) == {
        "code": None,
        "name": "STORE_UNAVAILABLE",
        "reason": "the server's ledger store is unavailable; nothing was allowed",
    }
    assert app.called == 0
    lines = [r for r in caplog.records if r.name == "hopgate.asgi"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert "ledger store failed" in lines[0].getMessage() and "redis down" in lines[0].getMessage()
    assert lines[0].exc_info is None  # a line, not a traceback


@pytest.mark.parametrize("threaded", [False, True])
def test_check_store_error_without_body_is_503(threaded: bool, caplog: pytest.LogCaptureFixture) -> None:
    gate, app = FakeGate(check=StoreError("redis down")), App()
    result = exchange(GateMiddleware(app, gate, require=ROUTES, threaded=threaded))
    assert_unavailable(result, app, caplog)
    assert gate.calls == ["check"]


@pytest.mark.parametrize("threaded", [False, True])
def test_precheck_store_error_is_503_and_the_body_is_never_read(threaded: bool, caplog: pytest.LogCaptureFixture) -> None:
    gate, app = FakeGate(precheck=StoreError("redis down"), check=StoreError("never reached")), App()
    result = exchange(GateMiddleware(app, gate, require=ROUTES, threaded=threaded), body=b'{"q": 1}')
    assert_unavailable(result, app, caplog)
    assert gate.calls == ["precheck"] and result.received == 0


def test_check_store_error_after_the_body_is_503(caplog: pytest.LogCaptureFixture) -> None:
    gate, app = FakeGate(check=StoreError("redis down")), App()
    result = exchange(GateMiddleware(app, gate, require=ROUTES), body=b'{"q": 1}')
    assert_unavailable(result, app, caplog)
    assert gate.calls == ["precheck", "check"] and result.received == 1


def test_audited_second_check_store_error_is_503(caplog: pytest.LogCaptureFixture) -> None:
    """precheck refused; the audited check that records the refusal fails in the store."""
    gate, app = FakeGate(precheck=Code.REPLAY, check=StoreError("redis down"), audited=True), App()
    result = exchange(GateMiddleware(app, gate, require=ROUTES), body=b'{"q": 1}')
    assert_unavailable(result, app, caplog)
    assert gate.calls == ["precheck", "check"] and result.received == 0


def test_other_errors_still_propagate() -> None:
    """Only the store's failure is an answer; a bug is not turned into a 503."""
    gate, app = FakeGate(check=RuntimeError("a bug")), App()
    with pytest.raises(RuntimeError, match="a bug"):
        exchange(GateMiddleware(app, gate, require=ROUTES))
    assert app.called == 0


@pytest.mark.parametrize(
    "fail, logged",
    [(StoreError("redis down"), "failed to settle"), (LeaseExpiredError("forfeited at its lease"), "lease had expired")],
)
def test_commit_failure_is_logged_and_the_response_stands(
    fail: BaseException, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    reservation = FakeReservation(fail=fail)
    gate, app = FakeGate(check=Decision(Code.OK, reservation)), App(status=200)
    result = exchange(GateMiddleware(app, gate, require=ROUTES))
    assert (result.status, result.body, result.headers[b"hopgate-decision"]) == (200, b"done", b"OK")
    assert app.called == 1 and reservation.calls == [("commit", 2)]  # the route's price
    lines = [r for r in caplog.records if r.name == "hopgate.asgi"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR and logged in lines[0].getMessage()


def test_release_failure_is_logged_and_the_5xx_stands(caplog: pytest.LogCaptureFixture) -> None:
    reservation = FakeReservation(fail=StoreError("redis down"))
    gate, app = FakeGate(check=Decision(Code.OK, reservation)), App(status=502)
    result = exchange(GateMiddleware(app, gate, require=ROUTES))
    assert (result.status, result.body) == (502, b"done")
    assert reservation.calls == [("release", None)]
    assert [r.levelno for r in caplog.records if r.name == "hopgate.asgi"] == [logging.ERROR]


@pytest.mark.parametrize("cost", [None, 3])
def test_settlement_failure_after_the_app_raised_keeps_the_apps_error(
    cost: Optional[int], caplog: pytest.LogCaptureFixture
) -> None:
    """The application raised before responding: its error, not the store's, propagates."""
    reservation = FakeReservation(fail=StoreError("redis down"))
    gate, app = FakeGate(check=Decision(Code.OK, reservation)), App(boom=RuntimeError("the tool failed"), cost=cost)
    with pytest.raises(RuntimeError, match="the tool failed"):
        exchange(GateMiddleware(app, gate, require=ROUTES))
    assert reservation.calls == ([("release", None)] if cost is None else [("commit", 3)])
    assert [r.levelno for r in caplog.records if r.name == "hopgate.asgi"] == [logging.ERROR]
