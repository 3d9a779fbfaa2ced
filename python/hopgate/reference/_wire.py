"""The wire format of SPEC §2: encoding, total parsing, and the coverage rule of §1.

Parsing is total: every byte string yields a ``Link`` list / ``Invocation`` or
raises ``MalformedError`` naming the wire field and its byte offset; no other
exception escapes for any input bytes. Checks are made in byte order and the
first violation is reported, with one exception: a chain longer than
``MAX_CHAIN_LEN`` is refused before anything is read.

Inside a link (or invocation) the body is read within the ``body_len`` bytes it
declares. A field that would run past the declared end is reported as
truncated under that field's name; a body that parses completely but shorter
than ``body_len`` is reported under ``body_len`` (offset of the ``body_len``
field). A ``body_len`` that runs past the end of the data is reported under
``body_len`` before the body is read.

The encoders validate their arguments (the builders in ``_chain`` rely on
that), except ``encode_chain`` and ``encode_invocation``, which only frame
bodies and signatures: they do not apply the SPEC limits on purpose, so that
tests can build over-long chains and check that parsing refuses them.
"""

from __future__ import annotations

import base64
import binascii
import operator
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import InputError, MalformedError
from ._batch import as_bytes

__all__ = [
    "CHAIN_MAGIC",
    "INVOCATION_MAGIC",
    "MAX_LINKS",
    "MAX_CAPS",
    "MAX_CHAIN_LEN",
    "MAX_STR_LEN",
    "LINK_DOMAIN",
    "INVOKE_DOMAIN",
    "KIND_GRANT",
    "KIND_DELEGATION",
    "Cap",
    "Link",
    "Invocation",
    "encode_link_body",
    "encode_chain",
    "encode_invocation_body",
    "encode_invocation",
    "parse_chain",
    "parse_invocation",
    "normalize_caps",
    "check_str",
    "check_uint",
    "check_fixed",
    "covers",
    "cap_covers",
    "encode_text",
    "decode_text",
]

CHAIN_MAGIC = b"HGC1"
INVOCATION_MAGIC = b"HGI1"
MAX_LINKS = 16
MAX_CAPS = 64
MAX_CHAIN_LEN = 65536
MAX_STR_LEN = 255
LINK_DOMAIN = b"hopgate/v1/link\x00"
INVOKE_DOMAIN = b"hopgate/v1/invoke\x00"

KIND_GRANT = 0
KIND_DELEGATION = 1

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
SESSION_ID_LEN = 16
NONCE_LEN = 16
DIGEST_LEN = 32

U8_MAX = 2**8 - 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

#: A capability: (resource, ability).
Cap = Tuple[str, str]


@dataclass(frozen=True)
class Link:
    """One parsed link of a chain (SPEC §2).

    ``issuer`` and ``session_id`` are set for the grant (kind 0) only,
    ``prev_sig`` for delegations (kind 1) only. ``body`` is the signed body
    (without the domain prefix) and ``signature`` its 64-byte signature.
    """

    kind: int
    issuer: Optional[bytes]
    session_id: Optional[bytes]
    prev_sig: Optional[bytes]
    holder: bytes
    not_before: int
    not_after: int
    max_depth: int
    budget: int
    unit: str
    nonce: bytes
    caps: Tuple[Cap, ...]
    meta_digest: bytes
    body: bytes
    signature: bytes


@dataclass(frozen=True)
class Invocation:
    """A parsed invocation (SPEC §2): one request bound to a chain's tail."""

    tail_sig: bytes
    ability: str
    resource: str
    cost: int
    timestamp: int
    nonce: bytes
    payload_digest: bytes
    body: bytes
    signature: bytes


# ---------------------------------------------------------------------------
# Coverage (SPEC §1)
# ---------------------------------------------------------------------------


def covers(p: str, c: str) -> bool:
    """Whether pattern ``p`` covers name ``c`` (SPEC §1).

    ``"*"`` covers everything; a name covers itself; ``"x/*"`` covers every
    name starting with ``"x/"``. Names are opaque: nothing is normalised.
    """
    return p == "*" or p == c or (p.endswith("/*") and c.startswith(p[:-1]))


