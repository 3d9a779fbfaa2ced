"""The drop-in key classes (hopgate.compat), proven against the libraries they replace.

``hopgate.compat.nacl.VerifyKey`` is run beside PyNaCl's ``nacl.signing.VerifyKey`` and
``hopgate.compat.cryptography.Ed25519PublicKey`` beside cryptography's
``Ed25519PublicKey``, on the same inputs: the speccheck edge cases, RFC 8032's vectors and
a corpus of several thousand random and mutated triples, then every argument of the wrong
type, length or encoding. Each outcome (the value returned, or the exception's exact
class) must be the same, so whatever the library accepts the drop-in accepts and whatever
it refuses the drop-in refuses. Nothing here re-implements a verifier: the libraries
judge, and the Edwards25519 constants below only build inputs.
"""

from __future__ import annotations

import base64
import copy
import json
import pathlib
import pickle
import random
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import jwt
import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.signing
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from _ed25519 import L, challenge, flip, secret_scalar

import hopgate
from hopgate.compat import cryptography as compat_cryptography
from hopgate.compat import nacl as compat_nacl
from hopgate.compat.cryptography import Ed25519PublicKey
from hopgate.compat.nacl import VerifyKey

VECTORS = pathlib.Path(__file__).parent / "vectors"

# (message, signature, public key)
Triple = Tuple[bytes, bytes, bytes]
# What a call did: ("ok", its return value) or ("raised", the exception's class).
Outcome = Tuple[str, object]


def outcome(call: Callable[[], object]) -> Outcome:
    try:
        return ("ok", call())
    except Exception as exc:  # the class is what is compared
        return ("raised", type(exc))


# ---------------------------------------------------------------------------
# The inputs. Small-order and non-canonical encodings of Edwards25519 points
# ("Taming the many EdDSAs", speccheck), as constants: they build triples only.
# ---------------------------------------------------------------------------

IDENTITY = bytes([1]) + bytes(31)
TORSION = [
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",  # order 1
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
    )
]
NON_CANONICAL = [
    bytes.fromhex(h)
    for h in (
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1 (identity)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # the same, sign bit set
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (y = 0)
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "0100000000000000000000000000000000000000000000000000000000000080",  # x = 0 with sign 1
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # y = -1, sign 1
    )
]


def scalar_bytes(s: int) -> bytes:
    return s.to_bytes(32, "little")


@dataclass(frozen=True)
class Corpus:
    triples: List[Triple]
    kinds: List[str]


def build_corpus() -> Corpus:
    """Over 5,000 triples: valid signatures, then single-bit flips, S + L, random bytes,
    truncated signatures, small-order and non-canonical keys with R the identity and S
    zero (valid under a cofactorless equation for a quarter to all of the messages),
    signatures with R the identity that satisfy the equation for honest keys, and keys
    and R of mixed order."""
    rng = random.Random(20240805)
    triples: List[Triple] = []
    kinds: List[str] = []

    def add(kind: str, msg: bytes, sig: bytes, pk: bytes) -> None:
        triples.append((msg, sig, pk))
        kinds.append(kind)

    seeds = [rng.randbytes(32) for _ in range(40)]
    signers = [nacl.signing.SigningKey(seed) for seed in seeds]
    for i in range(800):
        signer = signers[i % len(signers)]
        pk = bytes(signer.verify_key)
        msg = rng.randbytes(rng.choice([0, 1, 7, 32, 64, 65, 200]))
        sig = signer.sign(msg).signature
        add("valid", msg, sig, pk)
        add("sig bit", msg, flip(sig, rng.randrange(512)), pk)
        add("msg bit", flip(msg, rng.randrange(8 * len(msg))) if msg else b"\0", sig, pk)
        add("key bit", msg, sig, flip(pk, rng.randrange(256)))
        s = int.from_bytes(sig[32:], "little")
        add("S + L", msg, sig[:32] + scalar_bytes(s + L), pk)
        add("random sig", msg, rng.randbytes(64), pk)
        if i % 4 == 0:
            add("short sig", msg, sig[: rng.randrange(64)], pk)
    for small_a in TORSION + NON_CANONICAL:
        for _ in range(40):
            msg = rng.randbytes(rng.randrange(40))
            add("small-order key", msg, IDENTITY + scalar_bytes(0), small_a)
            add("small-order key, S = L", msg, IDENTITY + scalar_bytes(L), small_a)
    for small_r in TORSION + NON_CANONICAL:
        for _ in range(10):
            msg = rng.randbytes(rng.randrange(40))
            add("small-order R, small-order key", msg, small_r + scalar_bytes(0), rng.choice(TORSION))
    for i in range(300):
        seed = seeds[i % len(seeds)]
        pk = bytes(signers[i % len(signers)].verify_key)
        msg = rng.randbytes(rng.randrange(64))
        small_r = IDENTITY if i % 3 else rng.choice(TORSION + NON_CANONICAL)
        s = challenge(small_r, pk, msg) * secret_scalar(seed) % L
        add("R of small order, honest key", msg, small_r + scalar_bytes(s), pk)
    # Mixed-order keys and R: A + T or R + T for T of order 8 (points added by libsodium),
    # with S = r + k * a, so that the cofactored equation holds and the cofactorless one
    # holds only when k * T vanishes: where hopgate's strict rule and the libraries differ.
    for i in range(400):
        seed = seeds[i % len(seeds)]
        secret = secret_scalar(seed)
        pk = bytes(signers[i % len(signers)].verify_key)
        torsion = TORSION[4 + i % 4]
        msg = rng.randbytes(rng.randrange(64))
        r = rng.randrange(1, L)
        big_r = nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(scalar_bytes(r))
        if i % 2:
            pk = nacl.bindings.crypto_core_ed25519_add(pk, torsion)
            kind = "mixed-order key"
        else:
            big_r = nacl.bindings.crypto_core_ed25519_add(big_r, torsion)
            kind = "mixed-order R"
        s = (r + challenge(big_r, pk, msg) * secret) % L
        add(kind, msg, big_r + scalar_bytes(s), pk)
    for _ in range(300):
        add("random", rng.randbytes(rng.randrange(100)), rng.randbytes(64), rng.randbytes(32))
    return Corpus(triples, kinds)


