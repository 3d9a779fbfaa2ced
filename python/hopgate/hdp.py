"""HDP provenance records verified in batches, with the results of the HDP SDKs' verifier.

An HDP record (``hdp`` 0.1, as the ``hdp-langchain`` and ``hdp-crewai`` SDKs write it) is a
JSON object: a ``header``, the ``principal`` a person delegated for, the ``scope`` of the
delegation, a ``chain`` of hops (each agent that acted), and the issuer's ``signature``. The
issuer signs the root and every hop with one Ed25519 key; each hop's signature covers every
hop before it (docs/GUIDE.md, "HDP provenance records").

``verify_chain(token, public_key)`` returns what ``hdp_langchain.verify.verify_chain``
returns for the same arguments (the same ``VerificationResult`` field values, the same
violation texts, the same exceptions); ``verify_chains(tokens, public_key)`` does the same
for many records, their canonical JSON written and all their signatures checked in one
native call (GIL released, on all cores). Signatures are judged by the rule of the SDKs'
Ed25519 library (pyca/cryptography's: ``rule="openssl"``, docs/SPEC.md §3.4).
``canonical_json(value)`` is the RFC 8785 form the signatures cover (what the SDKs' ``jcs``
library writes), for signing records.

``public_key`` is the issuer's key as 32 raw bytes (``bytes`` or ``bytearray``) or a
pyca/cryptography ``Ed25519PublicKey``. Keys of the wrong length raise ``ValueError`` when a
record needs them, as ``Ed25519PublicKey.from_public_bytes`` does; any other object cannot
verify anything, so every record that reaches its signatures fails at step 2.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union
from uuid import UUID

from . import BACKEND as _BACKEND

if _BACKEND == "native":
    from ._native import canonical_json
    from ._native import hdp_verify as _hdp_verify
else:
    from .reference import canonical_json
    from .reference import hdp_verify as _hdp_verify

__all__ = ["MAX_SAFE_INTEGER", "HopVerification", "VerificationResult", "canonical_json", "verify_chain", "verify_chains"]

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer an HDP record may carry in its integer fields (IEEE 754 doubles
represent every integer up to it)."""

_TOP_LEVEL = frozenset({"hdp", "header", "principal", "scope", "chain", "signature"})
_ID_TYPES = frozenset({"opaque", "email", "uuid", "did", "poh"})
_CLASSIFICATIONS = frozenset({"public", "internal", "confidential", "restricted"})
_SIGNED_FIELDS = ["header", "principal", "scope"]
_SIGNATURE_TEXT = re.compile(r"[A-Za-z0-9_-]{86}")
_EXTENSION_ID_TYPE = re.compile(r"x-[^\r\n\u2028\u2029]+")


@dataclass
class HopVerification:
    """The verdict on one hop's signature."""

    seq: int
    agent_id: str
    valid: bool
    reason: str = ""


@dataclass
class VerificationResult:
    """A record's verdict: ``valid``, the first ``violations`` met (empty when valid), the
    hops whose signatures were checked, and, apart from validity, the hops recorded at or
    after the header's ``expires_at``."""

    valid: bool
    token_id: str
    session_id: str
    hop_count: int
    hop_results: list[HopVerification] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    recorded_after_period: list[int] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """The number of hops."""
        return self.hop_count


# -- reading and validating a record -----------------------------------------------------


def _members_unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise ValueError(f"duplicate JSON object member {name!r}")
        members[name] = value
    return members


def _no_constant(text: str) -> Any:
    raise ValueError(f"non-finite JSON number {text}")


