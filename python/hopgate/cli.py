"""The ``hopgate`` command line.

``hopgate audit verify FILE`` checks an audit log and reports the first bad record
or OK, with a progress bar on a terminal. Exit status: 0 when the log verifies,
1 when it does not, 2 for bad usage or a file that cannot be read.

The key (32 bytes) comes from ``--key-file`` (32 raw bytes, or 64 hex digits) or
from the ``HOPGATE_AUDIT_KEY`` environment variable (64 hex digits); it is never
taken on the command line, where other users could read it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Optional, TextIO

__all__ = ["main"]

KEY_ENV = "HOPGATE_AUDIT_KEY"


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit status 2."""


def _read_key(key_file: Optional[str]) -> bytes:
    if key_file is not None:
        try:
            with open(key_file, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise UsageError(f"--key-file {key_file}: {e.strerror or e}") from None
        source = f"--key-file {key_file}"
    elif KEY_ENV in os.environ:
        raw = os.environ[KEY_ENV].encode()
        source = f"${KEY_ENV}"
    else:
        raise UsageError(f"no key: pass --key-file PATH or set {KEY_ENV} (64 hex digits)")
    if len(raw) == 32 and key_file is not None:
        return raw
    text = raw.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise UsageError(f"{source}: expected 32 raw bytes or 64 hex digits")
    return key


class ProgressBar:
    """A one-line progress bar on a terminal; silent elsewhere (pipes, CI logs)."""

    def __init__(self, stream: TextIO, label: str, enabled: Optional[bool] = None) -> None:
        self.stream = stream
        self.label = label
        self.enabled = stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        fraction = done / total if total else 1.0
        width = 30
        filled = int(fraction * width)
        rate = done / max(now - self.started, 1e-9) / 1e6
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction:6.1%} {rate:8.1f} MB/s")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _audit_verify(args: argparse.Namespace) -> int:
    import hopgate

    key = _read_key(args.key_file)
    bar = ProgressBar(sys.stderr, f"verifying {args.file}", enabled=args.progress)
    started = time.monotonic()
    try:
        report = hopgate.audit_verify(args.file, key=key, progress=bar)
    except OSError as e:
        raise UsageError(f"{args.file}: {e.strerror or e}") from None
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
        print(f"OK: {args.file}: {report.records} records, {report.bytes} bytes ({rate:,.0f} records/s)")
    else:
        print(f"{args.file}: {report}")
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hopgate", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    audit = commands.add_parser("audit", help="audit log tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = audit_commands.add_parser(
        "verify",
        help="check every record of an audit log; report the first bad one or OK",
        description="Check every record of an audit log; report the first bad one or OK. "
        "Exit status 0 if it verifies, 1 if not, 2 on usage or read errors.",
    )
    verify.add_argument("file", help="the audit log")
    verify.add_argument("--key-file", help=f"file holding the 32-byte key (raw or hex); default ${KEY_ENV}")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    verify.set_defaults(run=_audit_verify)
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
    except KeyboardInterrupt:
        print("hopgate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
