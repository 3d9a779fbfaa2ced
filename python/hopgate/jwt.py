"""Ed25519 JSON Web Tokens, decoded as PyJWT 2.x decodes them, with signatures checked in batches.

``decode`` takes PyJWT's arguments and makes PyJWT's decisions for tokens whose ``alg`` is
``"EdDSA"`` (RFC 8037) -- and ``"Ed25519"`` (RFC 9864) where the installed PyJWT knows it, or
where PyJWT is not installed: the same base64url and JSON rules, the same header checks
(``kid``, ``crit``, ``b64``), the same allow-list of algorithms, the same key forms, the same
claims checks (``exp``, ``nbf``, ``iat``, ``aud``, ``iss``, ``sub``, ``jti``, ``require``,
``leeway``, ``options``), in the same order, raising the same exception classes. Ed25519
signatures are checked under ``rule="openssl"``: exactly those pyca/cryptography accepts,
which is what PyJWT asks.

``decode_batch`` decodes many tokens at once and returns, for each, its claims or the
exception ``decode`` would raise. The tokens are split and base64url-decoded in one native
call (``hopgate._native.jws_split``: Rust, on all cores, GIL released; the reference's where
the native module is absent); a header shared by many tokens is parsed once; the Ed25519
signatures of every token that gets that far are checked in one native
``hopgate.verify_batch`` call. The payload's JSON (Python's ``json``, as PyJWT parses it) and
the claims checks run in Python, token by token.

Where PyJWT can be imported, the exceptions are PyJWT's own (``jwt.exceptions``), its
``PyJWK`` objects are taken as keys, and a token whose ``alg`` is not an Ed25519 algorithm
but is in the caller's allow-list (``"HS256"``, ``"RS256"``, ...) is handed to PyJWT's own
algorithm, so it gets PyJWT's decision too (the HMAC key checks that refuse an Ed25519 public
key as a secret among them). Without PyJWT, the exceptions are same-named classes rooted at
``hopgate.HopgateError``, ``"none"`` behaves as in PyJWT, and every other algorithm is
refused with ``InvalidAlgorithmError``.

``JWK`` and ``JWKSet`` read OKP keys (RFC 8037) from JSON Web Keys and key sets as PyJWT's
``PyJWK`` and ``PyJWKSet`` do; keys of other types are refused (``JWKSet`` skips them).
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, Union

try:
    # Key objects, PEM and OpenSSH keys are pyca/cryptography's, as in PyJWT's EdDSA.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
        load_pem_public_key,
        load_ssh_public_key,
    )
except ImportError as missing:
    raise ImportError(
        f"hopgate.jwt reads keys with pyca/cryptography, which cannot be imported ({missing}): "
        "pip install cryptography"
    ) from missing

from . import BACKEND as _BACKEND
from . import verify as _verify_one
from . import verify_batch as _verify_many

try:
    from jwt import get_algorithm_by_name as _pyjwt_algorithm
    from jwt.algorithms import get_default_algorithms as _pyjwt_algorithms
    from jwt.api_jwk import PyJWK as _PyJWK
    from jwt.api_jwk import PyJWKSet as _PyJWKSet
    from jwt.exceptions import (
        DecodeError,
        ExpiredSignatureError,
        ImmatureSignatureError,
        InvalidAlgorithmError,
        InvalidAudienceError,
        InvalidIssuedAtError,
        InvalidIssuerError,
        InvalidJTIError,
        InvalidKeyError,
        InvalidSignatureError,
        InvalidSubjectError,
        InvalidTokenError,
        MissingRequiredClaimError,
        PyJWKError,
        PyJWKSetError,
        PyJWTError,
    )
    from jwt.warnings import InsecureKeyLengthWarning, RemovedInPyjwt3Warning

    _FOREIGN_JWK: tuple[type, ...] = (_PyJWK,)
    _FOREIGN_JWKSET: tuple[type, ...] = (_PyJWKSet,)
    # RFC 9864's fully specified "Ed25519" is taken only where the installed PyJWT takes it,
    # so that both libraries refuse or accept the same tokens.
    _ED_ALGORITHMS = frozenset({"EdDSA"} | ({"Ed25519"} & set(_pyjwt_algorithms())))
    _HAS_PYJWT = True
except ImportError:  # PyJWT not installed (or older than 2.10, which lacks some classes)
    from ._jwt_errors import (  # type: ignore[assignment]
        DecodeError,
        ExpiredSignatureError,
        ImmatureSignatureError,
        InsecureKeyLengthWarning,
        InvalidAlgorithmError,
        InvalidAudienceError,
        InvalidIssuedAtError,
        InvalidIssuerError,
        InvalidJTIError,
        InvalidKeyError,
        InvalidSignatureError,
        InvalidSubjectError,
        InvalidTokenError,
        MissingRequiredClaimError,
        PyJWKError,
        PyJWKSetError,
        PyJWTError,
        RemovedInPyjwt3Warning,
    )

    _FOREIGN_JWK = ()
    _FOREIGN_JWKSET = ()
    _ED_ALGORITHMS = frozenset({"EdDSA", "Ed25519"})
    _HAS_PYJWT = False

__all__ = [
    "JWK",
    "JWKSet",
    "DecodeError",
    "ExpiredSignatureError",
    "ImmatureSignatureError",
    "InvalidAlgorithmError",
    "InvalidAudienceError",
    "InvalidIssuedAtError",
    "InvalidIssuerError",
    "InvalidJTIError",
    "InvalidKeyError",
    "InvalidSignatureError",
    "InvalidSubjectError",
    "InvalidTokenError",
    "MissingRequiredClaimError",
    "PyJWKError",
    "PyJWKSetError",
    "PyJWTError",
    "decode",
    "decode_batch",
    "decode_complete",
    "get_unverified_header",
]

# The extensions a token may list in "crit" (RFC 7515 §4.1.11): only RFC 7797's "b64".
_UNDERSTOOD_CRIT = frozenset({"b64"})
# Algorithm names PyJWT 2.x registers; a JWK naming one of these (other than an Ed25519
# algorithm) is a key of another type, refused as PyJWT refuses a mismatched JWK.
_OTHER_ALGORITHMS = frozenset(
    {
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES256K", "ES384",
        "ES521", "ES512", "PS256", "PS384", "PS512", "EdDSA",
    }
) - _ED_ALGORITHMS
if _BACKEND == "native":
    from ._native import jws_split as _jws_split
else:
    from .reference import jws_split as _jws_split
_OKP_KEYS = (Ed25519PrivateKey, Ed25519PublicKey, Ed448PrivateKey, Ed448PublicKey)
_DEFAULT_OPTIONS: dict[str, Any] = {
    "verify_signature": True,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iat": True,
    "verify_aud": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "require": [],
    "strict_aud": False,
    "enforce_minimum_key_length": False,
}
_CLAIM_SWITCHES = (
    "verify_exp", "verify_nbf", "verify_iat", "verify_aud", "verify_iss", "verify_sub",
    "verify_jti",
)

KeyLike = Any
"""A key as ``jwt.decode`` takes it for EdDSA: an Ed25519 (or Ed448) key object of
pyca/cryptography, public or private; PEM text or bytes (``-----BEGIN PUBLIC KEY-----``,
``-----BEGIN PRIVATE KEY-----``); an OpenSSH public key line (``ssh-ed25519 ...``); a ``JWK``
or PyJWT's ``PyJWK``. Raw 32-byte keys are refused, as PyJWT refuses them."""


