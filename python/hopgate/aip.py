"""Agent Identity Protocol (AIP) tokens, verified as the ``agent-identity-protocol`` package
(module ``aip_token``) verifies them, with the signatures of many tokens checked in one call.

Two encodings, both EdDSA JSON Web Tokens:

- ``CompactToken``: one JWT with header ``typ: aip+jwt`` whose claims (``iss``, ``sub``,
  ``scope``, ``budget_usd``, ``max_depth``, ``iat``, ``exp``) are read with the same
  coercions the package's claims model applies (pydantic's lax mode: ``true`` is ``1``, the
  text ``" 12 "`` is the integer 12, ``2.0`` is the integer 2, an integer becomes a float, ...)
  and the same refusals.
- ``JwtChain``: links ``typ: aip-link+jwt`` joined with ``~``. Link 0 is signed by the root
  key the caller resolved for the issuer; every later link by the key its predecessor named
  in ``cnf.jwk``, and carries ``prev``, the SHA-256 of its predecessor as transmitted. The
  links are then walked for depth, attenuation (tools, domains, budget, expiry, principal)
  and delegation context. A lone compact token is accepted as a one-link chain.

Every refusal is a ``TokenError`` whose ``code`` is the package's code for that token
(``token_malformed``, ``signature_invalid``, ``token_expired``, ``token_missing``,
``budget_exceeded``, ``depth_exceeded``, ``scope_insufficient``), found in the package's order
of checks: a malformed link 0 is reported before a bad signature on link 1, a bad signature
on link 1 before a malformed link 2. The JWS parsing, header and claims checks are
``hopgate.jwt``'s, which decides as PyJWT decides; the compact form's ``exp``, ``nbf`` and
``iat`` are judged against the real clock, as PyJWT judges them inside the package, while
the chain walk uses ``now``.

``verify_batch`` verifies many chains: each token's signing keys are gathered structurally
(link i's key is link i-1's ``cnf.jwk``), every signature of every token is checked in one
``hopgate.verify_batch(..., rule="openssl")`` call (pyca/cryptography's cofactorless rule,
which the package's PyJWT applies), then each token gets the first refusal the package would
raise, or its verified chain.

It reads keys and parses tokens through ``hopgate.jwt``, so it needs pyca/cryptography (the
``jwt`` extra: ``pip install 'hopgate[jwt]'``); the package itself is not needed.

``BudgetGate`` enforces what AIP leaves to the runtime: it reserves a request's cost in a
``hopgate.Ledger`` on one account per link, each capped by the budget in force at that link,
so that a delegate can never spend more than any of its ancestors allow.

Where the package does not refuse with a ``TokenError`` but lets another exception escape
(a token holding a lone surrogate, which PyJWT cannot encode as UTF-8; a compact token whose
``budget_usd`` in cents overflows a float, which it cannot round), this module raises
``TokenError`` with code ``token_malformed``: the token is refused either way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import BACKEND as _BACKEND
from . import Ledger
from . import jwt as _jwt
from . import verify_batch as _verify_many
from ._decision import ReservationLike
from .errors import BudgetExhaustedError, HopgateError
from .jwt import _check_claims, _json_object, _now, _parsed, _Parsed, _Split

if _BACKEND == "native":
    from ._native import jws_split as _jws_split
else:
    from .reference import jws_split as _jws_split

__all__ = [
    "TOKEN_MISSING",
    "TOKEN_MALFORMED",
    "SIGNATURE_INVALID",
    "TOKEN_EXPIRED",
    "SCOPE_INSUFFICIENT",
    "BUDGET_EXCEEDED",
    "DEPTH_EXCEEDED",
    "BUDGET_UNDECLARED",
    "AipClaims",
    "BudgetDecision",
    "BudgetGate",
    "CompactToken",
    "JwtChain",
    "Link",
    "TokenError",
    "budget_path",
    "verify_batch",
]

TOKEN_MISSING = "token_missing"
TOKEN_MALFORMED = "token_malformed"
SIGNATURE_INVALID = "signature_invalid"
TOKEN_EXPIRED = "token_expired"
SCOPE_INSUFFICIENT = "scope_insufficient"
BUDGET_EXCEEDED = "budget_exceeded"
DEPTH_EXCEEDED = "depth_exceeded"
BUDGET_UNDECLARED = "budget_undeclared"
"""``BudgetGate``'s refusal of a chain that declares no budget at all (not a package code)."""

LINK_TYP = "aip-link+jwt"
LEGACY_TYP = "aip+jwt"
SEPARATOR = "~"


