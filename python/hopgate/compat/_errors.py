"""The exceptions the drop-in classes raise when the library they replace is absent.

When PyNaCl (pyca/cryptography) is installed, ``hopgate.compat.nacl``
(``hopgate.compat.cryptography``) raises that library's own classes instead, so that
code written against the library catches them unchanged. These stand-ins carry the
library's names and derive from hopgate's tree, so ``except hopgate.HopgateError``
catches them as well.
"""

from __future__ import annotations

import builtins

from ..errors import HopgateError, InputError

__all__ = ["BadSignatureError", "InvalidSignature", "TypeError", "ValueError"]


class BadSignatureError(HopgateError):
    """A signature that does not verify (PyNaCl's ``nacl.exceptions.BadSignatureError``)."""


class ValueError(InputError):
    """A key or signature of the wrong length (PyNaCl's ``nacl.exceptions.ValueError``)."""


class TypeError(HopgateError, builtins.TypeError):
    """A key or signature that is not ``bytes`` (PyNaCl's ``nacl.exceptions.TypeError``)."""


class InvalidSignature(HopgateError):
    """A signature that does not verify (``cryptography.exceptions.InvalidSignature``)."""
