"""The durable ledger stores (SQLite, Redis) against the memory store, as ratios measured
in one run.

    python bench/stores.py [--quick] [--no-cluster] [--rounds N] [--procs N] [--json OUT.json]

Every request is a 3-link chain and a fresh invocation of cost 1 on a budget far larger
than the run. Each case is measured on every store in turn, the memory store
(`hopgate.Ledger()`) first:

- api: `gate.check_batch` of 1,024 requests, or one `gate.check` per request;
- processes: 1, or 4 (multiprocessing "spawn", each with its own gate on
  `Ledger.open(url)` of the same store; every round starts at a barrier, and its rate is
  the decisions of all processes over the wall time from the first start to the last
  end). With the memory store each process has a ledger of its own;
- root: warm (the store already holds the root and the gate's chain cache holds the
  chain: one chain, fresh invocations) or cold (every call is the first on a fresh root:
  a new grant, so the chain is verified and the store creates the root);
- decide: the calls alone (the reservations are held, then committed outside the timed
  section); decide + commit: the same calls, then `commit()` of every reservation, which
  on a durable store is one transaction or one script call per reservation.

Each rate is the best of the rounds. The stores run here, on this machine: SQLite in a
temporary directory (WAL, synchronous=FULL, as `Ledger.open` sets it) and a
`redis-server` started on a free port of 127.0.0.1 (`--save '' --appendonly no`), and a
3-node Redis Cluster of the same kind (unless `--no-cluster`). Round trips are counted in
an untimed pass of the single-process cases: the client's through a counting relay to
the single server, and the servers' `INFO commandstats`. `make bench` calls this.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Optional

import hopgate

# The servers' helpers are the tests' (tests/_servers.py): one way to start and read them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _servers import RedisCluster, RedisServer, Resp  # noqa: E402

OK = 0
BUDGET = 10**12  # far more than a run spends (Redis sums stay below 2^52)
ISSUER_SEED = bytes(range(32))
WARMUP = 16  # requests decided before a warm case's rounds: the root exists, the chain is cached
BARRIER_TIMEOUT = 600.0


# -- Redis: servers of our own (tests/_servers.py), and their command counts ----------


def command_calls(ports: Sequence[int]) -> dict[str, int]:
    """`INFO commandstats` of every server, summed: command name -> calls (INFO itself,
    which only this bench sends, left out)."""
    out: dict[str, int] = {}
    for port in ports:
        with Resp(port) as r:
            info = r("INFO", "commandstats")
        assert isinstance(info, bytes)
        text = info.decode()
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, fields = line[len("cmdstat_") :].split(":", 1)
                if name != "info":
                    calls = dict(f.split("=", 1) for f in fields.split(","))["calls"]
                    out[name] = out.get(name, 0) + int(calls)
    return out


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


# -- the workers -----------------------------------------------------------------------

# A round: the calls decided between two barriers, each call a list of (chain, invocation).
Call = list[tuple[bytes, bytes]]


class Workload:
    def __init__(self, warmup: list[Call], rounds: list[list[Call]]) -> None:
        self.warmup = warmup
        self.rounds = rounds


def build_workloads(now: int, batch: int, per_round: int, rounds: int) -> dict[tuple[str, str], Workload]:
    """This process's requests for the four cases (api x root). A store is emptied before
    each run, so the same requests serve every store."""
    issuer = hopgate.SigningKey.from_seed(ISSUER_SEED)
    agents = [hopgate.SigningKey.generate() for _ in range(3)]

    def fresh_chain() -> hopgate.Chain:
        c = hopgate.Chain.grant(issuer, agents[0].public_key, [("pay/*", "refund")], BUDGET, "usd",
                                now - 10, now + 3600, 3)
        for j in (1, 2):
            c = c.delegate(agents[j - 1], agents[j].public_key)
        return c

    def requests(c: hopgate.Chain, n: int) -> Call:
        data = bytes(c)
        return [(data, c.invoke(agents[2], "refund", "pay/x", 1, timestamp=now)) for _ in range(n)]

    warm = fresh_chain()
    return {
        ("batch", "warm"): Workload([requests(warm, WARMUP)], [[requests(warm, batch)] for _ in range(rounds)]),
        ("batch", "cold"): Workload([], [[requests(fresh_chain(), batch)] for _ in range(rounds)]),
        ("check", "warm"): Workload([[r] for r in requests(warm, WARMUP)],
                                    [[[r] for r in requests(warm, per_round)] for _ in range(rounds)]),
        ("check", "cold"): Workload([], [[requests(fresh_chain(), 1) for _ in range(per_round)] for _ in range(rounds)]),
    }


def decide(gate: hopgate.Gate, api: str, calls: list[Call], now: int) -> tuple[list[int], list[Any]]:
    """The decisions of `calls`: their codes and their reservations (held, not settled)."""
    codes: list[int] = []
    held: list[Any] = []
    if api == "batch":
        for call in calls:
            c, r = gate.check_batch([ch for ch, _ in call], [inv for _, inv in call], now=now)
            codes.extend(c.tolist())
            held.extend(r)
    else:
        decisions = [gate.check(ch, inv, now=now) for call in calls for ch, inv in call]
        codes = [int(d.code) for d in decisions]
        held = [d.reservation for d in decisions]
    return codes, held


def commit(held: list[Any]) -> None:
    for r in held:
        r.commit()


def resp_commands(buf: bytearray) -> list[str]:
    """Takes the complete commands (RESP arrays of bulk strings) off the front of `buf`;
    returns their names."""
    names: list[str] = []
    while True:
        end = buf.find(b"\r\n")
        if end < 0:
            return names
        pos, name = end + 2, ""
        for i in range(int(buf[1:end])):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return names
            start = end + 2
            size = int(buf[pos + 1 : end])
            if len(buf) < start + size + 2:
                return names
            if i == 0:
                name = buf[start : start + size].decode().lower()
            pos = start + size + 2
        names.append(name)
        del buf[:pos]


class CountingRelay:
    """A TCP relay to a Redis server of 127.0.0.1 that counts what its clients send: the
    commands (by name, as `sent.<name>`) and the round trips (`round_trips`: each time a
    client sends after the server last answered it; a pipeline is one)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def close(self) -> None:
        self.listener.close()

    def _add(self, key: str) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.upstream))
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answered = threading.Event()
        answered.set()

        def back() -> None:
            try:
                while data := server.recv(65536):
                    answered.set()  # before the client can read the answer and send again
                    client.sendall(data)
            except OSError:
                pass
            finally:
                client.close()

        threading.Thread(target=back, daemon=True).start()
        buf = bytearray()
        try:
            while data := client.recv(65536):
                if answered.is_set():
                    answered.clear()
                    self._add("round_trips")
                buf += data
                for name in resp_commands(buf):
                    self._add("sent." + name)
                server.sendall(data)
        except OSError:
            pass
        finally:
            server.close()