class TokenError(HopgateError, ValueError):
    """An AIP token refused. ``code`` is the package's error code for the same token; the
    message says what was wrong. A ``ValueError``, as hopgate's other refusals of input are."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code

    def error_code(self) -> str:
        """``code``, as the package's method returns it."""
        return self.code

    def __reduce__(self) -> tuple[type[TokenError], tuple[str, str]]:
        # Pickled with its code (a batch's results may cross processes).
        return (type(self), (str(self), self.code))

    @property
    def wire_code(self) -> str:
        """The code with the ``aip_`` prefix the draft's wire format uses."""
        return self.code if self.code.startswith("aip_") else "aip_" + self.code


def _malformed(detail: str) -> TokenError:
    return TokenError(f"token is malformed: {detail}", TOKEN_MALFORMED)


def _bad_signature(detail: str) -> TokenError:
    return TokenError(f"signature is invalid: {detail}", SIGNATURE_INVALID)


def _expired(detail: str) -> TokenError:
    return TokenError(f"token has expired: {detail}", TOKEN_EXPIRED)


# -- the compact claims, read as the package's pydantic model reads them (lax mode) ---------

# What Rust's str::trim strips (Unicode White_Space); Python's str.strip() would also strip
# the separators U+001C..U+001F, which the model refuses.
_TRIMMED = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_INT_TEXT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?", re.ASCII)
_FLOAT_TEXT = re.compile(
    r"[+-]?(?:(?i:inf|infinity|nan)|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)", re.ASCII
)
# Floats the model turns into integers lie strictly inside the i64 range.
_I64_EDGE = 9.223372036854775808e18


class _Refused(Exception):
    """One claim the model refuses (internal: becomes ``token_malformed``)."""


def _lax_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _Refused(f"{name} must be a string")
    return value


def _lax_int(value: Any, name: str) -> int:
    if isinstance(value, int):  # bool included: true is 1
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(f"{name} must be a finite number")
        if value % 1 != 0:
            raise _Refused(f"{name} must be an integer, not a number with a fraction")
        if not -_I64_EDGE < value < _I64_EDGE:
            raise _Refused(f"{name} is too large an integer")
        return int(value)
    if isinstance(value, str):
        text = value.strip(_TRIMMED)
        if _INT_TEXT.fullmatch(text) is None:
            raise _Refused(f"{name} is not an integer: {value[:40]!r}")
        try:
            return int(text.partition(".")[0])
        except ValueError:  # more digits than the interpreter converts
            raise _Refused(f"{name} has too many digits") from None
    raise _Refused(f"{name} must be an integer")


def _lax_float(value: Any, name: str) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int):  # bool included: true is 1.0
        try:
            return float(value)
        except OverflowError:
            raise _Refused(f"{name} is out of a float's range") from None
    if isinstance(value, str):
        text = value.strip(_TRIMMED)
        # Underscores are dropped, except at either end or doubled (refused).
        if text[:1] == "_" or text[-1:] == "_" or "__" in text:
            raise _Refused(f"{name} is not a number: {value[:40]!r}")
        text = text.replace("_", "")
        if _FLOAT_TEXT.fullmatch(text) is None:
            raise _Refused(f"{name} is not a number: {value[:40]!r}")
        return float(text)
    raise _Refused(f"{name} must be a number")


def _lax_str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list):
        raise _Refused(f"{name} must be a list")
    for item in value:
        _lax_str(item, f"an item of {name}")
    return list(value)


@dataclass(frozen=True)
class AipClaims:
    """The claims of a compact token, with the values the package's ``AipClaims`` holds."""

    iss: str
    sub: str
    scope: list[str]
    budget_usd: Optional[float]
    max_depth: int
    iat: int
    exp: int

    @staticmethod
    def from_payload(payload: dict[str, Any]) -> AipClaims:
        """The claims of a decoded payload; ``TokenError`` (``token_malformed``) names the
        first claim the model refuses. Other members are ignored."""
        try:
            missing = [name for name in ("iss", "sub", "scope", "iat", "exp") if name not in payload]
            if missing:
                raise _Refused(f"missing claims: {', '.join(missing)}")
            budget = payload.get("budget_usd")
            return AipClaims(
                iss=_lax_str(payload["iss"], "iss"),
                sub=_lax_str(payload["sub"], "sub"),
                scope=_lax_str_list(payload["scope"], "scope"),
                budget_usd=None if budget is None else _lax_float(budget, "budget_usd"),
                max_depth=_lax_int(payload.get("max_depth", 0), "max_depth"),
                iat=_lax_int(payload["iat"], "iat"),
                exp=_lax_int(payload["exp"], "exp"),
            )
        except _Refused as refused:
            raise _malformed(str(refused)) from None


