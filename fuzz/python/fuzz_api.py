#!/usr/bin/env python3
"""Differential atheris fuzzer of hopgate's Python API: native core vs ``hopgate.reference``.

Every input is turned (with ``atheris.FuzzedDataProvider``) into one small
*program*: a few argument expressions (bytes, bytearray, memoryviews, numpy
arrays of many dtypes and layouts, ``array.array``, offsets arrays of every
shape, wrong types) and one call of the public API that uses them. The program
is run twice, once with ``impl = hopgate`` (the native module) and once with
``impl = hopgate.reference``, each building its own fresh arguments.

The oracle: both sides return equal results (numpy arrays: same dtype, shape
and bytes; chains and invocations: same bytes and fields; gate decisions: same
code and the same reservations), or both raise the *same* exception class,
which must be a ``hopgate.HopgateError`` subclass or exactly ``TypeError``,
``ValueError`` or ``OverflowError``. Anything else is a finding.

Modes:
  default                     raise on the first finding (atheris reports it, writes crash-*)
  HOPGATE_FUZZ_COLLECT=1      record each distinct finding in HOPGATE_FUZZ_OUT
                              (JSON lines, default ./fuzz-findings.jsonl) and go on
  fuzz_api.py --describe F..  print the program an input file runs, with both outcomes
  fuzz_api.py --summary F     group a collect-mode file by (op, native, reference)

See README.md next to this file.
"""

from __future__ import annotations

import array
import collections
import json
import os
import pathlib
import sys
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional

import atheris

# Imported before instrumentation so that only hopgate's own Python code is
# instrumented (numpy, PyNaCl and blake3-py would only slow the fuzzer down).
import numpy as np
import nacl.bindings  # noqa: F401  (used by hopgate.reference)
import blake3 as _blake3_py  # noqa: F401  (used by hopgate.reference)

with atheris.instrument_imports(include=["hopgate"]):
    import hopgate
    import hopgate.reference

assert hopgate.BACKEND == "native", f"hopgate.BACKEND is {hopgate.BACKEND!r}: the native module did not load"

# A reservation that a failed program leaves unsettled is forfeited at GC, with a
# ResourceWarning; that is by design and not what this fuzzer looks at.
warnings.simplefilter("ignore", ResourceWarning)

NOW = 1_800_000_000

# Shared by the fuzzer and every reproducer it prints: the names argument
# expressions and calls may use.
PRELUDE = '''\
import array
import numpy as np
import hopgate, hopgate.reference
H = bytes.fromhex
NOW = 1800000000
def RO(a):
    a.flags.writeable = False
    return a
def D(x):
    """A gate answer as plain data; settles (releases) every reservation in it."""
    if isinstance(x, tuple):
        res = list(x[1])
        for r in res:
            if r is not None:
                r.release()
        rec = [r is None for r in x[2]] if len(x) > 2 else None
        return (x[0].dtype.str, x[0].tolist(), [None if r is None else r.amount for r in res], rec)
    r = x.reservation
    if r is not None:
        r.release()
    return (int(x.code), type(x.code).__name__, None if r is None else r.amount, x.receipt is None)
'''

BASE_ENV: dict[str, Any] = {}
exec(compile(PRELUDE, "<prelude>", "exec"), BASE_ENV)  # noqa: S102 - our own constant
IMPLS = (("native", hopgate), ("reference", hopgate.reference))

# ---------------------------------------------------------------------------
# Fixed pools: keys, chains, invocations and signatures built once from seeds
# ---------------------------------------------------------------------------

# tests/vectors/speccheck_cases.json (docs/SPEC.md §3): (message, pub_key, signature), cases 0..11.
SPECCHECK = [
    (c["message"], c["pub_key"], c["signature"])
    for c in json.loads((pathlib.Path(__file__).resolve().parents[2] / "tests" / "vectors" / "speccheck_cases.json").read_text())["cases"]
]


def _key(i: int) -> hopgate.SigningKey:
    return hopgate.SigningKey.from_seed(bytes([i]) * 32)


ISS, KA, KB, KC, KX = _key(1), _key(2), _key(3), _key(4), _key(9)
S1, S2 = b"\x11" * 16, b"\x22" * 16
CAPS = [("files/*", "read"), ("pay/*", "pay/*")]


def _n(i: int) -> bytes:
    return bytes([i]) * 16


def _build(mod: Any) -> tuple[list[bytes], list[bytes], list[tuple[bytes, bytes]]]:
    """Chains, invocations and matching (chain, invocation) pairs, built with ``mod``.

    Every nonce and timestamp is fixed, so both implementations must build the
    same bytes (Ed25519 signing is deterministic)."""
    sk = {k.public_key: mod.SigningKey.from_seed(k.seed()) for k in (ISS, KA, KB, KC, KX)}
    iss, a, b, c, x = (sk[k.public_key] for k in (ISS, KA, KB, KC, KX))
    grant = mod.Chain.grant
    ca = grant(iss, a.public_key, CAPS, 1000, "usd", NOW - 3600, NOW + 10**9, 3, session_id=S1, nonce=_n(1))
    cab = ca.delegate(a, b.public_key, caps=[("files/reports/*", "read")], budget=100, nonce=_n(2))
    cabc = cab.delegate(b, c.public_key, budget=50, nonce=_n(3))
    cexp = grant(iss, a.public_key, CAPS, 10, "usd", NOW - 100, NOW - 1, 1, nonce=_n(4))
    cfut = grant(iss, a.public_key, CAPS, 10, "usd", NOW + 100, NOW + 200, 1, nonce=_n(5))
    cunt = grant(x, a.public_key, CAPS, 10, "usd", NOW - 100, NOW + 100, 1, nonce=_n(6))
    cdep = grant(iss, a.public_key, [("*", "*")], 2**64 - 1, "pts", 0, 2**64 - 1, 0, session_id=S2, nonce=_n(7),
                 meta_digest=b"\x33" * 32)
    pairs = [
        (ca, ca.invoke(a, "read", "files/x", 10, nonce=_n(11), timestamp=NOW)),
        (ca, ca.invoke(a, "pay/send", "pay/acct", 1000, nonce=_n(12), timestamp=NOW, payload=b"p")),
        (ca, ca.invoke(a, "read", "files/x", 1, nonce=_n(13), timestamp=NOW - 1000)),
        (cab, cab.invoke(b, "read", "files/reports/q1", 5, nonce=_n(14), timestamp=NOW + 20)),
        (cabc, cabc.invoke(c, "read", "files/reports/q2", 50, nonce=_n(15), timestamp=NOW)),
        (cexp, cexp.invoke(a, "read", "files/y", 1, nonce=_n(16), timestamp=NOW)),
        (cfut, cfut.invoke(a, "read", "files/y", 1, nonce=_n(17), timestamp=NOW)),
        (cunt, cunt.invoke(a, "read", "files/y", 1, nonce=_n(18), timestamp=NOW)),
        (cdep, cdep.invoke(a, "x", "y", 2**64 - 1, nonce=_n(19), timestamp=NOW)),
    ]
    chains = [bytes(ch) for ch in (ca, cab, cabc, cexp, cfut, cunt, cdep)]
    raw_pairs = [(bytes(ch), inv) for ch, inv in pairs]
    return chains, [inv for _, inv in raw_pairs], raw_pairs