class Counting:
    """What the counting pass reads around each phase: the servers' `INFO commandstats`
    (`server.<name>`: what they ran, the commands inside scripts included) and, through
    a relay to a single server, what the client sent and its round trips."""

    def __init__(self, ports: Sequence[int], relay_to: Optional[int]) -> None:
        self.ports = list(ports)
        self.relay = CountingRelay(relay_to) if relay_to is not None else None

    def snapshot(self) -> dict[str, int]:
        out = {f"server.{k}": v for k, v in command_calls(self.ports).items()}
        return {**out, **(self.relay.snapshot() if self.relay else {})}


def run_case(workloads: dict[tuple[str, str], Workload], barrier: Optional[Barrier], now: int, url: Optional[str],
             api: str, root: str, counting: Optional[Counting] = None) -> dict[str, Any]:
    """One case on one store in this process: per round, the monotonic times around the
    decisions (t0, t1) and around their commits (t2, t3); with `counting`, the counts'
    deltas over the rounds' decisions and over their commits (outside the timed sections)."""
    if counting is not None and counting.relay is not None:
        url = f"redis://127.0.0.1:{counting.relay.port}/0"
    ledger = hopgate.Ledger() if url is None else hopgate.Ledger.open(url, timeout=30.0)
    gate = hopgate.Gate([hopgate.SigningKey.from_seed(ISSUER_SEED).public_key], ledger=ledger)
    work = workloads[(api, root)]

    def sync() -> None:
        if barrier is not None:
            barrier.wait(BARRIER_TIMEOUT)

    def check(codes: list[int]) -> None:
        wrong = [c for c in codes if c != OK]
        if wrong:
            raise AssertionError(f"{len(wrong)} of {len(codes)} requests refused on {ledger.store}: "
                                 f"codes {sorted(set(wrong))}")

    def snapshot() -> dict[str, int]:
        return counting.snapshot() if counting is not None else {}

    def add(total: dict[str, int], after: dict[str, int], before: dict[str, int]) -> None:
        for k, v in delta(after, before).items():
            total[k] = total.get(k, 0) + v

    try:
        if work.warmup:
            codes, held = decide(gate, api, work.warmup, now)
            check(codes)
            commit(held)
        times: list[tuple[float, float, float, float]] = []
        decide_counts: dict[str, int] = {}
        commit_counts: dict[str, int] = {}
        for calls in work.rounds:
            sync()
            s0 = snapshot()
            t0 = time.monotonic()
            codes, held = decide(gate, api, calls, now)
            t1 = time.monotonic()
            s1 = snapshot()
            check(codes)
            sync()
            t2 = time.monotonic()
            commit(held)
            t3 = time.monotonic()
            if counting is not None:
                s2 = snapshot()
                add(decide_counts, s1, s0)
                add(commit_counts, s2, s1)
            times.append((t0, t1, t2, t3))
        return {"times": times, "decide_counts": decide_counts, "commit_counts": commit_counts,
                "calls": sum(len(c) for c in work.rounds), "decisions": sum(len(x) for c in work.rounds for x in c)}
    finally:
        ledger.close()
        if counting is not None and counting.relay is not None:
            counting.relay.close()


