"""Hashing: blake3_many, sha256_many, mac_many, blake3, hash_backend.

Known answers are BLAKE3's official test vectors (tests/vectors/blake3.json, from
BLAKE3-team/BLAKE3 test_vectors/test_vectors.json); everything else is checked
against blake3-py and hashlib, and native against reference.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import random
from types import ModuleType
from typing import Any, Callable

import blake3 as blake3_py
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import hopgate
import hopgate.reference as ref

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "blake3.json").read_text())
KEY: bytes = VECTORS["key"].encode("ascii")
# (input length, first 32 bytes of `hash`, first 32 bytes of `keyed_hash`), as bytes.
CASES = [(c["input_len"], bytes.fromhex(c["hash"][:64]), bytes.fromhex(c["keyed_hash"][:64])) for c in VECTORS["cases"]]
OFFICIAL_LENGTHS = [0, 1, 1023, 1024, 1025, 2048, 2049, 3072, 3073, 4096, 4097, 5120, 5121, 6144, 6145, 7168, 7169,
                    8192, 8193, 16384, 31744, 102400]  # fmt: skip

# hypothesis runs the same test for each `impl`; the fixture is a constant module.
FIXTURE_OK = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def official_input(n: int) -> bytes:
    """The vectors' input: bytes 0, 1, ..., 250, 0, 1, ... (n of them)."""
    return (np.arange(n, dtype=np.int64) % 251).astype(np.uint8).tobytes()


def rows(out: npt.NDArray[np.uint8], n: int) -> list[bytes]:
    """The digests of an `(n, 32)` uint8 result, after checking its shape and type."""
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.uint8 and out.shape == (n, 32) and out.flags.c_contiguous
    return [bytes(r) for r in out]


def as_buffer(msgs: list[bytes], dtype: Any = np.int64) -> tuple[npt.NDArray[np.uint8], npt.NDArray[Any]]:
    """One read-only numpy buffer (borrowed, not copied, by the native module) and its offsets."""
    data = np.frombuffer(b"".join(msgs), dtype=np.uint8)
    assert not data.flags.writeable
    offsets = np.zeros(len(msgs) + 1, dtype=dtype)
    offsets[1:] = np.cumsum([len(m) for m in msgs])
    return data, offsets


def b3(m: bytes) -> bytes:
    return blake3_py.blake3(m).digest()


def mac(key: bytes, m: bytes) -> bytes:
    return blake3_py.blake3(m, key=key).digest()


def sha(m: bytes) -> bytes:
    return hashlib.sha256(m).digest()


# --- BLAKE3's official test vectors -------------------------------------------------------


def test_vectors_file_is_whole() -> None:
    assert [n for n, _, _ in CASES] == OFFICIAL_LENGTHS
    assert len(KEY) == 32
    assert VECTORS["context_string"] == "BLAKE3 2019-12-27 16:29:52 test vectors context"
    # Every output is the full 131-byte extended output of the official file.
    assert all(len(c["hash"]) == len(c["keyed_hash"]) == 262 for c in VECTORS["cases"])


@pytest.mark.parametrize("n,digest,keyed", CASES, ids=[f"len={n}" for n in OFFICIAL_LENGTHS])
def test_official_vector_one_input(impl: ModuleType, n: int, digest: bytes, keyed: bytes) -> None:
    data = official_input(n)
    assert impl.blake3(data) == digest
    assert impl.blake3(data, threads=1) == digest
    assert impl.blake3(data, threads=2) == digest
    assert rows(impl.blake3_many([data]), 1) == [digest]
    assert rows(impl.mac_many(KEY, [data]), 1) == [keyed]


