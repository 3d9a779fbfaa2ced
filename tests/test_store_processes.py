"""SPEC §5.8–5.9: the durable ledger stores, shared by processes (multiprocessing's
"spawn" context, never threads), against real servers: an SQLite file, a Redis server that
the tests kill with SIGKILL and restart, and a three-shard Redis Cluster.

Each test runs on the native core and on the reference, and every count is exact: the
budget reached and never passed, each nonce allowed once, a killed process's reservations
forfeited (counted as spent) once their lease runs out, nothing allowed while the store
is down.
"""

from __future__ import annotations

import importlib
import random
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Optional

import pytest

import hopgate

from craft import invocation as craft_invocation
from _ledger_worker import BUDGET_EXHAUSTED, IMPLS, OK, REPLAY, Workers, drain
from _servers import RedisCluster, RedisServer

STALE, SCOPE_DENIED = 15, 13

# Deterministic keys: the issuer, the grant's holder A, the parent P, and four siblings.
_KEYS = [hopgate.SigningKey.from_seed(bytes([0x60 + i]) * 32) for i in range(8)]
ISSUER, A, P = _KEYS[0], _KEYS[1], _KEYS[2]
SIBLINGS = _KEYS[3:7]
SEEDS = [bytes([0x60 + i]) * 32 for i in range(8)]
SIBLING_SEEDS = SEEDS[3:7]
TRUSTED = [ISSUER.public_key]
# Links valid from 2023 to 2096: every chain's revocation ids depend only on the grant's nonce.
NOT_BEFORE, NOT_AFTER = 1_700_000_000, 4_000_000_000
ABILITY, RESOURCE = "call", "api/x"

STORES = ["sqlite", "redis"]
impls = pytest.mark.parametrize("impl_name", list(IMPLS))
stores = pytest.mark.parametrize("store_url", STORES, indirect=True)


def module(impl_name: str) -> ModuleType:
    return importlib.import_module(IMPLS[impl_name])


def fanout(tag: bytes, n: int = 4, budget: int = 100) -> list[Any]:
    """ISSUER grants A `budget`; A delegates to P (cap `budget`); P delegates to `n`
    siblings (cap `budget` each). Returns the siblings' chains: paths [root, P, sibling]."""
    grant = hopgate.Chain.grant(ISSUER, A.public_key, [("api/*", ABILITY)], budget, "usd", NOT_BEFORE, NOT_AFTER, 4,
                                nonce=tag.ljust(16, b"\0")[:16])
    parent = grant.delegate(A, P.public_key, budget=budget)
    return [parent.delegate(P, SIBLINGS[i].public_key, budget=budget, nonce=bytes([i + 1]) * 16) for i in range(n)]


def now() -> int:
    return int(time.time())


def accounts(impl_name: str, url: str, root: bytes, ids: Sequence[bytes]) -> list[Optional[tuple[int, ...]]]:
    """(cap, spent, reserved, overrun) of each account under `root`, read by a ledger of
    this process."""
    ledger = module(impl_name).Ledger.open(url)
    try:
        out = []
        for account_id in ids:
            account = ledger.account(account_id, root=root)
            out.append(None if account is None else tuple(account))
        return out
    finally:
        ledger.close()


# -- the fan-out race ---------------------------------------------------------------------------


def run_fanout_trials(impl_name: str, url: str, trials: int, tag: bytes) -> None:
    """Four processes, each with its own gate on `url`, spend through four sibling
    delegations (cap 100 each) under one parent (cap 100) of a root grant of 100, cost 1
    each, as fast as they can: together they are allowed exactly 100, never more."""
    with Workers([impl_name] * 4, url, TRUSTED) as workers:
        for trial in range(trials):
            chains = fanout(tag + bytes([trial]))
            root = chains[0].revocation_ids[0]
            start_at = time.time() + 0.05
            results = workers.all("race", [(bytes(c), SIBLING_SEEDS[i], ABILITY, RESOURCE, start_at)
                                           for i, c in enumerate(chains)])
            for r in results:
                assert set(r["codes"]) <= {OK, BUDGET_EXHAUSTED}, (trial, r)
            assert sum(r["ok"] for r in results) == 100, (trial, results)
            ids = [root, chains[0].revocation_ids[1]] + [c.revocation_ids[2] for c in chains]
            got = accounts(impl_name, url, root, ids)
            assert got[0] == (100, 100, 0, 0), (trial, got)  # the root
            assert got[1] == (100, 100, 0, 0), (trial, got)  # the parent of the siblings
            siblings = [(a if a is not None else (100, 0, 0, 0)) for a in got[2:]]
            assert [a[1] for a in siblings] == [r["ok"] for r in results], (trial, got, results)
            assert all(a[0] == 100 and a[2:] == (0, 0) for a in siblings), (trial, got)


