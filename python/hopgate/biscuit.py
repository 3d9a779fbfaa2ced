"""Biscuit tokens: the signature layer of many tokens verified at once.

``verify_signatures(tokens, root_public_key)`` answers, for each token, what
biscuit-auth 6's ``Biscuit.from_bytes(token, root_public_key)`` (biscuit-python's
``biscuit_auth.Biscuit.from_bytes``) decides at its signature layer: the token's
revocation ids when every signature holds, else the reason it is refused, as an
exception instance (returned in the list, not raised). Every Ed25519 signature of every
token is checked in one call, on all cores, with the GIL released, by the rule
biscuit-auth uses (ed25519-dalek's ``verify_strict``; SPEC §3.5).

What is not checked is the Datalog inside the blocks: a token accepted here is one whose
signatures are all good, which ``from_bytes`` may still refuse when a key holder signed
a block that is not valid Datalog. P-256 keys are answered ``UnsupportedAlgorithm``.

Example::

    from hopgate.biscuit import verify_signatures, SignatureError

    answers = verify_signatures(tokens, root_public_key)
    for token, answer in zip(tokens, answers):
        if isinstance(answer, SignatureError):
            ...  # forged or tampered
        elif isinstance(answer, list):
            ...  # answer: the revocation ids, one per block, the authority's first
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Union

from typing_extensions import Buffer

from . import BACKEND as _BACKEND
from .errors import BiscuitError, FormatError, InputError, SignatureError, UnsupportedAlgorithm

if _BACKEND == "native":
    from ._native import biscuit_verify as _biscuit_verify
else:
    from .reference import biscuit_verify as _biscuit_verify

__all__ = [
    "BiscuitError",
    "FormatError",
    "SignatureError",
    "UnsupportedAlgorithm",
    "verify_signatures",
]

_KINDS: dict[str, type[BiscuitError]] = {
    "format": FormatError,
    "signature": SignatureError,
    "unsupported_algorithm": UnsupportedAlgorithm,
}


def _root_bytes(root_public_key: object) -> Buffer:
    """The root key's bytes: a bytes-like object as it is, or biscuit-python's ``PublicKey``
    (anything else with a ``to_bytes()`` method) through that method (33 bytes for P-256)."""
    if isinstance(root_public_key, (bytes, bytearray, memoryview)):
        return root_public_key
    to_bytes = getattr(root_public_key, "to_bytes", None)
    if callable(to_bytes):
        data = to_bytes()
        if not isinstance(data, (bytes, bytearray)):
            raise InputError(f"root_public_key: to_bytes() returned {type(data).__name__}, not bytes")
        return bytes(data)
    return root_public_key  # type: ignore[return-value]  # other buffers (numpy); checked natively


def verify_signatures(
    tokens: Sequence[Buffer], root_public_key: Union[Buffer, object]
) -> List[Union[List[bytes], BiscuitError]]:
    """For each of ``tokens`` (bytes-like, a token's raw bytes as ``Biscuit.to_bytes()``
    gives them), its revocation ids (``bytes``, one per block, the authority block's
    first: what ``Biscuit.revocation_ids`` gives as hex) when every signature verifies
    against ``root_public_key``, else a ``FormatError``, ``SignatureError`` or
    ``UnsupportedAlgorithm`` saying why.

    ``root_public_key``: 32 raw bytes of an Ed25519 public key, or a biscuit-python
    ``PublicKey`` (with a P-256 one, every token that biscuit does not refuse for its format
    first is answered ``UnsupportedAlgorithm``). A root key of
    another length raises ``InputError``; one that is not a point on the curve makes every
    answer a ``FormatError``.
    """
    if isinstance(tokens, (bytes, bytearray, memoryview)):
        raise InputError("tokens: expected a sequence of tokens, got a single bytes-like object")
    tokens = list(tokens)
    answers = _biscuit_verify(tokens, _root_bytes(root_public_key))
    return [answer if isinstance(answer, list) else _KINDS[answer[0]](answer[1]) for answer in answers]
