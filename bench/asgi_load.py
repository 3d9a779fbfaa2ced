"""A short load run of hopgate.asgi.GateMiddleware: uvicorn + Starlette, with and without the gate.

    python bench/asgi_load.py [--requests 2000] [--concurrency 16]

Each configuration runs uvicorn in its own process (one worker) with the same Starlette
app: no gate, the gate checking in a worker thread (``threaded=True``), and the gate
checking inline (the default). The client is one httpx.AsyncClient in this process with
``concurrency`` tasks sharing a pool of as many connections. Every request carries the
same (cached) 2-link chain and a fresh invocation (new nonce, cost 1, body bound) for
the one route of the route map (price 1); with its body declared, each request is
prechecked before its body is read and then checked, so the invocation's signature is
verified twice. Invocations are signed before the clock starts, so the client's signing
is not counted. It then times the middleware alone in process (a trivial ASGI app, no
socket, no client), which shows its own cost without the HTTP stack. Client and server
share the machine's cores, so requests/s are of the pair, not of the server alone; the
ratio between configurations is the number to read.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

import hopgate

ISSUER = hopgate.SigningKey.from_seed(b"\x01" * 32)
AGENT = hopgate.SigningKey.from_seed(b"\x02" * 32)
WORKER = hopgate.SigningKey.from_seed(b"\x03" * 32)
PATH = "/api/orders"
BODY = b'{"order": 42, "amount": 1}'
MODES = ("none", "threaded", "inline")
ROUTES = {("POST", PATH): ("call", "api/orders", 1)}


def app(mode: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from hopgate.asgi import GateMiddleware

    async def orders(request: Request) -> Response:
        body = await request.body()
        return JSONResponse({"ok": True, "bytes": len(body)})

    application = Starlette(routes=[Route(PATH, orders, methods=["POST"])])
    if mode != "none":
        gate = hopgate.Gate([ISSUER.public_key], skew=60, replay_window=600)
        application.add_middleware(GateMiddleware, gate=gate, require=ROUTES, audience="api/",
                                   threaded=mode == "threaded")
    return application


def serve(mode: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app(mode), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def requests(n: int) -> list[dict[str, str]]:
    now = int(time.time())
    grant = hopgate.Chain.grant(ISSUER, AGENT.public_key, [("api/*", "call")], 10**12, "usd", now - 600,
                                now + 3600, 2)
    chain = grant.delegate(AGENT, WORKER.public_key, budget=10**12)
    chain_text = chain.to_text()
    return [{"Hopgate-Chain": chain_text,
             "Hopgate-Invocation": text(chain.invoke(WORKER, "call", "api/orders", 1, payload=BODY))}
            for _ in range(n)]


async def load(url: str, headers: list[dict[str, str]], concurrency: int) -> float:
    """Sends every request (`concurrency` at a time); returns requests per second."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker(mine: list[dict[str, str]]) -> None:
            for h in mine:
                r = await client.post(PATH, content=BODY, headers=h)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code} {r.text}")

        warm, timed = headers[: len(headers) // 10], headers[len(headers) // 10 :]
        await asyncio.gather(*(worker(warm[i::concurrency]) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(timed[i::concurrency]) for i in range(concurrency)))
        return len(timed) / (time.perf_counter() - started)


def run(mode: str, n: int, concurrency: int) -> float:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", mode, "--port", str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"uvicorn ({mode}) did not start") from None
                time.sleep(0.05)
        # n timed requests plus a tenth more to warm up (and to fill the chain cache).
        return asyncio.run(load(f"http://127.0.0.1:{port}", requests(n + n // 9), concurrency))
    finally:
        server.terminate()
        server.wait(10)


async def in_process(n: int) -> dict[str, float]:
    """µs per request of the middleware alone around a trivial ASGI app (no socket, no client)."""
    from hopgate.asgi import GateMiddleware

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Any) -> None:
        pass

    gate = hopgate.Gate([ISSUER.public_key], skew=60, replay_window=600)
    apps: dict[str, Callable[..., Awaitable[None]]] = {
        "none": inner,
        "threaded": GateMiddleware(inner, gate=gate, require=ROUTES, threaded=True),
        "inline": GateMiddleware(inner, gate=gate, require=ROUTES, threaded=False),
    }
    out = {}
    for mode, application in apps.items():
        length = [(b"content-length", str(len(BODY)).encode())]
        scopes = [{"type": "http", "method": "POST", "path": PATH,
                   "headers": [(k.lower().encode(), v.encode()) for k, v in h.items()] + length}
                  for h in requests(n + 100)]
        for scope in scopes[:100]:  # warm up, fill the chain cache
            await application(scope, receive, send)
        started = time.perf_counter()
        for scope in scopes[100:]:
            await application(scope, receive, send)
        out[mode] = (time.perf_counter() - started) / n * 1e6
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    print(f"# {os.cpu_count()} cores shared by client and server; hopgate {hopgate.BACKEND}, "
          f"Python {sys.version.split()[0]}; {args.requests} requests, concurrency {args.concurrency}")
    micro = asyncio.run(in_process(args.requests))
    rates = {mode: run(mode, args.requests, args.concurrency) for mode in MODES}
    for mode, rate in rates.items():
        label = {"none": "no gate", "threaded": "gate, check in a thread", "inline": "gate, check inline"}[mode]
        print(f"{label:<26} {rate:8,.0f} requests/s   {rate / rates['none']:.2f}x of no gate   "
              f"(in process, middleware alone: {micro[mode]:6.1f} µs/request)")


if __name__ == "__main__":
    main()