@impls
@stores
def test_fanout_race(impl_name: str, store_url: str) -> None:
    run_fanout_trials(impl_name, store_url, 30, b"fanout")


# -- replays across processes -------------------------------------------------------------------


@impls
@stores
def test_replay_allowed_once_across_processes(impl_name: str, store_url: str) -> None:
    """The same 24 invocations sent by four processes at once (each in its own order):
    each is allowed exactly once, and refused as REPLAY (16) by the three others; then one
    allowed in a process is REPLAY in every other."""
    chains = fanout(b"replay", budget=1000)
    root = chains[0].revocation_ids[0]
    t = now()
    invocations = [chains[k % 4].invoke(SIBLINGS[k % 4], ABILITY, RESOURCE, 1, timestamp=t) for k in range(24)]
    items = [(bytes(chains[k % 4]), invocations[k], t) for k in range(24)]
    with Workers([impl_name] * 4, store_url, TRUSTED) as workers:
        start_at = time.time() + 0.1
        orders = [random.Random(i).sample(range(24), 24) for i in range(4)]
        codes = workers.all("checks", [([items[k] for k in order], start_at) for order in orders])
        by_invocation: dict[int, list[int]] = {k: [] for k in range(24)}
        for order, got in zip(orders, codes):
            for k, code in zip(order, got):
                by_invocation[k].append(code)
        for k, got in by_invocation.items():
            assert sorted(got) == [OK, REPLAY, REPLAY, REPLAY], (k, got)

        late = chains[0].invoke(SIBLINGS[0], ABILITY, RESOURCE, 1, timestamp=now())
        assert workers.call(2, "check", bytes(chains[0]), late, now(), False) == (OK, None)
        for i in (0, 1, 3):
            assert workers.call(i, "check", bytes(chains[0]), late, now(), False) == (REPLAY, None)
            assert workers.call(i, "precheck", bytes(chains[0]), late, now()) == REPLAY
        assert workers.call(2, "check", bytes(chains[0]), late, now(), False) == (REPLAY, None)
    assert accounts(impl_name, store_url, root, [root]) == [(1000, 25, 0, 0)]


# -- processes killed with SIGKILL --------------------------------------------------------------


def load_report(events: Sequence[Any]) -> dict[str, Any]:
    """What one worker's stream of reports says it did (see `_Worker.op_load`)."""
    tries: dict[int, tuple[bytes, int, float]] = {}
    decided: dict[int, tuple[int, float, float]] = {}
    check_errors: dict[int, tuple[float, float, str]] = {}
    held: dict[int, int] = {}
    settle_tries: dict[int, float] = {}
    settled: dict[int, tuple[str, float, float]] = {}
    result = None
    for e in events:
        if e[0] == "try":
            tries[e[1]] = (e[2], e[3], e[4])
        elif e[0] == "decided":
            decided[e[1]] = (e[2], e[3], e[4])
        elif e[0] == "check-error":
            check_errors[e[1]] = (e[2], e[3], e[4])
        elif e[0] == "held":
            held[e[1]] = e[2]
        elif e[0] == "settle-try":
            settle_tries[e[1]] = e[2]
        elif e[0] == "settled":
            settled[e[1]] = (e[2], e[3], e[4])
        elif e[0] == "result":
            result = e[1]
        else:
            raise AssertionError(f"a worker raised:\n{e[1]}" if e[0] == "raised" else e)
    undecided = [i for i in tries if i not in decided and i not in check_errors]
    assert len(undecided) <= 1, undecided
    return {
        "tries": tries, "decided": decided, "check_errors": check_errors, "held": held,
        "settle_tries": settle_tries, "settled": settled, "undecided": undecided, "result": result,
        "allowed": [i for i, d in decided.items() if d[0] == OK],
    }


