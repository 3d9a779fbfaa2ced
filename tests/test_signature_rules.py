"""The drop-in signature rules (SPEC §3.4), proven against the libraries they stand for.

Every triple is judged by hopgate (native, one ``verify_batch`` per rule) and by the real
library: PyNaCl (libsodium) for ``rule="libsodium"``, pyca/cryptography (OpenSSL) for
``rule="openssl"``. They must agree on every triple, in both directions: whatever the
library accepts hopgate accepts, and whatever it refuses hopgate refuses. The reference
(``hopgate.reference``) must agree too. The corpus is well over 100,000 triples: valid
signatures, then single-bit flips and non-canonical scalars, then R and A replaced by
every small-order and non-canonical encoding, then triples built so that exactly the
edge cases where the rules part ways verify (keys of small and of mixed order, an R of
small order). Wycheproof's Ed25519 vectors are judged the same way, and under the strict
rule every vector Wycheproof calls invalid must be refused.
"""

from __future__ import annotations

import functools
import json
import pathlib
import random
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any, Callable, Literal, Optional, Tuple

import nacl.bindings
import nacl.exceptions
import nacl.signing
import numpy as np
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from _ed25519 import L, challenge, flip, secret_scalar

import hopgate
import hopgate.reference
from hopgate import InputError

VECTORS = pathlib.Path(__file__).parent / "vectors"

Rule = Literal["strict", "libsodium", "openssl"]
DROP_IN: tuple[Rule, ...] = ("libsodium", "openssl")
RULES: tuple[Rule, ...] = ("strict", "libsodium", "openssl")

# ---------------------------------------------------------------------------
# The libraries, asked directly (not through hopgate.reference).
# ---------------------------------------------------------------------------


def pynacl_accepts(msg: bytes, sig: bytes, pk: bytes) -> bool:
    try:
        nacl.bindings.crypto_sign_open(sig + msg, pk)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _openssl_key(pk: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(pk)


def cryptography_accepts(msg: bytes, sig: bytes, pk: bytes) -> bool:
    try:
        _openssl_key(pk).verify(sig, msg)
    except InvalidSignature:
        return False
    return True


LIBRARY: dict[str, Callable[[bytes, bytes, bytes], bool]] = {
    "libsodium": pynacl_accepts,
    "openssl": cryptography_accepts,
}

# ---------------------------------------------------------------------------
# Edwards25519 arithmetic, only to build inputs (never to judge them).
# ---------------------------------------------------------------------------

P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = Tuple[int, int]
IDENTITY: Point = (0, 1)


def decode(enc: bytes) -> Optional[Point]:
    """RFC 8032 §5.1.3 decoding, taking y mod p and keeping x = 0 whatever the sign bit."""
    value = int.from_bytes(enc, "little")
    sign, y = value >> 255, (value & (2**255 - 1)) % P
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P == (-u) % P:
        x = x * SQRT_M1 % P
    if v * x * x % P != u:
        return None
    return ((-x) % P if x & 1 != sign else x, y)


def add(p1: Point, p2: Point) -> Point:
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P)


def encode(point: Point) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def times(k: int, point: Point) -> Point:
    """[k]point for the small k of torsion arithmetic."""
    out = IDENTITY
    for _ in range(k):
        out = add(out, point)
    return out


def sig_of(r: bytes, s: int) -> bytes:
    return r + (s % L).to_bytes(32, "little")


