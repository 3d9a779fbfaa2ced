"""Resource limits: the verified-chain cache, the replay-nonce set, the ledger's
accounts and the gate's batch size are bounded and configurable, and each test
drives one of them to its bound (both implementations)."""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

import pytest

import hopgate
from hopgate import Code

from craft import NOW, invocation

KEYS = [hopgate.SigningKey.from_seed(bytes([i + 40]) * 32) for i in range(4)]
ISSUER, A, B = KEYS[0], KEYS[1], KEYS[2]
WINDOW = 300
SKEW = 30


def grant(i: int, budget: int = 100, not_after: int = NOW + 3600) -> Any:
    """A one-link chain issuer -> A; `i` makes it (and its account) distinct."""
    return hopgate.Chain.grant(ISSUER, A.public_key, [("pay/*", "refund")], budget, "usd",
                               NOW - 100, not_after, 2, nonce=i.to_bytes(16, "big"))


def inv(c: Any, cost: int = 1, timestamp: int = NOW, nonce: bytes | None = None) -> bytes:
    n = nonce if nonce is not None else random.randbytes(16)
    return invocation(A, c.tail_signature, "refund", "pay/x", cost, timestamp, n, bytes(32))


def gate(impl: ModuleType, ledger: Any = None, **kw: Any) -> Any:
    return impl.Gate([ISSUER.public_key], skew=SKEW, replay_window=WINDOW, ledger=ledger, **kw)


def allow(g: Any, c: Any, i: bytes, now: int = NOW) -> Code:
    d = g.check(c, i, now=now)
    if d.reservation is not None:
        d.reservation.commit(0)
    return Code(d.code)


# -- the verified-chain cache --------------------------------------------------


@pytest.mark.parametrize("size", [1, 3])
def test_odd_cache_sizes_are_bounds_too(impl: ModuleType, size: int) -> None:
    g = gate(impl, cache_size=size)
    for i in range(20):
        c = grant(100 + i)
        assert allow(g, c, inv(c)) is Code.OK
        assert 1 <= g.cached <= size


def test_cache_holds_at_most_cache_size_chains(impl: ModuleType) -> None:
    g = gate(impl, cache_size=16)
    assert g.cache_size == 16
    high = 0
    for i in range(200):
        c = grant(i)
        assert allow(g, c, inv(c)) is Code.OK
        high = max(high, g.cached)
        assert g.cached <= 16
    # The cache fills to its bound (the native two-generation cache holds between
    # half of it and all of it), and recent chains are hits.
    assert high >= 8


# -- the replay-nonce set --------------------------------------------------------


def test_nonce_set_is_bounded_and_forgets_the_first_to_expire(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_nonces=4)
    assert ledger.max_nonces == 4
    g = gate(impl, ledger)
    c = grant(1)
    sent = [inv(c, timestamp=NOW - 10 + i) for i in range(10)]
    for i in sent:
        assert allow(g, c, i) is Code.OK
        assert ledger.nonces(now=NOW) <= 4
    assert ledger.nonces(now=NOW) == 4
    # Every one of them is refused when replayed: the last 4 are remembered, the
    # first 6 expire before the horizon (the expiry of the last one forgotten).
    for i in sent:
        assert allow(g, c, i) is Code.REPLAY
    # A fresh request dated after the horizon passes; one dated at or before it
    # may have been seen, so it is refused as a replay.
    assert allow(g, c, inv(c, timestamp=NOW)) is Code.OK
    assert allow(g, c, inv(c, timestamp=NOW - 10 + 5)) is Code.REPLAY


