"""hopgate.aip against the real ``agent-identity-protocol`` package (``aip_token``): a seeded
corpus of chains and compact tokens -- minted by the package itself, and crafted link by link
with keys held here to reach every check (hostile claim values, headers, ``cnf`` keys,
``prev`` and ``iss`` breaks, wrong signers, reordered, truncated and tampered links, bad
base64 and JSON) -- verified by the package and by ``hopgate.aip`` singly and in batches,
which must agree on every token: the same code, or the same links, claims and accessors.
The compact claims' lax coercions are compared with the package's pydantic model on
generated values. ``BudgetGate`` is tested on the memory and SQLite ledgers."""

from __future__ import annotations

import base64
import json
import pathlib
import random
import threading
import time
from dataclasses import fields
from functools import partial
from typing import Any, Callable, Optional, Union

import pytest
from aip_core.crypto import KeyPair  # type: ignore[import-untyped]
from aip_token import (  # type: ignore[import-untyped]
    AipClaims as TheirClaims,
    CompactToken as TheirCompact,
    JwtChain as TheirChain,
    TokenError as TheirError,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import hopgate
import hopgate.aip as aip
from _reference_only import run_on_reference

NOW = int(time.time())
# The compact form's exp and iat are judged by PyJWT against the real clock: kept far from it.
FAR = NOW + 10**6
PAST = NOW - 10**6


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def private(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([i + 11]) * 32)


KEYS = [private(i) for i in range(6)]
PAIRS = [KeyPair(k) for k in KEYS]
PUBS = [p.public_key_bytes() for p in PAIRS]
LINK = {"alg": "EdDSA", "typ": "aip-link+jwt"}
COMPACT = {"alg": "EdDSA", "typ": "aip+jwt"}


def jwk(public: bytes) -> dict[str, Any]:
    return {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(public)}}


