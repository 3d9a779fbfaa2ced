"""hopgate.jwt against the real PyJWT: a generated corpus of Ed25519 tokens (valid, every
claims boundary, tampered, wrong keys, algorithm confusion, bad base64 and JSON) decoded by
``jwt.decode``, ``hopgate.jwt.decode`` and ``hopgate.jwt.decode_batch`` under one frozen
clock, which must give the same claims or the same exception class for every token; RFC 8037
Appendix A as a known answer; JWK and JWK Set reading against ``PyJWK`` and ``PyJWKSet``."""

from __future__ import annotations

import base64
import json
import math
import pathlib
import random
import subprocess
import sys
import warnings
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Callable, Optional, Union

import jwt
import jwt.api_jwt
import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

import hopgate.jwt as hj
from _ed25519 import L
from _reference_only import run_on_reference
from conftest import VECTORS

INT_NOW = 1_750_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ed_key(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32)


KEYS = [ed_key(i) for i in range(8)]
PUBS = [k.public_key() for k in KEYS]
PEM_PUB = PUBS[0].public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
PEM_PRIV = KEYS[0].private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
PEM_PRIV_ENCRYPTED = KEYS[0].private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.BestAvailableEncryption(b"pw"),
)
SSH_PUB = PUBS[0].public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
RAW_PUB = PUBS[0].public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
ED448 = Ed448PrivateKey.from_private_bytes(bytes(range(57)))
EC_PUB_PEM = (
    ec.derive_private_key(12345, ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
)
X25519_PUB = x25519.X25519PrivateKey.from_private_bytes(b"\x07" * 32).public_key()
OKP_JWK = {"kty": "OKP", "crv": "Ed25519", "x": b64(RAW_PUB)}
HMAC_SECRET = b"a secret of thirty-two bytes!!!!"


class Dual:
    """A key given to PyJWT in one form and to hopgate.jwt in another (PyJWK / JWK)."""

    def __init__(self, theirs: Any, ours: Any) -> None:
        self.theirs = theirs
        self.ours = ours


def token_from(
    header: Union[dict[str, Any], bytes, str],
    payload: Union[dict[str, Any], bytes, str],
    key: Any = None,
    *,
    sign: Optional[Callable[[bytes], bytes]] = None,
) -> str:
    """A compact token over raw header and payload bytes (JSON that PyJWT's encoder would
    never write included), signed with an Ed25519/Ed448 key or by ``sign``."""
    h = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    p = payload if isinstance(payload, bytes) else (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    signing_input = f"{b64(h)}.{b64(p)}".encode()
    if sign is not None:
        signature = sign(signing_input)
    else:
        signature = (key if key is not None else KEYS[0]).sign(signing_input)
    return f"{signing_input.decode()}.{b64(signature)}"


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    def sign(data: bytes) -> bytes:
        mac = hmac.HMAC(secret, hashes.SHA256())
        mac.update(data)
        return mac.finalize()

    return sign


ED = {"alg": "EdDSA", "typ": "JWT"}


class Case:
    def __init__(self, token: Any, key: Any, kwargs: dict[str, Any]) -> None:
        self.token = token
        self.key = key
        self.kwargs = kwargs


def corpus(now: float) -> list[Case]:
    """At least 2,000 tokens; ``now`` is the frozen clock both libraries read."""
    rng = random.Random(8037)
    cases: list[Case] = []
    plain: dict[str, Any] = {"algorithms": ["EdDSA"]}
    far = int(now) + 10**6
    # Loop variables that take several shapes along the corpus.
    payload: Any
    token: Any
    options: Any
    algorithms: Any
    spelled: Any
    jti: Any

    def add(token: Any, key: Any = None, kwargs: Optional[dict[str, Any]] = None) -> None:
        cases.append(Case(token, PUBS[0] if key is None else key, plain if kwargs is None else kwargs))

    # Valid tokens with random claims and values (nested, unicode, big and float numbers).
    def value(depth: int = 0) -> Any:
        kind = rng.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return rng.randrange(-(2**200), 2**200)
        if kind == 1:
            return rng.random() * 1e6
        if kind == 2:
            return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000)])) for _ in range(rng.randrange(12)))
        if kind == 3:
            return rng.choice([True, False, None])
        if kind == 4:
            return rng.randrange(100)
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{i}": value(depth + 1) for i in range(rng.randrange(4))}

    for i in range(240):
        claims: dict[str, Any] = {f"c{j}": value() for j in range(rng.randrange(6))}
        if rng.random() < 0.7:
            claims["exp"] = far + rng.randrange(1000)
        if rng.random() < 0.5:
            claims["iat"] = int(now) - rng.randrange(1000)
        if rng.random() < 0.5:
            claims["nbf"] = int(now) - 10**5
        if rng.random() < 0.3:
            claims["sub"] = f"user-{i}"
        if rng.random() < 0.3:
            claims["jti"] = f"id-{i}"
        signer = i % 8
        add(token_from(ED, claims, KEYS[signer]), PUBS[signer])

    # exp, nbf and iat at and around their boundaries, under several leeways.
    leeways: list[Union[float, timedelta]] = [0, 1, 5, 30.5, -2, timedelta(seconds=10), timedelta(seconds=2.5)]
    for leeway in leeways:
        lw = leeway.total_seconds() if isinstance(leeway, timedelta) else leeway
        kwargs = {"algorithms": ["EdDSA"], "leeway": leeway}
        edge_exp = now - lw
        edge_start = now + lw
        for delta in (-2, -1, -0.5, 0, 0.5, 1, 2):
            for claim, edge in (("exp", edge_exp), ("nbf", edge_start), ("iat", edge_start)):
                for spelled in (edge + delta, math.floor(edge + delta), math.ceil(edge + delta)):
                    number: Union[int, float] = int(spelled) if float(spelled).is_integer() else spelled
                    add(token_from(ED, {claim: number, "sub": "s"}), kwargs=kwargs)
        for claim in ("exp", "nbf", "iat"):
            for switch in (True, False):
                options = {f"verify_{claim}": switch}
                edge = edge_exp if claim == "exp" else edge_start
                add(token_from(ED, {claim: int(edge)}), kwargs={**kwargs, "options": options})
    # NumericDate claims of the wrong type (JSON that Python reads, spelled raw).
    odd_numbers = ['"123"', '"abc"', "null", "true", "false", "[]", "{}", "1.5", "1e400", "-1e400", "NaN",
                   "Infinity", "-Infinity", "-0", "1" + "0" * 300, "9" * 5000, str(far), str(int(now))]
    for claim in ("exp", "nbf", "iat"):
        for spelled in odd_numbers:
            payload = '{"%s": %s}' % (claim, spelled)
            add(token_from(ED, payload))
            add(token_from(ED, payload), kwargs={"algorithms": ["EdDSA"], "options": {"verify_signature": False}})

    # aud: the claim's forms against the audience argument's, lax and strict.
    aud_claims: list[Any] = ["a", ["a", "b"], ["b"], [], "", ["x"], [1], ["a", 1], 5, None, {"a": 1}, "MISSING"]
    audiences: list[Any] = [None, "a", ["a"], ("b", "c"), {"a"}, "x", [], 5, "", b"a"]
    for claim in aud_claims:
        for audience in audiences:
            for strict in (False, True):
                payload = {} if claim == "MISSING" else {"aud": claim}
                add(token_from(ED, payload), kwargs={"algorithms": ["EdDSA"], "audience": audience, "options": {"strict_aud": strict}})
    # iss and sub and jti.
    for iss in ("iss1", "iss2", 5, None, "MISSING", ["iss1"]):
        for issuer in (None, "iss1", ["iss1", "x"], ("x",), {"iss1"}, 5, "", {"iss1": 1}):
            payload = {} if iss == "MISSING" else {"iss": iss}
            add(token_from(ED, payload), kwargs={"algorithms": ["EdDSA"], "issuer": issuer})
    for sub in ("s", 5, None, "MISSING", ""):
        for subject in (None, "s", "t"):
            for switch in (True, False):
                payload = {} if sub == "MISSING" else {"sub": sub}
                add(token_from(ED, payload), kwargs={"algorithms": ["EdDSA"], "subject": subject, "options": {"verify_sub": switch}})
    for jti in ("j", 5, None, [], "MISSING"):
        for switch in (True, False):
            payload = {} if jti == "MISSING" else {"jti": jti}
            add(token_from(ED, payload), kwargs={"algorithms": ["EdDSA"], "options": {"verify_jti": switch}})
    # require: absent, null and present claims.
    for require in (["exp"], ["exp", "iat", "nbf"], ["aud"], ["iss", "sub", "jti"], [], ["custom"]):
        for payload in ({}, {"exp": far}, {"exp": None}, {"exp": far, "iat": int(now) - 5, "nbf": int(now) - 5},
                        {"aud": "a"}, {"iss": "i", "sub": "s", "jti": "j"}, {"custom": 0}, {"custom": None}):
            add(token_from(ED, payload), kwargs={"algorithms": ["EdDSA"], "options": {"require": require}})
            add(token_from(ED, payload), kwargs={"algorithms": ["EdDSA"], "audience": "a", "options": {"require": require}})

    # options: the signature check off (a bad signature then passes), the claims defaults.
    expired = token_from(ED, {"exp": int(now) - 100, "aud": "a", "iss": "i"})
    bad_sig = expired[:-4] + ("AAAA" if not expired.endswith("AAAA") else "BBBA")
    option_sets: list[Optional[dict[str, Any]]] = [
        None, {}, {"verify_signature": False}, {"verify_signature": False, "verify_exp": True},
        {"verify_signature": True, "verify_exp": False}, {"verify_aud": False}, {"verify_iss": False},
        {"verify_signature": 0}, {"verify_signature": False, "verify_aud": True}, {"unknown_option": 1},
    ]
    for options in option_sets:
        for algorithms in (["EdDSA"], None, []):
            for token in (expired, bad_sig, token_from(ED, {"exp": far}), "not a token"):
                add(token, kwargs={"algorithms": algorithms, "options": options, "issuer": "i"})

    # Tampering: every character of a token replaced, and bit flips in each decoded segment.
    base = token_from(ED, {"sub": "tamper", "exp": far, "aud": "a"})
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for position, character in enumerate(base):
        if character == ".":
            continue
        for _ in range(2):
            replacement = rng.choice([c for c in alphabet if c != character])
            add(base[:position] + replacement + base[position + 1:], kwargs={"algorithms": ["EdDSA"], "audience": "a"})
    header_s, payload_s, signature_s = base.split(".")
    for segment_index in range(3):
        raw = bytearray(base64.urlsafe_b64decode(base.split(".")[segment_index] + "=="))
        for bit in rng.sample(range(len(raw) * 8), min(60, len(raw) * 8)):
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            parts = base.split(".")
            parts[segment_index] = b64(bytes(flipped))
            add(".".join(parts), kwargs={"algorithms": ["EdDSA"], "audience": "a"})

    # Wrong keys.
    for signer in range(8):
        token = token_from(ED, {"n": signer}, KEYS[signer])
        for verifier in range(8):
            add(token, PUBS[verifier])

    # Key forms PyJWT's EdDSA takes, and ones it refuses.
    good = token_from(ED, {"k": 1})
    wrong = token_from(ED, {"k": 1}, KEYS[1])
    key_forms: list[Any] = [
        PUBS[0], KEYS[0], PEM_PUB, PEM_PUB.decode(), PEM_PRIV, PEM_PRIV.decode(), SSH_PUB, SSH_PUB.decode(),
        RAW_PUB, b64(RAW_PUB), "", None, X25519_PUB, EC_PUB_PEM, EC_PUB_PEM.decode(), PEM_PRIV_ENCRYPTED,
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", b"\xff\xfe", bytearray(PEM_PUB),
        memoryview(PEM_PUB), "ssh-ed25519 AAAA", 12345, ED448, ED448.public_key(),
        Dual(jwt.PyJWK(OKP_JWK), hj.JWK(OKP_JWK)),
        Dual(jwt.PyJWK(OKP_JWK), jwt.PyJWK(OKP_JWK)),
        Dual(jwt.PyJWK({**OKP_JWK, "x": b64(PUBS[1].public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))}),
             hj.JWK({**OKP_JWK, "x": b64(PUBS[1].public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))})),
    ]
    for key in key_forms:
        for token in (good, wrong):
            for algorithms in (["EdDSA"], None):
                add(token, key, {"algorithms": algorithms})
    ed448_token = token_from(ED, {"k": 448}, ED448)
    for key in (ED448, ED448.public_key(), PUBS[0]):
        add(ed448_token, key)
    # The identity key signs every message under OpenSSL's rule (R = identity, S = 0); a
    # signature with S + L is refused.
    identity = Ed25519PublicKey.from_public_bytes(b"\x01" + bytes(31))
    add(token_from(ED, {"k": "small"}, sign=lambda _m: b"\x01" + bytes(63)), identity)
    add(token_from(ED, {"k": "small"}, sign=lambda _m: b"\x01" + bytes(31) + L.to_bytes(32, "little")), identity)
    add(token_from(ED, {}, sign=lambda m: (lambda s: s[:32] + (int.from_bytes(s[32:], "little") + L).to_bytes(32, "little"))(KEYS[0].sign(m))))

    # alg none, and HMAC with the Ed25519 public key as its secret (algorithm confusion).
    none_token = token_from({"alg": "none"}, {"k": 1}, sign=lambda _m: b"")
    for algorithms in (["EdDSA"], ["none"], ["none", "EdDSA"], None):
        for key in (PUBS[0], "", None, PEM_PUB):
            add(none_token, key, {"algorithms": algorithms})
            add(none_token + "AAAA", key, {"algorithms": algorithms})
    for secret in (PEM_PUB, SSH_PUB, RAW_PUB, HMAC_SECRET, b"short"):
        token = token_from({"alg": "HS256"}, {"k": "hs"}, sign=hs256(secret))
        for algorithms in (["EdDSA", "HS256"], ["HS256"], ["EdDSA"]):
            for key in (PEM_PUB, PEM_PUB.decode(), PUBS[0], SSH_PUB, secret, json.dumps(OKP_JWK),
                        Dual(jwt.PyJWK(OKP_JWK), hj.JWK(OKP_JWK))):
                add(token, key, {"algorithms": algorithms})
                add(token, key, {"algorithms": algorithms, "options": {"enforce_minimum_key_length": True}})
    for alg in ("RS256", "ES256", "PS256", "HS512", "Ed25519", "Ed448", "eddsa", ""):
        token = token_from({"alg": alg}, {"k": alg}, KEYS[0])
        for algorithms in ([alg], ["EdDSA"], [alg, "EdDSA"]):
            for key in (PUBS[0], PEM_PUB, Dual(jwt.PyJWK(OKP_JWK), hj.JWK(OKP_JWK))):
                add(token, key, {"algorithms": algorithms})

    # Headers: alg missing or odd, kid, crit, b64.
    headers: list[Any] = [
        {}, {"alg": None}, {"alg": 5}, {"alg": ["EdDSA"]}, {"alg": "EdDSA", "kid": "k1"}, {"alg": "EdDSA", "kid": 5},
        {"alg": "EdDSA", "kid": None}, {"alg": "EdDSA", "kid": []}, {"alg": "EdDSA", "typ": "at+jwt"}, {"alg": "EdDSA", "typ": 7},
        {"alg": "EdDSA", "crit": ["b64"]}, {"alg": "EdDSA", "crit": ["exp"], "exp": 1}, {"alg": "EdDSA", "crit": []},
        {"alg": "EdDSA", "crit": "b64", "b64": True}, {"alg": "EdDSA", "crit": [1]}, {"alg": "EdDSA", "crit": ["b64"], "b64": True},
        {"alg": "EdDSA", "crit": ["b64", "x"], "b64": True, "x": 1}, {"alg": "EdDSA", "crit": None},
        {"alg": "EdDSA", "b64": False}, {"alg": "EdDSA", "b64": False, "crit": ["b64"]}, {"alg": "EdDSA", "b64": 0},
    ]
    for header in headers:
        token = token_from(header, {"h": 1})
        add(token)
        add(token, kwargs={"algorithms": [5, "EdDSA", ["EdDSA"]]})
        detached_parts = token.split(".")
        add(f"{detached_parts[0]}..{detached_parts[2]}")

    # base64url: padding, the +/ alphabet, whitespace, stray low bits, lengths, segments.
    base = token_from(ED, {"b64": "é" * 5, "exp": far})
    for segment_index in range(3):
        def mutate(change: Callable[[str], str]) -> str:
            parts = base.split(".")
            parts[segment_index] = change(parts[segment_index])
            return ".".join(parts)

        changes: list[Callable[[str], str]] = [
            lambda s: s + "=", lambda s: s + "==", lambda s: s + "===", lambda s: s + "====",
            lambda s: s + "=" * (-len(s) % 4), lambda s: s + "=" * (-len(s) % 4) + "=",
            lambda s: s.replace("-", "+").replace("_", "/"), lambda s: s[:4] + " " + s[4:], lambda s: s + "\n",
            lambda s: " " + s, lambda s: s[:4] + "\t" + s[4:], lambda s: s + "A", lambda s: s + "AA", lambda s: s[:-1],
            lambda s: "", lambda s: s[:-1] + chr(ord(s[-1]) ^ 1), lambda s: s[:-1] + chr(ord(s[-1]) ^ 2),
            lambda s: s[:-1] + alphabet[(alphabet.index(s[-1]) + 1) % 64], lambda s: s[:2] + "=" + s[3:],
            lambda s: s[:3] + "é" + s[3:], lambda s: s + ".", lambda s: "." + s, lambda s: s + "!",
        ]
        for change in changes:
            add(mutate(change), kwargs={"algorithms": ["EdDSA"]})
            add(mutate(change), kwargs={"algorithms": ["EdDSA"], "options": {"verify_signature": False}})
    for token in ("", ".", "..", "...", "a.b", "a.b.c.d", base + ".", base.replace(".", "", 1), base + "." + base,
                  base.encode(), bytearray(base.encode()), None, 5, "\ud800" + base, base[:10]):
        add(token)

    # JSON: not objects, invalid, other encodings, duplicate keys, huge numbers, deep nesting.
    header_bytes: list[bytes] = [
        b"[]", b'"x"', b"1", b"null", b"{", b'{"alg":"EdDSA"', b'{"alg":"EdDSA"}'.decode().encode("utf-16"),
        b'{"alg":"EdDSA"}'.decode().encode("utf-32-le"), b"\xef\xbb\xbf" + b'{"alg":"EdDSA"}',
        b'{"alg":"HS256","alg":"EdDSA"}', b'{"alg":"EdDSA","alg":"HS256"}', b"[" * 100000 + b"]" * 100000,
        b'{"alg":"EdDSA","x":NaN}', b'{"alg":"Ed\\u0044SA"}', b'{"alg":"EdDSA"} ', b' {"alg":"EdDSA"}',
        b'{"alg":"EdDSA"}x', b'\xff{"alg":"EdDSA"}', b'{"alg":"EdDSA","x":"\\ud800"}',
    ]
    for header in header_bytes:
        add(token_from(header, {"j": 1}))
    payloads: list[bytes] = [
        b"[]", b"1", b'"s"', b"null", b"{", b'{"exp":1,"exp":%d}' % far, b'{"exp":%d,"exp":1}' % far,
        b'{"n":' + b"9" * 5000 + b"}", b'{"n":' + b"9" * 4000 + b"}", b'{"n":NaN}', b'{"n":Infinity}', b'{"n":-0.0}',
        b'{"n":1e999}', b'{"s":"\\ud800"}', b"\xff", b"{}", b'{"a":' * 50000 + b"1" + b"}" * 50000,
        '{"u":"é"}'.encode("utf-16"), b'{"big":%d}' % 2**256, b'{"f":0.1}', b'{"" : 1, "\\u0000": 2}',
    ]
    for payload in payloads:
        add(token_from(ED, payload))
        add(token_from(ED, payload), kwargs={"algorithms": ["EdDSA"], "options": {"verify_signature": False}})

    # The algorithms argument.
    good = token_from(ED, {"a": 1})
    for algorithms in (["RS256"], ["HS256"], [], None, "EdDSA", "EdDSAX", ("EdDSA",), {"EdDSA"}, ["eddsa"],
                       ["Ed25519"], ["EdDSA", "Ed25519"], ["none"], ["ES256", "RS256", "PS512"]):
        for token in (good, token_from({"alg": "Ed25519"}, {"a": 1}), wrong):
            add(token, kwargs={"algorithms": algorithms})
    return cases