CORPUS = build_corpus()


def speccheck_triples() -> List[Triple]:
    cases = json.loads((VECTORS / "speccheck_cases.json").read_text())["cases"]
    return [(bytes.fromhex(c["message"]), bytes.fromhex(c["signature"]), bytes.fromhex(c["pub_key"])) for c in cases]


def rfc8032_triples() -> List[Triple]:
    cases = json.loads((VECTORS / "rfc8032.json").read_text())["cases"]
    out: List[Triple] = []
    for c in cases:
        msg, sig, pk = (bytes.fromhex(c[k]) for k in ("message", "signature", "public_key"))
        out += [(msg, sig, pk), (msg + b"\0", sig, pk), (msg, flip(sig, 3), pk)]
    return out


SOURCES: dict[str, Callable[[], List[Triple]]] = {
    "speccheck": speccheck_triples,
    "rfc8032": rfc8032_triples,
    "corpus": lambda: CORPUS.triples,
}


def test_the_corpus_is_large_and_discriminating() -> None:
    """The corpus has the size promised, and the two libraries part ways on some of it,
    so agreeing with both is not agreeing with either trivially."""
    assert len(CORPUS.triples) >= 5000
    libsodium = [outcome(lambda: nacl.signing.VerifyKey(k).verify(m, s))[0] == "ok" for m, s, k in CORPUS.triples]
    openssl = [cryptography_outcome(m, s, k)[0] == "ok" for m, s, k in CORPUS.triples]
    assert 800 <= sum(libsodium) < len(libsodium) // 2
    assert sum(openssl) > sum(libsodium)
    edge = {kind for kind, a, b in zip(CORPUS.kinds, libsodium, openssl) if a != b}
    assert {"small-order key", "R of small order, honest key"} <= edge
    # Where the cofactorless equation fails, hopgate's own rule accepts and both refuse.
    strict = hopgate.verify_batch(*zip(*CORPUS.triples), rule="strict").tolist()
    mixed = {kind for kind, a, b, c in zip(CORPUS.kinds, libsodium, openssl, strict) if c and not (a or b)}
    assert mixed == {"mixed-order key", "mixed-order R"}


# ---------------------------------------------------------------------------
# PyNaCl
# ---------------------------------------------------------------------------


def nacl_outcomes(m: bytes, s: bytes, k: bytes) -> List[Outcome]:
    """PyNaCl's outcomes on one triple: detached, then combined, then a SignedMessage."""
    theirs = nacl.signing.VerifyKey(k)
    signed = nacl.signing.SignedMessage._from_parts(s, m, s + m)
    return [outcome(lambda: theirs.verify(m, s)), outcome(lambda: theirs.verify(s + m)), outcome(lambda: theirs.verify(signed))]


