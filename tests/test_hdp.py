"""hopgate.hdp against the real HDP SDK (``hdp-langchain``'s ``verify_chain``, records signed
with its own ``sign_root``/``sign_hop`` and its RFC 8785 library ``jcs``): a generated corpus
of records (valid, every validation rule broken, tampered, reordered, wrong keys, JSON
text with duplicate members and non-finite numbers) must give the same ``VerificationResult``
field values one by one and in a batch, on both implementations; canonical JSON against
``jcs.canonicalize`` on random values (doubles above all), in both directions."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import random
import struct
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any, Callable

import jcs  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hdp_langchain._crypto import sign_hop, sign_root  # type: ignore[import-untyped]
from hdp_langchain.verify import verify_chain as sdk_verify_chain  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

import hopgate
import hopgate.hdp as hh
from hopgate import reference

ISSUER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ISSUER_RAW = ISSUER.private_bytes_raw()
PUBLIC = ISSUER.public_key().public_bytes_raw()
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def record(
    rng: random.Random, hops: int, *, extra: Any = None, key: bytes = ISSUER_RAW, max_hops: int = 0
) -> dict[str, Any]:
    """A record signed by the SDK: `hops` hops, `extra` in the principal's metadata, a
    random `max_hops` unless given."""
    token: dict[str, Any] = {
        "hdp": "0.1",
        "header": {
            "token_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "issued_at": 1_700_000_000_000,
            "expires_at": 1_700_000_000_000 + rng.randint(1, 10**6),
            "session_id": f"session-{rng.randint(0, 99)}",
            "version": "0.1",
        },
        "principal": {"id": "alice@example.com", "id_type": rng.choice(["email", "did", "x-team"])},
        "scope": {
            "intent": rng.choice(["book travel", "réserver un vol ✈", "тест\n\t\"q\"\\"]),
            "data_classification": rng.choice(["public", "internal", "confidential", "restricted"]),
            "network_egress": rng.random() < 0.5,
            "persistence": rng.random() < 0.5,
            "authorized_tools": ["search", "book"],
            "max_hops": max_hops or rng.randint(1, 6),
        },
    }
    if extra is not None:
        token["principal"]["metadata"] = {"extra": extra}
    token["signature"] = sign_root(token, key, "issuer-key-1")
    chain: list[dict[str, Any]] = []
    for index in range(hops):
        hop = {
            "seq": index + 1,
            "agent_id": f"agent-{index}",
            "agent_type": "sub-agent",
            "timestamp": (chain[-1]["timestamp"] if chain else token["header"]["issued_at"]) + rng.randint(0, 10**6),
            "action_summary": rng.choice(["searched", "booked 🛫", "handed off"]),
            "parent_hop": index,
        }
        if rng.random() < 0.3:
            hop["agent_fingerprint"] = "fp-" + str(index)
        hop["hop_signature"] = sign_hop([*chain, hop], token["signature"]["value"], key)
        chain.append(hop)
    token["chain"] = chain
    return token


def fields(result: Any) -> dict[str, Any]:
    return dataclasses.asdict(result)


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return fields(call())
    except Exception as error:  # compared by class and text
        return (type(error).__name__, str(error))


@pytest.fixture(params=["native", "reference"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """hopgate.hdp with its signature checks on either implementation."""
    if request.param == "reference":
        monkeypatch.setattr(hh, "_hdp_verify", reference.hdp_verify)
    else:
        assert hh._hdp_verify is hopgate._native.hdp_verify  # type: ignore[attr-defined]
    return str(request.param)


def sdk_verify_chain_copy(token: Any, key: Any) -> Any:
    return sdk_verify_chain(copy.deepcopy(token), key)


def same(tokens: list[Any], key: Any = PUBLIC) -> list[dict[str, Any]]:
    """Asserts hopgate.hdp gives the SDK's answer on every token, single and batch; returns
    the SDK's answers."""
    expected = [outcome(partial(sdk_verify_chain_copy, t, key)) for t in tokens]
    single = [outcome(partial(hh.verify_chain, t, key)) for t in tokens]
    for token, want, got in zip(tokens, expected, single):
        assert got == want, token
    answered = [(t, e) for t, e in zip(tokens, expected) if isinstance(e, dict)]
    assert [fields(r) for r in hh.verify_chains([t for t, _ in answered], key)] == [e for _, e in answered]
    return expected