def worker(conn: Connection, barrier: Barrier, now: int, batch: int, per_round: int, rounds: int) -> None:
    """A worker process: builds its workloads and warms up (one case on the memory
    store, untimed), then runs the cases the parent sends."""
    try:
        workloads = build_workloads(now, batch, per_round, rounds)
        run_case(workloads, None, now, None, "batch", "warm")
    except BaseException:
        conn.send(("raised", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        msg = conn.recv()
        if msg[0] == "exit":
            return
        try:
            url, api, root, parties, count = msg[1:]
            counting = Counting(*count) if count is not None else None
            result = run_case(workloads, barrier if parties > 1 else None, now, url, api, root, counting)
        except BaseException:
            if parties > 1:
                barrier.abort()  # the other workers stop waiting for this one
            conn.send(("raised", traceback.format_exc()))
        else:
            conn.send(("result", result))


class Workers:
    def __init__(self, n: int, now: int, batch: int, per_round: int, rounds: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(n)
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker, args=(child, barrier, now, batch, per_round, rounds), daemon=True)
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)
        for i in range(n):
            self.answer(i, "ready")

    def answer(self, i: int, want: str) -> Any:
        if not self.conns[i].poll(BARRIER_TIMEOUT):
            raise TimeoutError(f"worker {i} did not answer")
        kind, value = self.conns[i].recv()
        if kind != want:
            raise RuntimeError(f"worker {i}:\n{value}")
        return value

    def run(self, parties: int, url: Optional[str], api: str, root: str,
            count: Optional[tuple[list[int], Optional[int]]] = None) -> list[Any]:
        """Runs a case on `parties` workers; `count` (1 worker): the Redis ports to read
        `INFO commandstats` of, and the port to relay to and count (a single server)."""
        for i in range(parties):
            self.conns[i].send(("run", url, api, root, parties, count))
        return [self.answer(i, "result") for i in range(parties)]

    def close(self) -> None:
        for c, p in zip(self.conns, self.procs):
            if p.is_alive():
                try:
                    c.send(("exit",))
                except OSError:
                    pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(10)


# -- the run ---------------------------------------------------------------------------


def cpu() -> str:
    """The CPU as /proc/cpuinfo names it, with its logical core count."""
    model, count = "", 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                count += key.strip() == "processor"
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {count or os.cpu_count()} logical cores"


def rates(results: list[Any]) -> dict[str, Any]:
    """Rates from the workers' round times: a round's wall time runs from the first
    worker's start to the last worker's end; the best round counts."""
    n_rounds = len(results[0]["times"])
    per_round = sum(r["decisions"] for r in results) // n_rounds
    decide_wall, full_wall = [], []
    for i in range(n_rounds):
        t = [r["times"][i] for r in results]
        d = max(x[1] for x in t) - min(x[0] for x in t)
        c = max(x[3] for x in t) - min(x[2] for x in t)
        decide_wall.append(d)
        full_wall.append(d + c)
    return {"decisions_per_round": per_round, "decide_per_s": per_round / min(decide_wall),
            "decide_commit_per_s": per_round / min(full_wall)}


def trips(store: str, api: str, root: str, result: dict[str, Any]) -> dict[str, Any]:
    """Per call and per decision, from a counting pass's deltas."""
    d, c = result["decide_counts"], result["commit_counts"]
    calls, n = result["calls"], result["decisions"]

    def total(counts: dict[str, int], prefix: str) -> int:
        return sum(v for k, v in counts.items() if k.startswith(prefix))

    relayed = "round_trips" in d or "round_trips" in c
    return {
        "store": store, "api": api, "root": root, "calls": calls, "decisions": n,
        "round_trips_per_call": d.get("round_trips", 0) / calls if relayed else None,
        "commands_sent_per_call": total(d, "sent.") / calls if relayed else None,
        "evalsha_per_call": d.get("server.evalsha", 0) / calls,
        "server_commands_per_decision": total(d, "server.") / n,
        "commit_round_trips_per_reservation": c.get("round_trips", 0) / n if relayed else None,
        "commit_evalsha_per_reservation": c.get("server.evalsha", 0) / n,
        "decide_counts": d, "commit_counts": c,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round, 2 processes (a smoke run)")
    ap.add_argument("--rounds", type=int, help="timed rounds per case (default 3; --quick: 1)")
    ap.add_argument("--procs", type=int, help="processes of the multi-process cases (default 4; --quick: 2)")
    ap.add_argument("--no-cluster", action="store_true", help="leave out the 3-node Redis Cluster")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    batch = 64 if args.quick else 1024
    per_round = 16 if args.quick else 256  # single checks per round
    rounds = args.rounds or (1 if args.quick else 3)
    procs = args.procs or (2 if args.quick else 4)
    now = int(time.time())
    api_name = {"batch": f"check_batch({batch})", "check": "check"}

    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="hopgate-bench-stores-")
    redis: Optional[RedisServer] = None
    cluster: Optional[RedisCluster] = None
    workers: Optional[Workers] = None
    rows: list[dict[str, Any]] = []
    counted: list[dict[str, Any]] = []
    try:
        redis = RedisServer(Path(tmp) / "redis", persistent=False)
        redis.start()
        stores: list[str] = ["memory", "sqlite", "redis"]
        if not args.no_cluster:
            cluster = RedisCluster(Path(tmp) / "cluster")
            cluster.start()
            stores.append("redis-cluster")
        print(f"# CPU: {cpu()}; Python {platform.python_version()}, hopgate {hopgate.BACKEND}, "
              f"redis-server {redis.version()}")
        print(f"# {len(stores)} stores x {{check_batch({batch}), check}} x {{1, {procs} processes}} x "
              f"{{warm, cold root}}: decisions per second, the best of {rounds} rounds "
              f"(a check round: {per_round} calls); with the memory store, a ledger per process", flush=True)
        workers = Workers(procs, now, batch, per_round, rounds)
        run_no = 0

        def fresh(store: str) -> Optional[str]:
            """The store's URL, emptied: the workers' requests are the same in every run."""
            nonlocal run_no
            run_no += 1
            if store == "sqlite":
                for name in os.listdir(tmp):
                    if name.startswith("ledger"):
                        os.remove(os.path.join(tmp, name))
                url = f"sqlite:///{tmp}/ledger{run_no}.db"
                # Created here, before the workers open it: processes that create one
                # file at the same moment can meet "database is locked" (switching a new
                # file to WAL does not wait on SQLite's busy timeout).
                hopgate.Ledger.open(url, timeout=30.0).close()
                return url
            if store == "redis":
                assert redis is not None
                redis.flushall()
                return redis.url
            if store == "redis-cluster":
                assert cluster is not None
                cluster.flushall()
                return cluster.url
            return None

        for api in ("batch", "check"):
            for root in ("warm", "cold"):
                for parties in sorted({1, procs}):
                    for store in stores:
                        result = rates(workers.run(parties, fresh(store), api, root))
                        rows.append({"store": store, "api": api_name[api], "procs": parties, "root": root, **result})
        # Round trips: the single-process cases again, untimed, through a counting relay
        # (a single server) and with the servers' own counts.
        for store in stores[2:]:
            for api in ("batch", "check"):
                for root in ("warm", "cold"):
                    url = fresh(store)
                    if store == "redis":
                        assert redis is not None
                        count: tuple[list[int], Optional[int]] = ([redis.port], redis.port)
                    else:
                        assert cluster is not None
                        count = ([n.port for n in cluster.nodes], None)
                    counted.append(trips(store, api_name[api], root, workers.run(1, url, api, root, count)[0]))
    finally:
        if workers is not None:
            workers.close()
        for server in (redis, cluster):
            if server is not None:
                server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    base = {(r["api"], r["procs"], r["root"]): r for r in rows if r["store"] == "memory"}
    for r in rows:
        m = base[(r["api"], r["procs"], r["root"])]
        r["decide_vs_memory"] = r["decide_per_s"] / m["decide_per_s"]
        r["decide_commit_vs_memory"] = r["decide_commit_per_s"] / m["decide_commit_per_s"]

    print(f"\n{'store':<14} {'api':<17} {'procs':>5} {'root':<5} {'decide/s':>10} {'vs memory':>9}"
          f" {'decide+commit/s':>16} {'vs memory':>9}")
    for r in rows:
        print(f"{r['store']:<14} {r['api']:<17} {r['procs']:>5} {r['root']:<5} {r['decide_per_s']:>10,.0f} "
              f"{r['decide_vs_memory']:>9.0%} {r['decide_commit_per_s']:>16,.0f} {r['decide_commit_vs_memory']:>9.0%}")

    def num(v: Optional[float], fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    print("\n# Redis, 1 process, untimed: round trips and commands the client sent (counted by a relay;"
          " a single server only),\n# EVALSHA calls and commands the server ran, scripts' included (INFO commandstats)")
    print(f"{'store':<14} {'api':<17} {'root':<5} {'trips/call':>10} {'sent/call':>9} {'EVALSHA/call':>12}"
          f" {'server cmds/decision':>20} {'commit: trips/resv':>18} {'EVALSHA/resv':>12}")
    for t in counted:
        print(f"{t['store']:<14} {t['api']:<17} {t['root']:<5} {num(t['round_trips_per_call'], '.2f'):>10} "
              f"{num(t['commands_sent_per_call'], '.2f'):>9} {t['evalsha_per_call']:>12.2f} "
              f"{t['server_commands_per_decision']:>20.2f} {num(t['commit_round_trips_per_reservation'], '.2f'):>18} "
              f"{t['commit_evalsha_per_reservation']:>12.2f}")
    print("# SQLite: one BEGIN IMMEDIATE transaction per check_batch (one per root) and per check, by"
          " construction (not measured); each commit() is one more")

    def find(store: str, api: str, root: str = "warm") -> dict[str, Any]:
        return next(r for r in rows if r["store"] == store and r["api"] == api_name[api] and r["procs"] == 1
                    and r["root"] == root)

    targets: list[dict[str, Any]] = []
    for store, want in (("sqlite", 0.50), ("redis", 0.25)):
        r = find(store, "batch")
        targets.append({"target": f"{store} {api_name['batch']}, warm root, 1 process: decisions/s >= {want:.0%}"
                                  " of memory's",
                        "value": f"{r['decide_vs_memory']:.0%} (decide + commit: {r['decide_commit_vs_memory']:.0%})",
                        "pass": r["decide_vs_memory"] >= want})
    for t in counted:
        if t["store"] == "redis" and t["api"] == "check":
            targets.append({"target": f"redis check, {t['root']} root: <= 2 round trips per check",
                            "value": f"{t['round_trips_per_call']:.2f} (commit: "
                                     f"{t['commit_round_trips_per_reservation']:.2f} more)",
                            "pass": t["round_trips_per_call"] <= 2})
    print("\n# targets")
    for g in targets:
        print(f"{'PASS' if g['pass'] else 'FAIL'}  {g['target']}: {g['value']}")
    print(f"# {time.monotonic() - started:.0f} s in all")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu(), "python": platform.python_version(), "batch": batch, "rounds": rounds,
                       "procs": procs, "rows": rows, "round_trips": counted, "targets": targets}, f, indent=1)


if __name__ == "__main__":
    main()