def jws(header: Union[dict[str, Any], bytes], payload: Union[dict[str, Any], bytes], key: Ed25519PrivateKey) -> str:
    """A JWS over raw header and payload bytes (JSON no encoder writes included)."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(h)}.{b64(p)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def prev_of(segment: str) -> str:
    import hashlib

    return b64(hashlib.sha256(segment.encode()).digest())


# -- outcomes, compared field by field with their types ---------------------------------------


def typed(value: Any) -> Any:
    """A value with its type spelled out (1, 1.0 and True differ; sets sorted)."""
    if isinstance(value, (set, frozenset)):
        return ("set", sorted(typed(v) for v in value))
    if isinstance(value, (list, tuple)):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


def link_values(link: Any) -> Any:
    names = [f.name for f in fields(aip.Link)]
    return [(name, typed(getattr(link, name))) for name in names]


def attempt(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except (TheirError, aip.TokenError) as error:
        return ("refused", error.code)
    except Exception as error:  # the package's own crashes, kept by name
        return ("crashed", type(error).__name__)


def chain_view(chain: Any) -> Any:
    return (
        [link_values(link) for link in chain.links],
        link_values(chain.effective),
        chain.issuer(),
        chain.depth(),
        chain.leaf_delegate(),
        attempt(chain.leaf_holder_key),
        chain.serialize(),
        [attempt(partial(chain.authorize, t, d)) for t, d in REQUESTS],
    )


REQUESTS = [("search:web", None), ("search:web", "x.com"), ("mail:send", "z.com"), ("tool:x", None), ("*", None)]


def claims_view(claims: Any) -> Any:
    return [(name, typed(getattr(claims, name))) for name in
            ("iss", "sub", "scope", "budget_usd", "max_depth", "iat", "exp")]


def theirs_chain(token: Any, key: Any, now: Optional[int]) -> Any:
    result = attempt(lambda: TheirChain.verify(token, key, now))
    return ("ok", chain_view(result[1])) if result[0] == "ok" else result


def ours_chain(token: Any, key: Any, now: Optional[int]) -> Any:
    result = attempt(lambda: aip.JwtChain.verify(token, key, now))
    return ("ok", chain_view(result[1])) if result[0] == "ok" else result


def expected(theirs: Any) -> Any:
    """What hopgate.aip answers where the package answers ``theirs``: the same, except that
    a crash of the package (an exception that is not a TokenError) is ``token_malformed``."""
    return ("refused", "token_malformed") if theirs[0] == "crashed" else theirs


# -- the corpus ------------------------------------------------------------------------------

ODD: list[Any] = [
    None, True, False, 0, 1, -1, 7, 2**64, -(2**70), 10**30, 1.0, 1.5, -0.0, 2.0, 1e300,
    float("nan"), float("inf"), float("-inf"), "", " ", "x", "1", " 2 ", "1_0", "1.0", "inf",
    [], ["a"], ["*"], [1], ["search:*", "x"], {}, {"a": 1}, "tool:*", NOW, FAR, PAST, str(FAR),
]


def minted(rng: random.Random) -> tuple[str, bytes]:
    """A valid chain of 1 to 4 links, minted by the package."""
    links = rng.randrange(1, 5)
    holders = [rng.randrange(len(PAIRS)) for _ in range(links + 1)]
    tools = rng.choice([["search:*", "mail:send"], ["*"], ["search:web"], ["tool:*", "search:web", "mail:send"]])
    domains = rng.choice([None, ["x.com", "y.com"], ["x.com"]])
    budget = rng.choice([None, 0, 100, 10_000])
    chain = TheirChain.create_root(
        issuer="aip:root", delegate="aip:d0", tools=tools, max_depth=rng.randrange(links - 1, links + 2),
        ttl_seconds=rng.choice([600, 3600]), issuer_keypair=PAIRS[holders[0]],
        holder_public_key=PUBS[holders[1]], budget_cents=budget, domains=domains,
        principal=rng.choice([None, "user:alice"]), now=NOW - rng.randrange(30),
    )
    for i in range(1, links):
        narrower = rng.choice([None, tools[:1], tools[-1:]])
        tools = narrower or tools
        chain = chain.append(
            holder_keypair=PAIRS[holders[i]], delegate=f"aip:d{i}", next_holder_public_key=PUBS[holders[i + 1]],
            context=rng.choice(["summarise the inbox", "book a flight"]), tools=narrower,
            domains=rng.choice([None, domains[-1:]]) if domains else None,
            budget_cents=rng.choice([None, budget // 2]) if budget else None,
            ttl_seconds=rng.choice([None, 300 - 50 * i]), principal=rng.choice([None, "user:alice"]),
            now=NOW,
        )
    return chain.serialize(), PUBS[holders[0]]


def crafted(rng: random.Random) -> tuple[Any, Any, Optional[int]]:
    """A chain built link by link with keys held here, then damaged in one of many ways."""
    count = rng.randrange(1, 5)
    holders = [rng.randrange(len(KEYS)) for _ in range(count + 1)]
    segments: list[str] = []
    sub = "aip:root"
    for i in range(count):
        header: Union[dict[str, Any], bytes] = dict(LINK)
        claims: dict[str, Any] = {"iss": sub, "sub": f"aip:d{i}", "iat": NOW, "jti": f"j{i}",
                                  "cnf": jwk(PUBS[holders[i + 1]])}
        if i == 0:
            claims.update({"exp": NOW + 600, "aip_tools": ["search:*", "mail:send"],
                           "aip_max_depth": rng.choice([3, 3, 3, 0, 1, 2]),
                           "aip_budget_cents": 1000, "aip_domains": ["x.com", "y.com"]})
        else:
            claims.update({"prev": prev_of(segments[-1]), "aip_ctx": "a task"})
            # Narrower values mostly, a wider one at times.
            for name, values in (("aip_tools", [["search:web"], ["search:*"], ["mail:*"], ["*"], ["search:web", "x"]]),
                                 ("aip_budget_cents", [500, 500, 1000, 1001, -1, 0]),
                                 ("exp", [NOW + 300, NOW + 300, NOW + 601, NOW - 1]),
                                 ("aip_domains", [["x.com"], ["x.com"], ["z.com"]]),
                                 ("aip_principal", ["user:alice", "user:alice", "user:mallory"])):
                if rng.random() < 0.4:
                    claims[name] = rng.choice(values)
        sub = claims["sub"]
        signer = KEYS[holders[i]]
        if rng.random() < 0.35:  # one hostile claim
            name = rng.choice(["iss", "sub", "exp", "iat", "nbf", "prev", "aip_ctx", "aip_tools", "aip_domains",
                               "aip_budget_cents", "aip_max_depth", "aip_principal", "cnf", "aud", "jti", "kid"])
            choice = rng.random()
            if choice < 0.15:
                claims.pop(name, None)
            elif name == "cnf":
                claims["cnf"] = rng.choice([
                    {}, {"jwk": {}}, jwk(PUBS[rng.randrange(len(PUBS))]), {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": 5}},
                    {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(bytes(31))}},
                    {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(PUBS[0]) + "="}},
                    {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(PUBS[0]) + "A"}},
                    {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(PUBS[0])[:-1] + "B"}},
                    {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(PUBS[0]).replace("-", "+")}},
                    {"jwk": {"kty": "EC", "crv": "Ed25519", "x": b64(PUBS[0])}},
                    {"jwk": {"kty": "OKP", "crv": "X25519", "x": b64(PUBS[0])}}, [1], "x",
                ])
            elif name == "iss" and choice < 0.3:
                claims["iss"] = f"aip:d{i - 2}"
            else:
                claims[name] = rng.choice(ODD)
        if rng.random() < 0.06:
            headers: list[Union[dict[str, Any], bytes]] = [
                {"alg": "EdDSA"}, {"alg": "none", "typ": "aip-link+jwt"}, {"alg": "HS256", "typ": "aip-link+jwt"},
                {"alg": "Ed25519", "typ": "aip-link+jwt"}, {"alg": "EdDSA", "typ": "JWT"}, {**LINK, "kid": 1},
                {**LINK, "crit": ["b64"], "b64": False}, {**LINK, "crit": ["exp"]}, {**LINK, "crit": []}, b"[1]",
                b'{"alg":"EdDSA","typ":"aip-link+jwt","typ":"JWT"}', b'{"typ":"JWT","alg":"EdDSA","typ":"aip-link+jwt"}',
                b"{bad json", dict(COMPACT),
            ]
            header = rng.choice(headers)
        payload: Union[dict[str, Any], bytes] = claims
        if rng.random() < 0.04:
            # Duplicate keys: Python's json (and so PyJWT) keeps the last.
            text = json.dumps(claims)
            payload = (text[:-1] + ', "aip_budget_cents": 99999, "sub": "aip:other"}').encode()
        if rng.random() < 0.08:
            signer = KEYS[rng.randrange(len(KEYS))]  # the wrong signer, often
        segments.append(jws(header, payload, signer))
    token: Any = "~".join(segments)
    roll = rng.random()
    if roll < 0.04:
        rng.shuffle(segments)
        token = "~".join(segments)
    elif roll < 0.08:
        token = "~".join(segments[: rng.randrange(len(segments) + 1)] + segments[rng.randrange(len(segments)):][:1])
    elif roll < 0.20:
        position = rng.randrange(len(token))
        replacement = rng.choice(["", "A", "_", "-", "=", ".", "~", "~~", " ", "é", "\ud800", "+", "/", "\x00"])
        token = token[:position] + replacement + token[position + 1:]
    elif roll < 0.24:
        token = token[: rng.randrange(len(token))]
    key = PUBS[holders[0]]
    if rng.random() < 0.03:
        key = rng.choice([PUBS[0], b"\x00" * 32, bytes(31), bytearray(PUBS[holders[0]]), PUBS[holders[0]] + b"\x00", None])
    # ``now`` is always given to chains: their expiries lie minutes from NOW, and the package's
    # verdicts are computed when the module is collected, ours later.
    return token, key, rng.choice([NOW, NOW + 301, NOW + 599, NOW + 600, NOW + 601])


def compact_claims(rng: random.Random) -> dict[str, Any]:
    """Compact-token claims, often with a value of the wrong shape."""
    claims: dict[str, Any] = {"iss": "aip:i", "sub": "aip:s", "scope": ["search:web", "mail:*"],
                              "budget_usd": 12.34, "max_depth": 1, "iat": PAST, "exp": FAR}
    for name in list(claims) + ["nbf", "aud", "jti"]:
        roll = rng.random()
        if roll < 0.08:
            claims.pop(name, None)
        elif roll < 0.2:
            claims[name] = rng.choice(ODD + ["12", " 3 ", "1e3", "1_000", "+5", "0.0", "-1.0", "NaN", "1e400", True])
    return claims


def compact(rng: random.Random) -> tuple[Any, Any]:
    signer = rng.randrange(len(KEYS))
    header: Union[dict[str, Any], bytes] = dict(COMPACT)
    if rng.random() < 0.08:
        headers: list[Union[dict[str, Any], bytes]] = [
            {"alg": "HS256", "typ": "aip+jwt"}, {"typ": "aip+jwt"}, {"alg": "EdDSA"}, {"alg": "none", "typ": "aip+jwt"},
            {**COMPACT, "kid": []}, {**COMPACT, "crit": ["b64"], "b64": False}, b'{"typ":"aip+jwt"', b"[]",
        ]
        header = rng.choice(headers)
    token: Any = jws(header, compact_claims(rng), KEYS[signer])
    if rng.random() < 0.1:
        position = rng.randrange(len(token))
        token = token[:position] + rng.choice(["", "A", "~", ".", "é", "\ud800"]) + token[position + 1:]
    key: Any = PUBS[signer] if rng.random() < 0.92 else PUBS[(signer + 1) % len(PUBS)]
    return token, key


def corpus() -> list[tuple[Any, Any, Optional[int]]]:
    rng = random.Random(20260)
    cases: list[tuple[Any, Any, Optional[int]]] = []
    for _ in range(300):
        token, key = minted(rng)
        cases.append((token, key, rng.choice([NOW, NOW + 30, NOW + 3600, NOW + 3601])))
    for _ in range(1500):
        cases.append(crafted(rng))
    for _ in range(500):
        token, key = compact(rng)
        cases.append((token, key, rng.choice([NOW, FAR, FAR + 1, None])))
    odd_tokens: list[Any] = ["", "~", "a~", "~a", "x", "eyJ", "a.b.c", "a.b.c~a.b.c", "." * 5000, "é", "\ud800", None, 5, b"bytes",
                  ["x"], "A" * 100_000 + ".e30.e30"]
    for odd in odd_tokens:
        cases.append((odd, PUBS[0], NOW))
    return cases


CORPUS = corpus()
THEIRS = [theirs_chain(t, k, n) for t, k, n in CORPUS]


def test_corpus_reaches_every_outcome() -> None:
    """The corpus is not all refusals of one kind: every code the package raises, accepted
    chains of every length, and the package's crashes all occur."""
    seen = {t[1] if t[0] == "refused" else t[0] for t in THEIRS}
    assert seen >= {"ok", "crashed", "token_malformed", "signature_invalid", "token_expired", "token_missing",
                    "budget_exceeded", "depth_exceeded", "scope_insufficient"}, seen
    lengths = {len(t[1][0]) for t in THEIRS if t[0] == "ok"}
    assert lengths == {1, 2, 3, 4}


