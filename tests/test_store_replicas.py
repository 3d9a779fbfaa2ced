"""`redis://...?replicas=N` (docs/SPEC.md §5.8, README "Deploying"): every admission ends
with WAIT; a check that fewer replicas acknowledged in time is refused with StoreError,
and its reservation is released once the store answers again. With a real replica
attached, checks are decided as usual."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hopgate
import hopgate.reference as ref

from _servers import RedisServer

IMPLS = {"native": hopgate, "reference": ref}
SEEDS = (b"\x81" * 32, b"\x82" * 32)


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "primary")
    server.start()
    yield server
    server.stop()


def decide(impl: Any, url: str) -> tuple[Any, Any, Any, Any]:
    """A gate of `impl` on `url`, a grant to the holder, the holder's key, and now."""
    issuer, holder = (impl.SigningKey.from_seed(s) for s in SEEDS)
    t = int(time.time())
    chain = impl.Chain.grant(issuer, holder.public_key, [("api/*", "call")], 100, "usd", t - 60, t + 3600, 1)
    gate = impl.Gate([issuer.public_key], ledger=impl.Ledger.open(url, timeout=0.5))
    return gate, chain, holder, t


@pytest.mark.parametrize("impl_name", sorted(IMPLS))
def test_too_few_replicas_refuses_and_releases(impl_name: str, primary: RedisServer) -> None:
    impl: Any = IMPLS[impl_name]
    gate, chain, HOLDER, t = decide(impl, primary.url + "?replicas=1")
    root = chain.revocation_ids[0]
    with pytest.raises(hopgate.StoreError, match="WAIT"):
        gate.check(chain, chain.invoke(HOLDER, "call", "api/x", 7, timestamp=t), now=t)
    # Nothing was allowed; the reservation the primary made is released by the next step.
    plain = impl.Ledger.open(primary.url)
    assert plain.account(root, root=root).reserved == 7
    with pytest.raises(hopgate.StoreError):
        gate.check(chain, chain.invoke(HOLDER, "call", "api/x", 1, timestamp=t), now=t)
    assert plain.account(root, root=root) == hopgate.Account(100, 0, 1, 0)
    plain.close()
    gate.ledger.close()


@pytest.mark.parametrize("impl_name", sorted(IMPLS))
def test_an_acknowledging_replica_lets_checks_through(impl_name: str, primary: RedisServer,
                                                     tmp_path: Path) -> None:
    impl: Any = IMPLS[impl_name]
    replica = RedisServer(tmp_path / "replica")
    replica.start()
    try:
        with replica.client() as r:
            r("REPLICAOF", "127.0.0.1", str(primary.port))
        deadline = time.monotonic() + 15
        while True:
            with replica.client() as r:
                info = r("INFO", "replication")
            if b"master_link_status:up" in (info if isinstance(info, bytes) else str(info).encode()):
                break
            assert time.monotonic() < deadline, "the replica never connected"
            time.sleep(0.05)
        gate, chain, HOLDER, t = decide(impl, primary.url + "?replicas=1")
        decision = gate.check(chain, chain.invoke(HOLDER, "call", "api/x", 7, timestamp=t), now=t)
        assert decision.allowed
        decision.held.commit(5)
        root = chain.revocation_ids[0]
        assert impl.Ledger.open(replica.url).account(root, root=root) == hopgate.Account(100, 5, 0, 0)
        gate.ledger.close()
    finally:
        replica.stop()