@pytest.fixture(params=[INT_NOW, INT_NOW + 0.25], ids=["whole-second", "fractional"])
def frozen(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> float:
    """The same clock for PyJWT and hopgate.jwt."""
    now: float = request.param

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.fromtimestamp(now, tz=timezone.utc)

    monkeypatch.setattr(jwt.api_jwt, "datetime", Frozen)
    monkeypatch.setattr(hj, "datetime", Frozen)
    return now


Outcome = tuple[str, Any]


def outcome_of(call: Callable[[], Any]) -> Outcome:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ("claims", repr(call()))
        except Exception as error:  # the class is what is compared
            return ("raised", type(error))


def as_outcome(result: Any) -> Outcome:
    if isinstance(result, Exception):
        return ("raised", type(result))
    return ("claims", repr(result))


def their_key(key: Any) -> Any:
    return key.theirs if isinstance(key, Dual) else key


def our_key(key: Any) -> Any:
    return key.ours if isinstance(key, Dual) else key


def test_corpus_decode_and_batch_agree_with_pyjwt(frozen: float) -> None:
    cases = corpus(frozen)
    assert len(cases) >= 2000
    expected = [outcome_of(partial(jwt.decode, c.token, their_key(c.key), **c.kwargs)) for c in cases]
    single = [outcome_of(partial(hj.decode, c.token, our_key(c.key), **c.kwargs)) for c in cases]
    disagreements = [(c.token, c.kwargs, e, s) for c, e, s in zip(cases, expected, single) if e != s]
    assert disagreements == [], f"{len(disagreements)} of {len(cases)}: {disagreements[:5]}"

    # decode_batch, one batch per set of arguments, keys one per token.
    groups: dict[int, list[int]] = {}
    for index, case in enumerate(cases):
        groups.setdefault(id(case.kwargs), []).append(index)
    batched: dict[int, Outcome] = {}
    for members in groups.values():
        kwargs = cases[members[0]].kwargs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = hj.decode_batch(
                [cases[i].token for i in members], [our_key(cases[i].key) for i in members], **kwargs
            )
        assert len(results) == len(members)
        for i, result in zip(members, results):
            batched[i] = as_outcome(result)
    disagreements = [(c.token, c.kwargs, e, batched[i]) for i, (c, e) in enumerate(zip(cases, expected)) if e != batched[i]]
    assert disagreements == [], f"{len(disagreements)} of {len(cases)}: {disagreements[:5]}"
    # The corpus exercises both outcomes and every claims error.
    raised = {o[1] for o in expected if o[0] == "raised"}
    assert sum(o[0] == "claims" for o in expected) > 400
    assert {
        jwt.ExpiredSignatureError, jwt.ImmatureSignatureError, jwt.InvalidAudienceError, jwt.InvalidIssuerError,
        jwt.InvalidIssuedAtError, jwt.MissingRequiredClaimError, jwt.InvalidSignatureError, jwt.DecodeError,
        jwt.InvalidAlgorithmError, jwt.InvalidKeyError, jwt.InvalidTokenError, jwt.exceptions.InvalidSubjectError,
        jwt.exceptions.InvalidJTIError, TypeError,
    } <= raised


def test_batch_with_one_key_for_every_token_verifies_once(frozen: float, monkeypatch: pytest.MonkeyPatch) -> None:
    far = INT_NOW + 10**6
    tokens: list[Any] = [token_from(ED, {"i": i, "exp": far}) for i in range(50)]
    tokens[3] = tokens[3][:-2] + ("AA" if not tokens[3].endswith("AA") else "BA")  # bad signature
    tokens[7] = token_from(ED, {"i": 7, "exp": INT_NOW - 1})  # expired, after its signature
    tokens[9] = "garbage"  # refused before any signature
    tokens[11] = token_from(ED, {"i": 11}, KEYS[1])  # wrong key
    calls: list[int] = []
    real = getattr(hj, "_verify_many")

    def counting(msgs: Any, sigs: Any, pks: Any, **kwargs: Any) -> Any:
        calls.append(len(msgs))
        assert kwargs == {"rule": "openssl"}
        return real(msgs, sigs, pks, **kwargs)

    monkeypatch.setattr(hj, "_verify_many", counting)
    for key in (PUBS[0], PEM_PUB, KEYS[0], hj.JWK(OKP_JWK)):
        calls.clear()
        results = hj.decode_batch(tokens, key, algorithms=["EdDSA"])
        assert calls == [49]
        expected = [outcome_of(partial(jwt.decode, t, PUBS[0], algorithms=["EdDSA"])) for t in tokens]
        assert [as_outcome(r) for r in results] == expected
        assert isinstance(results[3], jwt.InvalidSignatureError)
        assert isinstance(results[7], jwt.ExpiredSignatureError)
        assert isinstance(results[9], jwt.DecodeError)
        assert results[0] == {"i": 0, "exp": far}
    assert hj.decode_batch([], PUBS[0], algorithms=["EdDSA"]) == []
    with pytest.raises(ValueError, match="keys"):
        hj.decode_batch(tokens, [PUBS[0]] * 3, algorithms=["EdDSA"])


def test_rfc8037_appendix_a() -> None:
    vector = json.loads((VECTORS / "rfc8037.json").read_text())
    private = hj.JWK(vector["private_jwk"])
    public = hj.JWK(vector["public_jwk"])
    assert private.algorithm_name == public.algorithm_name == "EdDSA"
    assert private.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == \
        public.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    header, payload, signature = vector["jws"].split(".")
    assert base64.urlsafe_b64decode(header + "==").decode() == vector["protected"]
    assert base64.urlsafe_b64decode(payload + "==").decode() == vector["payload"]
    # A.4: Ed25519 is deterministic, so signing again gives the same JWS.
    assert f"{header}.{payload}.{b64(private.key.sign(f'{header}.{payload}'.encode()))}" == vector["jws"]
    # A.5: the signature verifies; the payload is text, not a claims set, which decode refuses
    # only after the signature passed (a bad one would be InvalidSignatureError).
    assert hj.get_unverified_header(vector["jws"]) == {"alg": "EdDSA"}
    for key in (public, public.key, jwt.PyJWK(vector["public_jwk"])):
        with pytest.raises(jwt.DecodeError, match="Invalid payload string") as raised:
            hj.decode(vector["jws"], key, algorithms=["EdDSA"])
        assert not isinstance(raised.value, jwt.InvalidSignatureError)
        results = hj.decode_batch([vector["jws"], vector["jws"][:-1] + "w"], key, algorithms=["EdDSA"])
        assert type(results[0]) is jwt.DecodeError
        assert type(results[1]) is jwt.InvalidSignatureError
    # The same key on a claims set.
    claims = {"sub": "rfc8037", "n": 2**70}
    token = jwt.encode(claims, private.key, algorithm="EdDSA")
    assert hj.decode(token, public, algorithms=["EdDSA"]) == claims == jwt.decode(token, public.key, algorithms=["EdDSA"])


JWK_CASES: list[Any] = [
    OKP_JWK, {**OKP_JWK, "kid": "a", "use": "sig"}, {**OKP_JWK, "alg": "EdDSA"}, {"kty": "OKP", "x": OKP_JWK["x"]},
    {"crv": "Ed25519", "x": OKP_JWK["x"]}, {**OKP_JWK, "kty": ""}, {**OKP_JWK, "crv": "Ed448"}, {**OKP_JWK, "crv": "X25519"},
    {**OKP_JWK, "x": OKP_JWK["x"][:-2]}, {**OKP_JWK, "x": OKP_JWK["x"] + "=="}, {**OKP_JWK, "x": OKP_JWK["x"][:-1]},
    {**OKP_JWK, "x": 5}, {**OKP_JWK, "x": "!!" + OKP_JWK["x"]}, {"kty": "OKP", "crv": "Ed25519"},
    {**OKP_JWK, "d": b64(bytes([1]) * 32)}, {**OKP_JWK, "d": b64(bytes([2]) * 32)}, {**OKP_JWK, "d": "AA"},
    {**OKP_JWK, "alg": "HS256"}, {**OKP_JWK, "alg": "RS256"}, {**OKP_JWK, "alg": "ES256"}, {**OKP_JWK, "alg": "XYZ"},
    {**OKP_JWK, "alg": "Ed25519"}, {**OKP_JWK, "kty": "RSA", "alg": "EdDSA"},
    {"kty": "OKP", "crv": "Ed448", "x": b64(ED448.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)), "alg": "EdDSA"},
]