class CompactToken:
    """A verified compact token (``typ: aip+jwt``)."""

    __slots__ = ("_claims",)

    def __init__(self, claims: AipClaims) -> None:
        self._claims = claims

    @property
    def claims(self) -> AipClaims:
        """The verified claims."""
        return self._claims

    def has_scope(self, scope: str) -> bool:
        """Whether ``scope`` is one of the token's scope strings (exactly; no wildcards)."""
        return scope in self._claims.scope

    @staticmethod
    def verify(token_str: Any, public_key_bytes: Any) -> CompactToken:
        """Verify a compact token against a raw 32-byte Ed25519 public key, as the package's
        ``CompactToken.verify`` does (``exp``, ``nbf`` and ``iat`` against the real clock);
        ``TokenError`` otherwise."""
        try:
            header = _jwt.get_unverified_header(token_str)
        except Exception as error:  # the package refuses whatever the header read raises
            raise _malformed(f"header: {error}") from None
        if header.get("typ") != LEGACY_TYP:
            raise _malformed(f"compact token typ must be {LEGACY_TYP}")
        try:
            # cryptography's reading of the key, so that the same key arguments pass.
            key = Ed25519PublicKey.from_public_bytes(public_key_bytes)
        except Exception as error:
            raise _malformed(f"public key: {error}") from None
        walk = _Walk()
        _compact_walk(walk, _jwt._parse(token_str), key)
        walk.settle(_verify_many)
        return walk.compact()


# -- the chain's link model ----------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One link of a chain, as the package's ``Link`` holds it; index 0 is the authority."""

    issuer: str
    delegate: Optional[str] = None
    tools: Optional[frozenset[str]] = None
    domains: Optional[frozenset[str]] = None
    budget_cents: Optional[int] = None
    expiry: Optional[int] = None
    context: Optional[str] = None
    principal: Optional[str] = None
    max_depth: Optional[int] = None


def _permits(pattern: str, value: str) -> bool:
    """A granted tool pattern covers a requested one: equal, ``*``, or a ``prefix*`` the
    value starts with (so ``tool:*`` never turns into a wider wildcard below it)."""
    if pattern == value or pattern == "*":
        return True
    return pattern.endswith("*") and value.startswith(pattern[:-1])


def _walk_links(links: list[Link], now: Any) -> Link:
    """Depth, attenuation and delegation context over the links, in the package's order;
    the authority in force at the leaf, or the first refusal."""
    if not links:
        raise _malformed("chain has no links")
    root = links[0]
    if root.tools is None:
        raise _malformed("the authority link declares no aip_tools")
    if root.expiry is None:
        raise _malformed("the authority link declares no exp")
    if root.max_depth is None or root.max_depth < 0:
        raise _malformed("the authority link declares no non-negative aip_max_depth")
    for index, link in enumerate(links):
        if link.tools == frozenset():
            raise _malformed(f"link {index} declares no tools (an empty list)")
        if link.domains == frozenset():
            raise _malformed(f"link {index} declares no domains (an empty list)")
    if len(links) - 1 > root.max_depth:
        raise TokenError(
            f"delegation depth exceeded: {len(links) - 1} delegations, at most {root.max_depth}",
            DEPTH_EXCEEDED,
        )
    if root.budget_cents is not None and root.budget_cents < 0:
        raise TokenError("budget ceiling exceeded: the authority's budget is negative", BUDGET_EXCEEDED)
    if root.expiry < now:
        raise _expired(f"the authority link expired at {root.expiry}")

    held = root
    for index, link in enumerate(links[1:], start=1):
        if link.max_depth is not None:
            raise _malformed(f"delegation link {index} declares aip_max_depth")
        if not link.context or not link.context.strip():
            raise _malformed(f"delegation link {index} carries no aip_ctx")
        assert held.tools is not None  # the root's, or a link's that replaced it
        tools = held.tools
        if link.tools is not None:
            # A subset is covered outright (every pattern covers itself).
            wider = [] if link.tools <= held.tools else sorted(
                t for t in link.tools if not any(_permits(p, t) for p in held.tools)
            )
            if wider:
                raise TokenError(
                    f"insufficient scope: link {index} grants tools its issuer lacks: {', '.join(wider)}",
                    SCOPE_INSUFFICIENT,
                )
            tools = link.tools
        domains = held.domains
        if link.domains is not None:
            if held.domains is not None and not link.domains <= held.domains:
                wider = sorted(link.domains - held.domains)
                raise TokenError(
                    f"insufficient scope: link {index} grants domains its issuer lacks: {', '.join(wider)}",
                    SCOPE_INSUFFICIENT,
                )
            domains = link.domains
        budget = held.budget_cents
        if link.budget_cents is not None:
            if link.budget_cents < 0 or (budget is not None and link.budget_cents > budget):
                raise TokenError(
                    f"budget ceiling exceeded: link {index} declares {link.budget_cents} cents "
                    f"under {budget}",
                    BUDGET_EXCEEDED,
                )
            budget = link.budget_cents
        expiry = held.expiry
        assert expiry is not None
        if link.expiry is not None:
            if link.expiry > expiry or link.expiry < now:
                raise _expired(f"link {index} expires at {link.expiry} (its issuer's at {expiry})")
            expiry = link.expiry
        principal = held.principal
        if link.principal is not None:
            if principal is not None and link.principal != principal:
                raise _malformed(f"link {index} substitutes the principal {principal!r} with {link.principal!r}")
            principal = link.principal
        held = Link(
            issuer=link.issuer, delegate=link.delegate, tools=tools, domains=domains,
            budget_cents=budget, expiry=expiry, context=link.context, principal=principal,
            max_depth=root.max_depth,
        )
    return held