def test_verify_matches_the_package() -> None:
    differences = []
    for (token, key, now), theirs in zip(CORPUS, THEIRS):
        ours = ours_chain(token, key, now)
        if ours != expected(theirs):
            differences.append((token, key, now, theirs, ours))
    assert differences == []


def test_verify_batch_matches_the_package() -> None:
    tokens = [c[0] for c in CORPUS]
    for now in (NOW, NOW + 600):
        keys = [c[1] for c in CORPUS]
        results = aip.verify_batch(tokens, keys, now=now)
        assert len(results) == len(tokens)
        for token, key, result in zip(tokens, keys, results):
            theirs = theirs_chain(token, key, now)
            ours = ("refused", result.code) if isinstance(result, aip.TokenError) else ("ok", chain_view(result))
            assert ours == expected(theirs), (token, key, now, theirs, ours)


def test_verify_batch_with_one_key_for_all() -> None:
    tokens = [c[0] for c in CORPUS[:400]]
    results = aip.verify_batch(tokens, PUBS[1], now=NOW)
    for token, result in zip(tokens, results):
        ours = ("refused", result.code) if isinstance(result, aip.TokenError) else ("ok", chain_view(result))
        assert ours == expected(theirs_chain(token, PUBS[1], NOW))
    with pytest.raises(ValueError, match="2 keys for 3 tokens"):
        aip.verify_batch(tokens[:3], [PUBS[0], PUBS[1]])
    assert aip.verify_batch([], PUBS[0]) == []


