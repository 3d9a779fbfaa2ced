"""The ``hopgate`` command line.

Commands (``hopgate COMMAND --help`` for every option):

``hopgate keygen [-o FILE] [--force] [--public] [--audit]``
    A new Ed25519 signing key. The signing-key line (below) goes to FILE
    (created with mode 0600; an existing file is refused unless ``--force``) or
    to stdout. The public-key line goes to stderr, or alone to stdout with
    ``--public`` (``> agent.pub`` makes the public-key file).
    ``hopgate keygen --public-of FILE`` prints the public-key line of an
    existing signing-key file. ``--audit`` makes an audit log key instead.
``hopgate grant --issuer-key FILE --holder PUBHEX --cap RESOURCE:ABILITY ... --budget N --unit U --not-before T --not-after T --max-depth D [--session HEX] [-o OUT]``
    Signs a grant (link 0) and writes the chain.
``hopgate delegate CHAIN --holder-key FILE --to PUBHEX [--cap ...] [--budget N] [--not-before T] [--not-after T] [--max-depth D] [-o OUT]``
    Appends a delegation signed by the chain's holder. A delegation the builder
    refuses (it would not verify) prints its decision code name, exit status 2.
``hopgate invoke CHAIN --holder-key FILE --ability A --resource R --cost N [--payload-file F] [-o OUT]``
    Signs an invocation with the key of the chain's final holder.
``hopgate verify CHAIN... (--trusted PUBHEX ... | --trusted-file F) [--now T] [--session HEX] [--revoked HEX ...] [--invocation FILE] [--json]``
    Verifies chains (``hopgate.verify_chains``, SPEC §4 (a)-(e)), or, with
    ``--invocation``, decides one request at a fresh ``hopgate.Gate``.
``hopgate bench [--quick]``
    Times the main operations of the backend in use; prints µs/item and items/s.
``hopgate audit verify FILE``
    Checks an audit log and reports the first bad record or OK.
``hopgate audit spending FILE``
    Verifies an audit log, then sums its settlement records per account.

Formats. Chains and invocations are written in the text form of SPEC §2
(base64url without padding, one line; the HTTP header value) unless
``--format raw`` asks for the wire bytes. Any command reading a chain or an
invocation accepts either form: a file that starts with the magic (``HGC1``,
``HGI1``) is raw, anything else is text. ``-`` reads stdin. A text file may hold
one chain per line (``verify`` then names each ``FILE:LINE``).

Numbers are checked when the command line is parsed, against the ranges of
the wire format: times, ``--budget`` and ``--cost`` are u64 (0..2**64-1),
``--max-depth`` a u8 (0..255), ``--skew`` 0..2**63-1 (the replay window of the
dry-run gate, twice the skew, is a u64). Integers are ASCII digits, with
underscores between them allowed (``10_000``). A value out of range is a usage
error naming the option and the range.

Times (``--not-before``, ``--not-after``, ``--now``, ``--timestamp``) are unix
seconds, ISO-8601 with a zone (``2026-11-22T10:00:00Z``), ``now``, or relative to
now: ``+3600``, ``-60``, ``+90m``, ``+2h``, ``+7d``.

Keys. A key file is one line that says what it holds, ``LABEL:HEX`` with HEX
64 hex digits (32 bytes):

- ``hopgate-signing-key-v1:HEX``: an Ed25519 seed (secret; mode 0600);
- ``hopgate-public-key-v1:HEX``: an Ed25519 public key;
- ``hopgate-audit-key-v1:HEX``: an audit log key (secret).

A seed and a public key are both 32 bytes, so the label is what tells them
apart. ``--issuer-key`` / ``--holder-key`` / ``--public-of`` take a signing-key
file and refuse any other: a public-key or audit-key file names what it holds,
and an unlabelled file (64 hex digits or 32 raw bytes, as older versions wrote
seeds) is refused with the command that labels it, since it could as well hold
a public key. ``$HOPGATE_ISSUER_KEY`` / ``$HOPGATE_HOLDER_KEY`` hold the same
line. Signing keys are never taken on the command line, where other users
could read them. The audit key comes from ``--key-file`` or
``$HOPGATE_AUDIT_KEY``: an audit-key line, or unlabelled 64 hex digits or 32 raw
bytes (as applications of ``hopgate.AuditLog`` write keys; a wrong audit key
only fails verification); a signing-key or public-key file is refused.
Options taking a public key (``--holder``, ``--to``, ``--trusted``, the lines of
``--trusted-file``) take 64 hex digits, bare or labelled, and refuse a secret's
label. Session ids, nonces and revocation ids are hex.

Exit status.
- 0: success (``verify``: every chain is OK).
- 2: bad usage or input (a missing or unreadable file, bad hex, a number out
  of range, a key file holding the wrong kind of key or no label, a refused
  delegation or invocation, an existing key file without ``--force``), with an
  ``error:`` line on stderr naming the file or option.
- ``verify``: the decision code (SPEC §4) of the chain, or, for several chains,
  the first non-zero code in the order given; a chain file that does not parse
  is ``MALFORMED`` (1), its line naming the field and the byte offset. Note that
  code 2 (``UNTRUSTED_ISSUER``) and usage errors share status 2: a decision
  always prints one result line per chain on stdout, a usage error prints
  nothing there.
- ``audit verify`` and ``audit spending``: 0 when the log verifies, 1 when it
  does not, 2 on usage or read errors.
- 130: interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO

if TYPE_CHECKING:
    from hopgate import Chain, SigningKey

__all__ = ["main", "build_parser", "ProgressBar", "parse_time"]

KEY_ENV = "HOPGATE_AUDIT_KEY"
ISSUER_KEY_ENV = "HOPGATE_ISSUER_KEY"
HOLDER_KEY_ENV = "HOPGATE_HOLDER_KEY"

#: ``verify`` shows a progress bar above this many chains (when stderr is a terminal).
PROGRESS_MIN_CHAINS = 1000
CHAIN_MAGIC = b"HGC1"
INVOCATION_MAGIC = b"HGI1"
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


def _key_line(label: str, key: bytes) -> str:
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


def _read_secret(path: Optional[str], option: str, env: Optional[str], label: str) -> bytes:
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


def _read_key(key_file: Optional[str]) -> bytes:
    """The audit log's key: ``--key-file`` or ``$HOPGATE_AUDIT_KEY``."""
    return _read_secret(key_file, "--key-file", KEY_ENV, AUDIT_KEY_LABEL)


