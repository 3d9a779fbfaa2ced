"""hopgate.biscuit against the real biscuit-python 0.4.0 (``biscuit_auth``, biscuit-auth 6):
tokens of every shape it makes (authority only, attenuated, third-party blocks, sealed by
hand, seeded random ones), every single-bit flip of a sample, truncations, appended and
swapped bytes, wrong roots, hand-built version-0 and version-1 tokens signed with PyNaCl,
and attacks (small-order and mixed-order keys, non-canonical S, oversize varints, lengths
past the end, deep groups, huge block counts). For every token hopgate accepts exactly when
``Biscuit.from_bytes`` does, with the same revocation ids; and the native core answers
exactly as the reference does, message for message."""

from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import biscuit_auth
import nacl.signing
import pytest

import hopgate
from hopgate.biscuit import BiscuitError, FormatError, SignatureError, UnsupportedAlgorithm, verify_signatures
from hopgate.reference import biscuit_verify as reference_verify
from _ed25519 import L, flip


# biscuit-python's stubs lag its API (`from_bytes(data, algorithm)`, `Algorithm.Ed25519`).
ba: Any = biscuit_auth

native_verify: Optional[Callable[..., List[Any]]]
try:
    from hopgate._native import biscuit_verify as native_verify
except ImportError:  # pragma: no cover - the reference-only test run
    native_verify = None

P = 2**255 - 19

# ---------------------------------------------------------------------------
# Protobuf, written and read by hand (only well-formed input is read here).


def varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def fld(tag: int, data: bytes) -> bytes:
    return varint(tag << 3 | 2) + varint(len(data)) + data


def num(tag: int, v: int) -> bytes:
    return varint(tag << 3) + varint(v)


def fields(data: bytes) -> List[Tuple[int, Union[int, bytes]]]:
    out: List[Tuple[int, Union[int, bytes]]] = []
    pos = 0

    def read() -> int:
        nonlocal pos
        v, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v

    while pos < len(data):
        key = read()
        if key & 7 == 0:
            out.append((key >> 3, read()))
        else:
            assert key & 7 == 2
            n = read()
            out.append((key >> 3, data[pos : pos + n]))
            pos += n
    return out


def one(msg: bytes, tag: int) -> Any:
    return [v for t, v in fields(msg) if t == tag][-1]


def key_msg(key: bytes, alg: int = 0) -> bytes:
    return num(1, alg) + fld(2, key)


def signed_block(
    data: bytes, next_key: bytes, sig: bytes, version: Optional[int] = None, external: Optional[bytes] = None
) -> bytes:
    out = fld(1, data) + fld(2, key_msg(next_key)) + fld(3, sig)
    if external is not None:
        out += fld(4, external)
    if version is not None:
        out += num(5, version)
    return out


def i32(v: int) -> bytes:
    return v.to_bytes(4, "little", signed=True)


def payload_v0(data: bytes, next_key: bytes, external_sig: bytes = b"") -> bytes:
    return data + external_sig + i32(0) + next_key


def payload_v1(data: bytes, next_key: bytes, previous: Optional[bytes] = None, external_sig: Optional[bytes] = None) -> bytes:
    out = b"\0BLOCK\0\0VERSION\0" + i32(1) + b"\0PAYLOAD\0" + data + b"\0ALGORITHM\0" + i32(0) + b"\0NEXTKEY\0" + next_key
    if previous is not None:
        out += b"\0PREVSIG\0" + previous
    if external_sig is not None:
        out += b"\0EXTERNALSIG\0" + external_sig
    return out


def seal(token: bytes) -> bytes:
    """The token sealed: its proof's next secret replaced by the final signature over the
    last block, as biscuit-auth's ``seal`` makes it (biscuit-python has no ``seal``)."""
    parts = fields(token)
    secret = one(one(token, 4), 1)
    blocks = [v for t, v in parts if t in (2, 3)]
    last = blocks[-1]
    assert isinstance(last, bytes)
    msg = one(last, 1) + i32(0) + one(one(last, 2), 2) + one(last, 3)
    final = nacl.signing.SigningKey(secret).sign(msg).signature
    return b"".join(fld(t, v) if isinstance(v, bytes) else num(t, v) for t, v in parts if t != 4) + fld(4, fld(2, final))


