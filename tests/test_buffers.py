"""Hostile buffers: every odd shape of data and offsets gets the same clear
exception or the same result from both implementations; memory mutated by
another thread during a call, batches of a million items and chains at the
64 KiB limit give defined results, never a crash or a read out of bounds.

The inputs accepted are those of docs/SPEC.md §7.3; the zero-copy guarantees these
tests pin are written down in docs/FORMAT.md §2.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import blake3
import numpy as np
import pytest

import hopgate
import hopgate.reference as ref
from hopgate import Code

from craft import NOW, invocation

ITEMS = [b"", b"a", b"hello", bytes(range(200)), b"\x00" * 1025]
FLAT = np.frombuffer(b"".join(ITEMS), dtype=np.uint8)
OFFSETS = np.cumsum([0] + [len(i) for i in ITEMS]).astype(np.int64)
EXPECTED = np.array([list(blake3.blake3(i).digest()) for i in ITEMS], dtype=np.uint8)


def outcome(call: Callable[[], Any]) -> Any:
    """The result, or the exception's class (what must agree between implementations)."""
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - the class is what is compared
        return type(e)


def same(call: Callable[[ModuleType], Any]) -> Any:
    """Runs `call` on both implementations and asserts they agree."""
    a, b = outcome(lambda: call(hopgate)), outcome(lambda: call(ref))
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b, f"native {a!r}, reference {b!r}"
    return a


# -- offsets -----------------------------------------------------------------------

BAD_OFFSETS = {
    "negative-first": [-1, 0],
    "negative-middle": [0, -5, 3],
    "decreasing": [0, 5, 3],
    "past-the-end": [0, len(FLAT) + 1],
    "huge-python-int": [0, 2**70],
    "uint64-beyond-int64": np.array([0, 2**63 + 5], dtype=np.uint64),
    "empty": [],
    "two-dimensional": np.zeros((2, 2), dtype=np.int64),
    "zero-dimensional": np.int64(0),
    "float-dtype": np.array([0.0, 1.0]),
    "bool-dtype": np.array([False, True]),
    "list-of-bools": [False, True],
    "list-of-floats": [0.0, 1.5],
    "object-dtype": np.array([0, "x"], dtype=object),
    "string": "0,1",
    "bytes": b"\x00\x01",
    "none-inside": [0, None],
    "ragged": [[0], [1, 2]],
}


@pytest.mark.parametrize("offsets", BAD_OFFSETS.values(), ids=BAD_OFFSETS.keys())
@pytest.mark.parametrize("fn", ["blake3_many", "sha256_many", "verify_chains"])
def test_bad_offsets_are_input_errors(offsets: Any, fn: str) -> None:
    def call(impl: ModuleType) -> Any:
        if fn == "verify_chains":
            return impl.verify_chains(FLAT, [bytes(32)], now=NOW, offsets=offsets)
        return getattr(impl, fn)(FLAT, offsets)

    assert same(call) is hopgate.InputError


INT_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_offsets_of_every_integer_dtype(dtype: str) -> None:
    short = np.array([0, 1, 5, 5], dtype=dtype)
    want = np.array([list(blake3.blake3(x).digest()) for x in (b"a", b"hell", b"")], dtype=np.uint8)
    data = np.frombuffer(b"ahello", dtype=np.uint8)
    for impl in (hopgate, ref):
        assert np.array_equal(impl.blake3_many(data, short), want)


def test_strided_and_readonly_offsets_are_read_in_order() -> None:
    wide = np.repeat(OFFSETS, 2)[::2]  # a strided view
    assert not wide.flags.c_contiguous
    wide.flags.writeable = False
    for impl in (hopgate, ref):
        assert np.array_equal(impl.blake3_many(FLAT, wide), EXPECTED)
        assert np.array_equal(impl.blake3_many(FLAT, list(map(int, OFFSETS))), EXPECTED)


def test_offsets_may_start_past_zero_and_leave_a_tail() -> None:
    for impl in (hopgate, ref):
        out = impl.blake3_many(FLAT, OFFSETS[2:4])
        assert np.array_equal(out, EXPECTED[2:3])


# -- data buffers ------------------------------------------------------------------