def _signing_key(path: Optional[str], option: str, env: Optional[str]) -> SigningKey:
    import hopgate

    return hopgate.SigningKey.from_seed(_read_secret(path, option, env, SIGNING_KEY_LABEL))


def _hex(value: str, option: str, size: int, what: str) -> bytes:
    text = value.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != size or not text:
        raise UsageError(f"{option} {value!r}: expected {2 * size} hex digits ({what}, {size} bytes)")
    return raw


def _public_key(value: str, option: str) -> bytes:
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
# Times, capabilities, numbers
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


def _time_arg(text: str) -> int:
    """argparse type of every time option: :func:`parse_time`, its error as a usage error."""
    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _cap(value: str) -> tuple[str, str]:
    resource, sep, ability = value.rpartition(":")
    if not sep or not resource or not ability:
        raise UsageError(f"--cap {value!r}: expected RESOURCE:ABILITY (for example payments/*:refund)")
    return resource, ability


def _caps(values: Optional[list[str]]) -> Optional[list[tuple[str, str]]]:
    return None if not values else [_cap(v) for v in values]


_INTEGER = re.compile(r"[0-9]+(?:_[0-9]+)*")
#: Clock skew: the dry-run gate of ``verify --invocation`` needs a replay window of at least
#: twice the skew, and the window is a u64 too.
SKEW_MAX = U64_MAX // 2


def _integer(maximum: int, bound: str, what: str) -> Callable[[str], int]:
    """argparse type: an integer in 0..maximum (ASCII digits, underscores between them:
    10_000); anything else, a sign included, is a usage error naming the range."""

    def parse(text: str) -> int:
        if _INTEGER.fullmatch(text) is not None:
            value = _digits(text.replace("_", ""))
            if value <= maximum:
                return value
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer in 0..{bound} ({what})")

    return parse


_u64 = _integer(U64_MAX, "2**64-1", "u64")
_u8 = _integer(255, "255", "u8")
_skew = _integer(SKEW_MAX, "2**63-1", "seconds; twice the skew is the replay window, a u64")


def _utf8(text: str) -> str:
    """argparse type of text options: an argument that is not UTF-8 (argv bytes that did not
    decode) is a usage error here, not an encoding error deep in the library."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"'{_shown(text)}': not valid UTF-8") from None
    return text


def _shown(path: str) -> str:
    """``path`` printable on any UTF-8 stream: undecodable bytes of a file name as ``\\xff``."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


# ---------------------------------------------------------------------------
# Reading and writing chains and invocations
# ---------------------------------------------------------------------------


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror or e}") from None


def _label(path: str) -> str:
    return "<stdin>" if path == "-" else _shown(path)