def test_nonce_set_at_its_bound_still_refuses_every_replay(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_nonces=8)
    g = gate(impl, ledger)
    c = grant(2, budget=10**6)
    rng = random.Random(7)
    sent: list[bytes] = []
    for step in range(300):
        ts = NOW + rng.randrange(-SKEW, SKEW + 1)
        i = inv(c, timestamp=ts)
        code = allow(g, c, i)
        assert code in (Code.OK, Code.REPLAY)
        if code is Code.OK:
            sent.append(i)
        assert ledger.nonces(now=NOW) <= 8
        if step % 10 == 0 and sent:
            assert allow(g, c, rng.choice(sent)) is Code.REPLAY
    assert len(sent) >= 8
    for i in sent:
        assert allow(g, c, i) is Code.REPLAY


def test_replay_after_the_clock_steps_back(impl: ModuleType) -> None:
    """A nonce pruned at a late `now` cannot be replayed at an earlier `now`."""
    g = gate(impl)
    c = grant(3)
    i = inv(c, timestamp=NOW)
    assert allow(g, c, i, now=NOW) is Code.OK
    # Much later (the nonce expired and is pruned), another request.
    later = NOW + WINDOW + 10
    assert allow(g, c, inv(c, timestamp=later), now=later) is Code.OK
    assert g.ledger.nonces(now=later) == 1
    # The clock steps back: the first invocation is fresh again, and its nonce forgotten.
    assert allow(g, c, i, now=NOW) is Code.REPLAY


def test_nonce_limit_validation(impl: ModuleType) -> None:
    for bad in (0, -1):
        with pytest.raises(hopgate.InputError, match="max_nonces"):
            impl.Ledger(max_nonces=bad)
        with pytest.raises(hopgate.InputError, match="max_accounts"):
            impl.Ledger(max_accounts=bad)
    with pytest.raises(TypeError):
        impl.Ledger(4)  # keyword-only
    assert impl.Ledger().max_nonces == impl.Ledger().max_accounts == 1_000_000


# -- ledger accounts ---------------------------------------------------------------


def test_accounts_are_bounded_and_live_ones_are_kept(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_accounts=3)
    g = gate(impl, ledger)
    chains = [grant(10 + i) for i in range(4)]
    for c in chains[:3]:
        assert allow(g, c, inv(c)) is Code.OK
    assert len(ledger.accounts()) == 3
    # Full of live accounts: a new chain is refused, nothing is opened...
    assert allow(g, chains[3], inv(chains[3])) is Code.BUDGET_EXHAUSTED
    assert len(ledger.accounts()) == 3
    # ...and the chains that hold accounts go on working.
    for c in chains[:3]:
        assert allow(g, c, inv(c)) is Code.OK
    # A budget that needs a new account is refused the same way.
    with pytest.raises(hopgate.BudgetExhaustedError, match="max_accounts"):
        ledger.budget([(bytes(32), 10)]).reserve(1)


def test_expired_accounts_are_forgotten_when_room_is_needed(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_accounts=2)
    g = gate(impl, ledger)
    old = [grant(20 + i, not_after=NOW + 50) for i in range(2)]
    for c in old:
        assert allow(g, c, inv(c, cost=7)) is Code.OK
    held = g.check(old[0], inv(old[0], cost=1), now=NOW).reservation
    assert held is not None
    later = NOW + 100  # both links have expired
    fresh = [grant(30 + i) for i in range(2)]
    # old[0]'s account holds a reservation, so only old[1]'s can go.
    assert allow(g, fresh[0], inv(fresh[0], timestamp=later), now=later) is Code.OK
    assert allow(g, fresh[1], inv(fresh[1], timestamp=later), now=later) is Code.BUDGET_EXHAUSTED
    held.release()
    assert allow(g, fresh[1], inv(fresh[1], timestamp=later), now=later) is Code.OK
    assert len(ledger.accounts()) == 2
    # The clock steps back to when the old links were valid: their forgotten
    # accounts are not opened again (they would be empty: a second cap to spend).
    assert allow(g, old[1], inv(old[1]), now=NOW) is Code.BUDGET_EXHAUSTED


