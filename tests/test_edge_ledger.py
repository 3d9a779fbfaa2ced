"""What the server binds at the gate, and the ledger's per-root state (both implementations).

A gate may be given the request's body (``payload``) and what the route requires
(``require=(ability, resource, price)``); ``precheck`` runs the steps before the
replay check and consumes nothing. The ledger keeps replay nonces per root (link 0's
account) for the longest window of its gates, and bounds the accounts and nonces of
each root. Every named attack is refused with an exact code, and a random sequence of
requests decides the same on the native core, the reference and a brute-force
statement of the rules.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hopgate
import hopgate.reference as ref
from hopgate import BudgetExhaustedError, Code

from craft import NOW, invocation

KEYS = [hopgate.SigningKey.from_seed(bytes([i + 70]) * 32) for i in range(4)]
ISSUER, A, B, C = KEYS
U64_MAX = 2**64 - 1
ROUTE = ("refund", "pay/x")


def grant(i: int, budget: int = 100, not_after: int = NOW + 3600, max_depth: int = 3) -> Any:
    """A one-link chain issuer -> A; `i` makes it, its account and its root distinct."""
    return hopgate.Chain.grant(ISSUER, A.public_key, [("pay/*", "refund")], budget, "usd", NOW - 100,
                               not_after, max_depth, nonce=i.to_bytes(16, "big"))


def child(parent: Any, j: int, budget: Optional[int] = None, not_after: Optional[int] = None) -> Any:
    """`parent` (held by A) delegated to B: one more account under the same root."""
    return parent.delegate(A, B.public_key, budget=budget, not_after=not_after, nonce=(1000 + j).to_bytes(16, "big"))


def holder(c: Any) -> Any:
    return next(k for k in KEYS if k.public_key == c.holder)


def inv(c: Any, cost: int = 1, ts: int = NOW, nonce: int | bytes = 0, ability: str = "refund",
        resource: str = "pay/x", body: Optional[bytes] = None, signer: Any = None) -> bytes:
    """An invocation on `c` signed by its holder; `body` sets the payload digest to BLAKE3(body)."""
    n = nonce if isinstance(nonce, bytes) else nonce.to_bytes(16, "big")
    digest = bytes(32) if body is None else blake3.blake3(body).digest()
    return invocation(signer or holder(c), c.tail_signature, ability, resource, cost, ts, n, digest)


def gate(impl: ModuleType, ledger: Any = None, skew: int = 30, window: int = 300, **kw: Any) -> Any:
    return impl.Gate([ISSUER.public_key], skew=skew, replay_window=window, ledger=ledger, **kw)


def decide(g: Any, c: Any, i: bytes, now: int = NOW, actual: Optional[int] = None, **kw: Any) -> Code:
    """Check one request and settle an allowed one: commit `actual` (default: all of it)."""
    d = g.check(c, i, now=now, **kw)
    if d.reservation is not None:
        d.reservation.commit(actual)
    else:
        assert d.code is not Code.OK
    return Code(d.code)


def root_of(c: Any) -> bytes:
    rid: bytes = c.revocation_ids[0]
    return rid


# -- the named attacks -------------------------------------------------------------


def test_attack_cost_zero_on_spent_budget(impl: ModuleType) -> None:
    """A holder signs cost 0 so that the ledger reserves nothing: with the server's
    price the gate refuses it, however many arrive at once."""
    ledger = impl.Ledger()
    g = gate(impl, ledger)
    c = grant(1, budget=10)
    price = (*ROUTE, 1)
    for n in range(10):
        assert decide(g, c, inv(c, cost=1, nonce=n), require=price) is Code.OK
    assert ledger.account(root_of(c)).spent == 10
    # Without a price the chain's empty budget still passes a cost-0 invocation.
    assert decide(g, c, inv(c, cost=0, nonce=100), actual=0) is Code.OK
    assert decide(g, c, inv(c, cost=0, nonce=101), require=price) is Code.COST_BELOW_PRICE
    assert decide(g, c, inv(c, cost=1, nonce=102), require=price) is Code.BUDGET_EXHAUSTED

    # 50 concurrent requests, a server charging its price for each allowed one:
    # on the spent budget all of them signing cost 0, then on a fresh budget of
    # 10 half of them. Spent never passes the cap.
    def concurrently(c: Any, invocations: list[bytes]) -> list[Code]:
        barrier = threading.Barrier(len(invocations))
        codes: list[Code] = [Code.MALFORMED] * len(invocations)

        def one(k: int) -> None:
            barrier.wait()
            d = g.check(c, invocations[k], now=NOW, require=price)
            codes[k] = Code(d.code)
            if d.reservation is not None:
                d.reservation.commit(1)

        threads = [threading.Thread(target=one, args=(k,)) for k in range(len(invocations))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return codes

    codes = concurrently(c, [inv(c, cost=0, nonce=300 + k) for k in range(50)])
    assert codes == [Code.COST_BELOW_PRICE] * 50
    assert ledger.account(root_of(c)) == hopgate.Account(10, 10, 0, 0)
    fresh = grant(2, budget=10)
    codes = concurrently(fresh, [inv(fresh, cost=k % 2, nonce=200 + k) for k in range(50)])
    assert codes[0::2] == [Code.COST_BELOW_PRICE] * 25
    assert Counter(codes[1::2]) == {Code.OK: 10, Code.BUDGET_EXHAUSTED: 15}
    assert ledger.account(root_of(fresh)) == hopgate.Account(10, 10, 0, 0)


def test_attack_pruned_on_path_account_reset(impl: ModuleType) -> None:
    """An account whose link expired at the latest `now` is still valid at an earlier
    one; when a request through it needs room, the account must not be forgotten
    (and reopened empty) while that very request is decided."""
    ledger = impl.Ledger(max_accounts=3, max_accounts_per_root=3)
    g = gate(impl, ledger)
    x = grant(10, budget=2, not_after=NOW + 50)
    x2 = child(x, 1)  # through x's account, and one new one
    z = grant(11, not_after=NOW + 50)
    y = grant(12)
    later = NOW + 100
    codes = [
        decide(g, x, inv(x, nonce=1)),  # x spent 1 of 2
        decide(g, z, inv(z, nonce=2)),
        decide(g, y, inv(y, nonce=3, ts=later), now=later),  # x and z expire at the latest now
        decide(g, x2, inv(x2, nonce=4)),  # the clock stepped back; room comes from z alone
        decide(g, x, inv(x, nonce=5)),  # x reset to 0 would allow this: 3 spent of a cap of 2
    ]
    assert codes == [Code.OK, Code.OK, Code.OK, Code.OK, Code.BUDGET_EXHAUSTED]
    assert ledger.account(root_of(x)) == hopgate.Account(2, 2, 0, 0)
    assert ledger.account(root_of(z)) is None
    assert len(ledger.accounts()) == 3


def test_on_path_account_kept_when_the_root_quota_asks_for_room(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_accounts_per_root=1)
    g = gate(impl, ledger)
    x = grant(20, budget=5, not_after=NOW + 50)
    y = grant(21)
    assert decide(g, x, inv(x, nonce=1)) is Code.OK
    later = NOW + 100
    assert decide(g, y, inv(y, nonce=2, ts=later), now=later) is Code.OK
    x2 = child(x, 2)
    assert decide(g, x2, inv(x2, nonce=3)) is Code.BUDGET_EXHAUSTED
    with pytest.raises(BudgetExhaustedError, match="max_accounts_per_root"):
        ledger.budget(x2).reserve(1)
    assert ledger.account(root_of(x)) == hopgate.Account(5, 1, 0, 0)
    assert ledger.account(x2.revocation_ids[1]) is None


def test_attack_replay_across_gates_with_different_windows(impl: ModuleType) -> None:
    """A nonce consumed at a short-window gate is still remembered for a long-window
    gate on the same ledger, which finds the invocation fresh for much longer."""
    ledger = impl.Ledger()
    assert ledger.replay_window == 0
    short = gate(impl, ledger, skew=5, window=10)
    assert ledger.replay_window == 10
    c = grant(30)
    request = inv(c, nonce=b"n" * 16)
    assert decide(short, c, request) is Code.OK
    # A longer-window gate joins after the nonce was consumed: every remembered
    # nonce now lives as long as its window.
    long = gate(impl, ledger, skew=300, window=600)
    assert ledger.replay_window == 600
    gate(impl, ledger, skew=1, window=2)  # a shorter one never lowers it
    assert ledger.replay_window == 600
    for now in (NOW + 20, NOW + 299):
        assert decide(long, c, request, now=now) is Code.REPLAY
        assert decide(short, c, request, now=now) is Code.STALE_INVOCATION
    assert ledger.nonces(now=NOW + 600) == 1
    assert ledger.nonces(now=NOW + 601) == 0

    # Forgotten before the long gate joined: the root's horizon still refuses it.
    ledger2 = impl.Ledger()
    short2 = gate(impl, ledger2, skew=5, window=10)
    d = grant(31)
    early, other = inv(d, nonce=1), inv(d, nonce=2, ts=NOW + 20)
    assert decide(short2, d, early) is Code.OK
    assert decide(short2, d, other, now=NOW + 20) is Code.OK  # prunes `early`
    assert ledger2.nonces(now=NOW + 20) == 1
    long2 = gate(impl, ledger2, skew=300, window=600)
    assert decide(long2, d, early, now=NOW + 20) is Code.REPLAY
    assert decide(long2, d, inv(d, nonce=3, ts=NOW + 1), now=NOW + 20) is Code.OK


def test_attack_nonce_flood_other_root_unaffected(impl: ModuleType) -> None:
    """One root's flood of requests pushes out its own nonces, never another root's."""
    ledger = impl.Ledger(max_nonces=8)
    g = gate(impl, ledger, skew=60, window=120)
    victim, attacker = grant(40), grant(41)
    # The victim's nonces are older than all the flood's: a set that forgot the
    # earliest first would drop them, and refuse the victim's older requests.
    victim_requests = [inv(victim, nonce=n, ts=NOW - 55) for n in range(3)]
    flood = [inv(attacker, nonce=1000 + n, ts=NOW - 50 + n) for n in range(100)]
    for r in victim_requests:
        assert decide(g, victim, r) is Code.OK
    for r in flood:
        assert decide(g, attacker, r, actual=0) is Code.OK
    assert ledger.nonces(now=NOW) == 8
    for r in victim_requests:
        assert decide(g, victim, r) is Code.REPLAY  # still remembered
    # Nothing was forgotten for the victim, so its older fresh requests still pass;
    # the attacker's own horizon refuses what it dates that far back.
    assert decide(g, victim, inv(victim, nonce=50, ts=NOW - 58)) is Code.OK
    assert decide(g, attacker, inv(attacker, nonce=5000, ts=NOW - 58)) is Code.REPLAY
    for r in flood:
        assert decide(g, attacker, r) is Code.REPLAY

    # A per-root quota confines a root to its share even when the ledger has room.
    ledger2 = impl.Ledger(max_nonces=100, max_nonces_per_root=4)
    g2 = gate(impl, ledger2, skew=60, window=120)
    for r in victim_requests:
        assert decide(g2, victim, r) is Code.OK
    for r in flood[:50]:
        assert decide(g2, attacker, r, actual=0) is Code.OK
    assert ledger2.nonces(now=NOW) == 3 + 4
    for r in victim_requests:
        assert decide(g2, victim, r) is Code.REPLAY
    assert decide(g2, victim, inv(victim, nonce=51, ts=NOW - 58)) is Code.OK
    assert decide(g2, attacker, inv(attacker, nonce=5001, ts=NOW - 58)) is Code.REPLAY


def test_attack_account_flood_other_root_unaffected(impl: ModuleType) -> None:
    """A grant's holder delegating without end opens accounts only up to its root's
    quota; every other grant can still open its own."""
    ledger = impl.Ledger(max_accounts=20, max_accounts_per_root=2)
    g = gate(impl, ledger)
    attacker = grant(50, budget=10**6)
    codes = [decide(g, child(attacker, j), inv(child(attacker, j), nonce=j), actual=0) for j in range(30)]
    assert codes == [Code.OK] + [Code.BUDGET_EXHAUSTED] * 29
    assert len(ledger.accounts()) == 2
    with pytest.raises(BudgetExhaustedError, match="max_accounts_per_root = 2"):
        ledger.budget(child(attacker, 99)).reserve(1)
    victims = [grant(60 + v) for v in range(9)]
    for v, c in enumerate(victims):
        deeper = child(c, v)
        assert decide(g, deeper, inv(deeper, nonce=100 + v)) is Code.OK
    assert len(ledger.accounts()) == 20
    # The ledger is full now, and only a root's own quota was ever in its way.
    newcomer = grant(70)
    assert decide(g, newcomer, inv(newcomer, nonce=200)) is Code.BUDGET_EXHAUSTED
    with pytest.raises(BudgetExhaustedError, match="max_accounts = 20"):
        ledger.budget(newcomer).reserve(1)


# -- check order of the new steps ----------------------------------------------------


def test_payload_must_match_the_signed_digest(impl: ModuleType) -> None:
    g = gate(impl)
    c = grant(80)
    body = b'{"amount": 5}'
    signed = inv(c, nonce=1, body=body)
    assert g.check(c, signed, now=NOW, payload=b'{"amount": 500}').code is Code.BAD_SIGNATURE
    assert g.check(c, signed, now=NOW, payload=b"").code is Code.BAD_SIGNATURE
    # The refusal consumed nothing; the body it signed goes through, in any buffer.
    assert g.ledger.nonces(now=NOW) == 0
    for n, given_body in enumerate((body, bytearray(body), memoryview(body), np.frombuffer(body, np.uint8))):
        assert decide(g, c, inv(c, nonce=10 + n, body=body), payload=given_body) is Code.OK
    # payload=None leaves the digest unchecked; an empty body has a digest too.
    assert decide(g, c, inv(c, nonce=20, body=b"x")) is Code.OK
    assert decide(g, c, inv(c, nonce=21, body=b""), payload=b"") is Code.OK
    assert decide(g, c, inv(c, nonce=22), payload=b"") is Code.BAD_SIGNATURE  # digest of zeros


def test_payload_is_judged_after_every_signature_and_before_links(impl: ModuleType) -> None:
    g = gate(impl)
    c = grant(81)
    other = grant(82)
    body = b"body"
    wrong = b"other body"
    # Before it: parse, trust, signatures.
    assert g.check(c, inv(c, body=body)[:-1], now=NOW, payload=wrong).code is Code.MALFORMED
    untrusted = hopgate.Chain.grant(A, A.public_key, [("pay/*", "refund")], 10, "usd", NOW - 100, NOW + 100, 1)
    assert g.check(untrusted, inv(untrusted, body=body), now=NOW, payload=wrong).code is Code.UNTRUSTED_ISSUER
    assert g.check(c, inv(c, body=body, signer=C), now=NOW, payload=body).code is Code.BAD_SIGNATURE
    # After it: the tail link, the link rules, and everything of (f).
    foreign_tail = invocation(A, other.tail_signature, "refund", "pay/x", 1, NOW, bytes(16),
                              blake3.blake3(body).digest())
    assert g.check(c, foreign_tail, now=NOW, payload=wrong).code is Code.BAD_SIGNATURE
    assert g.check(c, foreign_tail, now=NOW, payload=body).code is Code.BROKEN_LINK
    expired = grant(83, not_after=NOW + 10)
    assert g.check(expired, inv(expired, body=body), now=NOW + 20, payload=wrong).code is Code.BAD_SIGNATURE
    assert g.check(expired, inv(expired, body=body), now=NOW + 20, payload=body).code is Code.EXPIRED
    g.revoke(root_of(other))
    assert g.check(other, inv(other, body=body), now=NOW, payload=wrong).code is Code.BAD_SIGNATURE
    assert g.check(other, inv(other, body=body), now=NOW, payload=body).code is Code.REVOKED
    stale = inv(c, body=body, ts=NOW - 31, cost=10**6, resource="files/a")
    assert g.check(c, stale, now=NOW, payload=wrong).code is Code.BAD_SIGNATURE
    assert g.check(c, stale, now=NOW, payload=body).code is Code.SCOPE_DENIED


def test_require_names_the_exact_ability_and_resource(impl: ModuleType) -> None:
    g = gate(impl)
    c = grant(90)  # grants ("pay/*", "refund")
    request = inv(c, nonce=1)  # refund on pay/x
    for require in (("refund", "pay/y", 0), ("refund", "pay/*", 0), ("Refund", "pay/x", 0), ("*", "pay/x", 0),
                    ("pay/x", "refund", 0), ("refund", "pay/x/", 0), ("", "", 0), ("refund\x00", "pay/x", 0),
                    ("refund", "pay/x" * 60, 0)):
        assert g.check(c, request, now=NOW, require=require).code is Code.SCOPE_DENIED, require
    # Named exactly but not granted: still SCOPE_DENIED, by the last link's scope.
    assert g.check(c, inv(c, nonce=2, ability="read", resource="files/a"), now=NOW,
                   require=("read", "files/a", 0)).code is Code.SCOPE_DENIED
    assert g.ledger.nonces(now=NOW) == 0
    assert decide(g, c, request, require=("refund", "pay/x", 0)) is Code.OK


def test_require_is_judged_after_the_link_rules_and_before_cost(impl: ModuleType) -> None:
    g = gate(impl, skew=30, window=60)
    c = grant(91, budget=40)
    mismatch = ("refund", "pay/other", 1000)
    expired = grant(92, not_after=NOW + 10)
    assert g.check(expired, inv(expired), now=NOW + 20, require=mismatch).code is Code.EXPIRED
    assert g.check(c, inv(c), now=NOW - 200, require=mismatch).code is Code.NOT_YET_VALID
    revoked = grant(93)
    g.revoke(root_of(revoked))
    assert g.check(revoked, inv(revoked), now=NOW, require=mismatch).code is Code.REVOKED
    # Before COST_EXCEEDS_GRANT, COST_BELOW_PRICE and STALE_INVOCATION.
    assert g.check(c, inv(c, cost=41, ts=NOW - 31), now=NOW, require=mismatch).code is Code.SCOPE_DENIED


def test_price_is_judged_after_the_grant_and_before_staleness(impl: ModuleType) -> None:
    g = gate(impl, skew=30, window=60)
    c = grant(95, budget=40)
    assert g.check(c, inv(c, cost=41), now=NOW, require=(*ROUTE, 50)).code is Code.COST_EXCEEDS_GRANT
    assert g.check(c, inv(c, cost=4, ts=NOW - 31), now=NOW, require=(*ROUTE, 5)).code is Code.COST_BELOW_PRICE
    assert g.check(c, inv(c, cost=4, ts=NOW - 31), now=NOW, require=(*ROUTE, 4)).code is Code.STALE_INVOCATION
    assert g.check(c, inv(c, cost=5), now=NOW, require=(*ROUTE, U64_MAX)).code is Code.COST_BELOW_PRICE
    # Before the replay check: a consumed nonce signed below the price is refused for its price.
    spent = inv(c, cost=5, nonce=b"r" * 16)
    assert decide(g, c, spent, require=(*ROUTE, 5)) is Code.OK
    assert g.check(c, spent, now=NOW, require=(*ROUTE, 6)).code is Code.COST_BELOW_PRICE
    assert g.check(c, spent, now=NOW, require=(*ROUTE, 5)).code is Code.REPLAY
    assert g.check(c, spent, now=NOW).code is Code.REPLAY
    # A refused price consumes nothing: the same invocation passes at its price.
    cheap = inv(c, cost=3, nonce=b"s" * 16)
    assert g.check(c, cheap, now=NOW, require=(*ROUTE, 4)).code is Code.COST_BELOW_PRICE
    assert decide(g, c, cheap, require=(*ROUTE, 3)) is Code.OK
    assert decide(g, c, inv(c, cost=0, nonce=b"t" * 16), require=(*ROUTE, 0)) is Code.OK
    assert g.ledger.account(root_of(c)) == hopgate.Account(40, 8, 0, 0)


def test_check_batch_applies_each_entry_to_its_own_request(impl: ModuleType) -> None:
    g = gate(impl)
    c = grant(97)
    body = b"payload"
    invocations = [inv(c, nonce=n, cost=2, body=body) for n in range(5)]
    payloads = [None, body, b"tampered", bytearray(body), None]
    requires = [(*ROUTE, 3), None, None, (*ROUTE, 2), ("refund", "pay/y", 0)]
    codes, reservations = g.check_batch([c] * 5, invocations, now=NOW, payloads=payloads, requires=requires)
    assert [Code(x) for x in codes] == [Code.COST_BELOW_PRICE, Code.OK, Code.BAD_SIGNATURE, Code.OK,
                                        Code.SCOPE_DENIED]
    assert [r is not None for r in reservations] == [False, True, False, True, False]
    for r in reservations:
        if r is not None:
            r.release()
    codes, reservations = g.check_batch([c], [invocations[0]], now=NOW, payloads=None, requires=[None])
    assert [Code(x) for x in codes] == [Code.OK]
    reservations[0].release()


# -- precheck --------------------------------------------------------------------------


def test_precheck_gives_the_code_check_would_give_before_the_budget(impl: ModuleType) -> None:
    g = gate(impl, skew=30, window=60)
    c = grant(100, budget=40)
    assert g.precheck(c, inv(c), now=NOW) is Code.OK
    assert g.precheck(c, inv(c, cost=41), now=NOW) is Code.COST_EXCEEDS_GRANT
    assert g.precheck(c, inv(c, ts=NOW + 31), now=NOW) is Code.STALE_INVOCATION
    assert g.precheck(c, inv(c, cost=1), now=NOW, require=(*ROUTE, 2)) is Code.COST_BELOW_PRICE
    assert g.precheck(c, inv(c), now=NOW, require=("refund", "pay/y", 0)) is Code.SCOPE_DENIED
    assert g.precheck(c, inv(c, signer=C), now=NOW) is Code.BAD_SIGNATURE
    assert g.precheck(bytes(c)[:-1], inv(c), now=NOW) is Code.MALFORMED
    # The payload is not bound and the budget is not judged; a replay is (read only).
    assert g.precheck(c, inv(c, body=b"anything"), now=NOW) is Code.OK
    used = inv(c, cost=40, nonce=b"u" * 16)
    assert decide(g, c, used) is Code.OK
    assert g.precheck(c, used, now=NOW) is Code.REPLAY
    assert g.precheck(c, used, now=NOW + 61) is Code.STALE_INVOCATION
    assert g.precheck(c, inv(c, cost=1), now=NOW) is Code.OK
    assert g.check(c, inv(c, cost=1, nonce=b"v" * 16), now=NOW).code is Code.BUDGET_EXHAUSTED


def gate_records(log: Any) -> int:
    """How many decisions the log records (it may hold other records too)."""
    count = 0
    for record in log.read():
        try:
            hopgate.GateRecord.from_bytes(record)
        except ValueError:
            continue
        count += 1
    return count


def test_precheck_consumes_reserves_and_records_nothing(impl: ModuleType, tmp_path: Path) -> None:
    log = impl.AuditLog(tmp_path / "audit.log", key=bytes(range(32)))
    ledger = impl.Ledger(max_accounts=2, max_accounts_per_root=2)
    g = gate(impl, ledger, audit=log)
    c = grant(110, not_after=NOW + 50)
    request = inv(c, cost=7, nonce=b"p" * 16)
    for _ in range(3):
        assert g.precheck(c, request, now=NOW, require=(*ROUTE, 7)) is Code.OK
    assert ledger.nonces(now=NOW) == 0 and ledger.accounts() == {} and gate_records(log) == 0
    d = g.check(c, request, now=NOW, require=(*ROUTE, 7))
    assert d.code is Code.OK and d.reservation.amount == 7 and gate_records(log) == 1
    d.reservation.commit()
    # A precheck at a later `now` is not a time the ledger saw: c's expired account
    # is not forgotten to make room at an earlier one.
    later = NOW + 100
    y = grant(111)
    assert g.precheck(y, inv(y, ts=later), now=later) is Code.OK
    x = grant(112)
    assert decide(g, x, inv(x, nonce=1)) is Code.OK
    z = grant(113)
    assert decide(g, z, inv(z, nonce=2)) is Code.BUDGET_EXHAUSTED
    assert ledger.account(root_of(c)) == hopgate.Account(100, 7, 0, 0)
    assert gate_records(log) == 3
    log.close()


# -- per-root nonces ---------------------------------------------------------------------


def test_one_nonce_under_two_roots_is_two_requests(impl: ModuleType) -> None:
    g = gate(impl)
    first, second = grant(120), grant(121)
    sibling = child(first, 1)
    nonce = b"same nonce bytes"
    assert decide(g, first, inv(first, nonce=nonce)) is Code.OK
    assert decide(g, second, inv(second, nonce=nonce)) is Code.OK
    assert g.ledger.nonces(now=NOW) == 2
    # A chain under the same root is the same root: its nonce is taken.
    assert decide(g, sibling, inv(sibling, nonce=nonce, cost=2)) is Code.REPLAY
    assert decide(g, second, inv(second, nonce=nonce, cost=3)) is Code.REPLAY


def test_an_emptied_root_keeps_its_horizon_until_it_is_stale(impl: ModuleType) -> None:
    # r1's horizon is raised by eviction, not by expiry: while it is not past the
    # retention, it stays r1's own, and other roots are judged by theirs.
    ledger = impl.Ledger(max_nonces=10, max_nonces_per_root=1)
    g = gate(impl, ledger, skew=30, window=60)
    r1, r2 = grant(130), grant(131)
    assert decide(g, r1, inv(r1, nonce=1, ts=NOW)) is Code.OK
    assert decide(g, r1, inv(r1, nonce=2, ts=NOW + 10)) is Code.OK  # forgets nonce 1: horizon NOW
    assert decide(g, r1, inv(r1, nonce=3, ts=NOW - 5)) is Code.REPLAY
    assert decide(g, r2, inv(r2, nonce=4, ts=NOW - 5)) is Code.OK
    assert decide(g, r2, inv(r2, nonce=4, ts=NOW - 5)) is Code.REPLAY


def test_pruning_folds_a_stale_horizon_into_the_global_one(impl: ModuleType) -> None:
    g = gate(impl, skew=30, window=60)
    r1, r2 = grant(130), grant(131)
    assert decide(g, r1, inv(r1, nonce=1)) is Code.OK
    later = NOW + 61  # r1's nonce expired at NOW + 60
    assert g.ledger.nonces(now=later) == 0
    # r1 holds nothing now and its horizon (NOW) is stale at NOW + 61: it is folded
    # into the ledger's global horizon, so memory does not grow with every root.
    # The clock then steps back by more than the retention: the forgotten nonce stays
    # refused, and so does anything of any root dated at or before the horizon; a
    # replay is never allowed, and what is dated after it is judged as usual.
    back = NOW + 5
    assert decide(g, r1, inv(r1, nonce=1), now=back) is Code.REPLAY
    assert decide(g, r1, inv(r1, nonce=2), now=back) is Code.REPLAY
    assert decide(g, r2, inv(r2, nonce=4), now=back) is Code.REPLAY
    assert decide(g, r1, inv(r1, nonce=3, ts=NOW + 1), now=back) is Code.OK
    assert decide(g, r2, inv(r2, nonce=5, ts=NOW + 1), now=back) is Code.OK


def _by_root(*chains: Any) -> list[Any]:
    return sorted(chains, key=root_of)


def test_a_full_ledger_takes_from_the_root_holding_most(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_nonces=4)
    g = gate(impl, ledger)
    small, big = grant(140), grant(141)
    third = grant(142)
    # `small` holds the earliest nonce, but `big` holds the most.
    assert decide(g, small, inv(small, nonce=1, ts=NOW - 20)) is Code.OK
    for n in range(3):
        assert decide(g, big, inv(big, nonce=10 + n, ts=NOW - 5 + n)) is Code.OK
    assert decide(g, third, inv(third, nonce=20)) is Code.OK  # big forgets its NOW - 5
    assert ledger.nonces(now=NOW) == 4
    assert decide(g, big, inv(big, nonce=30, ts=NOW - 5)) is Code.REPLAY
    assert decide(g, small, inv(small, nonce=31, ts=NOW - 20), actual=0) is Code.OK


def test_ties_between_roots_go_to_the_smallest_root_id(impl: ModuleType) -> None:
    for pair in ((150, 151), (152, 153), (154, 155)):
        ledger = impl.Ledger(max_nonces=4)
        g = gate(impl, ledger)
        low, high = _by_root(grant(pair[0]), grant(pair[1]))
        for c in (high, low):
            for n, ts in enumerate((NOW - 10, NOW - 9)):
                assert decide(g, c, inv(c, nonce=n, ts=ts)) is Code.OK
        third = grant(160)
        assert decide(g, third, inv(third, nonce=1)) is Code.OK  # low forgets its NOW - 10
        assert decide(g, low, inv(low, nonce=2, ts=NOW - 10)) is Code.REPLAY
        assert decide(g, high, inv(high, nonce=2, ts=NOW - 10)) is Code.OK


def test_a_root_at_its_quota_forgets_its_earliest(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_nonces=100, max_nonces_per_root=2)
    assert ledger.max_nonces_per_root == 2
    g = gate(impl, ledger)
    c, other = grant(170), grant(171)
    assert decide(g, other, inv(other, nonce=1, ts=NOW - 25)) is Code.OK
    for n, ts in enumerate((NOW - 2, NOW - 3, NOW - 1)):  # recorded out of order
        assert decide(g, c, inv(c, nonce=10 + n, ts=ts)) is Code.OK
    assert ledger.nonces(now=NOW) == 3
    # NOW - 3 was the earliest, not the first recorded: it went, and the root's
    # horizon with it; NOW - 2 is still remembered.
    assert decide(g, c, inv(c, nonce=20, ts=NOW - 3)) is Code.REPLAY
    assert decide(g, c, inv(c, nonce=10, ts=NOW - 2)) is Code.REPLAY
    assert decide(g, c, inv(c, nonce=21, ts=NOW - 2)) is Code.OK  # pushes out nonce 10
    assert decide(g, c, inv(c, nonce=22, ts=NOW - 2)) is Code.REPLAY
    assert decide(g, other, inv(other, nonce=2, ts=NOW - 25)) is Code.OK
    assert ledger.nonces(now=NOW) == 4


# -- per-root accounts and the defaults ------------------------------------------------------


def test_default_per_root_limits(impl: ModuleType) -> None:
    ledger = impl.Ledger()
    assert (ledger.max_accounts, ledger.max_nonces) == (1_000_000, 1_000_000)
    assert (ledger.max_accounts_per_root, ledger.max_nonces_per_root) == (100_000, 1_000_000)
    assert ledger.replay_window == 0
    # A tenth of the accounts, but room for a whole chain of 16 links (or all of a smaller ledger).
    for accounts, share in ((1, 1), (9, 9), (10, 10), (16, 16), (19, 16), (160, 16), (170, 17), (2**64 - 1, (2**64 - 1) // 10)):
        assert impl.Ledger(max_accounts=accounts).max_accounts_per_root == share
    assert impl.Ledger(max_nonces=7).max_nonces_per_root == 7
    explicit = impl.Ledger(max_accounts=10, max_nonces=10, max_accounts_per_root=50, max_nonces_per_root=3)
    assert (explicit.max_accounts_per_root, explicit.max_nonces_per_root) == (50, 3)
    assert impl.Ledger(max_accounts_per_root=None, max_nonces_per_root=None).max_accounts_per_root == 100_000
    assert gate(impl).ledger.replay_window == 300
    assert impl.Gate([ISSUER.public_key]).ledger.replay_window == 300


def test_accounts_count_for_the_root_that_opened_them(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_accounts_per_root=1)
    x, y, z = (bytes([i]) * 32 for i in (1, 2, 3))
    ledger.budget([(x, 10)]).reserve(1).commit()
    # x exists (opened under root x): only y is new under root y.
    ledger.budget([(y, 10), (x, 10)]).reserve(1).commit()
    with pytest.raises(BudgetExhaustedError, match="max_accounts_per_root = 1"):
        ledger.budget([(y, 10), (z, 10)]).reserve(1)
    assert ledger.account(z) is None
    ledger.budget([(z, 10)]).reserve(1).release()
    assert set(ledger.accounts()) == {x, y, z}
    assert ledger.account(x) == hopgate.Account(10, 2, 0, 0)


def test_the_root_quota_makes_room_from_its_expired_accounts(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_accounts_per_root=2)
    g = gate(impl, ledger)
    root = grant(185)
    short, long = child(root, 1, not_after=NOW + 50), child(root, 2)
    assert decide(g, short, inv(short, nonce=1)) is Code.OK
    later = NOW + 100
    assert decide(g, long, inv(long, nonce=2, ts=later), now=later) is Code.OK
    assert set(ledger.accounts()) == {root_of(root), long.revocation_ids[1]}
    # The forgotten account's expiry is the horizon now: it is not opened again.
    assert decide(g, short, inv(short, nonce=3), now=NOW) is Code.BUDGET_EXHAUSTED


def test_a_per_root_quota_above_the_total_leaves_the_total_in_charge(impl: ModuleType) -> None:
    ledger = impl.Ledger(max_accounts=3, max_accounts_per_root=10)
    g = gate(impl, ledger)
    c = grant(180)
    three = child(c, 1).delegate(B, C.public_key, nonce=b"\x01" * 16)
    deep = three.delegate(C, A.public_key, nonce=b"\x02" * 16)
    assert len(deep.links) == 4
    assert decide(g, deep, inv(deep, nonce=1)) is Code.BUDGET_EXHAUSTED
    with pytest.raises(BudgetExhaustedError, match="max_accounts = 3"):
        ledger.budget(deep).reserve(1)
    assert decide(g, three, inv(three, nonce=2)) is Code.OK
    assert len(ledger.accounts()) == 3


# -- argument checks ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["max_accounts_per_root", "max_nonces_per_root"])
@pytest.mark.parametrize("bad", [0, -1, 2**64, "3", 1.5])
def test_per_root_limits_out_of_range_are_input_errors(impl: ModuleType, name: str, bad: Any) -> None:
    with pytest.raises(hopgate.InputError, match=name):
        impl.Ledger(**{name: bad})


@pytest.mark.parametrize("bad", ["text", 5, [1, 2], object()])
def test_payload_must_be_bytes_like(impl: ModuleType, bad: Any) -> None:
    g, c = gate(impl), grant(190)
    with pytest.raises(hopgate.InputError, match="payload"):
        g.check(c, inv(c), now=NOW, payload=bad)
    with pytest.raises(hopgate.InputError, match="payloads"):
        g.check_batch([c], [inv(c)], now=NOW, payloads=[bad])
    assert g.ledger.nonces(now=NOW) == 0


@pytest.mark.parametrize("bad", [("refund", "pay/x"), ("refund", "pay/x", 1, 2), (1, "pay/x", 1),
                                 ("refund", b"pay/x", 1), ("refund", "pay/x", -1), ("refund", "pay/x", 2**64),
                                 ("refund", "pay/x", "1"), ("refund", "pay/x", 1.5), ("refund", "pay/x", None),
                                 ["refund", "pay/x", 1], ("refund\ud800", "pay/x", 1), ("refund", "\udfff", 1),
                                 "refund", 3])
def test_require_out_of_shape_is_an_input_error(impl: ModuleType, bad: Any) -> None:
    g, c = gate(impl), grant(191)
    with pytest.raises(hopgate.InputError, match="require"):
        g.check(c, inv(c), now=NOW, require=bad)
    with pytest.raises(hopgate.InputError, match="require"):
        g.precheck(c, inv(c), now=NOW, require=bad)
    with pytest.raises(hopgate.InputError, match="requires"):
        g.check_batch([c, c], [inv(c, nonce=1), inv(c, nonce=2)], now=NOW, requires=[None, bad])
    assert g.ledger.nonces(now=NOW) == 0 and g.ledger.accounts() == {}


def test_per_request_lists_must_match_the_batch(impl: ModuleType) -> None:
    g, c = gate(impl), grant(192)
    invocations = [inv(c, nonce=1), inv(c, nonce=2)]
    with pytest.raises(hopgate.InputError, match="payloads"):
        g.check_batch([c, c], invocations, now=NOW, payloads=[None])
    with pytest.raises(hopgate.InputError, match="payloads"):
        g.check_batch([c, c], invocations, now=NOW, payloads=[None, None, None])
    with pytest.raises(hopgate.InputError, match="requires"):
        g.check_batch([c, c], invocations, now=NOW, requires=[None])
    with pytest.raises(hopgate.InputError, match="payloads"):
        g.check_batch([c, c], invocations, now=NOW, payloads=b"ab")
    # Refused before anything was decided.
    assert g.ledger.nonces(now=NOW) == 0 and g.ledger.accounts() == {}
    codes, reservations = g.check_batch([c, c], invocations, now=NOW, requires=[(*ROUTE, 0), (*ROUTE, U64_MAX)])
    assert [Code(x) for x in codes] == [Code.OK, Code.COST_BELOW_PRICE]
    reservations[0].release()


# -- random sequences: native == reference == the rules written out -------------------------


class Rules:
    """Steps 16 and 17 and the ledger, stated by brute force (full scans, no
    indexes), as the rules read: the oracle the reference is held to."""

    def __init__(self, max_accounts: int, max_nonces: int, accounts_per_root: Optional[int],
                 nonces_per_root: Optional[int]) -> None:
        self.max_accounts, self.max_nonces = max_accounts, max_nonces
        self.accounts_per_root = max(max_accounts // 10, min(max_accounts, 16)) if accounts_per_root is None else accounts_per_root
        self.nonces_per_root = max_nonces if nonces_per_root is None else nonces_per_root
        self.retention = 0
        self.nonces: list[tuple[bytes, bytes, int]] = []  # (root, nonce, timestamp)
        self.horizons: dict[bytes, int] = {}
        self.horizon = -1  # the global horizon: stale horizons of roots holding no nonce
        self.accounts: dict[bytes, list[int]] = {}  # id -> [cap, spent, reserved, overrun]
        self.expires: dict[bytes, int] = {}
        self.opened_by: dict[bytes, bytes] = {}
        self.account_horizon: Optional[int] = None
        self.latest = 0

    def _forget(self, entry: tuple[bytes, bytes, int]) -> None:
        self.nonces.remove(entry)
        root, _, ts = entry
        self.horizons[root] = max(self.horizons.get(root, ts), ts)

    def _earliest(self, root: bytes) -> tuple[bytes, bytes, int]:
        return min((e for e in self.nonces if e[0] == root), key=lambda e: (e[2], e[1]))

    def admit(self, path: list[tuple[bytes, int, int]], cost: int, nonce: bytes, ts: int, now: int) -> Code:
        for entry in [e for e in self.nonces if min(e[2] + self.retention, U64_MAX) < now]:
            self._forget(entry)
        holding = {e[0] for e in self.nonces}
        for r, h in list(self.horizons.items()):
            if r not in holding and min(h + self.retention, U64_MAX) < now:
                del self.horizons[r]
                self.horizon = max(self.horizon, h)
        root = path[0][0]
        if any(e[:2] == (root, nonce) for e in self.nonces) or ts <= max(self.horizons.get(root, -1), self.horizon):
            return Code.REPLAY
        self.latest = max(self.latest, now)
        for rid, cap, _ in path:
            held = self.accounts.get(rid, [cap, 0, 0, 0])
            if held[1] + held[2] + cost > held[0]:
                return Code.BUDGET_EXHAUSTED
        new = [entry for entry in path if entry[0] not in self.accounts]

        def over() -> bool:
            mine = sum(1 for r in self.opened_by.values() if r == root)
            return len(self.accounts) + len(new) > self.max_accounts or mine + len(new) > self.accounts_per_root

        if new:
            if self.account_horizon is not None and any(exp <= self.account_horizon for *_, exp in new):
                return Code.BUDGET_EXHAUSTED
            if over():
                on_path = {rid for rid, _, _ in path}
                for rid in list(self.accounts):
                    exp = self.expires[rid]
                    if exp <= self.latest and self.accounts[rid][2] == 0 and rid not in on_path:
                        del self.accounts[rid], self.expires[rid], self.opened_by[rid]
                        self.account_horizon = max(self.account_horizon or 0, exp)
            if over():
                return Code.BUDGET_EXHAUSTED
        for rid, cap, exp in path:
            if rid not in self.accounts:
                self.accounts[rid], self.opened_by[rid], self.expires[rid] = [cap, 0, 0, 0], root, exp
            self.expires[rid] = max(self.expires[rid], exp)
            self.accounts[rid][2] += cost
        counts = Counter(e[0] for e in self.nonces)
        if counts[root] >= self.nonces_per_root:
            self._forget(self._earliest(root))
        elif len(self.nonces) >= self.max_nonces:
            self._forget(self._earliest(min(counts, key=lambda r: (-counts[r], r))))
        self.nonces.append((root, nonce, ts))
        return Code.OK

    def settle(self, path: list[tuple[bytes, int, int]], amount: int, actual: int) -> None:
        # An account holding only a reservation of 0 may have been forgotten (and
        # can never be opened again): what is charged to it is charged nowhere.
        for rid, _, _ in path:
            if rid in self.accounts:
                held = self.accounts[rid]
                held[2] -= amount
                held[1] += actual

    def snapshot(self) -> dict[bytes, hopgate.Account]:
        return {rid: hopgate.Account(*held) for rid, held in self.accounts.items()}


def _world() -> list[Any]:
    """Chains under five roots: long-lived, short-lived (its accounts expire within the
    clock's range), and delegations sharing their roots."""
    g0 = grant(300, budget=30)
    g1 = grant(301, budget=30, not_after=NOW + 40)
    g2 = grant(302, budget=12)
    deep = child(g0, 3, budget=20).delegate(B, C.public_key, budget=10, nonce=bytes(16))
    return [g0, g1, g2, child(g0, 1, budget=20), child(g0, 2, budget=20), child(g1, 1), child(g2, 1), deep,
            grant(303, budget=50), grant(304, budget=50, not_after=NOW + 100)]


WORLD = _world()
PATHS = [[(link.revocation_id, link.budget, link.not_after) for link in c.links] for c in WORLD]
# The clock: mostly creeping, often jumping ahead past every window, and back.
TIMES = (0, 0, 0, 1, 2, 5, 12, 30, 45, 70, 150, 250, 400, -60)


@dataclass
class Case:
    ledger: dict[str, Any]
    windows: tuple[int, int]
    second_at: int
    ops: list[tuple[Any, ...]]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    ledger = {
        "max_accounts": draw(st.integers(2, 10)),
        "max_nonces": draw(st.integers(1, 8)),
        "max_accounts_per_root": draw(st.one_of(st.none(), st.integers(1, 6))),
        "max_nonces_per_root": draw(st.one_of(st.none(), st.integers(1, 6))),
    }
    windows = (draw(st.integers(10, 40)), draw(st.integers(60, 200)))
    op = st.tuples(
        st.integers(0, 1),  # gate
        st.integers(0, len(WORLD) - 1),  # chain
        st.integers(0, 8),  # nonce: 0..5 shared across requests and roots, else fresh
        st.integers(-35, 35),  # timestamp - now
        st.sampled_from((0, 1, 2, 5, 25)),  # cost
        st.integers(0, len(TIMES) - 1),  # now - NOW
        st.sampled_from(("commit", "partial", "release", "hold")),
        st.integers(0, 4),  # require: none, price 0, 1, 3, another route
        st.integers(0, 2),  # payload: none, the signed body, another body
    )
    ops = draw(st.lists(op, min_size=12, max_size=48))
    return Case(ledger, windows, draw(st.integers(0, 45)), ops)


@dataclass
class Request:
    chain: int
    gate: int
    invocation: bytes
    nonce: bytes
    timestamp: int
    cost: int
    now: int
    settle: str
    require: Optional[tuple[str, str, int]]
    payload: Optional[bytes]


def requests_of(case: Case) -> list[Request]:
    out = []
    now = NOW
    for k, (gate_i, chain_i, nonce_i, dt, cost, time_i, settle, require_i, payload_i) in enumerate(case.ops):
        now = NOW + TIMES[time_i]
        nonce = bytes([nonce_i]) * 16 if nonce_i < 6 else k.to_bytes(16, "big")
        c = WORLD[chain_i]
        ts = max(0, now + dt)
        body = b"body %d" % k
        require = [None, (*ROUTE, 0), (*ROUTE, 1), (*ROUTE, 3), ("refund", "pay/y", 0)][require_i]
        payload = [None, body, b"another"][payload_i]
        out.append(Request(chain_i, gate_i, inv(c, cost=cost, ts=ts, nonce=nonce, body=body), nonce, ts, cost,
                           now, settle, require, payload))
    return out


def settle_first(held: list[tuple[Any, Request]], rules: Optional[Rules]) -> None:
    reservation, earlier = held.pop(0)
    reservation.commit()
    if rules is not None:
        rules.settle(PATHS[earlier.chain], earlier.cost, earlier.cost)


def run(impl: ModuleType, case: Case, requests: list[Request], rules: Optional[Rules] = None
        ) -> tuple[list[int], dict[bytes, Any], int, int]:
    """Decide `requests` on one implementation; with `rules`, hold every decision to them."""
    ledger = impl.Ledger(**case.ledger)
    skews = (5, 30)
    gates = [gate(impl, ledger, skew=skews[0], window=case.windows[0])]
    judges = [gate(ref, skew=s, window=w) for s, w in zip(skews, case.windows)]  # for precheck alone
    if rules is not None:
        rules.retention = case.windows[0]
    codes: list[int] = []
    held: list[tuple[Any, Request]] = []
    for k, r in enumerate(requests):
        if k == case.second_at:
            gates.append(gate(impl, ledger, skew=skews[1], window=case.windows[1]))
            if rules is not None:
                rules.retention = max(case.windows)
        which = min(r.gate, len(gates) - 1)
        c = WORLD[r.chain]
        d = gates[which].check(c, r.invocation, now=r.now, payload=r.payload, require=r.require)
        code = Code(d.code)
        codes.append(int(code))
        if rules is not None:
            expected = judges[which].precheck(c, r.invocation, now=r.now, require=r.require)
            if r.payload is not None and r.payload != b"body %d" % k and expected not in (
                    Code.MALFORMED, Code.UNTRUSTED_ISSUER):
                expected = Code.BAD_SIGNATURE
            elif expected is Code.OK:
                expected = rules.admit(PATHS[r.chain], r.cost, r.nonce, r.timestamp, r.now)
            assert code is expected, f"request {k}: {code.name}, the rules say {expected.name}"
        if d.reservation is None:
            continue
        if r.settle == "hold":
            held.append((d.reservation, r))
        else:
            actual = {"commit": r.cost, "partial": r.cost // 2, "release": 0}[r.settle]
            if r.settle == "release":
                d.reservation.release()
            else:
                d.reservation.commit(actual)
            if rules is not None:
                rules.settle(PATHS[r.chain], r.cost, actual)
        if len(held) > 2:
            settle_first(held, rules)
    while held:
        settle_first(held, rules)
    accounts = ledger.accounts()
    if rules is not None:
        assert accounts == rules.snapshot()
        assert ledger.replay_window == rules.retention
    now = requests[-1].now
    nonces = ledger.nonces(now=now)
    if rules is not None:
        assert nonces == sum(1 for e in rules.nonces if min(e[2] + rules.retention, U64_MAX) >= now)
    return codes, accounts, nonces, ledger.replay_window


EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@EXAMPLES
@given(cases())
def test_reference_follows_the_rules_on_random_sequences(case: Case) -> None:
    requests = requests_of(case)
    run(ref, case, requests, Rules(case.ledger["max_accounts"], case.ledger["max_nonces"],
                                   case.ledger["max_accounts_per_root"], case.ledger["max_nonces_per_root"]))


@EXAMPLES
@given(cases())
def test_native_equals_reference_on_random_sequences(case: Case) -> None:
    requests = requests_of(case)
    native = run(hopgate, case, requests)
    reference = run(ref, case, requests)
    for k, (got, want) in enumerate(zip(native[0], reference[0])):
        assert got == want, f"request {k}: native {Code(got).name}, reference {Code(want).name}"
    assert native[1:] == reference[1:]