def _stdin_once(*uses: tuple[str, Optional[str]]) -> None:
    """Refuses ``-`` (stdin) for more than one input: the second would read nothing."""
    named = [option for option, path in uses if path == "-"]
    if len(named) > 1:
        raise UsageError(f"stdin (-) can be read only once: {' and '.join(named)} both name it")


def _text_lines(label: str, text: str) -> list[tuple[str, str]]:
    """(label, text) per non-empty line of a text-form file: ``FILE``, or ``FILE:LINE`` for several."""
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) == 1:
        return [(label, lines[0][1])]
    return [(f"{label}:{n}", line) for n, line in lines]


@dataclass
class _Item:
    """One chain read from the input: its bytes, or why they do not parse."""

    label: str
    data: bytes
    error: Optional[Exception] = None


def _read_chains(path: str) -> list[_Item]:
    """Every chain of a file: one raw chain, or one text-form chain per line.

    Bytes that are neither (not ASCII, no ``HGC1`` magic) are taken as a raw chain,
    so that the parser names the field and offset that is wrong.
    """
    import hopgate

    data = _read_input(path)
    label = _label(path)
    if not data.strip():
        return [_Item(label, data, hopgate.MalformedError("malformed magic at offset 0: empty input", "magic", 0))]
    if not data.startswith(CHAIN_MAGIC):
        try:
            text: Optional[str] = data.decode("ascii")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            items = []
            for line_label, line in _text_lines(label, text):
                try:
                    items.append(_Item(line_label, bytes(hopgate.Chain.from_text(line))))
                except hopgate.MalformedError as e:
                    items.append(_Item(line_label, b"", e))
            return items
    item = _Item(label, data)
    try:
        hopgate.Chain.from_bytes(data)
    except hopgate.MalformedError as e:
        item.error = e
    return [item]


def _malformed_reason(e: Exception) -> str:
    """The parser's message, made sure to name the field and the byte offset."""
    field = getattr(e, "field", "")
    offset = getattr(e, "offset", -1)
    message = str(e)
    if not field or (field in message and f"offset {offset}" in message):
        return message
    return f"field {field} at offset {offset}: {message}"


def _read_one_chain(path: str) -> Chain:
    """The single chain of ``path``, for commands that extend or use it."""
    items = _read_chains(path)
    if len(items) != 1:
        raise UsageError(f"{_label(path)}: expected one chain, found {len(items)}")
    item = items[0]
    if item.error is not None:
        raise UsageError(f"{item.label}: MALFORMED (code 1): {_malformed_reason(item.error)}")
    import hopgate

    return hopgate.Chain.from_bytes(item.data)


def _read_invocation(path: str) -> bytes:
    """Invocation bytes (raw or text); undecodable text yields bytes the gate calls MALFORMED."""
    data = _read_input(path)
    if data.startswith(INVOCATION_MAGIC):
        return data
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        return data
    import hopgate

    try:
        return hopgate.from_text(text)
    except hopgate.MalformedError:
        return data


def _write_output(out: Optional[str], data: bytes, fmt: str) -> None:
    import hopgate

    payload = data if fmt == "raw" else (hopgate.to_text(data) + "\n").encode("ascii")
    if out is None or out == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
        return
    try:
        with open(out, "wb") as f:
            f.write(payload)
    except OSError as e:
        raise UsageError(f"-o {out}: {e.strerror or e}") from None


def _refused(action: str, e: Exception) -> UsageError:
    """A builder's refusal, with the decision code a verifier would have returned."""
    code = getattr(e, "code", None)
    if code is None:
        return UsageError(f"{action}: {e}")
    import hopgate

    name = hopgate.Code(code).name
    message = str(e)
    if message.startswith(f"{name}: "):
        message = message[len(name) + 2 :]
    return UsageError(f"{action} refused: {name} (code {int(code)}): {message}")


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
# Commands
# ---------------------------------------------------------------------------


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
    import hopgate

    to_stdout = args.output is None or args.output == "-"
    if args.public_of is not None:
        if args.output is not None or args.force or args.public or args.audit:
            raise UsageError("--public-of FILE takes no -o, --force, --public or --audit")
        key = _signing_key(args.public_of, "--public-of", None)
        print(_key_line(PUBLIC_KEY_LABEL, key.public_key))
        return 0
    if args.force and to_stdout:
        raise UsageError("--force needs -o FILE")
    if args.audit and args.public:
        raise UsageError("--public: an audit key is a secret key alone, it has no public key")
    if args.public and to_stdout:
        raise UsageError("--public needs -o FILE (the seed would be lost)")
    public: Optional[str] = None
    if args.audit:
        line = _key_line(AUDIT_KEY_LABEL, os.urandom(32))
    else:
        key = hopgate.SigningKey.generate()
        line = _key_line(SIGNING_KEY_LABEL, key.seed())
        public = _key_line(PUBLIC_KEY_LABEL, key.public_key)
    if to_stdout:
        print(line)
    else:
        _write_key_file(args.output, line, args.force)
    if public is not None and args.public:
        print(public)
    elif public is not None:
        print(f"public key: {public}", file=sys.stderr)
    return 0