def test_official_vectors_as_list(impl: ModuleType) -> None:
    inputs = [official_input(n) for n, _, _ in CASES]
    assert rows(impl.blake3_many(inputs), len(CASES)) == [d for _, d, _ in CASES]
    assert rows(impl.mac_many(KEY, inputs), len(CASES)) == [k for _, _, k in CASES]


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_official_vectors_as_buffer_and_offsets(impl: ModuleType, dtype: Any) -> None:
    data, offsets = as_buffer([official_input(n) for n, _, _ in CASES], dtype)
    assert rows(impl.blake3_many(data, offsets), len(CASES)) == [d for _, d, _ in CASES]
    assert rows(impl.mac_many(KEY, data, offsets), len(CASES)) == [k for _, _, k in CASES]
    # The key as any bytes-like object: the same MACs.
    for key in (bytearray(KEY), memoryview(KEY), np.frombuffer(KEY, np.uint8)):
        assert rows(impl.mac_many(key, data, offsets=offsets), len(CASES)) == [k for _, _, k in CASES]


# --- every length, against blake3-py and hashlib ------------------------------------------

EVERY_LENGTH = list(range(4097))
SAMPLE_LENGTHS = [0, 1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096]


def messages(lengths: list[int], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in lengths]


@pytest.mark.parametrize(
    "impl_name,lengths", [("native", EVERY_LENGTH), ("reference", SAMPLE_LENGTHS)], ids=["native", "reference"]
)
def test_every_length_in_one_batch(impl_name: str, lengths: list[int]) -> None:
    impl = hopgate if impl_name == "native" else ref
    msgs = messages(lengths, seed=len(lengths))
    key = bytes(range(100, 132))
    want_b3, want_sha, want_mac = [b3(m) for m in msgs], [sha(m) for m in msgs], [mac(key, m) for m in msgs]
    n = len(msgs)
    assert rows(impl.blake3_many(msgs), n) == want_b3
    assert rows(impl.sha256_many(msgs), n) == want_sha
    assert rows(impl.mac_many(key, msgs), n) == want_mac
    data, offsets = as_buffer(msgs)
    assert rows(impl.blake3_many(data, offsets), n) == want_b3
    assert rows(impl.sha256_many(data, offsets), n) == want_sha
    assert rows(impl.mac_many(key, data, offsets), n) == want_mac


@FIXTURE_OK
@given(st.lists(st.binary(max_size=2100), max_size=40), st.binary(min_size=32, max_size=32), st.booleans())
def test_random_batches(impl: ModuleType, msgs: list[bytes], key: bytes, int32: bool) -> None:
    n = len(msgs)
    assert rows(impl.blake3_many(msgs), n) == [b3(m) for m in msgs]
    assert rows(impl.sha256_many(msgs), n) == [sha(m) for m in msgs]
    assert rows(impl.mac_many(key, msgs), n) == [mac(key, m) for m in msgs]
    data, offsets = as_buffer(msgs, np.int32 if int32 else np.int64)
    assert rows(impl.blake3_many(data, offsets), n) == [b3(m) for m in msgs]
    assert rows(impl.sha256_many(data, offsets), n) == [sha(m) for m in msgs]
    assert rows(impl.mac_many(key, data, offsets), n) == [mac(key, m) for m in msgs]


# --- input forms ---------------------------------------------------------------------------

MSGS = [b"a", b"", b"ccc", b"d" * 100, bytes(range(256)) * 80]  # the last is > 16 KiB
HASHERS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("blake3_many", b3),
    ("sha256_many", sha),
    ("mac_many", lambda m: mac(KEY, m)),
]


def call(impl: ModuleType, name: str, *args: Any, **kwargs: Any) -> npt.NDArray[np.uint8]:
    f = getattr(impl, name)
    out: npt.NDArray[np.uint8] = f(KEY, *args, **kwargs) if name == "mac_many" else f(*args, **kwargs)
    return out