# -- reading a link's claims --------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL_TEXT = re.compile(r"[A-Za-z0-9_-]+")


def _holder_key(claims: dict[str, Any]) -> bytes:
    """The raw Ed25519 key a link names in ``cnf.jwk`` (RFC 8037 OKP)."""
    cnf = claims.get("cnf")
    jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
    if not (
        isinstance(jwk, dict)
        and jwk.get("kty") == "OKP"
        and jwk.get("crv") == "Ed25519"
        and isinstance(jwk.get("x"), str)
    ):
        raise _malformed("cnf must carry an Ed25519 OKP jwk")
    x: str = jwk["x"]
    if _B64URL_TEXT.fullmatch(x) is None:
        raise _malformed("cnf jwk x is not base64url")
    try:
        key = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    except binascii.Error as error:
        raise _malformed(f"cnf jwk x is not base64url: {error}") from None
    if len(key) != 32:
        raise _malformed(f"cnf jwk x is {len(key)} bytes, not a 32-byte Ed25519 key")
    return key


def _opt_str(claims: dict[str, Any], name: str) -> Optional[str]:
    value = claims.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _malformed(f"{name} must be a string")


def _opt_int(claims: dict[str, Any], name: str) -> Optional[int]:
    value = claims.get(name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _malformed(f"{name} must be an integer")


def _tool_set(claims: dict[str, Any], name: str) -> Optional[frozenset[str]]:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _malformed(f"{name} must be an array of strings")
    return frozenset(value)


def _link_of(claims: dict[str, Any]) -> Link:
    issuer = _opt_str(claims, "iss")
    delegate = _opt_str(claims, "sub")
    if issuer is None or delegate is None:
        raise _malformed("a link must carry iss and sub")
    return Link(
        issuer=issuer,
        delegate=delegate,
        tools=_tool_set(claims, "aip_tools"),
        domains=_tool_set(claims, "aip_domains"),
        budget_cents=_opt_int(claims, "aip_budget_cents"),
        expiry=_opt_int(claims, "exp"),
        context=_opt_str(claims, "aip_ctx"),
        principal=_opt_str(claims, "aip_principal"),
        max_depth=_opt_int(claims, "aip_max_depth"),
    )


def _prev_digest(segment: str) -> str:
    try:
        data = segment.encode("ascii")
    except UnicodeEncodeError:
        raise _malformed("a link that is not ASCII cannot be named by its successor's prev") from None
    return _b64url(hashlib.sha256(data).digest())


# -- one token's walk, its signatures checked later ---------------------------------------------

# The claims checks PyJWT runs inside the package: a link's time claims are left to the walk.
_LINK_OPTIONS = {**_jwt._DEFAULT_OPTIONS, "verify_exp": False, "verify_iat": False, "verify_nbf": False}
_COMPACT_OPTIONS = dict(_jwt._DEFAULT_OPTIONS)


def _UNUSED_CLOCK() -> float:
    """The clock of a link's claims checks, which judge no time claim."""
    return 0.0


class _Walk:
    """One token's verification in the package's order, with each signature recorded where
    the package would check it instead of checked at once. ``refusal`` is the structural
    refusal met after the last recorded signature, if any; the token's first refusal is the
    first recorded signature that fails, else ``refusal``."""

    __slots__ = ("pending", "signers", "verdicts", "refusal", "segments", "signing_inputs", "links",
                 "unreadable", "holder", "compact_claims", "legacy", "now")

    def __init__(self) -> None:
        self.pending: list[tuple[bytes, bytes, bytes]] = []
        self.signers: list[str] = []  # whose signature each pending one is, for the message
        self.verdicts: list[bool] = []
        self.refusal: Optional[TokenError] = None
        self.segments: list[str] = []
        self.signing_inputs: list[bytes] = []
        # Each link read as the package reads it after its walk, and the first link it
        # refuses then (reported only when the walk itself found nothing). The claims
        # themselves are not kept: a batch holding every token's dicts until its end made
        # the garbage collector's passes cost as much as the signatures.
        self.links: list[Link] = []
        self.unreadable: Optional[TokenError] = None
        self.holder: Optional[bytes] = None
        self.compact_claims: Optional[AipClaims] = None
        self.legacy = False
        self.now: Any = None

    def settle(self, verify_many: Any) -> None:
        """Check this walk's own signatures (single-token calls)."""
        if self.pending:
            verdicts = verify_many(
                [p[0] for p in self.pending], [p[1] for p in self.pending],
                [p[2] for p in self.pending], rule="openssl",
            )
            self.verdicts = [bool(v) for v in verdicts.tolist()]

    def first_refusal(self) -> Optional[TokenError]:
        for signer, verdict in zip(self.signers, self.verdicts):
            if not verdict:
                return _bad_signature(f"{signer} does not verify")
        return self.refusal

    def compact(self) -> CompactToken:
        refusal = self.first_refusal()
        if refusal is not None:
            raise refusal
        assert self.compact_claims is not None
        return CompactToken(self.compact_claims)

    def chain(self) -> JwtChain:
        refusal = self.first_refusal()
        if refusal is not None:
            raise refusal
        if self.legacy:
            claims = self.compact_claims
            assert claims is not None
            if claims.budget_usd is not None and not math.isfinite(claims.budget_usd):
                raise _malformed("budget_usd is not a finite number")
            cents = None if claims.budget_usd is None else claims.budget_usd * 100
            if cents is not None and not math.isfinite(cents):
                # The package fails here with OverflowError (rounding an infinity).
                raise _malformed("budget_usd in cents is not a finite number")
            links = [Link(
                issuer=claims.iss,
                delegate=claims.sub,
                tools=frozenset(claims.scope),
                budget_cents=None if cents is None else round(cents),
                expiry=claims.exp,
                max_depth=claims.max_depth,
            )]
        else:
            if self.unreadable is not None:
                raise self.unreadable
            links = self.links
        effective = _walk_links(links, self.now)
        return JwtChain(self.segments, self.signing_inputs, links, effective, self.holder)


def _segment(data: bytes, split: _Split) -> _Parsed:
    """A segment parsed as ``jwt.get_unverified_header`` parses it (the header's ``kid``,
    ``crit`` and ``b64`` checked); PyJWT's refusals are raised as PyJWT's exceptions."""
    return _parsed(data, split, _HEADERS)


# Parsed headers by their bytes, shared read-only: the links of one issuer mostly share one.
# Bounded, so that a flood of distinct headers cannot grow it without end.
_HEADERS: dict[bytes, dict[str, Any]] = {}
_HEADERS_MAX = 4096


def _split_all(segments: list[bytes]) -> list[_Split]:
    if len(_HEADERS) > _HEADERS_MAX:
        _HEADERS.clear()
    return list(_jws_split(segments)) if segments else []


def _compact_walk(walk: _Walk, parsed: _Parsed, key: Ed25519PublicKey) -> None:
    """The package's ``CompactToken.verify`` from its ``jwt.decode`` on (the header was
    read and its ``typ`` checked by the caller): every PyJWT refusal but an expired token
    or a bad signature is ``token_malformed``; then the claims model."""
    try:
        _jwt._attach_payload(parsed, None)
        public = _jwt._signature_check(parsed, key, ["EdDSA"], False, _jwt._public_material)
    except Exception as error:  # as the package: whatever PyJWT raises here is malformed
        walk.refusal = _malformed(str(error))
        return
    assert isinstance(public, bytes)
    walk.pending.append((parsed.signing_input, parsed.signature, public))
    walk.signers.append("the compact token's signature under the given key")
    try:
        payload = _json_object(parsed.payload, "payload")
        _check_claims(payload, _COMPACT_OPTIONS, None, None, None, 0, _now)
    except _jwt.ExpiredSignatureError:
        walk.refusal = _expired("exp is not after the current time")
        return
    except Exception as error:
        walk.refusal = _malformed(str(error))
        return
    try:
        walk.compact_claims = AipClaims.from_payload(payload)
    except TokenError as refusal:
        walk.refusal = refusal


_KEY_OBJECTS: dict[bytes, Ed25519PublicKey] = {}


def _key_object(key: bytes) -> Ed25519PublicKey:
    found = _KEY_OBJECTS.get(key)
    if found is None:
        if len(_KEY_OBJECTS) > _HEADERS_MAX:
            _KEY_OBJECTS.clear()
        found = _KEY_OBJECTS[key] = Ed25519PublicKey.from_public_bytes(key)
    return found


def _chain_prelude(token: Any, root_key: Any) -> list[str]:
    """The package's checks before any link is read: the root key, the token's type, empty
    links. Returns the links."""
    if not isinstance(root_key, bytes) or len(root_key) != 32:
        raise _malformed("the root key must be a 32-byte Ed25519 public key (bytes)")
    if not isinstance(token, str):
        raise _malformed(f"the token must be a string, not {type(token).__name__}")
    if not token:
        raise TokenError("token is missing", TOKEN_MISSING)
    segments = token.split(SEPARATOR)
    if not all(segments):
        raise _malformed("empty link in chain")
    return segments


def _utf8(segment: str) -> Optional[bytes]:
    """The segment's bytes, or None when it holds a lone surrogate (refused when the walk
    reaches it, where PyJWT fails to encode it inside the package)."""
    try:
        return segment.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _chain_walk(
    walk: _Walk, segments: list[str], data: list[Optional[bytes]], root_key: bytes, splits: list[_Split]
) -> None:
    """The package's ``JwtChain.verify`` over the links, signatures recorded, stopping at
    the first structural refusal."""
    walk.segments = segments

    def parse(index: int) -> Optional[_Parsed]:
        item = data[index]
        try:
            if item is None:
                raise _malformed(f"link {index} is not valid Unicode text (a lone surrogate)")
            return _segment(item, splits[index])
        except _jwt.PyJWTError as error:
            walk.refusal = _malformed(f"link {index}: {error}")
        except TokenError as refusal:
            walk.refusal = refusal
        return None

    first = parse(0)
    if first is None:
        return
    if len(segments) == 1 and first.header.get("typ") == LEGACY_TYP:
        walk.legacy = True
        walk.signing_inputs = [first.signing_input]
        _compact_walk(walk, first, _key_object(root_key))
        return
    key = root_key
    previous_sub: Any = None
    for index in range(len(segments)):
        parsed = first if index == 0 else parse(index)
        if parsed is None:
            return
        header = parsed.header
        if header.get("alg") != "EdDSA" or header.get("typ") != LINK_TYP:
            walk.refusal = _bad_signature(f"link {index}: the header must be alg EdDSA, typ {LINK_TYP}")
            return
        try:
            # ``alg`` is pinned above, so PyJWT's key and algorithm checks pass: the key to
            # check against is the raw key itself.
            _jwt._attach_payload(parsed, None)
        except _jwt.PyJWTError as error:
            walk.refusal = _malformed(f"link {index}: {error}")
            return
        walk.pending.append((parsed.signing_input, parsed.signature, key))
        walk.signers.append(
            f"link {index}'s signature under "
            + ("the root key" if index == 0 else f"the key link {index - 1} names in cnf")
        )
        try:
            claims = _json_object(parsed.payload, "payload")
            _check_claims(claims, _LINK_OPTIONS, None, None, None, 0, _UNUSED_CLOCK)
        except _jwt.PyJWTError as error:
            walk.refusal = _malformed(f"link {index}: {error}")
            return
        try:
            if index > 0:
                if claims.get("prev") != _prev_digest(segments[index - 1]):
                    raise _bad_signature(f"link {index}: prev does not name link {index - 1}")
                if claims.get("iss") != previous_sub:
                    raise _bad_signature(f"link {index}: iss is not link {index - 1}'s sub")
            key = _holder_key(claims)
        except TokenError as refusal:
            walk.refusal = refusal
            return
        previous_sub = claims.get("sub")
        if walk.unreadable is None:
            try:
                walk.links.append(_link_of(claims))
            except TokenError as refusal:
                walk.unreadable = refusal
        walk.holder = key
        walk.signing_inputs.append(parsed.signing_input)


def _walks(tokens: Sequence[Any], root_keys: Sequence[Any], now: Any) -> list[Union[_Walk, TokenError]]:
    """Every token walked up to its signatures; the segments of all of them split and
    decoded in one native call."""
    prelude: list[Union[list[str], TokenError]] = []
    for token, key in zip(tokens, root_keys):
        try:
            prelude.append(_chain_prelude(token, key))
        except TokenError as refusal:
            prelude.append(refusal)
    data = [[_utf8(s) for s in p] if isinstance(p, list) else [] for p in prelude]
    splits = iter(_split_all([d for token_data in data for d in token_data if d is not None]))
    out: list[Union[_Walk, TokenError]] = []
    wall = int(time.time()) if now is None else now
    for segments, token_data, key in zip(prelude, data, root_keys):
        if isinstance(segments, TokenError):
            out.append(segments)
            continue
        walk = _Walk()
        walk.now = wall
        token_splits = [None if d is None else next(splits) for d in token_data]
        _chain_walk(walk, segments, token_data, key, token_splits)
        out.append(walk)
    return out


class JwtChain:
    """A verified JWT chain (or a legacy compact token taken as a one-link chain)."""

    __slots__ = ("_segments", "_signing_inputs", "_links", "_effective", "_holder")

    def __init__(
        self,
        segments: list[str],
        signing_inputs: list[bytes],
        links: list[Link],
        effective: Link,
        holder: Optional[bytes],
    ) -> None:
        self._segments = segments
        self._signing_inputs = signing_inputs
        self._links = links
        self._effective = effective
        self._holder = holder

    @property
    def links(self) -> list[Link]:
        """The links, authority first."""
        return list(self._links)

    @property
    def effective(self) -> Link:
        """The authority in force at the leaf: each dimension the nearest declared value
        walking back from the leaf; ``max_depth`` the authority's."""
        return self._effective

    @property
    def signing_inputs(self) -> list[bytes]:
        """Each link's JWS signing input (``header.payload``), authority first."""
        return list(self._signing_inputs)

    def issuer(self) -> str:
        """The authority link's ``iss``."""
        return self._links[0].issuer

    def depth(self) -> int:
        """The number of delegations (links after the authority)."""
        return len(self._links) - 1

    def leaf_delegate(self) -> Optional[str]:
        """The last link's ``sub``."""
        return self._links[-1].delegate

    def leaf_holder_key(self) -> bytes:
        """The raw Ed25519 key the last link names in ``cnf``: the key a relying party must
        see proof of possession for (any prefix of a valid chain verifies too, with wider
        authority)."""
        if self._holder is None:
            raise _malformed("a legacy compact token names no holder key")
        return self._holder

    def serialize(self) -> str:
        """The chain as transmitted: the links joined with ``~``."""
        return SEPARATOR.join(self._segments)

    def authorize(self, tool: str, domain: Optional[str] = None) -> None:
        """Refuse (``scope_insufficient``) a request outside the leaf's authority: no tool
        pattern covers ``tool``, or domains are declared and ``domain`` is not one."""
        held = self._effective
        if held.tools is None or not any(_permits(p, tool) for p in held.tools):
            raise TokenError(f"insufficient scope: {tool}", SCOPE_INSUFFICIENT)
        if domain is not None and held.domains is not None and domain not in held.domains:
            raise TokenError(f"insufficient scope: {domain}", SCOPE_INSUFFICIENT)

    @staticmethod
    def verify(token: Any, root_public_key_bytes: Any, now: Optional[int] = None) -> JwtChain:
        """Verify a chain against the root key the caller resolved for its issuer (binding
        that key to the issuer the chain names is the caller's), as the package's
        ``JwtChain.verify`` does; ``now`` (default: the clock) judges expiry in the walk."""
        walk = _walks([token], [root_public_key_bytes], now)[0]
        if isinstance(walk, TokenError):
            raise walk
        walk.settle(_verify_many)
        return walk.chain()


def verify_batch(
    tokens: Sequence[Any],
    root_public_keys: Union[bytes, Sequence[Any]],
    now: Optional[int] = None,
) -> list[Union[JwtChain, TokenError]]:
    """``JwtChain.verify`` over many tokens: for each, its verified chain or the
    ``TokenError`` it would raise (returned, not raised).

    ``root_public_keys`` is one key for every token, or a list or tuple of keys, one per
    token. Every signature of every token is checked in one
    ``hopgate.verify_batch(..., rule="openssl")`` call; ``now`` (and the clock, for the
    compact form's PyJWT checks) is read once for the batch."""
    count = len(tokens)
    if isinstance(root_public_keys, (list, tuple)):
        if len(root_public_keys) != count:
            raise ValueError(f"root_public_keys: {len(root_public_keys)} keys for {count} tokens")
        keys: Sequence[Any] = root_public_keys
    else:
        keys = [root_public_keys] * count
    walks = _walks(tokens, keys, now)
    pending = [p for w in walks if isinstance(w, _Walk) for p in w.pending]
    if pending:
        verdicts = iter(_verify_many(
            [p[0] for p in pending], [p[1] for p in pending], [p[2] for p in pending],
            rule="openssl",
        ).tolist())
        for walk in walks:
            if isinstance(walk, _Walk):
                walk.verdicts = [bool(next(verdicts)) for _ in walk.pending]
    results: list[Union[JwtChain, TokenError]] = []
    for walk in walks:
        if isinstance(walk, TokenError):
            results.append(walk)
            continue
        try:
            results.append(walk.chain())
        except TokenError as refusal:
            results.append(refusal)
    return results


# -- spending: a chain's budgets in a hopgate ledger ------------------------------------------


_U64_MAX = 2**64 - 1


def budget_path(chain: JwtChain) -> list[tuple[bytes, int]]:
    """The ledger path of a verified chain: one account per link from the first link that
    has a budget in force, each keyed by the SHA-256 of the link's signing input and capped
    by the budget in force there (its own ``aip_budget_cents``, else its issuer's). The caps
    never grow along the path (the walk refused a widening), so a reservation on the path
    holds the cost on the leaf and on every ancestor at once: sibling delegates share their
    parent's cap. Empty when no link declares a budget."""
    path: list[tuple[bytes, int]] = []
    cap: Optional[int] = None
    for link, signing_input in zip(chain._links, chain._signing_inputs):
        if link.budget_cents is not None:
            cap = link.budget_cents
        if cap is not None:
            # The ledger counts in u64: a cap beyond it can never be reached anyway.
            path.append((hashlib.sha256(signing_input).digest(), min(cap, _U64_MAX)))
    return path


@dataclass(frozen=True)
class BudgetDecision:
    """``BudgetGate.check``'s answer. ``code`` is ``"ok"``, a ``TokenError`` code, or
    ``"budget_undeclared"``; ``reservation`` (only when allowed) holds the cost until it is
    committed or released."""

    code: str
    reason: str
    chain: Optional[JwtChain] = None
    reservation: Optional[ReservationLike] = field(default=None, repr=False)

    @property
    def allowed(self) -> bool:
        return self.code == "ok"

    def __bool__(self) -> bool:
        return self.allowed


class BudgetGate:
    """Verifies an AIP chain, authorizes the request against its leaf, and reserves the
    request's cost on every link's budget in a hopgate ledger.

    ``ledger`` is required (``hopgate.Ledger()`` for one process, ``hopgate.Ledger.open(url)``
    for workers and fleets sharing budgets): AIP tokens carry budgets but no spending, so
    what was spent lives there. A chain that declares no budget is refused
    (``budget_undeclared``) unless ``allow_unbudgeted=True``, in which case it is allowed
    without a reservation. A store failure raises ``hopgate.StoreError`` and allows nothing.

    Each link is an account of the ledger for as long as the ledger keeps its accounts
    (they do not expire with the link's ``exp``): a gate that meets an unbounded stream of
    new chains fills the ledger's ``max_accounts`` (SPEC §5.6), after which new chains are
    refused. Give such a gate a ledger sized for the chains of its budgets' lifetime.
    """

    def __init__(self, ledger: Ledger, root_public_key: bytes, *, allow_unbudgeted: bool = False) -> None:
        if not isinstance(root_public_key, bytes) or len(root_public_key) != 32:
            raise ValueError("root_public_key must be a 32-byte Ed25519 public key")
        self.ledger = ledger
        self.root_public_key = root_public_key
        self.allow_unbudgeted = allow_unbudgeted

    def check(
        self,
        token: str,
        *,
        tool: str,
        cost: int,
        domain: Optional[str] = None,
        now: Optional[int] = None,
    ) -> BudgetDecision:
        """Allow the request (holding ``cost`` cents on every account of the chain's path)
        or say why not. Refusals are decisions, never exceptions; a store failure raises."""
        if not isinstance(cost, int) or isinstance(cost, bool) or not 0 <= cost <= _U64_MAX:
            raise ValueError(f"cost must be an integer in 0..=2**64-1, not {cost!r}")
        try:
            chain = JwtChain.verify(token, self.root_public_key, now)
            chain.authorize(tool, domain)
        except TokenError as refusal:
            return BudgetDecision(refusal.code, str(refusal))
        return self._reserve(chain, cost)

    def _reserve(self, chain: JwtChain, cost: int) -> BudgetDecision:
        path = budget_path(chain)
        if not path:
            if self.allow_unbudgeted:
                return BudgetDecision("ok", "allowed: the chain declares no budget", chain)
            return BudgetDecision(
                BUDGET_UNDECLARED,
                "the chain declares no budget (aip_budget_cents); this gate spends only under one",
                chain,
            )
        try:
            reservation = self.ledger.budget(path).reserve(cost)
        except BudgetExhaustedError as exhausted:
            return BudgetDecision(
                BUDGET_EXCEEDED, f"budget ceiling exceeded: {exhausted}", chain,
            )
        return BudgetDecision("ok", f"allowed: {cost} cents held on {len(path)} accounts", chain, reservation)