def _grant(args: argparse.Namespace) -> int:
    import hopgate

    key = _signing_key(args.issuer_key, "--issuer-key", ISSUER_KEY_ENV)
    holder = _public_key(args.holder, "--holder")
    caps = _caps(args.cap)
    assert caps is not None  # required=True
    session = None if args.session is None else _hex(args.session, "--session", 16, "a session id")
    meta = None if args.meta_file is None else hopgate.blake3(_read_input(args.meta_file))
    try:
        chain = hopgate.Chain.grant(
            key,
            holder,
            caps,
            budget=args.budget,
            unit=args.unit,
            not_before=args.not_before,
            not_after=args.not_after,
            max_depth=args.max_depth,
            session_id=session,
            meta_digest=meta,
        )
    except (hopgate.HopgateError, ValueError, OverflowError) as e:
        raise _refused("grant", e) from None
    _write_output(args.output, bytes(chain), args.format)
    return 0


def _delegate(args: argparse.Namespace) -> int:
    import hopgate

    _stdin_once(("CHAIN_FILE", args.chain), ("--meta-file", args.meta_file))
    key = _signing_key(args.holder_key, "--holder-key", HOLDER_KEY_ENV)
    to = _public_key(args.to, "--to")
    chain = _read_one_chain(args.chain)
    meta = None if args.meta_file is None else hopgate.blake3(_read_input(args.meta_file))
    try:
        longer = chain.delegate(
            key,
            to,
            caps=_caps(args.cap),
            budget=args.budget,
            not_before=args.not_before,
            not_after=args.not_after,
            max_depth=args.max_depth,
            meta_digest=meta,
        )
    except (hopgate.HopgateError, ValueError, OverflowError) as e:
        raise _refused(f"{_label(args.chain)}: delegation", e) from None
    _write_output(args.output, bytes(longer), args.format)
    return 0


def _invoke(args: argparse.Namespace) -> int:
    import hopgate

    _stdin_once(("CHAIN_FILE", args.chain), ("--payload-file", args.payload_file))
    key = _signing_key(args.holder_key, "--holder-key", HOLDER_KEY_ENV)
    chain = _read_one_chain(args.chain)
    payload = b"" if args.payload_file is None else _read_input(args.payload_file)
    nonce = None if args.nonce is None else _hex(args.nonce, "--nonce", 16, "a nonce")
    try:
        invocation = chain.invoke(
            key,
            args.ability,
            args.resource,
            args.cost,
            nonce=nonce,
            timestamp=args.timestamp,
            payload=payload,
        )
    except (hopgate.HopgateError, ValueError, OverflowError) as e:
        raise _refused(f"{_label(args.chain)}: invocation", e) from None
    _write_output(args.output, invocation, args.format)
    return 0


def _trusted(args: argparse.Namespace) -> list[bytes]:
    keys = [_public_key(v, "--trusted") for v in args.trusted or []]
    for path in args.trusted_file or []:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise UsageError(f"--trusted-file {path}: {reason}") from None
        for n, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(_public_key(line, f"--trusted-file {path}:{n}:"))
    if not keys:
        raise UsageError("no trusted issuer: pass --trusted PUBHEX or --trusted-file FILE")
    return keys


def _report(args: argparse.Namespace, label: str, code: int, reason: str, extra: dict[str, Any]) -> None:
    import hopgate

    name = hopgate.Code(code).name
    if args.json:
        print(json.dumps({"file": label, "code": int(code), "name": name, "reason": reason, **extra}))
    elif code == 0:
        print(f"{label}: OK")
    else:
        print(f"{label}: {name} ({reason})")


