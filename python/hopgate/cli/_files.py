"""Chains and invocations on disk: reading either form (raw wire bytes, or the one-line
text form of docs/SPEC.md §2; ``-`` for stdin, once per command) and writing them."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import hopgate

from ._common import UsageError, shown

CHAIN_MAGIC = b"HGC1"
INVOCATION_MAGIC = b"HGI1"


def read_input(path: str) -> bytes:
    """The bytes of a file, or of stdin for ``-``; an unreadable file is a usage error."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror or e}") from None


def label_of(path: str) -> str:
    """How results and errors name an input: ``<stdin>`` for ``-``."""
    return "<stdin>" if path == "-" else shown(path)


def stdin_once(*uses: tuple[str, Optional[str]]) -> None:
    """Refuses ``-`` (stdin) for more than one input: the second would read nothing."""
    named = [option for option, path in uses if path == "-"]
    if len(named) > 1:
        who = " and ".join(named) + (" both" if len(named) == 2 else " all")
        raise UsageError(f"stdin (-) can be read only once: {who} name it")


def _text_lines(label: str, text: str) -> list[tuple[str, str]]:
    """(label, text) per non-empty line of a text-form file: ``FILE``, or ``FILE:LINE`` for several."""
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) == 1:
        return [(label, lines[0][1])]
    return [(f"{label}:{n}", line) for n, line in lines]


@dataclass
class Item:
    """One chain read from the input: its bytes, or why they do not parse."""

    label: str
    data: bytes
    error: Optional[Exception] = None


def read_chains(path: str) -> list[Item]:
    """Every chain of a file: one raw chain, or one text-form chain per line.

    Bytes that are neither (not ASCII, no ``HGC1`` magic) are taken as a raw chain,
    so that the parser names the field and offset that is wrong.
    """
    data = read_input(path)
    label = label_of(path)
    if not data.strip():
        return [Item(label, data, hopgate.MalformedError("malformed magic at offset 0: empty input", "magic", 0))]
    if not data.startswith(CHAIN_MAGIC):
        try:
            text: Optional[str] = data.decode("ascii")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            items = []
            for line_label, line in _text_lines(label, text):
                try:
                    items.append(Item(line_label, bytes(hopgate.Chain.from_text(line))))
                except hopgate.MalformedError as e:
                    items.append(Item(line_label, b"", e))
            return items
    item = Item(label, data)
    try:
        hopgate.Chain.from_bytes(data)
    except hopgate.MalformedError as e:
        item.error = e
    return [item]


def malformed_reason(e: Exception) -> str:
    """The parser's message, made sure to name the field and the byte offset."""
    field = getattr(e, "field", "")
    offset = getattr(e, "offset", -1)
    message = str(e)
    if not field or (field in message and f"offset {offset}" in message):
        return message
    return f"field {field} at offset {offset}: {message}"


def read_one_chain(path: str) -> hopgate.Chain:
    """The single chain of ``path``, for commands that extend or use it."""
    items = read_chains(path)
    if len(items) != 1:
        raise UsageError(f"{label_of(path)}: expected one chain, found {len(items)}")
    item = items[0]
    if item.error is not None:
        code = hopgate.Code.MALFORMED
        raise UsageError(f"{item.label}: {code.name} (code {int(code)}): {malformed_reason(item.error)}")
    return hopgate.Chain.from_bytes(item.data)


def read_invocation(path: str) -> bytes:
    """Invocation bytes (raw or text); undecodable text yields bytes the gate calls MALFORMED."""
    data = read_input(path)
    if data.startswith(INVOCATION_MAGIC):
        return data
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        return data
    try:
        return hopgate.from_text(text)
    except hopgate.MalformedError:
        return data


def write_output(out: Optional[str], data: bytes, fmt: str) -> None:
    """Writes a chain or an invocation to ``out`` (stdout for ``None`` or ``-``) in ``fmt``."""
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
