"""``hopgate audit verify`` and ``hopgate audit spending``: an audit log checked record by
record, and its settlement records summed per account; given a directory, every log in it
(one per worker process: ``hopgate.audit_worker_log``), the sums taken over all of them."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Optional

import hopgate
from hopgate._audit import AuditLogsReport, Spending, log_records, spending

from ._common import AUDIT_KEY_LABEL, ProgressBar, UsageError, add_command, progress_option, read_secret, shown

if TYPE_CHECKING:
    from ._common import Commands

KEY_ENV = "HOPGATE_AUDIT_KEY"
_STATUSES = [
    (0, "the log verifies (a directory: every log in it)"),
    (1, "it does not: the first bad record, its offset and why (a directory: for each bad log)"),
]
_DIRECTORY = """
        FILE may be a directory of worker logs (hopgate.audit_worker_log: one log per
        process): every regular file in it whose name does not start with a dot is a log,
        all sealed with the one key; an empty file is a log without records. Each log is
        checked on its own and named when it does not verify, and a log that repeats
        another's settlements (a copy) is refused, since its spending would count twice.
        """


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
        """
        + _DIRECTORY,
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
        """
        + _DIRECTORY
        + """
        Across a directory the sums are over every log; nothing is summed unless every
        log verifies.
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
    parser.add_argument("file", help="the audit log, or a directory of worker logs")
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


def _verify_directory(args: argparse.Namespace, key: bytes) -> AuditLogsReport:
    try:
        return hopgate.audit_verify_logs(args.file, key=key)
    except OSError as e:
        where = shown(e.filename) if isinstance(e.filename, str) else shown(args.file)
        raise UsageError(f"{where}: {e.strerror or e}") from None


def _audit_verify(args: argparse.Namespace) -> int:
    key = _read_key(args.key_file)
    label = shown(args.file)
    if os.path.isdir(args.file):
        return _audit_verify_directory(args, key)
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


def _audit_verify_directory(args: argparse.Namespace, key: bytes) -> int:
    started = time.monotonic()
    report = _verify_directory(args, key)
    seconds = time.monotonic() - started
    copies = report.copies
    if args.json:
        logs = {}
        for path, one in report.logs.items():
            copy = copies.get(path)
            logs[shown(os.fspath(path))] = {
                "ok": one.ok and copy is None,
                "records": one.records,
                "bytes": one.bytes,
                "first_bad": one.first_bad,
                "offset": one.offset,
                "reason": one.reason,
                "copy_of": None if copy is None else shown(os.fspath(copy.original)),
            }
        out = {
            "ok": report.ok,
            "records": report.records,
            "bytes": report.bytes,
            "logs": logs,
            "seconds": round(seconds, 6),
        }
        print(json.dumps(out))
        return 0 if report.ok else 1
    problems = dict(report.problems)
    for path, one in report.logs.items():
        if path in problems:
            print(shown(f"{path}: {problems[path]}"))
        else:
            print(shown(f"OK: {path}: {one.records} records, {one.bytes} bytes"))
    label = shown(args.file)
    if problems:
        print(f"BAD: {label}: {len(problems)} of {len(report.logs)} logs do not verify")
    else:
        rate = report.records / seconds if seconds > 0 else float("inf")
        print(f"OK: {label}: {len(report.logs)} logs, {report.records} records, {report.bytes} bytes ({rate:,.0f} records/s)")
    return 0 if report.ok else 1


def _audit_spending(args: argparse.Namespace) -> int:
    key = _read_key(args.key_file)
    label = shown(args.file)
    logs = 1
    try:
        if os.path.isdir(args.file):
            many = _verify_directory(args, key)
            if not many.ok:
                for path, problem in many.problems:
                    print(shown(f"{path}: {problem}"), file=sys.stderr)
                return 1
            records, logs, summary = many.records, len(many.logs), many.spending()
        else:
            report = hopgate.audit_verify(args.file, key=key)
            if not report.ok:
                print(f"{label}: {report}", file=sys.stderr)
                return 1
            with open(args.file, "rb") as f:  # one frame at a time: memory stays flat
                summary = spending(log_records(f, report.bytes))
            records = report.records
    except OSError as e:
        raise UsageError(f"{label}: {e.strerror or e}") from None
    return _print_spending(args, label, records, logs, summary)


def _print_spending(args: argparse.Namespace, label: str, records: int, logs: int, summary: Spending) -> int:
    rows = sorted(summary.accounts.items(), key=lambda item: (-item[1].spent, item[0]))
    directory = os.path.isdir(args.file)
    if args.json:
        out = {
            "records": records,
            **({"logs": logs} if directory else {}),
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
    where = f" in {logs} logs" if directory else ""
    print(f"{label}: {records} records{where}, {len(rows)} accounts with settlements")
    if summary.unreadable:
        print(f"{label}: {summary.unreadable} records start like a settlement but are not one (skipped)")
    if rows:
        print(f"{'account (revocation id)':<66} {'spent':>20} {'overrun':>20} {'commits':>8} {'releases':>8} {'forfeits':>8}")
    for account, s in rows:
        print(f"{account.hex():<66} {s.spent:>20} {s.overrun:>20} {s.commits:>8} {s.releases:>8} {s.forfeits:>8}")
    return 0