def _verify(args: argparse.Namespace) -> int:
    import hopgate

    _stdin_once(*[("CHAIN_FILE", path) for path in args.chains], ("--invocation", args.invocation))
    if args.skew is not None and args.invocation is None:
        raise UsageError("--skew applies to --invocation only")
    trusted = _trusted(args)
    now = args.now
    session = None if args.session is None else _hex(args.session, "--session", 16, "a session id")
    revoked = [_hex(v, "--revoked", 32, "a revocation id") for v in args.revoked or []]
    items: list[_Item] = []
    for path in args.chains:
        items.extend(_read_chains(path))
    if args.invocation is not None:
        return _verify_request(args, items, trusted, now, session, revoked)

    codes: list[int] = [int(hopgate.Code.MALFORMED)] * len(items)
    good = [i for i, item in enumerate(items) if item.error is None]
    enabled = args.progress if args.progress is not None else (len(good) > PROGRESS_MIN_CHAINS and sys.stderr.isatty())
    bar = ProgressBar(sys.stderr, f"verifying {len(good)} chains", enabled=enabled, unit="chains/s", scale=1.0)
    # Without a bar, one call batches every signature; with one, slices of a few
    # thousand chains still fill every core and let the bar move.
    step = 4096 if bar.enabled else max(len(good), 1)
    try:
        for start in range(0, len(good), step):
            part = good[start : start + step]
            result = hopgate.verify_chains([items[i].data for i in part], trusted, now=now, session=session, revoked=revoked)
            for i, code in zip(part, result.tolist()):
                codes[i] = int(code)
            bar(start + len(part), len(good))
    finally:
        bar.close()
    for item, code in zip(items, codes):
        if item.error is not None:
            extra = {"field": getattr(item.error, "field", ""), "offset": getattr(item.error, "offset", -1)}
            _report(args, item.label, code, _malformed_reason(item.error), extra)
        else:
            _report(args, item.label, code, hopgate.REASONS[hopgate.Code(code)], {})
    return next((c for c in codes if c != 0), 0)


def _verify_request(
    args: argparse.Namespace,
    items: list[_Item],
    trusted: list[bytes],
    now: Optional[int],
    session: Optional[bytes],
    revoked: list[bytes],
) -> int:
    import hopgate

    if len(items) != 1:
        raise UsageError(f"--invocation decides one request: give one chain, not {len(items)}")
    item = items[0]
    extra: dict[str, Any] = {"invocation": _label(args.invocation)}
    if item.error is not None:
        extra.update(field=getattr(item.error, "field", ""), offset=getattr(item.error, "offset", -1))
        _report(args, item.label, int(hopgate.Code.MALFORMED), _malformed_reason(item.error), extra)
        return int(hopgate.Code.MALFORMED)
    invocation = _read_invocation(args.invocation)
    skew = 30 if args.skew is None else args.skew
    gate = hopgate.Gate(trusted, skew=skew, replay_window=max(300, 2 * skew), session=session, revoked=revoked)
    decision = gate.check(item.data, invocation, now=now)
    if decision.reservation is not None:
        decision.reservation.release()  # a dry run: nothing was spent
    code = int(decision.code)
    _report(args, item.label, code, decision.reason, extra)
    return code


# ---------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------


@dataclass
class _Row:
    name: str
    case: str
    items: int
    seconds: float


def _best(reps: int, setup: Callable[[], Any], run: Callable[[Any], Any], after: Callable[[Any], None]) -> float:
    best = float("inf")
    for _ in range(reps):
        state = setup()
        started = time.perf_counter()
        result = run(state)
        best = min(best, time.perf_counter() - started)
        after(result)
    return best


