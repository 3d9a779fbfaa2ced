"""Drop-in replacements for the Ed25519 public-key classes of PyNaCl and pyca/cryptography.

``hopgate.compat.nacl.VerifyKey`` stands in for ``nacl.signing.VerifyKey`` and
``hopgate.compat.cryptography.Ed25519PublicKey`` for
``cryptography.hazmat.primitives.asymmetric.ed25519.Ed25519PublicKey``: the same
constructors, the same methods, the same exceptions, and the same accept/refuse decision
on every input, because each verifies under the signature rule of the library it replaces
(``rule="libsodium"``, ``rule="openssl"``; SPEC §3.4) in hopgate's core. Neither module
is imported by ``import hopgate``, and neither needs the library it replaces: when that
library is installed its own exception classes are raised, so code that catches them
keeps working; when it is not, hopgate raises same-named classes of its own that derive
from ``hopgate.HopgateError``.
"""

from __future__ import annotations

__all__: list[str] = []
