"""What every command shares: the usage error, key files and public keys, hex, numbers,
times and UTF-8 as argparse types, printable file names, the progress bar, and the layout
of each command's ``--help`` (one example, the exit statuses)."""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import stat
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, Optional, TextIO

import hopgate

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

ISSUER_KEY_ENV = "HOPGATE_ISSUER_KEY"
HOLDER_KEY_ENV = "HOPGATE_HOLDER_KEY"
U64_MAX = 2**64 - 1


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit status 2."""


# ---------------------------------------------------------------------------
# Keys and hex
# ---------------------------------------------------------------------------

# Key files say what they hold: one line ``LABEL:HEX`` (64 hex digits, 32 bytes). A signing
# key's seed and a public key are both 32 bytes, so without the label a public-key file
# passed as --issuer-key would sign with the public key taken as a seed: a valid-looking
# chain from an issuer nobody trusts, and a "secret" that is public.
SIGNING_KEY_LABEL = "hopgate-signing-key-v1"
PUBLIC_KEY_LABEL = "hopgate-public-key-v1"
AUDIT_KEY_LABEL = "hopgate-audit-key-v1"
_KINDS = {SIGNING_KEY_LABEL: "signing key", PUBLIC_KEY_LABEL: "public key", AUDIT_KEY_LABEL: "audit key"}
_HOLDS = {label: ("an " if kind[0] in "aeiou" else "a ") + kind for label, kind in _KINDS.items()}
#: A key file is one short line; a longer file is not a key (and is not read whole).
MAX_KEY_FILE = 4096
_HEX64 = re.compile(rb"[0-9a-fA-F]{64}")


def key_line(label: str, key: bytes) -> str:
    """The text of a key file: ``label:HEX`` (no newline)."""
    return f"{label}:{key.hex()}"


def _labelled(source: str, data: bytes, label: str) -> Optional[bytes]:
    """The key of ``label:HEX`` in ``data``; ``None`` when ``data`` carries no label at all.

    A known label other than ``label`` says what the file holds instead (never echoing a
    secret); anything else with a colon is a malformed key.
    """
    name, sep, digits = data.strip().partition(b":")
    if not sep:
        return None
    held = name.decode("ascii", "replace")
    if held != label and held in _HOLDS:
        raise UsageError(f"{source}: holds {_HOLDS[held]} ({held}), not {_HOLDS[label]}")
    if held != label or _HEX64.fullmatch(digits) is None:
        raise UsageError(f"{source}: expected one line {label}:<64 hex digits>")
    return bytes.fromhex(digits.decode("ascii"))


def _unlabelled(data: bytes) -> Optional[tuple[str, bytes]]:
    """(form, key) of a key without a label: 32 raw bytes or 64 hex digits; else ``None``."""
    if len(data) == 32:
        return "32 raw bytes", data
    if _HEX64.fullmatch(data.strip()) is not None:
        return "64 hex digits", bytes.fromhex(data.strip().decode("ascii"))
    return None


def read_secret(path: Optional[str], option: str, env: Optional[str], label: str) -> bytes:
    """A 32-byte secret of the kind ``label`` names, from a key file or from ``$env``.

    A file or variable labelled as another kind is refused, naming what it holds. An
    unlabelled signing key is refused too (it could as well be a public key), with the way
    to label it; an unlabelled audit key (32 raw bytes or 64 hex digits, as applications of
    ``hopgate.AuditLog`` write them) is taken: a wrong audit key makes ``audit verify`` fail,
    it can never sign. A readable-by-others file is warned about.
    """
    mode = 0
    if path is not None:
        source = f"{option} {path}"
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_KEY_FILE + 1)
                mode = os.fstat(f.fileno()).st_mode
        except OSError as e:
            raise UsageError(f"{source}: {e.strerror or e}") from None
        if len(data) > MAX_KEY_FILE:
            raise UsageError(f"{source}: more than {MAX_KEY_FILE} bytes: not a key file")
    elif env is not None and env in os.environ:
        source = f"${env}"
        data = os.environ[env].encode("utf-8", "surrogateescape")
    else:
        where = f"pass {option} FILE" + ("" if env is None else f" or set {env}")
        if label == SIGNING_KEY_LABEL:
            raise UsageError(f"no signing key: {where} ({label}:<64 hex digits>)")
        raise UsageError(f"no key: {where} ({label}:<64 hex digits>, or 64 hex digits)")
    # 32 raw bytes first: they may hold a colon, and a labelled key is never 32 bytes long.
    bare = _unlabelled(data)
    if bare is not None and label == SIGNING_KEY_LABEL:
        raise UsageError(_relabel(source, path, bare[0]))
    key = bare[1] if bare is not None else _labelled(source, data, label)
    if key is None and label == SIGNING_KEY_LABEL:
        raise UsageError(f"{source}: expected one line {label}:<64 hex digits>")
    if key is None:
        raise UsageError(f"{source}: expected {label}:<64 hex digits>, 64 hex digits or 32 raw bytes")
    if stat.S_ISREG(mode) and mode & 0o077:
        print(
            f"hopgate: warning: {source}: the {_KINDS[label]} is readable by other users "
            f"(mode {stat.S_IMODE(mode):04o}; chmod 600 it)",
            file=sys.stderr,
        )
    return key


def _relabel(source: str, path: Optional[str], form: str) -> str:
    """Why an unlabelled signing key is refused, and how to label it if it is one.

    The command is POSIX sh (no ``sed -i``, which differs between GNU and BSD): the
    substitution runs before the redirection truncates the file, and rewriting the
    existing file keeps its mode."""
    why = f"{source}: an unlabelled key ({form}) could be a signing key or a public key, so it is refused"
    if path is None:
        return f"{why}; if it holds a signing key (secret seed), set it to {SIGNING_KEY_LABEL}:<its 64 hex digits>"
    file = shlex.quote(path)
    hex_of = f"tr -d ' \\t\\r\\n' < {file}" if form == "64 hex digits" else f"od -An -v -tx1 {file} | tr -d ' \\n'"
    return (
        f"{why}; if it holds a signing key (secret seed), label it: "
        f"printf '{SIGNING_KEY_LABEL}:%s\\n' \"$({hex_of})\" > {file}"
    )


def signing_key(path: Optional[str], option: str, env: Optional[str]) -> hopgate.SigningKey:
    """The signing key of a signing-key file (``option``) or of ``$env``."""
    return hopgate.SigningKey.from_seed(read_secret(path, option, env, SIGNING_KEY_LABEL))


def parse_hex(value: str, option: str, size: int, what: str) -> bytes:
    """``size`` bytes written as hex (a session id, a nonce, a revocation id)."""
    text = value.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != size or not text:
        raise UsageError(f"{option} {value!r}: expected {2 * size} hex digits ({what}, {size} bytes)")
    return raw


def parse_public_key(value: str, option: str) -> bytes:
    """A public key: 64 hex digits, bare or labelled; a secret's label is refused unechoed."""
    name, sep, digits = value.strip().partition(":")
    if sep and name in _HOLDS:
        if name != PUBLIC_KEY_LABEL:
            raise UsageError(
                f"{option}: that is {_HOLDS[name]} ({name}), a secret, not a public key "
                "(hopgate keygen --public-of FILE prints the public key of a signing key)"
            )
        value = digits
    text = value.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32 or not text:
        raise UsageError(
            f"{option} {value!r}: expected an Ed25519 public key: 64 hex digits, bare or as {PUBLIC_KEY_LABEL}:<hex>"
        )
    return raw