def test_verify_batch_checks_every_signature_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, str]] = []
    real = hopgate.verify_batch

    def counting(msgs: Any, sigs: Any, pks: Any, *, rule: Any) -> Any:
        calls.append((len(msgs), rule))
        return real(msgs, sigs, pks, rule=rule)

    monkeypatch.setattr(aip, "_verify_many", counting)
    rng = random.Random(3)
    chains = [minted(rng) for _ in range(40)]
    results = aip.verify_batch([c[0] for c in chains], [c[1] for c in chains], now=NOW)
    assert all(isinstance(r, aip.JwtChain) for r in results)
    assert calls == [(sum(r.depth() + 1 for r in results if isinstance(r, aip.JwtChain)), "openssl")]


def test_compact_verify_matches_the_package() -> None:
    rng = random.Random(77)
    checked = 0
    for _ in range(700):
        token, key = compact(rng)
        theirs = attempt(lambda: claims_view(TheirCompact.verify(token, key).claims))
        ours = attempt(lambda: claims_view(aip.CompactToken.verify(token, key).claims))
        assert ours == expected(theirs), (token, key, theirs, ours)
        checked += theirs[0] == "ok"
    assert checked > 100
    # Keys and tokens of other types, as cryptography and PyJWT take or refuse them.
    token = jws(COMPACT, compact_claims(random.Random(1)) | {"iss": "a", "scope": ["s"]}, KEYS[0])
    for key in (PUBS[0], bytearray(PUBS[0]), memoryview(PUBS[0]), bytes(31), PUBS[0].hex(), None, 5):
        for candidate in (token, token.encode(), bytearray(token.encode()), None):
            theirs = attempt(lambda: claims_view(TheirCompact.verify(candidate, key).claims))
            ours = attempt(lambda: claims_view(aip.CompactToken.verify(candidate, key).claims))
            assert ours == expected(theirs), (candidate, key, theirs, ours)


def test_has_scope_and_error_codes() -> None:
    token = jws(COMPACT, compact_claims(random.Random(2)) | {"scope": ["a", "b*"], "iss": "i", "sub": "s",
                                                              "iat": PAST, "exp": FAR}, KEYS[0])
    for scope in ("a", "b*", "b", "bx", ""):
        assert aip.CompactToken.verify(token, PUBS[0]).has_scope(scope) == \
            TheirCompact.verify(token, PUBS[0]).has_scope(scope)
    with pytest.raises(aip.TokenError) as info:
        aip.CompactToken.verify(token, PUBS[1])
    assert info.value.code == "signature_invalid" and info.value.wire_code == "aip_signature_invalid"
    assert info.value.error_code() == "signature_invalid"
    assert isinstance(info.value, hopgate.HopgateError) and isinstance(info.value, ValueError)
    import pickle

    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is aip.TokenError and again.code == "signature_invalid" and str(again) == str(info.value)


# -- the compact claims' lax coercions, on generated values ------------------------------------

NUMERIC_TEXT = st.text(alphabet="0123456789_.+-eEinfatyINFAN \t\u2000\x1c\xa0", max_size=12)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([2.0**63, -(2.0**63), 2.0**63 - 1024, 1e308]),
    NUMERIC_TEXT, st.text(max_size=6), st.sampled_from(["9" * 4300, "9" * 4301, "-" + "9" * 4300, "9" * 4300 + ".00"]),
)
JSON_VALUES = st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=3), st.dictionaries(st.text(max_size=3), JSON_SCALARS, max_size=2))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["iss", "sub", "scope", "budget_usd", "max_depth", "iat", "exp", "other"]),
                       JSON_VALUES, max_size=8),
       st.booleans())
def test_claims_coercions_match_the_model(payload: dict[str, Any], complete: bool) -> None:
    if complete:
        payload = {"iss": "i", "sub": "s", "scope": [], "iat": 1, "exp": 2} | payload
    try:
        theirs: Any = claims_view(TheirClaims(**payload))
    except ValidationError:
        theirs = "refused"
    try:
        ours: Any = claims_view(aip.AipClaims.from_payload(payload))
    except aip.TokenError as error:
        assert error.code == "token_malformed"
        ours = "refused"
    assert ours == theirs, payload


EDGE_TEXT = [
    "1", "+1", "-0", " 1 ", "1.0", "1.", "1.00", "-1.0", "0.0", ".0", "0.", ".5", "5.", "1_000", "_1", "1_", "1__0",
    "+_1", "-1_0", "1_000.0", "1.0_0", "1_0.5", "1e1_0", "1_e5", "in_f", "_", "0x10", "0b1", "1e3", "1E5", "1e",
    "e1", "1e+", "inf", "-inf", "+infinity", "infinit", "nan", "-nan", "NaN", "INF", "1e400", "", "  ", "\x1c1",
    "1\x1f", "\u20001", "\x85 1", "1\xa0", "\u200b1", "1\u180e", "1\x0b", "\u30001", "\u0663", "1 000", "00012",
    "+-1", "--1", "1.0.0", "1_2_3", "in__f", "1___0", "+__1", "_+1", "1_ ", "-_1", "1e_5", "1_._5", "._5", "5_.",
    "1__", "nan_", "+_", "_.5", "9" * 4300, "9" * 4301, "-" + "9" * 4300, "9" * 4300 + ".0", "9" * 4299 + "_9",
]
EDGE_NUMBERS: list[Any] = [True, False, 1.0, 1.5, -0.0, float("nan"), float("inf"), 1e18, 9.2e18, 2.0**63,
                           -(2.0**63), 2.0**63 - 1024, -(2.0**63) + 1024, 1e300, 10**30, 10**400, None, [1], {}]


