"""The gate scenario of ``make demo``: agents spending concurrently through delegated
budgets, a replay, a revoked agent, a stolen chain, and the ledger's final state.

``python examples/demo.py`` runs it last; ``python examples/demo_gate.py`` runs it alone
(``--reference`` on the pure-Python reference, which needs the reference extra).

A principal grants a planner agent 10,000 cents for payments; the planner hands
each of four workers 4,000 (16,000 in all: more than the grant, as fan-out does).
Sixteen threads per worker charge through one shared ``Gate``. The ledger reserves
each cost on every link of the chain at once, so the workers together stop at the
principal's 10,000, never above it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from types import ModuleType
from typing import Any, List, Optional, Sequence, TextIO

import hopgate
from demo_wire import INVOKE_DOMAIN, encode_invocation, encode_invocation_body
from hopgate import Code

GRANT = 10_000
SHARE = 4_000
WORKERS = 4
THREADS_PER_WORKER = 16


def run(out: TextIO, impl: ModuleType = hopgate) -> List[str]:
    """Runs the scenario on `impl` (hopgate or hopgate.reference); returns failures."""
    failures: List[str] = []
    now = int(time.time())
    def key(i: int) -> Any:
        return impl.SigningKey.from_seed(bytes([200 + i]) * 32)

    alice, planner, thief = key(0), key(1), key(2)
    workers = [key(10 + i) for i in range(WORKERS)]
    grant = impl.Chain.grant(alice, planner.public_key, [("payments/*", "charge")], GRANT, "usd-cents",
                             now - 60, now + 3600, 2)
    chains = [grant.delegate(planner, w.public_key, budget=SHARE) for w in workers]
    gate = impl.Gate([alice.public_key], skew=30, replay_window=60)
    names = {grant.revocation_ids[0]: "grant alice->planner"}
    names.update({c.revocation_ids[1]: f"worker {i} (planner->worker)" for i, c in enumerate(chains)})

    counts = {code: 0 for code in Code}
    lock = threading.Lock()
    captured: List[bytes] = []

    def worker(i: int, t: int) -> None:
        chain, holder = chains[i], workers[i]
        for n in range(1_000):
            cost = 5 + (i * 31 + t * 7 + n * 13) % 20
            request = chain.invoke(holder, "charge", f"payments/order-{i}-{t}-{n}", cost)
            d = gate.check(chain, request)
            with lock:
                counts[d.code] += 1
                if d.allowed and not captured:
                    captured.append(request)
            if not d.allowed:
                return
            d.held.commit(cost - (n % 3))  # the charge came in a little lower

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i, t)) for i in range(WORKERS) for t in range(THREADS_PER_WORKER)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - started

    root = gate.ledger.account(grant.revocation_ids[0])
    spent_by_workers = sum(spent(gate, c.revocation_ids[1]) for c in chains)
    print(f"\ngate scenario  ({impl.__name__}: {WORKERS} workers x {THREADS_PER_WORKER} threads, one Gate)", file=out)
    print(f"  grant {GRANT:,} cents, {WORKERS} delegations of {SHARE:,} each ({WORKERS * SHARE:,} in all)", file=out)
    print(f"  {sum(counts.values()):,} requests in {elapsed:.2f} s: " + ", ".join(
        f"{c.name} {n:,}" for c, n in counts.items() if n), file=out)
    print(f"  spent through the grant: {root.spent:,} of {GRANT:,} (workers' accounts add up to "
          f"{spent_by_workers:,}; nothing left reserved: {root.reserved == 0})", file=out)
    if root.spent > GRANT or spent_by_workers != root.spent or root.reserved:
        failures.append("gate: the grant's cap was exceeded or the accounts disagree")

    # A replay of a request the gate already allowed.
    replay = gate.check(chains[0], captured[0]) if captured else None
    # A stolen chain presented with the thief's own key.
    stolen = gate.check(chains[1], invoke_as(chains[1], thief))
    # The planner revokes worker 3; its next request is refused.
    gate.revoke(chains[3].revocation_ids[1])
    revoked = gate.check(chains[3], chains[3].invoke(workers[3], "charge", "payments/late", 1))
    for what, d, want in (("replayed request", replay, Code.REPLAY), ("stolen chain, thief's key", stolen,
                          Code.BAD_SIGNATURE), ("request by the revoked worker 3", revoked, Code.REVOKED)):
        got = d.code if d is not None else None
        print(f"  {what:<32} -> {got.name if got is not None else 'not run'}", file=out)
        if got is not want:
            failures.append(f"gate: {what} got {got}, expected {want.name}")

    print("\n  ledger, final state per account", file=out)
    print(f"    {'account':<30} {'cap':>7} {'spent':>7} {'reserved':>8} {'overrun':>7}", file=out)
    for rid, name in names.items():
        a = gate.ledger.account(rid)
        if a is not None:
            print(f"    {name:<30} {a.cap:>7,} {a.spent:>7,} {a.reserved:>8,} {a.overrun:>7,}", file=out)
    return failures


def spent(gate: Any, account_id: bytes) -> int:
    """What an account has spent (0 if it was never charged)."""
    account = gate.ledger.account(account_id)
    return 0 if account is None else int(account.spent)


def invoke_as(chain: Any, key: Any) -> bytes:
    """An invocation of `chain` signed by `key`, which is not its holder: encoded by
    hand (demo_wire), since `Chain.invoke` refuses to."""
    body = encode_invocation_body(tail_sig=chain.tail_signature, ability="charge", resource="payments/x", cost=1,
                                  timestamp=int(time.time()), nonce=bytes(16),
                                  payload_digest=hopgate.blake3(b""))
    return bytes(encode_invocation(body, key.sign(INVOKE_DOMAIN + body)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python examples/demo_gate.py",
        description="Agents spending concurrently through delegated budgets, a replay, a stolen "
        "chain and a revoked agent, at one gate.")
    parser.add_argument("--reference", action="store_true",
                        help="run on hopgate.reference (needs pip install 'hopgate[reference]')")
    args = parser.parse_args(argv)
    impl: ModuleType = hopgate
    if args.reference:
        try:
            impl = importlib.import_module("hopgate.reference")
        except ImportError as e:
            parser.error(f"--reference: hopgate.reference needs pip install 'hopgate[reference]' ({e})")
    failures = run(sys.stdout, impl)
    for failure in failures:
        print(f"  FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