# ---------------------------------------------------------------------------
# The oracle and the comparison.

ROOT = ba.KeyPair.from_private_key(ba.PrivateKey.from_bytes(bytes(range(32)), ba.Algorithm.Ed25519))
ROOT_PUB = ROOT.public_key.to_bytes()


def biscuit_answer(token: bytes, root: Any = None) -> Optional[List[bytes]]:
    """``Biscuit.from_bytes``'s answer: the revocation ids, or None when it refuses."""
    try:
        b = ba.Biscuit.from_bytes(token, root or ROOT.public_key)
    except ba.BiscuitValidationError:
        return None
    return [bytes.fromhex(h) for h in b.revocation_ids]


def check(tokens: Sequence[bytes], root: Any = None, *, valid: Optional[bool] = None) -> List[Any]:
    """hopgate's answers equal biscuit's for every token (and the native's the reference's)."""
    root = root or ROOT.public_key
    ours = verify_signatures(tokens, root)
    root_bytes = root.to_bytes() if hasattr(root, "to_bytes") else root
    if native_verify is not None:
        assert native_verify(list(tokens), root_bytes) == reference_verify(list(tokens), root_bytes)
    if isinstance(root, bytes):  # biscuit-python takes its own PublicKey only
        root = ba.PublicKey.from_bytes(root, ba.Algorithm.Ed25519)
    for i, (token, answer) in enumerate(zip(tokens, ours)):
        expected = biscuit_answer(token, root)
        if expected is None:
            assert isinstance(answer, BiscuitError), (i, token.hex())
        else:
            assert answer == expected, (i, token.hex(), answer)
        if valid is not None:
            assert (expected is not None) == valid, i
    return ours


def block(rng: random.Random, i: int) -> str:
    facts = [f'right("file{rng.randrange(100)}", "read")', f"n({rng.randrange(1 << 40)})", f'user("u{i}")']
    checks = ['check if operation("read")', f"check if time($t), $t < {2030 + i}-01-01T00:00:00Z", "check if n($x), $x > 3"]
    return "; ".join(rng.sample(facts, rng.randrange(1, 3)) + rng.sample(checks, rng.randrange(0, 2))) + ";"


def make(rng: random.Random, blocks: int, third_party: Sequence[int] = (), root_key_id: Optional[int] = None) -> bytes:
    builder = ba.BiscuitBuilder(block(rng, 0))
    if root_key_id is not None:
        builder.set_root_key_id(root_key_id)
    b = builder.build(ROOT.private_key)
    for i in range(1, blocks + 1):
        if i in third_party:
            ext = ba.KeyPair()
            tp = b.third_party_request().create_block(ext.private_key, ba.BlockBuilder(block(rng, i)))
            b = b.append_third_party(ext.public_key, tp)
        else:
            b = b.append(ba.BlockBuilder(block(rng, i)))
    return bytes(b.to_bytes())