def _json_problem(value: Any, path: str) -> Optional[str]:
    """Why ``value`` is not plain JSON (None when it is); the first problem, depth first."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            exact = math.isfinite(float(value)) and int(float(value)) == value
        except (OverflowError, ValueError):
            exact = False
        return None if exact else f"{path} integer must be exactly representable as an IEEE 754 number"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} must not contain non-finite numbers"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path} contains invalid Unicode"
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                return f"{path} object keys must be strings"
            problem = _json_problem(name, f"{path} key") or _json_problem(item, f"{path}.{name}")
            if problem:
                return problem
        return None
    return f"{path} contains a value that is not JSON"


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_SAFE_INTEGER


def _canonical_uuid(text: Any, version: Optional[int]) -> bool:
    if not isinstance(text, str):
        return False
    try:
        parsed = UUID(text)
    except ValueError:
        return False
    return (version is None or parsed.version == version) and str(parsed) == text.lower()


def _header_problem(header: dict[str, Any]) -> Optional[str]:
    if not _canonical_uuid(header.get("token_id"), 4):
        return "header.token_id must be a version 4 UUID"
    for name in ("issued_at", "expires_at"):
        if not _is_int(header.get(name), 0):
            return f"header.{name} must be an integer from 0 to {MAX_SAFE_INTEGER}"
    if header["expires_at"] <= header["issued_at"]:
        return "header.expires_at must be greater than header.issued_at"
    session = header.get("session_id")
    if not isinstance(session, str) or not session:
        return "header.session_id must be a non-empty string"
    if not isinstance(header.get("version"), str):
        return "header.version must be a string"
    if "parent_token_id" in header and not _canonical_uuid(header["parent_token_id"], None):
        return "header.parent_token_id must be a UUID string"
    return None


def _principal_problem(principal: dict[str, Any]) -> Optional[str]:
    if not isinstance(principal.get("id"), str):
        return "principal.id must be a string"
    id_type = principal.get("id_type")
    if not isinstance(id_type, str) or (id_type not in _ID_TYPES and not _EXTENSION_ID_TYPE.fullmatch(id_type)):
        return "principal.id_type must be a defined value or match 'x-...'"
    for name in ("poh_credential", "display_name"):
        if name in principal and not isinstance(principal[name], str):
            return f"principal.{name} must be a string"
    if "metadata" in principal and not isinstance(principal["metadata"], dict):
        return "principal.metadata must be an object"
    return None


def _scope_problem(scope: dict[str, Any]) -> Optional[str]:
    if not isinstance(scope.get("intent"), str):
        return "scope.intent must be a string"
    for name in ("authorized_tools", "authorized_resources"):
        if name in scope:
            values = scope[name]
            if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
                return f"scope.{name} must be a list of strings"
    classification = scope.get("data_classification")
    if not isinstance(classification, str) or classification not in _CLASSIFICATIONS:
        return "scope.data_classification must be a defined classification"
    for name in ("network_egress", "persistence"):
        if not isinstance(scope.get(name), bool):
            return f"scope.{name} must be a boolean"
    if "max_hops" in scope and not _is_int(scope["max_hops"], 1):
        return f"scope.max_hops must be a positive integer up to {MAX_SAFE_INTEGER}"
    if "constraints" in scope and not isinstance(scope["constraints"], list):
        return "scope.constraints must be an array"
    if "extensions" in scope and not isinstance(scope["extensions"], dict):
        return "scope.extensions must be an object"
    return None


def _hop_problem(index: int, hop: dict[str, Any]) -> Optional[str]:
    where = f"chain[{index}]"
    if not _is_int(hop.get("seq"), 1):
        return f"{where}.seq must be a positive integer up to {MAX_SAFE_INTEGER}"
    for name in ("agent_id", "agent_type", "action_summary"):
        if not isinstance(hop.get(name), str):
            return f"{where}.{name} must be a string"
    if "agent_fingerprint" in hop and not isinstance(hop["agent_fingerprint"], str):
        return f"{where}.agent_fingerprint must be a string"
    signature = hop.get("hop_signature")
    if not isinstance(signature, str) or not _SIGNATURE_TEXT.fullmatch(signature):
        return f"{where}.hop_signature must be an 86-character base64url string"
    for name in ("timestamp", "parent_hop"):
        if not _is_int(hop.get(name), 0):
            return f"{where}.{name} must be an integer from 0 to {MAX_SAFE_INTEGER}"
    return None


def _record_problem(token: Any) -> Optional[str]:
    """Why ``token`` is not a well-formed HDP record (None when it is); the first problem,
    in the order of the HDP SDKs' input validation."""
    if not isinstance(token, dict):
        return "token must be a dictionary"
    problem = _json_problem(token, "token")
    if problem:
        return problem
    if set(token) != _TOP_LEVEL:
        return "token must contain exactly the six defined top-level fields"
    if not isinstance(token["hdp"], str):
        return "token.hdp must be a string"
    header, principal, scope, chain, signature = (
        token["header"], token["principal"], token["scope"], token["chain"], token["signature"]
    )
    if not isinstance(header, dict):
        return "token.header must be a dictionary"
    if not isinstance(signature, dict):
        return "token.signature must be a dictionary"
    for name in ("alg", "kid", "value"):
        if not isinstance(signature.get(name), str):
            return f"signature.{name} must be a string"
    if not signature["kid"]:
        return "signature.kid must not be empty"
    if not _SIGNATURE_TEXT.fullmatch(signature["value"]):
        return "signature.value must be an 86-character base64url string"
    if "signed_fields" in signature and signature["signed_fields"] != _SIGNED_FIELDS:
        return "signature.signed_fields must be [header, principal, scope]"
    if not isinstance(principal, dict):
        return "token.principal must be a dictionary"
    if not isinstance(scope, dict):
        return "token.scope must be a dictionary"
    if not isinstance(chain, list) or not all(isinstance(hop, dict) for hop in chain):
        return "token.chain must be a list of dictionaries"
    problem = _header_problem(header) or _principal_problem(principal) or _scope_problem(scope)
    if problem:
        return problem
    for index, hop in enumerate(chain):
        problem = _hop_problem(index, hop)
        if problem:
            return problem
    return None


def _read(token: Any) -> tuple[Any, Optional[str]]:
    """The record (text parsed as JSON, members unique, no NaN or Infinity) and why it is
    not a valid one, if it is not."""
    if isinstance(token, str):
        try:
            token = json.loads(token, object_pairs_hook=_members_unique, parse_constant=_no_constant)
        except ValueError as error:
            return None, str(error)
    return token, _record_problem(token)


