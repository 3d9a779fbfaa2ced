"""hopgate.asgi.GateMiddleware served by `uvicorn --workers 4` (a real server process on
a free port, four worker processes), each worker with its own gate on one durable ledger
(SPEC §5.8) named by the environment: SQLite or Redis, native or reference.

A client sends more requests than the budget allows, each with a fresh invocation: exactly
the budget is answered 2xx, the rest 429, and every worker decided some. One invocation
sent to every worker is allowed once, and refused as REPLAY (409) by all four.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import pytest

import hopgate

from _ledger_worker import IMPLS
from _servers import free_port

TESTS = Path(__file__).resolve().parent
WORKERS = 4
BUDGET = 40
ISSUER = hopgate.SigningKey.from_seed(bytes([0x71]) * 32)
HOLDER = hopgate.SigningKey.from_seed(bytes([0x72]) * 32)
AGENT = hopgate.SigningKey.from_seed(bytes([0x73]) * 32)
NOT_BEFORE, NOT_AFTER = 1_700_000_000, 4_000_000_000


def text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def pid(self) -> int:
        return int(self.headers["x-worker-pid"])


def get(port: int, path: str, headers: Optional[dict[str, str]] = None, timeout: float = 30.0) -> Response:
    """One GET on a new connection (urllib never reuses one), so every request is a new
    accept that any worker may take."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


class Uvicorn:
    """`python -m uvicorn --workers 4 _asgi_app:app` on a free port of 127.0.0.1, in a
    process group of its own; `pids` are the worker processes seen answering."""

    def __init__(self, impl_name: str, url: str, tmp: Path) -> None:
        self.port = free_port()
        env = dict(os.environ, HOPGATE_TEST_IMPL=impl_name, HOPGATE_TEST_LEDGER=url,
                   HOPGATE_TEST_ISSUER=ISSUER.public_key.hex())
        self.log = tmp / "uvicorn.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "_asgi_app:app", "--app-dir", str(TESTS), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", str(WORKERS), "--lifespan", "off", "--log-level",
                 "warning", "--no-access-log"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pids: set[int] = set()
        try:
            self._wait_for_workers()
        except BaseException:
            self.stop()
            raise

    def _wait_for_workers(self, timeout: float = 90.0) -> None:
        """Until all four workers have answered (each imports hopgate and opens the ledger)."""
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(8) as pool:
            while len(self.pids) < WORKERS:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"uvicorn's {WORKERS} workers did not all answer (seen {self.pids}):\n"
                                         + self.log.read_text(errors="replace")[-3000:])
                try:
                    answers = list(pool.map(lambda _: get(self.port, "/pid", timeout=5), range(8)))
                except OSError:
                    time.sleep(0.2)
                    continue
                self.pids |= {a.pid for a in answers if a.status == 200}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Uvicorn, str, str]]:
    impl_name, store = request.param
    url = request.getfixturevalue("sqlite_url") if store == "sqlite" else request.getfixturevalue("redis_db").url
    server = Uvicorn(impl_name, url, tmp_path)
    try:
        yield server, impl_name, url
    finally:
        server.stop()


CASES = [(i, s) for i in IMPLS for s in ("sqlite", "redis")]
cases = pytest.mark.parametrize("served", CASES, ids=[f"{i}-{s}" for i, s in CASES], indirect=True)


def chain(tag: bytes, budget: int) -> Any:
    grant = hopgate.Chain.grant(ISSUER, HOLDER.public_key, [("api/*", "call")], budget, "usd", NOT_BEFORE, NOT_AFTER,
                                2, nonce=tag.ljust(16, b"\0"))
    return grant.delegate(HOLDER, AGENT.public_key, budget=budget)


def request_headers(c: Any, invocation: Optional[bytes] = None) -> dict[str, str]:
    if invocation is None:
        invocation = c.invoke(AGENT, "call", "api/spend", 1)
    return {"Hopgate-Chain": c.to_text(), "Hopgate-Invocation": text(invocation)}


def settled_account(impl_name: str, url: str, root: bytes) -> tuple[int, ...]:
    """The root's account once no reservation is held (the middleware commits after the
    response is sent, so the last commits may land a moment after the last answer)."""
    module = hopgate if impl_name == "native" else hopgate.reference
    ledger = module.Ledger.open(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            account = ledger.account(root, root=root)
            assert account is not None
            if account.reserved == 0 or time.monotonic() > deadline:
                return tuple(account)
            time.sleep(0.05)
    finally:
        ledger.close()


@cases
def test_budget_across_workers(served: tuple[Uvicorn, str, str]) -> None:
    """Requests with fresh invocations, 16 at a time, until well past the budget and until
    every worker has decided some: exactly BUDGET are allowed (2xx), every other is 429."""
    server, impl_name, url = served
    c = chain(b"asgi-budget", BUDGET)
    answers: list[Response] = []
    with ThreadPoolExecutor(16) as pool:
        for wave in itertools.count():
            answers += pool.map(lambda _: get(server.port, "/spend", request_headers(c)), range(32))
            deciders = {a.pid for a in answers}
            if len(answers) >= 2 * BUDGET and deciders == server.pids:
                break
            assert wave < 20, f"only workers {deciders} of {server.pids} decided"
    allowed = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert len(allowed) == BUDGET, sorted({a.status for a in answers})
    assert all(a.status == 429 and a.headers["hopgate-decision"] == "BUDGET_EXHAUSTED" for a in refused), \
        sorted({(a.status, a.headers.get("hopgate-decision")) for a in refused})
    assert all(json.loads(a.body)["pid"] == a.pid and a.headers["hopgate-decision"] == "OK" for a in allowed)
    assert len({a.pid for a in allowed}) >= 2, "the allowed requests were all served by one worker"
    root = c.revocation_ids[0]
    assert settled_account(impl_name, url, root) == (BUDGET, BUDGET, 0, 0)


@cases
def test_one_invocation_allowed_once_by_all_workers(served: tuple[Uvicorn, str, str]) -> None:
    """One invocation, sent 16 times at once and then again until every worker has
    answered it: one 2xx, and 409 REPLAY from every worker for every other copy."""
    server, impl_name, url = served
    c = chain(b"asgi-replay", BUDGET)
    headers = request_headers(c)
    answers: list[Response] = []
    with ThreadPoolExecutor(16) as pool:
        answers += pool.map(lambda _: get(server.port, "/spend", headers), range(16))
        for _ in range(400):
            if {a.pid for a in answers if a.status == 409} == server.pids:
                break
            answers.append(get(server.port, "/spend", headers))
    allowed = [a for a in answers if a.status == 200]
    assert len(allowed) == 1, sorted(a.status for a in answers)
    refused = [a for a in answers if a.status != 200]
    assert all(a.status == 409 and a.headers["hopgate-decision"] == "REPLAY" for a in refused)
    assert {a.pid for a in refused} == server.pids, "some worker never saw the replayed invocation"
    root = c.revocation_ids[0]
    assert settled_account(impl_name, url, root) == (BUDGET, 1, 0, 0)
