"""pytest-benchmark suite: `make bench` (or `pytest bench --benchmark-only`).

Groups put hopgate beside its baselines so pytest-benchmark's table reads as ratios.
"""

from __future__ import annotations

import os
from typing import Any

import nacl.signing
import pytest

import hopgate
import hopgate.reference as ref

from peers import NOW, biscuit_tokens, make_chains, signatures


@pytest.fixture(scope="module", params=[64, 4096], ids=lambda n: f"n={n}")
def sigs(request: pytest.FixtureRequest) -> tuple[list[bytes], list[bytes], list[bytes]]:
    return signatures(request.param, shared=False)


@pytest.mark.benchmark(group="verify n signatures")
def test_verify_batch_native(benchmark: Any, sigs: tuple[list[bytes], list[bytes], list[bytes]]) -> None:
    out = benchmark(hopgate.verify_batch, *sigs)
    assert out.all()


@pytest.mark.benchmark(group="verify n signatures")
def test_verify_pynacl_loop(benchmark: Any, sigs: tuple[list[bytes], list[bytes], list[bytes]]) -> None:
    def loop() -> None:
        for m, s, k in zip(*sigs):
            nacl.signing.VerifyKey(k).verify(m, s)

    benchmark(loop)


@pytest.fixture(scope="module")
def chains() -> tuple[list[bytes], bytes]:
    return make_chains(256)


@pytest.mark.benchmark(group="verify 256 three-link chains")
def test_verify_chains_native(benchmark: Any, chains: tuple[list[bytes], bytes]) -> None:
    data, issuer = chains
    assert (benchmark(hopgate.verify_chains, data, [issuer], NOW) == 0).all()


@pytest.mark.benchmark(group="verify 256 three-link chains")
def test_verify_chains_reference(benchmark: Any, chains: tuple[list[bytes], bytes]) -> None:
    data, issuer = chains
    assert (benchmark.pedantic(ref.verify_chains, (data, [issuer], NOW), rounds=2) == 0).all()


@pytest.mark.benchmark(group="verify 256 three-link chains")
def test_biscuit_four_blocks(benchmark: Any) -> None:
    from biscuit_auth import Biscuit

    tokens, root = biscuit_tokens(256)
    benchmark(lambda: [Biscuit.from_bytes(t, root) for t in tokens])


@pytest.mark.benchmark(group="hash 10k x 256 B")
@pytest.mark.parametrize("impl", ["native", "hashlib-loop"])
def test_sha256_many(benchmark: Any, impl: str) -> None:
    import hashlib

    msgs = [os.urandom(256) for _ in range(10_000)]
    if impl == "native":
        benchmark(hopgate.sha256_many, msgs)
    else:
        benchmark(lambda: [hashlib.sha256(m).digest() for m in msgs])