def _refused(token: Any, problem: str) -> VerificationResult:
    header = token.get("header") if isinstance(token, dict) else None
    chain = token.get("chain") if isinstance(token, dict) else None
    token_id = header.get("token_id") if isinstance(header, dict) else None
    session_id = header.get("session_id") if isinstance(header, dict) else None
    return VerificationResult(
        valid=False,
        token_id=token_id if isinstance(token_id, str) else "unknown",
        session_id=session_id if isinstance(session_id, str) else "unknown",
        hop_count=len(chain) if isinstance(chain, list) else 0,
        violations=[f"Step 0: Input validation failed: {problem}"],
    )


# -- the steps after validation ----------------------------------------------------------


def _structure_violation(token: dict[str, Any]) -> Optional[str]:
    """Step 1 (versions); None when it passes. Step 3 is separate: it follows step 2."""
    version = token["hdp"]
    if version != "0.1":
        return f"Step 1: unsupported HDP version {version!r}"
    if token["header"]["version"] != version:
        return "Step 1: header.version does not match hdp"
    return None


def _sequence_violation(chain: list[dict[str, Any]]) -> Optional[str]:
    """Step 3: seq numbers 1, 2, ..., each parent an earlier hop (or 0), timestamps never
    decreasing; None when it passes."""
    previous: Optional[int] = None
    for index, hop in enumerate(chain):
        expected = index + 1
        if hop["seq"] != expected:
            return f"Step 3: non-sequential seq at position {index}: expected {expected}, got {hop['seq']!r}"
        if hop["parent_hop"] >= expected:
            return f"Step 3: invalid parent_hop at hop {expected}"
        if previous is not None and hop["timestamp"] < previous:
            return f"Step 3: timestamp decreases at hop {expected}"
        previous = hop["timestamp"]
    return None


def _judged(token: dict[str, Any], verdicts: Optional[list[bool]]) -> VerificationResult:
    """Steps 1 to 5 of a validated record; ``verdicts`` are its signatures' (root first),
    None when the key verifies nothing."""
    header, chain = token["header"], token["chain"]
    result = VerificationResult(
        valid=False,
        token_id=header["token_id"],
        session_id=header["session_id"],
        hop_count=len(chain),
        recorded_after_period=[hop["seq"] for hop in chain if hop["timestamp"] >= header["expires_at"]],
    )
    violation = _structure_violation(token)
    if violation is None and not (verdicts and verdicts[0]):
        violation = "Step 2: Root signature invalid"
    if violation is None:
        violation = _sequence_violation(chain)
    if violation is None:
        for hop, good in zip(chain, (verdicts or [])[1:]):
            if not good:
                result.hop_results.append(HopVerification(hop["seq"], hop["agent_id"], False, "Hop signature invalid"))
                violation = f"Step 4: hop {hop['seq']} ({hop['agent_id']}) signature invalid"
                break
            result.hop_results.append(HopVerification(hop["seq"], hop["agent_id"], True))
    max_hops = token["scope"].get("max_hops")
    if violation is None and max_hops is not None and len(chain) > max_hops:
        violation = f"Step 5: chain depth {len(chain)} exceeds max_hops {max_hops}"
    if violation is None:
        result.valid = True
    else:
        result.violations.append(violation)
    return result


def _raw_key(public_key: object) -> Optional[bytes]:
    """32 raw bytes, or None for an object that can verify nothing; ValueError for bytes
    of another length, as ``Ed25519PublicKey.from_public_bytes`` raises."""
    if isinstance(public_key, (bytes, bytearray)):
        if len(public_key) != 32:
            raise ValueError("An Ed25519 public key is 32 bytes long")
        return bytes(public_key)
    raw = getattr(public_key, "public_bytes_raw", None)
    if callable(raw):
        try:
            key = raw()
        except Exception:  # an object whose method fails verifies nothing, as in the SDKs
            return None
        if isinstance(key, bytes) and len(key) == 32:
            return key
    return None


def verify_chains(tokens: Sequence[Union[dict[str, Any], str]], public_key: object) -> list[VerificationResult]:
    """``[verify_chain(token, public_key) for token in tokens]``, with every signature of
    every valid record checked in one batch (GIL released, on all cores)."""
    read = [_read(token) for token in tokens]
    valid = [record for record, problem in read if problem is None]
    verdicts: list[Optional[list[bool]]] = []
    if valid:
        key = _raw_key(public_key)
        verdicts = list(_hdp_verify(valid, key)) if key is not None else [None] * len(valid)
    judged = iter(verdicts)
    return [
        _refused(record, problem) if problem is not None else _judged(record, next(judged))
        for record, problem in read
    ]


def verify_chain(token: Union[dict[str, Any], str], public_key: object) -> VerificationResult:
    """Verifies one HDP record (a dict, or its JSON text, read with duplicate members and
    non-finite numbers refused) without time or session state, as
    ``hdp_langchain.verify.verify_chain`` does."""
    return verify_chains([token], public_key)[0]