# -- base64url and JSON ----------------------------------------------------------------------


def _lenient_base64url(value: Any) -> bytes:
    """Base64url as JWK members are read: padding optional, other characters skipped
    (``base64.urlsafe_b64decode`` without validation)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif not isinstance(value, bytes):
        raise TypeError("Expected a string or bytes value")
    return base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """Python's json (RFC 8259 and its extensions: NaN and Infinity, exact big integers up to
    the interpreter's digit limit, the last of duplicate keys), and an object at the top."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise DecodeError(f"Invalid {what} string: {error}") from error
    if not isinstance(value, dict):
        raise DecodeError(f"Invalid {what} string: must be a json object")
    return value


# -- keys ------------------------------------------------------------------------------------


def _okp_key(key: Any) -> Any:
    """The key object for an Ed25519 algorithm, from the forms PyJWT's EdDSA takes."""
    if isinstance(key, (str, bytes)):
        text = key.decode("utf-8") if isinstance(key, bytes) else key
        data = key.encode("utf-8") if isinstance(key, str) else key
        loaded: Any
        if "-----BEGIN PUBLIC" in text:
            loaded = load_pem_public_key(data)
        elif "-----BEGIN PRIVATE" in text:
            loaded = load_pem_private_key(data, password=None)
        elif text[:4] == "ssh-":
            loaded = load_ssh_public_key(data)
        else:
            raise InvalidKeyError("Not a public or private key")
        key = loaded
    if not isinstance(key, _OKP_KEYS):
        raise InvalidKeyError(
            f"Expected an Ed25519 or Ed448 key, got: {key.__class__.__name__}"
        )
    return key