def compat_nacl_outcomes(m: bytes, s: bytes, k: bytes) -> List[Outcome]:
    ours = VerifyKey(k)
    signed = nacl.signing.SignedMessage._from_parts(s, m, s + m)
    return [outcome(lambda: ours.verify(m, s)), outcome(lambda: ours.verify(s + m)), outcome(lambda: ours.verify(signed))]


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_verify_key_answers_as_pynacl(source: str) -> None:
    triples = SOURCES[source]()
    mismatches = [
        (i, ours, theirs)
        for i, (m, s, k) in enumerate(triples)
        if (ours := compat_nacl_outcomes(m, s, k)) != (theirs := nacl_outcomes(m, s, k))
    ]
    assert not mismatches, mismatches[:5]
    accepted = sum(nacl_outcomes(m, s, k)[0][0] == "ok" for m, s, k in triples)
    assert 0 < accepted < len(triples)


def test_verify_key_speccheck_accepts_what_libsodium_accepts() -> None:
    # ed25519-speccheck's results for LibSodium: case 3 only.
    accepted = [i for i, (m, s, k) in enumerate(speccheck_triples()) if compat_nacl_outcomes(m, s, k)[0][0] == "ok"]
    assert accepted == [3]


def test_verify_key_raises_pynacls_own_classes() -> None:
    assert compat_nacl.BadSignatureError is nacl.exceptions.BadSignatureError
    key = nacl.signing.SigningKey(bytes(32))
    ours = VerifyKey(bytes(key.verify_key))
    sig = key.sign(b"m").signature
    with pytest.raises(nacl.exceptions.BadSignatureError, match="forged or corrupt"):
        ours.verify(b"n", sig)
    with pytest.raises(nacl.exceptions.ValueError, match="exactly 64 bytes"):
        ours.verify(b"m", sig[:63])
    with pytest.raises(nacl.exceptions.TypeError, match="64 bytes"):
        ours.verify(b"m", bytearray(sig))  # type: ignore[arg-type]
    with pytest.raises(nacl.exceptions.ValueError, match="exactly 32 bytes"):
        VerifyKey(bytes(31))
    with pytest.raises(nacl.exceptions.TypeError, match="32 bytes"):
        VerifyKey(bytearray(32))  # type: ignore[arg-type]


def test_verify_many_is_verify_per_item() -> None:
    items: List[Tuple[bytes, Optional[bytes]]] = []
    by_key: dict[bytes, List[int]] = {}
    for i, (m, s, k) in enumerate(CORPUS.triples[:3000]):
        if len(s) == 64:
            by_key.setdefault(k, []).append(i)
    checked = 0
    for k, indices in list(by_key.items())[:60]:
        ours = VerifyKey(k)
        theirs = nacl.signing.VerifyKey(k)
        items = []
        for j, i in enumerate(indices):
            m, s, _ = CORPUS.triples[i]
            items.append((m, s) if j % 2 else (s + m, None))
        results = ours.verify_many(items)
        assert len(results) == len(items)
        for (sm, sig), result in zip(items, results):
            expected = outcome(lambda: theirs.verify(sm, sig))
            if expected[0] == "ok":
                assert result == expected[1] and type(result) is bytes
            else:
                assert type(result) is nacl.exceptions.BadSignatureError
                assert str(result) == "Signature was forged or corrupt"
            checked += 1
    assert checked > 1000
    assert VerifyKey(bytes(32)).verify_many([]) == []


def test_verify_many_raises_for_a_malformed_item_before_checking() -> None:
    key = nacl.signing.SigningKey(bytes(32))
    ours = VerifyKey(bytes(key.verify_key))
    sm = key.sign(b"m")
    with pytest.raises(nacl.exceptions.ValueError):
        ours.verify_many([(sm, None), (b"m", sm.signature[:10])])
    with pytest.raises(nacl.exceptions.TypeError):
        ours.verify_many([(b"m", "x" * 64)])  # type: ignore[list-item]
    hexed = [(sm.message.hex().encode(), sm.signature), (bytes(sm).hex().encode(), None)]
    assert ours.verify_many(hexed, encoder=nacl.encoding.HexEncoder) == [b"m", b"m"]