@pytest.mark.parametrize("name,one", HASHERS, ids=[h[0] for h in HASHERS])
def test_buffer_forms_and_offset_types(impl: ModuleType, name: str, one: Callable[[bytes], bytes]) -> None:
    want = [one(m) for m in MSGS]
    joined = b"".join(MSGS)
    _, offsets = as_buffer(MSGS)
    buffers = [
        joined,  # bytes: borrowed
        np.frombuffer(joined, np.uint8),  # read-only numpy: borrowed
        np.frombuffer(bytearray(joined), np.uint8),  # writable numpy: copied
        bytearray(joined),  # copied
        memoryview(joined),  # read-only memoryview: borrowed
        memoryview(bytearray(joined)),  # writable memoryview: copied
    ]
    for data in buffers:
        for offs in (offsets, offsets.astype(np.int32), offsets.tolist()):
            assert rows(call(impl, name, data, offs), len(MSGS)) == want
    assert rows(call(impl, name, joined, offsets=offsets), len(MSGS)) == want
    # Offsets need not start at 0 nor cover the whole buffer.
    assert rows(call(impl, name, joined, [1, 1, 4]), 2) == [one(b""), one(b"ccc")]


@pytest.mark.parametrize("name,one", HASHERS, ids=[h[0] for h in HASHERS])
def test_list_of_mixed_bytes_like(impl: ModuleType, name: str, one: Callable[[bytes], bytes]) -> None:
    items = [
        MSGS[0],
        bytearray(MSGS[1]),
        memoryview(MSGS[2]),
        np.frombuffer(MSGS[3], np.uint8),
        np.frombuffer(bytearray(MSGS[4]), np.uint8),
    ]
    want = [one(m) for m in MSGS]
    assert rows(call(impl, name, items), len(MSGS)) == want
    assert rows(call(impl, name, tuple(items)), len(MSGS)) == want
    assert rows(call(impl, name, iter(items)), len(MSGS)) == want


@pytest.mark.parametrize("name", [h[0] for h in HASHERS])
def test_empty_batch(impl: ModuleType, name: str) -> None:
    assert rows(call(impl, name, []), 0) == []
    assert rows(call(impl, name, b"", np.zeros(1, np.int64)), 0) == []
    assert rows(call(impl, name, b"abc", [2]), 0) == []


def test_blake3_one_input_forms(impl: ModuleType) -> None:
    data = bytes(range(256)) * 100  # 25.6 KB: above the native GIL-release size
    want = b3(data)
    for form in (data, bytearray(data), memoryview(data), memoryview(bytearray(data)),
                 np.frombuffer(data, np.uint8), np.frombuffer(bytearray(data), np.uint8),
                 np.frombuffer(data, np.uint8).reshape(100, 256)):  # fmt: skip
        out = impl.blake3(form)
        assert type(out) is bytes and out == want
    assert impl.blake3(b"abc") == bytes.fromhex("6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85")


@pytest.mark.parametrize("size", [0, 1, 16 * 1024, 2**20 + 1, 3 * 2**20])
@pytest.mark.parametrize("threads", [None, 1, 2, 3])
def test_blake3_threads(impl: ModuleType, size: int, threads: int | None) -> None:
    data = random.Random(size).randbytes(size)
    assert impl.blake3(data, threads=threads) == b3(data)
    assert impl.blake3(data, threads) == b3(data)


def test_blake3_threads_accepts_index_integers(impl: ModuleType) -> None:
    assert impl.blake3(b"x", threads=np.int64(2)) == b3(b"x")


def test_hash_backend() -> None:
    assert hopgate.hash_backend() in {"avx512", "avx2", "neon", "portable"}
    assert ref.hash_backend() == "reference"


# --- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 31, 33, 64])
def test_key_of_wrong_length(impl: ModuleType, n: int) -> None:
    with pytest.raises(hopgate.InputError, match=rf"^key: must be 32 bytes, got {n}$"):
        impl.mac_many(b"k" * n, [b"m"])
    with pytest.raises(ValueError, match=rf"key.*{n}"):
        impl.mac_many(bytearray(n), b"m", [0, 1])


@pytest.mark.parametrize("key", ["k" * 32, 32, None, [0] * 32])
def test_key_not_bytes_like(impl: ModuleType, key: Any) -> None:
    with pytest.raises(hopgate.InputError, match=r"^key: expected a bytes-like object, got "):
        impl.mac_many(key, [b"m"])