class _Ed448:
    """An Ed448 key met under ``"EdDSA"``: checked at once through pyca/cryptography, outside
    the Ed25519 batch."""

    __slots__ = ("public",)

    def __init__(self, public: Ed448PublicKey) -> None:
        self.public = public


def _public_material(key: Any, alg: str) -> Union[bytes, _Ed448]:
    """The raw 32-byte Ed25519 public key (or an Ed448 key) that verifies under ``alg``."""
    okp = _okp_key(key)
    if isinstance(okp, (Ed25519PrivateKey, Ed448PrivateKey)):
        okp = okp.public_key()
    if isinstance(okp, Ed448PublicKey):
        if alg != "EdDSA":
            raise InvalidKeyError(f"An Ed448 key cannot verify {alg}")
        return _Ed448(okp)
    raw: bytes = okp.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw


class JWK:
    """An OKP JSON Web Key (RFC 8037), read as PyJWT's ``PyJWK`` reads one.

    ``algorithm`` (else the key's ``alg``, else ``"EdDSA"`` for ``crv`` ``"Ed25519"``) binds
    the key: a token must name that algorithm. ``key`` is the pyca/cryptography key object;
    a JWK with ``d`` is a private key whose ``x`` must match it.
    """

    def __init__(self, jwk_data: dict[str, Any], algorithm: Optional[str] = None) -> None:
        self._jwk_data = jwk_data
        kty = jwk_data.get("kty", None)
        if not kty:
            raise InvalidKeyError(f"kty is not found: {jwk_data}")
        if not algorithm and isinstance(jwk_data, dict):
            algorithm = jwk_data.get("alg", None)
        if not algorithm:
            if kty != "OKP":
                raise InvalidKeyError(f"Unsupported kty: {kty}")
            crv = jwk_data.get("crv", None)
            if not crv:
                raise InvalidKeyError(f"crv is not found: {jwk_data}")
            if crv != "Ed25519":
                raise InvalidKeyError(f"Unsupported crv: {crv}")
            algorithm = "EdDSA"
        if algorithm == "none":
            # PyJWT's "none" algorithm has no key form and says so this way.
            raise NotImplementedError()
        if algorithm in _OTHER_ALGORITHMS:
            raise InvalidKeyError(f"Not an Octet Key Pair algorithm: {algorithm}")
        if algorithm not in _ED_ALGORITHMS:
            raise PyJWKError(f"Unable to find an algorithm for key: {jwk_data}")
        self.algorithm_name: str = algorithm
        try:
            self.key: Any = self._okp_from_members(jwk_data, algorithm)
        except (TypeError, ValueError) as error:
            raise InvalidKeyError(f"Unable to construct key from JWK: {error}") from error

    @staticmethod
    def _okp_from_members(members: dict[str, Any], algorithm: str) -> Any:
        if members.get("kty") != "OKP":
            raise InvalidKeyError("Not an Octet Key Pair")
        curve = members.get("crv")
        if curve not in ("Ed25519", "Ed448") or (algorithm != "EdDSA" and curve != algorithm):
            raise InvalidKeyError(f"Invalid curve: {curve}")
        if "x" not in members:
            raise InvalidKeyError('OKP should have "x" parameter')
        x = _lenient_base64url(members.get("x"))
        try:
            if "d" not in members:
                if curve == "Ed25519":
                    return Ed25519PublicKey.from_public_bytes(x)
                return Ed448PublicKey.from_public_bytes(x)
            d = _lenient_base64url(members.get("d"))
            private: Union[Ed25519PrivateKey, Ed448PrivateKey]
            if curve == "Ed25519":
                private = Ed25519PrivateKey.from_private_bytes(d)
            else:
                private = Ed448PrivateKey.from_private_bytes(d)
            if private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) != x:
                raise InvalidKeyError("Public key does not match private key")
            return private
        except ValueError as error:
            raise InvalidKeyError("Invalid key parameter") from error

    @staticmethod
    def from_dict(obj: dict[str, Any], algorithm: Optional[str] = None) -> JWK:
        """The key from a JWK already parsed from JSON."""
        return JWK(obj, algorithm)

    @staticmethod
    def from_json(data: str, algorithm: Optional[str] = None) -> JWK:
        """The key from a JWK's JSON text."""
        return JWK.from_dict(json.loads(data), algorithm)

    @property
    def key_type(self) -> Optional[str]:
        """The JWK's ``kty``."""
        value: Optional[str] = self._jwk_data.get("kty", None)
        return value

    @property
    def key_id(self) -> Optional[str]:
        """The JWK's ``kid``."""
        value: Optional[str] = self._jwk_data.get("kid", None)
        return value

    @property
    def public_key_use(self) -> Optional[str]:
        """The JWK's ``use``."""
        value: Optional[str] = self._jwk_data.get("use", None)
        return value