PK = bytes(nacl.signing.SigningKey(bytes(range(32))).verify_key)
KEY_INPUTS: List[Tuple[object, Any]] = [
    (PK, nacl.encoding.RawEncoder),
    (PK, compat_nacl.RawEncoder),
    (PK.hex(), nacl.encoding.HexEncoder),
    (PK.hex().encode(), nacl.encoding.HexEncoder),
    (PK.hex().upper().encode(), nacl.encoding.HexEncoder),
    (b"zz" * 32, nacl.encoding.HexEncoder),
    (PK.hex()[:-1], nacl.encoding.HexEncoder),
    (PK[:31].hex(), nacl.encoding.HexEncoder),
    ((PK + b"\0").hex(), nacl.encoding.HexEncoder),
    (base64.b64encode(PK), nacl.encoding.Base64Encoder),
    (base64.b64encode(PK).decode(), nacl.encoding.Base64Encoder),
    (base64.b64encode(PK[:30]), nacl.encoding.Base64Encoder),
    (b"!!!", nacl.encoding.Base64Encoder),
    (base64.urlsafe_b64encode(PK), nacl.encoding.URLSafeBase64Encoder),
    (base64.b32encode(PK), nacl.encoding.Base32Encoder),
    (PK, nacl.encoding.Base32Encoder),
    (base64.b16encode(PK), nacl.encoding.Base16Encoder),
    (PK.hex().encode(), nacl.encoding.Base16Encoder),
    (bytearray(PK), nacl.encoding.RawEncoder),
    (memoryview(PK), nacl.encoding.RawEncoder),
    ("x" * 32, nacl.encoding.RawEncoder),
    (None, nacl.encoding.RawEncoder),
    (5, nacl.encoding.RawEncoder),
    (list(PK), nacl.encoding.RawEncoder),
    (b"", nacl.encoding.RawEncoder),
    (PK[:31], nacl.encoding.RawEncoder),
    (PK + b"\0", nacl.encoding.RawEncoder),
    (bytes(64), nacl.encoding.RawEncoder),
    (nacl.signing.SignedMessage(PK), nacl.encoding.RawEncoder),
]


@pytest.mark.parametrize("key,encoder", KEY_INPUTS)
def test_verify_key_constructor_as_pynacl(key: object, encoder: Any) -> None:
    theirs = outcome(lambda: bytes(nacl.signing.VerifyKey(key, encoder)))  # type: ignore[arg-type]
    ours = outcome(lambda: bytes(VerifyKey(key, encoder)))  # type: ignore[arg-type]
    assert ours == theirs
    if theirs[0] == "ok":
        assert type(ours[1]) is bytes


def verify_inputs() -> List[Tuple[Any, ...]]:
    signer = nacl.signing.SigningKey(bytes(range(32)))
    sm = signer.sign(b"message")
    sig = sm.signature
    raw = bytes(sm)
    hexed = nacl.encoding.HexEncoder
    b64 = nacl.encoding.Base64Encoder
    return [
        (sm,),
        (raw,),
        (bytearray(raw),),
        (memoryview(raw),),
        (raw.hex(),),
        (list(raw),),
        (tuple(raw),),
        (list(raw[:-1]) + [256],),
        (list(raw[:-1]) + [-1],),
        (list(raw[:-1]) + ["a"],),
        (list(raw[:-1]) + [1.0],),
        ([],),
        (b"",),
        (raw[:63],),
        (raw[:64],),
        (sig + b"messagf",),
        (None,),
        (5,),
        (b"message", sig),
        (bytearray(b"message"), sig),
        (memoryview(b"message"), sig),
        (b"", sig),
        ("message", sig),
        (None, sig),
        (5, sig),
        (b"message", bytearray(sig)),
        (b"message", memoryview(sig)),
        (b"message", sig.hex()),
        (b"message", sig.hex().encode()),
        (b"message", sig[:63]),
        (b"message", sig + b"\0"),
        (b"message", b""),
        (b"message", 5),
        (b"message", sm),
        (b"message", nacl.signing.SignedMessage(sig)),
        (raw.hex().encode(), None, hexed),
        (raw.hex(), None, hexed),
        (raw.hex()[:-1], None, hexed),
        (b"message".hex(), sig, hexed),
        (b"message".hex(), sig.hex().encode(), hexed),
        (b"zz", sig, hexed),
        (b"zz", sig[:3], hexed),
        (base64.b64encode(raw), None, b64),
        (base64.b64encode(b"message"), sig, b64),
        (base64.b64encode(b"messagf"), sig, b64),
    ]


@pytest.mark.parametrize("args", verify_inputs())
def test_verify_key_verify_arguments_as_pynacl(args: Tuple[Any, ...]) -> None:
    pk = bytes(nacl.signing.SigningKey(bytes(range(32))).verify_key)
    theirs = outcome(lambda: nacl.signing.VerifyKey(pk).verify(*args))
    ours = outcome(lambda: VerifyKey(pk).verify(*args))
    assert ours == theirs
    if theirs[0] == "ok":
        assert type(ours[1]) is type(theirs[1]) is bytes