def corpus(seed: int, n: int) -> List[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        blocks = rng.randrange(0, 5)
        tp = [i for i in range(1, blocks + 1) if rng.random() < 0.3]
        t = make(rng, blocks, tp, rng.choice([None, rng.randrange(1 << 32)]))
        out.append(seal(t) if rng.random() < 0.3 else t)
    return out


SAMPLE = corpus(1, 6)

# ---------------------------------------------------------------------------
# Tokens biscuit-python makes.


def test_every_shape_biscuit_makes_verifies_with_its_revocation_ids() -> None:
    rng = random.Random(0)
    tokens = [make(rng, n) for n in range(5)] + [make(rng, n, [n]) for n in range(1, 5)] + [make(rng, 4, [1, 3])]
    tokens += [seal(t) for t in tokens]
    ours = check(tokens, valid=True)
    assert [len(a) for a in ours] == [n + 1 for n in list(range(5)) + list(range(1, 5)) + [4]] * 2


def test_seeded_random_tokens() -> None:
    check(corpus(2, 60), valid=True)


def test_root_key_as_bytes_or_biscuit_public_key() -> None:
    token = SAMPLE[0]
    assert verify_signatures([token], ROOT_PUB) == verify_signatures([token], ROOT.public_key)
    assert verify_signatures([token], memoryview(ROOT_PUB)) == [biscuit_answer(token)]
    with pytest.raises(hopgate.InputError):
        verify_signatures([token], ROOT_PUB[:31])
    with pytest.raises(hopgate.InputError):
        verify_signatures(token, ROOT_PUB)  # type: ignore[arg-type]  # one token, not a list


def test_wrong_root_key() -> None:
    other = ba.KeyPair()
    answers = check(SAMPLE, other.public_key, valid=False)
    assert all(isinstance(a, SignatureError) for a in answers)


def test_root_key_off_the_curve_is_a_format_error_for_every_token() -> None:
    y = next(y for y in range(2, 100) if "root" in str(reference_verify([b""], y.to_bytes(32, "little"))[0]))
    answers = verify_signatures(SAMPLE[:2], y.to_bytes(32, "little"))
    assert all(isinstance(a, FormatError) and "root" in str(a) for a in answers)


def test_p256_keys_are_unsupported() -> None:
    p256 = ba.PrivateKey.from_bytes(b"\x01" * 32, ba.Algorithm.Secp256r1)
    rng = random.Random(3)
    b = ba.BiscuitBuilder(block(rng, 0)).build(ROOT.private_key)
    tp = b.third_party_request().create_block(p256, ba.BlockBuilder(block(rng, 1)))
    token = bytes(b.append_third_party(ba.KeyPair.from_private_key(p256).public_key, tp).to_bytes())
    assert biscuit_answer(token) is not None
    [answer] = verify_signatures([token], ROOT_PUB)
    assert isinstance(answer, UnsupportedAlgorithm) and "block 1's external key" in str(answer)
    # A P-256 root: biscuit-python takes its PublicKey; so does hopgate, answering unsupported.
    p256_root = ba.KeyPair.from_private_key(p256)
    token = bytes(ba.BiscuitBuilder("a(1);").build(p256).to_bytes())
    assert biscuit_answer(token, p256_root.public_key) is not None
    [answer] = verify_signatures([token], p256_root.public_key)
    assert isinstance(answer, UnsupportedAlgorithm)
    # Under a P-256 root, what biscuit refuses for its format first is still a format error;
    # each answer is its own exception.
    ed25519_token = bytes(ba.BiscuitBuilder("a(1);").build(ROOT.private_key).to_bytes())
    answers = verify_signatures([b"not a biscuit", token, ed25519_token], p256_root.public_key)
    assert biscuit_answer(b"not a biscuit", p256_root.public_key) is None
    assert isinstance(answers[0], FormatError)
    assert isinstance(answers[1], UnsupportedAlgorithm) and isinstance(answers[2], UnsupportedAlgorithm)
    assert answers[1] is not answers[2]
    p256_bytes = p256_root.public_key.to_bytes()
    tokens = [b"not a biscuit", token, ed25519_token, ed25519_token[:-3]]
    if native_verify is not None:
        assert native_verify(tokens, p256_bytes) == reference_verify(tokens, p256_bytes)


def test_exception_tree() -> None:
    for cls in (FormatError, SignatureError, UnsupportedAlgorithm):
        assert issubclass(cls, BiscuitError)
    assert issubclass(BiscuitError, hopgate.HopgateError) and issubclass(BiscuitError, ValueError)


# ---------------------------------------------------------------------------
# Tampering.


def test_every_single_bit_flip() -> None:
    for token in SAMPLE[:3]:
        flips = [flip(token, bit) for bit in range(len(token) * 8)]
        ours = check(flips)
        # Flips into an unknown field number of a key's algorithm field survive, in both.
        assert sum(isinstance(a, list) for a in ours) < len(flips) // 50


def test_truncations_and_appended_bytes() -> None:
    rng = random.Random(4)
    for token in SAMPLE[:3]:
        tokens = [token[:n] for n in range(len(token))]
        tokens += [token + bytes(rng.randrange(256) for _ in range(k)) for k in range(1, 12) for _ in range(8)]
        # Unknown fields appended are skipped by prost: still valid.
        tokens += [token + num(9, 5), token + fld(15, b"xyz"), token + varint(6 << 3 | 5) + b"abcd"]
        check(tokens)


def test_swapped_and_spliced_blocks() -> None:
    rng = random.Random(5)
    a, b = make(rng, 3), make(rng, 3)
    pa, pb = fields(a), fields(b)
    blocks_a = [v for t, v in pa if t == 3 and isinstance(v, bytes)]
    blocks_b = [v for t, v in pb if t == 3 and isinstance(v, bytes)]
    proof = fld(4, one(a, 4))
    authority = fld(2, one(a, 2))
    swapped = authority + fld(3, blocks_a[1]) + fld(3, blocks_a[0]) + fld(3, blocks_a[2]) + proof
    spliced = authority + fld(3, blocks_a[0]) + fld(3, blocks_b[1]) + proof
    dropped = authority + fld(3, blocks_a[0]) + proof
    duplicated = authority + fld(2, one(a, 2)) + b"".join(fld(3, x) for x in blocks_a) + proof
    answers = check([swapped, spliced, dropped, duplicated])
    assert [type(x) for x in answers[:3]] == [SignatureError] * 3
    assert isinstance(answers[3], list)  # a repeated authority merges into itself


# Message types by (parent, field number): the nested messages a re-encoder recurses into.
NESTED = {("biscuit", 2): "block", ("biscuit", 3): "block", ("biscuit", 4): "proof", ("block", 2): "key",
          ("block", 4): "external", ("external", 2): "key"}


def loose_varint(v: int, rng: random.Random) -> bytes:
    """``v`` as a varint, sometimes padded to a longer, non-minimal form (prost reads both)."""
    out = bytearray(varint(v))
    for _ in range(rng.choice([0, 0, 1, 3]) if len(out) < 9 else 0):
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def unknown_field(rng: random.Random) -> bytes:
    tag = rng.choice([6, 7, 9, 15, 100, 2**20])
    kind = rng.randrange(5)
    if kind == 0:
        return varint(tag << 3) + varint(rng.randrange(1 << 64))
    if kind == 1:
        return varint(tag << 3 | 1) + bytes(8)
    if kind == 2:
        return varint(tag << 3 | 5) + bytes(4)
    if kind == 3:
        return varint(tag << 3 | 2) + varint(3) + b"abc"
    return varint(tag << 3 | 3) + varint(1 << 3) + varint(7) + varint(tag << 3 | 4)  # a group


def reencode(msg: bytes, kind: str, rng: random.Random) -> bytes:
    """``msg`` written again as prost would still read it to the same values: keys and
    lengths in non-minimal varints, fields reordered (repeated blocks keep their order),
    unknown fields of every wire type between them."""
    parts = []
    for tag, value in fields(msg):
        if isinstance(value, int):
            body = loose_varint(tag << 3, rng) + loose_varint(value, rng)
        else:
            inner = NESTED.get((kind, tag))
            data = reencode(value, inner, rng) if inner else value
            body = loose_varint(tag << 3 | 2, rng) + loose_varint(len(data), rng) + data
        parts.append((tag, body))
    blocks = iter([b for t, b in parts if t == 3])
    rng.shuffle(parts)
    parts = [(t, next(blocks) if t == 3 else b) for t, b in parts]
    out = b""
    for _, body in parts:
        if rng.random() < 0.3:
            out += unknown_field(rng)
        out += body
    return out


def split_authority(token: bytes) -> bytes:
    """The authority written as two messages that prost merges into one."""
    authority = one(token, 2)
    head, tail = b"", b""
    for tag, value in fields(authority):
        part = num(tag, value) if isinstance(value, int) else fld(tag, value)
        if tag in (1, 3):
            head += part
        else:
            tail += part
    rest = b"".join(num(t, v) if isinstance(v, int) else fld(t, v) for t, v in fields(token) if t != 2)
    return fld(2, head) + rest + fld(2, tail)


def test_containers_written_otherwise_read_the_same() -> None:
    rng = random.Random(8)
    tokens = [reencode(t, "biscuit", rng) for t in SAMPLE for _ in range(40)]
    tokens += [split_authority(t) for t in SAMPLE]
    check(tokens, valid=True)


def test_random_edits_of_containers_written_otherwise() -> None:
    """Bytes inserted, deleted, replaced or duplicated, one to three times, in tokens
    written as ``reencode`` writes them (unknown fields, groups, long varints)."""
    rng = random.Random(9)
    tokens = []
    for _ in range(1500):
        t = bytearray(reencode(rng.choice(SAMPLE), "biscuit", rng))
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(t))
            op = rng.randrange(4)
            if op == 0:
                t[i:i] = bytes([rng.choice([0x00, 0x80, 0xFF, 0x0A, 0x12, 0x1A, 0x22, 0x2B, 0x2C, rng.randrange(256)])])
            elif op == 1:
                del t[i : i + rng.randrange(1, 4)]
            elif op == 2:
                t[i] = rng.randrange(256)
            else:
                t[i:i] = t[i : i + rng.randrange(1, 40)]
        tokens.append(bytes(t))
    check(tokens)


