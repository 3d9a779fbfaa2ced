"""``hdp_verify``: the signatures of HDP records, their messages in RFC 8785 canonical JSON,
in Python (``hopgate.hdp`` uses it when the native module is absent)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from ..errors import InputError
from ._batch import as_bytes
from ._ed25519 import verify


def _number(value: float) -> str:
    """A double as ECMAScript's ``Number.prototype.toString`` writes it: ``repr``'s digits
    (the shortest that read back, the even one of two equally close), placed in plain
    notation within 21 integer digits or 6 leading zeros, in exponent notation otherwise."""
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("a number is not finite")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    spelled = whole + fraction
    digits = spelled.lstrip("0")
    # The value is 0.<digits> x 10**point.
    point = len(whole) + int(exponent or 0) - (len(spelled) - len(digits))
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    tail = "." + digits[1:] if count > 1 else ""
    power = point - 1
    return f"{sign}{digits[0]}{tail}e{'-' if power < 0 else '+'}{abs(power)}"


def _canonical(value: Any, out: list[str], depth: int = 0) -> None:
    if depth > 1000:
        raise ValueError("JSON nested deeper than 1000 levels")
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, int):
        try:
            as_double = float(value)
        except OverflowError:
            as_double = float("inf")
        if as_double in (float("inf"), float("-inf")) or int(as_double) != value:
            raise ValueError("an integer is not exactly an IEEE 754 double")
        out.append(_number(as_double))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        # The standard library escapes exactly RFC 8785's set when told not to escape the rest.
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _canonical(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, dict):
        _object(value.items(), out, depth)
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def _object(members: Iterable[tuple[Any, Any]], out: list[str], depth: int) -> None:
    named = list(members)
    for name, _ in named:
        if not isinstance(name, str):
            raise TypeError(f"a JSON object key is {type(name).__name__}, not str")
    out.append("{")
    for index, (name, item) in enumerate(sorted(named, key=lambda member: member[0].encode("utf-16-be"))):
        if index:
            out.append(",")
        out.append(json.dumps(name, ensure_ascii=False))
        out.append(":")
        _canonical(item, out, depth + 1)
    out.append("}")


def canonical_json(value: Any) -> bytes:
    """``value`` (None, bool, int, float, str, list, tuple, dict with str keys) as RFC 8785
    canonical JSON, UTF-8."""
    out: list[str] = []
    _canonical(value, out)
    return "".join(out).encode("utf-8")


_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _signature(text: Any) -> bytes:
    """86 base64url characters, unpadded, as 64 bytes (the unused bits of the last
    character ignored); b"" for anything else."""
    if not isinstance(text, str) or len(text) != 86 or not _BASE64URL.issuperset(text):
        return b""
    return base64.urlsafe_b64decode(text + "==")


def _signed(record: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """(message, signature) of the root, then of each hop."""
    if not isinstance(record, dict):
        raise ValueError("a record is an object")
    root_signature = record["signature"]
    root_text = root_signature["value"]
    root = {name: record[name] for name in ("hdp", "header", "principal", "scope")}
    root["chain"] = []
    is_ed25519 = root_signature.get("alg") == "Ed25519"
    signed = [(canonical_json(root), _signature(root_text) if is_ed25519 else b"")]
    hops = record["chain"]
    for index, hop in enumerate(hops):
        unsigned = {name: value for name, value in hop.items() if name != "hop_signature"}
        signed.append((canonical_json([root_text, *hops[:index], unsigned]), _signature(hop["hop_signature"])))
    return signed


def hdp_verify(records: Iterable[Any], public_key: object) -> list[list[bool]]:
    """For each HDP record (a validated dict), the verdict on each of its signatures (the
    root's, then each hop's) against the Ed25519 key ``public_key`` under
    ``rule="openssl"``, the rule of the HDP SDKs' library."""
    key = as_bytes(public_key, "public_key")
    if len(key) != 32:
        raise InputError(f"public_key: must be 32 bytes, got {len(key)}")
    verdicts: list[list[bool]] = []
    for index, record in enumerate(records):
        try:
            signed = _signed(record)
        except TypeError as error:
            raise TypeError(f"records[{index}]: {error}") from error
        except (KeyError, ValueError, AttributeError) as error:
            raise ValueError(f"records[{index}]: not an HDP record ({error!r})") from error
        verdicts.append([len(sig) == 64 and verify(msg, sig, key, rule="openssl") for msg, sig in signed])
    return verdicts