def test_verify_returns_the_message_verified_not_a_later_one() -> None:
    signer = nacl.signing.SigningKey(bytes(32))
    sig = signer.sign(b"abc").signature
    buffer = bytearray(b"abc")
    message = VerifyKey(bytes(signer.verify_key)).verify(buffer, sig)  # type: ignore[arg-type]
    buffer[0] = ord("x")
    assert message == b"abc" and type(message) is bytes


def test_verify_key_as_pynacl_elsewhere() -> None:
    theirs = nacl.signing.VerifyKey(PK)
    ours = VerifyKey(PK)
    assert bytes(ours) == bytes(theirs) == PK
    assert str(ours) == str(theirs)
    for encoder in (nacl.encoding.RawEncoder, nacl.encoding.HexEncoder, nacl.encoding.Base64Encoder):
        assert ours.encode(encoder) == theirs.encode(encoder)
    assert hash(ours) == hash(theirs)
    assert ours == VerifyKey(PK) and not ours != VerifyKey(PK)
    assert ours == VerifyKey(PK, rule="strict")  # the rule judges signatures; the key is the bytes
    assert ours != VerifyKey(flip(PK, 0)) and not ours == VerifyKey(flip(PK, 0))
    # As PyNaCl, keys of different classes are never equal, in either direction.
    assert (ours == theirs, theirs == ours) == (False, False)
    assert (ours != theirs, theirs != ours) == (True, True)
    assert ours != PK
    assert len({ours, VerifyKey(PK), VerifyKey(flip(PK, 0))}) == 2
    restored = pickle.loads(pickle.dumps(ours))
    assert restored == ours and restored.rule == "libsodium"
    assert copy.deepcopy(ours) == ours
    assert not hasattr(ours, "to_curve25519_public_key")


def test_verify_key_rule() -> None:
    m4, s4, k4 = speccheck_triples()[4]  # mixed-order key: only the cofactored equation holds
    assert VerifyKey(k4).rule == "libsodium"
    with pytest.raises(nacl.exceptions.BadSignatureError):
        VerifyKey(k4).verify(m4, s4)
    assert VerifyKey(k4, rule="strict").verify(m4, s4) == m4
    assert VerifyKey(k4, rule="strict").verify(s4 + m4) == m4
    assert VerifyKey(k4, rule="strict").verify_many([(m4, s4), (m4 + b"x", s4)])[0] == m4
    m0, s0, k0 = speccheck_triples()[0]  # small-order key: OpenSSL accepts, libsodium refuses
    with pytest.raises(nacl.exceptions.BadSignatureError):
        VerifyKey(k0).verify(m0, s0)
    assert VerifyKey(k0, rule="openssl").verify(m0, s0) == m0
    with pytest.raises(hopgate.InputError, match="invalid rule"):
        VerifyKey(k0, rule="sodium")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# pyca/cryptography
# ---------------------------------------------------------------------------


def cryptography_outcome(m: object, s: object, k: bytes) -> Outcome:
    theirs = ed25519.Ed25519PublicKey.from_public_bytes(k)
    return outcome(lambda: theirs.verify(s, m))  # type: ignore[arg-type]


def compat_cryptography_outcome(m: object, s: object, k: bytes) -> Outcome:
    ours = Ed25519PublicKey.from_public_bytes(k)
    return outcome(lambda: ours.verify(s, m))  # type: ignore[arg-type]


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_public_key_answers_as_cryptography(source: str) -> None:
    triples = SOURCES[source]()
    mismatches = [
        (i, ours, theirs)
        for i, (m, s, k) in enumerate(triples)
        if (ours := compat_cryptography_outcome(m, s, k)) != (theirs := cryptography_outcome(m, s, k))
    ]
    assert not mismatches, mismatches[:5]
    accepted = sum(cryptography_outcome(m, s, k)[0] == "ok" for m, s, k in triples)
    assert 0 < accepted < len(triples)


def test_public_key_speccheck_accepts_what_openssl_accepts() -> None:
    # ed25519-speccheck's results for OpenSSL-3.0: cases 0, 1, 2, 3 and 11.
    accepted = [i for i, (m, s, k) in enumerate(speccheck_triples()) if compat_cryptography_outcome(m, s, k)[0] == "ok"]
    assert accepted == [0, 1, 2, 3, 11]