def _views() -> dict[str, Any]:
    base = np.arange(64, dtype=np.uint8)
    grid = np.arange(64, dtype=np.uint8).reshape(8, 8)
    return {
        "strided": base[::2],
        "negative-stride": base[::-1],
        "fortran-order": np.asfortranarray(grid),
        "column": grid[:, 1],
        "uint16": base.view(np.uint16),
        "float32": base.view(np.float32),
        "object": np.array([b"a", b"b"], dtype=object),
        "unicode": np.array(["ab"]),
        "memoryview-cast-to-ints": memoryview(bytes(64)).cast("I"),
        "memoryview-strided": memoryview(bytearray(64))[::2],
        "str": "not bytes",
        "int": 7,
        "none": None,
    }


@pytest.mark.parametrize("name", list(_views()))
def test_data_that_is_not_contiguous_single_bytes_is_an_input_error(name: str) -> None:
    data = _views()[name]
    assert same(lambda impl: impl.blake3_many(data, [0, 2])) is hopgate.InputError
    assert same(lambda impl: impl.blake3_many([data])) is hopgate.InputError
    assert same(lambda impl: impl.verify(data, bytes(64), bytes(32))) is hopgate.InputError


def test_strided_view_message_says_what_to_do() -> None:
    for impl in (hopgate, ref):
        with pytest.raises(hopgate.InputError, match="C-contiguous"):
            impl.blake3_many(np.arange(64, dtype=np.uint8)[::2], [0, 2])


ONE_BYTE: dict[str, Callable[[bytes], Any]] = {
    "uint8": lambda b: np.frombuffer(b, dtype=np.uint8),
    "int8": lambda b: np.frombuffer(b, dtype=np.int8),
    "bool": lambda b: np.frombuffer(bytes(x & 1 for x in b), dtype=np.bool_),
    "bytes-S1": lambda b: np.frombuffer(b, dtype="S1"),
    "writable-int8": lambda b: np.frombuffer(bytearray(b), dtype=np.int8),
    "2-d-c-order": lambda b: np.frombuffer(b, dtype=np.uint8).reshape(-1, 4),
    "bytearray": bytearray,
    "memoryview": memoryview,
    "memoryview-writable": lambda b: memoryview(bytearray(b)),
    "memoryview-signed": lambda b: memoryview(b).cast("b"),
    "memoryview-char": lambda b: memoryview(b).cast("c"),
}


@pytest.mark.parametrize("name", list(ONE_BYTE))
def test_any_contiguous_buffer_of_single_bytes_is_its_bytes(name: str) -> None:
    raw = bytes(range(7, 39))
    if name == "bool":
        raw = bytes(x & 1 for x in raw)
    data = ONE_BYTE[name](raw)
    want = np.array([list(blake3.blake3(raw[:5]).digest()), list(blake3.blake3(raw[5:]).digest())],
                    dtype=np.uint8)
    for impl in (hopgate, ref):
        assert np.array_equal(impl.blake3_many(data, [0, 5, len(raw)]), want), impl
        assert impl.blake3_many([data])[0].tobytes() == blake3.blake3(raw).digest()


def test_zero_dimensional_array_is_one_byte() -> None:
    scalar = np.array(7, dtype=np.uint8)
    assert same(lambda impl: impl.blake3_many([scalar])).tobytes() == blake3.blake3(b"\x07").digest()


def test_fixed_width_buffers_must_be_contiguous() -> None:
    sk = hopgate.SigningKey.from_seed(b"\x05" * 32)
    msgs = [b"m%d" % i for i in range(4)]
    sigs = np.frombuffer(b"".join(sk.sign(m) for m in msgs), dtype=np.uint8).reshape(4, 64)
    pks = np.frombuffer(sk.public_key * 4, dtype=np.uint8).reshape(4, 32)
    assert same(lambda impl: impl.verify_batch(msgs, sigs, pks)).all()
    assert same(lambda impl: impl.verify_batch(msgs[:2], sigs[::2], pks[:2])) is hopgate.InputError
    assert same(lambda impl: impl.verify_batch(msgs, np.asfortranarray(sigs), pks)) is hopgate.InputError


