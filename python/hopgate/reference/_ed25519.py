"""Ed25519 for the reference: SPEC §3's signature rules, signing keys, batch verify.

``rule="strict"`` (the default) is hopgate's own rule, built below. The drop-in rules
are the libraries themselves: ``rule="libsodium"`` asks PyNaCl and ``rule="openssl"``
asks pyca/cryptography, so the reference answers as they do by construction.

SPEC §3.1 (the strict rule) accepts a signature iff A (the public key) and R are
canonical encodings of curve points, neither is of small order, S < L, and the
*cofactored* equation ``[8][S]B == [8]R + [8][k]A`` holds with
``k = SHA-512(R || A || M) mod L``.

libsodium (through PyNaCl) checks the *cofactorless* equation
``[S]B == R + [k]A`` and a slightly different set of encoding rules. So this
module does the encoding checks itself, in Python, before asking libsodium, and
when libsodium says no it decides the cofactored equation itself with a small
pure-Python Edwards25519 implementation. That way the answer is SPEC §3's on
every input, including the mixed-order keys of "Taming the many EdDSAs" where
the two equations disagree.
"""

from __future__ import annotations

import hashlib
import operator
from collections import OrderedDict
from typing import Callable, Dict, Literal, Optional, Tuple

import nacl.bindings
import nacl.exceptions
import nacl.signing
import numpy as np
import numpy.typing as npt

from .._key_cache import KeyCacheInfo
from ..errors import InputError
from ._batch import as_bytes, batch_items, fixed_items

__all__ = [
    "PUBLIC_KEY_LEN",
    "SIGNATURE_LEN",
    "SEED_LEN",
    "SigningKey",
    "verify",
    "verify_batch",
    "DEFAULT_KEY_CACHE_CAPACITY",
    "key_cache_clear",
    "key_cache_info",
    "key_cache_resize",
]

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
SEED_LEN = 32

# The names ``rule=`` takes (SPEC §3): hopgate's own, then the two drop-in rules.
Rule = Literal["strict", "libsodium", "openssl"]

# ---------------------------------------------------------------------------
# Edwards25519 arithmetic (RFC 8032 §5.1), integers mod p, extended coordinates.
# Only used for the decisions libsodium cannot make for us: decoding with the
# canonical checks, the small-order test and the cofactored equation.
# ---------------------------------------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

# (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z.
_Point = Tuple[int, int, int, int]

_IDENTITY: _Point = (0, 1, 1, 0)


def _add(p: _Point, q: _Point) -> _Point:
    # RFC 8032 §5.1.4; the formula is complete, so it also doubles.
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * _D * t1 * t2 % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p: _Point) -> _Point:
    x1, y1, z1, _ = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1)
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _negate(p: _Point) -> _Point:
    x, y, z, t = p
    return (-x % _P, y, z, -t % _P)


def _mul(scalar: int, p: _Point) -> _Point:
    # Variable-time double-and-add: everything here is public (verification).
    result = _IDENTITY
    for bit in bin(scalar)[2:]:
        result = _double(result)
        if bit == "1":
            result = _add(result, p)
    return result


def _is_identity(p: _Point) -> bool:
    x, y, z, _ = p
    return x % _P == 0 and (y - z) % _P == 0


def _decode_point(encoding: bytes) -> Optional[_Point]:
    """RFC 8032 §5.1.3 decoding, refusing every non-canonical encoding.

    Non-canonical means y >= p, or x = 0 with the sign bit set (only the points
    y = 1 and y = p - 1 have x = 0). Returns None for those and for y values
    that are not on the curve.
    """
    value = int.from_bytes(encoding, "little")
    sign = value >> 255
    y = value & ((1 << 255) - 1)
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vxx = v * x * x % _P
    if vxx == u:
        pass
    elif vxx == -u % _P:
        x = x * _SQRT_M1 % _P
    else:
        return None
    if x == 0 and sign == 1:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _is_small_order(p: _Point) -> bool:
    # The small-order points are exactly those that [8] sends to the identity.
    return _is_identity(_double(_double(_double(p))))


def _base_point() -> _Point:
    point = _decode_point((4 * pow(5, -1, _P) % _P).to_bytes(32, "little"))
    assert point is not None
    return point


_B = _base_point()