def test_public_key_raises_cryptographys_own_class() -> None:
    assert compat_cryptography.InvalidSignature is InvalidSignature
    private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32))
    ours = Ed25519PublicKey.from_public_bytes(private.public_key().public_bytes_raw())
    ours.verify(private.sign(b"m"), b"m")  # returns None
    with pytest.raises(InvalidSignature):
        ours.verify(private.sign(b"m"), b"n")


@pytest.mark.parametrize(
    "data",
    [b"", bytes(31), bytes(33), bytes(64), bytearray(32), memoryview(bytes(32)), "a" * 32, None, 5, list(range(32)),
     bytes(32), b"\xff" * 32, PK, nacl.signing.SignedMessage(PK)],
)
def test_from_public_bytes_as_cryptography(data: object) -> None:
    theirs = outcome(lambda: ed25519.Ed25519PublicKey.from_public_bytes(data).public_bytes_raw())  # type: ignore[arg-type]
    ours = outcome(lambda: Ed25519PublicKey.from_public_bytes(data).public_bytes_raw())  # type: ignore[arg-type]
    assert ours == theirs


def test_from_public_bytes_messages_as_cryptography() -> None:
    for data in (bytes(31), bytearray(32), None, "x"):
        with pytest.raises(Exception) as theirs:
            ed25519.Ed25519PublicKey.from_public_bytes(data)  # type: ignore[arg-type]
        with pytest.raises(Exception) as ours:
            Ed25519PublicKey.from_public_bytes(data)  # type: ignore[arg-type]
        assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))


def public_key_verify_inputs() -> List[Tuple[object, object]]:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    sig = private.sign(b"m")
    return [
        (sig, b"m"),
        (bytearray(sig), bytearray(b"m")),
        (memoryview(sig), memoryview(b"m")),
        (sig, b"n"),
        (sig[:63], b"m"),
        (sig + b"\0", b"m"),
        (b"", b"m"),
        (b"", b""),
        ("x", b"m"),
        (sig, "m"),
        (None, b"m"),
        (sig, None),
        (sig, 5),
        (list(sig), b"m"),
        (sig.hex(), b"m"),
    ]


@pytest.mark.parametrize("sig,data", public_key_verify_inputs())
def test_public_key_verify_arguments_as_cryptography(sig: object, data: object) -> None:
    pk = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key().public_bytes_raw()
    assert compat_cryptography_outcome(data, sig, pk) == cryptography_outcome(data, sig, pk)


ENCODINGS = [getattr(serialization.Encoding, n) for n in ("Raw", "PEM", "DER", "OpenSSH", "X962", "SMIME")]
FORMATS = [
    getattr(serialization.PublicFormat, n)
    for n in ("Raw", "SubjectPublicKeyInfo", "OpenSSH", "PKCS1", "UncompressedPoint", "CompressedPoint")
]


@pytest.mark.parametrize("encoding", ENCODINGS + ["Raw", None])
@pytest.mark.parametrize("fmt", FORMATS + ["Raw", None])
def test_public_bytes_as_cryptography(encoding: Any, fmt: Any) -> None:
    for raw in (PK, bytes(32), b"\xff" * 32, TORSION[4]):
        theirs = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        ours = Ed25519PublicKey.from_public_bytes(raw)
        assert outcome(lambda: ours.public_bytes(encoding, fmt)) == outcome(lambda: theirs.public_bytes(encoding, fmt))


def test_public_bytes_spki_byte_for_byte() -> None:
    rng = random.Random(8410)
    der, pem, raw = serialization.Encoding.DER, serialization.Encoding.PEM, serialization.Encoding.Raw
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    for _ in range(200):
        data = rng.randbytes(32)
        theirs = ed25519.Ed25519PublicKey.from_public_bytes(data)
        ours = Ed25519PublicKey.from_public_bytes(data)
        assert ours.public_bytes(der, spki) == theirs.public_bytes(der, spki)
        assert ours.public_bytes(pem, spki) == theirs.public_bytes(pem, spki)
        assert ours.public_bytes(raw, serialization.PublicFormat.Raw) == data == ours.public_bytes_raw()
        assert serialization.load_der_public_key(ours.public_bytes(der, spki)) == theirs
        assert serialization.load_pem_public_key(ours.public_bytes(pem, spki)) == ours


