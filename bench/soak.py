"""Differential soak: native and reference gates on millions of generated requests.

    python bench/soak.py --seconds N [--seed S] [--requests-max M] [--threads T]
                         [--workers W] [--concurrent-share F] [--json PATH] [--quiet]

`make soak` runs it (it is not part of `make test`). It is bounded in time: each phase
stops at its deadline, finishing the batch or round in hand.

* **API probes**: gate settings, ``now`` and ledger amounts at the edges of their
  domains, accepted or refused alike by both implementations.
* **Differential** (deterministic given the seed): a native ``hopgate.Gate`` and a
  ``hopgate.reference.Gate`` with one configuration, each with its own ledger, are fed
  the same batches (1..256 requests, through ``check_batch`` or, for one batch in ten,
  ``check``); a third, native gate ("native_alt", sometimes with another cache size)
  gets each batch cut into random pieces. Every code must agree, item by item.
  Reservations are settled identically on all three (commit of part or all, release,
  overrun, forfeit by ``del`` or ``with``, held across batches, a second settlement
  that must raise ``AffineError``). An independent model of steps 16-17 and of the
  ledger, written from docs/SPEC.md §5 (per-root nonces kept for the ledger's
  retention, per-root horizons and quotas, account expiry, root quota and horizon),
  decides every request that reaches step 16 as well, and every ledger must hold
  exactly the model's accounts. Requests come from ``_soak_world``: valid chains of
  1..16 links from the native builders, chains crafted with every refusal code
  (``_soak_craft``), torsion-carrying and small-order keys, flipped and truncated
  bytes, chains of exactly 65,536 and 65,537 bytes, invocations covered or not, costs
  around the budgets, timestamps around the skew, replays of earlier requests (allowed
  and denied), earlier nonces on other chains, duplicates within a batch, revocations,
  the body and route requirement a server binds (right or wrong, for one batch in three),
  and a clock that mostly creeps, sometimes jumps and now and then steps back. Each
  epoch draws a configuration (trusted set, skew, replay window, session, revoked ids,
  cache sizes, ``max_batch``, 1..3 gates with their own windows on one ledger, sometimes
  small ``max_accounts``/``max_nonces`` and per-root quotas, sometimes audit logs whose
  heads must stay equal); a few epochs run near ``now = 0`` or
  ``2**64``. ``--workers W`` runs W such streams in processes, from seeds derived from
  ``--seed`` (worker 0 uses the seed itself).
* **Concurrent** (``--threads``, 0 to skip; see ``_soak_concurrent``): threads share one
  ledger through several gates, native and then reference, and the invariants that
  hold whatever the interleaving are checked, with a sequential reference run as the
  oracle of the order-independent counts.

The exit status is 0 iff no decision differed and no invariant broke. A finding is
recorded (chain and invocation hex, ``now``, the gate configuration, the worker's seed
and batch number, from which ``--seed S --workers 1 --requests-max M`` replays it) in
the JSON report, the run goes on in a fresh epoch, and the first few are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import heapq
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

import hopgate
import hopgate.reference as ref
from hopgate import Account, Code

from _soak_craft import U64_MAX
from _soak_world import ChainArg, GateLike, Request, World
from hopgate import ReservationLike

NOW = 1_750_000_000
CODE_NAMES = [c.name for c in Code]
SIDES = ("native", "reference", "native_alt")
MAX_SAMPLES = 50  # mismatches and violations kept in the report
PRINT_FIRST = 5


def hexs(data: bytes, limit: int = 70_000) -> str:
    return data[:limit].hex()


# ---------------------------------------------------------------------------
# Counters and findings
# ---------------------------------------------------------------------------


@dataclass
class Findings:
    """Mismatches and invariant violations: counted, the first few kept and printed."""

    tag: dict[str, Any] = field(default_factory=dict)  # added to every sample (worker, seed)
    mismatches: int = 0
    violations: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    printed: int = 0

    def add(self, kind: str, mismatch: bool, detail: dict[str, Any]) -> None:
        if mismatch:
            self.mismatches += 1
        else:
            self.violations += 1
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append({"type": kind, **self.tag, **detail})
        if self.printed < PRINT_FIRST:
            self.printed += 1
            short = {k: (v[:160] + "..." if isinstance(v, str) and len(v) > 160 else v)
                     for k, v in {**self.tag, **detail}.items()}
            print(f"\n[soak] {'MISMATCH' if mismatch else 'VIOLATION'} {kind}: {json.dumps(short, default=str)}",
                  file=sys.stderr, flush=True)

    def merge(self, other: Findings) -> None:
        self.mismatches += other.mismatches
        self.violations += other.violations
        for kind, n in other.by_type.items():
            self.by_type[kind] = self.by_type.get(kind, 0) + n
        self.samples.extend(other.samples[: MAX_SAMPLES - len(self.samples)])


@dataclass
class DiffStats:
    requests: int = 0
    batches: int = 0
    check_batches: int = 0  # batches decided with per-request check()
    epochs: int = 0
    edge_epochs: int = 0
    limited_epochs: int = 0
    audit_epochs: int = 0
    refused_batches: int = 0  # larger than max_batch: refused whole by every side
    revocations: int = 0
    ledger_checks: int = 0
    clock_steps_back: int = 0
    bound_requests: int = 0  # given a payload or a requirement, as a server at the edge would
    codes: dict[str, np.ndarray] = field(
        default_factory=lambda: {side: np.zeros(len(Code), dtype=np.int64) for side in SIDES}
    )
    by_kind: dict[str, dict[int, int]] = field(default_factory=dict)
    settle: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count_settle(self, what: str, n: int = 1) -> None:
        self.settle[what] = self.settle.get(what, 0) + n

    def merge(self, other: DiffStats) -> None:
        for name in ("requests", "batches", "check_batches", "epochs", "edge_epochs", "limited_epochs",
                     "audit_epochs", "refused_batches",
                     "revocations", "ledger_checks", "clock_steps_back", "bound_requests"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for side in SIDES:
            self.codes[side] += other.codes[side]
        for kind, counts in other.by_kind.items():
            mine = self.by_kind.setdefault(kind, {})
            for code, n in counts.items():
                mine[code] = mine.get(code, 0) + n
        for what, n in other.settle.items():
            self.count_settle(what, n)
        self.seconds = max(self.seconds, other.seconds)


# ---------------------------------------------------------------------------
# An independent model of the ledger (SPEC §5) and of the nonce set (SPEC §5.5)
# ---------------------------------------------------------------------------


NEVER = U64_MAX
DEFAULT_LIMIT = 1_000_000  # Ledger(max_accounts=, max_nonces=) defaults
PathEntry = tuple[bytes, int, int]  # account id (revocation id), cap (budget), expires (not_after)


class Model:
    """Steps 16 and 17 and the ledger, as docs/SPEC.md describes them (§5, §6 and
    §8), written again from that text: per-root nonces
    remembered by timestamp for the ledger's retention (the longest window of its
    gates), each root with its horizon and quota; accounts with their caps, expiry,
    root and horizon. Every request that reaches step 16 is decided here too, and
    every ledger of the epoch must hold exactly the model's accounts."""

    def __init__(self, max_accounts: int, max_nonces: int, max_accounts_per_root: Optional[int],
                 max_nonces_per_root: Optional[int], retention: int) -> None:
        self.max_accounts = max_accounts
        self.max_nonces = max_nonces
        self.max_accounts_per_root = max(max_accounts // 10, min(max_accounts, 16)) if max_accounts_per_root is None \
            else max_accounts_per_root
        self.max_nonces_per_root = max_nonces if max_nonces_per_root is None else max_nonces_per_root
        self.retention = retention
        self.accounts: dict[bytes, list[int]] = {}  # id -> [cap, spent, reserved, overrun]
        self.expires: dict[bytes, int] = {}
        self.opened_by: dict[bytes, bytes] = {}  # id -> the root of the path that opened it
        self.per_root: dict[bytes, int] = {}  # root -> accounts it opened that are held
        self.account_heap: list[tuple[int, bytes]] = []
        self.account_horizon: Optional[int] = None
        self.latest = 0  # the latest `now` a gate reserved at
        # root -> {nonce: timestamp}; (timestamp, root, nonce) for pruning, possibly stale.
        self.nonces: dict[bytes, dict[bytes, int]] = {}
        self.nonce_heap: list[tuple[int, bytes, bytes]] = []
        self.horizons: dict[bytes, int] = {}
        # Roots left with no nonce, by horizon; folded into `horizon` once stale.
        self.emptied: list[tuple[int, bytes]] = []
        self.horizon: Optional[int] = None
        self.nonce_total = 0
        self.paths: dict[bytes, list[PathEntry]] = {}

    def path(self, chain: bytes) -> list[PathEntry]:
        found = self.paths.get(chain)
        if found is None:
            if len(self.paths) > 4096:
                self.paths.clear()
            found = [(link.revocation_id, link.budget, link.not_after)
                     for link in hopgate.Chain.from_bytes(chain).links]
            self.paths[chain] = found
        return found

    def _forget_nonce(self, root: bytes, nonce: bytes) -> None:
        held = self.nonces[root]
        when = held.pop(nonce)
        self.nonce_total -= 1
        self.horizons[root] = max(self.horizons.get(root, when), when)
        if not held:
            del self.nonces[root]
            heapq.heappush(self.emptied, (self.horizons[root], root))

    def _earliest(self, root: bytes) -> bytes:
        held = self.nonces[root]
        return min(held, key=lambda n: (held[n], n))

    def admit(self, path: Sequence[PathEntry], amount: int, nonce: bytes, timestamp: int, now: int) -> Code:
        """Steps 16 and 17 for one request; on OK the nonce is consumed and the
        amount reserved."""
        while self.nonce_heap and min(self.nonce_heap[0][0] + self.retention, U64_MAX) < now:
            ts, r, n = heapq.heappop(self.nonce_heap)
            if self.nonces.get(r, {}).get(n) == ts:
                self._forget_nonce(r, n)
        while self.emptied and min(self.emptied[0][0] + self.retention, U64_MAX) < now:
            h, r = heapq.heappop(self.emptied)
            if r not in self.nonces and self.horizons.get(r) == h:
                del self.horizons[r]
                self.horizon = h if self.horizon is None else max(self.horizon, h)
        root = path[0][0]
        horizons = (self.horizons.get(root), self.horizon)
        if nonce in self.nonces.get(root, {}) or any(h is not None and timestamp <= h for h in horizons):
            return Code.REPLAY
        self.latest = max(self.latest, now)
        for rid, cap, _ in path:
            acc = self.accounts.get(rid)
            spent, reserved, real_cap = (0, 0, cap) if acc is None else (acc[1], acc[2], acc[0])
            if spent + reserved + amount > real_cap:
                return Code.BUDGET_EXHAUSTED
        new = [entry for entry in path if entry[0] not in self.accounts]
        if new:
            if self.account_horizon is not None and any(until <= self.account_horizon for _, _, until in new):
                return Code.BUDGET_EXHAUSTED
            if not self._room(root, len(new)):
                self._prune_accounts({rid for rid, _, _ in path})
            if not self._room(root, len(new)):
                return Code.BUDGET_EXHAUSTED
        for rid, cap, until in path:
            if rid not in self.accounts:
                self.accounts[rid] = [cap, 0, 0, 0]
                self.opened_by[rid] = root
                self.per_root[root] = self.per_root.get(root, 0) + 1
            self.accounts[rid][2] += amount
            if until > self.expires.get(rid, 0):
                self.expires[rid] = until
                if until != NEVER:
                    heapq.heappush(self.account_heap, (until, rid))
        held = self.nonces.get(root, {})
        if len(held) >= self.max_nonces_per_root:
            self._forget_nonce(root, self._earliest(root))
        elif self.nonce_total >= self.max_nonces:
            biggest = min(self.nonces, key=lambda r: (-len(self.nonces[r]), r))
            self._forget_nonce(biggest, self._earliest(biggest))
        self.nonces.setdefault(root, {})[nonce] = timestamp
        self.nonce_total += 1
        heapq.heappush(self.nonce_heap, (timestamp, root, nonce))
        return Code.OK

    def _room(self, root: bytes, new: int) -> bool:
        return (len(self.accounts) + new <= self.max_accounts
                and self.per_root.get(root, 0) + new <= self.max_accounts_per_root)

    def _prune_accounts(self, on_path: set[bytes]) -> None:
        kept: list[tuple[int, bytes]] = []
        heap = self.account_heap
        while heap and heap[0][0] <= self.latest:
            when, rid = heapq.heappop(heap)
            acc = self.accounts.get(rid)
            if acc is None or self.expires.get(rid) != when:
                continue
            if acc[2] > 0 or rid in on_path:
                kept.append((when, rid))
                continue
            del self.accounts[rid]
            del self.expires[rid]
            self.per_root[self.opened_by.pop(rid)] -= 1
            self.account_horizon = when if self.account_horizon is None else max(self.account_horizon, when)
        for entry in kept:
            heapq.heappush(heap, entry)

    def settle(self, path: Sequence[PathEntry], amount: int, charged: int) -> None:
        for rid, _, _ in path:
            acc = self.accounts[rid]
            acc[2] -= amount
            # u64 counters that saturate (SPEC §8.3).
            acc[1] = min(acc[1] + charged, U64_MAX)
            acc[3] = min(acc[3] + max(0, charged - amount), U64_MAX)

    def snapshot(self) -> dict[bytes, Account]:
        return {rid: Account(*acc) for rid, acc in self.accounts.items()}


# ---------------------------------------------------------------------------
# Sides: one implementation with its gates, ledger and audit log
# ---------------------------------------------------------------------------


@dataclass
class GateSpec:
    trusted: list[bytes]
    skew: int
    replay_window: int
    session: Optional[bytes]
    revoked: list[bytes]
    cache_size: int
    alt_cache_size: int
    max_batch: int

    def describe(self) -> dict[str, Any]:
        return {
            "trusted": [k.hex() for k in self.trusted],
            "skew": self.skew,
            "replay_window": self.replay_window,
            "session": None if self.session is None else self.session.hex(),
            "revoked_initially": [r.hex() for r in self.revoked],
            "cache_size": self.cache_size,
            "alt_cache_size": self.alt_cache_size,
            "max_batch": self.max_batch,
        }


@dataclass
class Side:
    name: str
    gates: list[GateLike]
    ledger: Any
    audit: Any = None

    def accounts(self) -> dict[bytes, Account]:
        result: dict[bytes, Account] = self.ledger.accounts()
        return result


@dataclass
class LedgerSpec:
    shared: bool  # an explicit Ledger given to every gate (else the gate's own)
    max_accounts: int
    max_nonces: int
    max_accounts_per_root: Optional[int] = None  # None: the default share
    max_nonces_per_root: Optional[int] = None

    def ledger(self, impl: Any) -> Any:
        return impl.Ledger(max_accounts=self.max_accounts, max_nonces=self.max_nonces,
                           max_accounts_per_root=self.max_accounts_per_root,
                           max_nonces_per_root=self.max_nonces_per_root)


def make_side(name: str, specs: Sequence[GateSpec], lspec: LedgerSpec, audit_path: Optional[Path],
              audit_key: bytes) -> Side:
    native = name != "reference"
    impl: Any = hopgate if native else ref
    ledger = lspec.ledger(impl) if lspec.shared else None
    audit = impl.AuditLog(audit_path, key=audit_key, fsync=False) if audit_path is not None else None
    gates: list[GateLike] = []
    for spec in specs:
        gates.append(impl.Gate(
            spec.trusted, skew=spec.skew, replay_window=spec.replay_window, session=spec.session,
            revoked=spec.revoked, ledger=ledger, audit=audit,
            cache_size=spec.alt_cache_size if name == "native_alt" else spec.cache_size, max_batch=spec.max_batch,
        ))
    return Side(name, gates, gates[0].ledger if ledger is None else ledger, audit)


# ---------------------------------------------------------------------------
# The differential phase
# ---------------------------------------------------------------------------


@dataclass
class Pending:
    """An allowed request whose three reservations are held across batches."""

    reservations: list[ReservationLike]
    path: list[PathEntry]
    amount: int


class Differential:
    def __init__(self, seed: int, findings: Findings, tmp: Path) -> None:
        self.rng = random.Random(seed)
        self.world = World(random.Random(self.rng.getrandbits(64)))
        self.findings = findings
        self.stats = DiffStats()
        self.tmp = tmp
        self.normal_now = NOW
        self.now = NOW
        self.replays: deque[tuple[ChainArg, bytes]] = deque(maxlen=4096)
        self.held: deque[Pending] = deque()
        self.sides: list[Side] = []
        self.specs: list[GateSpec] = []
        self.model = Model(DEFAULT_LIMIT, DEFAULT_LIMIT, None, None, 0)
        self.lspec = LedgerSpec(False, DEFAULT_LIMIT, DEFAULT_LIMIT)
        self.epoch_left = 0
        self.edge = False
        self.resync = False
        self.diverged = False
        self.audit_key = self.rng.randbytes(32)

    # -- epochs -------------------------------------------------------------

    def gate_spec(self) -> GateSpec:
        rng, world = self.rng, self.world
        skew = rng.choices((0, 1, 2, 5, 30, 120, 300), (3, 5, 5, 10, 50, 10, 5))[0]
        window = 2 * skew + rng.choice((0, 1, rng.randint(0, 300), rng.randint(0, 3000)))
        session = None
        if rng.random() < 0.2:
            session = world.sessions[0] if rng.random() < 0.85 else rng.choice(world.sessions)
        revoked = [rng.choice(rng.choice(world.pool).rids) for _ in range(rng.choice((0, 0, 1, 3)))]
        caches = (0, 1, 2, 16, 100_000)
        # Small caches make the reference verify every link of most requests (its
        # slowest path), so they get a small share of the epochs.
        cache = rng.choices(caches, (4, 2, 4, 10, 80))[0]
        # The third side differs in cache size (the cache must not change a decision);
        # a small cache costs it a full verification per request, so not always.
        alt = rng.choice([c for c in caches if c != cache]) if cache != 100_000 or rng.random() < 0.35 else cache
        max_batch = rng.randint(1, 256) if rng.random() < 0.05 else 65_536
        return GateSpec(world.trusted_set(), skew, window, session, revoked, cache, alt, max_batch)

    def end_epoch(self) -> None:
        if not self.sides:
            return
        while self.held:
            self.settle_pending(self.held.popleft(), self.rng.choice(("commit", "release")))
        self.check_ledgers(final=True)
        for side in self.sides:
            if side.audit is not None:
                report = side.audit.verify()
                if not report.ok:
                    self.findings.add("audit-verify", False, {"side": side.name, "report": str(report)})
                side.audit.close()
        self.sides = []
        for path in self.tmp.glob("audit-*.log"):
            path.unlink()
        gc.collect()

    def new_epoch(self) -> None:
        self.end_epoch()
        rng = self.rng
        st = self.stats
        st.epochs += 1
        if not self.edge:
            self.normal_now = self.now
        # Epochs 2, 3 and 4 are always near now = 0, near now = 2**64 and with small
        # ledger limits, so that a short run covers them too; later ones by chance.
        pick = {2: 0.0, 3: 0.03}.get(st.epochs, rng.random())
        self.edge = pick < 0.04
        if pick < 0.02:
            self.now = rng.randint(0, 200)
        elif pick < 0.04:
            self.now = U64_MAX - rng.randint(100, 100_000)
        else:
            self.now = self.normal_now
        st.edge_epochs += self.edge
        self.world.refill(self.now)
        self.specs = [self.gate_spec() for _ in range(rng.choices((1, 2, 3), (70, 20, 10))[0])]
        # Some epochs bound the ledger tightly, so that its horizons come into play.
        limited = st.epochs == 4 or rng.random() < 0.15
        self.lspec = LedgerSpec(
            shared=limited or len(self.specs) > 1 or rng.random() < 0.5,
            max_accounts=rng.randint(20, 3000) if limited else DEFAULT_LIMIT,
            max_nonces=rng.randint(10, 3000) if limited else DEFAULT_LIMIT,
        )
        if limited:
            # Per-root quotas: the defaults, or explicit ones (some above the totals).
            lspec = self.lspec
            if rng.random() < 0.5:
                lspec.max_accounts_per_root = rng.choice((1, rng.randint(2, 40), rng.randint(1, 2 * lspec.max_accounts)))
            if rng.random() < 0.5:
                lspec.max_nonces_per_root = rng.choice((1, rng.randint(2, 40), rng.randint(1, 2 * lspec.max_nonces)))
        st.limited_epochs += limited
        audit = rng.random() < 0.25
        st.audit_epochs += audit
        self.sides = [
            make_side(name, self.specs, self.lspec, self.tmp / f"audit-{st.epochs}-{name}.log" if audit else None,
                      self.audit_key)
            for name in SIDES
        ]
        # The ledger remembers nonces for the longest window of its gates (one
        # gate when it is not shared).
        self.model = Model(self.lspec.max_accounts, self.lspec.max_nonces, self.lspec.max_accounts_per_root,
                           self.lspec.max_nonces_per_root, max(spec.replay_window for spec in self.specs))
        self.held.clear()
        self.replays.clear()
        self.epoch_left = 30 if self.edge else rng.randint(100, 800)
        self.resync = self.diverged = False

    # -- one batch ----------------------------------------------------------

    def advance_clock(self) -> None:
        rng = self.rng
        pick = rng.random()
        if pick < 0.7:
            step = 0
        elif pick < 0.92:
            step = rng.randint(1, 3)
        elif pick < 0.987:
            step = rng.randint(4, 40)
        elif pick < 0.99:
            step = rng.randint(41, 700)
        else:
            step = -rng.randint(1, 40)
            self.stats.clock_steps_back += 1
        self.now = min(max(self.now + step, 0), U64_MAX)

    def make_requests(self, spec: GateSpec) -> list[Request]:
        rng, world = self.rng, self.world
        size = min(256, int(2 ** rng.uniform(0, 8.05)))
        requests: list[Request] = []
        other = lambda: rng.choice(world.pool)  # noqa: E731
        for _ in range(size):
            pick = rng.random()
            if pick < 0.04 and self.replays:
                chain, inv = rng.choice(self.replays)
                requests.append(Request(chain, inv, "replay"))
            elif pick < 0.06 and requests:
                requests.append(Request(rng.choice(requests).chain, rng.choice(requests).invocation, "mixed-pair")
                                if rng.random() < 0.2 else
                                _dup(rng.choice(requests)))
            elif pick < 0.08 and self.replays:
                # An earlier request's nonce on another chain: a replay under the
                # same root, a fresh request under another.
                _, earlier = rng.choice(self.replays)
                reused = earlier[-64 - 32 - 16:-64 - 32]  # body: ... | nonce | payload_digest, then sig
                entry = rng.choice(world.pool)
                inv, kind = world.invocation(entry, self.now, spec.skew, spec.replay_window, other,
                                             nonce=reused if len(reused) == 16 else None)
                requests.append(Request(entry.arg(rng), inv, "nonce-reused"))
            else:
                entry = rng.choice(world.pool)
                inv, kind = world.invocation(entry, self.now, spec.skew, spec.replay_window, other)
                label = entry.kind if kind in ("fresh", "builder") else f"inv:{kind}"
                requests.append(Request(entry.arg(rng), inv, label))
        for req in requests:
            if rng.random() < 0.1:
                self.replays.append((req.chain, req.invocation))
        if rng.random() < 0.3:
            for req in requests:
                self.bind(req)
        return requests

    def bind(self, req: Request) -> None:
        """What a server at the edge adds to a request: sometimes the body it
        received (the signed one when known, or another), sometimes its route's
        (ability, resource, price), matching the invocation or not."""
        rng, st = self.rng, self.stats
        if rng.random() < 0.5:
            body = self.world.bodies.get(req.invocation)
            req.payload = body if body is not None and rng.random() < 0.7 else rng.randbytes(rng.randint(0, 8))
        if rng.random() < 0.6:
            try:
                inv = hopgate.parse_invocation(req.invocation)
                ability, resource, cost = inv.ability, inv.resource, inv.cost
            except hopgate.MalformedError:
                ability, resource, cost = "read", "files/a", 1
            pick = rng.random()
            if pick < 0.15:
                ability, resource = rng.choice(((ability + "x", resource), (ability, resource + "/"), ("*", resource),
                                                (ability, "*"), (resource, ability)))
            price = rng.choice((0, 1, cost, cost, max(cost - 1, 0), min(cost + 1, U64_MAX),
                                rng.randint(0, U64_MAX)))
            req.require = (ability, resource, price)
        st.bound_requests += req.payload is not None or req.require is not None

    def decide(self, side: Side, gate: int, requests: Sequence[Request], mode: str
               ) -> tuple[list[int], list[Optional[ReservationLike]]]:
        g = side.gates[gate]
        chains = [r.chain for r in requests]
        invs = [r.invocation for r in requests]
        bound = any(r.payload is not None or r.require is not None for r in requests)
        payloads = [r.payload for r in requests] if bound else None
        requires = [r.require for r in requests] if bound else None
        now = self.now
        if mode == "check":
            codes: list[int] = []
            reservations: list[Optional[ReservationLike]] = []
            for r in requests:
                decision = g.check(r.chain, r.invocation, now=now, payload=r.payload, require=r.require)
                codes.append(int(decision.code))
                reservations.append(decision.reservation)
            return codes, reservations
        if mode == "split":
            codes, reservations = [], []
            start = 0
            while start < len(chains):
                end = start + self.rng.randint(1, max(1, len(chains) - start))
                got, res = g.check_batch(chains[start:end], invs[start:end], now=now,
                                         payloads=None if payloads is None else payloads[start:end],
                                         requires=None if requires is None else requires[start:end])
                codes.extend(int(x) for x in got)
                reservations.extend(res)
                start = end
            return codes, reservations
        got, res = g.check_batch(chains, invs, now=now, payloads=payloads, requires=requires)
        return [int(x) for x in got], list(res)

    def batch(self) -> int:
        rng, st = self.rng, self.stats
        if self.epoch_left <= 0 or self.resync:
            self.new_epoch()
        self.epoch_left -= 1
        self.advance_clock()
        if rng.random() < 0.6:
            self.world.refresh(self.now, rng.choice((1, 1, 2, 3)))
        gate = rng.randrange(len(self.specs))
        if rng.random() < 0.04:
            rid = rng.choice(rng.choice(self.world.pool).rids)
            target = rng.randrange(len(self.specs))
            for side in self.sides:
                side.gates[target].revoke(rid)
            st.revocations += 1
        requests = self.make_requests(self.specs[gate])
        mode = "check" if rng.random() < 0.1 else "batch"
        st.check_batches += mode == "check"
        if mode == "batch" and len(requests) > self.specs[gate].max_batch:
            self.refused_batch(gate, requests)
            return len(requests)
        results: list[tuple[list[int], list[Optional[ReservationLike]]]] = []
        for side in self.sides:
            side_mode = "split" if side.name == "native_alt" and mode == "batch" else mode
            try:
                results.append(self.decide(side, gate, requests, side_mode))
            except Exception as exc:  # a gate must not raise on well-typed input
                self.findings.add("gate-raised", False, {
                    "side": side.name, "error": repr(exc), "now": self.now, "gate": self.specs[gate].describe(),
                    "requests": [[hexs(bytes(r.chain)), hexs(r.invocation)] for r in requests[:8]],
                })
                for _, reservations in results:
                    for r in reservations:
                        if r is not None and not r.settled:
                            r.release()
                self.resync = True
                return len(requests)
        self.judge(requests, results, gate, mode)
        st.batches += 1
        st.requests += len(requests)
        if st.batches % 8 == 0:
            self.check_ledgers()
        while self.held and (len(self.held) > 48 or rng.random() < 0.3):
            self.settle_pending(self.held.popleft(), rng.choice(("commit", "release", "partial", "forfeit")))
        return len(requests)

    def refused_batch(self, gate: int, requests: Sequence[Request]) -> None:
        """A batch over ``max_batch`` is refused whole, with ``InputError``, before
        anything is decided: every side must refuse it, and the ledgers stay as they were."""
        self.stats.refused_batches += 1
        outcomes: dict[str, str] = {}
        for side in self.sides:
            try:
                side.gates[gate].check_batch([r.chain for r in requests], [r.invocation for r in requests],
                                             now=self.now)
                outcomes[side.name] = "decided"
            except hopgate.InputError:
                outcomes[side.name] = "InputError"
            except Exception as exc:
                outcomes[side.name] = repr(exc)
        if set(outcomes.values()) != {"InputError"}:
            self.findings.add("max-batch", True, {"outcomes": outcomes, "size": len(requests),
                                                  "max_batch": self.specs[gate].max_batch})
            self.resync = self.diverged = True

    def judge(self, requests: Sequence[Request], results: Sequence[tuple[list[int], list[Optional[ReservationLike]]]],
              gate: int, mode: str) -> None:
        """Compare the sides item by item and check each decision against the model,
        in batch order (the gates decided the whole batch before anything was
        settled); then settle the allowed requests."""
        st, model = self.stats, self.model
        spec = self.specs[gate]
        codes = [codes for codes, _ in results]
        for side, side_codes in zip(SIDES, codes):
            st.codes[side] += np.bincount(np.asarray(side_codes, dtype=np.int64), minlength=len(Code))[: len(Code)]
        pendings: list[Pending] = []
        for i, req in enumerate(requests):
            row = [c[i] for c in codes]
            per_kind = st.by_kind.setdefault(req.kind, {})
            per_kind[row[1]] = per_kind.get(row[1], 0) + 1
            # Take the reservations out of the batch's lists, so that dropping them
            # forfeits them at once (the model is told at the same moment).
            reservations = [res[i] for _, res in results]
            for _, res in results:
                res[i] = None
            if row[0] != row[1] or row[2] != row[0]:
                self.findings.add("decision", True, {
                    "codes": {side: _name(c) for side, c in zip(SIDES, row)},
                    "kind": req.kind, "now": self.now, "batch": st.batches, "index": i, "batch_size": len(requests),
                    **_bound(req),
                    "mode": mode, "gate_index": gate, "gates": len(self.specs), "gate": spec.describe(),
                    "chain": hexs(bytes(req.chain)), "invocation": hexs(req.invocation),
                })
                # The sides have diverged (nonces, maybe accounts): finish the batch
                # without settling this request, and start a fresh epoch after it.
                self.resync = self.diverged = True
                for r in reservations:
                    if r is not None:
                        r.release()
                continue
            code = row[0]
            if code != Code.OK and any(r is not None for r in reservations):
                self.findings.add("reservation-on-deny", False, self._context(req, code, spec))
                for r in reservations:
                    if r is not None:
                        r.release()
            elif code in (Code.OK, Code.REPLAY, Code.BUDGET_EXHAUSTED):
                # The request reached step 16: the model decides it too.
                inv = hopgate.parse_invocation(req.invocation)
                path = model.path(bytes(req.chain))
                expected = model.admit(path, inv.cost, inv.nonce, inv.timestamp, self.now)
                if expected != code:
                    self.findings.add("model-decision", False, {**self._context(req, code, spec),
                                                                "model": expected.name})
                    self.resync = self.diverged = True
                if code == Code.OK:
                    pending = self.allowed(req, reservations, spec, path, inv.cost)
                    if pending is not None:
                        if expected == Code.OK:
                            pendings.append(pending)
                        else:  # the model did not reserve it: give it back
                            for r in pending.reservations:
                                r.release()
            reservations.clear()
        rng = self.rng
        for pending in pendings:
            if rng.random() < 0.12:
                self.held.append(pending)
                st.count_settle("held")
            else:
                action = rng.choices(
                    ("partial", "commit", "release", "overrun", "forfeit", "with", "double"),
                    (30, 20, 25, 3, 5, 2, 3),
                )[0]
                self.settle_pending(pending, action)
        pendings.clear()

    def _context(self, req: Request, code: int, spec: GateSpec) -> dict[str, Any]:
        return {"code": _name(code), "kind": req.kind, "now": self.now, "batch": self.stats.batches, **_bound(req),
                "gate": spec.describe(), "chain": hexs(bytes(req.chain)), "invocation": hexs(req.invocation)}

    def allowed(self, req: Request, reservations: list[Optional[ReservationLike]], spec: GateSpec,
                path: list[PathEntry], cost: int) -> Optional[Pending]:
        """Every side allowed the request: each must hold a reservation of its cost."""
        held = [r for r in reservations if r is not None]
        if len(held) != len(reservations) or any(r.amount != cost for r in held):
            self.findings.add("ok-reservation", False, {**self._context(req, 0, spec),
                                                        "amounts": [None if r is None else r.amount for r in reservations]})
            for r in held:
                r.release()
            self.resync = self.diverged = True
            return None
        return Pending(held, path, cost)

    def settle_pending(self, pending: Pending, action: str) -> None:
        rng, st = self.rng, self.stats
        amount = pending.amount
        reservations = pending.reservations
        pending.reservations = []
        raised: list[str] = []
        if action in ("commit", "partial", "double"):
            actual = amount if action != "partial" else rng.randint(0, amount)
            for r in reservations:
                r.commit(actual) if action == "partial" else r.commit()
            self.model.settle(pending.path, amount, actual)
            st.count_settle("committed")
            if action == "double":
                for r in reservations:
                    try:
                        r.release()
                        raised.append("none")
                    except hopgate.AffineError:
                        raised.append("AffineError")
                st.count_settle("affine_checked")
                if raised != ["AffineError"] * len(reservations):
                    self.findings.add("affine", False, {"raised": raised})
        elif action == "release":
            for r in reservations:
                r.release()
            self.model.settle(pending.path, amount, 0)
            st.count_settle("released")
        elif action == "overrun":
            huge = rng.random() < 0.005 and amount < U64_MAX
            actual = U64_MAX if huge else min(amount + rng.randint(1, 100), U64_MAX)
            for r in reservations:
                try:
                    r.commit(actual)
                    raised.append("none")
                except hopgate.OverrunError:
                    raised.append("OverrunError")
            expected = "OverrunError" if actual > amount else "none"
            if raised != [expected] * len(reservations):
                self.findings.add("overrun", False, {"raised": raised, "amount": amount, "actual": actual})
            self.model.settle(pending.path, amount, actual)
            st.count_settle("overrun_huge" if huge else "overrun")
        elif action == "with":
            for r in reservations:
                with r:
                    pass
            self.model.settle(pending.path, amount, amount)
            st.count_settle("forfeited_with")
        else:  # "forfeit": drop every reference; collection forfeits (ResourceWarning)
            reservations.clear()
            self.model.settle(pending.path, amount, amount)
            st.count_settle("forfeited_del")
        del reservations

    def check_ledgers(self, final: bool = False) -> None:
        if self.diverged:  # a decision differed: the ledgers may too, already reported
            return
        self.stats.ledger_checks += 1
        expected = self.model.snapshot()
        for acc_id, acc in expected.items():
            if acc.spent - acc.overrun + acc.reserved > acc.cap or acc.reserved < 0:
                self.findings.add("model-over-cap", False, {"account": acc_id.hex(), "account_state": acc._asdict()})
                self.resync = True
                break
        got = {side.name: side.accounts() for side in self.sides}
        differ = [name for name, accounts in got.items() if accounts != expected]
        if differ:
            keys = {k for name in differ for k in set(got[name]) ^ set(expected)} | {
                k for name in differ for k in got[name] if k in expected and got[name][k] != expected[k]}
            diff = {k.hex(): {"model": expected.get(k), **{name: got[name].get(k) for name in got}}
                    for k in sorted(keys)[:5]}
            self.findings.add("ledger", True, {"sides_differing_from_model": differ, "now": self.now,
                                               "final": final, "batch": self.stats.batches,
                                               "differences": diff, "count": len(keys)})
            self.resync = self.diverged = True
        audits = [side.audit for side in self.sides if side.audit is not None]
        if len(audits) > 1 and len({(a.head, len(a)) for a in audits}) != 1:
            self.findings.add("audit-head", True, {"heads": [[a.head.hex(), len(a)] for a in audits]})
            self.resync = self.diverged = True

    def run(self, deadline: float, requests_max: int, on_batch: Optional[Callable[[int], None]] = None) -> None:
        started = time.perf_counter()
        while time.perf_counter() < deadline and self.stats.requests < requests_max:
            n = self.batch()
            if on_batch is not None:
                on_batch(n)
        self.end_epoch()
        self.stats.seconds = time.perf_counter() - started


def _bound(req: Request) -> dict[str, Any]:
    """What the server bound to a request, for a finding."""
    out: dict[str, Any] = {}
    if req.payload is not None:
        out["payload"] = req.payload.hex()
    if req.require is not None:
        out["require"] = list(req.require)
    return out


def _dup(req: Request) -> Request:
    return Request(req.chain, req.invocation, "dup-in-batch")


def _name(code: int) -> str:
    return CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else f"?{code}"


# ---------------------------------------------------------------------------
# Progress, report, CLI
# ---------------------------------------------------------------------------


class Progress:
    """One status line on a TTY, rewritten at most twice a second."""

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.start = time.perf_counter()
        self.last = 0.0

    def tick(self, count: int, findings: Findings) -> None:
        now = time.perf_counter()
        if now - self.last < 0.5:
            return
        self.last = now
        rate = count / max(now - self.start, 1e-9)
        sys.stderr.write(f"\r[soak] {self.phase}: {count:,} requests  {rate:,.0f}/s  "
                         f"mismatches {findings.mismatches}  violations {findings.violations}   ")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")


def code_table(stats: DiffStats) -> list[str]:
    lines = [f"  {'code':<20}{'native':>12}{'reference':>12}{'native_alt':>12}"]
    for code in Code:
        row = [int(stats.codes[side][code]) for side in SIDES]
        lines.append(f"  {code.name:<20}" + "".join(f"{x:>12,}" for x in row))
    return lines


# ---------------------------------------------------------------------------
# Edge arguments: both implementations accept or refuse them alike
# ---------------------------------------------------------------------------


def _outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except ValueError as exc:  # InputError and MalformedError are ValueErrors
        return f"ValueError ({type(exc).__name__})"
    except Exception as exc:
        return type(exc).__name__
    return "accepted"


def api_probe(findings: Findings) -> int:
    """Gate settings, ``now``, ledger limits, prices and ledger amounts at the edges
    of their domains (0, 2**63, 2**64 - 1, 2**64, -1): each must be accepted by both
    implementations or refused by both with a ``ValueError`` (the ``InputError`` of
    STYLE.md), and an accepted overrun must leave both ledgers equal. Returns the
    number of probes."""
    key = hopgate.SigningKey.from_seed(bytes(range(32)))
    chain = hopgate.Chain.grant(key, key.public_key, [("*", "*")], 10, "u", 0, U64_MAX, 0)
    inv = chain.invoke(key, "a", "b", 1, timestamp=5)
    impls: dict[str, Any] = {"native": hopgate, "reference": ref}
    probes: list[tuple[str, Callable[[Any], object]]] = []

    def gate_probe(kw: dict[str, int]) -> Callable[[Any], object]:
        return lambda impl: impl.Gate([key.public_key], **kw)

    for name in ("skew", "replay_window", "cache_size"):
        for value in (-1, 0, 2**32, 2**63 - 1, 2**63, U64_MAX, 2**64):
            kw = {name: value}
            if name == "skew":
                kw["replay_window"] = min(max(2 * value, 0), U64_MAX)
            probes.append((f"Gate({', '.join(f'{k}={v}' for k, v in kw.items())})", gate_probe(kw)))

    def check_probe(now: int) -> Callable[[Any], object]:
        return lambda impl: impl.Gate([key.public_key]).check(bytes(chain), inv, now=now)

    for now in (-1, 0, U64_MAX, 2**64):
        probes.append((f"Gate.check(now={now})", check_probe(now)))

    def ledger_probe(kw: dict[str, int]) -> Callable[[Any], object]:
        return lambda impl: impl.Ledger(**kw)

    def price_probe(price: int) -> Callable[[Any], object]:
        return lambda impl: impl.Gate([key.public_key]).check(bytes(chain), inv, now=5, require=("a", "b", price))

    for value in (-1, 0, 1, 2**63, U64_MAX, 2**64):
        for name in ("max_accounts_per_root", "max_nonces_per_root"):
            probes.append((f"Ledger({name}={value})", ledger_probe({name: value})))
        probes.append((f"Gate.check(require=('a', 'b', {value}))", price_probe(value)))

    def reserve_probe(amount: int) -> Callable[[Any], object]:
        return lambda impl: impl.Ledger().budget([(bytes(32), 10)]).reserve(amount)

    def commit_probe(actual: int) -> Callable[[Any], object]:
        return lambda impl: impl.Ledger().budget([(bytes(32), 10)]).reserve(1).commit(actual)

    for amount in (-1, 2**64):
        probes.append((f"Budget.reserve({amount})", reserve_probe(amount)))
        probes.append((f"Reservation.commit({amount})", commit_probe(amount)))
    for what, probe in probes:
        outcomes: dict[str, str] = {}
        printed: dict[str, str] = {}
        for name, impl in impls.items():
            # What an implementation prints on its own (a traceback it could not
            # raise) belongs to the finding, not to the soak's output.
            captured = io.StringIO()
            with contextlib.redirect_stderr(captured):
                outcomes[name] = _outcome(lambda: probe(impl))
            if captured.getvalue():
                printed[name] = captured.getvalue()[-600:]
        bad = [o for o in outcomes.values() if o != "accepted" and not o.startswith("ValueError")]
        if len({o.split(" ")[0] for o in outcomes.values()}) != 1 or bad:
            findings.add("api", True, {"call": what, "outcomes": outcomes, **({"stderr": printed} if printed else {})})

    # An overrun that takes `spent` past 2**64 - 1.
    states: dict[str, Any] = {}
    for name, impl in impls.items():
        ledger = impl.Ledger()
        budget = ledger.budget([(bytes(32), 10)])
        budget.reserve(1).commit(1)
        try:
            budget.reserve(0).commit(U64_MAX)
        except hopgate.OverrunError:
            pass
        states[name] = ledger.account(bytes(32))
    if states["native"] != states["reference"]:
        findings.add("api", True, {"call": "spent 1, then reserve(0).commit(2**64 - 1)",
                                   "outcomes": {k: v._asdict() for k, v in states.items()}})
    return len(probes) + 1


# ---------------------------------------------------------------------------
# Workers: differential runs in separate processes, each from its own seed
# ---------------------------------------------------------------------------


@dataclass
class WorkerResult:
    stats: DiffStats
    findings: Findings
    made: dict[str, int]
    seed: int


_counter: Any = None  # a multiprocessing.Value shared with the workers (progress)


def _init_worker(counter: Any) -> None:
    global _counter
    _counter = counter
    warnings.simplefilter("ignore", ResourceWarning)


def _count(n: int) -> None:
    with _counter.get_lock():
        _counter.value += n


def worker_seed(seed: int, worker: int) -> int:
    """Worker 0 runs the seed itself, so `--workers 1 --seed S` replays it."""
    return seed if worker == 0 else seed * 1_000_003 + worker


def run_worker(seed: int, worker: int, seconds: float, requests_max: int,
               progress: Optional[Progress] = None) -> WorkerResult:
    wseed = worker_seed(seed, worker)
    findings = Findings(tag={"worker": worker, "worker_seed": wseed})
    deadline = time.perf_counter() + seconds
    with tempfile.TemporaryDirectory(prefix="hopgate-soak-") as tmp:
        diff = Differential(wseed, findings, Path(tmp))
        on_batch: Optional[Callable[[int], None]] = None
        if progress is not None:
            on_batch = lambda _n: progress.tick(diff.stats.requests, findings)  # noqa: E731
        elif _counter is not None:
            on_batch = _count
        diff.run(deadline, requests_max, on_batch)
    return WorkerResult(diff.stats, findings, diff.world.made, wseed)


def differential_phase(args: argparse.Namespace, seconds: float, findings: Findings,
                       tty: bool) -> tuple[DiffStats, dict[str, int], list[int]]:
    progress = Progress("differential") if tty else None
    if args.workers <= 1:
        results = [run_worker(args.seed, 0, seconds, args.requests_max, progress)]
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        counter = ctx.Value("q", 0)
        per_worker = -(-args.requests_max // args.workers)
        with ctx.Pool(args.workers, initializer=_init_worker, initargs=(counter,)) as pool:
            pending = [pool.apply_async(run_worker, (args.seed, w, seconds, per_worker))
                       for w in range(args.workers)]
            while not all(p.ready() for p in pending):
                time.sleep(0.5)
                if progress is not None:
                    progress.tick(int(counter.value), findings)
            results = [p.get() for p in pending]
    if progress is not None:
        progress.done()
    stats = DiffStats()
    made: dict[str, int] = {}
    for result in results:
        stats.merge(result.stats)
        findings.merge(result.findings)
        for kind, n in result.made.items():
            made[kind] = made.get(kind, 0) + n
    return stats, made, [r.seed for r in results]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, required=True, help="wall-clock budget (the last batch finishes)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every generated byte (default 1)")
    parser.add_argument("--requests-max", type=int, default=2**62, help="stop the differential phase after this many")
    parser.add_argument("--threads", type=int, default=4, help="threads of the concurrent phase (0: skip it)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes of the differential phase, each from its own seed (default 1)")
    parser.add_argument("--concurrent-share", type=float, default=0.2,
                        help="share of --seconds given to the concurrent phase (default 0.2)")
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)

    # Forfeits are part of the soak; their warnings are expected.
    warnings.simplefilter("ignore", ResourceWarning)
    findings = Findings(tag={})
    tty = sys.stderr.isatty() and not args.quiet
    share = args.concurrent_share if args.threads > 0 else 0.0
    start = time.perf_counter()
    probes = api_probe(findings)
    report: dict[str, Any] = {
        "seed": args.seed, "seconds": args.seconds, "threads": args.threads, "workers": args.workers,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
                    "hopgate_backend": hopgate.BACKEND},
        "api_probes": probes,
    }
    st, made, seeds = differential_phase(args, args.seconds * (1 - share) - (time.perf_counter() - start),
                                         findings, tty)
    report["differential"] = {
        "requests": st.requests, "batches": st.batches, "batches_by_check": st.check_batches,
        "worker_seeds": seeds,
        "seconds": round(st.seconds, 2), "rate_per_s": round(st.requests / max(st.seconds, 1e-9), 1),
        "epochs": st.epochs, "edge_epochs": st.edge_epochs, "limited_ledger_epochs": st.limited_epochs,
        "audit_epochs": st.audit_epochs, "batches_over_max_batch": st.refused_batches,
        "revocations": st.revocations, "ledger_checks": st.ledger_checks,
        "clock_steps_back": st.clock_steps_back, "bound_requests": st.bound_requests, "settlements": st.settle,
        "codes": {side: {c.name: int(st.codes[side][c]) for c in Code} for side in SIDES},
        "codes_by_request_kind": {k: {_name(c): n for c, n in sorted(v.items())} for k, v in sorted(st.by_kind.items())},
        "pool_entries_made": dict(sorted(made.items())),
    }

    conc: Optional[dict[str, Any]] = None
    if args.threads > 0:
        from _soak_concurrent import run_concurrent

        progress = Progress("concurrent") if tty else None
        world = World(random.Random(args.seed))
        conc = run_concurrent(args.seed, args.threads, start + args.seconds, world, findings, progress)
        if progress is not None:
            progress.done()
        report["concurrent"] = conc
    wall = time.perf_counter() - start
    report["wall_s"] = round(wall, 2)
    report["mismatches"] = findings.mismatches
    report["violations"] = findings.violations
    report["findings_by_type"] = findings.by_type
    report["findings"] = findings.samples
    report["ok"] = findings.mismatches == 0 and findings.violations == 0

    out = [
        f"hopgate soak: seed {args.seed}, {wall:.1f} s wall, {os.cpu_count()} CPUs, backend {hopgate.BACKEND}",
        f"api probes: {probes}",
        f"differential ({args.workers} worker{'s' if args.workers > 1 else ''}): {st.requests:,} requests compared in {st.batches:,} batches "
        f"({st.check_batches:,} by check()), {st.requests / max(st.seconds, 1e-9):,.0f} requests/s "
        f"over {st.seconds:.1f} s; {st.epochs} epochs ({st.edge_epochs} near 0 or 2**64, "
        f"{st.limited_epochs} with small ledger limits, {st.audit_epochs} with audit logs), "
        f"{st.revocations} revocations, {st.refused_batches} batches over max_batch, "
        f"{st.bound_requests:,} requests with a payload or requirement, "
        f"{st.ledger_checks} ledger checks",
        *code_table(st),
        "  settlements: " + ", ".join(f"{k} {v:,}" for k, v in sorted(st.settle.items())),
    ]
    if conc is not None:
        out.append(f"concurrent ({args.threads} threads): " + ", ".join(
            f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in conc["summary"].items()))
    out.append(f"mismatches {findings.mismatches}, invariant violations {findings.violations}"
               + (f" {findings.by_type}" if findings.by_type else "")
               + ("  => OK" if report["ok"] else "  => FAIL"))
    print("\n".join(out))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
