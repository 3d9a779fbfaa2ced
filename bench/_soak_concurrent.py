"""The concurrent phase of the soak (bench/soak.py): threads on gates sharing one ledger.

Each round builds one scenario, then runs its requests on T threads through several
gates sharing one ledger: twice on native gates, once on reference gates (the
reference must be thread-safe too), and once sequentially on a fresh reference gate,
the oracle. The requests are chosen so that what matters does not depend on the
interleaving:

* ``fanout``: one grant of budget B, 3..10 sibling delegations (some one hop deeper)
  each of budget B, every request costing c with a distinct nonce, about 2.5 * B / c of
  them, every allowed one charged in full (commit, held then committed, or forfeited):
  exactly ``B // c`` are allowed, whatever the order (the delegation-fanout race).
* ``dupnonce``: an ample budget over two grants, N nonces each sent 1..5 times (the
  same bytes, or other invocations on other siblings, under either grant, with the
  same nonce) among decoys that carry the nonce but must be refused (scope, cost,
  staleness, signature): exactly one request per (root, nonce) is allowed (the replay
  identity is per root: link 0's revocation id), any settlement.
* ``mixed``: duplicated nonces, equal costs and a binding budget: ``min(N, B // c)``.
* ``chaos``: random costs and every settlement (release, partial commit, overrun),
  revocations racing the requests: no count is predicted, only the invariants.

Invariants, on every run: every request decided, no exception, no (root, nonce) allowed twice,
decoys refused with their own code, valid requests refused only for REPLAY or
BUDGET_EXHAUSTED (or REVOKED in chaos); on every account nothing left reserved,
``spent`` and ``overrun`` equal to what the threads charged, ``spent - overrun <=
cap``, and where nothing is released, the allowed cost on the account <= its cap and
every BUDGET_EXHAUSTED request truly lacked room at the end.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence

import hopgate
import hopgate.reference as ref
from hopgate import Account, Code

from _soak_craft import invocation_body, sign_invocation
from _soak_world import GateLike, World
from hopgate import ReservationLike

NOW = 1_750_000_000
SCENARIOS = ("fanout", "dupnonce", "mixed", "chaos")
NO_RELEASE = frozenset({"commit", "hold", "forfeit"})


class _Findings(Protocol):
    def add(self, kind: str, mismatch: bool, detail: dict[str, Any]) -> None: ...


class _Progress(Protocol):
    def tick(self, count: int, findings: Any) -> None: ...


@dataclass
class CReq:
    index: int
    chain: bytes
    invocation: bytes
    nonce: bytes
    cost: int
    path: list[tuple[bytes, int]]
    expect: Optional[Code]  # None: a valid request; else the code a decoy must get
    settle: str
    gate: int
    revoke: Optional[bytes] = None  # revoke this id on the request's gate before deciding it


@dataclass
class Scenario:
    name: str
    requests: list[CReq]
    expected_ok: Optional[int]
    expected_nonces: Optional[frozenset[tuple[bytes, bytes]]] = None  # (root, nonce) pairs
    settles: frozenset[str] = NO_RELEASE


@dataclass
class Outcome:
    codes: list[int]
    charged: list[int]
    overrun: list[int]
    errors: list[str]
    accounts: dict[bytes, Account]


@dataclass
class Leaf:
    chain: hopgate.Chain
    holder: hopgate.SigningKey
    path: list[tuple[bytes, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = [(link.revocation_id, link.budget) for link in self.chain.links]


def _leaves(rng: random.Random, world: World, budget: int, leaf_budget: int, now: int,
            count: int, grants: int = 1) -> list[Leaf]:
    leaves: list[Leaf] = []
    for g in range(grants):
        root = rng.choice(world.agents)
        grant = hopgate.Chain.grant(world.issuers[g % 3], root.public_key, [("pay/*", "*")], budget, "usd",
                                    now - 100, now + 3600, 3, nonce=rng.randbytes(16))
        for _ in range(count):
            holder = rng.choice(world.agents)
            child = grant.delegate(root, holder.public_key, budget=leaf_budget, nonce=rng.randbytes(16))
            if rng.random() < 0.4:
                deeper = rng.choice(world.agents)
                child = child.delegate(holder, deeper.public_key, budget=leaf_budget, nonce=rng.randbytes(16))
                holder = deeper
            leaves.append(Leaf(child, holder))
    return leaves


def _valid(index: int, leaf: Leaf, cost: int, nonce: bytes, now: int, settle: str, gate: int) -> CReq:
    inv = leaf.chain.invoke(leaf.holder, "refund", "pay/x", cost, nonce=nonce, timestamp=now,
                            payload=nonce + cost.to_bytes(8, "little"))
    return CReq(index, bytes(leaf.chain), inv, nonce, cost, leaf.path, None, settle, gate)


def _decoy(rng: random.Random, world: World, index: int, leaf: Leaf, nonce: bytes, now: int, gate: int) -> CReq:
    kind = rng.randrange(4)
    resource, cost, ts, signer = "pay/x", 1, now, leaf.holder
    if kind == 0:
        resource, expect = "files/a", Code.SCOPE_DENIED
    elif kind == 1:
        cost, expect = leaf.chain.links[-1].budget + 1, Code.COST_EXCEEDS_GRANT
    elif kind == 2:
        ts, expect = now - 31 - rng.randint(0, 1000), Code.STALE_INVOCATION
    else:
        signer = rng.choice([a for a in world.agents if a.public_key != leaf.holder.public_key])
        expect = Code.BAD_SIGNATURE
    body = invocation_body(leaf.chain.tail_signature, b"refund", resource.encode(), cost, ts, nonce, bytes(32))
    return CReq(index, bytes(leaf.chain), sign_invocation(signer, body), nonce, cost, leaf.path, expect,
                "commit", gate)


def build(name: str, rng: random.Random, world: World, gates: int, now: int) -> Scenario:
    reqs: list[CReq] = []

    def gate() -> int:
        return rng.randrange(gates)

    if name == "fanout":
        budget = rng.randint(50, 2000)
        cost = rng.randint(1, max(1, budget // 20))
        leaves = _leaves(rng, world, budget, budget, now, rng.randint(3, 10))
        total = min(1500, budget // cost * 5 // 2 + 1)
        settle = rng.choice(sorted(NO_RELEASE))
        for i in range(total):
            reqs.append(_valid(i, leaves[i % len(leaves)], cost, rng.randbytes(16), now, settle, gate()))
        return Scenario(name, reqs, min(total, budget // cost))

    if name in ("dupnonce", "mixed"):
        if name == "dupnonce":
            budget, cost = 10**12, -1
            settles = frozenset({"commit", "hold", "forfeit", "release", "partial"})
        else:
            budget = rng.randint(50, 2000)
            cost = rng.randint(1, max(1, budget // 20))
            settles = NO_RELEASE
        grants = 2 if name == "dupnonce" else 1
        leaves = _leaves(rng, world, budget, budget, now, rng.randint(3, 6), grants=grants)
        count = rng.randint(50, 300) if name == "dupnonce" else min(400, budget // cost * 3 // 2 + 1)
        nonces = [rng.randbytes(16) for _ in range(count)]
        for nonce in nonces:
            leaf = rng.choice(leaves)
            first = _valid(0, leaf, cost if cost >= 0 else rng.randint(0, 100), nonce, now,
                           rng.choice(sorted(settles)), gate())
            reqs.append(first)
            for _ in range(rng.randint(0, 4)):
                if rng.random() < 0.6:
                    reqs.append(CReq(0, first.chain, first.invocation, nonce, first.cost, first.path, None,
                                     rng.choice(sorted(settles)), gate()))
                else:
                    other = rng.choice(leaves)
                    reqs.append(_valid(0, other, cost if cost >= 0 else rng.randint(0, 100), nonce, now,
                                       rng.choice(sorted(settles)), gate()))
            for _ in range(rng.choice((0, 0, 1, 2))):
                reqs.append(_decoy(rng, world, 0, rng.choice(leaves), nonce, now, gate()))
        rng.shuffle(reqs)
        for i, req in enumerate(reqs):
            req.index = i
        if name == "dupnonce":
            pairs = frozenset(_identity(r) for r in reqs if r.expect is None)
            return Scenario(name, reqs, len(pairs), pairs, settles)
        return Scenario(name, reqs, min(len(nonces), budget // cost), None, settles)

    # chaos
    budget = rng.randint(100, 5000)
    leaves = _leaves(rng, world, budget, rng.randint(budget // 4, budget), now, rng.randint(2, 5),
                     grants=rng.randint(1, 3))
    settles = frozenset({"commit", "hold", "forfeit", "release", "partial", "overrun"})
    for i in range(rng.randint(300, 1200)):
        leaf = rng.choice(leaves)
        if rng.random() < 0.05:
            reqs.append(_decoy(rng, world, i, leaf, rng.randbytes(16), now, gate()))
            continue
        cost = rng.randint(0, max(1, budget // 5))
        cost = min(cost, leaf.path[-1][1])
        req = _valid(i, leaf, cost, rng.randbytes(16), now, rng.choice(sorted(settles)), gate())
        if rng.random() < 0.003:
            req.revoke = rng.choice(rng.choice(leaves).path)[0]
        reqs.append(req)
    return Scenario(name, reqs, None, None, settles)


def _identity(req: CReq) -> tuple[bytes, bytes]:
    """What a replay is judged by: the root (link 0's account) and the nonce."""
    return req.path[0][0], req.nonce


def _settle(req: CReq, r: ReservationLike, trng: random.Random, held: list[tuple[CReq, ReservationLike]],
            charged: list[int], overrun: list[int]) -> None:
    mode = req.settle
    if mode == "commit":
        r.commit()
        charged[req.index] = req.cost
    elif mode == "hold":
        held.append((req, r))
        charged[req.index] = req.cost
    elif mode == "forfeit":
        charged[req.index] = req.cost  # dropped below, unsettled
    elif mode == "release":
        r.release()
    elif mode == "partial":
        actual = trng.randint(0, req.cost)
        r.commit(actual)
        charged[req.index] = actual
    else:  # overrun
        actual = req.cost + trng.randint(1, 10)
        try:
            r.commit(actual)
        except hopgate.OverrunError:
            pass
        charged[req.index] = actual
        overrun[req.index] = actual - req.cost


def run_threads(gates: Sequence[GateLike], ledger: Any, scn: Scenario, threads: int, now: int,
                seed: int) -> Outcome:
    n = len(scn.requests)
    codes = [-1] * n
    charged = [0] * n
    overrun = [0] * n
    errors: list[str] = []
    order = list(scn.requests)
    random.Random(seed).shuffle(order)
    slices = [order[t::threads] for t in range(threads)]
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        trng = random.Random(seed * 1009 + t)
        mine = slices[t]
        held: list[tuple[CReq, ReservationLike]] = []
        try:
            barrier.wait()
            i = 0
            while i < len(mine):
                chunk = mine[i : i + trng.randint(1, 8)]
                i += len(chunk)
                g = gates[chunk[0].gate]
                for req in chunk:
                    if req.revoke is not None:
                        g.revoke(req.revoke)
                out: list[tuple[int, Optional[ReservationLike]]]
                if len(chunk) == 1 and trng.random() < 0.5:
                    d = g.check(chunk[0].chain, chunk[0].invocation, now=now)
                    out = [(int(d.code), d.reservation)]
                    del d
                else:
                    cs, rs = g.check_batch([r.chain for r in chunk], [r.invocation for r in chunk], now=now)
                    out = list(zip((int(c) for c in cs), rs))
                    del rs
                for req, (code, r) in zip(chunk, out):
                    codes[req.index] = code
                    if r is not None:
                        _settle(req, r, trng, held, charged, overrun)
                    del r
                out.clear()
            for _, r in held:
                r.commit()
            held.clear()
        except Exception as exc:  # reported as a violation
            errors.append(f"thread {t}: {exc!r}")
            barrier.abort()

    pool = [threading.Thread(target=worker, args=(t,), name=f"soak-{t}") for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    gc.collect()
    return Outcome(codes, charged, overrun, errors, ledger.accounts())


def run_sequential(scn: Scenario, seed: int, now: int, trusted: list[bytes]) -> Outcome:
    """The oracle: one reference gate, its own ledger, the requests one by one."""
    gate = ref.Gate(trusted, skew=30, replay_window=300)
    return run_threads([gate], gate.ledger, _one_gate(scn), 1, now, seed)


def _one_gate(scn: Scenario) -> Scenario:
    reqs = [CReq(r.index, r.chain, r.invocation, r.nonce, r.cost, r.path, r.expect, r.settle, 0, r.revoke)
            for r in scn.requests]
    return Scenario(scn.name, reqs, scn.expected_ok, scn.expected_nonces, scn.settles)


def check(scn: Scenario, out: Outcome, who: str, findings: _Findings, round_no: int) -> int:
    """Check the invariants of one run; returns its number of allowed requests."""

    def bad(kind: str, **detail: Any) -> None:
        findings.add(f"concurrent-{kind}", False, {"run": who, "scenario": scn.name, "round": round_no, **detail})

    for error in out.errors:
        bad("raised", error=error)
    allowed: dict[tuple[bytes, bytes], int] = {}
    ok = 0
    for req, code in zip(scn.requests, out.codes):
        if code == -1:
            if not out.errors:
                bad("undecided", index=req.index)
            continue
        if code == Code.OK:
            ok += 1
            allowed[_identity(req)] = allowed.get(_identity(req), 0) + 1
        if req.expect is not None:
            # In chaos a revocation (step e) may come before the decoy's own defect.
            if code != req.expect and not (scn.name == "chaos" and code == Code.REVOKED
                                           and req.expect != Code.BAD_SIGNATURE):
                bad("decoy-code", expected=req.expect.name, got=_name(code), invocation=req.invocation.hex())
        elif code not in (Code.OK, Code.REPLAY, Code.BUDGET_EXHAUSTED) and not (
            scn.name == "chaos" and code == Code.REVOKED
        ):
            bad("valid-refused", got=_name(code), chain=req.chain.hex(), invocation=req.invocation.hex())
    twice = {f"{root.hex()[:16]}/{n.hex()}": c for (root, n), c in allowed.items() if c > 1}
    if twice:
        bad("nonce-allowed-twice", nonces=dict(list(twice.items())[:5]), count=len(twice))
    if scn.expected_nonces is not None and set(allowed) != scn.expected_nonces and not out.errors:
        bad("nonce-set", missing=len(scn.expected_nonces - set(allowed)), extra=len(set(allowed) - scn.expected_nonces))
    if scn.expected_ok is not None and ok != scn.expected_ok and not out.errors:
        findings.add("concurrent-ok-count", True, {"run": who, "scenario": scn.name, "round": round_no,
                                                   "expected": scn.expected_ok, "allowed": ok})
    # Accounts against what the threads charged.
    spent: dict[bytes, int] = {}
    over: dict[bytes, int] = {}
    allowed_cost: dict[bytes, int] = {}
    for req, code in zip(scn.requests, out.codes):
        if code != Code.OK:
            continue
        for rid, _ in req.path:
            spent[rid] = spent.get(rid, 0) + out.charged[req.index]
            over[rid] = over.get(rid, 0) + out.overrun[req.index]
            allowed_cost[rid] = allowed_cost.get(rid, 0) + req.cost
    for rid, acc in out.accounts.items():
        problems = []
        if acc.reserved != 0:
            problems.append("reserved left")
        if acc.spent != spent.get(rid, 0) or acc.overrun != over.get(rid, 0):
            problems.append("spent/overrun differ from the charges")
        if acc.spent - acc.overrun > acc.cap:
            problems.append("spent beyond cap")
        if scn.settles <= NO_RELEASE and allowed_cost.get(rid, 0) > acc.cap:
            problems.append("allowed cost beyond cap")
        if problems:
            bad("account", account=rid.hex(), state=acc._asdict(), charged=spent.get(rid, 0),
                overrun_charged=over.get(rid, 0), allowed_cost=allowed_cost.get(rid, 0), problems=problems)
    if scn.settles <= NO_RELEASE:
        for req, code in zip(scn.requests, out.codes):
            if code == Code.BUDGET_EXHAUSTED:
                rooms = [cap - (out.accounts[rid].spent if rid in out.accounts else 0) for rid, cap in req.path]
                if min(rooms) >= req.cost:
                    bad("exhausted-with-room", index=req.index, cost=req.cost, rooms=rooms)
                    break
    return ok


def _name(code: int) -> str:
    return Code(code).name if 0 <= code < len(Code) else f"?{code}"


def run_concurrent(seed: int, threads: int, deadline: float, world: World, findings: _Findings,
                   progress: Optional[_Progress]) -> dict[str, Any]:
    rng = random.Random(seed ^ 0x5EED_C0C0)
    trusted = [k.public_key for k in world.issuers[:3]]
    n_gates = min(3, threads)
    caches = (100_000, 0, 4)
    summary: dict[str, int] = {"rounds": 0, "native_requests": 0, "reference_requests": 0,
                               "sequential_requests": 0, "native_allowed": 0, "reference_allowed": 0}
    per_scenario: dict[str, dict[str, int]] = {name: {"rounds": 0, "requests": 0, "expected_ok": 0,
                                                      "native_ok": 0, "reference_ok": 0, "sequential_ok": 0}
                                               for name in SCENARIOS}
    started = time.perf_counter()
    round_no = 0
    while time.perf_counter() < deadline:
        name = SCENARIOS[round_no % len(SCENARIOS)]
        now = NOW + round_no
        scn = build(name, rng, world, n_gates, now)
        stats = per_scenario[name]
        stats["rounds"] += 1
        stats["requests"] += len(scn.requests)
        stats["expected_ok"] += scn.expected_ok or 0
        seed_run = rng.getrandbits(32)
        oks: dict[str, int] = {}
        for rep in range(2):
            ledger = hopgate.Ledger()
            gates: list[GateLike] = [hopgate.Gate(trusted, ledger=ledger, cache_size=caches[g]) for g in range(n_gates)]
            out = run_threads(gates, ledger, scn, threads, now, seed_run + rep)
            oks[f"native{rep}"] = check(scn, out, f"native#{rep}", findings, round_no)
            summary["native_requests"] += len(scn.requests)
            summary["native_allowed"] += oks[f"native{rep}"]
        stats["native_ok"] += oks["native0"]
        rledger = ref.Ledger()
        rgates: list[GateLike] = [ref.Gate(trusted, ledger=rledger, cache_size=caches[g]) for g in range(n_gates)]
        out = run_threads(rgates, rledger, scn, threads, now, seed_run + 7)
        oks["reference"] = check(scn, out, "reference", findings, round_no)
        stats["reference_ok"] += oks["reference"]
        summary["reference_requests"] += len(scn.requests)
        summary["reference_allowed"] += oks["reference"]
        if scn.expected_ok is not None:
            out = run_sequential(scn, seed_run + 11, now, trusted)
            oks["sequential"] = check(scn, out, "sequential", findings, round_no)
            stats["sequential_ok"] += oks["sequential"]
            summary["sequential_requests"] += len(scn.requests)
            if len(set(oks.values())) != 1:
                findings.add("concurrent-vs-sequential", True,
                             {"scenario": name, "round": round_no, "allowed": oks, "expected": scn.expected_ok})
        round_no += 1
        summary["rounds"] = round_no
        if progress is not None:
            progress.tick(summary["native_requests"] + summary["reference_requests"], findings)
    seconds = time.perf_counter() - started
    return {"summary": {**summary, "seconds": round(seconds, 1)}, "threads": threads, "gates": n_gates,
            "scenarios": per_scenario}