@impls
@stores
def test_killed_processes(impl_name: str, store_url: str) -> None:
    """Four processes under load, each holding up to two reservations, are killed with
    SIGKILL. New processes on the same URL find every committed amount, refuse every
    consumed nonce as REPLAY, and once the lease has run out the dead processes'
    reservations are forfeited: counted as spent, nothing left reserved."""
    lease = 2.0
    budget = 10**9
    chains = fanout(b"kill", budget=budget)
    root, parent = chains[0].revocation_ids[:2]
    ids = [root, parent] + [c.revocation_ids[2] for c in chains]
    events: list[list[Any]] = [[] for _ in range(4)]
    with Workers([impl_name] * 4, store_url, TRUSTED, lease=lease) as workers:
        start_at = time.time() + 0.2
        for i, chain in enumerate(chains):
            workers.send(i, "load", bytes(chain), SIBLING_SEEDS[i], ABILITY, RESOURCE, [2, 3, 1], 3, 2, start_at)

        def loaded() -> bool:
            return all(sum(1 for e in ev if e[0] == "decided") >= 20 and sum(1 for e in ev if e[0] == "held") >= 3
                       for ev in events)

        drain(workers.conns, events, loaded, timeout=120)
        workers.kill9()
        t_killed = time.time()
        drain(workers.conns, events, lambda: False, timeout=30)  # to the end of each pipe
        # Read at once, well inside the lease: the orphaned reservations are still held.
        before = accounts(impl_name, store_url, root, ids)
        t_read = time.time()

    reports = [load_report(ev) for ev in events]
    for r in reports:
        assert r["allowed"] and all(d[0] == OK for d in r["decided"].values()), r["decided"]
        assert r["result"] is None  # it never got to stop
    # Every allowed request ends spent in full: committed in full, or forfeited by its lease.
    allowed = [sum(r["tries"][i][1] for i in r["allowed"]) for r in reports]
    # Held when the process died: allowed and not yet being settled (held on purpose, or
    # killed between the decision and its commit). A reservation is made after its
    # request's "try" report, so its lease (store time, this host's clock) runs at least
    # `lease` past that: those younger than `lease` at the reading below are certainly
    # still held; an older one (a process starved by the others) may have been forfeited
    # already by another process's step, so it counts either way.
    assert t_read - t_killed < lease / 2, "reading the ledger took too long for this test's lease"
    young = [[i for i in r["allowed"] if i not in r["settle_tries"] and r["tries"][i][2] + lease > t_read + 0.05]
             for r in reports]
    live_young = [sum(r["tries"][i][1] for i in y) for r, y in zip(reports, young)]
    live_old = [sum(r["tries"][i][1] for i in r["allowed"] if i not in r["settle_tries"]) - y
                for r, y in zip(reports, live_young)]
    in_settlement = [sum(r["tries"][i][1] for i in r["settle_tries"] if i not in r["settled"]) for r in reports]
    undecided = [(r["tries"][r["undecided"][0]][0], r["tries"][r["undecided"][0]][1]) if r["undecided"] else None
                 for r in reports]
    assert sum(live_young) > 0

    # Right after the kill, within their leases: the dead processes' reservations are held.
    for k in range(4):
        acct = before[2 + k]
        assert acct is not None
        cap, spent, reserved, overrun = acct
        u = undecided[k]
        pending = live_old[k] + in_settlement[k] + (u[1] if u is not None else 0)
        assert (cap, overrun) == (budget, 0)
        assert live_young[k] <= reserved <= live_young[k] + pending, (k, acct, live_young, pending)
        assert allowed[k] <= spent + reserved <= allowed[k] + pending, (k, acct, allowed)

    # New processes on the same URL: every consumed nonce is still a REPLAY.
    with Workers([impl_name] * 2, store_url, TRUSTED, lease=lease) as fresh:
        t = now()
        for k, r in enumerate(reports):
            items = [(bytes(chains[k]), r["tries"][i][0], t) for i in r["allowed"]]
            assert fresh.call(k % 2, "checks", items, 0.0) == [REPLAY] * len(items), k
        # The request in flight when its process died was allowed (its nonce consumed,
        # its reservation orphaned) or never reached the store; either way it is decided once.
        expected = list(allowed)
        for k, u in enumerate(undecided):
            if u is None:
                continue
            code, rid = fresh.call(0, "check", bytes(chains[k]), u[0], now(), True)
            if code == OK:
                assert fresh.call(0, "settle", rid, "release", None) == "ok"
            else:
                assert code == REPLAY, code
                expected[k] += u[1]

        # After the lease, the next step on the root forfeits every orphaned reservation.
        time.sleep(max(0.0, t_killed + lease + 0.5 - time.time()))
        probe = chains[0].invoke(SIBLINGS[0], ABILITY, RESOURCE, 1, timestamp=now())
        code, rid = fresh.call(1, "check", bytes(chains[0]), probe, now(), True)
        assert code == OK
        assert fresh.call(1, "settle", rid, "release", None) == "ok"

    after = accounts(impl_name, store_url, root, ids)
    assert after[0] == (budget, sum(expected), 0, 0), (after, expected)
    assert after[1] == (budget, sum(expected), 0, 0), (after, expected)
    assert after[2:] == [(budget, e, 0, 0) for e in expected], (after, expected)


