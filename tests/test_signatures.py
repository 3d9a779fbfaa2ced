"""SPEC §3: keys, verify and verify_batch, on both implementations."""

from __future__ import annotations

import copy
import hashlib
import json
import pathlib
import pickle
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hopgate

# RFC 8032 §7.1 tests 1–3 (shared with the Rust tests): (seed, public key, message, signature).
RFC8032 = [
    (c["seed"], c["public_key"], c["message"], c["signature"])
    for c in json.loads((pathlib.Path(__file__).parent / "vectors" / "rfc8032.json").read_text())["cases"]
]

SPECCHECK_ACCEPT = {3, 4, 5}


@pytest.mark.parametrize("seed,pk,msg,sig", RFC8032)
def test_rfc8032_known_answers(impl: ModuleType, seed: str, pk: str, msg: str, sig: str) -> None:
    key = impl.SigningKey.from_seed(bytes.fromhex(seed))
    assert key.public_key == bytes.fromhex(pk)
    assert key.seed() == bytes.fromhex(seed)
    assert key.sign(bytes.fromhex(msg)) == bytes.fromhex(sig)
    assert impl.verify(bytes.fromhex(msg), bytes.fromhex(sig), bytes.fromhex(pk)) is True


def test_speccheck_cases_single_and_batch(impl: ModuleType, speccheck: list[dict[str, str]]) -> None:
    msgs = [bytes.fromhex(c["message"]) for c in speccheck]
    sigs = [bytes.fromhex(c["signature"]) for c in speccheck]
    pks = [bytes.fromhex(c["pub_key"]) for c in speccheck]
    expected = [i in SPECCHECK_ACCEPT for i in range(12)]
    assert [impl.verify(m, s, k) for m, s, k in zip(msgs, sigs, pks)] == expected
    assert impl.verify_batch(msgs, sigs, pks).tolist() == expected
    # Large enough for the native core's parallel, grouped path.
    reps = 8
    out = impl.verify_batch(msgs * reps, sigs * reps, pks * reps)
    assert out.tolist() == expected * reps


def test_wrong_lengths_are_invalid_not_errors(impl: ModuleType, keys: list[Any]) -> None:
    sig = keys[0].sign(b"m")
    pk = keys[0].public_key
    assert impl.verify(b"m", sig[:63], pk) is False
    assert impl.verify(b"m", sig + b"\0", pk) is False
    assert impl.verify(b"m", sig, pk[:31]) is False
    assert impl.verify(b"m", b"", b"") is False
    assert impl.verify_batch([b"m", b"m"], [sig, sig[:10]], [pk, pk]).tolist() == [True, False]