# ---------------------------------------------------------------------------
# Hand-built tokens, signed with PyNaCl.


def block_datas(n: int) -> List[bytes]:
    """The Datalog of the n blocks of a real token (authority first): content that
    ``from_bytes`` reads after the signatures, so only signatures decide here."""
    token = make(random.Random(6), n - 1)
    return [one(v, 1) for t, v in fields(token) if t in (2, 3)]  # type: ignore[arg-type]


def authority_data() -> bytes:
    return block_datas(1)[0]


def hand_built(version: int, n: int, sealed: bool = False) -> bytes:
    root = nacl.signing.SigningKey(bytes(range(32)))
    keys = [nacl.signing.SigningKey(bytes([i + 40]) * 32) for i in range(n)]
    out, prev, signer = b"", None, root
    for i, (k, data) in enumerate(zip(keys, block_datas(n))):
        nk = bytes(k.verify_key)
        if version == 0:
            msg = payload_v0(data, nk)
        else:
            msg = payload_v1(data, nk, prev)
        sig = signer.sign(msg).signature
        out += fld(2 if i == 0 else 3, signed_block(data, nk, sig, version or None))
        prev, signer = sig, k
    if sealed:
        last = keys[-1]
        final = last.sign(data + i32(0) + bytes(last.verify_key) + prev).signature  # type: ignore[operator]
        return out + fld(4, fld(2, final))
    return out + fld(4, fld(1, bytes(keys[-1])))