# -- the Redis server killed and restarted ------------------------------------------------------


@impls
def test_redis_killed_and_restarted(impl_name: str, redis_db: RedisServer) -> None:
    """The Redis server is killed with SIGKILL under load from three processes and
    restarted (append-only file, fsynced on every write): while it is down every check,
    precheck and settlement raises StoreError (an OSError) and nothing is allowed; after
    the restart the processes go on, nothing is left half-reserved, and the spending is
    that of the requests allowed."""
    impl = module(impl_name)
    lease, budget = 1.0, 10**9
    url = redis_db.url
    chains = fanout(b"redis-kill", budget=budget)
    root = chains[0].revocation_ids[0]
    ids = [root, chains[0].revocation_ids[1]] + [c.revocation_ids[2] for c in chains[:3]]
    events: list[list[Any]] = [[] for _ in range(3)]
    own = impl.Gate(TRUSTED, ledger=impl.Ledger.open(url, lease=lease, timeout=0.5))
    with Workers([impl_name] * 3, url, TRUSTED, lease=lease, timeout=0.5) as workers:
        start_at = time.time() + 0.2
        for i in range(3):
            workers.send(i, "load", bytes(chains[i]), SIBLING_SEEDS[i], ABILITY, RESOURCE, [1, 2, 3], 4, 1, start_at)

        def allowed_since(t: float, n: int) -> bool:
            return all(sum(1 for e in ev if e[0] == "decided" and e[2] == OK and e[3] > t) >= n for ev in events)

        drain(workers.conns, events, lambda: allowed_since(0.0, 15), timeout=120)
        t_kill = time.time()
        redis_db.kill9()
        t_killed = time.time()

        # While it is down: this process's gate fails closed too.
        down = chains[3].invoke(SIBLINGS[3], ABILITY, RESOURCE, 1, timestamp=now())
        with pytest.raises(impl.StoreError) as info:
            own.check(bytes(chains[3]), down, now=now())
        assert isinstance(info.value, OSError)
        with pytest.raises(impl.StoreError):
            own.precheck(bytes(chains[3]), down, now=now())
        with pytest.raises(impl.StoreError):
            own.check_batch([bytes(chains[3])], [down], now=now())
        drain(workers.conns, events, lambda: time.time() >= t_killed + 1.0, timeout=30)  # down for a second

        t_restart = time.time()
        redis_db.start()
        t_up = time.time()
        drain(workers.conns, events, lambda: allowed_since(t_up, 5), timeout=60)
        for i in range(3):
            workers.send(i, "stop")
        drain(workers.conns, events, lambda: all(any(e[0] in ("result", "raised") for e in ev) for ev in events),
              timeout=60)

        # Past every lease taken before the kill, one live reservation in each process.
        time.sleep(max(0.0, t_killed + lease + 0.3 - time.time()))
        live = []
        for i in range(3):
            inv = chains[i].invoke(SIBLINGS[i], ABILITY, RESOURCE, i + 1, timestamp=now())
            code, rid = workers.call(i, "check", bytes(chains[i]), inv, now(), True)
            assert code == OK
            live.append(rid)
        during = accounts(impl_name, url, root, ids)
        for i, rid in enumerate(live):
            assert workers.call(i, "settle", rid, "release", None) == "ok"
    own.ledger.close()

    reports = [load_report(ev) for ev in events]
    definite, ambiguous = [], []
    for k, r in enumerate(reports):
        for i, (code, t0, t1) in r["decided"].items():
            assert code == OK, (k, i, code)
            assert not (t0 > t_killed and t1 < t_restart), f"allowed while the server was down: {k} {i}"
        for i, (result, t0, t1) in r["settled"].items():
            assert result in ("ok", "StoreError", "LeaseExpiredError"), result
            if t0 > t_killed and t1 < t_restart:
                assert result == "StoreError", f"settled while the server was down: {k} {i} {result}"
        assert all(name == "StoreError" for _, _, name in r["check_errors"].values())
        assert any(t0 > t_killed and t1 < t_restart for t0, t1, _ in r["check_errors"].values()), (
            f"worker {k} made no check while the server was down")
        assert not r["undecided"]
        # An allowed request is spent in full (committed, or forfeited by its lease when the
        # settlement failed); a check that failed while the server could have run it may
        # have reserved (then forfeited or released) or not.
        definite.append(sum(r["tries"][i][1] for i in r["allowed"]))
        ambiguous.append(sum(r["tries"][i][1] for i, (t0, t1, _) in r["check_errors"].items()
                             if t0 < t_killed or t1 > t_restart))
    assert t_kill < t_killed < t_restart < t_up

    root_acct, parent_acct = during[0], during[1]
    assert root_acct is not None and parent_acct is not None
    # Nothing half-reserved: exactly the three live reservations (1 + 2 + 3) are held.
    assert root_acct[2] == 6 and parent_acct[2] == 6, during
    for k in range(3):
        acct = during[2 + k]
        assert acct is not None
        assert acct[0] == budget and acct[2] == k + 1 and acct[3] == 0, (k, acct)
        assert definite[k] <= acct[1] <= definite[k] + ambiguous[k], (k, acct, definite, ambiguous)
    spent = [a[1] for a in during[2:] if a is not None]
    assert root_acct[1] == parent_acct[1] == sum(spent), during
    after = accounts(impl_name, url, root, ids)
    assert [a[2] for a in after if a is not None] == [0] * 5, after


