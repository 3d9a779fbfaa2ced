"""Property tests: round trips, tampering, and native == reference on random input."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hopgate
import hopgate.reference as ref
from hopgate import Code

from craft import NOW, L, build

KEYS = [hopgate.SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(6)]
TRUSTED = [KEYS[0].public_key, KEYS[5].public_key]

segment = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/*"), min_size=1, max_size=6)
cap_name = st.one_of(
    st.just("*"),
    st.lists(segment, min_size=1, max_size=3).map("/".join),
    st.lists(segment, min_size=1, max_size=2).map(lambda p: "/".join(p) + "/*"),
)
caps = st.lists(st.tuples(cap_name, cap_name), min_size=1, max_size=4)


@st.composite
def chains(draw: st.DrawFn) -> Any:
    """A chain built with the native builder, narrowing at each hop by random amounts."""
    n = draw(st.integers(1, 5))
    nb = draw(st.integers(0, NOW))
    na = nb + draw(st.integers(1, 10**6))
    c = hopgate.Chain.grant(
        KEYS[0], KEYS[1].public_key, draw(caps), budget=draw(st.integers(0, 2**64 - 1)), unit=draw(segment),
        not_before=nb, not_after=na, max_depth=draw(st.integers(n - 1, 255)), session_id=draw(st.binary(min_size=16, max_size=16)),
    )
    for i in range(1, n):
        parent = c.links[-1]
        c = c.delegate(
            KEYS[i], KEYS[i + 1].public_key,
            caps=[draw(st.sampled_from(parent.caps))],
            budget=draw(st.integers(0, parent.budget)),
            not_before=draw(st.integers(parent.not_before, parent.not_after - 1)),
            not_after=parent.not_after,
        )
    return c


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_round_trip_native_and_reference(c: Any) -> None:
    data = bytes(c)
    assert hopgate.Chain.from_bytes(data) == c
    r = ref.Chain.from_bytes(data)
    assert bytes(r) == data and r.to_text() == c.to_text() and r.digest == c.digest
    for a, b in zip(c.links, r.links):
        assert (a.holder, a.budget, a.unit, a.caps, a.not_before, a.not_after, a.max_depth, a.signature) == (
            b.holder, b.budget, b.unit, b.caps, b.not_before, b.not_after, b.max_depth, b.signature
        )
    assert hopgate.verify_chains([data], TRUSTED, now=c.links[-1].not_before).tolist() == [0]


def flips(data: bytes) -> list[bytes]:
    out = []
    for bit in range(len(data) * 8):
        b = bytearray(data)
        b[bit // 8] ^= 1 << (bit % 8)
        out.append(bytes(b))
    return out


def test_every_single_bit_flip_of_a_chain_is_denied() -> None:
    """Exhaustive over all bits of a 3-link chain, native; a sample on the reference."""
    c = hopgate.Chain.grant(KEYS[0], KEYS[1].public_key, [("files/*", "read"), ("pay/*", "x")], 500, "usd", NOW - 5, NOW + 5, 3)
    c = c.delegate(KEYS[1], KEYS[2].public_key, caps=[("files/a/*", "read")], budget=100)
    c = c.delegate(KEYS[2], KEYS[3].public_key, budget=10)
    mutated = flips(bytes(c))
    native = hopgate.verify_chains(mutated, TRUSTED, now=NOW)
    assert (native != Code.OK).all(), "a flipped bit still verified"
    sample = random.Random(1).sample(range(len(mutated)), 150)
    reference = ref.verify_chains([mutated[i] for i in sample], TRUSTED, now=NOW)
    assert reference.tolist() == native[sample].tolist()


def mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    op = rnd.randrange(6)
    if op == 0 and b:
        i = rnd.randrange(len(b))
        b[i] ^= 1 << rnd.randrange(8)
    elif op == 1 and b:
        del b[rnd.randrange(len(b)):]
    elif op == 2:
        b.insert(rnd.randrange(len(b) + 1), rnd.randrange(256))
    elif op == 3 and b:
        del b[rnd.randrange(len(b))]
    elif op == 4 and len(b) > 9:
        i = rnd.randrange(5, len(b) - 4)  # a lying u32 somewhere
        b[i : i + 4] = rnd.randrange(2**32).to_bytes(4, "little")
    else:
        i = rnd.randrange(len(b) + 1)
        b[i:i] = b[: rnd.randrange(1, 40)]
    return bytes(b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(chains(), min_size=1, max_size=4), st.integers(0, 2**32), st.integers(0, 2 * NOW))
def test_native_equals_reference_on_valid_and_mutated(cs: list[Any], seed: int, now: int) -> None:
    rnd = random.Random(seed)
    inputs = []
    for c in cs:
        data = bytes(c)
        inputs.append(data)
        inputs.extend(mutate(data, rnd) for _ in range(3))
    revoked = [rnd.choice(cs).revocation_ids[0]] if rnd.random() < 0.3 else []
    session = cs[0].session_id if rnd.random() < 0.5 else bytes(16)
    kw: dict[str, Any] = dict(now=now, session=session, revoked=revoked)
    native = hopgate.verify_chains(inputs, TRUSTED, **kw)
    assert native.tolist() == ref.verify_chains(inputs, TRUSTED, **kw).tolist()


def test_native_equals_reference_on_crafted_widenings() -> None:
    """Random single-field changes to a signed delegation (so the signature stays valid)."""
    rnd = random.Random(5)
    inputs = []
    for _ in range(150):
        parent = L(signer=KEYS[0], holder=KEYS[1].public_key, caps=[("files/*", "read")], budget=100, max_depth=rnd.randrange(3))
        child = L(
            signer=KEYS[1], holder=KEYS[2].public_key,
            caps=[(rnd.choice(["files/a", "files/*", "files", "*", "db/x"]), rnd.choice(["read", "write", "*"]))],
            budget=rnd.choice([0, 100, 101]), unit=rnd.choice(["usd-cents", "eur"]),
            not_before=NOW - rnd.choice([999, 1000, 1001]), not_after=NOW + rnd.choice([99_999, 100_000, 100_001]),
            max_depth=rnd.randrange(3),
        )
        inputs.append(build([parent, child]).data)
    native = hopgate.verify_chains(inputs, TRUSTED, now=NOW)
    assert native.tolist() == ref.verify_chains(inputs, TRUSTED, now=NOW).tolist()
    assert len(set(native.tolist())) >= 5  # the mix exercises several codes


def test_random_bytes_never_crash() -> None:
    rnd = np.random.default_rng(3)
    junk = [rnd.bytes(int(n)) for n in rnd.integers(0, 300, 2000)]
    junk += [b"HGC1" + j for j in junk[:1000]]
    out = hopgate.verify_chains(junk, TRUSTED)
    assert (out == Code.MALFORMED).all()
    assert (ref.verify_chains(junk[::20], TRUSTED) == Code.MALFORMED).all()