@pytest.mark.parametrize("name", ["max_depth", "budget_usd", "exp", "iss", "scope"])
def test_claims_coercion_edges(name: str) -> None:
    """Every edge of the lax coercions seen in the model, claim by claim."""
    for value in EDGE_TEXT + EDGE_NUMBERS + [[v] for v in EDGE_TEXT[:8]]:
        payload = {"iss": "i", "sub": "s", "scope": [], "iat": 1, "exp": 2, name: value}
        try:
            theirs: Any = claims_view(TheirClaims(**payload))
        except ValidationError:
            theirs = "refused"
        ours = attempt(lambda: claims_view(aip.AipClaims.from_payload(payload)))
        assert (ours[1] if ours[0] == "ok" else "refused") == theirs, (name, value)


# -- hostile inputs, by name -----------------------------------------------------------------


def chain_of(*links: tuple[dict[str, Any], int], header: Optional[dict[str, Any]] = None) -> str:
    """Links given as (claims, signer); ``prev`` filled in where the claims leave it as "AUTO"."""
    segments: list[str] = []
    for claims, signer in links:
        if claims.get("prev") == "AUTO":
            claims = {**claims, "prev": prev_of(segments[-1])}
        segments.append(jws(header or LINK, claims, KEYS[signer]))
    return "~".join(segments)


def root(**extra: Any) -> dict[str, Any]:
    return {"iss": "aip:root", "sub": "aip:a", "exp": NOW + 600, "aip_tools": ["search:*"], "aip_max_depth": 2,
            "aip_budget_cents": 1000, "cnf": jwk(PUBS[1])} | extra


def child(**extra: Any) -> dict[str, Any]:
    return {"iss": "aip:a", "sub": "aip:b", "prev": "AUTO", "aip_ctx": "a task", "cnf": jwk(PUBS[2])} | extra


def same_verdict(token: Any, key: Any = PUBS[0], now: Optional[int] = NOW) -> Any:
    theirs = theirs_chain(token, key, now)
    ours = ours_chain(token, key, now)
    assert ours == expected(theirs), (theirs, ours)
    [batch] = aip.verify_batch([token], [key], now=now)
    assert (("refused", batch.code) if isinstance(batch, aip.TokenError) else ("ok", chain_view(batch))) == ours
    return ours


def test_attack_widened_scope_budget_depth_expiry() -> None:
    assert same_verdict(chain_of((root(), 0), (child(aip_tools=["mail:send"]), 1))) == ("refused", "scope_insufficient")
    assert same_verdict(chain_of((root(), 0), (child(aip_tools=["*"]), 1))) == ("refused", "scope_insufficient")
    assert same_verdict(chain_of((root(aip_domains=["x.com"]), 0), (child(aip_domains=["x.com", "z.com"]), 1))) \
        == ("refused", "scope_insufficient")
    assert same_verdict(chain_of((root(), 0), (child(aip_budget_cents=1001), 1))) == ("refused", "budget_exceeded")
    assert same_verdict(chain_of((root(), 0), (child(aip_budget_cents=-1), 1))) == ("refused", "budget_exceeded")
    assert same_verdict(chain_of((root(aip_max_depth=0), 0), (child(), 1))) == ("refused", "depth_exceeded")
    assert same_verdict(chain_of((root(), 0), (child(exp=NOW + 601), 1))) == ("refused", "token_expired")
    assert same_verdict(chain_of((root(), 0), (child(aip_max_depth=5), 1))) == ("refused", "token_malformed")
    assert same_verdict(chain_of((root(), 0), (child(aip_ctx="  "), 1))) == ("refused", "token_malformed")
    assert same_verdict(chain_of((root(), 0), (child(aip_budget_cents=True), 1))) == ("refused", "token_malformed")
    assert same_verdict(chain_of((root(), 0), (child(aip_budget_cents=5.0), 1))) == ("refused", "token_malformed")
    assert same_verdict(chain_of((root(), 0), (child(aip_budget_cents=999), 1)))[0] == "ok"


def test_attack_authority_link_without_its_bounds() -> None:
    assert same_verdict(chain_of((root(aip_budget_cents=-1), 0))) == ("refused", "budget_exceeded")
    assert same_verdict(chain_of((root(aip_budget_cents=0), 0)))[0] == "ok"
    assert same_verdict(chain_of((root(aip_max_depth=-1), 0))) == ("refused", "token_malformed")
    for missing in ("aip_tools", "exp", "aip_max_depth", "iss", "sub", "cnf"):
        bare = {k: v for k, v in root().items() if k != missing}
        assert same_verdict(chain_of((bare, 0))) == ("refused", "token_malformed")
    assert same_verdict(chain_of((root(aip_tools=[]), 0))) == ("refused", "token_malformed")
    assert same_verdict(chain_of((root(), 0), (child(aip_domains=[]), 1))) == ("refused", "token_malformed")
    assert same_verdict(chain_of((root(exp=NOW - 1), 0))) == ("refused", "token_expired")
    assert same_verdict(chain_of((root(exp=NOW), 0)))[0] == "ok"  # expired only once past
    # Without ``now``, the clock (read by both when they verify).
    assert same_verdict(chain_of((root(exp=NOW + 10**5), 0)), now=None)[0] == "ok"
    assert same_verdict(chain_of((root(exp=NOW - 1), 0)), now=None) == ("refused", "token_expired")
    # The depth check comes before the expiry and the budget: the package's order.
    assert same_verdict(chain_of((root(aip_max_depth=0, exp=NOW - 1, aip_budget_cents=-1), 0), (child(), 1))) \
        == ("refused", "depth_exceeded")


def test_attack_broken_prev_and_iss() -> None:
    assert same_verdict(chain_of((root(), 0), (child(prev="x"), 1))) == ("refused", "signature_invalid")
    assert same_verdict(chain_of((root(), 0), (child(prev=None), 1))) == ("refused", "signature_invalid")
    assert same_verdict(chain_of((root(), 0), (child(iss="aip:z"), 1))) == ("refused", "signature_invalid")
    # A prev naming link 0 by the hash of another encoding of it.
    token = chain_of((root(), 0), (child(), 1))
    first, second = token.split("~")
    assert same_verdict(first + "=" + "~" + second) in (("refused", "signature_invalid"), ("refused", "token_malformed"))


