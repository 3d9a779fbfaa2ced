"""The exceptions of ``hopgate.jwt`` where PyJWT is not installed.

Where PyJWT can be imported, ``hopgate.jwt`` raises PyJWT's own classes (``jwt.exceptions``),
so ``except jwt.InvalidTokenError`` keeps working after the switch. Without it, these
classes stand in: the same names and the same tree, rooted at ``hopgate.HopgateError``.
"""

from __future__ import annotations

from .errors import HopgateError


class PyJWTError(HopgateError):
    """Base class of every token and key error."""


class InvalidTokenError(PyJWTError):
    """A token was refused."""


class DecodeError(InvalidTokenError):
    """A token that does not parse, or a claim of the wrong type."""


class InvalidSignatureError(DecodeError):
    """The signature does not verify under the key."""


class ExpiredSignatureError(InvalidTokenError):
    """``exp`` is past."""


class InvalidAudienceError(InvalidTokenError):
    """``aud`` does not name the expected audience."""


class InvalidIssuerError(InvalidTokenError):
    """``iss`` is not the expected issuer."""


class InvalidIssuedAtError(InvalidTokenError):
    """``iat`` is not a number."""


class ImmatureSignatureError(InvalidTokenError):
    """``nbf`` or ``iat`` is in the future."""


class InvalidKeyError(PyJWTError):
    """The key is not a key of the kind the algorithm takes."""


class InvalidAlgorithmError(InvalidTokenError):
    """The token's ``alg`` is missing, not allowed, or not supported."""


class MissingRequiredClaimError(InvalidTokenError):
    """A claim the caller requires is absent (or null)."""

    def __init__(self, claim: str) -> None:
        self.claim = claim

    def __str__(self) -> str:
        return f'Token is missing the "{self.claim}" claim'


class PyJWKError(PyJWTError):
    """A JSON Web Key that cannot be used."""


class PyJWKSetError(PyJWTError):
    """A JSON Web Key Set with no usable key."""


class InvalidSubjectError(InvalidTokenError):
    """``sub`` is not a string, or not the expected subject."""


class InvalidJTIError(InvalidTokenError):
    """``jti`` is not a string."""


class RemovedInPyjwt3Warning(DeprecationWarning):
    """An argument that PyJWT 3 will no longer take."""


class InsecureKeyLengthWarning(UserWarning):
    """A key shorter than its algorithm's recommended minimum."""

