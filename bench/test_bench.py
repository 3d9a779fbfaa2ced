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


@pytest.fixture(scope="module")
def small_msgs() -> tuple[list[bytes], Any, Any]:
    from peers import hash_messages

    return hash_messages(10_000, 256)


@pytest.mark.benchmark(group="blake3 10k x 256 B")
@pytest.mark.parametrize("impl", ["native-list", "native-offsets", "blake3-py-loop"])
def test_blake3_many(benchmark: Any, impl: str, small_msgs: tuple[list[bytes], Any, Any]) -> None:
    import blake3

    msgs, buf, offsets = small_msgs
    if impl == "native-list":
        out = benchmark(hopgate.blake3_many, msgs)
    elif impl == "native-offsets":
        out = benchmark(hopgate.blake3_many, buf, offsets)
    else:
        out = benchmark(lambda: [blake3.blake3(m).digest() for m in msgs])
    assert bytes(out[-1]) == blake3.blake3(msgs[-1]).digest()


@pytest.mark.benchmark(group="mac 10k x 256 B")
@pytest.mark.parametrize("impl", ["native-list", "native-offsets", "blake3-py-keyed-loop"])
def test_mac_many(benchmark: Any, impl: str, small_msgs: tuple[list[bytes], Any, Any]) -> None:
    import blake3

    from peers import MAC_KEY

    msgs, buf, offsets = small_msgs
    if impl == "native-list":
        out = benchmark(hopgate.mac_many, MAC_KEY, msgs)
    elif impl == "native-offsets":
        out = benchmark(hopgate.mac_many, MAC_KEY, buf, offsets)
    else:
        out = benchmark(lambda: [blake3.blake3(m, key=MAC_KEY).digest() for m in msgs])
    assert bytes(out[-1]) == blake3.blake3(msgs[-1], key=MAC_KEY).digest()


@pytest.mark.benchmark(group="blake3 one 8 MiB buffer")
@pytest.mark.parametrize("impl", ["native-auto", "native-1-thread", "blake3-py-auto", "blake3-py-1-thread"])
def test_blake3_one_buffer(benchmark: Any, impl: str) -> None:
    import blake3

    data = os.urandom(8 << 20)
    if impl == "native-auto":
        out = benchmark(hopgate.blake3, data)
    elif impl == "native-1-thread":
        out = benchmark(hopgate.blake3, data, threads=1)
    elif impl == "blake3-py-auto":
        out = benchmark(lambda: blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest())
    else:
        out = benchmark(lambda: blake3.blake3(data).digest())
    assert out == blake3.blake3(data).digest()
