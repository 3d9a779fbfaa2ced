"""A drop-in ``nacl.signing.VerifyKey``: PyNaCl's API, verified by hopgate's core.

Change one import::

    from nacl.signing import VerifyKey          # before
    from hopgate.compat.nacl import VerifyKey   # after

and every ``VerifyKey(...)`` and ``verify(...)`` call keeps its meaning: the same
constructor (raw bytes or any PyNaCl encoder), the combined (``signature || message``,
for example a ``nacl.signing.SignedMessage``) and detached forms, the same return value,
and the same exception classes on the same inputs. Signatures are judged under
``rule="libsodium"`` (SPEC §3.4), which accepts exactly what libsodium's
``crypto_sign_open`` accepts, so a signature PyNaCl refuses is refused here too.

The exceptions are PyNaCl's own (``nacl.exceptions.BadSignatureError``,
``nacl.exceptions.ValueError``, ``nacl.exceptions.TypeError``) when PyNaCl is installed;
only ``nacl.exceptions``, a module of plain classes, is imported, never libsodium. Without
PyNaCl they are same-named classes from ``hopgate.compat._errors`` that derive from
``hopgate.HopgateError`` (and from ``ValueError`` or ``TypeError`` as PyNaCl's do).

What differs from PyNaCl:

* ``to_curve25519_public_key`` (Ed25519 to X25519 conversion) is not provided.
* Two keys are equal when their bytes are; as in PyNaCl a ``VerifyKey`` is never equal
  to a key of another class, so a PyNaCl key and a hopgate key with the same bytes compare
  unequal.
* ``verify_many`` is hopgate's addition: many messages checked in one batch call.
"""

from __future__ import annotations

import builtins
import hmac
from typing import Iterable, List, Literal, Optional, Protocol, Tuple, Union

from .. import verify as _verify
from .. import verify_batch as _verify_batch
from ..errors import InputError

try:
    from nacl.exceptions import BadSignatureError
    from nacl.exceptions import TypeError as _TypeError
    from nacl.exceptions import ValueError as _ValueError
except ImportError:  # PyNaCl is not installed: hopgate's stand-ins
    from ._errors import BadSignatureError  # type: ignore[assignment]
    from ._errors import TypeError as _TypeError  # type: ignore[assignment]
    from ._errors import ValueError as _ValueError  # type: ignore[assignment]

__all__ = ["BadSignatureError", "Encoder", "RawEncoder", "Rule", "VerifyKey"]

# The signature rules of SPEC §3: the drop-in default, and the two others.
Rule = Literal["strict", "libsodium", "openssl"]
_RULES: Tuple[str, ...] = ("strict", "libsodium", "openssl")

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
# PyNaCl's words, so that messages read the same whichever class raised them.
_FORGED = "Signature was forged or corrupt"


class Encoder(Protocol):
    """What PyNaCl's encoders are (``nacl.encoding.RawEncoder``, ``HexEncoder``,
    ``Base64Encoder``, ...): classes with static ``encode`` and ``decode``. The class
    itself is passed, not an instance."""

    @staticmethod
    def encode(data: bytes) -> bytes: ...

    @staticmethod
    def decode(data: bytes) -> bytes: ...


class RawEncoder:
    """The identity encoder, ``nacl.encoding.RawEncoder``'s twin (the default)."""

    @staticmethod
    def encode(data: bytes) -> bytes:
        return data

    @staticmethod
    def decode(data: bytes) -> bytes:
        return data


def _check_rule(rule: object) -> Rule:
    if rule == "strict" or rule == "libsodium" or rule == "openssl":
        return rule
    raise InputError(f'invalid rule: expected "strict", "libsodium" or "openssl", got {rule!r}')


