"""The hopgate command line: keys, chains, invocations, verification, audit logs.

An issuer grants authority to an agent in a signed chain; each holder may
delegate a narrower part of it, and the last one signs an invocation per
request; a verifier checks the chain against the issuers it trusts and decides
the request. Each command once (`hopgate COMMAND --help`: its options, its
example and its exit statuses):

  hopgate keygen -o alice.key --public > alice.pub    # the issuer
  hopgate keygen -o agent.key --public > agent.pub    # an agent
  hopgate keygen -o worker.key --public > worker.pub  # the agent's worker
  hopgate keygen --audit -o audit.key                 # a gate's audit log key
  hopgate grant --issuer-key alice.key --holder "$(cat agent.pub)" \\
      --cap 'tools/*:call' --budget 100 --unit calls \\
      --not-before now --not-after +1d --max-depth 1 -o grant.txt
  hopgate delegate grant.txt --holder-key agent.key --to "$(cat worker.pub)" \\
      --budget 10 -o worker.txt
  hopgate invoke worker.txt --holder-key worker.key --ability call \\
      --resource tools/search --cost 3 --payload-file body.json -o call.txt
  hopgate verify grant.txt worker.txt --trusted "$(cat alice.pub)"
  hopgate verify worker.txt --trusted "$(cat alice.pub)" --invocation call.txt \\
      --payload body.json --require call tools/search 2
  hopgate audit verify gate.log --key-file audit.key  # a gate's hopgate.AuditLog
  hopgate audit spending gate.log --key-file audit.key
  hopgate bench --quick
  hopgate --version

Chains and invocations are written in the text form of docs/SPEC.md §2
(base64url without padding, one line: the HTTP header value) unless
--format raw asks for the wire bytes. Every command reading them takes either
form: a file that starts with the magic (HGC1, HGI1) is raw, anything else is
text. "-" reads stdin, once per command. A text file may hold one chain per
line; verify then names each FILE:LINE.

Keys. A key file is one line that says what it holds, LABEL:HEX, HEX being 64
hex digits (32 bytes):
  hopgate-signing-key-v1:HEX  an Ed25519 seed (secret; written with mode 0600)
  hopgate-public-key-v1:HEX   an Ed25519 public key
  hopgate-audit-key-v1:HEX    an audit log key (secret)
A seed and a public key are both 32 bytes, so the label is what tells them
apart. --issuer-key, --holder-key and --public-of take a signing-key file and
refuse any other: a public-key or audit-key file is refused naming what it
holds, and an unlabelled file (64 hex digits or 32 raw bytes, as older versions
wrote seeds) with the command that labels it. $HOPGATE_ISSUER_KEY and
$HOPGATE_HOLDER_KEY may hold the same line. Signing keys are never taken on the
command line, where other users could read them. The audit key comes from
--key-file or $HOPGATE_AUDIT_KEY: an audit-key line, or unlabelled 64 hex
digits or 32 raw bytes (as applications of hopgate.AuditLog write keys; a wrong
audit key only fails verification). Options taking a public key (--holder,
--to, --trusted, the lines of --trusted-file) take 64 hex digits, bare or
labelled, and refuse a secret's label. Session ids, nonces and revocation ids
are hex.

Numbers are checked before anything runs, against the ranges of the wire
format: times, --budget, --cost and the PRICE of --require are u64
(0..2**64-1), --max-depth a u8 (0..255), --skew 0..2**63-1 (twice the skew is
the replay window of the gate, a u64). Integers are ASCII digits, with
underscores between them allowed (10_000). A value out of range is a usage
error naming the option and the range.

Times (--not-before, --not-after, --now, --timestamp) are unix seconds,
ISO-8601 with a zone (2026-11-22T10:00:00Z), now, or relative to now: +3600,
-60, +90m, +2h, +7d.

Exit status:
  0    success; verify: every chain, or the request, is allowed (OK)
  1    verify: a decision other than OK, its name and code (docs/SPEC.md §4)
       on the chain's line and in --json; audit verify, audit spending: the
       log does not verify
  2    usage or read error: a bad option or value, a missing or unreadable
       file, a key file of the wrong kind, a refused grant, delegation or
       invocation, an existing key file without --force; a line
       "hopgate: error: ..." on stderr names the file or option (verify then
       prints no result)
  130  interrupted
  141  stdout closed early (hopgate verify ... | head)
"""

# One module per command group, each adding its own sub-commands (add_parser): keys
# (keygen), chains (grant, delegate, invoke), verify, bench, audit (verify, spending);
# _common holds what several share, _files the reading and writing of chains and
# invocations. The docstring above is also the epilog of `hopgate --help`, so that the
# terminal and pydoc show one manual (`python -OO` strips it: then --help lists the
# commands alone, each with its own manual page).

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Optional

import hopgate

from . import audit, bench, chains, keys, verify
from ._common import ProgressBar, UsageError, parse_time

__all__ = ["main", "build_parser", "ProgressBar", "parse_time"]


def version() -> str:
    """``hopgate X.Y.Z (backend native|reference)``: the installed distribution's version
    and the implementation in use."""
    return f"hopgate {hopgate.__version__} (backend {hopgate.BACKEND})"


def build_parser() -> argparse.ArgumentParser:
    summary, _, manual = (__doc__ or "").partition("\n\n")
    parser = argparse.ArgumentParser(
        prog="hopgate",
        description=summary,
        epilog=manual.rstrip() or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=version(), help="print the version and the backend in use, and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keys.add_parser(commands)
    chains.add_parsers(commands)
    verify.add_parser(commands)
    bench.add_parser(commands)
    audit.add_parser(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except UsageError as e:
        print(f"hopgate: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `hopgate verify ... | head`: the reader left. Point stdout at /dev/null so
        # that the interpreter's final flush does not raise again; 141 = 128 + SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("hopgate: interrupted", file=sys.stderr)
        return 130