# -- the Redis Cluster --------------------------------------------------------------------------


def spread_roots(cluster: RedisCluster, per_node: int) -> list[tuple[Any, int, int]]:
    """Grants whose roots fall on every shard, `per_node` each: (grant, slot, owner port)."""
    found: dict[int, list[tuple[Any, int, int]]] = {n.port: [] for n in cluster.nodes}
    for k in range(1000):
        grant = hopgate.Chain.grant(ISSUER, A.public_key, [("api/*", ABILITY)], 50, "usd", NOT_BEFORE, NOT_AFTER, 4,
                                    nonce=b"shard".ljust(12, b"\0") + k.to_bytes(4, "big"))
        slot = cluster.keyslot(f"hg1:{{{grant.revocation_ids[0].hex()}}}:acct")
        port = cluster.owner(slot)
        if len(found[port]) < per_node:
            found[port].append((grant, slot, port))
        if all(len(v) == per_node for v in found.values()):
            return [g for v in found.values() for g in v]
    raise AssertionError("no spread of roots over the shards")


@impls
def test_cluster_roots_on_their_shards(impl_name: str, redis_cluster: RedisCluster) -> None:
    """Chains under roots of every shard: all the keys of a root (its meta, accounts,
    nonces, reservations, settlements) are in the root's one slot, on the node serving it,
    and the ledger counts each root's spending apart."""
    impl = module(impl_name)
    roots = spread_roots(redis_cluster, 2)
    gate = impl.Gate(TRUSTED, ledger=impl.Ledger.open(redis_cluster.url))
    for grant, _, _ in roots:
        chain = grant.delegate(A, P.public_key, budget=20)
        t = now()
        held = gate.check(bytes(chain), chain.invoke(P, ABILITY, RESOURCE, 7, timestamp=t), now=t)
        assert held.code == OK
        again = gate.check(bytes(chain), chain.invoke(P, ABILITY, RESOURCE, 5, timestamp=t), now=t)
        assert again.code == OK
        again.reservation.commit(4)
        over = gate.check(bytes(chain), chain.invoke(P, ABILITY, RESOURCE, 10, timestamp=t), now=t)
        assert over.code == BUDGET_EXHAUSTED  # 7 held + 4 spent + 10 > 20
        held.reservation.commit(6)
        rid, pid = chain.revocation_ids
        assert tuple(gate.ledger.account(rid, root=rid)) == (50, 10, 0, 0)
        assert tuple(gate.ledger.account(pid, root=rid)) == (20, 10, 0, 0)
    gate.ledger.close()

    keys = redis_cluster.keys_by_node("hg1:*")
    where: dict[str, set[int]] = {}
    for port, names in keys.items():
        for key in names:
            tag = key.decode().split("{", 1)[1].split("}", 1)[0]
            where.setdefault(tag, set()).add(port)
    assert set(where) == {g.revocation_ids[0].hex() for g, _, _ in roots}
    nodes_used = set()
    for grant, slot, port in roots:
        tag = grant.revocation_ids[0].hex()
        assert where[tag] == {port}, (tag, where[tag], port)
        mine = [k for k in keys[port] if k.startswith(f"hg1:{{{tag}}}:".encode())]
        assert {redis_cluster.keyslot(k) for k in mine} == {slot}
        kinds = {k.decode().split("}:", 1)[1].split(":", 1)[0] for k in mine}
        assert {"meta", "acct", "n", "done"} <= kinds, kinds
        assert sum(1 for k in mine if b"}:n:" in k) == 2  # the two allowed nonces
        nodes_used.add(port)
        with redis_cluster.nodes[[n.port for n in redis_cluster.nodes].index(port)].client() as r:
            value = r("HGET", f"hg1:{{{tag}}}:acct", tag)
        assert isinstance(value, bytes) and len(value) == 80 and value == value.lower(), value
        assert (int(value[0:16], 16), int(value[16:32], 16), int(value[32:48], 16)) == (50, 10, 0)
    assert len(nodes_used) == 3


