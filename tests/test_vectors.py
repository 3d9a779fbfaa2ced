"""The decision vectors of tests/vectors/decisions.json (docs/SPEC.md §10), run on both
implementations, and known-answer tests for the rules docs/SPEC.md states explicitly:
integer arithmetic near 2^64, the order of requests in one batch, the defaults of Gate
and Ledger, a zero session id, UTF-8, and the check order on a cache hit."""

from __future__ import annotations

import importlib.util
import json
import pathlib
from types import ModuleType
from typing import Any, Optional

import pytest

import hopgate
from hopgate import Code

import craft

ROOT = pathlib.Path(__file__).resolve().parent.parent
DECISIONS = ROOT / "tests" / "vectors" / "decisions.json"
DATA: dict[str, Any] = json.loads(DECISIONS.read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = DATA["cases"]

U64_MAX = 2**64 - 1
NOW = 1_750_000_000


# -- the vectors ---------------------------------------------------------------


def _opt_hex(value: Optional[str]) -> Optional[bytes]:
    return None if value is None else bytes.fromhex(value)


def _opt_require(value: Optional[list[Any]]) -> Optional[tuple[str, str, int]]:
    return None if value is None else (value[0], value[1], value[2])


def _gate(impl: ModuleType, case: dict[str, Any]) -> Any:
    """A fresh gate (on a fresh ledger) as the case describes it."""
    g = case["gate"]
    ledger = impl.Ledger(**case["ledger"]) if "ledger" in case else None
    return impl.Gate(
        [bytes.fromhex(k) for k in g["trusted"]],
        skew=g["skew"],
        replay_window=g["replay_window"],
        session=_opt_hex(g["session"]),
        revoked=[bytes.fromhex(r) for r in g["revoked"]],
        ledger=ledger,
    )


def _decide_before(impl: ModuleType, case: dict[str, Any]) -> Any:
    """The case's gate after its earlier requests, each checked for its own code and,
    when allowed, committed in full."""
    gate = _gate(impl, case)
    for i, earlier in enumerate(case["before"]):
        d = gate.check(bytes.fromhex(earlier["chain"]), bytes.fromhex(earlier["invocation"]), now=earlier["now"],
                       payload=_opt_hex(earlier["payload"]), require=_opt_require(earlier["require"]))
        assert d.code == earlier["code"], f"before[{i}]: {d.code!r}"
        if d.reservation is not None:
            d.reservation.commit()
    return gate


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_decision_vector(impl: ModuleType, case: dict[str, Any]) -> None:
    gate = _decide_before(impl, case)
    d = gate.check(bytes.fromhex(case["chain"]), bytes.fromhex(case["invocation"]), now=case["gate"]["now"],
                   payload=_opt_hex(case["payload"]), require=_opt_require(case["require"]))
    assert d.code is Code(case["code"]), case["why"]
    assert d.code.name == case["name"]
    assert (d.reservation is not None) == (d.code is Code.OK)
    if d.reservation is not None:
        d.reservation.release()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_decision_vector_in_a_batch(impl: ModuleType, case: dict[str, Any]) -> None:
    """The same decision through check_batch (a batch of one)."""
    gate = _decide_before(impl, case)
    codes, reservations = gate.check_batch(
        [bytes.fromhex(case["chain"])], [bytes.fromhex(case["invocation"])], now=case["gate"]["now"],
        payloads=[_opt_hex(case["payload"])], requires=[_opt_require(case["require"])])
    assert [Code(int(c)) for c in codes] == [Code(case["code"])], case["why"]
    for r in reservations:
        if r is not None:
            r.release()


def test_every_code_has_a_vector() -> None:
    assert {c["code"] for c in CASES} == {int(code) for code in Code} == set(range(19))
    for c in CASES:
        assert Code(c["code"]).name == c["name"], c["id"]
        assert c["why"].endswith(".") and len(c["why"]) > 20, c["id"]
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert DATA["codes"] == {str(int(code)): code.name for code in Code}
    # The cases the contract names, each present.
    ids = {c["id"] for c in CASES}
    for wanted in ["malformed-chain-trailing-byte", "malformed-body-len-one-more", "malformed-str-bad-utf8",
                   "malformed-empty-unit", "bad-signature-link-1", "bad-signature-invocation-wrong-signer",
                   "bad-signature-payload", "scope-denied-ability", "scope-denied-requirement",
                   "replay-same-request", "budget-exhausted-middle-link"]:
        assert wanted in ids


def test_vectors_file_is_what_the_script_writes(impl: ModuleType) -> None:
    """A fresh run of tools/make_decision_vectors.py, with either implementation's
    builders and keys, gives the committed file byte for byte."""
    spec = importlib.util.spec_from_file_location("make_decision_vectors", ROOT / "tools" / "make_decision_vectors.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    fresh: str = tool.render(impl)
    assert fresh == DECISIONS.read_text(encoding="utf-8")


# -- known answers ---------------------------------------------------------------


def _keys(impl: ModuleType) -> tuple[Any, Any, Any]:
    issuer, a, b = (impl.SigningKey.from_seed(bytes([0x60 + i]) * 32) for i in range(3))
    return issuer, a, b


def _grant(impl: ModuleType, budget: int = 1000, not_before: int = NOW - 1000, not_after: int = NOW + 100_000,
           session_id: bytes = bytes(16), nonce: int = 1) -> Any:
    """issuer -> A: files/* read, no delegation."""
    issuer, a, _ = _keys(impl)
    return impl.Chain.grant(issuer, a.public_key, [("files/*", "read")], budget, "usd-cents", not_before,
                            not_after, 0, session_id=session_id, nonce=nonce.to_bytes(16, "big"))


def _invoke(impl: ModuleType, chain: Any, cost: int = 1, timestamp: int = NOW, nonce: int = 1,
            payload: bytes = b"") -> bytes:
    _, a, _ = _keys(impl)
    return bytes(chain.invoke(a, "read", "files/a", cost, nonce=nonce.to_bytes(16, "big"), timestamp=timestamp,
                              payload=payload))


def _new_gate(impl: ModuleType, **kw: Any) -> Any:
    issuer, _, _ = _keys(impl)
    return impl.Gate([issuer.public_key], **kw)


def _code(impl: ModuleType, chain: Any, timestamp: int, now: int, **kw: Any) -> Code:
    """The decision on a fresh gate (so that no earlier nonce or horizon interferes)."""
    d = _new_gate(impl, **kw).check(chain, _invoke(impl, chain, timestamp=timestamp), now=now)
    code: Code = d.code
    if d.reservation is not None:
        d.reservation.release()
    return code


def test_freshness_is_exact_near_zero_and_u64_max(impl: ModuleType) -> None:
    """|timestamp - now| > skew, computed exactly: no wrap-around and no signed overflow."""
    always = _grant(impl, not_before=0, not_after=U64_MAX)
    OK, STALE = Code.OK, Code.STALE_INVOCATION
    # now near 0.
    assert _code(impl, always, 0, 0) is OK
    assert _code(impl, always, 30, 0) is OK
    assert _code(impl, always, 31, 0) is STALE
    assert _code(impl, always, 0, 10) is OK
    assert _code(impl, always, U64_MAX, 0) is STALE  # a wrapping now - timestamp would be 1
    assert _code(impl, always, U64_MAX, 10) is STALE  # ... and 11
    # now near 2^64 - 1 (the largest now at which a link can still be valid: not_after is exclusive).
    top = U64_MAX - 1
    assert _code(impl, always, U64_MAX, top) is OK
    assert _code(impl, always, top - 30, top) is OK
    assert _code(impl, always, top - 31, top) is STALE
    assert _code(impl, always, 0, top) is STALE  # a wrapping timestamp - now would be 2
    # At now = 2^64 - 1 every link has expired: no not_after lies beyond it.
    assert _code(impl, always, U64_MAX, U64_MAX) is Code.EXPIRED
    # The largest skew a gate takes (replay_window >= 2 * skew): differences near 2^63.
    wide = dict(skew=2**63 - 1, replay_window=U64_MAX)
    assert _code(impl, always, 2**63 - 1, top, **wide) is OK  # exactly skew
    assert _code(impl, always, 2**63 - 2, top, **wide) is STALE
    assert _code(impl, always, 2**63 - 1, 0, **wide) is OK
    assert _code(impl, always, 2**63, 0, **wide) is STALE
    assert _code(impl, always, U64_MAX, 0, **wide) is STALE


def test_nonce_retention_saturates_at_u64_max(impl: ModuleType) -> None:
    """A nonce is remembered while timestamp + retention >= now, the sum saturating at
    2^64 - 1: one dated 2^64 - 2 is never forgotten."""
    always = _grant(impl, not_before=0, not_after=U64_MAX)
    top = U64_MAX - 1

    def remembered(timestamp: int, now: int, at: int) -> int:
        gate = _new_gate(impl, skew=30, replay_window=300)
        request = _invoke(impl, always, timestamp=timestamp)
        assert gate.check(always, request, now=now).code is Code.OK
        assert gate.check(always, request, now=now).code is Code.REPLAY
        count: int = gate.ledger.nonces(at)
        return count

    assert remembered(top, top, U64_MAX) == 1  # top + 300 saturates: no now passes it
    assert remembered(U64_MAX - 300, U64_MAX - 300, U64_MAX) == 1  # exactly 2^64 - 1: still remembered
    assert remembered(top - 300, top - 300, top) == 1  # expiry == now: remembered
    assert remembered(top - 300, top - 300, U64_MAX) == 0  # expiry < now: forgotten


def test_reservation_is_exact_at_a_cap_of_u64_max(impl: ModuleType) -> None:
    """spent + reserved + amount <= cap, computed without overflow at cap = 2^64 - 1."""
    chain = _grant(impl, budget=U64_MAX)
    gate = _new_gate(impl)
    first = gate.check(chain, _invoke(impl, chain, cost=U64_MAX - 1, nonce=1), now=NOW)
    second = gate.check(chain, _invoke(impl, chain, cost=1, nonce=2), now=NOW)
    assert (first.code, second.code) == (Code.OK, Code.OK)  # exactly at the cap
    root = chain.revocation_ids[0]
    assert gate.ledger.account(root).reserved == U64_MAX
    # One more would make 2^64, which a wrapping sum would read as 0.
    assert gate.check(chain, _invoke(impl, chain, cost=1, nonce=3), now=NOW).code is Code.BUDGET_EXHAUSTED
    assert gate.check(chain, _invoke(impl, chain, cost=U64_MAX, nonce=4), now=NOW).code is Code.BUDGET_EXHAUSTED
    assert second.reservation is not None and first.reservation is not None
    second.reservation.commit()
    first.reservation.commit()
    assert gate.ledger.account(root).spent == U64_MAX
    # A cost of 0 still fits a spent cap; 1 does not.
    zero = gate.check(chain, _invoke(impl, chain, cost=0, nonce=5), now=NOW)
    assert zero.code is Code.OK
    assert zero.reservation is not None
    zero.reservation.release()
    assert gate.check(chain, _invoke(impl, chain, cost=1, nonce=6), now=NOW).code is Code.BUDGET_EXHAUSTED
    # The whole cap in one request, on a fresh gate.
    whole = _new_gate(impl).check(chain, _invoke(impl, chain, cost=U64_MAX, nonce=7), now=NOW)
    assert whole.code is Code.OK
    assert whole.reservation is not None
    whole.reservation.release()


def test_replay_window_must_be_twice_the_skew_exactly(impl: ModuleType) -> None:
    """replay_window >= 2 * skew is computed without overflow."""
    with pytest.raises(hopgate.InputError, match="replay_window"):
        _new_gate(impl, skew=2**63, replay_window=U64_MAX)  # 2 * skew = 2^64
    with pytest.raises(hopgate.InputError, match="replay_window"):
        _new_gate(impl, skew=U64_MAX, replay_window=U64_MAX)
    with pytest.raises(hopgate.InputError, match="replay_window"):
        _new_gate(impl, skew=2**63 - 1, replay_window=U64_MAX - 2)  # one short of 2^64 - 2
    assert _new_gate(impl, skew=2**63 - 1, replay_window=U64_MAX - 1).ledger.replay_window == U64_MAX - 1
    assert _new_gate(impl, skew=0, replay_window=0).ledger.replay_window == 0


def test_batch_requests_are_decided_in_input_order(impl: ModuleType) -> None:
    """A later request of one check_batch sees the nonces and reservations of earlier ones."""
    chain = _grant(impl, budget=200)
    gate = _new_gate(impl)
    same = _invoke(impl, chain, nonce=9)
    codes, reservations = gate.check_batch([chain, chain], [same, same], now=NOW)
    assert [Code(int(c)) for c in codes] == [Code.OK, Code.REPLAY]
    assert [r is not None for r in reservations] == [True, False]

    gate = _new_gate(impl)
    requests = [_invoke(impl, chain, cost=150, nonce=1), _invoke(impl, chain, cost=60, nonce=2)]
    codes, reservations = gate.check_batch([chain, chain], requests, now=NOW)
    assert [Code(int(c)) for c in codes] == [Code.OK, Code.BUDGET_EXHAUSTED]
    # The other way round, the first is allowed and the second refused.
    codes, _ = _new_gate(impl).check_batch([chain, chain], requests[::-1], now=NOW)
    assert [Code(int(c)) for c in codes] == [Code.OK, Code.BUDGET_EXHAUSTED]

    # A refused request consumes neither its nonce nor any budget: the next one with
    # the same nonce and a smaller cost is allowed.
    gate = _new_gate(impl)
    requests = [_invoke(impl, chain, cost=150, nonce=1), _invoke(impl, chain, cost=60, nonce=2),
                _invoke(impl, chain, cost=50, nonce=2)]
    codes, reservations = gate.check_batch([chain] * 3, requests, now=NOW)
    assert [Code(int(c)) for c in codes] == [Code.OK, Code.BUDGET_EXHAUSTED, Code.OK]
    assert gate.ledger.account(chain.revocation_ids[0]).reserved == 200
    for r in reservations:
        if r is not None:
            r.release()


def test_defaults_of_gate_and_ledger(impl: ModuleType) -> None:
    """Gate(trusted) and Ledger() with every other argument left at its default."""
    ledger = impl.Ledger()
    assert (ledger.max_accounts, ledger.max_nonces) == (1_000_000, 1_000_000)
    assert (ledger.max_accounts_per_root, ledger.max_nonces_per_root) == (100_000, 1_000_000)
    assert ledger.replay_window == 0  # no gate on it yet
    assert ledger.nonces(NOW) == 0 and ledger.accounts() == {}

    chain = _grant(impl)
    gate = _new_gate(impl)
    assert (gate.cache_size, gate.max_batch, gate.cached) == (100_000, 65_536, 0)
    assert gate.audit is None
    # ledger=None: a ledger of the gate's own, with the default limits, retaining nonces for
    # the default replay_window of 300 seconds.
    own = gate.ledger
    assert (own.max_accounts, own.max_nonces, own.max_accounts_per_root, own.max_nonces_per_root) == (
        1_000_000, 1_000_000, 100_000, 1_000_000)
    assert own.replay_window == 300
    # skew = 30.
    assert _code(impl, chain, NOW - 30, NOW) is Code.OK
    assert _code(impl, chain, NOW + 30, NOW) is Code.OK
    assert _code(impl, chain, NOW - 31, NOW) is Code.STALE_INVOCATION
    assert _code(impl, chain, NOW + 31, NOW) is Code.STALE_INVOCATION
    # session = None: any session id; revoked = None: nothing revoked; audit = None: no receipt.
    other_session = _grant(impl, session_id=bytes([7]) * 16, nonce=2)
    for c in (chain, other_session):
        d = gate.check(c, _invoke(impl, c, nonce=3), now=NOW)
        assert d.code is Code.OK and d.receipt is None
        assert d.reservation is not None
        d.reservation.release()
    # Gates built without a ledger do not share nonces.
    request = _invoke(impl, chain, nonce=4)
    for g in (_new_gate(impl), _new_gate(impl)):
        d = g.check(chain, request, now=NOW)
        assert d.code is Code.OK and d.reservation is not None
        d.reservation.release()
    # The replay_window of 300: a nonce is remembered until timestamp + 300.
    assert gate.ledger.nonces(NOW + 300) == 2 and gate.ledger.nonces(NOW + 301) == 0
    # max_batch = 65,536: one more request is refused before anything is decided.
    with pytest.raises(hopgate.InputError, match="max_batch"):
        gate.check_batch([b""] * 65_537, [b""] * 65_537, now=NOW)


def test_a_zero_session_id_is_compared_like_any_other(impl: ModuleType) -> None:
    """session=bytes(16) is an expected session id (the zero one), not "no session"."""
    zero = _grant(impl, session_id=bytes(16), nonce=1)
    named = _grant(impl, session_id=bytes([0x5A]) * 16, nonce=2)

    def code(session: Optional[bytes], chain: Any) -> Code:
        d = _new_gate(impl, session=session).check(chain, _invoke(impl, chain), now=NOW)
        if d.reservation is not None:
            d.reservation.release()
        result: Code = d.code
        return result

    assert code(bytes(16), zero) is Code.OK
    assert code(bytes(16), named) is Code.SESSION_MISMATCH
    assert code(bytes([0x5A]) * 16, zero) is Code.SESSION_MISMATCH
    assert code(bytes([0x5A]) * 16, named) is Code.OK
    assert code(None, zero) is Code.OK and code(None, named) is Code.OK
    issuer, _, _ = _keys(impl)
    codes = impl.verify_chains([zero, named], [issuer.public_key], now=NOW, session=bytes(16))
    assert [Code(int(c)) for c in codes] == [Code.OK, Code.SESSION_MISMATCH]


# Names of well-formed UTF-8 with 2-, 3- and 4-byte characters, up to 255 bytes.
GOOD_NAMES = ["été", "日本/資料", "🎉/𝄞", "€" * 85, "𝄞" * 63 + "abc", "a" * 255]
BAD_NAMES = {
    "overlong /": b"\xc0\xaf",
    "overlong NUL": b"\xc0\x80",
    "overlong 3-byte /": b"\xe0\x80\xaf",
    "overlong 4-byte /": b"\xf0\x80\x80\xaf",
    "surrogate U+D800": b"\xed\xa0\x80",
    "surrogate U+DFFF": b"\xed\xbf\xbf",
    "beyond U+10FFFF": b"\xf4\x90\x80\x80",
    "lone continuation byte": b"\x80",
    "cut 3-byte character": b"\xe6\x97",
    "0xFF": b"\xff",
    "NUL": b"a\x00b",
    "empty": b"",
    "256 bytes": b"a" * 256,  # its length byte wraps to 0
}


def test_utf8_names(impl: ModuleType) -> None:
    """Every str on the wire is 1..=255 bytes of well-formed UTF-8 without NUL: valid
    multi-byte names are accepted and round-trip; anything else is MALFORMED."""
    issuer, a, _ = _keys(impl)
    for i, name in enumerate(GOOD_NAMES):
        assert 1 <= len(name.encode()) <= 255
        chain = impl.Chain.grant(issuer, a.public_key, [(name, name)], 10, name, NOW - 1000, NOW + 1000, 0,
                                 nonce=i.to_bytes(16, "big"))
        request = chain.invoke(a, name, name, 1, nonce=bytes(16), timestamp=NOW)
        link = impl.Chain.from_bytes(bytes(chain)).links[0]
        assert (link.unit, link.caps) == (name, ((name, name),))
        parsed = impl.parse_invocation(request)
        assert (parsed.ability, parsed.resource) == (name, name)
        d = _new_gate(impl).check(chain, request, now=NOW)
        assert d.code is Code.OK, name
        assert d.reservation is not None
        d.reservation.release()

    for what, bad in BAD_NAMES.items():
        places: dict[str, dict[str, Any]] = {
            "unit": dict(unit=bad),
            "resource": dict(caps=((bad, "read"),)),
            "ability": dict(caps=(("files/*", bad),)),
        }
        for place, fields in places.items():
            built = craft.build([craft.L(signer=issuer, holder=a.public_key, **fields)])
            request = craft.invocation(a, built.sigs[0], "read", "files/a", 1, craft.NOW, bytes(16), bytes(32))
            assert _new_gate(impl).check(built.data, request, now=craft.NOW).code is Code.MALFORMED, (what, place)
            with pytest.raises(hopgate.MalformedError):
                impl.Chain.from_bytes(built.data)
        chain = craft.build([craft.L(signer=issuer, holder=a.public_key)])
        for ability, resource in ((bad, "files/a"), ("read", bad)):
            request = craft.invocation(a, chain.sigs[0], ability, resource, 1, craft.NOW, bytes(16), bytes(32))
            assert _new_gate(impl).check(chain.data, request, now=craft.NOW).code is Code.MALFORMED, what
            with pytest.raises(hopgate.MalformedError):
                impl.parse_invocation(request)
    # The builders refuse such names before signing anything (the exception differs
    # between the implementations; every one is a ValueError).
    for bad_str in ["", "a" * 256, "a\x00b", "\ud800"]:
        with pytest.raises(ValueError):
            impl.Chain.grant(issuer, a.public_key, [("*", "*")], 1, bad_str, 0, 10, 0)


def _cached(impl: ModuleType) -> tuple[Any, Any]:
    """A gate that has verified and cached the chain (a grant valid NOW-1000..NOW+1000)."""
    chain = _grant(impl, not_after=NOW + 1000)
    gate = _new_gate(impl)
    d = gate.check(chain, _invoke(impl, chain, nonce=1), now=NOW)
    assert d.code is Code.OK and gate.cached == 1
    assert d.reservation is not None
    d.reservation.release()
    return gate, chain


def test_cache_hit_expired(impl: ModuleType) -> None:
    """A cached chain that has since expired is EXPIRED (time is judged on every request)."""
    gate, chain = _cached(impl)
    assert gate.check(chain, _invoke(impl, chain, timestamp=NOW + 1000, nonce=2), now=NOW + 1000).code \
        is Code.EXPIRED
    assert gate.check(chain, _invoke(impl, chain, timestamp=NOW - 1001, nonce=3), now=NOW - 1001).code \
        is Code.NOT_YET_VALID
    assert gate.cached == 1


def test_cache_hit_revoked(impl: ModuleType) -> None:
    """A chain revoked after it was cached is REVOKED."""
    gate, chain = _cached(impl)
    gate.revoke(chain.revocation_ids[0])
    assert gate.check(chain, _invoke(impl, chain, nonce=2), now=NOW).code is Code.REVOKED
    assert gate.cached == 1


def test_cache_hit_bad_invocation_signature(impl: ModuleType) -> None:
    """On a cache hit the invocation's signature, the payload and tail_sig are still checked."""
    gate, chain = _cached(impl)
    request = _invoke(impl, chain, nonce=2, payload=b"body")
    damaged = request[:-1] + bytes([request[-1] ^ 1])
    assert gate.check(chain, damaged, now=NOW).code is Code.BAD_SIGNATURE
    _, _, b = _keys(impl)
    by_other = craft.invocation(b, chain.tail_signature, "read", "files/a", 1, NOW, bytes([3]) * 16, bytes(32))
    assert gate.check(chain, by_other, now=NOW).code is Code.BAD_SIGNATURE
    assert gate.check(chain, request, now=NOW, payload=b"other body").code is Code.BAD_SIGNATURE
    other = _grant(impl, not_after=NOW + 1000, nonce=2)
    assert gate.check(chain, _invoke(impl, other, nonce=4), now=NOW).code is Code.BROKEN_LINK
    assert gate.cached == 1
    d = gate.check(chain, request, now=NOW, payload=b"body")
    assert d.code is Code.OK and d.reservation is not None
    d.reservation.release()