class JWKSet:
    """A JSON Web Key Set, read as PyJWT's ``PyJWKSet`` reads one: members that are not
    objects, or not usable OKP keys, are skipped; a set left empty is refused.
    ``jwks[kid]`` is the key with that ``kid`` (``KeyError`` when none has it)."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys: list[JWK] = []
        if not keys:
            raise PyJWKSetError("The JWK Set did not contain any keys")
        if not isinstance(keys, list):
            raise PyJWKSetError("Invalid JWK Set value")
        for member in keys:
            if not isinstance(member, dict):
                continue
            try:
                self.keys.append(JWK(member))
            except PyJWTError:
                continue
        if not self.keys:
            raise PyJWKSetError("The JWK Set did not contain any usable keys")

    @staticmethod
    def from_dict(obj: dict[str, Any]) -> JWKSet:
        """The set from ``{"keys": [...]}`` already parsed from JSON."""
        return JWKSet(obj.get("keys", []))

    @staticmethod
    def from_json(data: str) -> JWKSet:
        """The set from its JSON text."""
        return JWKSet.from_dict(json.loads(data))

    def __getitem__(self, kid: str) -> JWK:
        for key in self.keys:
            if key.key_id == kid:
                return key
        raise KeyError(f"keyset has no key for kid: {kid}")

    def __iter__(self) -> Iterator[JWK]:
        return iter(self.keys)


# -- the token -------------------------------------------------------------------------------


class _Parsed:
    """A token split, decoded and its header checked; the signature not yet verified."""

    __slots__ = ("header", "payload", "signing_input", "signature")

    def __init__(self, header: dict[str, Any], payload: bytes, signing_input: bytes, signature: bytes) -> None:
        self.header = header
        self.payload = payload
        self.signing_input = signing_input
        self.signature = signature


def _token_bytes(token: Any) -> bytes:
    if isinstance(token, str):
        token = token.encode("utf-8")
    if not isinstance(token, bytes):
        raise DecodeError(f"Invalid token type. Token must be a {bytes}")
    return token


_Split = Optional[tuple[int, Optional[bytes], Optional[bytes], bool, Optional[bytes]]]


def _parse(token: Any) -> _Parsed:
    """Split and decode a compact JWS (RFC 7515 §7.1) and check its header."""
    data = _token_bytes(token)
    return _parsed(data, _jws_split([data])[0], None)


def _parsed(token: bytes, split: _Split, headers: Optional[dict[bytes, dict[str, Any]]]) -> _Parsed:
    """The token from its segments as ``hopgate._native.jws_split`` decoded them, raising
    the first refusal in PyJWT's order. ``headers`` remembers parsed headers by their bytes
    (the tokens of one batch mostly share one); their dicts are then shared, read only."""
    if split is None:
        raise DecodeError("Not enough segments")
    signing_input_len, header_bytes, payload, payload_segment_empty, signature = split
    if header_bytes is None:
        raise DecodeError("Invalid header padding")
    header = None if headers is None else headers.get(header_bytes)
    if header is None:
        header = _json_object(header_bytes, "header")
        if headers is not None:
            headers[header_bytes] = header
    if header.get("b64", True) is False:
        # RFC 7797: the payload travels outside the token; the segment must be empty (what
        # the split decoded of it is not used).
        if not payload_segment_empty:
            raise DecodeError("Payload segment must be empty when 'b64' is false.")
        payload = b""
    elif payload is None:
        raise DecodeError("Invalid payload padding")
    if signature is None:
        raise DecodeError("Invalid crypto padding")
    _check_header(header)
    return _Parsed(header, payload, token[:signing_input_len], signature)


def _check_header(header: dict[str, Any]) -> None:
    if "kid" in header and not isinstance(header["kid"], str):
        raise InvalidTokenError("Key ID header parameter must be a string")
    if "crit" not in header:
        return
    crit = header["crit"]
    if not isinstance(crit, list) or not crit:
        raise InvalidTokenError("Invalid 'crit' header: must be a non-empty list")
    for extension in crit:
        if not isinstance(extension, str):
            raise InvalidTokenError("Invalid 'crit' header: values must be strings")
        if extension not in _UNDERSTOOD_CRIT:
            raise InvalidTokenError(f"Unsupported critical extension: {extension}")
        if extension not in header:
            raise InvalidTokenError(f"Critical extension '{extension}' is missing from headers")


def get_unverified_header(token: Union[str, bytes]) -> dict[str, Any]:
    """The token's header, its ``kid`` and ``crit`` checked, its signature NOT verified:
    to pick a key by ``kid``, never to trust."""
    return _parse(token).header


def _attach_payload(parsed: _Parsed, detached_payload: Optional[bytes]) -> None:
    """RFC 7797's unencoded, detached payload: ``b64: false`` listed in ``crit``."""
    detached = parsed.header.get("b64", True) is False
    if detached_payload is not None and not detached:
        raise DecodeError(
            'It is only valid to pass "detached_payload" when the protected header has "b64" set to false.'
        )
    if not detached:
        return
    crit = parsed.header.get("crit") or []
    if not isinstance(crit, list) or "b64" not in crit:
        raise InvalidTokenError(
            "The 'b64' header parameter requires 'b64' to be listed in 'crit'."
        )
    if detached_payload is None:
        raise DecodeError(
            'It is required that you pass in a value for the "detached_payload" argument to decode a message having the b64 header set to false.'
        )
    parsed.payload = detached_payload
    parsed.signing_input = parsed.signing_input.rpartition(b".")[0] + b"." + detached_payload