def test_attack_wrong_signer_and_order() -> None:
    assert same_verdict(chain_of((root(), 3), (child(), 1))) == ("refused", "signature_invalid")
    assert same_verdict(chain_of((root(), 0), (child(), 2))) == ("refused", "signature_invalid")
    token = chain_of((root(), 0), (child(), 1), (child(iss="aip:b", sub="aip:c", cnf=jwk(PUBS[3])), 2))
    a, b, c = token.split("~")
    assert same_verdict(token)[0] == "ok"
    for reordered in (f"{b}~{a}~{c}", f"{a}~{c}~{b}", f"{a}~{c}", f"{b}~{c}", f"{a}~{b}~{b}", f"{a}~{a}"):
        assert same_verdict(reordered)[0] == "refused"
    assert same_verdict(f"{a}~{b}")[0] == "ok"  # a prefix verifies, with wider authority


def test_attack_signature_error_does_not_hide_an_earlier_malformed_link() -> None:
    bad_root = root(aip_tools="search:*")  # malformed, but only once the links are read
    token = chain_of((bad_root, 0), (child(), 4))
    assert same_verdict(token) == ("refused", "signature_invalid")  # the package reaches link 1's signature first
    broken_cnf = root(cnf={"jwk": {"kty": "OKP"}})
    assert same_verdict(chain_of((broken_cnf, 0), (child(), 4))) == ("refused", "token_malformed")
    # Signature failures in order: link 0's before link 1's malformed payload.
    assert same_verdict(chain_of((root(), 3), (child(aud="x"), 1))) == ("refused", "signature_invalid")
    assert same_verdict(chain_of((root(), 0), (child(aud="x"), 1))) == ("refused", "token_malformed")


def test_attack_bad_base64_json_and_duplicate_keys() -> None:
    good = chain_of((root(), 0))
    h, p, s = good.split(".")
    for token in (f"{h}.{p}.{s}!", f"{h}.{p}", f"{h}x.{p}.{s}", f"{h}.{p}=.{s}", f"{h}.{p}.{s[:-3]}", f"{h}.{p}.{s}A",
                  f"{h[:-1]}.{p}.{s}", f"e30.{p}.{s}", f"{h}.e30.{s}", f"{h}.{p}.", f"{h}..{s}"):
        same_verdict(token)
    for payload in (b"[]", b"{", b'{"a": NaN}', b"null", b"\xff", b'{"aip_tools": ["search:*"], "aip_tools": 5}'):
        same_verdict(jws(LINK, payload, KEYS[0]))
    duplicated = json.dumps(root())[:-1] + ', "aip_budget_cents": 5, "aip_budget_cents": 7}'
    ours = same_verdict(jws(LINK, duplicated.encode(), KEYS[0]))
    assert ours[0] == "ok" and dict(ours[1][0][0])["budget_cents"] == ("int", "7")


def test_attack_non_finite_numbers() -> None:
    for value in ("NaN", "Infinity", "-Infinity", "1e400"):
        same_verdict(jws(LINK, json.dumps(root())[:-1].encode() + f', "exp": {value}}}'.encode(), KEYS[0]))
        same_verdict(jws(LINK, json.dumps(root())[:-1].encode() + f', "aip_budget_cents": {value}}}'.encode(), KEYS[0]))
        legacy = json.dumps({"iss": "i", "sub": "s", "scope": ["a"], "iat": PAST, "exp": FAR})[:-1]
        same_verdict(jws(COMPACT, (legacy + f', "budget_usd": {value}}}').encode(), KEYS[0]))
    # A budget whose cents overflow a float: the package crashes rounding infinity.
    legacy_token = jws(COMPACT, {"iss": "i", "sub": "s", "scope": ["a"], "iat": PAST, "exp": FAR, "budget_usd": 1e307}, KEYS[0])
    assert theirs_chain(legacy_token, PUBS[0], NOW) == ("crashed", "OverflowError")
    assert same_verdict(legacy_token) == ("refused", "token_malformed")


def test_attack_empty_links_oversize_and_non_str() -> None:
    token = chain_of((root(), 0), (child(), 1))
    for bad in ("", "~", token + "~", "~" + token, token.replace("~", "~~"), None, 5, token.encode(), [token]):
        same_verdict(bad)
    same_verdict("~".join([token] * 200))
    same_verdict("e" * 1_000_000)
    same_verdict(jws(LINK, json.dumps(root() | {"pad": "x" * 500_000}).encode(), KEYS[0]))
    deep = b'{"a":' * 100_000
    same_verdict(jws(LINK, deep, KEYS[0]))
    same_verdict(f"{b64(deep)}.e30.AA")


def test_attack_wrong_key_lengths_and_types() -> None:
    token = chain_of((root(), 0))
    for key in (bytes(31), bytes(33), b"", bytearray(PUBS[0]), memoryview(PUBS[0]), PUBS[0].hex(), None, 0):
        assert same_verdict(token, key) == ("refused", "token_malformed")
    assert same_verdict(token, bytes(32)) == ("refused", "signature_invalid")