@impls
def test_cluster_fanout_race(impl_name: str, redis_cluster: RedisCluster) -> None:
    run_fanout_trials(impl_name, redis_cluster.url, 10, b"cluster")


# -- native and reference on one store ----------------------------------------------------------


def scripted_sequence(seed: int, chains: Sequence[tuple[Any, Any]], steps: int, t: int) -> list[tuple[Any, ...]]:
    """A random sequence of requests and settlements over `chains` ((chain, holder key)
    pairs): fresh invocations of random costs, replays of earlier ones, stale ones, others
    out of scope; each allowed one is held or committed, and held ones are later
    committed (sometimes for more than held: an overrun) or released."""
    rng = random.Random(seed)
    out: list[tuple[Any, ...]] = []
    sent: list[tuple[int, bytes]] = []
    holds = 0
    for _ in range(steps):
        roll = rng.random()
        k = rng.randrange(len(chains))
        chain, holder = chains[k]
        if roll < 0.12 and sent:
            k, inv = rng.choice(sent)
            out.append(("check", k, inv, rng.random() < 0.5))
        elif roll < 0.17:
            inv = chain.invoke(holder, ABILITY, RESOURCE, 1, timestamp=t - 100)
            out.append(("check", k, inv, False))
        elif roll < 0.20:
            out.append(("check", k, _out_of_scope(chain, holder, t), False))
        elif roll < 0.40 and holds:
            out.append(("settle", rng.randrange(holds), rng.choice(["commit", "release", "over"]), rng.randrange(8)))
        else:
            inv = chain.invoke(holder, ABILITY, RESOURCE, rng.randrange(13), timestamp=t + rng.randrange(-5, 6))
            sent.append((k, inv))
            hold = rng.random() < 0.4
            holds += hold
            out.append(("check", k, inv, hold))
    return out


def _out_of_scope(chain: Any, holder: Any, t: int) -> bytes:
    """An invocation the builder refuses to make: a resource outside the chain's scope."""
    return craft_invocation(holder, chain.tail_signature, ABILITY, "other/x", 1, t, random.randbytes(16), bytes(32))