def test_public_key_is_a_cryptography_key() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    theirs = private.public_key()
    ours = Ed25519PublicKey.from_public_bytes(theirs.public_bytes_raw())
    assert isinstance(ours, ed25519.Ed25519PublicKey)
    assert issubclass(Ed25519PublicKey, ed25519.Ed25519PublicKey)
    # Equal to cryptography's key with the same bytes, both ways; unequal otherwise.
    assert ours == theirs and theirs == ours and not ours != theirs and not theirs != ours
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    assert ours != other and other != ours
    assert ours == Ed25519PublicKey.from_public_bytes(theirs.public_bytes_raw(), rule="strict")
    assert ours != Ed25519PublicKey.from_public_bytes(other.public_bytes_raw())
    assert (ours == 5, ours == theirs.public_bytes_raw()) == (False, False)
    assert ours.__eq__(5) is NotImplemented and theirs.__eq__(5) is NotImplemented
    assert copy.copy(ours) is ours and copy.deepcopy(ours) is ours
    assert copy.copy(theirs) is theirs and copy.deepcopy(theirs) is theirs
    assert hash(ours) == hash(Ed25519PublicKey.from_public_bytes(theirs.public_bytes_raw()))
    assert len({ours, Ed25519PublicKey.from_public_bytes(theirs.public_bytes_raw())}) == 1


def test_public_key_rule() -> None:
    m4, s4, k4 = speccheck_triples()[4]
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(k4).verify(s4, m4)
    Ed25519PublicKey.from_public_bytes(k4, rule="strict").verify(s4, m4)
    m0, s0, k0 = speccheck_triples()[0]
    assert Ed25519PublicKey.from_public_bytes(k0).rule == "openssl"
    Ed25519PublicKey.from_public_bytes(k0).verify(s0, m0)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(k0, rule="libsodium").verify(s0, m0)
    with pytest.raises(hopgate.InputError, match="invalid rule"):
        Ed25519PublicKey.from_public_bytes(k0, rule="OpenSSL")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Libraries that take a cryptography key object
# ---------------------------------------------------------------------------


def tamper(token: str, part: int) -> str:
    """``token`` with one character of its header (0), payload (1) or signature (2)
    changed, so that it still decodes but no longer verifies."""
    parts = token.split(".")
    if part == 1:
        parts[1] = jwt.utils.base64url_encode(b'{"sub":"mallory"}').decode()
    else:
        text = parts[part]
        parts[part] = text[:10] + ("A" if text[10] != "A" else "B") + text[11:]
    return ".".join(parts)


def test_pyjwt_accepts_the_key() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    ours = Ed25519PublicKey.from_public_bytes(private.public_key().public_bytes_raw())
    token = jwt.encode({"sub": "alice", "n": 1}, private, algorithm="EdDSA")
    assert jwt.decode(token, ours, algorithms=["EdDSA"]) == {"sub": "alice", "n": 1}
    assert jwt.api_jws.decode_complete(token, ours, algorithms=["EdDSA"])["payload"] == b'{"sub":"alice","n":1}'
    for forged in (tamper(token, 1), tamper(token, 2)):
        with pytest.raises(jwt.exceptions.InvalidSignatureError):
            jwt.decode(forged, private.public_key(), algorithms=["EdDSA"])
        with pytest.raises(jwt.exceptions.InvalidSignatureError):
            jwt.decode(forged, ours, algorithms=["EdDSA"])
    other = Ed25519PublicKey.from_public_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    with pytest.raises(jwt.exceptions.InvalidSignatureError):
        jwt.decode(token, other, algorithms=["EdDSA"])
    # Its JWK is cryptography's.
    assert jwt.algorithms.OKPAlgorithm.to_jwk(ours) == jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key())


# ---------------------------------------------------------------------------
# Without the libraries: hopgate's own exception classes
# ---------------------------------------------------------------------------


