"""A drop-in ``Ed25519PublicKey`` of pyca/cryptography, verified by hopgate's core.

Change one import::

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # before
    from hopgate.compat.cryptography import Ed25519PublicKey                          # after

``Ed25519PublicKey.from_public_bytes(data)`` then returns a key whose ``verify(signature,
data)`` returns None or raises ``cryptography.exceptions.InvalidSignature`` on exactly the
inputs cryptography's own key does: signatures are judged under ``rule="openssl"``
(SPEC §3.4), which accepts exactly what OpenSSL's Ed25519 accepts.

When cryptography is installed, the class is registered as a virtual subclass of
cryptography's ``Ed25519PublicKey``, so ``isinstance`` checks in libraries that take a key
object (PyJWT, joserfc, authlib, ...) accept it unchanged; it raises cryptography's own
``InvalidSignature``, and it compares equal to a cryptography key with the same bytes, in
both directions. Without cryptography it raises ``hopgate.compat._errors.InvalidSignature``
(a ``hopgate.HopgateError``), and ``public_bytes`` knows only the encodings it builds
itself: Raw/Raw, and DER or PEM SubjectPublicKeyInfo.

What differs from cryptography: the key is hashable (by its bytes), where cryptography's
key objects are not.
"""

from __future__ import annotations

import base64
import builtins
import hmac
from typing import TYPE_CHECKING, Any, Literal, Optional

from .. import verify as _verify
from ..errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey as _Base
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from typing_extensions import Buffer
else:
    # At run time the class is registered as a virtual subclass of cryptography's (below);
    # type checkers see it as a subclass, so code that passes it where cryptography's
    # Ed25519PublicKey is expected (jwt.decode, ...) type-checks unchanged.
    _Base = object

try:
    from cryptography.exceptions import InvalidSignature
except ImportError:  # cryptography is not installed: hopgate's stand-in
    from ._errors import InvalidSignature  # type: ignore[assignment]

try:
    from cryptography.hazmat.primitives import serialization as _serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519 as _ed25519
except ImportError:
    _serialization = None  # type: ignore[assignment]
    _ed25519 = None  # type: ignore[assignment]

__all__ = ["Ed25519PublicKey", "InvalidSignature", "Rule"]

# The signature rules of SPEC §3: the drop-in default, and the two others.
Rule = Literal["strict", "libsodium", "openssl"]

PUBLIC_KEY_LEN = 32
# DER of SubjectPublicKeyInfo for Ed25519 (RFC 8410 §4): SEQUENCE (42 bytes) {
# SEQUENCE { OID 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) }, then the key.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_LINE = 64


def _check_rule(rule: object) -> Rule:
    if rule == "strict" or rule == "libsodium" or rule == "openssl":
        return rule
    raise InputError(f'invalid rule: expected "strict", "libsodium" or "openssl", got {rule!r}')


def _buffer(value: object) -> Any:
    """``value`` if it is a buffer (as cryptography takes), else cryptography's TypeError.

    hopgate's verify refuses a non-buffer with ``InputError``; cryptography raises
    ``TypeError``, so the check is made here first.
    """
    if isinstance(value, bytes):
        return value
    try:
        return memoryview(value)  # type: ignore[arg-type]
    except builtins.TypeError:
        raise builtins.TypeError(
            f'Cannot convert "{type(value)}" instance to a buffer.\nDid you mean to pass a bytestring instead?'
        ) from None


def _spki_der(key: bytes) -> bytes:
    return _SPKI_PREFIX + key


def _spki_pem(key: bytes) -> bytes:
    body = base64.b64encode(_spki_der(key))
    lines = [body[i : i + _PEM_LINE] for i in range(0, len(body), _PEM_LINE)]
    return b"-----BEGIN PUBLIC KEY-----\n" + b"\n".join(lines) + b"\n-----END PUBLIC KEY-----\n"