# A point of order 8 (its y is on libsodium's small-order list) and its multiples:
# the eight points of small order.
T8 = decode(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"))
assert T8 is not None
TORSION = [times(j, T8) for j in range(8)]
assert add(TORSION[7], T8) == IDENTITY and len(set(TORSION)) == 8


def special_encodings() -> list[bytes]:
    """Every small-order encoding with either sign bit (x = 0 with the sign bit set
    among them), and every non-canonical y + p (y < 19) with either sign bit."""
    out: dict[bytes, None] = {}
    for point in TORSION:
        enc = encode(point)
        out[enc] = None
        out[enc[:31] + bytes([enc[31] ^ 0x80])] = None
    for y in range(19):
        enc = (P + y).to_bytes(32, "little")
        out[enc] = None
        out[enc[:31] + bytes([enc[31] | 0x80])] = None
    return list(out)


SPECIAL = special_encodings()
# Flipping the sign bit of a small-order point gives another one, except for x = 0
# (y = 1 and y = p - 1): 8 + 2, then 19 values of y + p with either sign bit.
assert len(SPECIAL) == 10 + 38

# ---------------------------------------------------------------------------
# The corpus.
# ---------------------------------------------------------------------------

N_KEYS = 64
N_BASE = 12_000  # valid signatures; each also gives 6 mutations
N_REPLACED = 200  # bases whose R, then A, is replaced by each special encoding


@dataclass
class Corpus:
    msgs: list[bytes] = field(default_factory=list)
    sigs: list[bytes] = field(default_factory=list)
    pks: list[bytes] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, kind: str, msg: bytes, sig: bytes, pk: bytes) -> None:
        assert len(sig) == 64 and len(pk) == 32
        self.msgs.append(msg)
        self.sigs.append(sig)
        self.pks.append(pk)
        self.kinds.append(kind)


def nonce(rng: random.Random) -> Tuple[int, bytes]:
    """A random r and R = [r]B (computed by a signing key's public key)."""
    seed = rng.randbytes(32)
    return secret_scalar(seed), hopgate.SigningKey.from_seed(seed).public_key


@functools.lru_cache(maxsize=1)
def corpus() -> Corpus:
    rng = random.Random(0x5EED_2025)
    c = Corpus()
    seeds = [rng.randbytes(32) for _ in range(N_KEYS)]
    keys = [hopgate.SigningKey.from_seed(seed) for seed in seeds]
    secrets = [secret_scalar(seed) for seed in seeds]

    bases = []
    for i in range(N_BASE):
        key = keys[i % N_KEYS]
        msg = rng.randbytes(rng.randrange(0, 80))
        bases.append((msg, key.sign(msg), key.public_key))
    for msg, sig, pk in bases:
        c.add("valid", msg, sig, pk)
        c.add("flip R", msg, flip(sig, rng.randrange(256)), pk)
        c.add("flip S", msg, flip(sig, 256 + rng.randrange(256)), pk)
        c.add("flip A", msg, sig, flip(pk, rng.randrange(256)))
        c.add("flip M", flip(msg, rng.randrange(8 * len(msg))) if msg else b"\x00", sig, pk)
        s = int.from_bytes(sig[32:], "little")
        c.add("S + L", msg, sig[:32] + (s + L).to_bytes(32, "little"), pk)
        c.add("S + 2^253", msg, sig[:32] + (s + 2**253).to_bytes(32, "little"), pk)

    for msg, sig, pk in bases[:N_REPLACED]:
        for enc in SPECIAL:
            c.add("R replaced", msg, enc + sig[32:], pk)
            c.add("A replaced", msg, sig, enc)

    # A key of small order (or written as one of the special encodings), R = [r]B and
    # S = r: the equation is [k]A = 0, so OpenSSL accepts when k kills A's torsion.
    for enc in SPECIAL:
        for _ in range(40):
            r, big_r = nonce(rng)
            c.add("small-order A", rng.randbytes(16), sig_of(big_r, r), enc)

    # R of small order (or a special encoding) with S = k·a: [S]B - [k]A is the
    # identity, whose canonical encoding only the identity's R matches.
    identity = encode(IDENTITY)
    r_variants = [identity, identity[:31] + b"\x80", (P + 1).to_bytes(32, "little")] + [
        encode(t) for t in TORSION[1:]
    ]
    for i in range(N_KEYS):
        for big_r in r_variants:
            for _ in range(3):
                msg = rng.randbytes(24)
                s = challenge(big_r, keys[i].public_key, msg) * secrets[i]
                c.add("small-order R", msg, sig_of(big_r, s), keys[i].public_key)

    # Keys of mixed order, A = [a]B + T. With R = [r]B + T_j and S = r + k·a,
    # [S]B - [k]A = [r]B - [k]T: the cofactorless equation holds iff T_j = -[k]T (about
    # one j in ord(T)), the cofactored one always.
    for i in range(16):
        a_point = decode(keys[i].public_key)
        assert a_point is not None
        for t in (TORSION[4], TORSION[2], TORSION[1], TORSION[5]):  # orders 2, 4, 8, 8
            pk = encode(add(a_point, t))
            for _ in range(6):
                r, r_enc = nonce(rng)
                r_point = decode(r_enc)
                assert r_point is not None
                msg = rng.randbytes(20)
                for tj in TORSION:
                    big_r = encode(add(r_point, tj))
                    s = r + challenge(big_r, pk, msg) * secrets[i]
                    c.add("mixed-order A", msg, sig_of(big_r, s), pk)
                # R of small order with S = k·a: [S]B - [k]A = -[k]T, which OpenSSL
                # accepts when it encodes to R.
                for tj in TORSION:
                    big_r = encode(tj)
                    s = challenge(big_r, pk, msg) * secrets[i]
                    c.add("mixed A, small R", msg, sig_of(big_r, s), pk)

    # Bytes at random, and random signatures under real keys.
    for i in range(1500):
        c.add("random", rng.randbytes(rng.randrange(40)), rng.randbytes(64), rng.randbytes(32))
        s = rng.randrange(L if i % 2 else 2**256)
        c.add("random sig", rng.randbytes(8), rng.randbytes(32) + s.to_bytes(32, "little"), keys[i % N_KEYS].public_key)
    return c


