"""``jws_split``: compact JWS tokens split and base64url-decoded as PyJWT 2.x reads them,
in Python (``hopgate.jwt`` uses it when the native module is absent)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Optional

from typing_extensions import Buffer

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _base64url(segment: bytes) -> Optional[bytes]:
    """The URL-safe alphabet, unpadded or padded with one or two ``=`` to a multiple of
    four; the unused low bits of the last character zero. None for anything else."""
    body = segment.rstrip(b"=")
    padding = len(segment) - len(body)
    if padding > 2 or (padding and len(segment) % 4) or len(body) % 4 == 1 or body.translate(None, _ALPHABET):
        return None
    try:
        decoded = base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))
    except binascii.Error:  # pragma: no cover - the checks above leave none
        return None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != body:
        return None
    return decoded


def jws_split(
    tokens: Sequence[Buffer],
) -> list[Optional[tuple[int, Optional[bytes], Optional[bytes], bool, Optional[bytes]]]]:
    """For each token: None when it has fewer than two dots, else ``(signing_input_len,
    header, payload, payload_segment_empty, signature)``, a segment that is not base64url
    as PyJWT accepts it being None. The signature follows the last dot, the header precedes
    the first dot of the rest, the payload is what lies between."""
    out: list[Optional[tuple[int, Optional[bytes], Optional[bytes], bool, Optional[bytes]]]] = []
    for token in tokens:
        data = bytes(token)
        signing_input, dot, signature = data.rpartition(b".")
        header, dot2, payload = signing_input.partition(b".")
        if not dot or not dot2:
            out.append(None)
            continue
        out.append((len(signing_input), _base64url(header), _base64url(payload), not payload, _base64url(signature)))
    return out