def test_without_the_libraries_installed() -> None:
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("nacl", "cryptography"):
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, Absent())
        import hopgate
        from hopgate.compat import nacl as cn, cryptography as cc
        from hopgate.compat import _errors

        pk = bytes.fromhex("ab" * 32)
        assert cn.BadSignatureError is _errors.BadSignatureError
        assert issubclass(cn.BadSignatureError, hopgate.HopgateError)
        assert cc.InvalidSignature is _errors.InvalidSignature
        assert issubclass(cc.InvalidSignature, hopgate.HopgateError)
        key = hopgate.SigningKey.from_seed(bytes(32))
        sig = key.sign(b"m")
        vk = cn.VerifyKey(key.public_key)
        assert vk.verify(b"m", sig) == b"m" and vk.verify(sig + b"m") == b"m"
        for call, cls in [
            (lambda: vk.verify(b"n", sig), _errors.BadSignatureError),
            (lambda: vk.verify(b"m", sig[:1]), _errors.ValueError),
            (lambda: vk.verify(b"m", bytearray(sig)), _errors.TypeError),
            (lambda: cn.VerifyKey(pk[:31]), _errors.ValueError),
            (lambda: cn.VerifyKey("ab" * 32), _errors.TypeError),
        ]:
            try:
                call()
            except cls as exc:
                assert isinstance(exc, hopgate.HopgateError)
            else:
                raise AssertionError(cls)
        assert issubclass(_errors.ValueError, ValueError) and issubclass(_errors.TypeError, TypeError)
        assert type(vk.verify_many([(b"n", sig)])[0]) is _errors.BadSignatureError

        pub = cc.Ed25519PublicKey.from_public_bytes(key.public_key)
        pub.verify(sig, b"m")
        try:
            pub.verify(sig, b"n")
        except cc.InvalidSignature:
            pass
        else:
            raise AssertionError("accepted")
        assert pub.public_bytes("Raw", "Raw") == key.public_key
        print(pub.public_bytes("DER", "SubjectPublicKeyInfo").hex())
        print(pub.public_bytes("PEM", "SubjectPublicKeyInfo").decode(), end="")
        try:
            pub.public_bytes("OpenSSH", "OpenSSH")
        except ValueError:
            pass
        else:
            raise AssertionError("OpenSSH")
        assert "nacl" not in sys.modules and "cryptography" not in sys.modules
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    pk = hopgate.SigningKey.from_seed(bytes(32)).public_key
    theirs = ed25519.Ed25519PublicKey.from_public_bytes(pk)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der, pem = theirs.public_bytes(serialization.Encoding.DER, spki), theirs.public_bytes(serialization.Encoding.PEM, spki)
    assert run.stdout == der.hex() + "\n" + pem.decode()


def test_importing_hopgate_does_not_import_the_drop_ins() -> None:
    script = "import sys, hopgate; print(sorted(m for m in sys.modules if m.startswith('hopgate.compat')))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_joserfc_accepts_the_key() -> None:
    from joserfc import jwt as jose_jwt
    from joserfc.errors import BadSignatureError as JoseBadSignature
    from joserfc.jwk import OKPKey

    private = ed25519.Ed25519PrivateKey.generate()
    token = jose_jwt.encode({"alg": "Ed25519"}, {"sub": "alice"}, OKPKey.import_key(private), algorithms=["Ed25519"])
    ours = Ed25519PublicKey.from_public_bytes(private.public_key().public_bytes_raw())
    key = OKPKey.import_key(ours)
    assert key.raw_value is ours  # joserfc verifies with the key object it was given
    assert jose_jwt.decode(token, key, algorithms=["Ed25519"]).claims == {"sub": "alice"}
    for forged in (tamper(token, 1), tamper(token, 2)):
        with pytest.raises(JoseBadSignature):
            jose_jwt.decode(forged, key, algorithms=["Ed25519"])


def test_authlib_accepts_the_key() -> None:
    from authlib.deprecate import AuthlibDeprecationWarning  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        # authlib.jose warns, on import, that authlib will move it to joserfc (a filter
        # set after authlib.deprecate's own "always").
        warnings.simplefilter("ignore", AuthlibDeprecationWarning)
        from authlib.jose import JsonWebSignature, JsonWebToken, OKPKey  # type: ignore[import-untyped]
        from authlib.jose.errors import BadSignatureError as AuthlibBadSignature  # type: ignore[import-untyped]

    private = ed25519.Ed25519PrivateKey.generate()
    ours = Ed25519PublicKey.from_public_bytes(private.public_key().public_bytes_raw())
    assert OKPKey.import_key(ours).public_key is ours  # authlib verifies with the object it was given
    jwt_eddsa = JsonWebToken(["EdDSA"])
    token = jwt_eddsa.encode({"alg": "EdDSA"}, {"sub": "alice", "n": 1}, private).decode()
    assert jwt_eddsa.decode(token, ours) == {"sub": "alice", "n": 1}
    assert JsonWebSignature(["EdDSA"]).deserialize_compact(token, ours)["payload"] == b'{"sub":"alice","n":1}'
    for forged in (tamper(token, 1), tamper(token, 2)):
        for key in (private.public_key(), ours):
            with pytest.raises(AuthlibBadSignature):
                jwt_eddsa.decode(forged, key)
    other = Ed25519PublicKey.from_public_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    with pytest.raises(AuthlibBadSignature):
        jwt_eddsa.decode(token, other)