def cap_covers(parent: Cap, child: Cap) -> bool:
    """Whether capability ``parent`` covers ``child``: both parts cover."""
    return covers(parent[0], child[0]) and covers(parent[1], child[1])


# ---------------------------------------------------------------------------
# Argument checks shared by the encoders and the builders
# ---------------------------------------------------------------------------


def check_uint(value: object, bits: int, field: str) -> int:
    """An integer argument that must fit in an unsigned ``bits``-bit field."""
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InputError(f"{field}: expected an integer, got {type(value).__name__}") from None
    if not 0 <= number < 1 << bits:
        raise InputError(f"{field}: {number} does not fit in u{bits}")
    return number


def check_fixed(value: object, size: int, field: str) -> bytes:
    """A bytes-like argument of exactly ``size`` bytes (keys, nonces, digests)."""
    raw = as_bytes(value, field)
    if len(raw) != size:
        raise InputError(f"{field}: expected {size} bytes, got {len(raw)}")
    return raw


def check_str(value: object, field: str) -> bytes:
    """A wire ``str``: 1..=255 bytes of UTF-8 without NUL. Returns its UTF-8."""
    if not isinstance(value, str):
        raise InputError(f"{field}: expected str, got {type(value).__name__}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates are the only Python strings UTF-8 cannot encode.
        raise InputError(f"{field}: not encodable as UTF-8") from None
    if not 1 <= len(encoded) <= MAX_STR_LEN:
        raise InputError(f"{field}: {len(encoded)} bytes of UTF-8, must be 1..={MAX_STR_LEN}")
    if b"\x00" in encoded:
        raise InputError(f"{field}: contains NUL")
    return encoded


def normalize_caps(caps: object) -> Tuple[Cap, ...]:
    """Capabilities as a tuple of (resource, ability), checked as SPEC §2 says."""
    if isinstance(caps, (str, bytes)) or not isinstance(caps, Iterable):
        raise InputError(
            f"caps: expected a list of (resource, ability) pairs, got {type(caps).__name__}"
        )
    items = list(caps)
    if not 1 <= len(items) <= MAX_CAPS:
        raise InputError(f"caps: {len(items)} capabilities, must be 1..={MAX_CAPS}")
    result = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InputError(f"caps[{i}]: expected a (resource, ability) pair")
        resource, ability = item
        check_str(resource, "resource")
        check_str(ability, "ability")
        result.append((resource, ability))
    return tuple(result)


def _u8(value: int) -> bytes:
    return struct.pack("<B", value)


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _str(encoded: bytes) -> bytes:
    return _u8(len(encoded)) + encoded


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def encode_link_body(
    *,
    kind: int,
    issuer: object | None = None,
    session_id: object | None = None,
    prev_sig: object | None = None,
    holder: object,
    not_before: int,
    not_after: int,
    max_depth: int,
    budget: int,
    unit: str,
    nonce: object,
    caps: object,
    meta_digest: object,
) -> bytes:
    """The body of a link (kind 0: grant, kind 1: delegation), validated.

    Arguments are checked in wire order. Wrong types and wrong lengths raise
    ``InputError``; strings, capability counts and the time order that SPEC §2
    forbids raise ``MalformedError``.
    """
    out = bytearray()
    if kind == KIND_GRANT:
        if prev_sig is not None:
            raise InputError("prev_sig: a grant (kind 0) has no prev_sig")
        out += _u8(KIND_GRANT)
        out += check_fixed(issuer, PUBLIC_KEY_LEN, "issuer")
        out += check_fixed(session_id, SESSION_ID_LEN, "session_id")
    elif kind == KIND_DELEGATION:
        if issuer is not None or session_id is not None:
            raise InputError("issuer/session_id: a delegation (kind 1) has neither")
        out += _u8(KIND_DELEGATION)
        out += check_fixed(prev_sig, SIGNATURE_LEN, "prev_sig")
    else:
        raise InputError(f"kind: must be 0 (grant) or 1 (delegation), got {kind!r}")
    out += check_fixed(holder, PUBLIC_KEY_LEN, "holder")
    start = check_uint(not_before, 64, "not_before")
    end = check_uint(not_after, 64, "not_after")
    if start >= end:
        raise InputError(f"not_before: {start} must be earlier than not_after ({end})")
    out += _u64(start) + _u64(end)
    out += _u8(check_uint(max_depth, 8, "max_depth"))
    out += _u64(check_uint(budget, 64, "budget"))
    out += _str(check_str(unit, "unit"))
    out += check_fixed(nonce, NONCE_LEN, "nonce")
    checked_caps = normalize_caps(caps)
    out += _u8(len(checked_caps))
    for resource, ability in checked_caps:
        out += _str(resource.encode("utf-8")) + _str(ability.encode("utf-8"))
    out += check_fixed(meta_digest, DIGEST_LEN, "meta_digest")
    return bytes(out)


def encode_chain(links: Iterable[tuple[object, object]]) -> bytes:
    """Frame (body, signature) pairs as chain bytes.

    Only what the framing itself needs is checked (64-byte signatures, counts
    and lengths that fit their integer fields); SPEC limits are not applied.
    """
    pairs = [(as_bytes(body, "body"), check_fixed(sig, SIGNATURE_LEN, "signature"))
             for body, sig in links]
    if len(pairs) > U8_MAX:
        raise InputError(f"links: {len(pairs)} links do not fit the u8 count")
    out = bytearray(CHAIN_MAGIC)
    out += _u8(len(pairs))
    for body, sig in pairs:
        if len(body) > U32_MAX:
            raise InputError("body: longer than a u32 body_len can say")
        out += _u32(len(body)) + body + sig
    return bytes(out)


def encode_invocation_body(
    *,
    tail_sig: object,
    ability: str,
    resource: str,
    cost: int,
    timestamp: int,
    nonce: object,
    payload_digest: object,
) -> bytes:
    """The body of an invocation, validated in wire order (see ``encode_link_body``)."""
    out = bytearray()
    out += check_fixed(tail_sig, SIGNATURE_LEN, "tail_sig")
    out += _str(check_str(ability, "ability"))
    out += _str(check_str(resource, "resource"))
    out += _u64(check_uint(cost, 64, "cost"))
    out += _u64(check_uint(timestamp, 64, "timestamp"))
    out += check_fixed(nonce, NONCE_LEN, "nonce")
    out += check_fixed(payload_digest, DIGEST_LEN, "payload_digest")
    return bytes(out)


def encode_invocation(body: object, sig: object) -> bytes:
    """Frame an invocation body and its signature (no SPEC checks on the body)."""
    raw = as_bytes(body, "body")
    if len(raw) > U32_MAX:
        raise InputError("body: longer than a u32 body_len can say")
    return INVOCATION_MAGIC + _u32(len(raw)) + raw + check_fixed(sig, SIGNATURE_LEN, "signature")


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


class _Reader:
    """Reads fields of ``data`` between ``pos`` and ``end``, never past ``end``."""

    def __init__(self, data: bytes, pos: int, end: int, what: str) -> None:
        self.data = data
        self.pos = pos
        self.end = end
        self.what = what  # what ``end`` is the end of, for messages

    def take(self, size: int, field: str) -> bytes:
        if size > self.end - self.pos:
            raise MalformedError(
                f"truncated: {field} needs {size} bytes at offset {self.pos}, "
                f"the {self.what} has {self.end - self.pos} left",
                field,
                self.pos,
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self, field: str) -> int:
        value: int = self.take(1, field)[0]
        return value

    def u32(self, field: str) -> int:
        value: int = struct.unpack("<I", self.take(4, field))[0]
        return value

    def u64(self, field: str) -> int:
        value: int = struct.unpack("<Q", self.take(8, field))[0]
        return value

    def string(self, field: str) -> str:
        offset = self.pos
        length = self.u8(field)
        if length == 0:
            raise MalformedError(f"{field}: empty string", field, offset)
        raw = self.take(length, field)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError(f"{field}: not valid UTF-8", field, offset) from None
        if "\x00" in text:
            raise MalformedError(f"{field}: contains NUL", field, offset)
        return text


def _parse_link(reader: _Reader, index: int) -> Link:
    link_offset = reader.pos
    body_len = reader.u32("body_len")
    body_start = reader.pos
    if body_len > reader.end - body_start:
        raise MalformedError(
            f"link {index}: body_len {body_len} runs past the end of the data "
            f"({reader.end - body_start} bytes left)",
            "body_len",
            link_offset,
        )
    body = _Reader(reader.data, body_start, body_start + body_len, "body")

    kind_offset = body.pos
    kind = body.u8("kind")
    expected = KIND_GRANT if index == 0 else KIND_DELEGATION
    if kind != expected:
        raise MalformedError(
            f"link {index}: kind {kind}, expected {expected} (kind 0 is exactly link 0)",
            "kind",
            kind_offset,
        )
    issuer = session_id = prev_sig = None
    if kind == KIND_GRANT:
        issuer = body.take(PUBLIC_KEY_LEN, "issuer")
        session_id = body.take(SESSION_ID_LEN, "session_id")
    else:
        prev_sig = body.take(SIGNATURE_LEN, "prev_sig")
    holder = body.take(PUBLIC_KEY_LEN, "holder")
    not_before = body.u64("not_before")
    not_after_offset = body.pos
    not_after = body.u64("not_after")
    if not_before >= not_after:
        raise MalformedError(
            f"link {index}: not_before ({not_before}) must be earlier than "
            f"not_after ({not_after})",
            "not_after",
            not_after_offset,
        )
    max_depth = body.u8("max_depth")
    budget = body.u64("budget")
    unit = body.string("unit")
    nonce = body.take(NONCE_LEN, "nonce")
    ncap_offset = body.pos
    ncap = body.u8("ncap")
    if not 1 <= ncap <= MAX_CAPS:
        raise MalformedError(
            f"link {index}: ncap {ncap}, must be 1..={MAX_CAPS}", "ncap", ncap_offset
        )
    caps = tuple((body.string("resource"), body.string("ability")) for _ in range(ncap))
    meta_digest = body.take(DIGEST_LEN, "meta_digest")
    if body.pos != body.end:
        raise MalformedError(
            f"link {index}: body_len {body_len}, but the body is "
            f"{body.pos - body_start} bytes",
            "body_len",
            link_offset,
        )
    reader.pos = body.end
    signature = reader.take(SIGNATURE_LEN, "signature")
    return Link(
        kind=kind,
        issuer=issuer,
        session_id=session_id,
        prev_sig=prev_sig,
        holder=holder,
        not_before=not_before,
        not_after=not_after,
        max_depth=max_depth,
        budget=budget,
        unit=unit,
        nonce=nonce,
        caps=caps,
        meta_digest=meta_digest,
        body=reader.data[body_start : body.end],
        signature=signature,
    )


def parse_chain(data: object) -> list[Link]:
    """Parse chain bytes (SPEC §2) into its links, or raise ``MalformedError``.

    ``InputError`` is raised only when ``data`` is not bytes-like.
    """
    raw = as_bytes(data, "chain")
    if len(raw) > MAX_CHAIN_LEN:
        raise MalformedError(
            f"chain is {len(raw)} bytes, at most {MAX_CHAIN_LEN} allowed", "chain", 0
        )
    reader = _Reader(raw, 0, len(raw), "data")
    if reader.take(len(CHAIN_MAGIC), "magic") != CHAIN_MAGIC:
        raise MalformedError(f"bad magic, expected {CHAIN_MAGIC!r}", "magic", 0)
    n_offset = reader.pos
    n = reader.u8("n")
    if not 1 <= n <= MAX_LINKS:
        raise MalformedError(f"{n} links, must be 1..={MAX_LINKS}", "n", n_offset)
    links = [_parse_link(reader, i) for i in range(n)]
    if reader.pos != len(raw):
        raise MalformedError(
            f"{len(raw) - reader.pos} trailing bytes after the last link",
            "trailing",
            reader.pos,
        )
    return links


def parse_invocation(data: object) -> Invocation:
    """Parse invocation bytes (SPEC §2), or raise ``MalformedError``.

    ``InputError`` is raised only when ``data`` is not bytes-like.
    """
    raw = as_bytes(data, "invocation")
    reader = _Reader(raw, 0, len(raw), "data")
    if reader.take(len(INVOCATION_MAGIC), "magic") != INVOCATION_MAGIC:
        raise MalformedError(f"bad magic, expected {INVOCATION_MAGIC!r}", "magic", 0)
    len_offset = reader.pos
    body_len = reader.u32("body_len")
    body_start = reader.pos
    if body_len > reader.end - body_start:
        raise MalformedError(
            f"body_len {body_len} runs past the end of the data "
            f"({reader.end - body_start} bytes left)",
            "body_len",
            len_offset,
        )
    body = _Reader(raw, body_start, body_start + body_len, "body")
    tail_sig = body.take(SIGNATURE_LEN, "tail_sig")
    ability = body.string("ability")
    resource = body.string("resource")
    cost = body.u64("cost")
    timestamp = body.u64("timestamp")
    nonce = body.take(NONCE_LEN, "nonce")
    payload_digest = body.take(DIGEST_LEN, "payload_digest")
    if body.pos != body.end:
        raise MalformedError(
            f"body_len {body_len}, but the body is {body.pos - body_start} bytes",
            "body_len",
            len_offset,
        )
    reader.pos = body.end
    signature = reader.take(SIGNATURE_LEN, "signature")
    if reader.pos != len(raw):
        raise MalformedError(
            f"{len(raw) - reader.pos} trailing bytes after the signature",
            "trailing",
            reader.pos,
        )
    return Invocation(
        tail_sig=tail_sig,
        ability=ability,
        resource=resource,
        cost=cost,
        timestamp=timestamp,
        nonce=nonce,
        payload_digest=payload_digest,
        body=raw[body_start : body.end],
        signature=signature,
    )


# ---------------------------------------------------------------------------
# Text form (HTTP headers): base64url without padding
# ---------------------------------------------------------------------------

_BASE64URL_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def encode_text(raw: bytes) -> str:
    """base64url without padding (SPEC §2 text form)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_text(text: object, field: str) -> bytes:
    """Strict inverse of ``encode_text``: refuses anything it would not produce.

    Python's base64 decoder silently skips characters outside the alphabet and
    ignores non-zero padding bits; both would let two different header values
    mean the same bytes, so both are refused here (as ``MalformedError``), as
    are padding characters.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise MalformedError(f"{field}: not ASCII base64url", field, 0) from None
    if not isinstance(text, str):
        raise InputError(f"{field}: expected str, got {type(text).__name__}")
    # One line ending after the text is not part of it (a file with a final newline).
    text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    bad = _BASE64URL_CHAR.search(text)
    if bad is not None:
        raise MalformedError(
            f"{field}: character {bad.group()!r} is not base64url (no padding)",
            field,
            bad.start(),
        )
    if len(text) % 4 == 1:
        raise MalformedError(f"{field}: {len(text)} characters is not a base64 length", field, 0)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - excluded above
        raise MalformedError(f"{field}: not base64url", field, 0) from None
    if encode_text(raw) != text:
        raise MalformedError(f"{field}: non-zero padding bits", field, len(text) - 1)
    return raw


def to_text(data: object) -> str:
    """The text form of any bytes-like ``data`` (``hopgate.to_text``)."""
    return encode_text(as_bytes(data, "data"))


def from_text(text: str) -> bytes:
    """Decode the text form strictly, or raise ``MalformedError`` (``hopgate.from_text``)."""
    return decode_text(text, "text")