@pytest.mark.parametrize("members", JWK_CASES)
def test_jwk_reads_as_pyjwk(members: dict[str, Any]) -> None:
    def read(cls: Any) -> Any:
        try:
            key = cls(dict(members))
        except Exception as error:  # the class is what is compared
            return type(error)
        public = key.key.public_key() if hasattr(key.key, "public_key") else key.key
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return (key.algorithm_name, key.key_id, key.key_type, key.public_key_use, raw)

    assert read(hj.JWK) == read(jwt.PyJWK)


def test_jwks_kid_selection(frozen: float) -> None:
    members: list[Any] = []
    for i in range(5):
        raw = PUBS[i].public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members.append({"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": f"k{i}"})
    members += [{"kty": "OKP", "crv": "X25519", "x": "AA", "kid": "bad"}, "not a key", {"kty": "OKP", "crv": "Ed25519", "kid": "nox"}]
    text = json.dumps({"keys": members})
    ours = hj.JWKSet.from_json(text)
    theirs = jwt.PyJWKSet.from_json(text)
    assert [k.key_id for k in ours] == [k.key_id for k in theirs] == [f"k{i}" for i in range(5)]
    tokens: list[Any] = []
    for i in range(5):
        tokens.append(token_from({**ED, "kid": f"k{i}"}, {"i": i}, KEYS[i]))
        tokens.append(token_from({**ED, "kid": f"k{(i + 1) % 5}"}, {"i": i}, KEYS[i]))  # kid of another key
    tokens += [token_from({**ED, "kid": "k9"}, {}), token_from(ED, {}), token_from({**ED, "kid": 3}, {}), "x.y"]

    def reference(token: Any) -> Any:
        return jwt.decode(token, theirs[jwt.get_unverified_header(token)["kid"]], algorithms=["EdDSA"])

    def single(token: Any) -> Any:
        return hj.decode(token, ours[hj.get_unverified_header(token)["kid"]], algorithms=["EdDSA"])

    expected = [outcome_of(partial(reference, t)) for t in tokens]
    assert [outcome_of(partial(single, t)) for t in tokens] == expected
    assert [as_outcome(r) for r in hj.decode_batch(tokens, ours, algorithms=["EdDSA"])] == expected
    assert [as_outcome(r) for r in hj.decode_batch(tokens, theirs, algorithms=["EdDSA"])] == expected
    assert expected[0] == ("claims", "{'i': 0}") and expected[1] == ("raised", jwt.InvalidSignatureError)
    assert expected[-4] == expected[-3] == ("raised", KeyError)
    empty: Any
    for empty in ([], {"keys": []}, {"keys": ["x"]}, {"keys": {"a": 1}}):
        with pytest.raises(jwt.PyJWKSetError):
            hj.JWKSet.from_dict(empty if isinstance(empty, dict) else {"keys": empty})