class Ed25519PublicKey(_Base):
    """An Ed25519 public key with the API of cryptography's ``Ed25519PublicKey``.

    Build it with ``Ed25519PublicKey.from_public_bytes(data)``. ``rule`` picks the
    signature rule (SPEC §3): ``"openssl"``, the default, answers as cryptography does;
    ``"strict"`` is hopgate's own, ``"libsodium"`` PyNaCl's.
    """

    __slots__ = ("_key", "_rule")

    def __init__(self, data: bytes, *, rule: Rule = "openssl") -> None:
        self._rule: Rule = _check_rule(rule)
        if not isinstance(data, bytes):
            # cryptography's words (its argument must be bytes, not any buffer).
            what = "'None'" if data is None else f"'{type(data).__name__}' object"
            raise builtins.TypeError(f"{what} is not an instance of 'bytes'")
        if len(data) != PUBLIC_KEY_LEN:
            raise builtins.ValueError("An Ed25519 public key is 32 bytes long")
        # A subclass of bytes could carry state or override comparison; keep plain bytes.
        self._key = bytes(data)

    @classmethod
    def from_public_bytes(cls, data: bytes, *, rule: Rule = "openssl") -> Ed25519PublicKey:
        """The key whose raw encoding is ``data``: ``TypeError`` when it is not ``bytes``,
        ``ValueError`` when it is not 32 bytes long, as in cryptography. As there, any 32
        bytes make a key; an encoding that is not a valid point makes a key that verifies
        nothing."""
        return cls(data, rule=rule)

    @property
    def rule(self) -> Rule:
        """The signature rule ``verify`` applies."""
        return self._rule

    def verify(self, signature: Buffer, data: Buffer) -> None:
        """None if ``signature`` is a valid signature of ``data`` by this key under the
        key's rule; else ``InvalidSignature``. Both are any buffer (``TypeError`` for
        anything else); a signature that is not 64 bytes long is invalid."""
        sig = _buffer(signature)
        msg = _buffer(data)
        if not _verify(msg, sig, self._key, rule=self._rule):
            raise InvalidSignature

    def public_bytes_raw(self) -> bytes:
        """The key's 32 bytes: ``public_bytes(Encoding.Raw, PublicFormat.Raw)``."""
        return self._key

    def public_bytes(self, encoding: Encoding, format: PublicFormat) -> bytes:
        """The key serialized as ``encoding`` and ``format`` say.

        Raw/Raw, and DER or PEM SubjectPublicKeyInfo, are built here (the same bytes as
        cryptography's). Every other pair (OpenSSH, and those cryptography refuses) is
        handed to a cryptography key with the same bytes, which answers or raises as it
        would; without cryptography they raise ``ValueError``.
        """
        if _serialization is not None:
            enc, fmt = _serialization.Encoding, _serialization.PublicFormat
            if encoding == enc.Raw and format == fmt.Raw:
                return self._key
            if format == fmt.SubjectPublicKeyInfo and encoding == enc.DER:
                return _spki_der(self._key)
            if format == fmt.SubjectPublicKeyInfo and encoding == enc.PEM:
                return _spki_pem(self._key)
            return _ed25519.Ed25519PublicKey.from_public_bytes(self._key).public_bytes(encoding, format)
        names = (getattr(encoding, "name", encoding), getattr(format, "name", format))
        if names == ("Raw", "Raw"):
            return self._key
        if names == ("DER", "SubjectPublicKeyInfo"):
            return _spki_der(self._key)
        if names == ("PEM", "SubjectPublicKeyInfo"):
            return _spki_pem(self._key)
        raise builtins.ValueError(
            "without cryptography installed, only Raw/Raw and DER or PEM SubjectPublicKeyInfo are supported"
        )

    def __eq__(self, other: object) -> bool:
        # Equal to any Ed25519 public key with the same bytes, this class's or
        # cryptography's (whose own __eq__ defers to this one for a key it does not know).
        # The rule is how signatures are judged, not part of the key.
        if isinstance(other, Ed25519PublicKey):
            return hmac.compare_digest(self._key, other._key)
        if _ed25519 is not None and isinstance(other, _ed25519.Ed25519PublicKey):
            return hmac.compare_digest(self._key, other.public_bytes_raw())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key)

    def __copy__(self) -> Ed25519PublicKey:
        return self  # immutable, as cryptography's keys

    def __deepcopy__(self, memo: Optional[dict[int, object]]) -> Ed25519PublicKey:
        return self

    def __repr__(self) -> str:
        return f"<hopgate.compat.cryptography.Ed25519PublicKey {self._key.hex()} rule={self._rule!r}>"


if _ed25519 is not None:
    _ed25519.Ed25519PublicKey.register(Ed25519PublicKey)
