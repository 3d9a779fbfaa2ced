"""Fixtures shared by the tests: both implementations, deterministic keys, and real
servers (Redis, a Redis Cluster) and SQLite files for the durable ledger stores."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import hopgate
import hopgate.reference

from _servers import RedisCluster, RedisServer

# Known-answer vectors, each file naming its source (tests/vectors/).
VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"


@pytest.fixture(params=["native", "reference"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each test taking `impl` runs once on the native core and once on the reference."""
    return hopgate if request.param == "native" else hopgate.reference


@pytest.fixture(scope="session")
def keys() -> list[Any]:
    """Eight deterministic native keys (their signatures are valid for both implementations)."""
    return [hopgate.SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(8)]


@pytest.fixture(scope="session")
def speccheck() -> list[dict[str, str]]:
    cases: list[dict[str, str]] = json.loads((VECTORS / "speccheck_cases.json").read_text())["cases"]
    return cases


# Real servers for the durable ledger stores (SPEC §5.8), started on first use: a Redis
# server and a three-shard Redis Cluster for the whole session, a fresh database (FLUSHALL)
# for each test, and an SQLite file per test. A machine without redis-server fails these
# tests (never skips them): `make servers` installs it.


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (append-only file fsynced on every write, so a
    SIGKILL loses nothing acknowledged; `noeviction`); stopped at the session's end."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_db(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, running (restarted if a test killed it) and empty."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    return redis_server


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three masters joined by `redis-cli --cluster create`, at cluster_state:ok."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisCluster) -> RedisCluster:
    """The session's cluster with every shard emptied."""
    assert redis_cluster_session.ok(), "the Redis Cluster is not at cluster_state:ok"
    redis_cluster_session.flushall()
    return redis_cluster_session


@pytest.fixture
def sqlite_url(tmp_path: pathlib.Path) -> str:
    """A new SQLite ledger file for each test."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh durable store by name, for `indirect` parametrization: "sqlite", "redis" or
    "redis-cluster"."""
    kind = request.param
    if kind == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        return url
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_db")
        return server.url
    if kind == "redis-cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    raise ValueError(f"unknown store {kind!r}")
