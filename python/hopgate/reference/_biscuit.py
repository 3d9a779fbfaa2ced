"""``biscuit_verify``: the signature layer of Biscuit tokens checked as biscuit-auth 6 checks
it, in Python (``hopgate.biscuit`` uses it when the native module is absent).

The container is decoded as prost 0.10 decodes ``schema.proto``; signatures are judged by
ed25519-dalek's ``verify_strict``, answered here by PyNaCl (libsodium) for a canonical key,
where the two rules agree, and by pyca/cryptography (OpenSSL) plus the small-order checks
libsodium would have made for the 20 non-canonical encodings (y >= p) that dalek accepts
and libsodium refuses. See ``rust/core/src/biscuit.rs`` for the order of the checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple, Union

from typing_extensions import Buffer

from ..errors import InputError
from ._ed25519 import _P, _decode_point, _is_small_order, _verify_libsodium, _verify_openssl

RECURSION_LIMIT = 100
MAX_VARINT_LEN = 10
ALGORITHM_ED25519 = 0
ALGORITHM_SECP256R1 = 1

_VARINT, _FIXED64, _LEN, _START_GROUP, _END_GROUP, _FIXED32 = range(6)

Verdict = Union[List[bytes], Tuple[str, str]]


class _Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _format(message: str) -> _Refused:
    return _Refused("format", message)


class _DecodeError(Exception):
    def __init__(self, what: str, offset: int) -> None:
        super().__init__(what)
        self.what = what
        self.offset = offset


class _Reader:
    """A cursor over one message; offsets are reported relative to the whole token."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data, self.pos, self.end = data, start, end

    def at_end(self) -> bool:
        return self.pos >= self.end

    def varint(self) -> int:
        value = 0
        for i in range(MAX_VARINT_LEN):
            if self.pos + i >= self.end:
                break
            byte = self.data[self.pos + i]
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if i == MAX_VARINT_LEN - 1 and byte >= 2:
                    break
                self.pos += i + 1
                return value
        raise _DecodeError("invalid varint", self.pos)

    def key(self) -> Tuple[int, int]:
        start = self.pos
        key = self.varint()
        if key > 0xFFFFFFFF:
            raise _DecodeError("invalid key value", start)
        if key & 7 > _FIXED32:
            raise _DecodeError("invalid wire type value", start)
        if key >> 3 == 0:
            raise _DecodeError("invalid tag value: 0", start)
        return key >> 3, key & 7

    def take(self, n: int) -> Tuple[int, int]:
        if n > self.end - self.pos:
            raise _DecodeError("buffer underflow", self.pos)
        start = self.pos
        self.pos += n
        return start, self.pos

    def delimited(self) -> bytes:
        start, end = self.take(self.varint())
        return self.data[start:end]

    def skip(self, tag: int, wire: int, depth: int) -> None:
        if depth == 0:
            raise _DecodeError("recursion limit reached", self.pos)
        if wire == _VARINT:
            self.varint()
        elif wire == _FIXED64:
            self.take(8)
        elif wire == _FIXED32:
            self.take(4)
        elif wire == _LEN:
            self.take(self.varint())
        elif wire == _START_GROUP:
            while True:
                inner_tag, inner_wire = self.key()
                if inner_wire == _END_GROUP:
                    if inner_tag != tag:
                        raise _DecodeError("unexpected end group tag", self.pos)
                    return
                self.skip(inner_tag, inner_wire, depth - 1)
        else:
            raise _DecodeError("unexpected end group tag", self.pos)

    def expect(self, wire: int, expected: int) -> None:
        if wire != expected:
            raise _DecodeError("invalid wire type", self.pos)

    def message(self, wire: int, depth: int) -> "_Reader":
        self.expect(wire, _LEN)
        if depth == 0:
            raise _DecodeError("recursion limit reached", self.pos)
        start, end = self.take(self.varint())
        return _Reader(self.data, start, end)


@dataclass
class _Key:
    algorithm: int = 0
    key: bytes = b""