def test_signature_rejects_every_single_bit_flip(keys: list[Any]) -> None:
    msg = b"pay 5 to bob"
    sig = keys[1].sign(msg)
    pk = keys[1].public_key
    flipped = []
    for bit in range(512):
        b = bytearray(sig)
        b[bit // 8] ^= 1 << (bit % 8)
        flipped.append(bytes(b))
    out = hopgate.verify_batch([msg] * 512, flipped, [pk] * 512)
    assert not out.any()
    msgs = []
    for bit in range(len(msg) * 8):
        b = bytearray(msg)
        b[bit // 8] ^= 1 << (bit % 8)
        msgs.append(bytes(b))
    assert not hopgate.verify_batch(msgs, [sig] * len(msgs), [pk] * len(msgs)).any()


def test_non_canonical_s_is_rejected(impl: ModuleType, keys: list[Any]) -> None:
    """S + L verifies under a sloppy rule (same point); SPEC §3 demands S < L."""
    L = 2**252 + 27742317777372353535851937790883648493
    msg = b"malleable?"
    sig = keys[2].sign(msg)
    s = int.from_bytes(sig[32:], "little") + L
    assert s < 2**256
    forged = sig[:32] + s.to_bytes(32, "little")
    assert impl.verify(msg, forged, keys[2].public_key) is False


def test_small_order_public_key_is_rejected(impl: ModuleType) -> None:
    """The identity as a public key with R = identity, S = 0 'verifies' any message
    under the plain equation; the small-order check must refuse it."""
    identity = (1).to_bytes(32, "little")
    sig = identity + bytes(32)
    assert impl.verify(b"anything", sig, identity) is False


def test_non_canonical_key_encoding_is_rejected(impl: ModuleType, keys: list[Any]) -> None:
    # y = p + 1 encodes the same point as y = 1 (the identity), non-canonically.
    p = 2**255 - 19
    non_canonical = (p + 1).to_bytes(32, "little")
    sig = keys[0].sign(b"x")
    assert impl.verify(b"x", sig, non_canonical) is False


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.integers(0, 7), st.integers(-1, 511)), min_size=1, max_size=120))
def test_batch_equals_single_on_random_mixes(items: list[tuple[bytes, int, int]]) -> None:
    keys = [hopgate.SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(8)]
    msgs, sigs, pks = [], [], []
    for msg, k, flip in items:
        sig = bytearray(keys[k].sign(msg))
        if flip >= 0:  # -1 keeps the signature valid
            sig[flip // 8] ^= 1 << (flip % 8)
        msgs.append(msg)
        sigs.append(bytes(sig))
        pks.append(keys[k].public_key)
    batch = hopgate.verify_batch(msgs, sigs, pks).tolist()
    single = [hopgate.verify(m, s, k) for m, s, k in zip(msgs, sigs, pks)]
    assert batch == single
    assert batch == [flip < 0 for _, _, flip in items]


def test_batch_native_equals_reference_on_mutations(keys: list[Any]) -> None:
    rng = np.random.default_rng(7)
    msgs, sigs, pks = [], [], []
    for i in range(60):
        msg = rng.bytes(int(rng.integers(0, 40)))
        sig = bytearray(keys[i % 8].sign(msg))
        pk = bytearray(keys[i % 8].public_key)
        kind = i % 4
        if kind == 1:
            sig[int(rng.integers(0, 64))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:
            pk[int(rng.integers(0, 32))] ^= 1 << int(rng.integers(0, 8))
        msgs.append(msg)
        sigs.append(bytes(sig))
        pks.append(bytes(pk))
    native = hopgate.verify_batch(msgs, sigs, pks).tolist()
    assert native == hopgate.reference.verify_batch(msgs, sigs, pks).tolist()
    assert sum(native) >= 30


class TestBatchInputs:
    """A list of bytes-like objects, or one buffer + Arrow offsets; fixed-width arrays."""

    def setup_method(self) -> None:
        self.keys = [hopgate.SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(3)]
        self.msgs = [b"a", b"", b"ccc", b"dddd"]
        self.sigs = [self.keys[i % 3].sign(m) for i, m in enumerate(self.msgs)]
        self.pks = [self.keys[i % 3].public_key for i in range(4)]

    def test_buffer_and_offsets(self, impl: ModuleType) -> None:
        data = b"".join(self.msgs)
        offsets = np.cumsum([0] + [len(m) for m in self.msgs]).astype(np.int64)
        sigs = np.frombuffer(b"".join(self.sigs), dtype=np.uint8).reshape(4, 64)
        pks = np.frombuffer(b"".join(self.pks), dtype=np.uint8).reshape(4, 32)
        assert impl.verify_batch(data, sigs, pks, offsets=offsets).tolist() == [True] * 4
        assert impl.verify_batch(data, sigs, pks, offsets=offsets.astype(np.int32)).tolist() == [True] * 4
        assert impl.verify_batch(data, sigs, pks, offsets=offsets.tolist()).tolist() == [True] * 4
        writable = np.frombuffer(bytearray(data), dtype=np.uint8)
        assert writable.flags.writeable
        assert impl.verify_batch(writable, sigs, pks, offsets=offsets).tolist() == [True] * 4
        assert impl.verify_batch(memoryview(data), sigs, pks, offsets=offsets).tolist() == [True] * 4

    def test_mixed_bytes_like_items(self, impl: ModuleType) -> None:
        msgs = [bytearray(self.msgs[0]), memoryview(self.msgs[1]), np.frombuffer(self.msgs[2], np.uint8), self.msgs[3]]
        assert impl.verify_batch(msgs, self.sigs, self.pks).tolist() == [True] * 4

    def test_empty_batch(self, impl: ModuleType) -> None:
        out = impl.verify_batch([], [], [])
        assert out.dtype == np.bool_ and out.shape == (0,)

    @pytest.mark.parametrize(
        "offsets,fragment",
        [
            ([0, 1, 1, 4], "same length|expected 3"),
            ([-1, 1, 1, 4, 8], "negative"),
            ([0, 4, 1, 4, 8], "less than"),
            ([0, 1, 1, 4, 99], "past the end"),
            ([], "at least one"),
        ],
    )
    def test_bad_offsets(self, impl: ModuleType, offsets: list[int], fragment: str) -> None:
        with pytest.raises(hopgate.InputError, match=fragment):
            impl.verify_batch(b"".join(self.msgs), self.sigs, self.pks, offsets=offsets)

    def test_bad_offsets_dtype_and_shape(self, impl: ModuleType) -> None:
        data = b"".join(self.msgs)
        with pytest.raises(hopgate.InputError):
            impl.verify_batch(data, self.sigs, self.pks, offsets=np.array([0.0, 1, 1, 4, 8]))
        with pytest.raises(hopgate.InputError):
            impl.verify_batch(data, self.sigs, self.pks, offsets=np.zeros((5, 1), np.int64))

    def test_length_mismatch(self, impl: ModuleType) -> None:
        with pytest.raises(hopgate.InputError, match="same length|expected"):
            impl.verify_batch(self.msgs, self.sigs[:3], self.pks)

    def test_signature_buffer_not_whole(self, impl: ModuleType) -> None:
        with pytest.raises(hopgate.InputError):
            impl.verify_batch(self.msgs, b"".join(self.sigs)[:-1], self.pks)

    def test_not_bytes_like(self, impl: ModuleType) -> None:
        with pytest.raises(hopgate.InputError):
            impl.verify_batch(["text"], self.sigs[:1], self.pks[:1])
        with pytest.raises(hopgate.InputError):
            impl.verify_batch(b"one buffer without offsets", self.sigs[:1], self.pks[:1])


def test_signing_key_cannot_be_copied_or_pickled(impl: ModuleType) -> None:
    key = impl.SigningKey.generate()
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError):
            attempt(key)
    assert key.seed().hex() not in repr(key)
    assert key.public_key.hex()[:8] in repr(key)


def test_from_seed_wrong_length(impl: ModuleType) -> None:
    with pytest.raises(hopgate.InputError):
        impl.SigningKey.from_seed(b"short")


def test_hash_many_matches_hashlib_and_blake3(impl: ModuleType) -> None:
    import blake3

    msgs = [bytes(range(256)) * (n // 256 + 1) for n in (0, 1, 63, 64, 65, 1023, 1024, 1025, 70_000)]
    msgs = [m[:n] for m, n in zip(msgs, (0, 1, 63, 64, 65, 1023, 1024, 1025, 70_000))]
    b3 = impl.blake3_many(msgs)
    sha = impl.sha256_many(msgs)
    assert b3.shape == (len(msgs), 32) and b3.dtype == np.uint8
    assert [bytes(r) for r in b3] == [blake3.blake3(m).digest() for m in msgs]
    assert [bytes(r) for r in sha] == [hashlib.sha256(m).digest() for m in msgs]
    offsets = np.cumsum([0] + [len(m) for m in msgs])
    assert (impl.blake3_many(b"".join(msgs), offsets) == b3).all()
    assert impl.blake3_many([]).shape == (0, 32)


def test_native_codes_match_the_enum() -> None:
    from hopgate import _native

    assert [(c.value, c.name) for c in hopgate.Code] == list(_native.code_names())


def test_large_batch_finds_exactly_the_bad_items(keys: list[Any]) -> None:
    """Over several groups and threads: a few bad items, anywhere, are all found."""
    n = 3000
    msgs = [i.to_bytes(4, "little") for i in range(n)]
    sigs = [keys[i % 8].sign(m) for i, m in enumerate(msgs)]
    pks = [keys[i % 8].public_key for i in range(n)]
    bad = {0, 1, 2, 1023, 1024, 1500, 2998, 2999}
    for i in bad:
        s = bytearray(sigs[i])
        s[33] ^= 0x40
        sigs[i] = bytes(s)
    out = hopgate.verify_batch(msgs, sigs, pks)
    assert set(np.flatnonzero(~out).tolist()) == bad