# -- the corpus ---------------------------------------------------------------------------


def mutations(token: dict[str, Any]) -> Iterator[Any]:
    """Every way of breaking a valid record the SDK tells apart, each applied to a copy."""

    def changed(edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        t = copy.deepcopy(token)
        edit(t)
        return t

    def put(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
        def edit(t: dict[str, Any]) -> None:
            target: Any = t
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = value

        return edit

    def drop(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
        def edit(t: dict[str, Any]) -> None:
            target: Any = t
            for step in path[:-1]:
                target = target[step]
            del target[path[-1]]

        return edit

    odd_values: list[Any] = [None, True, False, 0, -1, 1.5, float("nan"), float("inf"), 2**53, 2**53 + 1, 2**64, 10**400,
                  "", "x", "\ud800", [], ["a"], [1], {}, {"a": 1}, (1,), b"b", {1: 2}, set()]
    places: list[tuple[Any, ...]] = [
        ("hdp",), ("header",), ("header", "token_id"), ("header", "issued_at"), ("header", "expires_at"),
        ("header", "session_id"), ("header", "version"), ("header", "parent_token_id"), ("principal",),
        ("principal", "id"), ("principal", "id_type"), ("principal", "display_name"),
        ("principal", "poh_credential"), ("principal", "metadata"), ("scope",), ("scope", "intent"),
        ("scope", "authorized_tools"), ("scope", "authorized_resources"), ("scope", "data_classification"),
        ("scope", "network_egress"), ("scope", "persistence"), ("scope", "max_hops"), ("scope", "constraints"),
        ("scope", "extensions"), ("chain",), ("signature",), ("signature", "alg"), ("signature", "kid"),
        ("signature", "value"), ("signature", "signed_fields"), ("extra",),
    ]
    if token["chain"]:
        places += [("chain", 0, name) for name in (
            "seq", "agent_id", "agent_type", "timestamp", "action_summary", "parent_hop", "hop_signature",
            "agent_fingerprint", "other")]
        places += [("chain", 0)]
    for place in places:
        for value in odd_values:
            yield changed(put(place, value))
        yield changed(drop(place)) if _has(token, place) else changed(put(place, "present"))
    # Values that pass a type check but break a rule.
    for value in ["0.2", "0.1 ", "0.10"]:
        yield changed(put(("hdp",), value))
        yield changed(put(("header", "version"), value))
    for text in [str(uuid.uuid1()), str(uuid.uuid4()).upper(), "{" + str(uuid.uuid4()) + "}",
                 str(uuid.uuid4()).replace("-", ""), "urn:uuid:" + str(uuid.uuid4()),
                 "00000000-0000-4000-0000-000000000000", "00000000-0000-4000-c000-000000000000"]:
        yield changed(put(("header", "token_id"), text))
        yield changed(put(("header", "parent_token_id"), text))
    yield changed(put(("header", "expires_at"), token["header"]["issued_at"]))
    yield changed(put(("header", "issued_at"), 2**53))
    for id_type in ["x-", "x-a\nb", "x-a\u2028", "x-ok", "EMAIL", "poh"]:
        yield changed(put(("principal", "id_type"), id_type))
    for fields_ in [["header", "principal"], ["scope", "principal", "header"], ["header", "principal", "scope"]]:
        yield changed(put(("signature", "signed_fields"), fields_))
    yield changed(put(("signature", "alg"), "EdDSA"))
    yield changed(put(("scope", "max_hops"), max(1, len(token["chain"]) - 1)))
    sig = token["signature"]["value"]
    for i in (0, 42, 85):
        for c in "AQgw_-":
            yield changed(put(("signature", "value"), sig[:i] + c + sig[i + 1:]))
    yield changed(put(("signature", "value"), sig + "A"))
    yield changed(put(("scope", "intent"), token["scope"]["intent"] + "!"))
    yield changed(put(("header", "session_id"), "another"))
    for index, hop in enumerate(token["chain"]):
        s = hop["hop_signature"]
        yield changed(put(("chain", index, "hop_signature"), s[:10] + ("B" if s[10] != "B" else "C") + s[11:]))
        yield changed(put(("chain", index, "hop_signature"), s[:85] + ("P" if s[85] == "A" else "A")))
        yield changed(put(("chain", index, "action_summary"), "edited"))
        yield changed(put(("chain", index, "seq"), index + 2))
        yield changed(put(("chain", index, "parent_hop"), index + 1))
        yield changed(put(("chain", index, "timestamp"), 0))
        yield changed(put(("chain", index, "agent_type"), "x"))
    if len(token["chain"]) > 1:
        yield changed(lambda t: t["chain"].reverse())
        yield changed(lambda t: t["chain"].pop(0))
        yield changed(lambda t: t["chain"].pop())
        yield changed(lambda t: t["chain"].append(copy.deepcopy(t["chain"][-1])))


def _has(token: dict[str, Any], place: tuple[Any, ...]) -> bool:
    target: Any = token
    for step in place:
        if not isinstance(target, (dict, list)) or (isinstance(target, dict) and step not in target):
            return False
        target = target[step]
    return True


@pytest.mark.parametrize("hops", [0, 1, 3])
def test_every_mutation_matches_the_sdk(backend: str, hops: int) -> None:
    rng = random.Random(hops)
    base = record(rng, hops, extra={"n": [1, 2.5, -0.0, 1e21, 1e-7, 2**60, "é"]})
    # The issuer signed a depth its chain then exceeds (step 5).
    too_deep = [record(rng, hops, max_hops=hops - 1)] if hops > 1 else []
    tokens = [base, *mutations(base), *too_deep]
    expected = same(tokens)
    assert expected[0]["valid"] is True
    verdicts = {e["valid"] if isinstance(e, dict) else e[0] for e in expected}
    # The corpus reaches accepted and refused records, and the SDK's exceptions.
    assert True in verdicts and False in verdicts
    steps = {v.split(":")[0] for e in expected if isinstance(e, dict) for v in e["violations"]}
    wanted = {"Step 0", "Step 1", "Step 2", "Step 3", "Step 4", "Step 5"} if hops > 1 else {"Step 0", "Step 1", "Step 2"}
    assert wanted <= steps


def test_many_valid_records_in_one_batch(backend: str) -> None:
    rng = random.Random(7)
    tokens = [record(rng, rng.randint(0, 5), max_hops=5) for _ in range(150)]
    expected = [fields(sdk_verify_chain(t, PUBLIC)) for t in tokens]
    assert all(e["valid"] for e in expected)
    assert [fields(r) for r in hh.verify_chains(tokens, PUBLIC)] == expected
    # Under another key, every record fails at its root, as in the SDK.
    other = OTHER.public_key().public_bytes_raw()
    assert [fields(r) for r in hh.verify_chains(tokens, other)] == [fields(sdk_verify_chain(t, other)) for t in tokens]


def test_attack_json_text_with_duplicate_members_and_non_finite_numbers(backend: str) -> None:
    rng = random.Random(3)
    text = json.dumps(record(rng, 2))
    tokens = [
        text,
        text.replace('"hdp": "0.1"', '"hdp": "0.1", "hdp": "0.1"'),
        text.replace('"persistence": ', '"persistence": NaN, "persistence": '),
        text.replace('"max_hops": ', '"max_hops": Infinity, "x": '),
        text.replace('"max_hops": ', '"max_hops": -Infinity, "x": '),
        text[:-1],
        text + "x",
        "",
        "[]",
        "null",
        '"\\ud800"',
        text.replace('"book', '"\\ud800book').replace('"r\\u00e9', '"\\ud800r').replace('"\\u0442', '"\\udfff'),
        text.replace('"alice@example.com"', '"alice@example.com", "display_name": "\\u0000\\u001f"'),
    ]
    same(tokens)


def test_keys_the_sdk_accepts_and_refuses(backend: str) -> None:
    rng = random.Random(5)
    tokens = [record(rng, 1), {"not": "a record"}]
    for key in [PUBLIC, bytearray(PUBLIC), ISSUER.public_key(), OTHER.public_key(), b"\x00" * 32, b"\xff" * 32,
                "a string", None, ISSUER, memoryview(PUBLIC)]:
        for token in tokens:
            same([token], key)
    # Bytes of another length: ValueError once a valid record needs the key, nothing before.
    for key in [PUBLIC[:31], PUBLIC + b"\x00", b""]:
        same(tokens, key)


def test_attack_small_order_issuer_key(backend: str) -> None:
    """A record whose signatures are made for the identity point: refused as the SDK's
    library refuses it (R = identity, S = 0 passes the cofactorless equation only with a
    small-order key and a small-order R)."""
    rng = random.Random(11)
    token = record(rng, 1)
    identity = (1).to_bytes(32, "little")
    forged = base64.urlsafe_b64encode(identity + bytes(32)).rstrip(b"=").decode()
    token["signature"]["value"] = forged
    token["chain"][0]["hop_signature"] = forged
    for key in [identity, bytes(32), PUBLIC]:
        same([token], key)


def test_attack_reordered_truncated_and_transplanted_hops(backend: str) -> None:
    """Hops moved, dropped, repeated, or taken from another record of the same issuer (a
    valid signature by the same key, over another root): each verdict is the SDK's, and
    only the untouched record and its prefixes (a truncated record is still signed) pass."""
    rng = random.Random(31)
    first, second = record(rng, 3, max_hops=4), record(rng, 3, max_hops=4)
    forged: list[dict[str, Any]] = []
    edits: list[Callable[[list[dict[str, Any]]], Any]] = [
        lambda c: c.reverse(),
        lambda c: c.pop(1),
        lambda c: c.insert(1, copy.deepcopy(c[0])),
        lambda c: c.__setitem__(2, copy.deepcopy(second["chain"][2])),
        lambda c: c.append(copy.deepcopy(second["chain"][2]) | {"seq": 4, "parent_hop": 3}),
    ]
    for edit in edits:
        token = copy.deepcopy(first)
        edit(token["chain"])
        forged.append(token)
    transplanted = copy.deepcopy(second)
    transplanted["signature"] = copy.deepcopy(first["signature"])
    truncated = copy.deepcopy(first)
    truncated["chain"].pop()
    expected = same([first, truncated, transplanted, *forged])
    assert [e["valid"] for e in expected] == [True, True] + [False] * (1 + len(forged))


def test_attack_member_order_and_escapes_cannot_forge(backend: str) -> None:
    """The signed bytes are canonical: reordering members or re-escaping strings in a
    record's JSON text changes nothing, and any change of a value breaks the signature."""
    rng = random.Random(13)
    token = record(rng, 2, extra={"b": 1, "a": [2, {"z": None, "y": "\u00e9\U0001f600"}]})
    text = json.dumps(token, ensure_ascii=True, sort_keys=True, indent=1)
    expected = same([text, json.dumps(token)])
    assert all(e["valid"] for e in expected)
    forged = json.loads(text)
    forged["principal"]["metadata"]["b"] = 2
    assert same([forged])[0]["violations"] == ["Step 2: Root signature invalid"]


# -- canonical JSON -----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_json_is_jcs(value: Any) -> None:
    expected = jcs.canonicalize(value)
    assert hopgate._native.canonical_json(value) == reference.canonical_json(value) == expected


def test_canonical_json_of_doubles_is_jcs() -> None:
    doubles = random_doubles(random.Random(29), 20_000)
    expected = [jcs.canonicalize(x) for x in doubles]
    assert [hopgate._native.canonical_json(x) for x in doubles] == expected
    assert [reference.canonical_json(x) for x in doubles] == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [(float("nan"), ValueError), (float("inf"), ValueError), (-float("inf"), ValueError), ([[float("nan")]], ValueError),
     # jcs rounds these to the nearest double without a word; HDP validation refuses them first.
     (2**53 + 1, ValueError), (10**400, ValueError), (-(10**400), ValueError),
     ("\ud800", ValueError), ({"\udfff": 1}, ValueError),
     ({1: 2}, TypeError), (b"x", TypeError), ({1, 2}, TypeError), (object(), TypeError)],
)
def test_canonical_json_refuses_what_has_no_canonical_form(value: Any, error: type[Exception]) -> None:
    for canonical_json in (hopgate._native.canonical_json, reference.canonical_json):
        with pytest.raises(error):
            canonical_json(value)


def random_doubles(rng: random.Random, count: int) -> list[float]:
    """Doubles from every exponent (random bit patterns), decimal edge cases and ties."""
    out: list[float] = []
    while len(out) < count:
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if x == x and abs(x) != float("inf"):
            out.append(x)
    out += [1e21, 1e-7, 1e-6, 9.999999999999999e20, 1e16, 5e-324, -0.0, 0.1, 1 / 3, 2.0**53, 2.0**-1074,
            1424953923781206.2, 333333333.33333325, 9.999999999999997e22, 1e23, 0.000001, 1.7976931348623157e308]
    return out


def test_native_canonical_numbers_are_jcs(backend: str) -> None:
    """Thousands of doubles, exact integers and strings put in records the SDK signs (with
    ``jcs``): each record verifies only if hopgate writes the same canonical bytes."""
    rng = random.Random(17)
    doubles = random_doubles(rng, 6000)
    integers = [rng.randint(-(2**53), 2**53) for _ in range(500)] + [2**60, -(2**70), 2**1000, 10**22, 10**21]
    strings = ["".join(chr(rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                       for _ in range(rng.randint(0, 12))) for _ in range(300)]
    names = {s: i for i, s in enumerate(strings)}
    chunks = [doubles[i:i + 500] for i in range(0, len(doubles), 500)] + [integers, strings, [names]]
    tokens = [record(rng, 1, extra=chunk) for chunk in chunks]
    expected = same(tokens)
    assert all(e["valid"] for e in expected)


def test_both_directions_records_signed_with_hopgates_canonical_form(backend: str) -> None:
    """Records whose signatures are made over hopgate's canonical bytes verify in the SDK."""
    rng = random.Random(19)
    tokens = []
    for chunk in range(8):
        token = record(rng, 2, extra=random_doubles(rng, 200) + [f"s{chunk}\u2028\x7f"], max_hops=2)
        root = {name: token[name] for name in ("hdp", "header", "principal", "scope")}
        root["chain"] = []
        sig = ISSUER.sign(reference.canonical_json(root))
        token["signature"]["value"] = base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
        for index, hop in enumerate(token["chain"]):
            unsigned = {k: v for k, v in hop.items() if k != "hop_signature"}
            message = reference.canonical_json([token["signature"]["value"], *token["chain"][:index], unsigned])
            hop["hop_signature"] = base64.urlsafe_b64encode(ISSUER.sign(message)).rstrip(b"=").decode()
        tokens.append(token)
    assert all(e["valid"] for e in same(tokens))


def test_native_and_reference_verdicts_agree_on_structural_errors() -> None:
    good = record(random.Random(23), 1)
    cases: list[list[Any]] = [[{"chain": []}], [{**good, "chain": "x"}], [{**good, "chain": [1]}], [[1]]]
    for records in cases:
        kinds = set()
        for verify in (hopgate._native.hdp_verify, reference.hdp_verify):
            with pytest.raises((ValueError, TypeError)) as caught:
                verify(records, PUBLIC)
            assert "records[0]" in str(caught.value)
            kinds.add(TypeError if caught.type is TypeError else ValueError)
        assert len(kinds) == 1, records
    deep: Any = []
    for _ in range(1200):
        deep = [deep]
    with pytest.raises((ValueError, RecursionError)):
        hopgate._native.hdp_verify([{**good, "scope": {**good["scope"], "constraints": deep}}], PUBLIC)
    assert hopgate._native.hdp_verify([good], PUBLIC) == reference.hdp_verify([good], PUBLIC) == [[True, True]]


@settings(max_examples=150, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=3), st.randoms(use_true_random=False))
def test_generated_records_match_the_sdk(extra: Any, hops: int, rng: random.Random) -> None:
    """Any JSON in a record's metadata: signed by the SDK, verified alike (native backend)."""
    token = record(rng, hops, extra=extra, max_hops=3)
    assert same([token, json.dumps(token)])[0]["valid"] is True