CHAINS, INVS, PAIRS = _build(hopgate)
BUILDER_MISMATCH = _build(hopgate.reference) != (CHAINS, INVS, PAIRS)

REVOKE_IDS = sorted({rid for ch in CHAINS for rid in hopgate.Chain.from_bytes(ch).revocation_ids})
ISSUER_PKS = [ISS.public_key, KX.public_key, KA.public_key]
MSGS = [b"", b"m", b"hello hopgate", bytes(range(64)), b"\x00" * 200]
TRIPLES = [(m, k.sign(m), k.public_key) for m in MSGS for k in (ISS, KA)]
TRIPLES += [(bytes.fromhex(m), bytes.fromhex(s), bytes.fromhex(p)) for m, p, s in SPECCHECK]
SIG_PARTS = [s for _, s, _ in TRIPLES]
PK_PARTS = [p for _, _, p in TRIPLES]
# Texts that must decode (chains, invocations) plus a few others.
TEXTS = [hopgate.to_text(x) for x in CHAINS[:3] + INVS[:2]] + ["", "AA", "AAA", "-_-_"]


# ---------------------------------------------------------------------------
# Argument builders: each returns Arg(label, src); src is a Python expression
# evaluated once per implementation (names from PRELUDE, plus `impl`)
# ---------------------------------------------------------------------------


class Arg(NamedTuple):
    label: str  # the shape (never the content): part of a finding's key; "" once made plain
    src: str  # the Python expression that builds it
    plain: Optional[str] = None  # the same content in the most ordinary form (None: no such form)
    items: tuple["Arg", ...] = ()  # a list/tuple/generator argument: its items
    kind: str = ""  # ... and which of the three it is


def container(kind: str, items: list[Arg], plain: Optional[str] = None) -> Arg:
    srcs = ", ".join(a.src for a in items)
    if kind == "tuple":
        src = f"({srcs}{',' if len(items) == 1 else ''})"
    elif kind == "generator":
        src = f"(x for x in [{srcs}])"
    else:
        src = f"[{srcs}]"
    label = f"{kind}[" + ",".join(sorted({a.label or "bytes" for a in items})) + "]"
    if plain is None:
        plain = "[" + ", ".join(a.plain or a.src for a in items) + "]"
    return Arg(label, src, plain, tuple(items), kind)


def plain_item(a: Arg, j: int) -> Optional[Arg]:
    """Container ``a`` with item ``j`` made plain, or None if it already is."""
    item = a.items[j]
    if item.plain is None or item.plain == item.src:
        return None
    items = list(a.items)
    items[j] = Arg("", item.plain)
    return container(a.kind, items, a.plain)


def H(b: bytes) -> str:
    return f"H({b.hex()!r})"


def _interleave(x: bytes) -> bytes:
    return bytes(v for c in x for v in (c, 0xA5))


def _split(n: int) -> Optional[tuple[int, int]]:
    for k in range(2, n):
        if n % k == 0:
            return k, n // k
    return None


WRONG = [
    ("None", "None"),
    ("str", "'abc'"),
    ("int", "7"),
    ("float", "1.5"),
    ("dict", "{}"),
    ("list-of-ints", "[1, 2, 3]"),
    ("object", "object()"),
    ("generator-of-ints", "(i for i in range(3))"),
]


