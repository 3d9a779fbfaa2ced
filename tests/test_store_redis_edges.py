"""Redis-specific attacks on the durable ledger (docs/SPEC.md §5.8, §5.9), by name.

- attack_locale_collation_overspends: Redis's Lua compares strings with strcoll, and
  redis-server sets its collation from the environment. In a Danish locale "aa" sorts after
  "ff", so hex u64 compared as strings would let a cap of 0xaa be overspent. The script
  compares by value; a server started in da_DK.UTF-8 holds the cap.
- attack_mixed_writers_expire_a_root_early: a native and a reference process on one
  server both keep the root's `until`, so a step of one never makes the other's accounts
  expire before their links do (which would hand the cap out again).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hopgate
import hopgate.reference as ref

from _servers import RedisServer

SEEDS = (b"\x91" * 32, b"\x92" * 32)


def chain_and_keys(impl: Any, budget: int, t: int) -> tuple[Any, Any, Any]:
    issuer, holder = (impl.SigningKey.from_seed(s) for s in SEEDS)
    chain = impl.Chain.grant(issuer, holder.public_key, [("api/*", "call")], budget, "usd", t - 60, t + 3600, 1,
                             nonce=bytes(16))
    return chain, issuer, holder


class LocaleRedis(RedisServer):
    """A redis-server whose collation is Danish."""

    def __init__(self, directory: Path, locales: Path) -> None:
        super().__init__(directory)
        self.locales = locales

    def start(self, timeout: float = 15.0) -> None:
        env = {**os.environ, "LOCPATH": str(self.locales), "LC_ALL": "da_DK.UTF-8", "LANG": "da_DK.UTF-8"}
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as r:
                    r("PING")
                return
            except OSError:
                assert time.monotonic() < deadline, self.log_tail()
                time.sleep(0.02)


@pytest.fixture
def danish_redis(tmp_path: Path) -> Iterator[RedisServer]:
    localedef = shutil.which("localedef")
    assert localedef is not None, "localedef (Debian's libc-bin) is needed to build the da_DK locale"
    locales = tmp_path / "locales"
    locales.mkdir()
    built = subprocess.run([localedef, "-i", "da_DK", "-f", "UTF-8", str(locales / "da_DK.UTF-8")],
                           capture_output=True, text=True)
    assert (locales / "da_DK.UTF-8").exists(), built.stderr
    server = LocaleRedis(tmp_path / "redis", locales)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("impl_name", ["native", "reference"])
def test_attack_locale_collation_overspends(impl_name: str, danish_redis: RedisServer) -> None:
    impl: Any = hopgate if impl_name == "native" else ref
    t = int(time.time())
    chain, issuer, holder = chain_and_keys(impl, 0xAA, t)
    gate = impl.Gate([issuer.public_key], ledger=impl.Ledger.open(danish_redis.url))
    codes = []
    for cost in (160, 16, 26):
        d = gate.check(chain, chain.invoke(holder, "call", "api/x", cost, timestamp=t), now=t)
        codes.append(d.code)
        if d.allowed:
            d.held.commit()
    root = chain.revocation_ids[0]
    assert codes == [impl.Code.OK, impl.Code.BUDGET_EXHAUSTED, impl.Code.BUDGET_EXHAUSTED]
    assert gate.ledger.account(root, root=root) == hopgate.Account(0xAA, 160, 0, 0)
    gate.ledger.close()


@pytest.mark.parametrize("first,second", [("reference", "native"), ("native", "reference")])
def test_attack_mixed_writers_expire_a_root_early(first: str, second: str, redis_db: RedisServer) -> None:
    impls: dict[str, Any] = {"native": hopgate, "reference": ref}
    t = int(time.time())
    gates = {}
    for name in (first, second):
        impl = impls[name]
        chain, issuer, holder = chain_and_keys(impl, 100, t)
        gates[name] = (impl.Gate([issuer.public_key], ledger=impl.Ledger.open(redis_db.url)), chain, holder)
    gate, chain, holder = gates[first]
    d = gate.check(chain, chain.invoke(holder, "call", "api/x", 100, timestamp=t), now=t)
    assert d.allowed
    d.held.commit()
    gate, chain, holder = gates[second]
    refused = gate.check(chain, chain.invoke(holder, "call", "api/x", 1, timestamp=t), now=t)
    assert int(refused.code) == int(hopgate.Code.BUDGET_EXHAUSTED)
    root = chain.revocation_ids[0]
    with redis_db.client() as r:
        ttl_ms = r("PTTL", f"hg1:{{{root.hex()}}}:acct")
    assert isinstance(ttl_ms, int)
    # The grant is valid for another hour: its accounts live at least that long.
    assert ttl_ms > 3_600_000, ttl_ms
    for g, _, _ in gates.values():
        g.ledger.close()


@pytest.mark.parametrize("impl_name", ["native", "reference"])
@pytest.mark.parametrize("budget,costs,codes", [
    (2**64 - 1, [2**63, 2**63 - 1, 1], [0, 0, 17]),
    (2**52 + 1, [2**52, 1, 1], [0, 0, 17]),
    (2**53, [2**52 + 3, 2**52 - 3, 1], [0, 0, 17]),
    (2**32, [2**32 - 1, 1, 1], [0, 0, 17]),
])
def test_u64_arithmetic_at_the_edges(impl_name: str, budget: int, costs: list[int], codes: list[int],
                                     redis_db: RedisServer) -> None:
    """The script's sums and comparisons, in doubles below 2^52 and in limbs above, hold a
    cap exactly at every edge (docs/SPEC.md §8.3)."""
    impl: Any = hopgate if impl_name == "native" else ref
    t = int(time.time())
    chain, issuer, holder = chain_and_keys(impl, budget, t)
    gate = impl.Gate([issuer.public_key], ledger=impl.Ledger.open(redis_db.url))
    got = []
    for cost in costs:
        d = gate.check(chain, chain.invoke(holder, "call", "api/x", cost, timestamp=t), now=t)
        got.append(int(d.code))
        if d.allowed:
            d.held.commit()
    root = chain.revocation_ids[0]
    assert got == codes
    spent = sum(c for c, code in zip(costs, codes) if code == 0)
    assert gate.ledger.account(root, root=root) == hopgate.Account(budget, spent, 0, 0)
    gate.ledger.close()