@functools.lru_cache(maxsize=None)
def library_answers(rule: Rule) -> np.ndarray:
    c = corpus()
    check = LIBRARY[rule]
    return np.array([check(m, s, k) for m, s, k in zip(c.msgs, c.sigs, c.pks)], dtype=np.bool_)


@functools.lru_cache(maxsize=None)
def native_answers(rule: Rule) -> np.ndarray:
    c = corpus()
    return hopgate.verify_batch(c.msgs, c.sigs, c.pks, rule=rule)


def describe(rule: Rule, indices: list[int], ours: np.ndarray, theirs: np.ndarray) -> str:
    """The first disagreements: corpus index `indices[j]` got `ours[j]` and `theirs[j]`."""
    c = corpus()
    rows = [
        f"#{i} {c.kinds[i]}: hopgate {bool(o)}, other {bool(t)}; "
        f"msg={c.msgs[i].hex()} sig={c.sigs[i].hex()} pk={c.pks[i].hex()}"
        for i, o, t in list(zip(indices, ours, theirs))[:5]
    ]
    return f"{rule}: {len(indices)} disagreements\n" + "\n".join(rows)


# ---------------------------------------------------------------------------
# Tests.
# ---------------------------------------------------------------------------


def test_the_corpus_is_large_and_varied() -> None:
    kinds = Counter(corpus().kinds)
    assert sum(kinds.values()) >= 100_000
    assert kinds["valid"] == N_BASE
    assert kinds["R replaced"] == kinds["A replaced"] == N_REPLACED * len(SPECIAL)


@pytest.mark.parametrize("rule", DROP_IN)
def test_native_equals_the_library_on_every_triple(rule: Rule) -> None:
    ours, theirs = native_answers(rule), library_answers(rule)
    wrong = np.flatnonzero(ours != theirs)
    assert wrong.size == 0, describe(rule, wrong.tolist(), ours[wrong], theirs[wrong])
    # Not vacuous: many accepted and many refused, on both sides by the equality above.
    kinds = np.array(corpus().kinds)
    accepted = Counter(kinds[theirs].tolist())
    refused = Counter(kinds[~theirs].tolist())
    assert accepted["valid"] == N_BASE and refused["valid"] == 0
    for kind in ("flip R", "flip S", "flip A", "S + L", "S + 2^253", "R replaced", "A replaced"):
        assert accepted[kind] == 0 and refused[kind] > 0, kind
    assert refused["flip M"] == N_BASE
    # The edge cases the rules decide differently, each with accepts and refusals.
    assert accepted["mixed-order A"] >= 250 and refused["mixed-order A"] >= 2000
    if rule == "libsodium":
        assert accepted["small-order A"] == accepted["small-order R"] == accepted["mixed A, small R"] == 0
    else:
        assert accepted["small-order A"] >= 200 and refused["small-order A"] >= 1000
        assert accepted["small-order R"] == 3 * N_KEYS  # the identity's canonical encoding only
        assert accepted["mixed A, small R"] >= 100 and refused["mixed A, small R"] >= 1000