# -- memory changed by another thread during a call ---------------------------------


def _hammer(write: Callable[[int], None], calls: Callable[[], None], rounds: int = 50) -> None:
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            write(i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(rounds):
            calls()
    finally:
        stop.set()
        t.join()


def test_writable_memory_is_copied_once_under_the_gil() -> None:
    """A Python thread rewriting a bytearray between two whole patterns: every
    ``verify_batch`` call sees one pattern or the other, whole (the copy is taken in one
    step), so its verdicts are all True (pattern a, which was signed) or all False."""
    n, size = 256, 64
    a, b = bytes([1]) * (n * size), bytes([2]) * (n * size)
    buf = bytearray(a)
    offsets = np.arange(0, n * size + 1, size, dtype=np.int64)
    key = hopgate.SigningKey.generate()
    sigs = [key.sign(a[:size])] * n
    pks = [key.public_key] * n

    def write(i: int) -> None:
        buf[:] = a if i % 2 else b

    def calls() -> None:
        for impl in (hopgate, ref):
            verdicts = set(impl.verify_batch(buf, sigs, pks, offsets=offsets).tolist())
            assert len(verdicts) == 1

    _hammer(write, calls, rounds=10)


def test_writable_hash_input_is_read_in_place() -> None:
    """The hashing functions read one writable buffer where it is (docs/FORMAT.md §2): a
    thread rewriting it meanwhile changes digests, never the shape, never a failure; left
    alone, the digests are the bytes' digests, in a reused ``out=`` array as well."""
    n, size = 512, 256
    a, b = bytes([1]) * (n * size), bytes([2]) * (n * size)
    buf = np.frombuffer(bytearray(a), dtype=np.uint8)
    assert buf.flags.writeable
    offsets = np.arange(0, n * size + 1, size, dtype=np.int64)
    out = np.zeros((n, 32), dtype=np.uint8)

    def write(i: int) -> None:
        buf[:] = np.frombuffer(a if i % 2 else b, dtype=np.uint8)

    def calls() -> None:
        for many in (hopgate.blake3_many, hopgate.sha256_many):
            assert many(buf, offsets).shape == (n, 32)
            assert many(buf, offsets, out=out) is out

    _hammer(write, calls)
    buf[:] = np.frombuffer(a, dtype=np.uint8)
    want = np.frombuffer(blake3.blake3(a[:size]).digest(), dtype=np.uint8)
    assert (hopgate.blake3_many(buf, offsets, out=out) == want).all() and (out == want).all()


def test_offsets_rewritten_during_calls_never_read_out_of_bounds() -> None:
    """Offsets are copied and checked before any slicing: a thread scribbling
    wild values into them makes a call fail with InputError or succeed, nothing else."""
    data = np.zeros(4096, dtype=np.uint8)
    data.flags.writeable = False
    offsets = np.arange(0, 4097, 64, dtype=np.int64)
    rng = np.random.default_rng(1)
    wild = rng.integers(-(2**62), 2**62, size=10_000)

    def write(i: int) -> None:
        offsets[i % len(offsets)] = wild[i % len(wild)] if i % 3 else (i * 64) % 4097

    def calls() -> None:
        for impl in (hopgate, ref):
            try:
                out = impl.blake3_many(data, offsets)
            except hopgate.InputError:
                continue
            assert out.shape == (len(offsets) - 1, 32)

    _hammer(write, calls, rounds=200)


def test_borrowed_readonly_view_written_through_another_alias() -> None:
    """A read-only view is borrowed and read without the GIL; writing through a
    writable alias meanwhile breaks the caller's promise. The result is then the
    digests of whatever bytes were read (shape and lengths stay right), never a
    crash; the same call on stable memory is exact."""
    base = np.zeros(1 << 20, dtype=np.uint8)
    view = base.view()
    view.flags.writeable = False
    offsets = np.arange(0, (1 << 20) + 1, 1024, dtype=np.int64)

    def write(i: int) -> None:
        base[(i * 4099) % len(base)] = i & 0xFF

    def calls() -> None:
        assert hopgate.blake3_many(view, offsets).shape == (1024, 32)

    _hammer(write, calls)
    stable = base.copy()
    stable.flags.writeable = False
    assert np.array_equal(hopgate.blake3_many(stable, offsets), ref.blake3_many(stable, offsets))


# -- a million items -----------------------------------------------------------------

MILLION = 1_000_000


def test_a_million_hashes() -> None:
    data = np.arange(MILLION * 8, dtype=np.uint64).view(np.uint8)
    data.flags.writeable = False
    offsets = np.arange(0, MILLION * 64 + 1, 64, dtype=np.int64)
    out = hopgate.blake3_many(data, offsets)
    assert out.shape == (MILLION, 32)
    for i in (0, 1, MILLION // 2, MILLION - 1):
        assert out[i].tobytes() == blake3.blake3(data[i * 64:(i + 1) * 64].tobytes()).digest()


def test_a_million_signatures_fail_item_by_item() -> None:
    msgs = np.zeros(MILLION, dtype=np.uint8)
    offsets = np.arange(MILLION + 1, dtype=np.int64)
    sigs = np.full((MILLION, 64), 0xFF, dtype=np.uint8)  # S >= L: refused per item
    pks = np.zeros((MILLION, 32), dtype=np.uint8)
    out = hopgate.verify_batch(msgs, sigs, pks, offsets=offsets)
    assert out.shape == (MILLION,) and out.dtype == np.bool_ and not out.any()


def test_a_million_chains_and_requests() -> None:
    chains = np.zeros(MILLION * 4, dtype=np.uint8)
    offsets = np.arange(0, MILLION * 4 + 1, 4, dtype=np.int64)
    codes = hopgate.verify_chains(chains, [bytes(32)], now=NOW, offsets=offsets)
    assert codes.shape == (MILLION,) and (codes == Code.MALFORMED).all()
    g = hopgate.Gate([bytes(32)])
    junk = [b"x"] * MILLION
    with pytest.raises(hopgate.InputError, match="max_batch"):
        g.check_batch(junk, junk)
    big = hopgate.Gate([bytes(32)], max_batch=MILLION)
    codes, reservations = big.check_batch(junk, junk)
    assert (codes == Code.MALFORMED).all() and not any(reservations)


# -- chains at the 64 KiB limit ---------------------------------------------------


def _widest_chain(impl: ModuleType, tail: int) -> Any:
    """Three links, 64 capabilities each of up to 255-byte strings; `tail` tunes the
    length so that tail=49 makes exactly 65,536 bytes."""
    k = [impl.SigningKey.from_seed(bytes([i + 90]) * 32) for i in range(4)]
    caps = [("r%02d/*" % i, "*") for i in range(64)]
    c = impl.Chain.grant(k[0], k[1].public_key, caps, 10, "usd", NOW - 10, NOW + 3600, 3)
    child = [("r%02d/" % i + "x" * 251, "a" * 255) for i in range(63)] + [("r63/" + "x" * 251, "a" * tail)]
    c = c.delegate(k[1], k[2].public_key, caps=child)
    return c.delegate(k[2], k[3].public_key, caps=child[:62]), k


def test_a_chain_of_exactly_64_kib(impl: ModuleType) -> None:
    c, k = _widest_chain(impl, 49)
    raw = bytes(c)
    assert len(raw) == hopgate._native.MAX_CHAIN_LEN == 65536
    trusted = [k[0].public_key]
    assert list(impl.verify_chains([raw] * 3, trusted, now=NOW)) == [Code.OK] * 3
    g = impl.Gate(trusted)
    d = g.check(raw, invocation(k[3], c.tail_signature, "a" * 255, "r00/" + "x" * 251, 1, NOW,
                                bytes(16), bytes(32)), now=NOW)
    assert d.code is Code.OK
    assert d.reservation is not None
    d.reservation.release()
    # One byte more is MALFORMED, for the verifier, the gate and the builders alike.
    assert list(impl.verify_chains([raw + b"\x00"], trusted, now=NOW)) == [Code.MALFORMED]
    with pytest.raises(hopgate.MalformedError):
        impl.Chain.from_bytes(raw + b"\x00")
    with pytest.raises(hopgate.DelegationError) as e:
        _widest_chain(impl, 50)
    assert e.value.code is Code.MALFORMED
