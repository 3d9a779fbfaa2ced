"""SPEC §6: the gate, every code 12–17 by name, truncation and theft, the cache,
replay protection, and native == reference on random request streams."""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

import blake3
import numpy as np
import pytest

import hopgate
import hopgate.reference as ref
from hopgate import Code

from craft import NOW, invocation

KEYS = [hopgate.SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(8)]
ISSUER, A, B, C, THIEF = KEYS[0], KEYS[1], KEYS[2], KEYS[3], KEYS[7]


def chain3(nonce: bytes = bytes(16), budget: int = 100) -> Any:
    """issuer -> A -> B -> C, budgets 100 -> 60 -> 40 (default)."""
    c = hopgate.Chain.grant(ISSUER, A.public_key, [("pay/*", "refund"), ("files/*", "read")], budget, "usd",
                            NOW - 100, NOW + 3600, 3, nonce=nonce)
    c = c.delegate(A, B.public_key, budget=min(60, budget))
    return c.delegate(B, C.public_key, caps=[("pay/*", "refund")], budget=min(40, budget))


def gate(impl: ModuleType, **kw: Any) -> Any:
    return impl.Gate([ISSUER.public_key], **kw)


def inv(c: Any, holder: Any = C, ability: str = "refund", resource: str = "pay/x", cost: int = 5,
        timestamp: int = NOW, nonce: bytes | None = None) -> bytes:
    n = nonce if nonce is not None else random.randbytes(16)
    return invocation(holder, c.tail_signature, ability, resource, cost, timestamp, n, bytes(32))


