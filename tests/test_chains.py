"""SPEC §1, §2, §4: building chains, and every attack by name with its exact code."""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest

import hopgate
from hopgate import Code

from craft import NOW, L, build, chain_of, invocation, with_


def codes(impl: ModuleType, chains: list[bytes], trusted: list[bytes], **kw: Any) -> list[Code]:
    kw.setdefault("now", NOW)
    return [Code(c) for c in impl.verify_chains(chains, trusted, **kw)]


def code(impl: ModuleType, data: bytes, trusted: list[bytes], **kw: Any) -> Code:
    return codes(impl, [data], trusted, **kw)[0]


@pytest.fixture
def straight(keys: list[Any]) -> list[L]:
    """issuer keys[0] -> agent keys[1] -> keys[2] -> keys[3]."""
    return chain_of(keys[:4])


def test_valid_three_link_chain(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    assert code(impl, build(straight).data, [keys[0].public_key]) is Code.OK


# --- (b) issuer ---------------------------------------------------------------

def test_untrusted_issuer(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    assert code(impl, build(straight).data, [keys[7].public_key]) is Code.UNTRUSTED_ISSUER
    assert code(impl, build(straight).data, []) is Code.UNTRUSTED_ISSUER


def test_issuer_field_claims_trusted_key_but_signed_by_another(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    forged = [with_(straight[0], signer=keys[6], issuer=keys[0].public_key)] + straight[1:]
    assert code(impl, build(forged).data, [keys[0].public_key]) is Code.BAD_SIGNATURE


# --- (c) signatures -----------------------------------------------------------

def test_wrong_signer_of_a_delegation(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    # keys[5] is not the holder of link 0, yet signs link 1.
    bad = [straight[0], with_(straight[1], signer=keys[5]), straight[2]]
    assert code(impl, build(bad).data, [keys[0].public_key]) is Code.BAD_SIGNATURE


def test_flipped_signature_bit(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    data = bytearray(build(straight).data)
    data[-1] ^= 0x01  # inside the last link's S
    assert code(impl, bytes(data), [keys[0].public_key]) is Code.BAD_SIGNATURE


def test_reordered_links(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    built = build(straight)
    parts = [struct.pack("<I", len(b)) + b + s for b, s in zip(built.bodies, built.sigs)]
    swapped = b"HGC1\x03" + parts[0] + parts[2] + parts[1]
    assert code(impl, swapped, [keys[0].public_key]) is Code.BAD_SIGNATURE


# --- (d) links ----------------------------------------------------------------

def test_splice_of_a_link_from_another_chain(impl: ModuleType, keys: list[Any]) -> None:
    """Two grants to the same agent: the agent's delegation under grant X is pasted
    under grant Y. Its signature is genuine (same holder), only prev_sig betrays it."""
    grant_x = L(signer=keys[0], holder=keys[1].public_key, nonce=b"x" * 16)
    grant_y = L(signer=keys[0], holder=keys[1].public_key, nonce=b"y" * 16)
    under_x = build([grant_x, L(signer=keys[1], holder=keys[2].public_key, max_depth=1)])
    y = build([grant_y])
    spliced = b"HGC1\x02" + y.data[5:] + struct.pack("<I", len(under_x.bodies[1])) + under_x.bodies[1] + under_x.sigs[1]
    assert code(impl, spliced, [keys[0].public_key]) is Code.BROKEN_LINK
    assert code(impl, under_x.data, [keys[0].public_key]) is Code.OK


def test_prev_sig_of_wrong_value_signed_by_holder(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    bad = [straight[0], with_(straight[1], prev_sig=bytes(64)), straight[2]]
    assert code(impl, build(bad).data, [keys[0].public_key]) is Code.BROKEN_LINK


# --- (e) attenuation ------------------------------------------------------------

@pytest.mark.parametrize(
    "change,expected",
    [
        ({"caps": [("files/*", "read")]}, Code.OK),
        ({"caps": [("files/a", "read"), ("files/b/c", "read")]}, Code.OK),
        ({"caps": [("files", "read")]}, Code.SCOPE_WIDENED),  # "files/*" does not cover "files"
        ({"caps": [("filesystem", "read")]}, Code.SCOPE_WIDENED),
        ({"caps": [("files/a", "write")]}, Code.SCOPE_WIDENED),
        ({"caps": [("*", "read")]}, Code.SCOPE_WIDENED),
        ({"caps": [("files/a", "read"), ("db/x", "read")]}, Code.SCOPE_WIDENED),
        ({"budget": 101}, Code.BUDGET_WIDENED),
        ({"budget": 100}, Code.OK),
        ({"unit": "eur-cents"}, Code.BUDGET_WIDENED),
        ({"not_before": NOW - 1001}, Code.TIME_WIDENED),
        ({"not_after": NOW + 100_001}, Code.TIME_WIDENED),
        ({"max_depth": 2}, Code.DEPTH_EXCEEDED),
        ({"max_depth": 1}, Code.OK),
    ],
)
def test_each_widening(impl: ModuleType, keys: list[Any], change: dict[str, Any], expected: Code) -> None:
    parent = L(signer=keys[0], holder=keys[1].public_key, caps=[("files/*", "read")], budget=100, max_depth=2)
    child = with_(L(signer=keys[1], holder=keys[2].public_key, caps=[("files/a", "read")], budget=50, max_depth=1), **change)
    assert code(impl, build([parent, child]).data, [keys[0].public_key]) is expected


def test_delegation_under_depth_zero(impl: ModuleType, keys: list[Any]) -> None:
    parent = L(signer=keys[0], holder=keys[1].public_key, max_depth=0)
    child = L(signer=keys[1], holder=keys[2].public_key, max_depth=0)
    assert code(impl, build([parent, child]).data, [keys[0].public_key]) is Code.DEPTH_EXCEEDED


def test_wildcard_covers() -> None:
    from hopgate.reference._wire import covers

    assert covers("*", "anything") and covers("a/*", "a/b/c") and covers("a/*", "a/")
    assert not covers("a/*", "a") and not covers("a*", "ab") and not covers("a/b", "a/*")


# --- (e) validity -----------------------------------------------------------------

def test_not_yet_valid_and_expired_boundaries(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    data = build(straight).data
    trusted = [keys[0].public_key]
    assert code(impl, data, trusted, now=NOW - 1000) is Code.OK  # not_before is inclusive
    assert code(impl, data, trusted, now=NOW - 1001) is Code.NOT_YET_VALID
    assert code(impl, data, trusted, now=NOW + 99_999) is Code.OK
    assert code(impl, data, trusted, now=NOW + 100_000) is Code.EXPIRED  # not_after is exclusive


def test_session_mismatch(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    data = build([with_(straight[0], session_id=b"s" * 16)] + straight[1:]).data
    trusted = [keys[0].public_key]
    assert code(impl, data, trusted, session=b"s" * 16) is Code.OK
    assert code(impl, data, trusted, session=b"t" * 16) is Code.SESSION_MISMATCH
    assert code(impl, data, trusted) is Code.OK  # no session expected


def test_revoked_link(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    import blake3

    built = build(straight)
    trusted = [keys[0].public_key]
    for sig in built.sigs:
        assert code(impl, built.data, trusted, revoked=[blake3.blake3(sig).digest()]) is Code.REVOKED
    assert code(impl, built.data, trusted, revoked=[bytes(32)]) is Code.OK


# --- precedence (SPEC §4) -----------------------------------------------------------

def test_precedence(impl: ModuleType, keys: list[Any], straight: list[L]) -> None:
    trusted = [keys[0].public_key]
    # untrusted beats bad signature
    bad_sig = [straight[0], with_(straight[1], signer=keys[5]), straight[2]]
    assert code(impl, build(bad_sig).data, [keys[7].public_key]) is Code.UNTRUSTED_ISSUER
    # bad signature beats broken link
    both = [straight[0], with_(straight[1], signer=keys[5], prev_sig=bytes(64)), straight[2]]
    assert code(impl, build(both).data, trusted) is Code.BAD_SIGNATURE
    # broken link beats widening
    broken_wide = [straight[0], with_(straight[1], prev_sig=bytes(64), budget=10**6), straight[2]]
    assert code(impl, build(broken_wide).data, trusted) is Code.BROKEN_LINK
    # link 0 expired is reported before link 1's widening...
    expired0 = [with_(straight[0], not_after=NOW), with_(straight[1], not_after=NOW), straight[2]]
    expired0[2] = with_(expired0[2], not_after=NOW, caps=[("x", "y")], budget=5)
    chain = [expired0[0], with_(expired0[1], budget=10**6), expired0[2]]
    assert code(impl, build(chain).data, trusted) is Code.EXPIRED
    # ...but link 1's widening is reported before link 1's expiry
    chain = [straight[0], with_(straight[1], budget=10**6, not_after=NOW), with_(straight[2], not_after=NOW)]
    assert code(impl, build(chain).data, trusted) is Code.BUDGET_WIDENED
    # within a link: scope before budget before time before depth
    wide_all = with_(straight[1], caps=[("*", "*"), ("x", "y")], budget=10**6, not_after=NOW + 10**7, max_depth=99)
    assert code(impl, build([with_(straight[0], caps=[("x", "*")]), wide_all]).data, trusted) is Code.SCOPE_WIDENED
    # revoked comes after the session check on link 0
    import blake3

    s0 = build([with_(straight[0], session_id=b"a" * 16)])
    rid = blake3.blake3(s0.sigs[0]).digest()
    assert code(impl, s0.data, trusted, session=b"b" * 16, revoked=[rid]) is Code.SESSION_MISMATCH


# --- (a) malformed ------------------------------------------------------------------

def malformed_cases(keys: list[Any]) -> dict[str, bytes]:
    base = chain_of(keys[:3])
    good = build(base).data
    body0 = build(base).bodies[0]
    return {
        "truncated": good[:-1],
        "truncated_to_header": good[:5],
        "empty": b"",
        "trailing_bytes": good + b"\0",
        "bad_magic": b"HGC2" + good[4:],
        "zero_links": b"HGC1\x00",
        "count_says_more": b"HGC1\x03" + good[5:],
        "count_says_fewer": b"HGC1\x01" + good[5:],
        "body_len_too_long": build([with_(base[0], body_len_delta=1), base[1]]).data,
        "body_len_too_short": build([with_(base[0], body_len_delta=-1), base[1]]).data,
        "body_len_huge": good[:5] + struct.pack("<I", 2**32 - 1) + good[9:],
        "extra_inside_body": build([with_(base[0], extra=b"\0"), base[1]]).data,
        "empty_unit": build([with_(base[0], unit=""), base[1]]).data,
        "empty_resource": build([with_(base[0], caps=[("", "read")]), base[1]]).data,
        "empty_ability": build([with_(base[0], caps=[("files", "")]), base[1]]).data,
        "nul_in_string": build([with_(base[0], unit="us\0d"), base[1]]).data,
        "invalid_utf8": build([with_(base[0], caps=[(b"\xff\xfe", "read")]), base[1]]).data,
        "zero_caps": build([with_(base[0], caps=[], ncap=0)]).data,
        "too_many_caps": build([with_(base[0], caps=[("r%d" % i, "a") for i in range(65)])]).data,
        "ncap_lies": build([with_(base[0], ncap=2)]).data,
        "too_many_links": build(chain_of((keys * 3)[:18], max_depth=20)).data,
        "grant_kind_later": build([base[0], with_(base[1], kind=0)]).data,
        "delegation_kind_first": build([with_(base[0], kind=1)]).data,
        "unknown_kind": build([with_(base[0], kind=7)]).data,
        "not_before_eq_not_after": build([with_(base[0], not_before=5, not_after=5)]).data,
        "over_64_kib": build(
            [with_(base[0], caps=[("r" * 255, "a" * 255)] * 64)] + [
                with_(l, caps=[("r" * 255, "a" * 255)] * 64) for l in chain_of(keys[1:4], max_depth=5)
            ]
        ).data,
        "lone_body": body0,
    }


MALFORMED_NAMES = list(malformed_cases([hopgate.SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(8)]))


@pytest.mark.parametrize("name", MALFORMED_NAMES)
def test_malformed(impl: ModuleType, keys: list[Any], name: str) -> None:
    data = malformed_cases(keys)[name]
    assert code(impl, data, [keys[0].public_key]) is Code.MALFORMED
    with pytest.raises(hopgate.MalformedError) as info:
        impl.Chain.from_bytes(data)
    assert isinstance(info.value, ValueError) and info.value.field


def test_size_limits_are_inclusive(impl: ModuleType, keys: list[Any]) -> None:
    trusted = [keys[0].public_key]
    sixteen = build(chain_of((keys * 3)[:17], max_depth=20)).data
    assert code(impl, sixteen, trusted) is Code.OK
    caps64 = build([L(signer=keys[0], holder=keys[1].public_key, caps=[("r%d" % i, "a") for i in range(64)])]).data
    assert code(impl, caps64, trusted) is Code.OK
    long_str = build([L(signer=keys[0], holder=keys[1].public_key, caps=[("r" * 255, "a" * 255)])]).data
    assert code(impl, long_str, trusted) is Code.OK


def test_malformed_error_names_field_and_offset(impl: ModuleType, keys: list[Any]) -> None:
    good = build(chain_of(keys[:3])).data
    with pytest.raises(hopgate.MalformedError) as info:
        impl.Chain.from_bytes(b"HGC2" + good[4:])
    assert (info.value.field, info.value.offset) == ("magic", 0)
    with pytest.raises(hopgate.MalformedError) as info:
        impl.Chain.from_bytes(good + b"!!")
    assert (info.value.field, info.value.offset) == ("trailing", len(good))


# --- builders ------------------------------------------------------------------------

def grant(impl: ModuleType, k: list[Any], **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        caps=[("files/*", "read"), ("payments/*", "refund")],
        budget=1000,
        unit="usd-cents",
        not_before=NOW - 10,
        not_after=NOW + 3600,
        max_depth=3,
    )
    args.update(kw)
    return impl.Chain.grant(k[0], k[1].public_key, **args)


def impl_keys(impl: ModuleType) -> list[Any]:
    return [impl.SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(5)]


def test_builder_round_trip(impl: ModuleType) -> None:
    k = impl_keys(impl)
    c = grant(impl, k, session_id=b"S" * 16, nonce=b"N" * 16, meta_digest=b"M" * 32)
    c2 = c.delegate(k[1], k[2].public_key, caps=[("files/reports/*", "read")], budget=200)
    c3 = c2.delegate(k[2], k[3].public_key)
    assert len(c3) == 3 and c3.holder == k[3].public_key and c3.issuer == k[0].public_key
    assert c3.session_id == b"S" * 16
    again = impl.Chain.from_bytes(bytes(c3))
    assert again == c3 and hash(again) == hash(c3)
    assert impl.Chain.from_text(c3.to_text()) == c3
    assert "=" not in c3.to_text()
    links = c3.links
    assert [l.kind for l in links] == [0, 1, 1]
    assert [l.budget for l in links] == [1000, 200, 200]
    assert [l.max_depth for l in links] == [3, 2, 1]
    assert links[2].caps == (("files/reports/*", "read"),)
    assert links[1].prev_sig == links[0].signature
    assert links[0].meta_digest == b"M" * 32 and links[0].nonce == b"N" * 16
    import blake3

    assert list(c3.revocation_ids) == [blake3.blake3(l.signature).digest() for l in links]
    assert code(impl, bytes(c3), [k[0].public_key]) is Code.OK
    # the other implementation reads it identically
    other = hopgate.reference if impl is hopgate else hopgate
    assert bytes(other.Chain.from_bytes(bytes(c3))) == bytes(c3)
    assert other.Chain.from_bytes(bytes(c3)).digest == c3.digest


def test_grant_is_deterministic_across_implementations() -> None:
    def make(impl: ModuleType) -> bytes:
        k = impl_keys(impl)
        c = grant(impl, k, nonce=b"n" * 16).delegate(k[1], k[2].public_key, budget=5, nonce=b"m" * 16)
        invocation: bytes = c.invoke(k[2], "read", "files/x", 3, nonce=b"i" * 16, timestamp=NOW, payload=b"body")
        return bytes(c) + invocation

    assert make(hopgate) == make(hopgate.reference)


@pytest.mark.parametrize(
    "kw,expected",
    [
        ({"caps": [("*", "*")]}, Code.SCOPE_WIDENED),
        ({"budget": 1001}, Code.BUDGET_WIDENED),
        ({"unit": "eur"}, Code.BUDGET_WIDENED),
        ({"not_before": NOW - 11}, Code.TIME_WIDENED),
        ({"not_after": NOW + 3601}, Code.TIME_WIDENED),
        ({"max_depth": 3}, Code.DEPTH_EXCEEDED),
    ],
)
def test_delegate_refuses_widening(impl: ModuleType, kw: dict[str, Any], expected: Code) -> None:
    k = impl_keys(impl)
    with pytest.raises(hopgate.DelegationError) as info:
        grant(impl, k).delegate(k[1], k[2].public_key, **kw)
    assert info.value.code is expected


def test_delegate_refuses_wrong_holder_and_depth(impl: ModuleType) -> None:
    k = impl_keys(impl)
    with pytest.raises(hopgate.DelegationError) as info:
        grant(impl, k).delegate(k[3], k[2].public_key)
    assert info.value.code is Code.BAD_SIGNATURE
    flat = grant(impl, k, max_depth=0)
    with pytest.raises(hopgate.DelegationError) as info:
        flat.delegate(k[1], k[2].public_key)
    assert info.value.code is Code.DEPTH_EXCEEDED


def test_delegate_refuses_seventeenth_link(impl: ModuleType) -> None:
    k = impl_keys(impl)
    c = grant(impl, k, max_depth=200)
    for i in range(15):
        c = c.delegate(k[1 + i % 2], k[1 + (i + 1) % 2].public_key)
    assert len(c) == 16
    with pytest.raises(hopgate.DelegationError) as info:
        c.delegate(c.links[-1].holder == k[1].public_key and k[1] or k[2], k[3].public_key)
    assert info.value.code is Code.MALFORMED


def test_builders_refuse_bad_arguments(impl: ModuleType) -> None:
    k = impl_keys(impl)
    kw: dict[str, Any]
    for kw in ({"unit": ""}, {"caps": []}, {"caps": [("", "a")]}, {"not_before": NOW + 3600}, {"caps": [("a", "b")] * 65}):
        with pytest.raises(hopgate.HopgateError):
            grant(impl, k, **kw)
    for kw in ({"budget": -1}, {"budget": 2**64}, {"max_depth": 256}, {"session_id": b"short"}, {"nonce": b"x"}):
        with pytest.raises(hopgate.InputError):
            grant(impl, k, **kw)
    with pytest.raises(hopgate.InputError):
        impl.Chain.grant(k[0], b"short", [("a", "b")], 1, "u", 0, 1, 0)


def test_invoke_refuses_out_of_grant(impl: ModuleType) -> None:
    k = impl_keys(impl)
    c = grant(impl, k)
    with pytest.raises(hopgate.DelegationError) as info:
        c.invoke(k[1], "write", "files/x", 1)
    assert info.value.code is Code.SCOPE_DENIED
    with pytest.raises(hopgate.DelegationError) as info:
        c.invoke(k[1], "read", "files/x", 1001)
    assert info.value.code is Code.COST_EXCEEDS_GRANT
    with pytest.raises(hopgate.DelegationError) as info:
        c.invoke(k[2], "read", "files/x", 1)
    assert info.value.code is Code.BAD_SIGNATURE


def test_invocation_bytes_match_raw_encoding(keys: list[Any]) -> None:
    import blake3

    c = hopgate.Chain.grant(keys[0], keys[1].public_key, [("files/*", "read")], 10, "u", NOW - 1, NOW + 1, 0)
    inv = c.invoke(keys[1], "read", "files/a", 2, nonce=b"q" * 16, timestamp=NOW, payload=b"p")
    raw = invocation(keys[1], c.tail_signature, "read", "files/a", 2, NOW, b"q" * 16, blake3.blake3(b"p").digest())
    assert inv == raw


def test_verify_chains_inputs(impl: ModuleType, keys: list[Any]) -> None:
    good = build(chain_of(keys[:3])).data
    bad = good[:-1]
    trusted = [keys[0].public_key]
    expected = [Code.OK, Code.MALFORMED, Code.OK]
    chain_obj = impl.Chain.from_bytes(good)
    assert codes(impl, [good, bad, chain_obj], trusted) == expected
    offsets = np.array([0, len(good), len(good) + len(bad), 2 * len(good) + len(bad)], np.int64)
    assert codes(impl, good + bad + good, trusted, offsets=offsets) == expected  # type: ignore[arg-type]
    readonly = np.frombuffer(good + bad + good, np.uint8)
    assert not readonly.flags.writeable
    assert codes(impl, readonly, trusted, offsets=offsets) == expected  # type: ignore[arg-type]
    assert impl.verify_chains([], trusted).dtype == np.uint8
    with pytest.raises(hopgate.InputError):
        impl.verify_chains([good], [b"short"])
    with pytest.raises(hopgate.InputError):
        impl.verify_chains([good], trusted, session=b"x")


def test_text_form_is_strict(impl: ModuleType, keys: list[Any]) -> None:
    c = impl.Chain.from_bytes(build(chain_of(keys[:2])).data)
    text = c.to_text()
    for bad in (text + "=", text[:-1] + "!", text + "A", "", " " + text, text + " ", text + "\n\n", text + "\r",
                "\n" + text, text + "\n\r\n", text[:10] + "\n" + text[10:]):
        with pytest.raises(hopgate.MalformedError):
            impl.Chain.from_text(bad)


def test_text_form_ignores_one_line_ending(impl: ModuleType, keys: list[Any], tmp_path: Any) -> None:
    # What `open(f).read()` returns for a file written with a final newline.
    c = impl.Chain.from_bytes(build(chain_of(keys[:2])).data)
    path = tmp_path / "c.chain"
    path.write_text(c.to_text() + "\n")
    assert impl.Chain.from_text(path.read_text()) == c
    assert impl.Chain.from_text(c.to_text() + "\r\n") == c
    assert impl.from_text("-_8\n") == b"\xfb\xff"


def test_chain_pickles_as_bytes(keys: list[Any]) -> None:
    import pickle

    c = hopgate.Chain.from_bytes(build(chain_of(keys[:3])).data)
    assert pickle.loads(pickle.dumps(c)) == c


def test_parse_invocation_reads_every_field(impl: ModuleType) -> None:
    k = impl_keys(impl)
    c = grant(impl, k, nonce=b"n" * 16)
    raw = c.invoke(k[1], "read", "files/x", 7, nonce=b"i" * 16, timestamp=NOW, payload=b"body")
    inv = impl.parse_invocation(raw)
    assert (inv.ability, inv.resource, inv.cost, inv.timestamp, inv.nonce) == ("read", "files/x", 7, NOW, b"i" * 16)
    assert inv.tail_sig == c.tail_signature
    assert inv.payload_digest == hopgate.blake3(b"body")
    assert raw == b"HGI1" + struct.pack("<I", len(inv.body)) + inv.body + inv.signature
    # The same offsets in both implementations; the signature field is named "sig"
    # natively and "signature" in the reference.
    short_sig = "sig" if impl is hopgate else "signature"
    cases = ((raw[:-1], short_sig, len(raw) - 64), (raw + b"\0", "trailing", len(raw)), (b"HGC1" + raw[4:], "magic", 0))
    for bad, field, offset in cases:
        with pytest.raises(hopgate.MalformedError) as e:
            impl.parse_invocation(bad)
        assert (e.value.field, e.value.offset) == (field, offset)


def test_text_form_round_trips_and_is_strict(impl: ModuleType) -> None:
    for raw in (b"", b"\x00", b"\xff\xfe", bytes(range(256))):
        text = impl.to_text(raw)
        assert "=" not in text and impl.from_text(text) == raw
        assert text == hopgate.to_text(raw)
    assert impl.to_text(b"\xfb\xff") == "-_8"
    for bad in ("AA==", "A", "AB", "-_9", "AA A", "AA+A", "AA/A"):  # padding, length, leftover bits, alphabet
        with pytest.raises(hopgate.MalformedError):
            impl.from_text(bad)


@pytest.mark.parametrize("bad", ["", "x" * 256, "a\0b", "\ud800", "é" * 128])
def test_builders_refuse_bad_names_with_input_error(impl: ModuleType, bad: str) -> None:
    # One exception class for a bad argument in every builder, both implementations.
    k = impl_keys(impl)
    c = grant(impl, k)
    attempts: list[Callable[[], object]] = [
        lambda: impl.Chain.grant(k[0], k[1].public_key, [(bad, "read")], budget=1, unit="u", not_before=0,
                                 not_after=10, max_depth=0),
        lambda: impl.Chain.grant(k[0], k[1].public_key, [("files/*", bad)], budget=1, unit="u", not_before=0,
                                 not_after=10, max_depth=0),
        lambda: impl.Chain.grant(k[0], k[1].public_key, [("files/*", "read")], budget=1, unit=bad, not_before=0,
                                 not_after=10, max_depth=0),
        lambda: c.delegate(k[1], k[2].public_key, unit=bad),
        lambda: c.invoke(k[1], bad, "files/x", 1),
        lambda: c.invoke(k[1], "read", bad, 1),
    ]
    for attempt in attempts:
        with pytest.raises(hopgate.InputError):
            attempt()