def run_sequence(seq: Sequence[tuple[Any, ...]], chains: Sequence[tuple[Any, Any]], t: int,
                 check: Any, settle: Any) -> list[Any]:
    """Plays `seq`: `check(k, chain, inv, hold) -> (code, handle)`, `settle(handle, kind,
    actual) -> result`. Returns what each step answered."""
    handles: list[Any] = []
    out: list[Any] = []
    for step in seq:
        if step[0] == "check":
            _, k, inv, hold = step
            code, handle = check(k, bytes(chains[k][0]), inv, t, hold)
            if hold:
                handles.append(handle)  # None for a refused one: settling it is skipped
            out.append(code)
        else:
            _, index, kind, extra = step
            if index >= len(handles) or handles[index] is None:
                out.append("none")
                continue
            handle, handles[index] = handles[index], None
            actual = None if kind == "commit" else extra
            if kind == "over":
                kind, actual = "commit", 30 + extra
            out.append(settle(handle, kind, actual if kind == "commit" else None))
    # What is still held at the end is released.
    for handle in handles:
        if handle is not None:
            out.append(settle(handle, "release", None))
    return out


def memory_run(impl: ModuleType, seq: Sequence[tuple[Any, ...]], chains: Sequence[tuple[Any, Any]],
               t: int) -> tuple[list[Any], Any]:
    gate = impl.Gate(TRUSTED, ledger=impl.Ledger())

    def check(k: int, chain: bytes, inv: bytes, t: int, hold: bool) -> tuple[int, Any]:
        d = gate.check(chain, inv, now=t)
        if d.code != OK:
            return int(d.code), None
        if hold:
            return OK, d.reservation
        d.reservation.commit()
        return OK, None

    def settle(reservation: Any, kind: str, actual: Optional[int]) -> str:
        try:
            reservation.commit(actual) if kind == "commit" else reservation.release()
        except hopgate.HopgateError as e:
            return type(e).__name__
        return "ok"

    return run_sequence(seq, chains, t, check, settle), gate.ledger


@stores
def test_native_and_reference_share_one_store(store_url: str) -> None:
    """A native process and a reference process on one URL take turns deciding a scripted
    sequence (fresh requests, replays across the two, stale and out-of-scope ones,
    budget exhaustion, commits, releases and overruns): every answer and every account is
    what one in-memory ledger gives, native or reference, and both implementations read
    the same accounts from the store."""
    grant = hopgate.Chain.grant(ISSUER, A.public_key, [("api/*", ABILITY)], 60, "usd", NOT_BEFORE, NOT_AFTER, 4,
                                nonce=b"mixed-1".ljust(16, b"\0"))
    left = grant.delegate(A, SIBLINGS[0].public_key, budget=40, nonce=bytes(16))
    right = grant.delegate(A, SIBLINGS[1].public_key, budget=35, nonce=bytes([1]) * 16)
    other = hopgate.Chain.grant(ISSUER, SIBLINGS[2].public_key, [("api/*", ABILITY)], 25, "usd", NOT_BEFORE,
                                NOT_AFTER, 4, nonce=b"mixed-2".ljust(16, b"\0"))
    chains = [(left, SIBLINGS[0]), (right, SIBLINGS[1]), (other, SIBLINGS[2]), (grant, A)]
    t = now()
    seq = scripted_sequence(7, chains, 160, t)

    with Workers(["native", "reference"], store_url, TRUSTED) as workers:
        turn = [0]

        def check(k: int, chain: bytes, inv: bytes, t: int, hold: bool) -> tuple[int, Any]:
            w = turn[0] % 2
            turn[0] += 1
            code, rid = workers.call(w, "check", chain, inv, t, hold)
            return code, (w, rid) if rid is not None else None

        def settle(handle: tuple[int, int], kind: str, actual: Optional[int]) -> Any:
            return workers.call(handle[0], "settle", handle[1], kind, actual)

        shared = run_sequence(seq, chains, t, check, settle)

    native, native_ledger = memory_run(hopgate, seq, chains, t)
    reference, reference_ledger = memory_run(importlib.import_module("hopgate.reference"), seq, chains, t)
    assert shared == native == reference
    codes = [c for c in shared if isinstance(c, int)]
    # The sequence reaches every branch it is meant to test.
    assert {OK, REPLAY, BUDGET_EXHAUSTED, STALE, SCOPE_DENIED} <= set(codes), sorted(set(codes))
    assert "OverrunError" in shared

    for chain, _ in chains:
        root = chain.revocation_ids[0]
        for account_id in chain.revocation_ids:
            expected = native_ledger.account(account_id)
            assert reference_ledger.account(account_id) == expected
            want = None if expected is None else tuple(expected)
            assert accounts("native", store_url, root, [account_id]) == [want], account_id.hex()
            assert accounts("reference", store_url, root, [account_id]) == [want], account_id.hex()
