"""hopgate against the reference and peers, as ratios measured in one run.

    python bench/peers.py [--quick] [--json OUT.json] [--png OUT.png]

Each figure is the best of several repetitions (time.perf_counter), reported as
microseconds per item and as a speed-up over the peer it is compared with. Run on
an idle machine; `make bench` calls this, then the pytest-benchmark suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any, Callable

import blake3
import nacl.signing
from biscuit_auth import Biscuit, BiscuitBuilder, BlockBuilder, KeyPair
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import hopgate
import hopgate.reference as ref

NOW = 1_750_000_000


def best(fn: Callable[[], Any], reps: int, budget_s: float = 3.0) -> float:
    """Best wall time of `reps` calls (fewer if the budget runs out, at least 1)."""
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return min(times)


def signatures(n: int, shared: bool) -> tuple[list[bytes], list[bytes], list[bytes]]:
    keys = [hopgate.SigningKey.generate() for _ in range(1 if shared else n)]
    msgs = [os.urandom(64) for _ in range(n)]
    sigs = [keys[i % len(keys)].sign(m) for i, m in enumerate(msgs)]
    pks = [keys[i % len(keys)].public_key for i in range(n)]
    return msgs, sigs, pks


def bench_verify(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for shared in (False, True):
        for n in (1, 64, 4096):
            msgs, sigs, pks = signatures(n, shared)
            reps = 3 if quick else (200 if n == 1 else 20 if n == 64 else 5)

            def pynacl() -> None:
                for m, s, k in zip(msgs, sigs, pks):
                    nacl.signing.VerifyKey(k).verify(m, s)

            def crypto() -> None:
                for m, s, k in zip(msgs, sigs, pks):
                    Ed25519PublicKey.from_public_bytes(k).verify(s, m)

            sample = min(n, 256)  # the reference is measured on a sample, per item
            t_native = best(lambda: hopgate.verify_batch(msgs, sigs, pks), reps) / n
            t_nacl = best(pynacl, reps) / n
            t_crypto = best(crypto, reps) / n
            t_ref = best(lambda: ref.verify_batch(msgs[:sample], sigs[:sample], pks[:sample]), 2) / sample
            assert hopgate.verify_batch(msgs, sigs, pks).all()
            rows.append(
                dict(
                    bench="verify_batch",
                    case=f"n={n} {'one key' if shared else 'distinct keys'}",
                    native_us=t_native * 1e6,
                    peers_us={"PyNaCl loop": t_nacl * 1e6, "cryptography loop": t_crypto * 1e6, "reference": t_ref * 1e6},
                )
            )
    return rows


def make_chains(n: int, links: int = 3) -> tuple[list[bytes], bytes]:
    issuer = hopgate.SigningKey.generate()
    agents = [hopgate.SigningKey.generate() for _ in range(64)]
    out = []
    for i in range(n):
        hops = [agents[(i + j) % 64] for j in range(links)]
        c = hopgate.Chain.grant(issuer, hops[0].public_key, [("files/*", "read")], 1000, "usd", NOW - 10, NOW + 3600, links)
        for j in range(1, links):
            c = c.delegate(hops[j - 1], hops[j].public_key, budget=1000 - j)
        out.append(bytes(c))
    return out, issuer.public_key


def biscuit_tokens(n: int) -> tuple[list[bytes], Any]:
    root = KeyPair()
    out = []
    for i in range(n):
        t = BiscuitBuilder(f'user("{i}"); right("files/a", "read");').build(root.private_key)
        for _ in range(3):
            t = t.append(BlockBuilder('check if right("files/a", "read");'))
        out.append(t.to_bytes())
    return out, root.public_key


def bench_chains(quick: bool) -> list[dict[str, Any]]:
    n = 256 if quick else 2048
    chains, issuer = make_chains(n)
    tokens, root = biscuit_tokens(min(n, 512))
    sample = chains[:128]
    t_native = best(lambda: hopgate.verify_chains(chains, [issuer], now=NOW), 3 if quick else 10) / n
    t_ref = best(lambda: ref.verify_chains(sample, [issuer], now=NOW), 2) / len(sample)
    t_bis = best(lambda: [Biscuit.from_bytes(t, root) for t in tokens], 3) / len(tokens)
    assert (hopgate.verify_chains(chains, [issuer], now=NOW) == 0).all()
    return [
        dict(
            bench="verify_chains",
            case=f"{n} chains x 3 links (biscuit: 4 blocks)",
            native_us=t_native * 1e6,
            peers_us={"reference": t_ref * 1e6, "biscuit-python": t_bis * 1e6},
        )
    ]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'bench':<14} {'case':<36} {'hopgate µs/item':>16}  peers (µs/item, hopgate speed-up)"]
    for r in rows:
        peers = "  ".join(f"{k}: {v:,.1f} ({v / r['native_us']:.1f}x)" for k, v in r["peers_us"].items())
        lines.append(f"{r['bench']:<14} {r['case']:<36} {r['native_us']:>16,.2f}  {peers}")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    labels, speedups = [], []
    for r in rows:
        for k, v in r["peers_us"].items():
            labels.append(f"{r['bench']} {r['case']} vs {k}")
            speedups.append(v / r["native_us"])
    ax.barh(labels, speedups)
    ax.set_xscale("log")
    ax.set_xlabel("hopgate speed-up (x, log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions (a smoke run)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--png", help="also draw a chart here (needs matplotlib)")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, hopgate {hopgate.BACKEND}")
    rows = bench_verify(args.quick) + bench_chains(args.quick)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.png:
        chart(rows, args.png)


if __name__ == "__main__":
    main()