@dataclass
class _External:
    signature: bytes = b""
    public_key: _Key = field(default_factory=_Key)


@dataclass
class _SignedBlock:
    block: bytes = b""
    next_key: _Key = field(default_factory=_Key)
    signature: bytes = b""
    external: Optional[_External] = None
    version: Optional[int] = None


def _merge_key(key: _Key, r: _Reader, depth: int) -> None:
    while not r.at_end():
        tag, wire = r.key()
        if tag == 1:
            r.expect(wire, _VARINT)
            value = r.varint() & 0xFFFFFFFF  # prost's int32: truncated
            key.algorithm = value - (1 << 32) if value >= 1 << 31 else value
        elif tag == 2:
            r.expect(wire, _LEN)
            key.key = r.delimited()
        else:
            r.skip(tag, wire, depth)


def _merge_external(ext: _External, r: _Reader, depth: int) -> None:
    while not r.at_end():
        tag, wire = r.key()
        if tag == 1:
            r.expect(wire, _LEN)
            ext.signature = r.delimited()
        elif tag == 2:
            _merge_key(ext.public_key, r.message(wire, depth), depth - 1)
        else:
            r.skip(tag, wire, depth)


def _merge_signed_block(b: _SignedBlock, r: _Reader, depth: int) -> None:
    while not r.at_end():
        tag, wire = r.key()
        if tag == 1:
            r.expect(wire, _LEN)
            b.block = r.delimited()
        elif tag == 2:
            _merge_key(b.next_key, r.message(wire, depth), depth - 1)
        elif tag == 3:
            r.expect(wire, _LEN)
            b.signature = r.delimited()
        elif tag == 4:
            inner = r.message(wire, depth)
            if b.external is None:
                b.external = _External()
            _merge_external(b.external, inner, depth - 1)
        elif tag == 5:
            r.expect(wire, _VARINT)
            b.version = r.varint() & 0xFFFFFFFF  # prost's uint32: truncated
        else:
            r.skip(tag, wire, depth)


def _merge_proof(proof: List[Tuple[str, bytes]], r: _Reader, depth: int) -> None:
    while not r.at_end():
        tag, wire = r.key()
        if tag in (1, 2):
            r.expect(wire, _LEN)
            proof[:] = [("secret" if tag == 1 else "seal", r.delimited())]
        else:
            r.skip(tag, wire, depth)


def _decode(token: bytes) -> Tuple[_SignedBlock, List[_Reader], List[Tuple[str, bytes]]]:
    r = _Reader(token, 0, len(token))
    authority = _SignedBlock()
    blocks: List[_Reader] = []
    proof: List[Tuple[str, bytes]] = []
    depth = RECURSION_LIMIT
    while not r.at_end():
        tag, wire = r.key()
        if tag == 1:
            r.expect(wire, _VARINT)
            r.varint()
        elif tag == 2:
            _merge_signed_block(authority, r.message(wire, depth), depth - 1)
        elif tag == 3:
            inner = r.message(wire, depth)
            kept = _Reader(token, inner.pos, inner.end)
            _merge_signed_block(_SignedBlock(), inner, depth - 1)
            blocks.append(kept)
        elif tag == 4:
            _merge_proof(proof, r.message(wire, depth), depth - 1)
        else:
            r.skip(tag, wire, depth)
    return authority, blocks, proof


# ---------------------------------------------------------------------------
# Keys and the signature rule (ed25519-dalek's verify_strict).

_SMALL_ORDER_ENCODINGS = frozenset(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    )
)


def _dalek_point(encoding: bytes) -> Optional[Tuple[int, int, int, int]]:
    """The point curve25519-dalek decompresses ``encoding`` to: y taken modulo p, and x
    negated by the sign bit even when it is 0. None when no point has that y."""
    value = int.from_bytes(encoding, "little")
    y = (value & ((1 << 255) - 1)) % _P
    sign = value >> 255
    point = _decode_point((y | sign << 255).to_bytes(32, "little"))
    if point is None and sign:
        point = _decode_point(y.to_bytes(32, "little"))  # x = 0 with the sign bit set
    return point