def test_detached_payload_and_complete() -> None:
    header = {"alg": "EdDSA", "b64": False, "crit": ["b64"]}
    h = b64(json.dumps(header).encode())
    content = b'{"detached":true}'
    signature = KEYS[0].sign(h.encode() + b"." + content)
    token = f"{h}..{b64(signature)}"
    for payload in (content, b'{"detached":false}', None):
        expected = outcome_of(lambda: jwt.decode(token, PUBS[0], algorithms=["EdDSA"], detached_payload=payload))
        assert outcome_of(lambda: hj.decode(token, PUBS[0], algorithms=["EdDSA"], detached_payload=payload)) == expected
    assert hj.decode(token, PUBS[0], algorithms=["EdDSA"], detached_payload=content) == {"detached": True}
    plain = token_from(ED, {"a": 1})
    with pytest.raises(jwt.DecodeError, match="detached_payload"):
        hj.decode(plain, PUBS[0], algorithms=["EdDSA"], detached_payload=content)
    complete = hj.decode_complete(plain, PUBS[0], algorithms=["EdDSA"])
    assert complete == jwt.decode_complete(plain, PUBS[0], algorithms=["EdDSA"])
    with pytest.warns(jwt.warnings.RemovedInPyjwt3Warning):
        hj.decode(plain, PUBS[0], algorithms=["EdDSA"], unexpected=1)
    with pytest.warns(DeprecationWarning):
        hj.decode(plain, PUBS[0], ["EdDSA"], None, False)