@pytest.mark.parametrize("version", [0, 1])
def test_hand_built_tokens_of_each_signature_version(version: int) -> None:
    tokens = [hand_built(version, n, sealed) for n in (1, 2, 4) for sealed in (False, True)]
    check(tokens, valid=True)


def test_hand_built_unknown_signature_version_and_misplaced_external() -> None:
    root = nacl.signing.SigningKey(bytes(range(32)))
    nk = nacl.signing.SigningKey(b"\x07" * 32)
    data = authority_data()
    sig = root.sign(payload_v1(data, bytes(nk.verify_key))).signature
    proof = fld(4, fld(1, bytes(nk)))
    v2 = fld(2, signed_block(data, bytes(nk.verify_key), sig, 2)) + proof
    ext = fld(1, b"\0" * 64) + fld(2, key_msg(bytes(nk.verify_key)))
    external_on_authority = fld(2, signed_block(data, bytes(nk.verify_key), sig, 1, ext)) + proof
    answers = check([v2, external_on_authority], valid=False)
    assert all(isinstance(a, FormatError) for a in answers)
    assert "unsupported block version 2" in str(answers[0])


# ---------------------------------------------------------------------------
# Attacks.

SMALL_ORDER = [
    bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000000"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000080"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
]


def test_attack_small_order_root_key() -> None:
    for root in SMALL_ORDER:
        assert all(isinstance(a, SignatureError) for a in check(SAMPLE[:2], root))
    assert check(SAMPLE[:2], ROOT_PUB, valid=True)  # the oracle takes a root given as bytes