_PublicCache = Callable[[Any, str], Union[bytes, _Ed448]]


def _signature_check(
    parsed: _Parsed,
    key: Any,
    algorithms: Optional[Sequence[str]],
    enforce_minimum_key_length: bool,
    public_of: _PublicCache,
) -> Optional[bytes]:
    """Check the token's algorithm and key. Returns the raw Ed25519 public key whose
    signature is still to be verified, or None when the signature was verified here (another
    algorithm, or Ed448); raises the refusal otherwise."""
    is_jwk = isinstance(key, (JWK,) + _FOREIGN_JWK)
    if algorithms is None and is_jwk:
        algorithms = [key.algorithm_name]
    try:
        alg = parsed.header["alg"]
    except KeyError:
        raise InvalidAlgorithmError("Algorithm not specified") from None
    if not alg or (algorithms is not None and alg not in algorithms):
        raise InvalidAlgorithmError("The specified alg value is not allowed")
    if is_jwk:
        if alg != key.algorithm_name:
            raise InvalidAlgorithmError(
                f"Token algorithm {alg!r} does not match the key's algorithm {key.algorithm_name!r}"
            )
        if alg not in _ED_ALGORITHMS:
            _other_algorithm(parsed, key.Algorithm, key.key, enforce_minimum_key_length)
            return None
        material = public_of(key.key, alg)
    elif alg in _ED_ALGORITHMS:
        material = public_of(key, alg)
    else:
        _other_algorithm(parsed, None, key, enforce_minimum_key_length)
        return None
    if isinstance(material, _Ed448):
        try:
            material.public.verify(parsed.signature, parsed.signing_input)
        except InvalidSignature:
            raise InvalidSignatureError("Signature verification failed") from None
        return None
    return material


def _other_algorithm(parsed: _Parsed, algorithm: Any, key: Any, enforce_minimum_key_length: bool) -> None:
    """A token under an allowed algorithm that is not Ed25519's: PyJWT's own decision where
    PyJWT is installed; otherwise ``"none"`` as PyJWT treats it and the rest refused."""
    alg = parsed.header["alg"]
    if algorithm is None and _HAS_PYJWT:
        try:
            algorithm = _pyjwt_algorithm(alg)
        except NotImplementedError as error:
            raise InvalidAlgorithmError("Algorithm not supported") from error
    if algorithm is None:
        if alg != "none":
            raise InvalidAlgorithmError("Algorithm not supported")
        if key == "":
            key = None
        if key is not None:
            raise InvalidKeyError('When alg = "none", key value must be None.')
        raise InvalidSignatureError("Signature verification failed")
    prepared = algorithm.prepare_key(key)
    weak = algorithm.check_key_length(prepared)
    if weak:
        if enforce_minimum_key_length:
            raise InvalidKeyError(weak)
        warnings.warn(weak, InsecureKeyLengthWarning, stacklevel=5)
    if not algorithm.verify(parsed.signing_input, prepared, parsed.signature):
        raise InvalidSignatureError("Signature verification failed")


def _public_cache() -> _PublicCache:
    """``_public_material`` remembering its answers by key object for one call (a PEM key
    shared by a whole batch is parsed once); refusals are not remembered, so each token gets
    its own exception."""
    known: dict[tuple[int, str], tuple[Any, Union[bytes, _Ed448]]] = {}

    def public_of(key: Any, alg: str) -> Union[bytes, _Ed448]:
        slot = (id(key), alg)
        hit = known.get(slot)
        if hit is not None and hit[0] is key:
            return hit[1]
        material = _public_material(key, alg)
        known[slot] = (key, material)  # holding the key keeps its id from being reused
        return material

    return public_of


