"""Processes that decide requests through a gate of their own on a durable ledger
(`Ledger.open(url)`, SPEC §5.8), driven by the test over a pipe.

`Workers` starts them with multiprocessing's "spawn" context (fresh interpreters: no state
is inherited from the test process, as with separate servers) and sends them commands;
`serve` is the command loop inside each. A worker builds its invocations with the native
builders (the bytes are the same for both implementations) and decides them with the
implementation it was started with ("native" or "reference").

Results come back as plain values: codes as ints, accounts as tuples, exceptions by class
name, so that nothing of an implementation crosses a process boundary.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any, Optional

import hopgate

IMPLS = {"native": "hopgate", "reference": "hopgate.reference"}
OK, REPLAY, BUDGET_EXHAUSTED = 0, 16, 17

# The longest a worker may take to answer one command: a stuck worker fails the test
# instead of hanging the suite.
COMMAND_TIMEOUT = 120.0


class WorkerError(AssertionError):
    """A worker raised while running a command (its traceback is the message)."""


def _wait_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


class _Worker:
    def __init__(self, impl: ModuleType, gate: Any, conn: Connection) -> None:
        self.impl = impl
        self.gate = gate
        self.ledger = gate.ledger
        self.conn = conn
        self.held: dict[int, Any] = {}  # id -> Reservation, for `check(..., hold=True)`
        self.next_id = 0
        self.keys: dict[bytes, Any] = {}

    def _key(self, seed: bytes) -> Any:
        if seed not in self.keys:
            self.keys[seed] = hopgate.SigningKey.from_seed(seed)
        return self.keys[seed]

    def _hold(self, reservation: Any) -> int:
        self.next_id += 1
        self.held[self.next_id] = reservation
        return self.next_id

    # -- commands --------------------------------------------------------------------

    def op_race(self, chain: bytes, seed: bytes, ability: str, resource: str, start_at: float) -> dict[str, Any]:
        """Cost-1 invocations as fast as possible, each allowed one committed at once, until
        the budget is exhausted (17). Every decision gets a fresh invocation."""
        built, sk = hopgate.Chain.from_bytes(chain), self._key(seed)
        codes: Counter[int] = Counter()
        _wait_until(start_at)
        for _ in range(100_000):
            now = int(time.time())
            invocation = built.invoke(sk, ability, resource, 1, timestamp=now)
            decision = self.gate.check(chain, invocation, now=now)
            code = int(decision.code)
            codes[code] += 1
            if code == OK:
                decision.reservation.commit(1)
            elif code == BUDGET_EXHAUSTED:
                break
            elif codes[code] > 100:
                break  # a wrong code: reported, and the test fails on it
        return {"ok": codes[OK], "codes": dict(codes)}

    def op_checks(self, items: Sequence[tuple[bytes, bytes, int]], start_at: float) -> list[int]:
        """Decides each (chain, invocation, now) in order, committing each allowed one."""
        _wait_until(start_at)
        out = []
        for chain, invocation, now in items:
            decision = self.gate.check(chain, invocation, now=now)
            if decision.code == OK:
                decision.reservation.commit()
            out.append(int(decision.code))
        return out

    def op_check(self, chain: bytes, invocation: bytes, now: int, hold: bool) -> tuple[int, Optional[int]]:
        """One decision; an allowed one is held (its id returned) or committed in full."""
        decision = self.gate.check(chain, invocation, now=now)
        if decision.code != OK:
            return int(decision.code), None
        if hold:
            return OK, self._hold(decision.reservation)
        decision.reservation.commit()
        return OK, None

    def op_settle(self, rid: int, kind: str, actual: Optional[int]) -> str:
        """Commits (kind "commit", `actual` or all) or releases a held reservation; the
        answer is "ok" or the name of the exception raised."""
        reservation = self.held.pop(rid)
        try:
            if kind == "commit":
                reservation.commit(actual)
            else:
                reservation.release()
        except hopgate.HopgateError as e:
            return type(e).__name__
        return "ok"

    def op_precheck(self, chain: bytes, invocation: bytes, now: int) -> int:
        return int(self.gate.precheck(chain, invocation, now=now))

    def op_load(self, chain: bytes, seed: bytes, ability: str, resource: str, costs: Sequence[int],
                hold_every: int, max_held: int, start_at: float) -> dict[str, Any]:
        """Decides invocations until the test sends "stop", reporting every step as it
        happens (so that a test that kills this process knows what it did): each allowed
        request's reservation is committed in full at once, except every `hold_every`-th,
        which is held; when more than `max_held` are held, the oldest is committed.
        A StoreError is reported, and the load goes on (the store may come back)."""
        built, sk = hopgate.Chain.from_bytes(chain), self._key(seed)
        send, held = self.conn.send, []
        allowed = 0
        _wait_until(start_at)
        i = 0
        while not self.conn.poll():
            i += 1
            cost = costs[i % len(costs)]
            now = int(time.time())
            invocation = built.invoke(sk, ability, resource, cost, timestamp=now)
            t0 = time.time()
            send(("try", i, invocation, cost, t0))
            try:
                decision = self.gate.check(chain, invocation, now=now)
            except self.impl.StoreError as e:
                send(("check-error", i, t0, time.time(), type(e).__name__))
                time.sleep(0.01)
                continue
            t1 = time.time()
            code = int(decision.code)
            send(("decided", i, code, t0, t1))
            if code != OK:
                continue
            allowed += 1
            if allowed % hold_every == 0:
                held.append((i, decision.reservation))
                send(("held", i, cost))
                if len(held) <= max_held:
                    continue
                i_settle, reservation = held.pop(0)
            else:
                i_settle, reservation = i, decision.reservation
            self._commit_reporting(i_settle, reservation)
        assert self.conn.recv() == ("stop",)
        for i_settle, reservation in held:
            self._commit_reporting(i_settle, reservation)
        return {"steps": i}

    def _commit_reporting(self, i: int, reservation: Any) -> None:
        t0 = time.time()
        self.conn.send(("settle-try", i, t0))
        try:
            reservation.commit()
            result = "ok"
        except (self.impl.StoreError, self.impl.LeaseExpiredError) as e:
            result = type(e).__name__
        self.conn.send(("settled", i, result, t0, time.time()))

    def op_release_all(self) -> int:
        n = len(self.held)
        for reservation in self.held.values():
            reservation.release()
        self.held.clear()
        return n

    def loop(self) -> None:
        while True:
            msg = self.conn.recv()
            op, args = msg[0], msg[1:]
            if op == "exit":
                self.op_release_all()
                self.ledger.close()
                self.conn.send(("result", None))
                return
            try:
                result = getattr(self, "op_" + op)(*args)
            except BaseException:
                self.conn.send(("raised", traceback.format_exc()))
            else:
                self.conn.send(("result", result))


def serve(conn: Connection, impl_name: str, url: str, trusted: list[bytes], lease: float, timeout: float,
          skew: int, replay_window: int) -> None:
    """The worker process: opens the ledger, builds its gate, then answers commands."""
    try:
        impl = importlib.import_module(IMPLS[impl_name])
        ledger = impl.Ledger.open(url, lease=lease, timeout=timeout)
        gate = impl.Gate(trusted, skew=skew, replay_window=replay_window, ledger=ledger)
    except BaseException:
        conn.send(("raised", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    _Worker(impl, gate, conn).loop()


class Workers:
    """Worker processes, one per entry of `impls`, each with its own gate on
    `Ledger.open(url)`; a context manager that ends them all."""

    def __init__(self, impls: Sequence[str], url: str, trusted: Sequence[bytes], *, lease: float = 30.0,
                 timeout: float = 2.0, skew: int = 30, replay_window: int = 300) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.pids: list[int] = []
        for name in impls:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(child, name, url, list(trusted), lease, timeout, skew,
                                                   replay_window), daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        try:
            for i in range(len(impls)):
                msg = self._recv(i, timeout=COMMAND_TIMEOUT)
                if msg[0] != "ready":
                    raise WorkerError(f"worker {i} ({impls[i]}) did not start:\n{msg[1]}")
                self.pids.append(msg[1])
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.procs)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _recv(self, i: int, timeout: float = COMMAND_TIMEOUT) -> Any:
        conn = self.conns[i]
        if not conn.poll(timeout):
            raise TimeoutError(f"worker {i} did not answer within {timeout} s")
        return conn.recv()

    def send(self, i: int, op: str, *args: Any) -> None:
        self.conns[i].send((op, *args))

    def result(self, i: int, timeout: float = COMMAND_TIMEOUT) -> Any:
        msg = self._recv(i, timeout)
        if msg[0] == "raised":
            raise WorkerError(f"worker {i}:\n{msg[1]}")
        assert msg[0] == "result", msg
        return msg[1]

    def call(self, i: int, op: str, *args: Any) -> Any:
        self.send(i, op, *args)
        return self.result(i)

    def all(self, op: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Sends `op` to every worker (one argument tuple each), then collects the answers."""
        for i, a in enumerate(args):
            self.send(i, op, *a)
        return [self.result(i) for i in range(len(args))]

    def kill9(self) -> None:
        """SIGKILL to every worker at once (no cleanup of any kind runs), then reaps them."""
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.join(10)
            assert proc.exitcode == -9, proc.exitcode

    def close(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.is_alive():
                try:
                    self.conns[i].send(("exit",))
                except OSError:
                    pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
        for conn in self.conns:
            conn.close()


def drain(conns: Sequence[Connection], sink: list[list[Any]], until: Callable[[], bool], timeout: float) -> None:
    """Reads the workers' streamed reports into `sink` (one list per worker) until
    `until()` is true or every pipe is closed, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    open_conns = [c for c in conns if not c.closed]
    while not until():
        if not open_conns:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the workers did not get there in time")
        for conn in multiprocessing.connection.wait(open_conns, timeout=min(left, 0.1)):
            assert isinstance(conn, Connection)
            try:
                sink[list(conns).index(conn)].append(conn.recv())
            except EOFError:  # the worker is gone and everything it sent has been read
                open_conns.remove(conn)