@pytest.mark.parametrize("threads", [0, -1, -(2**40), -(2**64), -(2**70)])
def test_threads_below_one(impl: ModuleType, threads: int) -> None:
    with pytest.raises(hopgate.InputError, match=rf"^threads: must be at least 1, got {threads}$"):
        impl.blake3(b"x", threads=threads)
    assert issubclass(hopgate.InputError, ValueError)


def test_threads_out_of_range(impl: ModuleType) -> None:
    with pytest.raises(hopgate.InputError, match=r"^threads: .*out of range"):
        impl.blake3(b"x", threads=2**64)
    with pytest.raises(hopgate.InputError, match=r"^threads: .*out of range"):
        impl.blake3(b"x", threads=2**63)


@pytest.mark.parametrize("threads,typename", [(True, "bool"), (False, "bool"), ("2", "str"), (2.0, "float"), (b"2", "bytes")])
def test_threads_not_an_integer(impl: ModuleType, threads: Any, typename: str) -> None:
    with pytest.raises(TypeError, match=rf"^threads: expected None or an integer >= 1, got {typename}$"):
        impl.blake3(b"x", threads=threads)


@pytest.mark.parametrize("data", ["text", 7, None, [b"a"]])
def test_blake3_data_not_bytes_like(impl: ModuleType, data: Any) -> None:
    with pytest.raises(hopgate.InputError, match=r"^data: expected a bytes-like object, got "):
        impl.blake3(data)


@pytest.mark.parametrize("name", [h[0] for h in HASHERS])
@pytest.mark.parametrize(
    "offsets,fragment",
    [
        ([-1, 1, 4], "negative"),
        (np.array([-1, 1, 4], np.int64), "negative"),
        ([0, 4, 1], "less than"),
        (np.array([0, 4, 1], np.int32), "less than"),
        ([0, 1, 5], "past the end"),
        ([0, 1, 2**40], "past the end"),
        ([5], "past the end"),
        ([], "at least one"),
        (np.array([0.0, 1.0, 4.0]), "float64"),
        (np.array(["0", "1"]), "<U1|offsets"),
        (np.zeros((3, 1), np.int64), "1-D|dimensions"),
        ("0,1,4", "offsets"),
    ],
)
def test_bad_offsets(impl: ModuleType, name: str, offsets: Any, fragment: str) -> None:
    with pytest.raises(hopgate.InputError, match=fragment) as e:
        call(impl, name, b"abcd", offsets)
    assert "offsets" in str(e.value)


@pytest.mark.parametrize("name", [h[0] for h in HASHERS])
def test_bad_batch(impl: ModuleType, name: str) -> None:
    with pytest.raises(hopgate.InputError, match=r"^data: .*offsets"):
        call(impl, name, b"one buffer without offsets")
    with pytest.raises(hopgate.InputError, match=r"^data\[1\]: expected a bytes-like object, got str$"):
        call(impl, name, [b"a", "b"])
    with pytest.raises(hopgate.InputError, match=r"^data\[0\]: .*int32|^data\[0\]: .*items of 4 bytes"):
        call(impl, name, [np.zeros(2, np.int32)])
    with pytest.raises(hopgate.InputError, match=r"^data"):
        call(impl, name, 42)


# --- native == reference -------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=30), st.binary(min_size=32, max_size=32), st.sampled_from([None, 1, 2, 3]))
def test_native_equals_reference(msgs: list[bytes], key: bytes, threads: int | None) -> None:
    n = len(msgs)
    for name, args in (("blake3_many", ()), ("sha256_many", ()), ("mac_many", (key,))):
        native = rows(getattr(hopgate, name)(*args, msgs), n)
        assert native == rows(getattr(ref, name)(*args, msgs), n)
        data, offsets = as_buffer(msgs)
        assert rows(getattr(hopgate, name)(*args, data, offsets), n) == native
        assert rows(getattr(ref, name)(*args, data, offsets), n) == native
    joined = b"".join(msgs)
    assert hopgate.blake3(joined, threads=threads) == ref.blake3(joined, threads=threads) == b3(joined)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=2), st.floats()))
