"""``hopgate bench``: a quick timing of the main operations with the backend in use (one
run; the comparisons with peers are bench/ in the source tree)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import hopgate

from ._common import ProgressBar, UsageError, add_command, progress_option

if TYPE_CHECKING:
    from ._common import Commands


def add_parser(commands: Commands) -> None:
    bench = add_command(
        commands,
        "bench",
        summary="time the main operations of this build",
        description="""
        Time verify_batch, verify_chains, the gate (cold and warm) and batch hashing with
        the backend in use; prints µs/item and items/s (one run; for comparisons with peers
        see bench/ in the source).
        """,
        example="""
        hopgate bench --quick
        """,
        statuses=[(0, "the table was printed")],
        usage_also=", a backend that gives a wrong answer (a broken build)",
    )
    bench.add_argument("--quick", action="store_true", help="a quarter of the sizes, two repetitions")
    progress_option(bench)
    bench.set_defaults(run=_bench)


@dataclass
class _Row:
    name: str
    case: str
    items: int
    seconds: float


def _best(reps: int, setup: Callable[[], Any], run: Callable[[Any], Any], after: Callable[[Any], None]) -> float:
    best = float("inf")
    for _ in range(reps):
        state = setup()
        started = time.perf_counter()
        result = run(state)
        best = min(best, time.perf_counter() - started)
        after(result)
    return best


def _bench(args: argparse.Namespace) -> int:
    import numpy as np  # imported here: no other command needs numpy, and it takes a while

    quick = args.quick
    reps = 2 if quick else 5
    scale = 4 if quick else 1
    native = hopgate.BACKEND == "native"
    backend = f"native, hash backend {hopgate.hash_backend()}" if native else "reference: pure Python, no native build here"
    print(f"# hopgate bench ({backend}), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, best of {reps}")
    steps = 6
    bar = ProgressBar(sys.stderr, "bench", enabled=args.progress, unit="steps/s", scale=1.0)
    rows: list[_Row] = []
    now = int(time.time())
    try:
        bar(0, steps)
        # verify_batch: n distinct keys, distinct messages.
        n = 1024 // scale
        keys = [hopgate.SigningKey.generate() for _ in range(n)]
        msgs = [os.urandom(64) for _ in range(n)]
        sigs = [k.sign(m) for k, m in zip(keys, msgs)]
        pks = [k.public_key for k in keys]
        t = _best(reps, lambda: None, lambda _: hopgate.verify_batch(msgs, sigs, pks), _expect_all(True))
        rows.append(_Row("verify_batch", f"n={n} distinct keys", n, t))
        bar(1, steps)

        # verify_chains: three-link chains, each from its own issuer.
        m = 512 // scale
        chains, holders, issuers = [], [], []
        for _ in range(m):
            people = [hopgate.SigningKey.generate() for _ in range(4)]
            chain = hopgate.Chain.grant(
                people[0], people[1].public_key, [("tools/*", "call")], budget=10**12, unit="calls",
                not_before=now - 3600, not_after=now + 86400, max_depth=4,
            )
            chain = chain.delegate(people[1], people[2].public_key).delegate(people[2], people[3].public_key)
            chains.append(chain)
            holders.append(people[3])
            issuers.append(people[0].public_key)
        raw = [bytes(c) for c in chains]
        t = _best(reps, lambda: None, lambda _: hopgate.verify_chains(raw, issuers, now=now), _expect_all(0))
        rows.append(_Row("verify_chains", f"{m} chains x 3 links", m, t))
        bar(2, steps)

        # The gate: cold (a fresh gate, nothing cached) and warm (every chain cached).
        def requests() -> list[bytes]:
            return [c.invoke(h, "call", "tools/search", 1, timestamp=now) for c, h in zip(chains, holders)]

        def settle(result: Any) -> None:
            codes, reservations = result
            for r in reservations:
                if r is not None:
                    r.release()
            if int(np.count_nonzero(codes)) != 0:
                raise UsageError(f"bench: the gate refused {int(np.count_nonzero(codes))} requests")

        def cold() -> tuple[Any, list[bytes]]:
            return hopgate.Gate(issuers), requests()

        t = _best(reps, cold, lambda s: s[0].check_batch(raw, s[1], now=now), settle)
        rows.append(_Row("gate", f"cold: {m} requests, 3-link chains", m, t))
        bar(3, steps)
        warm_gate = hopgate.Gate(issuers)
        settle(warm_gate.check_batch(raw, requests(), now=now))
        t = _best(reps, requests, lambda invs: warm_gate.check_batch(raw, invs, now=now), settle)
        rows.append(_Row("gate", f"warm: {m} requests, chains cached", m, t))
        bar(4, steps)

        # blake3_many over one buffer plus Arrow offsets (zero-copy).
        k = 100_000 // scale
        data = np.frombuffer(os.urandom(k * 256), dtype=np.uint8)
        offsets = np.arange(0, (k + 1) * 256, 256, dtype=np.int64)
        t = _best(reps, lambda: None, lambda _: hopgate.blake3_many(data, offsets), lambda _: None)
        rows.append(_Row("blake3_many", f"{k} x 256 B, buffer + offsets", k, t))
        bar(5, steps)
        t = _best(reps, lambda: None, lambda _: hopgate.sha256_many(data, offsets), lambda _: None)
        rows.append(_Row("sha256_many", f"{k} x 256 B, buffer + offsets", k, t))
        bar(6, steps)
    finally:
        bar.close()
    print(f"{'bench':<14} {'case':<36} {'µs/item':>10} {'items/s':>14}")
    for row in rows:
        per = row.seconds / row.items
        print(f"{row.name:<14} {row.case:<36} {per * 1e6:>10.3f} {1 / per:>14,.0f}")
    return 0


def _expect_all(value: Any) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        if not bool((result == value).all()):
            raise UsageError("bench: the backend gave a wrong answer; this build is broken")

    return check