def test_strict_differs_from_both_where_the_spec_says() -> None:
    kinds = np.array(corpus().kinds)
    strict = native_answers("strict")
    mixed = kinds == "mixed-order A"
    # The cofactored equation holds for every mixed-order triple; the cofactorless one
    # for about one in ord(T).
    assert strict[mixed].all()
    for rule in DROP_IN:
        assert (strict[mixed] >= library_answers(rule)[mixed]).all()
        assert library_answers(rule)[mixed].sum() < strict[mixed].sum() // 2
    for kind in ("small-order A", "small-order R", "mixed A, small R", "R replaced", "A replaced"):
        assert not strict[kinds == kind].any(), kind


@pytest.mark.parametrize("rule", RULES)
def test_single_equals_batch(rule: Rule) -> None:
    c = corpus()
    batch = native_answers(rule)
    picks = range(0, len(c.msgs), 47)
    single = [hopgate.verify(c.msgs[i], c.sigs[i], c.pks[i], rule=rule) for i in picks]
    assert single == batch[list(picks)].tolist()
    assert 100 < sum(single) < len(single) - 100


@pytest.mark.parametrize("rule", DROP_IN)
def test_reference_equals_native(rule: Rule) -> None:
    c = corpus()
    ref = hopgate.reference.verify_batch(c.msgs, c.sigs, c.pks, rule=rule)
    ours = native_answers(rule)
    wrong = np.flatnonzero(ref != ours)
    assert wrong.size == 0, describe(rule, wrong.tolist(), ours[wrong], ref[wrong])
    assert ref.sum() == library_answers(rule).sum() >= N_BASE


