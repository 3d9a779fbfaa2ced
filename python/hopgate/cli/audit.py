"""``hopgate audit verify`` and ``hopgate audit spending``: an audit log checked record by
record, and its settlement records summed per account."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Optional

import hopgate
from hopgate._audit import log_records, spending

from ._common import AUDIT_KEY_LABEL, ProgressBar, UsageError, add_command, progress_option, read_secret, shown

if TYPE_CHECKING:
    from ._common import Commands

KEY_ENV = "HOPGATE_AUDIT_KEY"
_STATUSES = [(0, "the log verifies"), (1, "it does not: the first bad record, its offset and why")]


def add_parser(commands: Commands) -> None:
    audit = commands.add_parser(
        "audit",
        help="audit log tools: verify, spending",
        description="Audit log tools: `hopgate audit verify FILE` checks every record, "
        "`hopgate audit spending FILE` sums the settlements per account.",
    )
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    audit_verify = add_command(
        audit_commands,
        "verify",
        summary="check every record of an audit log; report the first bad one or OK",
        description="""
        Check every record of an audit log with its key (each record's tag, and its link
        in the log's hash chain); print OK and the number of records, or the first bad
        record, its offset and why (one JSON object with --json).
        """,
        example="""
        hopgate audit verify gate.log --key-file audit.key
        """,
        statuses=_STATUSES,
        usage_also=", a key file of the wrong kind",
    )
    _log_options(audit_verify)
    progress_option(audit_verify)
    audit_verify.set_defaults(run=_audit_verify)

    audit_spending = add_command(
        audit_commands,
        "spending",
        summary="verify an audit log, then sum what its settlement records spent per account",
        description="""
        Verify an audit log, then sum its settlement records per account (a link's
        revocation id): spent (committed and forfeited amounts, overruns included), overrun,
        and how many reservations were committed, released and forfeited.
        """,
        example="""
        hopgate audit spending gate.log --key-file audit.key
        """,
        statuses=_STATUSES,
        usage_also=", a key file of the wrong kind",
    )
    _log_options(audit_spending)
    audit_spending.set_defaults(run=_audit_spending)


def _log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the audit log")
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        help=f"the audit key: {AUDIT_KEY_LABEL}:HEX (hopgate keygen --audit), 64 hex digits or 32 raw bytes; "
        f"default ${KEY_ENV}",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _read_key(key_file: Optional[str]) -> bytes:
    """The audit log's key: ``--key-file`` or ``$HOPGATE_AUDIT_KEY``."""
    return read_secret(key_file, "--key-file", KEY_ENV, AUDIT_KEY_LABEL)


def _audit_verify(args: argparse.Namespace) -> int:
    key = _read_key(args.key_file)
    label = shown(args.file)
    bar = ProgressBar(sys.stderr, f"verifying {label}", enabled=args.progress)
    started = time.monotonic()
    try:
        report = hopgate.audit_verify(args.file, key=key, progress=bar)
    except OSError as e:
        raise UsageError(f"{label}: {e.strerror or e}") from None
    finally:
        bar.close()
    seconds = time.monotonic() - started
    if args.json:
        out = {
            "ok": report.ok,
            "records": report.records,
            "bytes": report.bytes,
            "first_bad": report.first_bad,
            "offset": report.offset,
            "reason": report.reason,
            "seconds": round(seconds, 6),
        }
        print(json.dumps(out))
    elif report.ok:
        rate = report.records / seconds if seconds > 0 else float("inf")
        print(f"OK: {label}: {report.records} records, {report.bytes} bytes ({rate:,.0f} records/s)")
    else:
        print(f"{label}: {report}")
    return 0 if report.ok else 1


def _audit_spending(args: argparse.Namespace) -> int:
    key = _read_key(args.key_file)
    label = shown(args.file)
    try:
        report = hopgate.audit_verify(args.file, key=key)
        if not report.ok:
            print(f"{label}: {report}", file=sys.stderr)
            return 1
        with open(args.file, "rb") as f:  # one frame at a time: memory stays flat
            summary = spending(log_records(f, report.bytes))
    except OSError as e:
        raise UsageError(f"{label}: {e.strerror or e}") from None
    rows = sorted(summary.accounts.items(), key=lambda item: (-item[1].spent, item[0]))
    if args.json:
        out = {
            "records": report.records,
            "unreadable": summary.unreadable,
            "accounts": {
                account.hex(): {
                    "spent": s.spent,
                    "overrun": s.overrun,
                    "reserved": s.reserved,
                    "commits": s.commits,
                    "releases": s.releases,
                    "forfeits": s.forfeits,
                }
                for account, s in rows
            },
        }
        print(json.dumps(out))
        return 0
    print(f"{label}: {report.records} records, {len(rows)} accounts with settlements")
    if summary.unreadable:
        print(f"{label}: {summary.unreadable} records start like a settlement but are not one (skipped)")
    if rows:
        print(f"{'account (revocation id)':<66} {'spent':>20} {'overrun':>20} {'commits':>8} {'releases':>8} {'forfeits':>8}")
    for account, s in rows:
        print(f"{account.hex():<66} {s.spent:>20} {s.overrun:>20} {s.commits:>8} {s.releases:>8} {s.forfeits:>8}")
    return 0