def _bench(args: argparse.Namespace) -> int:
    import numpy as np

    import hopgate

    quick = args.quick
    reps = 2 if quick else 5
    scale = 4 if quick else 1
    native = hopgate.BACKEND == "native"
    backend = f"native, hash backend {hopgate.hash_backend()}" if native else "reference: pure Python, no native build here"
    print(f"# hopgate bench ({backend}), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, best of {reps}")
    steps = 6
    bar = ProgressBar(sys.stderr, "bench", enabled=args.progress, unit="steps/s", scale=1.0)
    rows: list[_Row] = []
    now = int(time.time())
    try:
        bar(0, steps)
        # verify_batch: n distinct keys, distinct messages.
        n = 1024 // scale
        keys = [hopgate.SigningKey.generate() for _ in range(n)]
        msgs = [os.urandom(64) for _ in range(n)]
        sigs = [k.sign(m) for k, m in zip(keys, msgs)]
        pks = [k.public_key for k in keys]
        t = _best(reps, lambda: None, lambda _: hopgate.verify_batch(msgs, sigs, pks), _expect_all(True))
        rows.append(_Row("verify_batch", f"n={n} distinct keys", n, t))
        bar(1, steps)

        # verify_chains: three-link chains, each from its own issuer.
        m = 512 // scale
        chains, holders, issuers = [], [], []
        for _ in range(m):
            people = [hopgate.SigningKey.generate() for _ in range(4)]
            chain = hopgate.Chain.grant(
                people[0], people[1].public_key, [("tools/*", "call")], budget=10**12, unit="calls",
                not_before=now - 3600, not_after=now + 86400, max_depth=4,
            )
            chain = chain.delegate(people[1], people[2].public_key).delegate(people[2], people[3].public_key)
            chains.append(chain)
            holders.append(people[3])
            issuers.append(people[0].public_key)
        raw = [bytes(c) for c in chains]
        t = _best(reps, lambda: None, lambda _: hopgate.verify_chains(raw, issuers, now=now), _expect_all(0))
        rows.append(_Row("verify_chains", f"{m} chains x 3 links", m, t))
        bar(2, steps)

        # The gate: cold (a fresh gate, nothing cached) and warm (every chain cached).
        def requests() -> list[bytes]:
            return [c.invoke(h, "call", "tools/search", 1, timestamp=now) for c, h in zip(chains, holders)]

        def settle(result: Any) -> None:
            codes, reservations = result
            for r in reservations:
                if r is not None:
                    r.release()
            if int(np.count_nonzero(codes)) != 0:
                raise UsageError(f"bench: the gate refused {int(np.count_nonzero(codes))} requests")

        def cold() -> tuple[Any, list[bytes]]:
            return hopgate.Gate(issuers), requests()

        t = _best(reps, cold, lambda s: s[0].check_batch(raw, s[1], now=now), settle)
        rows.append(_Row("gate", f"cold: {m} requests, 3-link chains", m, t))
        bar(3, steps)
        warm_gate = hopgate.Gate(issuers)
        settle(warm_gate.check_batch(raw, requests(), now=now))
        t = _best(reps, requests, lambda invs: warm_gate.check_batch(raw, invs, now=now), settle)
        rows.append(_Row("gate", f"warm: {m} requests, chains cached", m, t))
        bar(4, steps)

        # blake3_many over one buffer plus Arrow offsets (zero-copy).
        k = 100_000 // scale
        data = np.frombuffer(os.urandom(k * 256), dtype=np.uint8)
        offsets = np.arange(0, (k + 1) * 256, 256, dtype=np.int64)
        t = _best(reps, lambda: None, lambda _: hopgate.blake3_many(data, offsets), lambda _: None)
        rows.append(_Row("blake3_many", f"{k} x 256 B, buffer + offsets", k, t))
        bar(5, steps)
        t = _best(reps, lambda: None, lambda _: hopgate.sha256_many(data, offsets), lambda _: None)
        rows.append(_Row("sha256_many", f"{k} x 256 B, buffer + offsets", k, t))
        bar(6, steps)
    finally:
        bar.close()
    print(f"{'bench':<14} {'case':<36} {'µs/item':>10} {'items/s':>14}")
    for row in rows:
        per = row.seconds / row.items
        print(f"{row.name:<14} {row.case:<36} {per * 1e6:>10.3f} {1 / per:>14,.0f}")
    return 0


def _expect_all(value: Any) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        if not bool((result == value).all()):
            raise UsageError("bench: the backend gave a wrong answer; this build is broken")

    return check


# ---------------------------------------------------------------------------
# audit
# ---------------------------------------------------------------------------


def _audit_verify(args: argparse.Namespace) -> int:
    import hopgate

    key = _read_key(args.key_file)
    label = _shown(args.file)
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
    import hopgate
    from hopgate._audit import log_records, spending

    key = _read_key(args.key_file)
    label = _shown(args.file)
    try:
        report = hopgate.audit_verify(args.file, key=key)
        with open(args.file, "rb") as f:
            data = f.read(report.bytes)
    except OSError as e:
        raise UsageError(f"{label}: {e.strerror or e}") from None
    if not report.ok:
        print(f"{label}: {report}", file=sys.stderr)
        return 1
    accounts = spending(log_records(data))
    rows = sorted(accounts.items(), key=lambda item: (-item[1].spent, item[0]))
    if args.json:
        out = {
            "records": report.records,
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
    if rows:
        print(f"{'account (revocation id)':<66} {'spent':>20} {'overrun':>20} {'commits':>8} {'releases':>8} {'forfeits':>8}")
    for account, s in rows:
        print(f"{account.hex():<66} {s.spent:>20} {s.overrun:>20} {s.commits:>8} {s.releases:>8} {s.forfeits:>8}")
    return 0


# ---------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------

_TIME_HELP = (
    "unix seconds, ISO-8601 with a zone (2026-11-22T10:00:00Z), now, or +SECONDS / +2h relative to now; "
    "0..2**64-1"
)
_PUBLIC_HELP = f"a public key: 64 hex digits, bare or as {PUBLIC_KEY_LABEL}:HEX"
_KEYS_HELP = (
    f"Key files hold one line saying what they hold: {SIGNING_KEY_LABEL}:HEX (a seed, secret), "
    f"{PUBLIC_KEY_LABEL}:HEX, {AUDIT_KEY_LABEL}:HEX (secret), HEX being 64 hex digits. "
    "A command that needs a signing key refuses any other file, and an unlabelled one."
)


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal and the work is long)",
    )