def _key_decodes(key: bytes) -> bool:
    return len(key) == 32 and _dalek_point(key) is not None


def _verify_dalek_strict(msg: bytes, sig: bytes, pk: bytes) -> bool:
    """ed25519-dalek 2's ``verify_strict`` for a key that ``VerifyingKey::from_bytes``
    took. For a canonical key it agrees with libsodium item for item (both refuse S >= L,
    a small-order R or A, and compare the encoding of [S]B - [k]A with R's bytes). A
    non-canonical key (y >= p) libsodium refuses outright and dalek decodes as y - p: for
    those, OpenSSL's equation (which decodes A the same way and checks nothing more)
    after dalek's own refusals."""
    y = int.from_bytes(pk, "little") & ((1 << 255) - 1)
    if y < _P:
        return _verify_libsodium(msg, sig, pk)
    point = _dalek_point(pk)
    if point is None or _is_small_order(point) or sig[:32] in _SMALL_ORDER_ENCODINGS:
        return False
    return _verify_openssl(msg, sig, pk)


def _ed25519_key(key: _Key, what: str) -> bytes:
    if key.algorithm == ALGORITHM_SECP256R1:
        raise _Refused("unsupported_algorithm", f"{what} is a P-256 (secp256r1) key, which this verifier does not check")
    if key.algorithm != ALGORITHM_ED25519:
        raise _format(f"{what}: unexpected key algorithm {key.algorithm}")
    if len(key.key) != 32:
        raise _format(f"{what}: an Ed25519 key must be 32 bytes, got {len(key.key)}")
    if not _key_decodes(key.key):
        raise _format(f"{what}: not the encoding of a point on the curve")
    return key.key


def _i32(value: int) -> bytes:
    return value.to_bytes(4, "little", signed=True)


def _payload_v0(block: bytes, external: Optional[bytes], next_key: bytes) -> bytes:
    return block + (external or b"") + _i32(ALGORITHM_ED25519) + next_key


def _payload_v1(block: bytes, next_key: bytes, previous: Optional[bytes], external: Optional[bytes]) -> bytes:
    out = b"\0BLOCK\0\0VERSION\0" + (1).to_bytes(4, "little") + b"\0PAYLOAD\0" + block
    out += b"\0ALGORITHM\0" + _i32(ALGORITHM_ED25519) + b"\0NEXTKEY\0" + next_key
    if previous is not None:
        out += b"\0PREVSIG\0" + previous
    if external is not None:
        out += b"\0EXTERNALSIG\0" + external
    return out


def _payload_external(block: bytes, previous: bytes) -> bytes:
    return b"\0EXTERNAL\0\0VERSION\0" + (1).to_bytes(4, "little") + b"\0PAYLOAD\0" + block + b"\0PREVSIG\0" + previous


def _block_name(i: int) -> str:
    return "the authority block" if i == 0 else f"block {i}"


def _public_key(seed: bytes) -> bytes:
    import nacl.signing

    return bytes(nacl.signing.SigningKey(seed).verify_key)


_P256_ROOT = "the root key is a P-256 (secp256r1) key, which this verifier does not check"