class Builder:
    def __init__(self, data: bytes) -> None:
        self.f = atheris.FuzzedDataProvider(data)

    # -- primitives -------------------------------------------------------

    def num(self, lo: int, hi: int) -> int:
        return int(self.f.ConsumeIntInRange(lo, hi))

    def flip(self) -> bool:
        return bool(self.f.ConsumeBool())

    def take(self, n: int) -> bytes:
        return bytes(self.f.ConsumeBytes(n))

    def rule(self) -> str:
        """A signature rule argument, as source text: none (strict) most often, each
        drop-in rule (where the reference answers through PyNaCl or cryptography), or
        a name that is not a rule."""
        return ["", "", ", rule='strict'", ", rule='libsodium'", ", rule='openssl'", ", rule='sodium'"][self.num(0, 5)]

    def pick(self, seq: Any) -> Any:
        return seq[self.num(0, len(seq) - 1)]

    def raw(self, hi: int = 96) -> bytes:
        return self.take(self.num(0, hi))

    def content(self, pool: list[bytes]) -> bytes:
        """Bytes from the pool, whole or mutated, or raw fuzz bytes."""
        m = self.num(0, 7)
        if m == 0 or not pool:
            return self.raw()
        x: bytes = self.pick(pool)
        if m <= 3:
            return x
        if m == 4 and x:  # one bit flipped
            i = self.num(0, len(x) * 8 - 1)
            return x[: i // 8] + bytes([x[i // 8] ^ (1 << (i % 8))]) + x[i // 8 + 1 :]
        if m == 5:  # truncated
            return x[: self.num(0, len(x))]
        if m == 6:  # trailing bytes
            return x + self.take(self.num(1, 8))
        if x:  # a few bytes overwritten
            i = self.num(0, len(x) - 1)
            patch = self.take(self.num(1, 8))
            return x[:i] + patch + x[i + len(patch) :]
        return x

    # -- one bytes-like argument -----------------------------------------

    def wrong(self) -> Arg:
        label, src = self.pick(WRONG)
        return Arg("wrong:" + label, src)

    def buffer(self, x: bytes, chain: bool = False, wrong: bool = True) -> Arg:
        """One bytes-like object holding ``x`` (its logical content), in one of many shapes."""
        if wrong and self.num(0, 31) == 31:
            return self.wrong()._replace(plain=H(x))
        a = self._shape(x, chain)
        return a if a.label == "bytes" or a.plain is not None else a._replace(plain=H(x))

    def _shape(self, x: bytes, chain: bool) -> Arg:
        h = H(x)
        n = len(x)
        rw = self.flip()
        sfx = ",rw" if rw else ",ro"
        k = self.num(0, 28)
        if k == 0:
            return Arg("bytes", h)
        if k == 1:
            return Arg("bytearray", f"bytearray({h})")
        if k == 2:
            return Arg("memoryview" + sfx, f"memoryview(bytearray({h}))" if rw else f"memoryview({h})")
        if k == 3:
            pad = self.num(1, 3)
            return Arg("memoryview[off:]" + sfx,
                       f"memoryview({'bytearray(' if rw else '('}{H(bytes(pad) + x)}))[{pad}:]")
        if k == 4:
            return Arg("memoryview[::2]" + sfx,
                       f"memoryview({'bytearray(' if rw else '('}{H(_interleave(x))}))[::2]")
        if k == 5:
            fmt = self.pick(["b", "c", "B"])
            return Arg(f"memoryview.cast({fmt})" + sfx,
                       f"memoryview({'bytearray(' if rw else '('}{h})).cast({fmt!r})")
        if k == 6:
            fmt, size = self.pick([("H", 2), ("i", 4), ("f", 4), ("d", 8), ("Q", 8)])
            if n % size == 0:
                return Arg(f"memoryview.cast({fmt})" + sfx,
                           f"memoryview({'bytearray(' if rw else '('}{h})).cast({fmt!r})")
            return Arg("bytes", h)
        if k == 7:
            km = _split(n)
            if km:
                return Arg("memoryview.cast(B,2d)" + sfx,
                           f"memoryview({'bytearray(' if rw else '('}{h})).cast('B', {km!r})")
            return Arg("bytes", h)
        if k == 8:
            code = self.pick(["B", "b"])
            return Arg(f"array.array({code})", f"array.array({code!r}, {h})")
        if k == 9:
            if n % 4 == 0:
                return Arg("array.array(I)", f"array.array('I', {h})")
            return Arg("bytes", h)
        if k in (10, 11, 12):
            if rw:
                return Arg("np.uint8,rw", f"np.frombuffer(bytearray({h}), np.uint8)")
            if k == 10:
                return Arg("np.uint8,ro(frombuffer bytes)", f"np.frombuffer({h}, np.uint8)")
            return Arg("np.uint8,ro", f"RO(np.frombuffer(bytearray({h}), np.uint8))")
        if k == 13:
            e = f"np.frombuffer(bytearray({h}), np.int8)"
            return Arg("np.int8" + sfx, e if rw else f"RO({e})")
        if k == 14:
            e = f"np.frombuffer({h}, np.uint8).astype(np.bool_)"
            return Arg("np.bool" + sfx, e if rw else f"RO({e})")
        if k == 15:
            dt, size = self.pick([("uint16", 2), ("int32", 4), ("float32", 4)])
            if n % size == 0 and self.flip():
                e = f"np.frombuffer(bytearray({h}), np.{dt})"
                lab = f"np.{dt}(view)"
            else:
                e = f"np.frombuffer({h}, np.uint8).astype(np.{dt})"
                lab = f"np.{dt}(widened)"
            return Arg(lab + sfx, e if rw else f"RO({e})")
        if k == 16:
            return Arg("np.object", f"np.array(list({h}), dtype=object)")
        if k == 17:
            v = x[0] if x else 0
            e = f"np.array({v}, np.uint8)"
            return Arg("np.uint8-0d" + sfx, e if rw else f"RO({e})")
        if k == 18:
            return Arg("np.bytes_-0d", f"np.array({h})")
        if k == 19:
            if n == 1:
                return Arg("np.uint8-scalar", f"np.uint8({x[0]})")
            return Arg("np.bytes_-scalar", f"np.bytes_({h})")
        if k == 20:
            km = _split(n) or (1, n)
            e = f"np.frombuffer(bytearray({h}), np.uint8).reshape{km!r}"
            return Arg("np.uint8-2d" + sfx, e if rw else f"RO({e})")
        if k == 21:
            km = _split(n)
            if km:
                e = f"np.asfortranarray(np.frombuffer({h}, np.uint8).reshape{km!r})"
                return Arg("np.uint8-2d-F" + sfx, e if rw else f"RO({e})")
            return Arg("bytes", h)
        if k == 22:
            e = f"np.frombuffer({'bytearray(' if rw else '('}{H(_interleave(x))}), np.uint8)[::2]"
            return Arg("np.uint8[::2]" + sfx, e)
        if k == 23:
            e = f"np.frombuffer({'bytearray(' if rw else '('}{H(x[::-1])}), np.uint8)[::-1]"
            return Arg("np.uint8[::-1]" + sfx, e)
        if k == 24:
            if n == 0:
                shape = self.pick([(0,), (0, 64), (3, 0)])
                e = f"np.empty({shape!r}, np.uint8)"
                return Arg(f"np.empty{shape!r}" + sfx, e if rw else f"RO({e})")
            return Arg("bytes", h)
        if k == 25 and chain:
            if _parses(x):
                return Arg("Chain", f"impl.Chain.from_bytes({h})")
            return Arg("bytes", h)
        if k == 27:
            # A Chain object where any bytes-like is expected (its content replaces x).
            c = self.pick(CHAINS)
            return Arg("Chain(any bytes-like)", f"impl.Chain.from_bytes({H(c)})", H(c))
        if k == 26:
            # 2-d column view of a 2-d array: neither C- nor F-contiguous when n > 1.
            e = f"np.frombuffer({H(_interleave(x))}, np.uint8).reshape({n}, 2)[:, 0]"
            return Arg("np.uint8-2d[:,0]", e)
        return Arg("bytes", h)

    # -- offsets ------------------------------------------------------------

    def offsets(self, bounds: list[int], size: int) -> Arg:
        return self._offsets(bounds, size)._replace(plain=repr(bounds))

    def _offsets(self, bounds: list[int], size: int) -> Arg:
        vals: list[Any] = list(bounds)
        c = self.num(0, 11)
        tag = "valid"
        if c == 4 and vals:
            vals[0] = -self.num(1, 3)
            tag = "negative"
        elif c == 5 and len(vals) >= 2:
            i = self.num(1, len(vals) - 1)
            vals[i] = vals[i - 1] - self.num(1, 2)
            tag = "decreasing"
        elif c == 6 and vals:
            vals[-1] = size + self.num(1, 5)
            tag = "past-end"
        elif c == 7 and vals:
            vals[self.num(0, len(vals) - 1)] = self.pick([2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**64 + 1, -(2**63), -(2**63) - 1, 2**100])
            tag = "huge"
        elif c == 8:
            vals = []
            tag = "empty"
        elif c == 9 and len(vals) >= 2 and vals[0] < vals[1]:
            vals[0] += 1
            tag = "start>0"
        elif c == 10 and vals:
            vals = vals + vals[-1:]
            tag = "repeated-last"
        elif c == 11 and vals:
            vals = [vals[0]] + [min(v + 1, size) for v in vals[1:]]
            tag = "shifted"
        form = self.num(0, 17)
        if form <= 3:
            return Arg(f"list[{tag}]", repr(vals))
        if form == 4:
            return Arg(f"tuple[{tag}]", repr(tuple(vals)))
        if form == 5:
            return Arg(f"generator[{tag}]", f"(v for v in {vals!r})")
        if form == 6:
            if not vals:
                return Arg("list[empty]", "[]")
            i = self.num(0, len(vals) - 1)
            alien, name = self.pick([
                (f"float({vals[i]!r})", "float"), ("'0'", "str"), ("None", "None"),
                (f"np.int64({vals[i]})" if -(2**63) <= vals[i] < 2**63 else repr(vals[i]), "np.int64"),
                (f"np.uint8({vals[i] % 256})", "np.uint8"),
                (repr(bool(vals[i])), "bool"),
                (f"np.float64({float(vals[i])!r})", "np.float64"),
            ])
            items = [repr(v) for v in vals]
            items[i] = alien
            return Arg(f"list[{tag},+{name}]", "[" + ", ".join(items) + "]")
        if form == 7:
            src = _range_src(vals)
            return Arg("range" if src.startswith("range") else f"list[{tag}]", src)
        dt = self.pick(["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                        "float64", "bool", "object", "int64", "int32"])
        wrapped = [_wrap(v, dt) for v in vals]
        base = f"np.array({wrapped!r}, dtype=np.{dt})" if dt != "object" else f"np.array({vals!r}, dtype=object)"
        lay = self.num(0, 6)
        if lay == 0:
            return Arg(f"np.{dt}[{tag}],rw", base)
        if lay == 1:
            return Arg(f"np.{dt}[{tag}],ro", f"RO({base})")
        if lay == 2:
            return Arg(f"np.{dt}-2d(1,n)[{tag}]", f"{base}.reshape(1, -1)")
        if lay == 3:
            return Arg(f"np.{dt}[::2][{tag}]", f"np.repeat({base}, 2)[::2]")
        if lay == 4:
            rev = f"np.array({wrapped[::-1]!r}, dtype=np.{dt})" if dt != "object" else f"np.array({vals[::-1]!r}, dtype=object)"
            return Arg(f"np.{dt}[::-1][{tag}]", f"{rev}[::-1]")
        if lay == 5:
            return Arg(f"np.{dt}-0d", f"np.array({wrapped[0] if wrapped else 0!r}, dtype=np.{dt})"
                       if dt != "object" else "np.array(0, dtype=object)")
        return Arg(f"np.{dt}-2d-F(n,1)[{tag}]", f"np.asfortranarray({base}.reshape(-1, 1))")

    # -- batches ------------------------------------------------------------

    def contents(self, pool: list[bytes], hi: int = 4) -> list[bytes]:
        return [self.content(pool) for _ in range(self.num(0, hi))]

    def vbatch(self, items: list[bytes], chain: bool = False, offsets_ok: bool = True) -> tuple[Arg, Optional[Arg]]:
        """A variable-width batch: a list of items, or one buffer + offsets."""
        m = self.num(0, 10)
        as_list = "[" + ", ".join(H(x) for x in items) + "]"
        if m <= 3 or (m in (4, 5, 6, 7, 8) and not offsets_ok):
            args = [self.buffer(x, chain=chain) for x in items]
            return container(self.pick(["list", "list", "tuple", "generator"]), args), None
        data = b"".join(items)
        if m in (4, 5, 6, 7):
            bounds = [0]
            for x in items:
                bounds.append(bounds[-1] + len(x))
            buf = self.buffer(data, wrong=self.num(0, 7) == 0)
            return buf, self.offsets(bounds, len(data))
        if m == 8:
            return (Arg("list+offsets", as_list, H(data)),
                    Arg("list[valid]", repr(list(range(len(items) + 1)))))
        if m == 9:
            b = self.buffer(data, wrong=False)
            return Arg("lone:" + b.label, b.src, as_list), None
        return self.wrong()._replace(plain=as_list), None

    def fbatch(self, items: list[bytes], width: int) -> Arg:
        """A fixed-width batch (signatures 64, keys 32): a list, or one buffer of n * width bytes."""
        m = self.num(0, 7)
        as_list = "[" + ", ".join(H(x) for x in items) + "]"
        if m <= 2:
            return container(["list", "tuple", "generator"][m], [self.buffer(x) for x in items])
        data = b"".join(items)
        if m <= 5 or len(data) % width:
            return self.buffer(data)._replace(plain=as_list)
        rows = len(data) // width
        base = f"np.frombuffer({H(data)}, np.uint8).reshape({rows}, {width})"
        lay = self.num(0, 4)
        if lay == 0:
            return Arg(f"np.uint8(n,{width}),ro", base, as_list)
        if lay == 1:
            return Arg(f"np.uint8(n,{width}),rw", f"{base}.copy()", as_list)
        if lay == 2:
            return Arg(f"np.uint8(n,{width})-F", f"np.asfortranarray({base})", as_list)
        if lay == 3:
            return Arg(f"np.uint8(n,{width})[::2 rows]", f"np.repeat({base}, 2, axis=0)[::2]", as_list)
        rev = H(b"".join(items[::-1]))
        return Arg(f"np.uint8(n,{width})[::-1]", f"np.frombuffer({rev}, np.uint8).reshape({rows}, {width})[::-1]",
                   as_list)

    def keyset(self, pool: list[bytes], size: int) -> Arg:
        m = self.num(0, 9)
        if m == 9:
            return self.wrong()._replace(plain="[]")
        if m == 8:
            odd: Arg = self.pick([Arg("one-key-bytes", H(pool[0]), "[]"), Arg("str", "'k'", "[]"),
                                  Arg("dict", "{%s: 1}" % H(pool[0]), f"[{H(pool[0])}]")])
            return odd
        keys = []
        for _ in range(self.num(0, 3)):
            c = self.num(0, 5)
            if c <= 3:
                keys.append(self.pick(pool))
            elif c == 4:
                keys.append(self.take(size).ljust(size, b"\0"))
            else:
                keys.append(self.raw(size + 2))
        as_list = "[" + ", ".join(H(k) for k in keys) + "]"
        if m == 7:
            return Arg("frozenset[bytes]", "frozenset(" + as_list + ")", as_list)
        return container(["list", "list", "list", "list", "list", "tuple", "generator"][m], [self.buffer(k) for k in keys])

    def session(self) -> Arg:
        m = self.num(0, 3)
        if m == 0:
            return Arg("None", "None", "None")
        if m == 3:
            a = self.buffer(self.raw(18))
        else:
            a = self.buffer(self.pick([S1, S2, b"\0" * 16]))
        return a if a.plain is None or not a.label.startswith("wrong") else a._replace(plain="None")

    def scalar(self, what: str) -> Arg:
        """An integer argument: now, skew, replay_window, cache_size, threads."""
        common = [
            ("zero", "0"), ("neg", "-1"), ("u64max", "2**64-1"), ("2**64", "2**64"), ("2**63", "2**63"),
            ("i64min-1", "-2**63-1"), ("float", "1.0"), ("bool", "True"), ("str", "'1'"), ("None", "None"),
            ("np.int64", "np.int64(2)"), ("np.uint64-max", "np.uint64(2**64-1)"), ("np.float64", "np.float64(2.0)"),
            ("np.int8-neg", "np.int8(-1)"), ("np.bool", "np.bool_(True)"),
        ]
        if self.num(0, 2) < 2:
            normal = {
                "now": [("NOW", "NOW"), ("NOW+k", f"NOW+{self.num(-40, 40)}"), ("NOW-3600", "NOW-3600")],
                "skew": [("30", "30"), ("small", str(self.num(0, 40)))],
                "replay_window": [("300", "300"), ("small", str(self.num(0, 100)))],
                "cache_size": [("default", "100000"), ("small", str(self.num(0, 3)))],
                "threads": [("None", "None"), ("1", "1"), ("2", "2"), ("4", "4")],
            }[what]
            label, src = self.pick(normal)
        else:
            label, src = self.pick(common)
        plain = {"now": "NOW", "skew": "30", "replay_window": "300", "cache_size": "100000", "threads": "None"}[what]
        return Arg(f"{what}:{label}", src, plain)

    def text(self) -> Arg:
        t = self.pick(TEXTS) if self.num(0, 3) else hopgate.to_text(self.raw(48))
        m = self.num(0, 12)
        tag = "valid"
        if m == 1 and t:
            t = t[:-1]
            tag = "truncated"
        elif m == 2:
            t += self.pick(["=", "==", " ", "\n", "+", "/", ".", "\x00", "\u00e9", "\ud800", "A", "AA"])
            tag = "appended"
        elif m == 3 and t:
            i = self.num(0, len(t) - 1)
            t = t[:i] + self.pick(["=", " ", "+", "/", "\u00e9", "\u0661", "\ud800"]) + t[i + 1 :]
            tag = "replaced"
        elif m == 4 and t:
            # change the last character, perhaps only in its padding bits
            t = t[:-1] + self.pick("ABCDEFGHabcdwxyz0189-_")
            tag = "last-char"
        elif m == 5:
            return Arg("bytes-text", f"{_ascii(t)!r}", repr(t))
        elif m == 6:
            return Arg("bytearray-text", f"bytearray({_ascii(t)!r})", repr(t))
        elif m == 7:
            return self.wrong()._replace(plain=repr(t))
        elif m == 8:
            return Arg("memoryview-text", f"memoryview({_ascii(t)!r})", repr(t))
        return Arg(f"str[{tag}]", repr(t))


def _ascii(t: str) -> bytes:
    return t.encode("utf-8", "surrogatepass")


def _wrap(v: int, dt: str) -> Any:
    if dt == "float64":
        return float(v)
    if dt == "bool":
        return bool(v)
    if dt == "object":
        return v
    bits = int("".join(ch for ch in dt if ch.isdigit()))
    v %= 1 << bits
    if not dt.startswith("u") and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


def _range_src(vals: list[int]) -> str:
    if len(vals) >= 2 and all(vals[i + 1] - vals[i] == vals[1] - vals[0] for i in range(len(vals) - 1)) and vals[1] > vals[0]:
        return f"range({vals[0]}, {vals[-1] + 1}, {vals[1] - vals[0]})"
    return repr(vals)


def _parses(x: bytes) -> bool:
    for mod in (hopgate, hopgate.reference):
        try:
            mod.Chain.from_bytes(x)
        except Exception:
            return False
    return True


# ---------------------------------------------------------------------------
# Operations: each turns the builder into (op name, [(name, Arg)], call source)
# ---------------------------------------------------------------------------

Program = tuple[str, list[tuple[str, Arg]], str]


def op_verify(b: Builder) -> Program:
    m, s, p = b.pick(TRIPLES)
    if b.num(0, 3) == 3:
        m = b.content(MSGS)
    if b.num(0, 3) == 3:
        s = b.content(SIG_PARTS)
    if b.num(0, 3) == 3:
        p = b.content(PK_PARTS)
    args = [("msg", b.buffer(m)), ("sig", b.buffer(s)), ("pk", b.buffer(p))]
    return "verify", args, f"out = impl.verify(msg, sig, pk{b.rule()})"


def op_verify_batch(b: Builder) -> Program:
    triples = [b.pick(TRIPLES) for _ in range(b.num(0, 4))]
    msgs = [m if b.num(0, 3) < 3 else b.content(MSGS) for m, _, _ in triples]
    sigs = [s if b.num(0, 3) < 3 else b.content(SIG_PARTS) for _, s, _ in triples]
    pks = [p if b.num(0, 3) < 3 else b.content(PK_PARTS) for _, _, p in triples]
    if b.num(0, 7) == 7 and sigs:
        sigs.pop()
    data, offs = b.vbatch(msgs)
    args = [("msgs", data), ("sigs", b.fbatch(sigs, 64)), ("pks", b.fbatch(pks, 32))]
    rule = b.rule()
    call = f"out = impl.verify_batch(msgs, sigs, pks{rule})"
    if offs is not None:
        args.append(("offsets", offs))
        call = f"out = impl.verify_batch(msgs, sigs, pks, offsets=offsets{rule})"
    return "verify_batch", args, call


def op_verify_chains(b: Builder) -> Program:
    data, offs = b.vbatch(b.contents(CHAINS), chain=True)
    args = [("chains", data), ("trusted", b.keyset(ISSUER_PKS, 32))]
    kw = []
    if b.flip():
        args.append(("now", b.scalar("now")))
        kw.append("now=now")
    if b.flip():
        args.append(("session", b.session()))
        kw.append("session=session")
    if b.flip():
        args.append(("revoked", b.keyset(REVOKE_IDS, 32)))
        kw.append("revoked=revoked")
    if offs is not None:
        args.append(("offsets", offs))
        kw.append("offsets=offsets")
    return "verify_chains", args, f"out = impl.verify_chains({', '.join(['chains', 'trusted'] + kw)})"


def op_hash_many(b: Builder) -> Program:
    name = b.pick(["blake3_many", "sha256_many", "mac_many"])
    items = [b.raw(64) if b.num(0, 3) else b.content(CHAINS) for _ in range(b.num(0, 5))]
    data, offs = b.vbatch(items)
    args = [("data", data)]
    lead = "data"
    if name == "mac_many":
        key = b.raw(34) if b.num(0, 3) == 0 else b.take(32).ljust(32, b"k")
        args.insert(0, ("key", b.buffer(key)))
        lead = "key, data"
    if offs is not None:
        args.append(("offsets", offs))
        return name, args, f"out = impl.{name}({lead}, {'offsets=offsets' if b.flip() else 'offsets'})"
    return name, args, f"out = impl.{name}({lead})"


def op_blake3(b: Builder) -> Program:
    args = [("data", b.buffer(b.raw(200)))]
    if b.flip():
        args.append(("threads", b.scalar("threads")))
        return "blake3", args, "out = impl.blake3(data, threads=threads)"
    return "blake3", args, "out = impl.blake3(data)"


def op_chain_from_bytes(b: Builder) -> Program:
    return "Chain.from_bytes", [("data", b.buffer(b.content(CHAINS), chain=True))], "out = impl.Chain.from_bytes(data)"


def op_parse_invocation(b: Builder) -> Program:
    return "parse_invocation", [("data", b.buffer(b.content(INVS)))], "out = impl.parse_invocation(data)"


def op_text(b: Builder) -> Program:
    m = b.num(0, 3)
    if m == 0:
        return "to_text", [("data", b.buffer(b.content(CHAINS + INVS)))], "out = impl.to_text(data)"
    if m == 1:
        return "Chain.from_text", [("text", b.text())], "out = impl.Chain.from_text(text)"
    if m == 2:
        return ("Chain.to_text", [("data", b.buffer(b.pick(CHAINS)))],
                "out = impl.Chain.from_bytes(data).to_text()")
    return "from_text", [("text", b.text())], "out = impl.from_text(text)"


def _gate_request(b: Builder) -> tuple[bytes, bytes]:
    if b.num(0, 2) < 2:
        c, i = b.pick(PAIRS)
    else:
        c, i = b.pick(CHAINS), b.pick(INVS)
    if b.num(0, 3) == 3:
        c = b.content([c])
    if b.num(0, 3) == 3:
        i = b.content([i])
    return c, i


def op_gate(b: Builder) -> Program:
    args: list[tuple[str, Arg]] = [("trusted", b.keyset(ISSUER_PKS, 32))]
    kw = []
    for name in ("skew", "replay_window", "cache_size"):
        if b.num(0, 3) == 0:
            args.append((name, b.scalar(name)))
            kw.append(f"{name}={name}")
    if b.num(0, 2) == 0:
        args.append(("session", b.session()))
        kw.append("session=session")
    if b.num(0, 2) == 0:
        args.append(("revoked", b.keyset(REVOKE_IDS, 32)))
        kw.append("revoked=revoked")
    lines = [f"g = impl.Gate({', '.join(['trusted'] + kw)})", "out = []"]
    for step in range(b.num(1, 3)):
        if b.flip():
            c, i = _gate_request(b)
            args.append((f"chain{step}", b.buffer(c, chain=True)))
            args.append((f"inv{step}", b.buffer(i)))
            args.append((f"now{step}", b.scalar("now")))
            lines.append(f"out.append(D(g.check(chain{step}, inv{step}, now=now{step})))")
        else:
            reqs = [_gate_request(b) for _ in range(b.num(0, 4))]
            cs, _ = b.vbatch([c for c, _ in reqs], chain=True, offsets_ok=False)
            inv_items = [i for _, i in reqs]
            if b.num(0, 7) == 7 and inv_items:
                inv_items.pop()
            is_, _ = b.vbatch(inv_items, offsets_ok=False)
            args += [(f"chains{step}", cs), (f"invs{step}", is_), (f"now{step}", b.scalar("now"))]
            rec = ", receipts=True" if b.num(0, 3) == 0 else ""
            lines.append(f"out.append(D(g.check_batch(chains{step}, invs{step}, now=now{step}{rec})))")
    return "Gate", args, "\n".join(lines)


OPS: list[Callable[[Builder], Program]] = [
    op_verify, op_verify_batch, op_verify_chains, op_hash_many, op_blake3,
    op_chain_from_bytes, op_parse_invocation, op_text, op_gate,
]


# ---------------------------------------------------------------------------
# Running a program on both sides and judging the outcomes
# ---------------------------------------------------------------------------

LINK_FIELDS = ("kind", "issuer", "session_id", "prev_sig", "holder", "not_before", "not_after", "max_depth",
               "budget", "unit", "nonce", "caps", "meta_digest", "body", "signature")
INV_FIELDS = ("tail_sig", "ability", "resource", "cost", "timestamp", "nonce", "payload_digest", "body", "signature")
CHAIN_TYPES = (hopgate.Chain, hopgate.reference.Chain)
INV_TYPES = (hopgate.Invocation, hopgate.reference.Invocation)


def normalize(o: Any) -> Any:
    """A plain, comparable value for a result of either implementation."""
    if isinstance(o, np.ndarray):
        return ("ndarray", o.dtype.str, o.shape, o.tobytes())
    if isinstance(o, (bool, np.bool_)):
        return ("bool", type(o).__name__, bool(o))
    if o is None or isinstance(o, (bytes, str, int)):
        return (type(o).__name__, o)
    if isinstance(o, CHAIN_TYPES):
        return ("Chain", bytes(o), len(o), o.digest, tuple(o.revocation_ids), o.issuer, o.holder, o.session_id,
                o.tail_signature, o.to_text(),
                tuple(tuple(normalize(getattr(link, f)) for f in LINK_FIELDS) for link in o.links))
    if isinstance(o, INV_TYPES):
        return ("Invocation",) + tuple(normalize(getattr(o, f)) for f in INV_FIELDS)
    if isinstance(o, (list, tuple)):
        return ("seq", tuple(normalize(x) for x in o))
    return ("other", type(o).__name__, repr(o))


class Outcome(NamedTuple):
    ok: bool
    value: Any  # normalized result, or the exception
    name: str  # "ok" or the exception class


def _exc_name(e: BaseException) -> str:
    t = type(e)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


class HarnessError(Exception):
    """An argument expression failed to evaluate: a bug in this fuzzer, not in hopgate."""


def run_one(impl: Any, args: list[tuple[str, Arg]], call: str) -> Outcome:
    env = dict(BASE_ENV)
    env["impl"] = impl
    for name, a in args:
        try:
            env[name] = eval(a.src, env)  # noqa: S307 - expressions this file generated
        except Exception as e:
            raise HarnessError(f"argument {name} = {a.src[:300]}: {e!r}") from e
    try:
        exec(compile(call, "<call>", "exec"), env)  # noqa: S102
        return Outcome(True, normalize(env["out"]), "ok")
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - PanicException derives from BaseException
        return Outcome(False, e, _exc_name(e))


def allowed_exception(e: BaseException) -> bool:
    return isinstance(e, hopgate.HopgateError) or type(e) in (TypeError, ValueError, OverflowError)


def judge(nat: Outcome, ref: Outcome) -> list[str]:
    """The finding categories of one program (empty: both sides agree)."""
    cats = []
    for o in (nat, ref):
        if not o.ok and not allowed_exception(o.value):
            cats.append("unexpected-exception")
            break
    if nat.ok and ref.ok:
        if nat.value != ref.value:
            cats.append("result-mismatch")
    elif nat.ok != ref.ok:
        cats.append("outcome-mismatch")
    elif type(nat.value) is not type(ref.value):
        cats.append("class-mismatch")
    return cats


def run_both(args: list[tuple[str, Arg]], call: str) -> tuple[Outcome, Outcome, list[str]]:
    nat = run_one(hopgate, args, call)
    ref = run_one(hopgate.reference, args, call)
    return nat, ref, judge(nat, ref)


def minimize(args: list[tuple[str, Arg]], call: str, nat: Outcome, ref: Outcome,
             cats: list[str]) -> tuple[list[tuple[str, Arg]], Outcome, Outcome, list[str]]:
    """Make every argument plain (same content, ordinary form) that is not needed for
    the finding, first whole arguments, then the items of list arguments; what keeps
    its label is what the finding is about."""
    want = (cats, nat.name, ref.name)
    args = list(args)
    strict = True

    def attempt(i: int, new: Arg) -> bool:
        nonlocal args, nat, ref, cats
        trial = args[:i] + [(args[i][0], new)] + args[i + 1 :]
        n, r, c = run_both(trial, call)
        if (c, n.name, r.name) != want if strict else not c:
            return False
        args, nat, ref, cats = trial, n, r, c
        return True

    # First keep the very same finding; then any finding (a program with two unrelated
    # disagreements, one per argument, is reduced to one of them).
    for strict in (True, False):
        for i in range(len(args)):
            a = args[i][1]
            if a.plain is not None and a.plain != a.src and attempt(i, Arg("", a.plain)):
                continue
            if a.kind and a.kind != "list":
                attempt(i, container("list", list(a.items), a.plain))
            for j in range(len(a.items)):
                new = plain_item(args[i][1], j)
                if new is not None:
                    attempt(i, new)
    return args, nat, ref, cats


def ordinary(a: Arg) -> bool:
    """Whether an argument is in its plain form (not worth naming in a finding's shape)."""
    if a.label in ("", "bytes") or (a.plain is not None and a.plain == a.src):
        return True
    return a.kind == "list" and all(ordinary(item) for item in a.items)


def label_of(a: Arg) -> str:
    if a.kind:  # a container: its form and the shapes of its unusual items
        return f"{a.kind}[" + ",".join(sorted({label_of(i) for i in a.items if not ordinary(i)})) + "]"
    return a.label


def shape_of(args: list[tuple[str, Arg]]) -> str:
    return " ".join(f"{n}={label_of(a)}" for n, a in args if not ordinary(a)) or "(plain arguments)"


def repro(args: list[tuple[str, Arg]], call: str) -> str:
    body = "\n".join(f"{n} = {a.src}" for n, a in args) + "\n" + call
    inner = "\n".join("        " + line for line in body.splitlines())
    return (PRELUDE + "for impl in (hopgate, hopgate.reference):\n    try:\n" + inner +
            "\n        print(impl.__name__, '->', out)\n"
            "    except BaseException as e:\n        print(impl.__name__, 'raised', type(e).__name__, e)\n")


def _short(o: Outcome) -> str:
    if o.ok:
        return repr(o.value)[:400]
    return f"{o.name}: {o.value}"[:400]


class Finding(AssertionError):
    pass


# ---------------------------------------------------------------------------
# Collect mode: one record per distinct (category, op, shape, native, reference)
# ---------------------------------------------------------------------------

COLLECT = os.environ.get("HOPGATE_FUZZ_COLLECT", "") not in ("", "0")
OUT_PATH = os.environ.get("HOPGATE_FUZZ_OUT", "fuzz-findings.jsonl")
_found: dict[tuple[str, ...], dict[str, Any]] = {}
_stats: collections.Counter[str] = collections.Counter()  # programs run (and findings) per operation
_started = time.time()
_last_write = 0.0


def _write(force: bool = False) -> None:
    global _last_write
    now = time.monotonic()
    if not force and now - _last_write < 5:
        return
    _last_write = now
    tmp = OUT_PATH + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in sorted(_found.values(), key=lambda r: (r["op"], r["category"], r["native"], r["reference"], r["shape"])):
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")
    os.replace(tmp, OUT_PATH)
    stats = {"seconds": round(time.time() - _started), "programs": sum(v for k, v in _stats.items() if ":" not in k),
             "per_op": dict(sorted(_stats.items()))}
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    os.replace(tmp, OUT_PATH + ".stats.json")


def record(cats: list[str], op: str, args: list[tuple[str, Arg]], call: str, nat: Outcome, ref: Outcome) -> None:
    shape = shape_of(args)
    key = ("+".join(cats), op, shape, nat.name, ref.name)
    rep = repro(args, call)
    rec = _found.get(key)
    if rec is None:
        _found[key] = {
            "category": key[0], "op": op, "shape": shape, "native": nat.name, "reference": ref.name,
            "native_detail": _short(nat), "reference_detail": _short(ref), "count": 1, "repro": rep,
        }
        _write(force=True)
        sys.stderr.write(f"\n[hopgate-fuzz] new finding #{len(_found)}: {key[0]} {op} native={nat.name} "
                         f"reference={ref.name} :: {shape}\n")
        return
    rec["count"] += 1
    if len(rep) < len(rec["repro"]):
        rec.update(repro=rep, native_detail=_short(nat), reference_detail=_short(ref))
    _write()


if COLLECT:
    import atexit

    atexit.register(lambda: _write(force=True))

    if BUILDER_MISMATCH:
        _found[("builder-mismatch",)] = {
            "category": "builder-mismatch", "op": "Chain.grant/delegate/invoke", "shape": "", "native": "",
            "reference": "", "native_detail": "", "reference_detail": "", "count": 1,
            "repro": "the pool built with hopgate and with hopgate.reference differs (see _build in fuzz_api.py)",
        }
        _write(force=True)
elif BUILDER_MISMATCH:
    raise Finding("Chain.grant/delegate/invoke build different bytes in hopgate and hopgate.reference "
                  "(same keys, nonces and timestamps; see _build in fuzz_api.py)")


def build(data: bytes) -> Program:
    b = Builder(data)
    return OPS[b.num(0, len(OPS) - 1)](b)


def TestOneInput(data: bytes) -> None:
    op, args, call = build(data)
    nat, ref, cats = run_both(args, call)
    _stats[op] += 1
    if COLLECT:
        _write()
    if not cats:
        return
    _stats[op + ":finding"] += 1
    args, nat, ref, cats = minimize(args, call, nat, ref, cats)
    if COLLECT:
        record(cats, op, args, call, nat, ref)
        return
    raise Finding(
        f"{'+'.join(cats)} in {op} ({shape_of(args)})\n  native:    {_short(nat)}\n  reference: {_short(ref)}\n"
        f"--- reproducer ---\n{repro(args, call)}"
    ) from (nat.value if isinstance(nat.value, BaseException) else None)


# ---------------------------------------------------------------------------
# Command line helpers
# ---------------------------------------------------------------------------


def describe(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        op, args, call = build(data)
        nat, ref, cats = run_both(args, call)
        if cats:
            args, nat, ref, cats = minimize(args, call, nat, ref, cats)
        print(f"=== {path}: {op} [{'+'.join(cats) or 'agree'}] {shape_of(args)}")
        print(f"native:    {_short(nat)}\nreference: {_short(ref)}")
        print(repro(args, call))


def summary(path: str) -> None:
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            groups.setdefault((rec["category"], rec["op"], rec["native"], rec["reference"]), []).append(rec)
    for (cat, op, nat, ref), recs in sorted(groups.items()):
        hits = sum(r["count"] for r in recs)
        print(f"{cat:22} {op:18} native={nat:32} reference={ref:32} shapes={len(recs)} hits={hits}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--describe":
        describe(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--summary":
        summary(sys.argv[2] if len(sys.argv) > 2 else OUT_PATH)
        return
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