def test_reference_equals_native_under_strict() -> None:
    # The reference's strict rule is partly pure Python (the cofactored equation where
    # libsodium cannot decide it), so a sample from every kind of triple.
    c = corpus()
    by_kind: dict[str, list[int]] = {}
    for i, kind in enumerate(c.kinds):
        by_kind.setdefault(kind, []).append(i)
    picks = sorted(i for indices in by_kind.values() for i in indices[:: max(1, len(indices) // 100)])
    ref = hopgate.reference.verify_batch(
        [c.msgs[i] for i in picks], [c.sigs[i] for i in picks], [c.pks[i] for i in picks], rule="strict"
    )
    assert ref.tolist() == native_answers("strict")[picks].tolist()
    assert 50 < ref.sum() < len(picks) - 50


# Each library's answers on the 12 speccheck cases (ed25519-speccheck's results.md, rows
# "LibSodium" and "OpenSSL-3.0"; docs/SPEC.md §3.4), confirmed here against the libraries.
SPECCHECK_ACCEPTS = {"strict": {3, 4, 5}, "libsodium": {3}, "openssl": {0, 1, 2, 3, 11}}


@pytest.mark.parametrize("rule", RULES)
def test_speccheck_cases(rule: Rule, speccheck: list[dict[str, str]]) -> None:
    msgs = [bytes.fromhex(c["message"]) for c in speccheck]
    sigs = [bytes.fromhex(c["signature"]) for c in speccheck]
    pks = [bytes.fromhex(c["pub_key"]) for c in speccheck]
    expected = [i in SPECCHECK_ACCEPTS[rule] for i in range(12)]
    if rule in LIBRARY:
        assert [LIBRARY[rule](m, s, k) for m, s, k in zip(msgs, sigs, pks)] == expected
    for impl in (hopgate, hopgate.reference):
        assert [impl.verify(m, s, k, rule=rule) for m, s, k in zip(msgs, sigs, pks)] == expected
        assert impl.verify_batch(msgs * 5, sigs * 5, pks * 5, rule=rule).tolist() == expected * 5


@pytest.mark.parametrize("rule", RULES)
def test_rfc8032_vectors(rule: Rule) -> None:
    cases = json.loads((VECTORS / "rfc8032.json").read_text())["cases"]
    assert len(cases) == 3
    for case in cases:
        msg, sig, pk = (bytes.fromhex(case[k]) for k in ("message", "signature", "public_key"))
        if rule in LIBRARY:
            assert LIBRARY[rule](msg, sig, pk)
            assert not LIBRARY[rule](msg + b"\0", sig, pk)
        for impl in (hopgate, hopgate.reference):
            assert impl.verify(msg, sig, pk, rule=rule) is True
            assert impl.verify(msg + b"\0", sig, pk, rule=rule) is False


@pytest.mark.parametrize("impl", [hopgate, hopgate.reference], ids=["native", "reference"])
def test_rule_argument(impl: object) -> None:
    verify: Callable[..., bool] = getattr(impl, "verify")
    verify_batch: Callable[..., np.ndarray] = getattr(impl, "verify_batch")
    key = hopgate.SigningKey.from_seed(bytes(range(32)))
    sig = key.sign(b"m")
    # The default is the strict rule: speccheck case 4 (mixed order, only the
    # cofactored equation holds) tells strict from both drop-in rules.
    case = json.loads((VECTORS / "speccheck_cases.json").read_text())["cases"][4]
    m4, s4, k4 = (bytes.fromhex(case[k]) for k in ("message", "signature", "pub_key"))
    assert verify(m4, s4, k4) is True and verify(m4, s4, k4, rule="strict") is True
    assert verify(m4, s4, k4, rule="libsodium") is False and verify(m4, s4, k4, rule="openssl") is False
    assert verify_batch([m4], [s4], [k4]).tolist() == [True]
    for rule in RULES:
        # Wrong lengths are invalid, not errors, under every rule.
        assert verify(b"m", sig[:63], key.public_key, rule=rule) is False
        assert verify(b"m", sig + b"\0", key.public_key, rule=rule) is False
        assert verify(b"m", sig, key.public_key[:31], rule=rule) is False
        assert verify_batch([b"m", b"m"], [sig, sig[:10]], [key.public_key] * 2, rule=rule).tolist() == [True, False]
        # One buffer with offsets, and (n, 64) / (n, 32) arrays.
        data = np.frombuffer(b"mmm", dtype=np.uint8)
        sigs = np.frombuffer(sig * 3, dtype=np.uint8).reshape(3, 64)
        pks = np.frombuffer(key.public_key * 3, dtype=np.uint8).reshape(3, 32)
        out = verify_batch(data, sigs, pks, offsets=[0, 1, 2, 3], rule=rule)
        assert out.dtype == np.bool_ and out.tolist() == [True] * 3
    for bad in ("", "Strict", "sodium", "openssl ", None, 1, b"strict"):
        for call in (
            lambda: verify(b"m", sig, key.public_key, rule=bad),
            lambda: verify_batch([b"m"], [sig], [key.public_key], rule=bad),
        ):
            with pytest.raises(InputError) as info:
                call()
            assert all(name in str(info.value) for name in RULES)
    with pytest.raises(TypeError):
        verify(b"m", sig, key.public_key, "strict")  # rule is keyword-only


# ---------------------------------------------------------------------------
# Wycheproof's Ed25519 vectors (tests/vectors/wycheproof_ed25519.json).
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WycheproofVector:
    tc_id: int
    comment: str
    flags: Tuple[str, ...]
    msg: bytes
    sig: bytes
    pk: bytes
    valid: bool  # Wycheproof's result: "valid" (True) or "invalid" (False)

    def __str__(self) -> str:
        return f"tcId {self.tc_id} {list(self.flags)} {self.comment!r}"


@functools.lru_cache(maxsize=1)
def wycheproof() -> Tuple[WycheproofVector, ...]:
    data = json.loads((VECTORS / "wycheproof_ed25519.json").read_text())
    out = []
    for case in data["cases"]:
        assert case["result"] in ("valid", "invalid"), case  # the file has no "acceptable"
        out.append(
            WycheproofVector(
                tc_id=case["tcId"],
                comment=case["comment"],
                flags=tuple(case["flags"]),
                msg=bytes.fromhex(case["msg"]),
                sig=bytes.fromhex(case["sig"]),
                pk=bytes.fromhex(case["pk"]),
                valid=case["result"] == "valid",
            )
        )
    return tuple(out)


def pynacl_detached(msg: bytes, sig: bytes, pk: bytes) -> bool:
    """PyNaCl's answer to a detached signature. ``VerifyKey.verify`` refuses a signature
    that is not 64 bytes with ``ValueError`` before libsodium sees it (``crypto_sign_open``
    on ``sig + msg`` would instead split the bytes at 64 and judge another message)."""
    try:
        nacl.signing.VerifyKey(pk).verify(msg, sig)
    except nacl.exceptions.BadSignatureError:
        return False
    except ValueError:
        assert len(sig) != 64
        return False
    return True


WYCHEPROOF_LIBRARY: dict[str, Callable[[bytes, bytes, bytes], bool]] = {
    "libsodium": pynacl_detached,
    "openssl": cryptography_accepts,
}


def test_wycheproof_vectors_file() -> None:
    data = json.loads((VECTORS / "wycheproof_ed25519.json").read_text())
    assert data["source"]["repository"] == "https://github.com/C2SP/wycheproof"
    assert data["source"]["path"] == "testvectors_v1/ed25519_test.json"
    assert len(data["source"]["commit"]) == 40 and data["licence"].startswith("Apache-2.0")
    vectors = wycheproof()
    assert len({v.tc_id for v in vectors}) == len(vectors) == 151
    assert sum(v.valid for v in vectors) == 88
    lengths = Counter(len(v.sig) for v in vectors if not v.valid)
    assert lengths[64] >= 40 and sum(n for size, n in lengths.items() if size != 64) >= 10
    assert all(len(v.pk) == 32 for v in vectors)


@pytest.mark.parametrize("rule", DROP_IN)
def test_wycheproof_native_equals_the_library(rule: Rule) -> None:
    vectors = wycheproof()
    msgs, sigs, pks = [v.msg for v in vectors], [v.sig for v in vectors], [v.pk for v in vectors]
    theirs = [WYCHEPROOF_LIBRARY[rule](v.msg, v.sig, v.pk) for v in vectors]
    for name, impl in (("native", hopgate), ("reference", hopgate.reference)):
        answers = {
            "verify": [impl.verify(v.msg, v.sig, v.pk, rule=rule) for v in vectors],
            "verify_batch": impl.verify_batch(msgs, sigs, pks, rule=rule).tolist(),
        }
        for call, ours in answers.items():
            wrong = [f"{v}: hopgate {o}, library {t}" for v, o, t in zip(vectors, ours, theirs) if o != t]
            assert not wrong, f"{name} {call}, rule {rule}: " + "; ".join(wrong)
    # Not vacuous: the library accepts exactly the vectors Wycheproof calls valid (88),
    # so hopgate, by the equality above, accepts 88 and refuses 63.
    assert [v.tc_id for v, t in zip(vectors, theirs) if t] == [v.tc_id for v in vectors if v.valid]
    assert sum(theirs) == 88


@pytest.mark.parametrize("impl", [hopgate, hopgate.reference], ids=["native", "reference"])
def test_wycheproof_strict_refuses_every_invalid_vector(impl: object) -> None:
    verify: Callable[..., bool] = getattr(impl, "verify")
    verify_batch: Callable[..., np.ndarray] = getattr(impl, "verify_batch")
    vectors = wycheproof()
    single = [verify(v.msg, v.sig, v.pk, rule="strict") for v in vectors]
    batch = verify_batch([v.msg for v in vectors], [v.sig for v in vectors], [v.pk for v in vectors], rule="strict")
    assert batch.tolist() == single
    accepted_invalid = [str(v) for v, ok in zip(vectors, single) if ok and not v.valid]
    assert not accepted_invalid, "strict accepts what Wycheproof calls invalid: " + "; ".join(accepted_invalid)
    # Not vacuous: every kind of invalid vector is among those refused, and the valid
    # ones (Wycheproof's, all of canonical encodings and prime-order keys) are accepted.
    refused_flags = Counter(f for v, ok in zip(vectors, single) if not ok for f in v.flags)
    for flag in (
        "InvalidSignature",
        "InvalidEncoding",
        "SignatureMalleability",
        "TruncatedSignature",
        "SignatureWithGarbage",
        "CompressedSignature",
        "InvalidKtv",
    ):
        assert refused_flags[flag] > 0, flag
    assert sum(not ok for ok in single) == 63
    assert [v.tc_id for v, ok in zip(vectors, single) if ok] == [v.tc_id for v in vectors if v.valid]
    assert sum(single) == 88


# -- the cache of decoded public keys ----------------------------------------------------------


@pytest.fixture
def key_cache() -> Iterator[None]:
    """The process's key cache at its default size and empty, before and after."""
    hopgate.key_cache_resize(hopgate._native.DEFAULT_KEY_CACHE_CAPACITY)
    yield
    hopgate.key_cache_resize(hopgate._native.DEFAULT_KEY_CACHE_CAPACITY)


@pytest.mark.parametrize("rule", RULES)
def test_key_cache_changes_no_decision(rule: Rule, key_cache: None) -> None:
    """Every triple of the corpus (small-order, mixed-order, non-canonical, off-curve and
    random keys among them) gets the same answer with the cache off, cold and warm, in a
    batch and one at a time."""
    c = corpus()
    hopgate.key_cache_resize(0)
    off = hopgate.verify_batch(c.msgs, c.sigs, c.pks, rule=rule)
    assert hopgate.key_cache_info().entries == 0
    hopgate.key_cache_clear()
    hopgate.key_cache_resize(hopgate._native.DEFAULT_KEY_CACHE_CAPACITY)
    cold = hopgate.verify_batch(c.msgs, c.sigs, c.pks, rule=rule)
    after_cold = hopgate.key_cache_info()
    warm = hopgate.verify_batch(c.msgs, c.sigs, c.pks, rule=rule)
    after_warm = hopgate.key_cache_info()
    # The warm pass decoded nothing: every key it needed was held.
    assert after_cold.entries > 0 and after_warm.misses == after_cold.misses
    assert after_warm.hits > after_cold.hits
    single = np.array([hopgate.verify(m, s, k, rule=rule) for m, s, k in zip(c.msgs[::7], c.sigs[::7], c.pks[::7])])
    assert (off == cold).all() and (off == warm).all() and (off[::7] == single).all()
    assert off.any() and not off.all()


def test_key_cache_counts_and_stays_bounded(key_cache: None) -> None:
    keys = [hopgate.SigningKey.generate() for _ in range(300)]
    msgs = [b"m"] * len(keys)
    sigs = [k.sign(b"m") for k in keys]
    pks = [k.public_key for k in keys]
    hopgate.key_cache_clear()
    assert hopgate.verify_batch(msgs, sigs, pks).all()
    assert hopgate.key_cache_info() == hopgate.KeyCacheInfo(0, 300, 300, hopgate._native.DEFAULT_KEY_CACHE_CAPACITY)
    assert hopgate.verify_batch(msgs, sigs, pks).all()
    assert hopgate.key_cache_info()[:3] == (300, 300, 300)
    hopgate.key_cache_resize(64)
    assert hopgate.key_cache_info() == hopgate.KeyCacheInfo(0, 0, 0, 64)
    for _ in range(3):
        assert hopgate.verify_batch(msgs, sigs, pks).all()
        assert hopgate.key_cache_info().entries <= 64


def test_key_cache_flood_of_off_curve_keys_changes_no_decision(key_cache: None) -> None:
    """An attacker sending many keys that do not decode fills the cache with refusals: it
    stays bounded, and the honest keys it evicts are decoded again, not misjudged."""
    rng = random.Random(77)
    honest = [hopgate.SigningKey.generate() for _ in range(8)]
    hopgate.key_cache_resize(128)
    for round_ in range(4):
        junk = [rng.randbytes(32) for _ in range(500)]
        flood = hopgate.verify_batch([b"x"] * len(junk), [rng.randbytes(64) for _ in junk], junk)
        assert not flood.any()
        assert hopgate.key_cache_info().entries <= 128
        ok = hopgate.verify_batch([b"m"] * 8, [k.sign(b"m") for k in honest], [k.public_key for k in honest])
        assert ok.all(), round_


@pytest.mark.parametrize("capacity", [-1, 2**64, 1.5, "8", None])
def test_key_cache_resize_refuses_what_is_not_a_size(impl: Any, capacity: Any) -> None:
    with pytest.raises(hopgate.InputError, match="capacity"):
        impl.key_cache_resize(capacity)


def test_reference_key_cache_counts_strict_key_checks() -> None:
    from hopgate import reference

    key = reference.SigningKey.generate()
    sig = key.sign(b"m")
    reference.key_cache_clear()
    assert reference.verify(b"m", sig, key.public_key)
    assert reference.verify(b"m", sig, key.public_key)
    assert reference.key_cache_info() == hopgate.KeyCacheInfo(1, 1, 1, reference.DEFAULT_KEY_CACHE_CAPACITY)