def test_attack_small_order_next_key_forgery() -> None:
    """A next key of small order lets anyone sign the next block with R = that point and
    S = 0 under the cofactorless equation; dalek's verify_strict refuses the key."""
    root = nacl.signing.SigningKey(bytes(range(32)))
    data = authority_data()
    real = nacl.signing.SigningKey(b"\x09" * 32)
    tokens = []
    for weak in SMALL_ORDER:
        sig = root.sign(payload_v0(data, weak)).signature
        forged = weak + bytes(32) if weak == SMALL_ORDER[0] else SMALL_ORDER[0] + bytes(32)
        t = fld(2, signed_block(data, weak, sig))
        t += fld(3, signed_block(b"evil", bytes(real.verify_key), forged))
        tokens.append(t + fld(4, fld(1, bytes(real))))
    answers = check(tokens, valid=False)
    assert all(isinstance(a, SignatureError) and "block 1's signature" in str(a) for a in answers)


def test_attack_non_canonical_s() -> None:
    token = SAMPLE[0]
    sig = one(one(token, 2), 3)
    s = int.from_bytes(sig[32:], "little") + L
    bad = token.replace(sig, sig[:32] + s.to_bytes(32, "little"))
    [answer] = check([bad], valid=False)
    assert isinstance(answer, SignatureError)


def _point_ops() -> Tuple[Any, Any, Any, Any]:
    from hopgate.reference import _ed25519 as e

    def encode(p: Any) -> bytes:
        x, y, z, _ = p
        zi = pow(z, -1, P)
        x, y = x * zi % P, y * zi % P
        return int(y | (x & 1) << 255).to_bytes(32, "little")

    return e._add, e._mul, e._B, encode


def test_attack_mixed_order_key_is_judged_cofactorless() -> None:
    """A next key with a torsion component, A = [a]B + T8: a signature (R, S = r + k a)
    holds under the cofactorless equation only when 8 divides k. dalek (biscuit) accepts
    exactly those; a cofactored verifier would accept all. hopgate sides with biscuit."""
    from hopgate.reference._ed25519 import _decode_point

    add, mul, base, encode = _point_ops()
    t8 = _decode_point(SMALL_ORDER[3])
    a = 0x1234567 * 8 + 5
    mixed = encode(add(mul(a, base), t8))
    root = nacl.signing.SigningKey(bytes(range(32)))
    data, second = block_datas(2)
    nk = nacl.signing.SigningKey(b"\x0b" * 32)
    head = fld(2, signed_block(data, mixed, root.sign(payload_v0(data, mixed)).signature))
    tokens, holds = [], []
    for r in range(1, 40):
        big_r = encode(mul(r, base))
        msg = payload_v0(second, bytes(nk.verify_key))
        k = int.from_bytes(hashlib.sha512(big_r + mixed + msg).digest(), "little") % L
        s = (r + k * a) % L
        tokens.append(head + fld(3, signed_block(second, bytes(nk.verify_key), big_r + s.to_bytes(32, "little"))) + fld(4, fld(1, bytes(nk))))
        holds.append(k % 8 == 0)
    answers = check(tokens)
    assert [isinstance(x, list) for x in answers] == holds
    assert 0 < sum(holds) < len(holds)


