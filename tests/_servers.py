"""Real servers for the tests of the durable ledger stores (SPEC §5.8): a Redis server and
a three-shard Redis Cluster, each a `redis-server` process of its own on free ports of
127.0.0.1, in a temporary directory, and a small RESP client to look inside them.

Nothing here skips: a machine without `redis-server` fails the tests that need it, with a
message naming the set-up step (`make servers`) that installs it. `bench/stores.py` starts
its servers with these classes too (without persistence).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional, Union

SETUP_HINT = (
    "redis-server and redis-cli are needed by the durable-store tests; "
    "run `make servers` (it installs Debian's redis-server and redis-tools with apt-get)"
)

_rng = random.SystemRandom()  # apart from the random module's state, which tests may seed

Reply = Union[None, int, bytes, str, list["Reply"], "RespError"]


def require_binaries() -> tuple[str, str]:
    """The paths of redis-server and redis-cli, or a failed test (never a skip)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        import pytest  # here only: the bench uses this module without pytest's machinery

        pytest.fail(SETUP_HINT, pytrace=False)
    return server, cli


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A port of 127.0.0.1 nobody listens on; with `with_bus`, port + 10000 too (a cluster
    node's bus). Ports are drawn at random from 20000-50000 so that servers started
    one after another do not reuse each other's ports."""
    for _ in range(1000):
        port = _rng.randint(20000, 50000)
        if _bindable(port) and (not with_bus or _bindable(port + 10000)):
            return port
    raise RuntimeError("no free port on 127.0.0.1")


class RespError(Exception):
    """An error reply of a Redis server (-ERR, -MOVED, ...)."""


class Resp:
    """A minimal RESP2 client: one connection, one command at a time."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"unexpected RESP reply {line[:40]!r}")

    def __call__(self, *args: Union[str, bytes, int]) -> Reply:
        """Sends one command; an error reply raises RespError."""
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        msg = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.sock.sendall(msg)
        reply = self._reply()
        if isinstance(reply, RespError):
            raise reply
        return reply


def _ping(port: int) -> bool:
    try:
        with Resp(port, timeout=1.0) as r:
            return r("PING") == "PONG"
    except (OSError, ConnectionError, RespError):
        return False


class RedisServer:
    """One `redis-server` process on 127.0.0.1:`port`, its data in `dir`.

    `kill9()` ends it with SIGKILL (no shutdown, no final write) and `restart()` starts it
    again on the same port and directory: with the append-only file fsynced on every write
    (`appendfsync always`), everything a client was told succeeded is there again. With
    `persistent=False` (a benchmark's server, or a cluster node) it writes nothing to disk.
    """

    def __init__(self, directory: Path, *, port: Optional[int] = None, cluster: bool = False,
                 persistent: bool = True) -> None:
        self.server, self.cli = require_binaries()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.persistent = persistent and not cluster
        self.port = port if port is not None else free_port(with_bus=cluster)
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            self.server,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--save", "",
            "--maxmemory", "512mb",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.dir / "redis.log"),
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.dir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
            ]
        return args

    def start(self, timeout: float = 15.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING:\n" + self.log_tail())
            time.sleep(0.02)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.dir / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL, then waits until the process is gone and the port refuses connections."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill9()
        self.start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill9()

    def client(self) -> Resp:
        return Resp(self.port)

    def version(self) -> str:
        with self.client() as r:
            info = r("INFO", "server")
        assert isinstance(info, bytes)
        return info.decode().split("redis_version:", 1)[1].split()[0]

    def flushall(self) -> None:
        with self.client() as r:
            r("FLUSHALL", "SYNC")


class RedisCluster:
    """Three `redis-server --cluster-enabled yes` masters (no replicas) joined with
    `redis-cli --cluster create`, each holding a third of the 16,384 slots."""

    def __init__(self, directory: Path, shards: int = 3) -> None:
        self.nodes = [RedisServer(directory / f"node{i}", cluster=True) for i in range(shards)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        cli = self.nodes[0].cli
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run([cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed:\n" + done.stdout.decode(errors="replace")
                               + done.stderr.decode(errors="replace"))
        deadline = time.monotonic() + timeout
        while not self.ok():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster never reached cluster_state:ok")
            time.sleep(0.1)

    def ok(self) -> bool:
        """Every node says cluster_state:ok and knows every node as a master with slots."""
        for node in self.nodes:
            try:
                with node.client() as r:
                    info = r("CLUSTER", "INFO")
                    slots = r("CLUSTER", "SLOTS")
            except (OSError, ConnectionError, RespError):
                return False
            assert isinstance(info, bytes)
            if b"cluster_state:ok" not in info or not isinstance(slots, list) or len(slots) != len(self.nodes):
                return False
        return True

    def keyslot(self, key: Union[str, bytes]) -> int:
        with self.nodes[0].client() as r:
            slot = r("CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        return slot

    def owner(self, slot: int) -> int:
        """The port of the node serving `slot`."""
        with self.nodes[0].client() as r:
            ranges = r("CLUSTER", "SLOTS")
        assert isinstance(ranges, list)
        for entry in ranges:
            assert isinstance(entry, list)
            lo, hi, master = entry[0], entry[1], entry[2]
            assert isinstance(lo, int) and isinstance(hi, int) and isinstance(master, list)
            if lo <= slot <= hi:
                port = master[1]
                assert isinstance(port, int)
                return port
        raise AssertionError(f"slot {slot} is served by no node")

    def keys_by_node(self, pattern: str = "*") -> dict[int, list[bytes]]:
        """Every key of every node (SCAN), by the node's port."""
        out: dict[int, list[bytes]] = {}
        for node in self.nodes:
            keys: list[bytes] = []
            with node.client() as r:
                cursor: Reply = b"0"
                while True:
                    reply = r("SCAN", cursor if isinstance(cursor, bytes) else b"0", "MATCH", pattern, "COUNT", 1000)
                    assert isinstance(reply, list) and isinstance(reply[1], list)
                    cursor = reply[0]
                    keys += [k for k in reply[1] if isinstance(k, bytes)]
                    if cursor == b"0":
                        break
            out[node.port] = keys
        return out

    def flushall(self) -> None:
        for node in self.nodes:
            with node.client() as r:
                r("FLUSHALL", "SYNC")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