@example(-(2**63) - 1)
@example(-(2**63))
@example(2**63)
@example(2**64 + 1)
def test_native_and_reference_refuse_the_same_threads(threads: Any) -> None:
    if isinstance(threads, int) and not isinstance(threads, bool) and 8 < threads < 2**63:
        threads = 8  # valid either way; no need to start thousands of threads to show it

    def outcome(f: Callable[..., bytes]) -> tuple[str, str]:
        try:
            return ("ok", f(b"x", threads=threads).hex())
        except (TypeError, ValueError) as e:
            return (type(e).__name__, str(e))

    assert outcome(hopgate.blake3) == outcome(ref.blake3)


@pytest.mark.parametrize("name", ["blake3_many", "sha256_many", "mac_many"])
def test_out_is_written_in_place_and_returned(impl: ModuleType, name: str) -> None:
    msgs = [b"", b"abc", bytes(range(256)) * 5]
    buf = np.frombuffer(b"".join(msgs), dtype=np.uint8)
    offsets = np.cumsum([0] + [len(m) for m in msgs]).astype(np.int64)
    args: tuple[Any, ...] = (bytes(32),) if name == "mac_many" else ()
    fn = getattr(impl, name)
    want = fn(*args, msgs)
    for data in ((msgs,), (buf, offsets)):
        out = np.full((3, 32), 7, dtype=np.uint8)
        assert fn(*args, *data, out=out) is out
        assert (out == want).all()


@pytest.mark.parametrize(
    ("out", "fragment"),
    [
        (np.zeros((2, 32), dtype=np.uint8), "shape (3, 32)"),
        (np.zeros((3, 16), dtype=np.uint8), "shape (3, 32)"),
        (np.zeros((3, 32), dtype=np.int16), "numpy uint8 array"),
        (np.zeros(96, dtype=np.uint8), "numpy uint8 array"),
        (bytearray(96), "numpy uint8 array"),
        (np.zeros((3, 64), dtype=np.uint8)[:, ::2], "C-contiguous"),
        (np.zeros((3, 32), dtype=np.uint8).T.copy().T, "C-contiguous"),
    ],
)
def test_bad_out(impl: ModuleType, out: Any, fragment: str) -> None:
    with pytest.raises(hopgate.InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        impl.blake3_many([b"a", b"b", b"c"], out=out)


def test_read_only_out_is_refused(impl: ModuleType) -> None:
    out = np.zeros((1, 32), dtype=np.uint8)
    out.flags.writeable = False
    with pytest.raises(hopgate.InputError, match="writable"):
        impl.blake3_many([b"a"], out=out)


def _aliases() -> list[tuple[Any, Any, Any]]:
    """(data, offsets, out) where ``out`` lies over the data's memory, through every kind
    of alias: the same array, a bytearray and a numpy view of it, a memoryview, a list item."""
    cases: list[tuple[Any, Any, Any]] = []
    offsets = np.arange(0, 129, 32, dtype=np.int64)
    same = np.zeros((4, 32), dtype=np.uint8)
    cases.append((same, offsets, same))
    raw = bytearray(128)
    cases.append((raw, offsets, np.frombuffer(raw, dtype=np.uint8).reshape(4, 32)))
    arr = np.zeros(128, dtype=np.uint8)
    cases.append((arr, offsets, np.frombuffer(arr.data, dtype=np.uint8).reshape(4, 32)))
    target = np.zeros((2, 32), dtype=np.uint8)
    item = np.frombuffer(target.data, dtype=np.uint8)[32:40]
    item.flags.writeable = False
    cases.append(([b"x", item], None, target))
    return cases


@pytest.mark.parametrize("case", range(4))
def test_out_cannot_share_memory_with_the_data(impl: ModuleType, case: int) -> None:
    """Digests written over the data being hashed are refused, whatever the alias."""
    data, offsets, out = _aliases()[case]
    for name in ("blake3_many", "sha256_many"):
        with pytest.raises(hopgate.InputError, match="out: shares memory with the data"):
            getattr(impl, name)(data, offsets, out=out)