def test_budget_accounts_never_expire(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_accounts=2)
    g = gate(impl, ledger)
    ledger.budget([(b"\x01" * 32, 10)]).reserve(3).commit()
    c = grant(40, not_after=NOW + 50)
    assert allow(g, c, inv(c)) is Code.OK
    later = NOW + 100
    d = grant(41)
    assert allow(g, d, inv(d, timestamp=later), now=later) is Code.OK
    # The gate's expired account made room; the budget's account stays.
    assert ledger.account(b"\x01" * 32) is not None
    assert ledger.account(b"\x01" * 32).spent == 3


# -- batches -----------------------------------------------------------------------


def test_batches_are_bounded_by_max_batch(impl: ModuleType) -> None:
    g = gate(impl, max_batch=4)
    assert g.max_batch == 4
    c = grant(50)
    invs = [inv(c) for _ in range(5)]
    with pytest.raises(hopgate.InputError, match="max_batch"):
        g.check_batch([c] * 5, invs, now=NOW)
    # Refused before anything was decided: no nonce consumed, nothing reserved.
    assert g.ledger.accounts() == {}
    codes, reservations = g.check_batch([c] * 4, invs[:4], now=NOW)
    assert list(codes) == [Code.OK] * 4
    for r in reservations:
        r.release()
    assert allow(g, c, invs[4]) is Code.OK
    with pytest.raises(hopgate.InputError, match="max_batch"):
        gate(impl, max_batch=0)


def test_default_limits(impl: ModuleType) -> None:
    from hopgate import _native

    g = gate(impl)
    assert (g.cache_size, g.max_batch) == (_native.DEFAULT_CACHE_SIZE, _native.DEFAULT_MAX_BATCH)
    ledger = impl.Ledger()
    assert (ledger.max_accounts, ledger.max_nonces) == (
        _native.DEFAULT_MAX_ACCOUNTS, _native.DEFAULT_MAX_NONCES)


# -- found by the differential soak (bench/soak.py) -------------------------------


def test_a_failing_call_keeps_its_exception_when_a_reservation_is_forfeited(impl: ModuleType) -> None:
    """The temporary reservation is collected while InputError is being raised; its
    ResourceWarning used to replace the error with a SystemError (native)."""
    with pytest.warns(ResourceWarning), pytest.raises(hopgate.InputError, match="actual"):
        impl.Ledger().budget([(bytes(32), 10)]).reserve(1).commit(-1)


@pytest.mark.parametrize("kw", [{"skew": 2**63}, {"skew": -1}, {"replay_window": 2**64},
                                {"cache_size": -1}, {"max_batch": "8"}, {"skew": None}])
def test_gate_settings_out_of_range_are_input_errors(impl: ModuleType, kw: dict[str, Any]) -> None:
    with pytest.raises(hopgate.InputError, match=next(iter(kw))):
        impl.Gate([ISSUER.public_key], **kw)


def test_the_largest_settings_are_accepted(impl: ModuleType) -> None:
    g = gate(impl, cache_size=2**64 - 1, max_batch=2**63)
    assert g.cache_size == 2**64 - 1 and g.max_batch == 2**63
    assert impl.Ledger(max_accounts=2**64 - 1).max_accounts == 2**64 - 1


@pytest.mark.parametrize("now", [-1, 2**64, "0", 1.5])
def test_now_out_of_range_is_an_input_error(impl: ModuleType, now: Any) -> None:
    c = grant(60)
    with pytest.raises(hopgate.InputError, match="now"):
        gate(impl).check(c, inv(c), now=now)
    with pytest.raises(hopgate.InputError, match="now"):
        gate(impl).check_batch([c], [inv(c)], now=now)


def test_spent_and_overrun_saturate_at_u64_max(impl: ModuleType) -> None:
    ledger = impl.Ledger()
    b = ledger.budget([(bytes(32), 10)])
    b.reserve(1).commit(1)
    with pytest.raises(hopgate.OverrunError):
        b.reserve(0).commit(2**64 - 1)
    assert ledger.account(bytes(32)) == (10, 2**64 - 1, 0, 2**64 - 1)
    assert b.remaining() == 0