# ---------------------------------------------------------------------------
# Times, numbers, text (argparse types: a bad value is a usage error naming the option)
# ---------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]+")
_RELATIVE = re.compile(r"([+-])([0-9]+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: Digits beyond this many (leading zeros aside) are out of every range here; such strings
#: are not converted at all (Python refuses int() of more than 4300 digits with its own message).
_MAX_DIGITS = 40


def _digits(text: str) -> int:
    """The value of ASCII decimal digits; one past u64 for absurdly long ones."""
    return int(text) if len(text.lstrip("0")) <= _MAX_DIGITS else U64_MAX + 1


def parse_time(text: str, now: Optional[int] = None) -> int:
    """Unix seconds from ``1750000000``, ``2026-11-22T10:00:00Z``, ``now`` or ``+3600``/``-1h``.

    ISO-8601 times must carry a zone (``Z`` or ``+01:00``): a time that means
    something different on every machine is refused. Digits are ASCII. The result is in
    0..2**64-1 (u64, as the wire format stores it). Raises ``ValueError``.
    """
    text = text.strip()
    current = int(time.time()) if now is None else now
    if text == "now":
        return current
    if _DIGITS.fullmatch(text):
        value = _digits(text)
    else:
        rel = _RELATIVE.fullmatch(text)
        if rel is not None:
            delta = _digits(rel.group(2)) * _UNITS[rel.group(3)]
            value = current + delta if rel.group(1) == "+" else current - delta
        else:
            iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
            try:
                if not iso.isascii():
                    raise ValueError(iso)
                moment = datetime.datetime.fromisoformat(iso)
            except ValueError:
                raise ValueError(
                    "expected unix seconds, ISO-8601 with a zone (2026-11-22T10:00:00Z), now, or +SECONDS"
                ) from None
            if moment.tzinfo is None:
                raise ValueError("an ISO-8601 time needs a zone (Z or +HH:MM)")
            value = int(moment.timestamp())
    if not 0 <= value <= U64_MAX:
        raise ValueError("out of range: unix seconds in 0..2**64-1 (u64)")
    return value


def time_arg(text: str) -> int:
    """argparse type of every time option: :func:`parse_time`, its error as a usage error."""
    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


_INTEGER = re.compile(r"[0-9]+(?:_[0-9]+)*")


def integer(maximum: int, bound: str, what: str) -> Callable[[str], int]:
    """argparse type: an integer in 0..maximum (ASCII digits, underscores between them:
    10_000); anything else, a sign included, is a usage error naming the range."""

    def parse(text: str) -> int:
        if _INTEGER.fullmatch(text) is not None:
            value = _digits(text.replace("_", ""))
            if value <= maximum:
                return value
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer in 0..{bound} ({what})")

    return parse


u64 = integer(U64_MAX, "2**64-1", "u64")
u8 = integer(255, "255", "u8")


def utf8(text: str) -> str:
    """argparse type of text options: an argument that is not UTF-8 (argv bytes that did not
    decode) is a usage error here, not an encoding error deep in the library."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"'{shown(text)}': not valid UTF-8") from None
    return text


def shown(path: str) -> str:
    """``path`` printable on any UTF-8 stream: undecodable bytes of a file name as ``\\xff``."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on a terminal; silent elsewhere (pipes, CI logs).

    Called with ``(done, total)``; the rate shown is ``done / second / scale``
    followed by ``unit`` (bytes as MB/s by default).
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        enabled: Optional[bool] = None,
        unit: str = "MB/s",
        scale: float = 1e6,
    ) -> None:
        self.stream = stream
        self.label = label
        self.enabled = stream.isatty() if enabled is None else enabled
        self.unit = unit
        self.scale = scale
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
        rate = done / max(now - self.started, 1e-9) / self.scale
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction:6.1%} {rate:8.1f} {self.unit}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------
# Options and help shared by several commands
# ---------------------------------------------------------------------------