def _cofactored_equation(msg: bytes, sig: bytes, pk: bytes, a: _Point, r: _Point) -> bool:
    """``[8]([S]B - R - [k]A) == O``, the same as ``[8][S]B == [8]R + [8][k]A``."""
    s = int.from_bytes(sig[32:], "little")
    k = int.from_bytes(hashlib.sha512(sig[:32] + pk + msg).digest(), "little") % _L
    # [k]A is not reduced further: A may carry a torsion component, and the
    # final [8] is what removes it.
    difference = _add(_add(_mul(s, _B), _negate(r)), _negate(_mul(k, a)))
    return _is_identity(_double(_double(_double(difference))))


def _in_prime_order_subgroup(encoding: bytes) -> bool:
    """Whether libsodium places a (canonical, not small-order) point in <B>."""
    if not nacl.bindings.has_crypto_core_ed25519:
        return False
    return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(encoding))


class _KeyCache:
    """Public keys decoded and checked by the strict rule (``_decode_point`` and the
    small-order test), remembered by their 32 bytes: least recently used first out."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys: OrderedDict[bytes, Optional[_Point]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def decoded(self, pk: bytes) -> Optional[_Point]:
        if pk in self.keys:
            self.hits += 1
            self.keys.move_to_end(pk)
            return self.keys[pk]
        self.misses += 1
        a = _decode_point(pk)
        if a is not None and _is_small_order(a):
            a = None
        if self.capacity:
            self.keys[pk] = a
            while len(self.keys) > self.capacity:
                self.keys.popitem(last=False)
        return a


DEFAULT_KEY_CACHE_CAPACITY = 1 << 16
_KEYS = _KeyCache(DEFAULT_KEY_CACHE_CAPACITY)


def key_cache_info() -> KeyCacheInfo:
    """The cache of decoded public keys (the strict rule's key checks, in Python here)."""
    return KeyCacheInfo(_KEYS.hits, _KEYS.misses, len(_KEYS.keys), _KEYS.capacity)


def key_cache_clear() -> None:
    """Empties the cache of decoded public keys and zeroes its counters."""
    _KEYS.keys.clear()
    _KEYS.hits = _KEYS.misses = 0


def key_cache_resize(capacity: object) -> None:
    """Sets how many decoded public keys the cache holds at most (0: off) and empties it."""
    try:
        value = operator.index(capacity)  # type: ignore[arg-type]
    except TypeError:
        value = -1
    if not 0 <= value < 2**64:
        raise InputError("capacity: expected an integer in 0 <= capacity < 2**64")
    _KEYS.capacity = value
    key_cache_clear()


def _verify_bytes(msg: bytes, sig: bytes, pk: bytes) -> bool:
    if len(sig) != SIGNATURE_LEN or len(pk) != PUBLIC_KEY_LEN:
        return False
    a = _KEYS.decoded(pk)
    r = _decode_point(sig[:32])
    if a is None or r is None:
        return False
    if _is_small_order(r):
        return False
    if int.from_bytes(sig[32:], "little") >= _L:
        return False
    try:
        # libsodium checks [S]B == R + [k]A; multiplying both sides by 8 gives
        # the cofactored equation, so its acceptance is ours too.
        nacl.signing.VerifyKey(pk).verify(msg, sig)
        return True
    except nacl.exceptions.BadSignatureError:
        pass
    # When A and R both lie in the prime-order subgroup, [S]B - R - [k]A does
    # too, and there [8]P == O only for P == O: the two equations agree, so
    # libsodium's "no" is final. This skips the slow pure-Python check for
    # every ordinary bad signature.
    if _in_prime_order_subgroup(pk) and _in_prime_order_subgroup(sig[:32]):
        return False
    return _cofactored_equation(msg, sig, pk, a, r)


def _verify_libsodium(msg: bytes, sig: bytes, pk: bytes) -> bool:
    """PyNaCl's answer: libsodium's ``crypto_sign_open`` on ``sig || msg``."""
    if len(sig) != SIGNATURE_LEN or len(pk) != PUBLIC_KEY_LEN:
        return False
    try:
        nacl.bindings.crypto_sign_open(sig + msg, pk)
        return True
    except nacl.exceptions.BadSignatureError:
        return False


def _verify_openssl(msg: bytes, sig: bytes, pk: bytes) -> bool:
    """pyca/cryptography's answer: ``Ed25519PublicKey.verify`` (OpenSSL)."""
    # Imported here: the other rules, and the rest of the reference, do not need it.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(sig) != SIGNATURE_LEN or len(pk) != PUBLIC_KEY_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
        return True
    except InvalidSignature:
        return False


# What each ``rule=`` name calls, the default first.
_RULES: Dict[str, Callable[[bytes, bytes, bytes], bool]] = {
    "strict": _verify_bytes,
    "libsodium": _verify_libsodium,
    "openssl": _verify_openssl,
}


def _rule(rule: object) -> Callable[[bytes, bytes, bytes], bool]:
    """The check that ``rule`` names, else ``InputError`` listing the three names."""
    check = _RULES.get(rule) if isinstance(rule, str) else None
    if check is None:
        got = repr(rule) if isinstance(rule, str) else f"an object of type {type(rule).__name__}"
        raise InputError(f'invalid rule: expected "strict", "libsodium" or "openssl", got {got}')
    return check


def verify(msg: object, sig: object, pk: object, *, rule: Rule = "strict") -> bool:
    """Whether ``sig`` is a valid signature of ``msg`` by ``pk`` under ``rule``.

    ``rule`` is ``"strict"`` (SPEC §3.1, hopgate's rule), ``"libsodium"`` (what PyNaCl
    accepts) or ``"openssl"`` (what pyca/cryptography accepts); anything else raises
    ``InputError``. Returns False (never raises) when ``sig`` is not 64 bytes or ``pk``
    is not 32 bytes; raises ``InputError`` when an argument is not bytes-like.
    """
    check = _rule(rule)
    return check(as_bytes(msg, "msg"), as_bytes(sig, "sig"), as_bytes(pk, "pk"))


def verify_batch(
    msgs: object,
    sigs: object,
    pks: object,
    *,
    offsets: object | None = None,
    rule: Rule = "strict",
) -> npt.NDArray[np.bool_]:
    """``[verify(m, s, k, rule=rule) for m, s, k in zip(msgs, sigs, pks)]`` as a numpy
    bool array.

    ``msgs`` is a list of bytes-like objects, or one buffer with ``offsets``
    (n + 1 integers, Arrow layout). ``sigs`` and ``pks`` are lists of
    bytes-like objects or one buffer of n * 64 (n * 32) bytes, such as a numpy
    ``(n, 64)`` ``uint8`` array. Counts that do not agree raise ``InputError``.

    A plain loop: this is the baseline the native batch verifier is measured
    against, and by construction it answers exactly as ``verify`` does.
    """
    check = _rule(rule)
    messages = batch_items(msgs, offsets, "msgs")
    n = len(messages)
    signatures = fixed_items(sigs, n, SIGNATURE_LEN, "sigs")
    keys = fixed_items(pks, n, PUBLIC_KEY_LEN, "pks")
    return np.array(
        [check(m, s, k) for m, s, k in zip(messages, signatures, keys)],
        dtype=np.bool_,
    )


class SigningKey:
    """An Ed25519 signing key (RFC 8032), held by PyNaCl.

    A signing key is authority: it cannot be copied or pickled, and its repr
    shows only the public key. ``seed()`` is the explicit way to export it.
    """

    __slots__ = ("_key", "_public_key")

    def __init__(self, _key: nacl.signing.SigningKey) -> None:
        # Private: use generate() or from_seed().
        if not isinstance(_key, nacl.signing.SigningKey):
            raise InputError("use SigningKey.generate() or SigningKey.from_seed(seed)")
        self._key = _key
        self._public_key = bytes(_key.verify_key)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the operating system's random generator."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: object) -> SigningKey:
        """The key whose 32-byte RFC 8032 secret (seed) is ``seed``."""
        raw = as_bytes(seed, "seed")
        if len(raw) != SEED_LEN:
            raise InputError(f"seed: expected {SEED_LEN} bytes, got {len(raw)}")
        return cls(nacl.signing.SigningKey(raw))

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key."""
        return self._public_key

    def sign(self, msg: object) -> bytes:
        """The 64-byte Ed25519 signature of ``msg``."""
        return bytes(self._key.sign(as_bytes(msg, "msg")).signature)

    def seed(self) -> bytes:
        """The 32-byte secret seed. Handle with care."""
        return bytes(self._key)

    def __repr__(self) -> str:
        return f"SigningKey(public_key={self._public_key.hex()})"

    def __copy__(self) -> SigningKey:
        raise TypeError("a SigningKey cannot be copied")

    def __deepcopy__(self, memo: object) -> SigningKey:
        raise TypeError("a SigningKey cannot be copied")

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a SigningKey cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> str | tuple[object, ...]:
        raise TypeError("a SigningKey cannot be pickled")