class VerifyKey:
    """An Ed25519 public key with the API of ``nacl.signing.VerifyKey``.

    ``key`` is decoded with ``encoder`` (PyNaCl's encoder classes work as they are) and
    must then be ``bytes`` (else ``nacl.exceptions.TypeError``) of 32 bytes (else
    ``nacl.exceptions.ValueError``); whatever the encoder raises (``binascii.Error`` for
    bad hex, ...) propagates unchanged, as in PyNaCl. ``rule`` picks the signature rule
    (SPEC §3): ``"libsodium"``, the default, answers as PyNaCl does; ``"strict"`` is
    hopgate's own, ``"openssl"`` pyca/cryptography's.

    Not provided: ``to_curve25519_public_key``.
    """

    def __init__(self, key: bytes, encoder: Encoder = RawEncoder, *, rule: Rule = "libsodium") -> None:
        self._rule: Rule = _check_rule(rule)
        key = encoder.decode(key)
        if not isinstance(key, bytes):
            raise _TypeError("VerifyKey must be created from 32 bytes")
        if len(key) != PUBLIC_KEY_LEN:
            raise _ValueError("The key must be exactly %d bytes long" % PUBLIC_KEY_LEN)
        # A subclass of bytes could carry state or override comparison; keep plain bytes.
        self._key = bytes(key)

    @property
    def rule(self) -> Rule:
        """The signature rule ``verify`` and ``verify_many`` apply."""
        return self._rule

    def __bytes__(self) -> bytes:
        return self._key

    def __str__(self) -> str:
        # PyNaCl's StringFixer: the repr of the key's bytes.
        return str(self._key)

    def __repr__(self) -> str:
        return f"<hopgate.compat.nacl.VerifyKey {self._key.hex()} rule={self._rule!r}>"

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        # As PyNaCl: only keys of this class compare equal, by their bytes, in constant
        # time. The rule is how signatures are judged, not part of the key.
        if not isinstance(other, self.__class__):
            return False
        return hmac.compare_digest(self._key, other._key)

    def __ne__(self, other: object) -> bool:
        return not (self == other)

    def encode(self, encoder: Encoder = RawEncoder) -> bytes:
        """The key's 32 bytes, encoded with ``encoder`` (PyNaCl's ``Encodable.encode``)."""
        return encoder.encode(self._key)

    def _split(self, smessage: bytes, signature: Optional[bytes], encoder: Encoder) -> Tuple[bytes, bytes]:
        """(message, signature) as PyNaCl's ``verify`` reads them, raising what it raises
        for arguments of the wrong type or length."""
        if signature is not None:
            # Detached: the signature is checked before the message is decoded, and is
            # not decoded itself (PyNaCl's order and behaviour).
            if not isinstance(signature, bytes):
                raise _TypeError("Verification signature must be created from %d bytes" % SIGNATURE_LEN)
            if len(signature) != SIGNATURE_LEN:
                raise _ValueError("The signature must be exactly %d bytes long" % SIGNATURE_LEN)
            message = encoder.decode(smessage)
            if type(message) is not bytes:
                # PyNaCl computes ``signature + message``: any buffer is taken, anything
                # else raises that concatenation's TypeError. Concatenating to b"" does
                # the same, and copies a mutable buffer before it is verified, so the
                # message returned is the message verified whatever another thread does.
                message = b"" + message
            return message, signature
        signed = encoder.decode(smessage)
        if isinstance(signed, (list, tuple)):
            # libsodium's binding (cffi) also takes a list or tuple of byte values, and
            # raises OverflowError for one out of range.
            try:
                signed = bytes(signed)
            except builtins.ValueError as exc:
                raise OverflowError(str(exc)) from None
        if not isinstance(signed, bytes):
            # Nor anything else, not even bytearray or memoryview.
            raise builtins.TypeError(f"the signed message must be bytes, not {type(signed).__name__}")
        # Shorter than a signature: an empty message and a short signature, which no
        # rule accepts (BadSignatureError, as libsodium).
        return signed[SIGNATURE_LEN:], signed[:SIGNATURE_LEN]

    def verify(self, smessage: bytes, signature: Optional[bytes] = None, encoder: Encoder = RawEncoder) -> bytes:
        """The message, if ``signature`` is a valid signature of it by this key; else
        ``BadSignatureError``.

        With ``signature`` given, ``smessage`` is the message (decoded with ``encoder``)
        and ``signature`` its 64-byte detached signature (never decoded, as in PyNaCl).
        Without it, ``smessage`` is ``signature || message`` (a ``SignedMessage``, or its
        encoded form), and the message is what follows the first 64 bytes.
        """
        message, sig = self._split(smessage, signature, encoder)
        if not _verify(message, sig, self._key, rule=self._rule):
            raise BadSignatureError(_FORGED)
        return message

    def verify_many(
        self,
        items: Iterable[Tuple[bytes, Optional[bytes]]],
        encoder: Encoder = RawEncoder,
    ) -> List[Union[bytes, BadSignatureError]]:
        """``verify`` on many messages at once, in one batch verification.

        ``items`` are ``(smessage, signature)`` pairs, ``signature`` being ``None`` for
        the combined form, read as ``verify`` reads its arguments. Returns one entry per
        item, in order: the message where the signature is valid, and a
        ``BadSignatureError`` instance (returned, not raised) where it is not, so one bad
        signature neither hides the others' answers nor costs a second pass. An item of
        the wrong type or length raises at once, as ``verify`` would, before any
        signature is checked.
        """
        messages: List[bytes] = []
        sigs: List[bytes] = []
        for smessage, signature in items:
            message, sig = self._split(smessage, signature, encoder)
            messages.append(message)
            sigs.append(sig)
        if not messages:
            return []
        valid = _verify_batch(messages, sigs, [self._key] * len(messages), rule=self._rule)
        return [
            message if ok else BadSignatureError(_FORGED) for message, ok in zip(messages, valid.tolist())
        ]