def _verify_token(token: bytes, root: Optional[bytes]) -> List[bytes]:
    """The token's revocation ids, or ``_Refused``; ``root`` None for a P-256 root, which
    answers every token that decodes ``unsupported_algorithm``."""
    try:
        authority, readers, proof = _decode(token)
    except _DecodeError as e:
        raise _format(f"deserialization error at offset {e.offset}: {e.what}") from None

    authority_next = _ed25519_key(authority.next_key, "the authority block's next key")
    if authority.external is not None:
        raise _format("the authority block must not contain an external signature")
    blocks: List[Tuple[_SignedBlock, bytes, Optional[bytes]]] = []
    for i, r in enumerate(readers, 1):
        b = _SignedBlock()
        _merge_signed_block(b, r, RECURSION_LIMIT - 1)
        name = _block_name(i)
        nxt = _ed25519_key(b.next_key, f"{name}'s next key")
        ext_key = None
        if b.external is not None:
            if b.version != 1:
                got = "none" if b.version is None else str(b.version)
                raise _format(f"{name}: an external signature needs block signature version 1, got {got}")
            ext_key = _ed25519_key(b.external.public_key, f"{name}'s external key")
        blocks.append((b, nxt, ext_key))
    if not proof:
        raise _format("could not find proof")
    proof_kind, proof_bytes = proof[0]
    if proof_kind == "secret" and len(proof_bytes) != 32:
        raise _format(f"the proof's next secret: an Ed25519 private key must be 32 bytes, got {len(proof_bytes)}")

    def check(key: bytes, sig: bytes, what: str, payload: Callable[[], bytes]) -> None:
        if len(sig) != 64:
            raise _format(f"{what}: a signature must be 64 bytes, got {len(sig)}")
        if not _verify_dalek_strict(payload(), sig, key):
            raise _Refused("signature", f"{what} does not verify")

    if root is None:
        raise _Refused("unsupported_algorithm", _P256_ROOT)
    what = "the authority block's signature"
    version = authority.version or 0
    if version == 0:
        check(root, authority.signature, what, lambda: _payload_v0(authority.block, None, authority_next))
    elif version == 1:
        check(root, authority.signature, what, lambda: _payload_v1(authority.block, authority_next, None, None))
    else:
        raise _format(f"the authority block: unsupported block version {version}")
    current, previous = authority_next, authority.signature
    ids = [authority.signature]
    for i, (b, nxt, ext_key) in enumerate(blocks, 1):
        name = _block_name(i)
        ids.append(b.signature)
        ext_sig = b.external.signature if b.external is not None else None
        version = b.version or 0
        if version == 0:
            check(current, b.signature, f"{name}'s signature", lambda: _payload_v0(b.block, ext_sig, nxt))
        elif version == 1:
            prev = previous
            check(current, b.signature, f"{name}'s signature", lambda: _payload_v1(b.block, nxt, prev, ext_sig))
        else:
            raise _format(f"{name}: unsupported block version {version}")
        if ext_key is not None and ext_sig is not None:
            prev = previous
            check(ext_key, ext_sig, f"{name}'s external signature", lambda: _payload_external(b.block, prev))
        current, previous = nxt, b.signature
    if proof_kind == "secret":
        if _public_key(proof_bytes) != current:
            raise _Refused("signature", "the proof's next secret does not match the last block's next key")
    else:
        last = blocks[-1][0] if blocks else authority
        check(
            current,
            proof_bytes,
            "the proof's final signature (sealed token)",
            lambda: last.block + _i32(ALGORITHM_ED25519) + current + last.signature,
        )
    return ids


def biscuit_verify(tokens: Sequence[Buffer], root_public_key: Buffer) -> List[Verdict]:
    """For each token: its revocation ids (the signature of each block, the authority's
    first), or ``(kind, message)`` with kind ``"format"``, ``"signature"`` or
    ``"unsupported_algorithm"``, as ``hopgate._native.biscuit_verify`` answers.
    ``root_public_key``: 32 bytes (Ed25519), or 33 (a compressed P-256 key, not checked)."""
    root = bytes(root_public_key)
    if len(root) == _P256_KEY_LEN:
        return [_verdict(bytes(token), None) for token in tokens]
    if len(root) != 32:
        raise InputError(f"root_public_key: must be 32 bytes, got {len(root)}")
    if not _key_decodes(root):
        message = "the root public key is not the encoding of a point on the curve"
        return [("format", message) for _ in tokens]
    return [_verdict(bytes(token), root) for token in tokens]


# A P-256 public key, SEC1-compressed, as biscuit-python's ``PublicKey.to_bytes()`` gives it.
_P256_KEY_LEN = 33


def _verdict(token: bytes, root: Optional[bytes]) -> Verdict:
    try:
        return _verify_token(token, root)
    except _Refused as e:
        return (e.kind, e.message)

