"""The gate scenario of ``make demo`` across processes: the same grant and workers as
``demo_gate``, split between two processes, each with a ``Gate`` of its own on one
SQLite ledger (``hopgate.Ledger.open("sqlite:///...")``, docs/SPEC.md §5.8).

``python examples/demo.py`` runs it after the one-process scenario;
``python examples/demo_stores.py`` runs it alone. The processes together stop at the
principal's 10,000 cents, as one process does; an invocation one process allowed is a
replay in the other; and a ledger opened again after both have exited (a restart)
still holds every cent they spent.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

import hopgate
from hopgate import Code

GRANT = 10_000
SHARE = 4_000
WORKERS = 4
PROCESSES = 2
THREADS_PER_WORKER = 4


def key(i: int) -> hopgate.SigningKey:
    return hopgate.SigningKey.from_seed(bytes([200 + i]) * 32)


def spend(url: str, chains: List[bytes], mine: List[int], now: int) -> Tuple[Dict[int, int], Optional[bytes]]:
    """One process: workers `mine` charge through their chains at a gate of its own on
    the ledger at `url`; returns the count per code and one allowed invocation."""
    gate = hopgate.Gate([key(0).public_key], skew=30, replay_window=60, ledger=hopgate.Ledger.open(url))
    counts: Dict[int, int] = {}
    captured: List[bytes] = []
    lock = threading.Lock()

    def worker(i: int, t: int) -> None:
        chain, holder = hopgate.Chain.from_bytes(chains[i]), key(10 + i)
        for n in range(1_000):
            cost = 5 + (i * 31 + t * 7 + n * 13) % 20
            request = chain.invoke(holder, "charge", f"payments/order-{i}-{t}-{n}", cost, timestamp=now)
            d = gate.check(chain, request, now=now)
            with lock:
                counts[int(d.code)] = counts.get(int(d.code), 0) + 1
                if d.allowed and not captured:
                    captured.append(request)
            if not d.allowed:
                return
            d.held.commit(cost - (n % 3))

    threads = [threading.Thread(target=worker, args=(i, t)) for i in mine for t in range(THREADS_PER_WORKER)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    gate.ledger.close()
    return counts, (captured[0] if captured else None)


def run(out: TextIO) -> List[str]:
    """Runs the scenario; returns failures."""
    failures: List[str] = []
    now = int(time.time())
    alice, planner = key(0), key(1)
    grant = hopgate.Chain.grant(alice, planner.public_key, [("payments/*", "charge")], GRANT, "usd-cents",
                                now - 60, now + 3600, 2)
    chains = [grant.delegate(planner, key(10 + i).public_key, budget=SHARE) for i in range(WORKERS)]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'ledger.db')}"
        shares = [list(range(p, WORKERS, PROCESSES)) for p in range(PROCESSES)]
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
            results = pool.starmap(spend, [(url, [bytes(c) for c in chains], mine, now) for mine in shares])
        elapsed = time.perf_counter() - started
        counts: Dict[int, int] = {}
        for c, _ in results:
            for code, n in c.items():
                counts[code] = counts.get(code, 0) + n

        # A restart: a new ledger on the same file, and a gate that never saw a request.
        ledger = hopgate.Ledger.open(url)
        gate = hopgate.Gate([alice.public_key], skew=30, replay_window=60, ledger=ledger)
        root_id = grant.revocation_ids[0]
        root = ledger.account(root_id, root=root_id)
        workers = [ledger.account(c.revocation_ids[1], root=root_id) for c in chains]
        spent_by_workers = sum(0 if a is None else a.spent for a in workers)
        print(f"\ngate scenario across processes  ({PROCESSES} processes, a Gate each, one SQLite ledger)", file=out)
        print(f"  {sum(counts.values()):,} requests in {elapsed:.2f} s: "
              + ", ".join(f"{Code(c).name} {n:,}" for c, n in sorted(counts.items())), file=out)
        if root is None:
            failures.append("stores: the grant's account is missing after the restart")
            return failures
        print(f"  after a restart, spent through the grant: {root.spent:,} of {GRANT:,} (workers' accounts add "
              f"up to {spent_by_workers:,}; nothing left reserved: {root.reserved == 0})", file=out)
        if root.spent > GRANT or spent_by_workers != root.spent or root.reserved:
            failures.append("stores: the grant's cap was exceeded or the accounts disagree")
        if counts.get(int(Code.OK), 0) == 0:
            failures.append("stores: no request was allowed")
        captured = results[0][1]
        replay = gate.check(chains[0], captured, now=now).code if captured is not None else None
        print(f"  {'an invocation allowed in process 1, replayed':<46} -> "
              f"{replay.name if replay is not None else 'not run'}", file=out)
        if replay is not Code.REPLAY:
            failures.append(f"stores: a replay across processes got {replay}, expected REPLAY")
        ledger.close()
    return failures


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python examples/demo_stores.py",
        description="Agents spending through delegated budgets from two processes on one SQLite ledger.")
    parser.parse_args(argv)
    failures = run(sys.stdout)
    for failure in failures:
        print(f"  FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