def test_attack_unencodable_text() -> None:
    """Where the package crashes (a lone surrogate), the token is refused as malformed, and
    a refusal the package finds earlier still wins."""
    token = chain_of((root(), 0), (child(), 1))
    a, b = token.split("~")
    assert theirs_chain(a + "\ud800", PUBS[0], NOW)[0] == "crashed"
    assert same_verdict(a + "\ud800") == ("refused", "token_malformed")
    assert same_verdict(f"{a}~{b}\ud800") == ("refused", "token_malformed")
    assert same_verdict(f"{chain_of((root(), 3))}~{b}\ud800") == ("refused", "signature_invalid")
    # A non-ASCII character inside a signed link: PyJWT's base64url refuses it.
    padded = next(b64(json.dumps(root(pad="x" * n)).encode()) for n in range(4)
                  if len(b64(json.dumps(root(pad="x" * n)).encode())) % 4 == 0)
    signing_input = f"{b64(json.dumps(LINK).encode())}.{padded}é"
    accented = f"{signing_input}.{b64(KEYS[0].sign(signing_input.encode()))}"
    assert same_verdict(accented) == ("refused", "token_malformed")
    assert same_verdict(f"{accented}~{b}") == ("refused", "token_malformed")


def test_attack_legacy_compact_uses_the_real_clock() -> None:
    expired = jws(COMPACT, {"iss": "i", "sub": "s", "scope": ["a"], "iat": PAST, "exp": PAST + 1}, KEYS[0])
    # PyJWT inside the package judges exp by the clock, whatever ``now`` says.
    assert same_verdict(expired, now=PAST - 10) == ("refused", "token_expired")
    immature = jws(COMPACT, {"iss": "i", "sub": "s", "scope": ["a"], "iat": FAR, "exp": FAR}, KEYS[0])
    assert same_verdict(immature) == ("refused", "token_malformed")
    live = jws(COMPACT, {"iss": "i", "sub": "s", "scope": ["a"], "iat": PAST, "exp": FAR, "max_depth": "2"}, KEYS[0])
    assert same_verdict(live, now=FAR + 1) == ("refused", "token_expired")  # the walk's own clock
    assert same_verdict(live)[0] == "ok"
    for scope in ([], ["a", 1]):
        same_verdict(jws(COMPACT, {"iss": "i", "sub": "s", "scope": scope, "iat": PAST, "exp": FAR}, KEYS[0]))


# -- BudgetGate ---------------------------------------------------------------------------------


def budget_chain(root_budget: Optional[int], child_budget: Optional[int], sub: str = "aip:b") -> str:
    extra = {} if root_budget is None else {"aip_budget_cents": root_budget}
    first = {k: v for k, v in root().items() if k != "aip_budget_cents"} | extra
    second = child(sub=sub) | ({} if child_budget is None else {"aip_budget_cents": child_budget})
    return chain_of((first, 0), (second, 1))


def test_gate_reserves_on_every_link() -> None:
    ledger = hopgate.Ledger()
    gate = aip.BudgetGate(ledger, PUBS[0])
    token = budget_chain(1000, 300)
    decision = gate.check(token, tool="search:web", cost=200, now=NOW)
    assert decision and decision.code == "ok" and decision.reservation is not None
    decision.reservation.commit()
    chain = aip.JwtChain.verify(token, PUBS[0], NOW)
    path = aip.budget_path(chain)
    assert [cap for _, cap in path] == [1000, 300]
    assert ledger.account(path[1][0], root=path[0][0]) == hopgate.Account(cap=300, spent=200, reserved=0, overrun=0)
    assert ledger.account(path[0][0], root=path[0][0]) == hopgate.Account(cap=1000, spent=200, reserved=0, overrun=0)
    refused = gate.check(token, tool="search:web", cost=101, now=NOW)
    assert not refused and refused.code == "budget_exceeded" and refused.reservation is None
    # A sibling delegation (another sub, so another link) has its own 300 but shares the root's 1000.
    sibling = gate.check(budget_chain(1000, 300, sub="aip:c"), tool="search:web", cost=300, now=NOW)
    assert sibling.reservation is not None
    sibling.reservation.commit()
    third = gate.check(budget_chain(1000, 600, sub="aip:d"), tool="search:web", cost=600, now=NOW)
    assert third.code == "budget_exceeded"  # 500 of the root's 1000 spent
    assert gate.check(token, tool="mail:send", cost=1, now=NOW).code == "scope_insufficient"
    forged = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    assert gate.check(forged, tool="search:web", cost=1, now=NOW).code == "signature_invalid"
    with pytest.raises(ValueError):
        gate.check(token, tool="search:web", cost=-1)


def test_gate_refuses_unbudgeted_chains_by_default() -> None:
    token = budget_chain(None, None)
    assert aip.BudgetGate(hopgate.Ledger(), PUBS[0]).check(token, tool="search:web", cost=1, now=NOW).code \
        == "budget_undeclared"
    allowed = aip.BudgetGate(hopgate.Ledger(), PUBS[0], allow_unbudgeted=True).check(token, tool="search:web", cost=1, now=NOW)
    assert allowed and allowed.reservation is None
    # A budget declared only below the root caps from there down.
    gate = aip.BudgetGate(hopgate.Ledger(), PUBS[0])
    assert gate.check(budget_chain(None, 50), tool="search:web", cost=51, now=NOW).code == "budget_exceeded"
    with pytest.raises(ValueError):
        aip.BudgetGate(hopgate.Ledger(), bytes(31))
    huge = gate.check(budget_chain(2**70, 2**65), tool="search:web", cost=2**63, now=NOW)
    assert huge.reservation is not None  # caps past the ledger's u64 held at its ceiling
    huge.reservation.release()
    assert gate.check(budget_chain(0, None), tool="search:web", cost=1, now=NOW).code == "budget_exceeded"
    zero = gate.check(budget_chain(0, None), tool="search:web", cost=0, now=NOW)
    assert zero.reservation is not None
    zero.reservation.commit()