# -- options and claims ----------------------------------------------------------------------


def _merged_options(options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    if options is None:
        return dict(_DEFAULT_OPTIONS)
    given = dict(options)
    if not given.get("verify_signature", True):
        # Without a signature check, the claims checks are off unless asked for by name.
        for switch in _CLAIM_SWITCHES:
            given[switch] = given.get(switch, False)
    return {**_DEFAULT_OPTIONS, **given}


def _now() -> float:
    return datetime.now(tz=timezone.utc).timestamp()


def _check_claims(
    payload: dict[str, Any],
    options: dict[str, Any],
    audience: Union[str, Iterable[str], None],
    issuer: Union[str, Container[str], None],
    subject: Optional[str],
    leeway: Union[float, timedelta],
    clock: Callable[[], float],
) -> None:
    if isinstance(leeway, timedelta):
        leeway = leeway.total_seconds()
    if audience is not None and not isinstance(audience, (str, Iterable)):
        raise TypeError("audience must be a string, iterable or None")
    for claim in options["require"]:
        if payload.get(claim) is None:
            raise MissingRequiredClaimError(claim)
    now = clock()
    if "iat" in payload and options["verify_iat"]:
        iat = _integer_claim(payload["iat"], InvalidIssuedAtError, "Issued At claim (iat)")
        if iat > now + leeway:
            raise ImmatureSignatureError("The token is not yet valid (iat)")
    if "nbf" in payload and options["verify_nbf"]:
        nbf = _integer_claim(payload["nbf"], DecodeError, "Not Before claim (nbf)")
        if nbf > now + leeway:
            raise ImmatureSignatureError("The token is not yet valid (nbf)")
    if "exp" in payload and options["verify_exp"]:
        exp = _integer_claim(payload["exp"], DecodeError, "Expiration Time claim (exp)")
        # Expired at the second itself: valid while exp > now - leeway.
        if exp <= now - leeway:
            raise ExpiredSignatureError("Signature has expired")
    if options["verify_iss"]:
        _check_issuer(payload, issuer)
    if options["verify_aud"]:
        _check_audience(payload, audience, bool(options.get("strict_aud", False)))
    if options["verify_sub"] and "sub" in payload:
        if not isinstance(payload["sub"], str):
            raise InvalidSubjectError("Subject must be a string")
        if subject is not None and payload.get("sub") != subject:
            raise InvalidSubjectError("Invalid subject")
    if options["verify_jti"] and "jti" in payload and not isinstance(payload.get("jti"), str):
        raise InvalidJTIError("JWT ID must be a string")


def _integer_claim(value: Any, error: type[Exception], name: str) -> int:
    """A NumericDate claim as an integer, truncated toward zero as ``int()`` does (so
    ``1.9`` is ``1``, ``"12"`` is ``12``, and ``true`` is ``1``)."""
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        raise error(f"{name} must be an integer.") from None


def _check_issuer(payload: dict[str, Any], issuer: Union[str, Container[str], None]) -> None:
    if issuer is None:
        return
    if "iss" not in payload:
        raise MissingRequiredClaimError("iss")
    iss = payload["iss"]
    if not isinstance(iss, str):
        raise InvalidIssuerError("Payload Issuer (iss) must be a string")
    if isinstance(issuer, str):
        if iss != issuer:
            raise InvalidIssuerError("Invalid issuer")
        return
    try:
        accepted = iss in issuer
    except TypeError:
        raise InvalidIssuerError('Issuer param must be "str" or "Container[str]"') from None
    if not accepted:
        raise InvalidIssuerError("Invalid issuer")


def _check_audience(payload: dict[str, Any], audience: Union[str, Iterable[str], None], strict: bool) -> None:
    claimed = payload.get("aud")
    if audience is None:
        if claimed:
            # The token is meant for someone, and the caller did not say who it is.
            raise InvalidAudienceError("Invalid audience")
        return
    if not claimed:
        raise MissingRequiredClaimError("aud")
    if strict:
        if not isinstance(audience, str):
            raise InvalidAudienceError("Invalid audience (strict)")
        if not isinstance(claimed, str):
            raise InvalidAudienceError("Invalid claim format in token (strict)")
        if audience != claimed:
            raise InvalidAudienceError("Audience doesn't match (strict)")
        return
    intended = [claimed] if isinstance(claimed, str) else claimed
    if not isinstance(intended, list) or not all(isinstance(name, str) for name in intended):
        raise InvalidAudienceError("Invalid claim format in token")
    accepted = [audience] if isinstance(audience, str) else audience
    if not any(name in intended for name in accepted):
        raise InvalidAudienceError("Audience doesn't match")


# -- decoding --------------------------------------------------------------------------------


def _warn_extra(function: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        warnings.warn(
            f"passing additional kwargs to {function}() is deprecated and will be removed in "
            f"pyjwt version 3. Unsupported kwargs: {tuple(kwargs.keys())}",
            RemovedInPyjwt3Warning,
            stacklevel=3,
        )


def _signature_wanted(options: Optional[Mapping[str, Any]]) -> Any:
    return True if options is None else options.get("verify_signature", True)


def _algorithms_given(verify_signature: Any, algorithms: Optional[Sequence[str]], key: Any) -> None:
    if verify_signature and not algorithms and not isinstance(key, (JWK,) + _FOREIGN_JWK):
        raise DecodeError(
            'It is required that you pass in a value for the "algorithms" argument when calling decode().'
        )


def decode_complete(
    jwt: Union[str, bytes],
    key: KeyLike = "",
    algorithms: Optional[Sequence[str]] = None,
    options: Optional[Mapping[str, Any]] = None,
    verify: Optional[bool] = None,
    detached_payload: Optional[bytes] = None,
    audience: Union[str, Iterable[str], None] = None,
    issuer: Union[str, Container[str], None] = None,
    subject: Optional[str] = None,
    leeway: Union[float, timedelta] = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """``decode``, returning ``{"header": ..., "payload": ..., "signature": ...}`` (the
    payload being the claims), as ``jwt.decode_complete``."""
    _warn_extra("decode_complete", kwargs)
    return _decode_complete(
        jwt, key, algorithms, options, verify, detached_payload, audience, issuer, subject, leeway
    )


def _decode_complete(
    token: Any,
    key: Any,
    algorithms: Optional[Sequence[str]],
    options: Optional[Mapping[str, Any]],
    verify: Optional[bool],
    detached_payload: Optional[bytes],
    audience: Union[str, Iterable[str], None],
    issuer: Union[str, Container[str], None],
    subject: Optional[str],
    leeway: Union[float, timedelta],
) -> dict[str, Any]:
    verify_signature = _signature_wanted(options)
    if verify is not None and verify != verify_signature:
        warnings.warn(
            "The `verify` argument to `decode` does nothing in PyJWT 2.0 and newer. The "
            "equivalent is setting `verify_signature` to False in the `options` dictionary. "
            "This invocation has a mismatch between the kwarg and the option entry.",
            category=DeprecationWarning,
            stacklevel=4,
        )
    merged = _merged_options(options)
    _algorithms_given(verify_signature, algorithms, key)
    parsed = _parse(token)
    _attach_payload(parsed, detached_payload)
    if verify_signature:
        public = _signature_check(
            parsed, key, algorithms, bool(merged.get("enforce_minimum_key_length", False)),
            _public_material,
        )
        if public is not None and not _verify_one(
            parsed.signing_input, parsed.signature, public, rule="openssl"
        ):
            raise InvalidSignatureError("Signature verification failed")
    payload = _json_object(parsed.payload, "payload")
    _check_claims(payload, merged, audience, issuer, subject, leeway, _now)
    return {"header": parsed.header, "payload": payload, "signature": parsed.signature}


def decode(
    jwt: Union[str, bytes],
    key: KeyLike = "",
    algorithms: Optional[Sequence[str]] = None,
    options: Optional[Mapping[str, Any]] = None,
    verify: Optional[bool] = None,
    detached_payload: Optional[bytes] = None,
    audience: Union[str, Iterable[str], None] = None,
    subject: Optional[str] = None,
    issuer: Union[str, Container[str], None] = None,
    leeway: Union[float, timedelta] = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Verify a token and return its claims, deciding as ``jwt.decode`` does.

    The arguments are ``jwt.decode``'s, in its order. ``algorithms`` is the allow-list (for
    example ``["EdDSA"]``); a ``JWK`` or ``PyJWK`` key brings its own. ``options`` switches
    checks (``verify_signature``, ``verify_exp``, ``verify_nbf``, ``verify_iat``,
    ``verify_aud``, ``verify_iss``, ``verify_sub``, ``verify_jti``: all on, and all off by
    default once ``verify_signature`` is off; ``require``: claims that must be present;
    ``strict_aud``). ``leeway`` is in seconds or a ``timedelta``: a token is expired once
    ``exp <= now - leeway``, and immature while ``nbf`` (or ``iat``) ``> now + leeway``.
    """
    _warn_extra("decode", kwargs)
    claims: dict[str, Any] = _decode_complete(
        jwt, key, algorithms, options, verify, detached_payload, audience, issuer, subject, leeway
    )["payload"]
    return claims


def decode_batch(
    tokens: Sequence[Union[str, bytes]],
    keys: KeyLike,
    algorithms: Optional[Sequence[str]] = None,
    options: Optional[Mapping[str, Any]] = None,
    *,
    audience: Union[str, Iterable[str], None] = None,
    subject: Optional[str] = None,
    issuer: Union[str, Container[str], None] = None,
    leeway: Union[float, timedelta] = 0,
) -> list[Union[dict[str, Any], Exception]]:
    """``decode`` over many tokens: for each, its claims, or the exception ``decode`` would
    raise for it (returned, not raised).

    ``keys`` is a list or tuple of keys, one per token; or one key for every token; or a
    ``JWKSet``, from which each token's key is the one its header's ``kid`` names (a token
    without ``kid``, or naming no key of the set, gets a ``KeyError``, as ``jwks[kid]``
    raises). The other arguments apply to every token; ``audience`` must then be re-iterable
    (a string, list, tuple or set, not a generator), and the clock is read once for the batch.
    The Ed25519 signatures of all tokens that reach the signature check are verified in one
    ``hopgate.verify_batch(..., rule="openssl")`` call.
    """
    count = len(tokens)
    per_token = isinstance(keys, (list, tuple))
    if per_token and len(keys) != count:
        raise ValueError(f"keys: {len(keys)} keys for {count} tokens")
    verify_signature = _signature_wanted(options)
    merged = _merged_options(options)
    enforce = bool(merged.get("enforce_minimum_key_length", False))
    public_of = _public_cache()
    results: list[Union[dict[str, Any], Exception]] = []
    decoded: list[Optional[_Parsed]] = []
    waiting: list[tuple[int, _Parsed]] = []
    publics: list[bytes] = []
    # Every token's segments split and decoded in one native call, GIL released; a token
    # that is not text or bytes keeps its refusal for its turn below.
    data: list[Union[bytes, Exception]] = []
    for token in tokens:
        try:
            data.append(_token_bytes(token))
        except Exception as error:
            data.append(error)
    splits = iter(_jws_split([d for d in data if isinstance(d, bytes)]))
    headers: dict[bytes, dict[str, Any]] = {}
    for index, item in enumerate(data):
        key: Any = keys[index] if per_token else keys
        try:
            split: _Split = None if isinstance(item, Exception) else next(splits)
            jwks = isinstance(key, (JWKSet,) + _FOREIGN_JWKSET)
            if not jwks:
                _algorithms_given(verify_signature, algorithms, key)
            if isinstance(item, Exception):
                raise item
            parsed = _parsed(item, split, headers)
            if jwks:
                # As ``jwks[get_unverified_header(token)["kid"]]`` picks it.
                key = _key_by_kid(key, parsed.header)
            _attach_payload(parsed, None)
            if verify_signature:
                public = _signature_check(parsed, key, algorithms, enforce, public_of)
                if public is not None:
                    waiting.append((index, parsed))
                    publics.append(public)
        except Exception as error:  # every refusal is this token's result, never the batch's
            results.append(error)
            decoded.append(None)
            continue
        results.append(_UNSET)
        decoded.append(parsed)
    if waiting:
        verdicts = _verify_many(
            [parsed.signing_input for _, parsed in waiting],
            [parsed.signature for _, parsed in waiting],
            publics,
            rule="openssl",
        )
        for (index, _), good in zip(waiting, verdicts.tolist()):
            if not good:
                results[index] = InvalidSignatureError("Signature verification failed")
                decoded[index] = None
    clock = _batch_clock()
    for index, maybe in enumerate(decoded):
        if maybe is None:
            continue
        try:
            payload = _json_object(maybe.payload, "payload")
            _check_claims(payload, merged, audience, issuer, subject, leeway, clock)
            results[index] = payload
        except Exception as error:  # as above: the token's own result
            results[index] = error
    return results


def _key_by_kid(keys: Any, header: dict[str, Any]) -> Any:
    if "kid" not in header:
        raise KeyError("kid")
    return keys[header["kid"]]


# A place held in ``decode_batch``'s results until the token's claims are checked.
_UNSET: dict[str, Any] = {}


def _batch_clock() -> Callable[[], float]:
    """One reading of the clock for a whole batch, taken when the first token needs it."""
    reading: list[float] = []

    def clock() -> float:
        if not reading:
            reading.append(_now())
        return reading[0]

    return clock