def _output_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--output", metavar="OUT", help=f"write the {what} here (default: stdout)")
    parser.add_argument(
        "--format",
        choices=("text", "raw"),
        default="text",
        help="text: base64url without padding, one line (the HTTP header form; default); raw: the wire bytes",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hopgate",
        description="Verify agent delegation chains and enforce spending budgets at line rate.",
        epilog="Signing keys come from files or the environment, never from the command line. "
        f"{_KEYS_HELP} Run `hopgate COMMAND --help` for each command; `pydoc hopgate.cli` for formats and exit statuses.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser(
        "keygen",
        help="make a new Ed25519 signing key (or an audit key)",
        description=f"Make a new Ed25519 signing key: the line {SIGNING_KEY_LABEL}:HEX (the seed) goes to "
        f"-o FILE (mode 0600) or stdout, the line {PUBLIC_KEY_LABEL}:HEX to stderr (or alone to stdout "
        f"with --public, to keep as the public-key file). With --audit, a new audit log key, "
        f"{AUDIT_KEY_LABEL}:HEX. {_KEYS_HELP}",
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

    grant = commands.add_parser(
        "grant",
        help="sign a grant (link 0 of a new chain)",
        description="Sign a grant: link 0 of a new chain, issued by --issuer-key to --holder.",
    )
    grant.add_argument(
        "--issuer-key", metavar="FILE", help=f"the issuer's signing-key file (default ${ISSUER_KEY_ENV})"
    )
    grant.add_argument("--holder", metavar="PUBHEX", required=True, help=f"the holder; {_PUBLIC_HELP}")
    grant.add_argument(
        "--cap", type=_utf8, metavar="RESOURCE:ABILITY", action="append", required=True, help="a capability (repeatable)"
    )
    grant.add_argument("--budget", type=_u64, required=True, metavar="N", help="the budget, in --unit; 0..2**64-1")
    grant.add_argument("--unit", type=_utf8, required=True, metavar="U", help="the budget's unit, for example usd-cents")
    grant.add_argument("--not-before", type=_time_arg, required=True, metavar="T", help=_TIME_HELP)
    grant.add_argument("--not-after", type=_time_arg, required=True, metavar="T", help=_TIME_HELP)
    grant.add_argument(
        "--max-depth", type=_u8, required=True, metavar="D", help="how many delegations may follow; 0..255"
    )
    grant.add_argument("--session", metavar="HEX", help="the session id (32 hex digits; default zeros)")
    grant.add_argument("--meta-file", metavar="F", help="out-of-band metadata; its BLAKE3 becomes meta_digest")
    _output_options(grant, "chain")
    grant.set_defaults(run=_grant)

    delegate = commands.add_parser(
        "delegate",
        help="append a delegation to a chain",
        description="Append a delegation, signed by the chain's holder, to --to. Options left out keep "
        "the parent's value (max depth: one less). A delegation that would not verify is refused "
        "with its decision code name, exit status 2.",
    )
    delegate.add_argument("chain", metavar="CHAIN_FILE", help="the chain (raw or text; - for stdin)")
    delegate.add_argument(
        "--holder-key", metavar="FILE", help=f"the holder's signing-key file (default ${HOLDER_KEY_ENV})"
    )
    delegate.add_argument("--to", metavar="PUBHEX", required=True, help=f"the next holder; {_PUBLIC_HELP}")
    delegate.add_argument(
        "--cap", type=_utf8, metavar="RESOURCE:ABILITY", action="append", help="a capability (repeatable)"
    )
    delegate.add_argument("--budget", type=_u64, metavar="N", help="0..2**64-1")
    delegate.add_argument("--not-before", type=_time_arg, metavar="T", help=_TIME_HELP)
    delegate.add_argument("--not-after", type=_time_arg, metavar="T", help=_TIME_HELP)
    delegate.add_argument("--max-depth", type=_u8, metavar="D", help="0..255")
    delegate.add_argument("--meta-file", metavar="F", help="out-of-band metadata; its BLAKE3 becomes meta_digest")
    _output_options(delegate, "chain")
    delegate.set_defaults(run=_delegate)

    invoke = commands.add_parser(
        "invoke",
        help="sign an invocation with the chain's final holder",
        description="Sign an invocation (one request) with the key of the chain's final holder.",
    )
    invoke.add_argument("chain", metavar="CHAIN_FILE", help="the chain (raw or text; - for stdin)")
    invoke.add_argument(
        "--holder-key", metavar="FILE", help=f"the holder's signing-key file (default ${HOLDER_KEY_ENV})"
    )
    invoke.add_argument("--ability", type=_utf8, required=True, metavar="A")
    invoke.add_argument("--resource", type=_utf8, required=True, metavar="R")
    invoke.add_argument("--cost", type=_u64, required=True, metavar="N", help="in the chain's unit; 0..2**64-1")
    invoke.add_argument("--payload-file", metavar="F", help="the request body it authorises (BLAKE3 is signed)")
    invoke.add_argument("--timestamp", type=_time_arg, metavar="T", help=f"default now; {_TIME_HELP}")
    invoke.add_argument("--nonce", metavar="HEX", help="32 hex digits (default random)")
    _output_options(invoke, "invocation")
    invoke.set_defaults(run=_invoke)

    verify = commands.add_parser(
        "verify",
        help="verify chains, or decide one request",
        description="Verify chains (SPEC §4 (a)-(e)), or with --invocation decide one request at a fresh "
        "gate. One line per chain: FILE: OK or FILE: CODE_NAME (reason); JSON lines with --json. "
        "Exit status: the decision code of the chain, or the first non-zero code of several; "
        "2 also for usage errors (then nothing is printed on stdout).",
    )
    verify.add_argument("chains", metavar="CHAIN_FILE", nargs="+", help="chain files (raw, or text one per line); - for stdin")
    verify.add_argument(
        "--trusted", metavar="PUBHEX", action="append", help=f"a trusted issuer (repeatable); {_PUBLIC_HELP}"
    )
    verify.add_argument(
        "--trusted-file", metavar="F", action="append", help="trusted issuers, one public key a line (# comments)"
    )
    verify.add_argument("--now", type=_time_arg, metavar="T", help=f"verify at this time (default now); {_TIME_HELP}")
    verify.add_argument("--session", metavar="HEX", help="the expected session id (32 hex digits)")
    verify.add_argument("--revoked", metavar="HEX", action="append", help="a revoked link's revocation id (64 hex digits; repeatable)")
    verify.add_argument("--invocation", metavar="FILE", help="decide this request (raw or text) for the one chain")
    verify.add_argument(
        "--skew", type=_skew, metavar="S", help="allowed clock skew of --invocation, 0..2**63-1 (default 30 s)"
    )
    verify.add_argument("--json", action="store_true", help="one JSON object per chain")
    _progress_option(verify)
    verify.set_defaults(run=_verify)

    bench = commands.add_parser(
        "bench",
        help="time the main operations of this build",
        description="Time verify_batch, verify_chains, the gate (cold and warm) and batch hashing with the "
        "backend in use; prints µs/item and items/s (one run; for comparisons with peers see bench/ in the source).",
    )
    bench.add_argument("--quick", action="store_true", help="a quarter of the sizes, two repetitions")
    _progress_option(bench)
    bench.set_defaults(run=_bench)

    audit = commands.add_parser("audit", help="audit log tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    audit_verify = audit_commands.add_parser(
        "verify",
        help="check every record of an audit log; report the first bad one or OK",
        description="Check every record of an audit log; report the first bad one or OK. "
        "Exit status 0 if it verifies, 1 if not, 2 on usage or read errors.",
    )
    audit_verify.add_argument("file", help="the audit log")
    audit_verify.add_argument(
        "--key-file",
        help=f"the audit key: {AUDIT_KEY_LABEL}:HEX (hopgate keygen --audit), 64 hex digits or 32 raw bytes; "
        f"default ${KEY_ENV}",
    )
    audit_verify.add_argument("--json", action="store_true", help="print one JSON object")
    _progress_option(audit_verify)
    audit_verify.set_defaults(run=_audit_verify)
    audit_spending = audit_commands.add_parser(
        "spending",
        help="verify an audit log, then sum what its settlement records spent per account",
        description="Verify an audit log, then sum its settlement records per account (a link's revocation id): "
        "spent (committed and forfeited amounts, overruns included), overrun, and how many reservations were "
        "committed, released and forfeited. Exit status 0, 1 if the log does not verify, 2 on usage or read errors.",
    )
    audit_spending.add_argument("file", help="the audit log")
    audit_spending.add_argument(
        "--key-file",
        help=f"the audit key: {AUDIT_KEY_LABEL}:HEX (hopgate keygen --audit), 64 hex digits or 32 raw bytes; "
        f"default ${KEY_ENV}",
    )
    audit_spending.add_argument("--json", action="store_true", help="print one JSON object")
    audit_spending.set_defaults(run=_audit_spending)
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


if __name__ == "__main__":
    sys.exit(main())