@pytest.mark.parametrize("store", ["memory", "sqlite", "redis"])
def test_gate_concurrent_spend_stays_under_the_caps(store: str, request: pytest.FixtureRequest) -> None:
    """Eight threads over three ledgers on one store (one ledger in memory) spend through
    four sibling delegations: the root's cap is never passed, and every allowed cost is
    counted on the root's account."""
    memory = store == "memory"
    if memory:
        ledgers = [hopgate.Ledger()]
    else:
        url = request.getfixturevalue("sqlite_url") if store == "sqlite" else request.getfixturevalue("redis_db").url
        ledgers = [hopgate.Ledger.open(url) for _ in range(3)]
    tokens = [budget_chain(1000, 400, sub=f"aip:s{i}") for i in range(4)]
    allowed: list[int] = []

    def spend(worker: int) -> None:
        gate = aip.BudgetGate(ledgers[worker % len(ledgers)], PUBS[0])
        for _ in range(30):
            decision = gate.check(tokens[worker % 4], tool="search:web", cost=7, now=NOW)
            if decision.reservation is not None:
                decision.reservation.commit()
                allowed.append(7)

    threads = [threading.Thread(target=spend, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1000 - 7 < sum(allowed) <= 1000  # the root's cap, used up to the last 7 cents
    root_id = aip.budget_path(aip.JwtChain.verify(tokens[0], PUBS[0], NOW))[0][0]
    account = ledgers[0].account(root_id, root=root_id)
    assert account is not None and account.spent == sum(allowed) and account.cap == 1000
    if not memory:
        for ledger in ledgers:
            ledger.close()


def test_gate_store_failure_denies(tmp_path: pathlib.Path) -> None:
    """A Redis server that goes away: the gate raises StoreError and allows nothing, then
    spends normally once the server is back."""
    from _servers import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        gate = aip.BudgetGate(hopgate.Ledger.open(server.url, timeout=0.5), PUBS[0])
        token = budget_chain(1000, 300)
        first = gate.check(token, tool="search:web", cost=100, now=NOW)
        assert first.reservation is not None
        first.reservation.commit()
        server.stop()
        with pytest.raises(hopgate.StoreError):
            gate.check(token, tool="search:web", cost=1, now=NOW)
        server.start()
        again = gate.check(token, tool="search:web", cost=200, now=NOW)
        assert again.reservation is not None
        again.reservation.commit()
        assert gate.check(token, tool="search:web", cost=1, now=NOW).code == "budget_exceeded"
    finally:
        server.stop()


def test_reference_backend_matches_the_package() -> None:
    """With the native module refused, hopgate.aip stands on the reference (its jws_split,
    verify_batch and Ledger) and still answers as the package on the whole corpus."""
    script = """
import test_aip as t
results = t.aip.verify_batch([c[0] for c in t.CORPUS], [c[1] for c in t.CORPUS], now=t.NOW)
count = 0
for (token, key, _), result in zip(t.CORPUS, results):
    theirs = t.theirs_chain(token, key, t.NOW)
    ours = ("refused", result.code) if isinstance(result, t.aip.TokenError) else ("ok", t.chain_view(result))
    assert ours == t.expected(theirs), (token, key, theirs, ours)
    assert t.ours_chain(token, key, t.NOW) == ours
    count += 1
gate = t.aip.BudgetGate(hopgate.Ledger(), t.PUBS[0])
decision = gate.check(t.budget_chain(1000, 300), tool="search:web", cost=300, now=t.NOW)
assert decision.reservation is not None
decision.reservation.commit()
assert gate.check(t.budget_chain(1000, 300), tool="search:web", cost=1, now=t.NOW).code == "budget_exceeded"
print(count)
"""
    assert int(run_on_reference(script, timeout=300).strip()) == len(CORPUS)


LINK_CLAIMS = ["iss", "sub", "exp", "iat", "nbf", "prev", "aip_ctx", "aip_tools", "aip_domains", "aip_budget_cents",
               "aip_max_depth", "aip_principal", "cnf", "aud", "jti"]
SENSIBLE = st.sampled_from([["search:web"], ["search:*"], ["*"], ["mail:send"], ["x.com"], ["z.com"], [], 0, 500,
                            1000, 1001, -1, NOW - 1, NOW, NOW + 300, NOW + 601, "aip:a", "aip:b", "user:alice",
                            "a task", " ", None, 1, jwk(PUBS[2]), jwk(PUBS[3])])
CLAIM_VALUES = st.one_of(SENSIBLE, SENSIBLE, SENSIBLE, JSON_VALUES)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.dictionaries(st.sampled_from(LINK_CLAIMS), st.one_of(st.just("DROP"), CLAIM_VALUES),
                                          max_size=3),
                          st.sampled_from([0, 0, 0, 0, 0, 0, 0, 1, 2, 3])),
                min_size=1, max_size=3),
       st.sampled_from([NOW, NOW + 301, NOW + 601]))
def test_generated_chains_match_the_package(links: list[tuple[dict[str, Any], int]], now: int) -> None:
    """Chains whose claims hypothesis chooses (dropped, replaced by any JSON value), each link
    signed by its rightful holder or another key: the same verdict as the package."""
    built: list[tuple[dict[str, Any], int]] = []
    for index, (changes, signer) in enumerate(links):
        claims = root() if index == 0 else child(iss=f"aip:{'ab'[index - 1]}", sub=f"aip:{'bc'[index - 1]}",
                                                 cnf=jwk(PUBS[index + 1]))
        for name, value in changes.items():
            if value == "DROP":
                claims.pop(name, None)
            else:
                claims[name] = value
        rightful = index  # link i is signed by the key link i-1 named (PUBS[i]); link 0 by PUBS[0]
        built.append((claims, rightful if signer == 0 else signer))
    same_verdict(chain_of(*built), now=now)
