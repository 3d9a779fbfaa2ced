"""``hopgate keygen``: new signing keys and audit keys, and the public key of a signing-key
file. Key files are written with mode 0600 from the start and never overwritten without
``--force``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Optional

import hopgate

from ._common import (
    AUDIT_KEY_LABEL,
    KEYS_HELP,
    PUBLIC_KEY_LABEL,
    SIGNING_KEY_LABEL,
    UsageError,
    add_command,
    key_line,
    signing_key,
)

if TYPE_CHECKING:
    from ._common import Commands


def add_parser(commands: Commands) -> None:
    keygen = add_command(
        commands,
        "keygen",
        summary="make a new Ed25519 signing key (or an audit key); print a key file's public key",
        description=f"""
        Make a new Ed25519 signing key: the line {SIGNING_KEY_LABEL}:HEX (the seed, secret)
        goes to -o FILE (created with mode 0600) or stdout, the line {PUBLIC_KEY_LABEL}:HEX to
        stderr, or alone to stdout with --public (redirect it to keep the public-key file).
        With --audit, a new audit log key, {AUDIT_KEY_LABEL}:HEX, instead. With --public-of
        FILE, print the public-key line of an existing signing-key file.

        {KEYS_HELP}
        """,
        example="""
        hopgate keygen -o alice.key --public > alice.pub    # the issuer
        """,
        statuses=[(0, "the key was written (with --public-of: the public key printed)")],
        usage_also=", a key file of the wrong kind, an existing -o FILE without --force",
    )
    keygen.add_argument("-o", "--output", metavar="FILE", help="write the key here, mode 0600 (default: stdout)")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing FILE; needs -o")
    keygen.add_argument(
        "--public", action="store_true", help=f"print only the public key ({PUBLIC_KEY_LABEL}:HEX) on stdout; needs -o"
    )
    keygen.add_argument(
        "--public-of", metavar="FILE", help="print the public key of an existing signing-key file and exit"
    )
    keygen.add_argument("--audit", action="store_true", help=f"make an audit log key ({AUDIT_KEY_LABEL}) instead")
    keygen.set_defaults(run=_keygen)


def _write_key_file(path: str, line: str, force: bool) -> None:
    """Writes a key file of mode 0600 (never readable by others, even briefly)."""
    if os.path.isdir(path):
        raise UsageError(f"-o {path}: is a directory")
    if force:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise UsageError(f"-o {path}: {e.strerror or e}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"-o {path}: file exists; pass --force to overwrite a key") from None
    except OSError as e:
        raise UsageError(f"-o {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # the umask may only have removed bits; make it exact
        f.write(line + "\n")


def _keygen(args: argparse.Namespace) -> int:
    to_stdout = args.output is None or args.output == "-"
    if args.public_of is not None:
        if args.output is not None or args.force or args.public or args.audit:
            raise UsageError("--public-of FILE takes no -o, --force, --public or --audit")
        key = signing_key(args.public_of, "--public-of", None)
        print(key_line(PUBLIC_KEY_LABEL, key.public_key))
        return 0
    if args.force and to_stdout:
        raise UsageError("--force needs -o FILE")
    if args.audit and args.public:
        raise UsageError("--public: an audit key is a secret key alone, it has no public key")
    if args.public and to_stdout:
        raise UsageError("--public needs -o FILE (the seed would be lost)")
    public: Optional[str] = None
    if args.audit:
        line = key_line(AUDIT_KEY_LABEL, os.urandom(32))
    else:
        key = hopgate.SigningKey.generate()
        line = key_line(SIGNING_KEY_LABEL, key.seed())
        public = key_line(PUBLIC_KEY_LABEL, key.public_key)
    if to_stdout:
        print(line)
    else:
        _write_key_file(args.output, line, args.force)
    if public is not None and args.public:
        print(public)
    elif public is not None:
        print(f"public key: {public}", file=sys.stderr)
    return 0