TIME_HELP = (
    "unix seconds, ISO-8601 with a zone (2026-11-22T10:00:00Z), now, or +SECONDS / +2h relative to now "
    "(a negative one with an = sign: --now=-1h); 0..2**64-1"
)
PUBLIC_HELP = f"a public key: 64 hex digits, bare or as {PUBLIC_KEY_LABEL}:HEX"
KEYS_HELP = (
    f"Key files hold one line saying what they hold: {SIGNING_KEY_LABEL}:HEX (a seed, secret), "
    f"{PUBLIC_KEY_LABEL}:HEX, {AUDIT_KEY_LABEL}:HEX (secret), HEX being 64 hex digits. "
    "A command that needs a signing key refuses any other file, and an unlabelled one."
)
#: What exit status 2 means for every command.
USAGE_ERROR = (
    "usage or read error: a bad option or value, a missing or unreadable file{also}; "
    "a line 'hopgate: error: ...' on stderr names the option or file"
)
_WIDTH = 79


def progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal and the work is long)",
    )


def exit_statuses(statuses: Sequence[tuple[int, str]]) -> str:
    """An ``exit status:`` block: one status a line, its meaning wrapped beside it."""
    lines = ["exit status:"]
    for status, meaning in statuses:
        lines += textwrap.wrap(meaning, _WIDTH, initial_indent=f"  {status:<4} ", subsequent_indent=" " * 7)
    return "\n".join(lines)


def add_command(
    commands: Commands,
    name: str,
    *,
    summary: str,
    description: str,
    example: str,
    statuses: Sequence[tuple[int, str]],
    usage_also: str = "",
    more: str = "",
) -> argparse.ArgumentParser:
    """A command whose ``--help`` reads as its manual page: ``description`` (paragraphs
    separated by blank lines, wrapped here), the options, then one example, the exit
    statuses (``statuses``, then 2 for usage errors, ``usage_also`` saying what else makes
    it 2, and 130) and ``more``."""
    paragraphs = [textwrap.fill(" ".join(p.split()), _WIDTH) for p in re.split(r"\n\s*\n", description.strip())]
    statuses = [*statuses, (2, USAGE_ERROR.format(also=usage_also)), (130, "interrupted")]
    example = textwrap.dedent(example).strip("\n")
    heading = "examples:" if example.count("\nhopgate ") else "example:"
    epilog = [heading, textwrap.indent(example, "  "), "", exit_statuses(statuses)]
    if more:
        epilog += ["", more]
    return commands.add_parser(
        name,
        help=summary,
        description="\n\n".join(paragraphs),
        epilog="\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