def test_without_pyjwt_hopgate_classes_and_ed25519_only() -> None:
    """Where PyJWT is not installed: hopgate's own exception tree, the same decisions for
    EdDSA, RFC 9864's "Ed25519" taken, and other algorithms refused."""
    token = token_from(ED, {"a": 1})
    hs = token_from({"alg": "HS256"}, {"a": 1}, sign=hs256(HMAC_SECRET))
    fully = token_from({"alg": "Ed25519"}, {"a": 2})
    script = f"""
import sys
sys.modules["jwt"] = None
import hopgate, hopgate.jwt as hj
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
pub = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32).public_key()
assert issubclass(hj.InvalidSignatureError, hj.DecodeError) and issubclass(hj.PyJWTError, hopgate.HopgateError)
assert hj.decode({token!r}, pub, algorithms=["EdDSA"]) == {{"a": 1}}
assert hj.decode({fully!r}, pub, algorithms=["Ed25519"]) == {{"a": 2}}
for token, key, algorithms, error in [
    ({token!r}[:-2] + "AA", pub, ["EdDSA"], hj.InvalidSignatureError),
    ({hs!r}, {HMAC_SECRET!r}, ["HS256"], hj.InvalidAlgorithmError),
    ({fully!r}, pub, ["EdDSA"], hj.InvalidAlgorithmError),
]:
    try:
        hj.decode(token, key, algorithms=algorithms)
    except error:
        pass
    else:
        raise AssertionError(token)
r = hj.decode_batch([{token!r}, "x"], pub, algorithms=["EdDSA"])
assert r[0] == {{"a": 1}} and type(r[1]) is hj.DecodeError
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# -- the split: native against the reference, and decode on the reference alone -----------

SEGMENT_PARTS = ["", "YQ", "YR", "YWI", "YWJj", "-_8", "+/8", "Y", "=", "==", "===", " ", ".", "\n", "%", "é"]


def test_jws_split_native_equals_reference() -> None:
    """``hopgate._native.jws_split`` (Rust, used by ``hopgate.jwt``) and the reference's
    (used where the native module is absent) split and decode every token alike: tokens
    built from valid, padded, mis-padded, stray-bit, foreign-alphabet and dotted pieces."""
    from hopgate import _native
    from hopgate import reference

    rng = random.Random(2615)
    tokens = [b"", b".", b"..", b"a.b", b"abc"]
    for _ in range(4000):
        pieces = [rng.choice(SEGMENT_PARTS) * rng.randint(1, 2) for _ in range(rng.randint(1, 5))]
        tokens.append(".".join(pieces).encode())
    ours = _native.jws_split(tokens)
    assert ours == reference.jws_split(tokens)
    # Both outcomes occur for every segment, so the comparison is not vacuous.
    for field in (1, 2, 4):
        values = [row[field] for row in ours if row is not None]
        assert None in values and any(v is not None for v in values)
    # Batches below and above the parallel threshold answer the same.
    assert [_native.jws_split([t])[0] for t in tokens[:300]] == ours[:300]


def test_decode_on_the_reference_backend_agrees_with_pyjwt() -> None:
    """Without the native module, ``hopgate.jwt`` splits tokens with the reference and
    still answers as PyJWT on the whole corpus (claims, or the exception class), one token
    at a time and in one batch."""
    script = """
from datetime import datetime, timezone
import jwt, jwt.api_jwt
import test_jwt as t
class Frozen(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.fromtimestamp(t.INT_NOW, tz=timezone.utc)
jwt.api_jwt.datetime = t.hj.datetime = Frozen
cases = t.corpus(t.INT_NOW)
for case in cases:
    theirs = t.outcome_of(lambda: jwt.decode(case.token, t.their_key(case.key), **case.kwargs))
    ours = t.outcome_of(lambda: t.hj.decode(case.token, t.our_key(case.key), **case.kwargs))
    batch = t.as_outcome(t.hj.decode_batch([case.token], [t.our_key(case.key)], **case.kwargs)[0])
    assert theirs == ours == batch, (case.token, case.kwargs, theirs, ours, batch)
print(len(cases))
"""
    assert int(run_on_reference(script, timeout=600).strip()) >= 2000
