"""The application that tests/test_asgi_workers.py serves with `uvicorn --workers 4`.

Each worker process imports this module and builds its own gate on the durable ledger the
environment names, as a deployment would:

    HOPGATE_TEST_IMPL    "native" or "reference"
    HOPGATE_TEST_LEDGER  the ledger's URL (sqlite:///..., redis://...)
    HOPGATE_TEST_ISSUER  the trusted issuer's public key, hex

`GET /spend` is gated (ability "call", resource "api/spend", price 1); `GET /pid` is
exempt. Every response carries the worker's process id in `X-Worker-Pid`, refusals
included, so the test knows which worker decided. Each request blocks its worker's event
loop for a moment (with an allowed request's reservation held), so that the other workers
take the next connections.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from hopgate.asgi import GateMiddleware

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IMPL = importlib.import_module({"native": "hopgate", "reference": "hopgate.reference"}[os.environ["HOPGATE_TEST_IMPL"]])
LEDGER = IMPL.Ledger.open(os.environ["HOPGATE_TEST_LEDGER"])
GATE = IMPL.Gate([bytes.fromhex(os.environ["HOPGATE_TEST_ISSUER"])], ledger=LEDGER)
HOLD_SECONDS = 0.01
PID = str(os.getpid()).encode()


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    time.sleep(HOLD_SECONDS)  # blocks this worker on purpose (see the module's docstring)
    body = json.dumps({"pid": os.getpid(), "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def with_pid(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"x-worker-pid", PID)]
            await send(message)

        await app(scope, receive, send_with_pid)

    return wrapped


app = with_pid(GateMiddleware(endpoint, gate=GATE, require={("GET", "/spend"): ("call", "api/spend", 1)},
                              exempt_paths=["/pid"]))