def test_allowed_request_reserves_on_every_link(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    d = g.check(c, inv(c, cost=7), now=NOW)
    assert d.code is Code.OK and d.allowed and d and d.reason == "allowed"
    assert d.reservation.amount == 7
    d.reservation.commit(6)
    assert [g.ledger.account(r).spent for r in c.revocation_ids] == [6, 6, 6]
    built = c.invoke(C, "refund", "pay/y", 3, timestamp=NOW)
    assert g.check(bytes(c), built, now=NOW).code is Code.OK


def test_revoked(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    assert g.check(c, inv(c), now=NOW).code is Code.OK  # cached now
    g.revoke(c.revocation_ids[1])
    d = g.check(c, inv(c), now=NOW)
    assert d.code is Code.REVOKED and d.reservation is None and not d
    g2 = gate(impl, revoked=[c.revocation_ids[2]])
    assert g2.check(c, inv(c), now=NOW).code is Code.REVOKED


def test_scope_denied(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    # The last link kept only ("pay/*", "refund"): reading files is not delegated to C.
    assert g.check(c, inv(c, ability="read", resource="files/a"), now=NOW).code is Code.SCOPE_DENIED
    assert g.check(c, inv(c, ability="refund", resource="pay"), now=NOW).code is Code.SCOPE_DENIED


def test_cost_exceeds_grant(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    assert g.check(c, inv(c, cost=41), now=NOW).code is Code.COST_EXCEEDS_GRANT
    assert g.check(c, inv(c, cost=40), now=NOW).code is Code.OK


def test_stale_invocation(impl: ModuleType) -> None:
    g, c = gate(impl, skew=30, replay_window=60), chain3()
    assert g.check(c, inv(c, timestamp=NOW - 31), now=NOW).code is Code.STALE_INVOCATION
    assert g.check(c, inv(c, timestamp=NOW + 31), now=NOW).code is Code.STALE_INVOCATION
    assert g.check(c, inv(c, timestamp=NOW - 30), now=NOW).code is Code.OK
    assert g.check(c, inv(c, timestamp=NOW + 30), now=NOW).code is Code.OK


def test_replay(impl: ModuleType) -> None:
    g, c = gate(impl, skew=30, replay_window=60), chain3()
    request = inv(c, nonce=b"n" * 16)
    assert g.check(c, request, now=NOW).code is Code.OK
    assert g.check(c, request, now=NOW + 10).code is Code.REPLAY
    # Another gate on the same ledger shares the nonce set; one on its own does not.
    assert impl.Gate([ISSUER.public_key], ledger=g.ledger).check(c, request, now=NOW).code is Code.REPLAY
    assert gate(impl).check(c, request, now=NOW).code is Code.OK
    # Once the window has passed the invocation is stale anyway.
    assert g.check(c, request, now=NOW + 61).code is Code.STALE_INVOCATION


def test_denied_request_consumes_no_nonce(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    big = g.check(c, inv(c, cost=40), now=NOW)
    request = inv(c, cost=1, nonce=b"k" * 16)
    assert g.check(c, request, now=NOW).code is Code.BUDGET_EXHAUSTED
    big.reservation.release()
    assert g.check(c, request, now=NOW).code is Code.OK


def test_budget_exhausted_across_sibling_chains(impl: ModuleType) -> None:
    """Two delegations of the same grant: together they cannot spend more than it."""
    grant = hopgate.Chain.grant(ISSUER, A.public_key, [("pay/*", "refund")], 100, "usd", NOW - 100, NOW + 3600, 2)
    left = grant.delegate(A, B.public_key, budget=100)
    right = grant.delegate(A, C.public_key, budget=100)
    g = gate(impl)
    first = g.check(left, inv(left, holder=B, cost=70), now=NOW)
    assert first.code is Code.OK
    assert g.check(right, inv(right, holder=C, cost=31), now=NOW).code is Code.BUDGET_EXHAUSTED
    ok = g.check(right, inv(right, holder=C, cost=30), now=NOW)
    assert ok.code is Code.OK
    first.reservation.commit()
    ok.reservation.commit()
    assert g.ledger.account(grant.revocation_ids[0]).spent == 100


def test_truncation_is_defeated_by_the_invocation(impl: ModuleType) -> None:
    """C holds issuer->A->B->C; someone cuts the last link off to pose as B's chain.
    The invocation must then be signed by B, which C (or a thief) cannot do."""
    g, c = gate(impl), chain3()
    truncated = hopgate.Chain.from_bytes(bytes(c)).links  # parse check only
    assert len(truncated) == 3
    short = c.links[:2]
    data = b"HGC1\x02" + b"".join(
        len(l.body).to_bytes(4, "little") + l.body + l.signature for l in short
    )
    forged = invocation(C, short[1].signature, "refund", "pay/x", 5, NOW, b"t" * 16, bytes(32))
    assert g.check(data, forged, now=NOW).code is Code.BAD_SIGNATURE


def test_stolen_chain_without_the_holder_key(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    assert g.check(c, inv(c, holder=THIEF), now=NOW).code is Code.BAD_SIGNATURE


def test_invocation_bound_to_another_chain(impl: ModuleType) -> None:
    g, c, other = gate(impl), chain3(), chain3(nonce=b"o" * 16)
    wrong_tail = invocation(C, other.tail_signature, "refund", "pay/x", 5, NOW, b"w" * 16, bytes(32))
    assert g.check(c, wrong_tail, now=NOW).code is Code.BROKEN_LINK


def test_malformed_and_untrusted(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    request = inv(c)
    assert g.check(c, request[:-1], now=NOW).code is Code.MALFORMED
    assert g.check(bytes(c)[:-1], request, now=NOW).code is Code.MALFORMED
    assert g.check(c, request + b"\0", now=NOW).code is Code.MALFORMED
    assert impl.Gate([A.public_key]).check(c, request, now=NOW).code is Code.UNTRUSTED_ISSUER


def test_precedence_of_invocation_checks(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    # scope before cost before staleness
    assert g.check(c, inv(c, resource="files/a", cost=10**6, timestamp=0), now=NOW).code is Code.SCOPE_DENIED
    assert g.check(c, inv(c, cost=10**6, timestamp=0), now=NOW).code is Code.COST_EXCEEDS_GRANT
    # chain validity before invocation checks
    assert g.check(c, inv(c, resource="files/a"), now=NOW + 3600).code is Code.EXPIRED
    # staleness before replay
    request = inv(c, nonce=b"p" * 16)
    assert g.check(c, request, now=NOW).code is Code.OK
    assert g.check(c, request, now=NOW + 31).code is Code.STALE_INVOCATION


def test_cache_rechecks_time_session_and_revocation(impl: ModuleType) -> None:
    sid = b"s" * 16
    c = hopgate.Chain.grant(ISSUER, A.public_key, [("*", "*")], 10, "u", NOW - 10, NOW + 10, 0, session_id=sid)
    g = gate(impl, session=sid)
    assert g.check(c, inv(c, holder=A, cost=1), now=NOW).code is Code.OK
    assert g.cached == 1
    assert g.check(c, inv(c, holder=A, cost=1, timestamp=NOW + 10), now=NOW + 10).code is Code.EXPIRED
    assert gate(impl, session=b"t" * 16, ledger=g.ledger).check(c, inv(c, holder=A), now=NOW).code is Code.SESSION_MISMATCH
    g.revoke(c.revocation_ids[0])
    assert g.check(c, inv(c, holder=A, cost=1), now=NOW).code is Code.REVOKED
    assert g.cached == 1


def test_tampered_chains_are_not_cached(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    bad = bytearray(bytes(c))
    bad[-1] ^= 1
    assert g.check(bytes(bad), inv(c), now=NOW).code is Code.BAD_SIGNATURE
    assert g.cached == 0
    disabled = gate(impl, cache_size=0)
    assert disabled.check(c, inv(c), now=NOW).code is Code.OK and disabled.cached == 0


def test_cache_is_bounded(impl: ModuleType) -> None:
    g = gate(impl, cache_size=8)
    for i in range(40):
        c = hopgate.Chain.grant(ISSUER, A.public_key, [("*", "*")], 10, "u", NOW - 10, NOW + 10, 0,
                                nonce=i.to_bytes(16, "little"))
        assert g.check(c, inv(c, holder=A, cost=0), now=NOW).code is Code.OK
        assert g.cached <= 8


def test_check_batch(impl: ModuleType) -> None:
    g, c = gate(impl), chain3()
    same = inv(c, nonce=b"d" * 16)
    chains = [c, bytes(c), c, c]
    invocations = [inv(c, cost=10), same, same, inv(c, cost=10**6)]
    codes, reservations = g.check_batch(chains, invocations, now=NOW)
    assert codes.dtype == np.uint8
    assert [Code(x) for x in codes] == [Code.OK, Code.OK, Code.REPLAY, Code.COST_EXCEEDS_GRANT]
    assert [r is not None for r in reservations] == [True, True, False, False]
    assert sum(r.amount for r in reservations if r is not None) == 15
    for r in reservations:
        if r is not None:
            r.release()
    with pytest.raises(hopgate.InputError):
        g.check_batch([c], [], now=NOW)


def test_configuration_errors(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        impl.Gate([ISSUER.public_key], skew=30, replay_window=59)
    with pytest.raises(ValueError):
        impl.Gate([ISSUER.public_key], skew=-1)
    with pytest.raises(hopgate.InputError):
        impl.Gate([b"short"])
    with pytest.raises(hopgate.InputError):
        impl.Gate([ISSUER.public_key], audit=object())
    impl.Gate([ISSUER.public_key], skew=30, replay_window=60)


def test_native_equals_reference_on_random_request_streams() -> None:
    """The same stream of requests (valid, tampered, over budget, stale, replayed,
    revoked) through a native and a reference gate: same codes, same ledger."""
    rnd = random.Random(11)
    chains = [chain3(nonce=i.to_bytes(16, "little"), budget=rnd.choice([20, 50, 100])) for i in range(6)]
    grant = hopgate.Chain.grant(ISSUER, A.public_key, [("pay/*", "refund")], 50, "usd", NOW - 100, NOW + 3600, 2)
    chains += [grant.delegate(A, B.public_key, budget=50), grant.delegate(A, C.public_key, budget=40)]
    holders = {c.holder: k for c in chains for k in KEYS if k.public_key == c.holder}
    gates = {name: impl.Gate([ISSUER.public_key], skew=30, replay_window=60) for name, impl in
             (("native", hopgate), ("reference", ref))}
    seen: list[bytes] = []
    stream = []
    for step in range(400):
        c = rnd.choice(chains)
        now = NOW + step // 4
        kind = rnd.randrange(10)
        if kind == 0 and seen:
            request = rnd.choice(seen)  # a replay (or a stale one)
        else:
            holder = holders[c.holder] if kind != 1 else THIEF
            request = inv(c, holder=holder, cost=rnd.choice([0, 1, 5, 15, 41]),
                          timestamp=now + rnd.choice([0, 0, 0, 29, -31]),
                          resource=rnd.choice(["pay/x", "pay/y", "files/a"]))
            seen.append(request)
        data = bytes(c)
        if kind == 2:
            flipped = bytearray(data)
            flipped[rnd.randrange(len(flipped))] ^= 1 << rnd.randrange(8)
            data = bytes(flipped)
        stream.append((data, request, now, rnd.random()))
    results: dict[str, list[int]] = {}
    for name, g in gates.items():
        codes = []
        for i, (data, request, now, settle) in enumerate(stream):
            if i == 200:
                g.revoke(chains[0].revocation_ids[1])
            d = g.check(data, request, now=now)
            codes.append(int(d.code))
            if d.reservation is not None:
                if settle < 0.6:
                    d.reservation.commit(d.reservation.amount // 2)
                else:
                    d.reservation.release()
        results[name] = codes
    assert results["native"] == results["reference"]
    assert len(set(results["native"])) >= 7
    native_accounts = gates["native"].ledger.accounts()
    assert native_accounts == gates["reference"].ledger.accounts()
    assert native_accounts and all(a.spent <= a.cap for a in native_accounts.values())