def test_attack_non_canonical_next_key_decodes_as_dalek_does() -> None:
    """A next key written with y >= p: dalek decodes it (as y - p) where libsodium would
    not; biscuit parses the token and then refuses the signature no one could make."""
    root = nacl.signing.SigningKey(bytes(range(32)))
    data = authority_data()
    tokens = []
    keys = [(y | sign << 255).to_bytes(32, "little") for y in range(P, 2**255) for sign in (0, 1)]
    for key in keys:
        t = fld(2, signed_block(data, key, root.sign(payload_v0(data, key)).signature))
        tokens.append(t + fld(4, fld(1, b"\x01" * 32)))
    answers = check(tokens, valid=False)
    kinds = {type(a) for a in answers}
    assert kinds == {FormatError, SignatureError}  # off-curve ones, and the rest
    # As a root key, such an encoding is taken by biscuit-python too; no token verifies.
    roots = [key for key, a in zip(keys, answers) if isinstance(a, SignatureError)]
    assert len(roots) == 24  # 20 of large order, 4 of small order
    for other_root in roots[:6]:
        assert all(isinstance(a, SignatureError) for a in check(SAMPLE[:1], other_root))


def test_attack_oversize_varints() -> None:
    token = SAMPLE[0]
    tokens = [
        b"\x12" + b"\xff" * 10 + b"\x01",
        b"\x12" + b"\x80" * 9 + b"\x01" + token[1:],
        b"\x08" + b"\xff" * 9 + b"\x01" + token,  # rootKeyId of 2^64 - 1: truncated, fine
        b"\x08" + b"\xff" * 9 + b"\x02" + token,  # past 2^64
        b"\x12" + b"\x80" * 10,
        b"\xff" * 5 + b"\x1f",  # a key past 2^32
    ]
    answers = check(tokens)
    assert [isinstance(a, FormatError) for a in answers] == [True, True, False, True, True, True]


def test_attack_nested_lengths_past_the_end() -> None:
    token = SAMPLE[0]
    authority = one(token, 2)
    rest = token[len(fld(2, authority)) :]
    tokens = [
        b"\x12" + varint(len(authority) + 1) + authority + rest,
        b"\x12" + varint(1 << 40) + authority,
        fld(2, authority[:-1] + b"\x1a\x7f") + rest,
        fld(2, b"\x12" + varint(200) + authority) + rest,
        fld(4, b"\x0a\x21" + b"\0" * 32),
    ]
    assert all(isinstance(a, FormatError) for a in check(tokens, valid=False))


def test_attack_deep_groups() -> None:
    token = SAMPLE[0]
    tokens = [token + b"\x2b" * d + b"\x2c" * d for d in (1, 99, 100, 101, 5000)]
    tokens.append(token + b"\x2b\x34")  # a group ended by another tag
    answers = check(tokens)
    assert [isinstance(a, list) for a in answers] == [True, True, True, False, False, False]


def test_attack_huge_block_counts() -> None:
    token = SAMPLE[0]
    proof = fld(4, one(token, 4))
    authority = fld(2, one(token, 2))
    tokens = [authority + b"\x1a\x00" * 200_000 + proof, token + b"\x1a\x00" * 100_000]
    answers = check(tokens)
    assert all(isinstance(a, FormatError) and "'s next key: an Ed25519 key must be 32 bytes" in str(a) for a in answers)


@pytest.mark.parametrize("n", [1, 64], ids=["calling-thread", "rayon-worker"])
def test_a_panic_in_verification_is_an_internal_error(n: int) -> None:
    native: Any = pytest.importorskip("hopgate._native")
    if not hasattr(native, "_inject_panic"):
        pytest.skip("built without the test-hooks feature (a wheel)")
    tokens = (SAMPLE * n)[:n]
    native._inject_panic("verify")
    try:
        with pytest.raises(hopgate.InternalError, match="injected panic at verify"):
            native.biscuit_verify(tokens, ROOT_PUB)
    finally:
        native._inject_panic(None)
    assert all(isinstance(a, list) for a in verify_signatures(tokens, ROOT_PUB))
