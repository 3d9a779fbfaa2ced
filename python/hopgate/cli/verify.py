"""``hopgate verify``: chains checked against trusted issuers (the chain checks of
docs/SPEC.md §4), or one request decided at a fresh gate (docs/SPEC.md §6), its body and
the server's requirement included.

The exit status says whether everything was allowed (0), not what was decided (1: the
decision codes are on stdout, one line per chain), so that a usage error (2) can never be
taken for a decision."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import hopgate

from ._common import (
    PUBLIC_HELP,
    TIME_HELP,
    U64_MAX,
    ProgressBar,
    UsageError,
    add_command,
    integer,
    parse_hex,
    parse_public_key,
    progress_option,
    time_arg,
    u64,
    utf8,
)
from ._files import Item, label_of, malformed_reason, read_chains, read_input, read_invocation, stdin_once

if TYPE_CHECKING:
    from ._common import Commands

#: ``verify`` shows a progress bar above this many chains (when stderr is a terminal).
PROGRESS_MIN_CHAINS = 1000
#: Clock skew: the dry-run gate of ``verify --invocation`` needs a replay window of at least
#: twice the skew, and the window is a u64 too.
SKEW_MAX = U64_MAX // 2
_skew = integer(SKEW_MAX, "2**63-1", "seconds; twice the skew is the replay window, a u64")
#: Options that only a request (``--invocation``) gives a meaning to.
_REQUEST_OPTIONS = ("--skew", "--payload", "--require")


def _codes_table() -> str:
    """The decision codes and their reasons, as ``hopgate.Code`` and ``hopgate.REASONS`` say."""
    lines = ["decision codes (docs/SPEC.md §4):"]
    for code in hopgate.Code:
        lines += textwrap.wrap(
            hopgate.REASONS[code], 79, initial_indent=f"  {int(code):>2}  {code.name:<22} ", subsequent_indent=" " * 29
        )
    return "\n".join(lines)


class _Require(argparse.Action):
    """``--require ABILITY RESOURCE PRICE``: ``(ability, resource, price)`` for the gate,
    each checked as the options of the same meaning are (UTF-8 text, a u64 price)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Union[str, Sequence[Any], None],
        option_string: Optional[str] = None,
    ) -> None:
        assert isinstance(values, list) and len(values) == 3  # nargs=3
        ability, resource, price = values
        try:
            setattr(namespace, self.dest, (utf8(ability), utf8(resource), u64(price)))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None


def add_parser(commands: Commands) -> None:
    verify = add_command(
        commands,
        "verify",
        summary="verify chains, or decide one request",
        description="""
        Verify chains against the trusted issuers (the chain checks of docs/SPEC.md §4): one
        line per chain, "FILE: OK" or "FILE: NAME (code N): reason", or one JSON object per
        chain with --json (file, code, name, reason; field and offset for a chain that does
        not parse). A text file of several chains is reported per line, FILE:LINE.

        With --invocation, decide that one request for the one chain at a fresh gate
        (docs/SPEC.md §6), as a server would: --payload binds the request body (the gate
        compares its BLAKE3 with the invocation's payload_digest; a body that differs is
        BAD_SIGNATURE), and --require names what the server requires of the request (the
        ability and resource it must name, else SCOPE_DENIED, and the least cost it must
        sign, else COST_BELOW_PRICE). Without --payload the body is not checked. Nothing
        is spent: the reservation of an allowed request is released.
        """,
        example="""
        hopgate verify grant.txt worker.txt --trusted "$(cat alice.pub)"
        hopgate verify worker.txt --trusted "$(cat alice.pub)" --invocation call.txt \\
            --payload body.json --require call tools/search 2
        """,
        statuses=[
            (0, "every chain, or the request, is allowed: OK"),
            (1, "a decision other than OK, named on the chain's line with its code (a chain file that does not parse is MALFORMED)"),
        ],
        more=_codes_table(),
    )
    verify.add_argument("chains", metavar="CHAIN_FILE", nargs="+", help="chain files (raw, or text one per line); - for stdin")
    verify.add_argument(
        "--trusted", metavar="PUBHEX", action="append", help=f"a trusted issuer (repeatable); {PUBLIC_HELP}"
    )
    verify.add_argument(
        "--trusted-file", metavar="F", action="append", help="trusted issuers, one public key a line (# comments)"
    )
    verify.add_argument("--now", type=time_arg, metavar="T", help=f"verify at this time (default now); {TIME_HELP}")
    verify.add_argument("--session", metavar="HEX", help="the expected session id (32 hex digits)")
    verify.add_argument("--revoked", metavar="HEX", action="append", help="a revoked link's revocation id (64 hex digits; repeatable)")
    verify.add_argument("--invocation", metavar="FILE", help="decide this request (raw or text; - for stdin) for the one chain")
    verify.add_argument(
        "--payload",
        metavar="FILE",
        help="with --invocation: the request body (- for stdin); its BLAKE3 must be the invocation's "
        "payload_digest, else BAD_SIGNATURE",
    )
    verify.add_argument(
        "--require",
        nargs=3,
        action=_Require,
        metavar=("ABILITY", "RESOURCE", "PRICE"),
        help="with --invocation: what the server requires: the invocation must name ABILITY on RESOURCE "
        "(else SCOPE_DENIED) and sign a cost of at least PRICE, 0..2**64-1 (else COST_BELOW_PRICE)",
    )
    verify.add_argument(
        "--skew", type=_skew, metavar="S", help="with --invocation: the allowed clock skew, 0..2**63-1 (default 30 s)"
    )
    verify.add_argument("--json", action="store_true", help="one JSON object per chain")
    progress_option(verify)
    verify.set_defaults(run=_verify)


def _trusted(args: argparse.Namespace) -> list[bytes]:
    keys = [parse_public_key(v, "--trusted") for v in args.trusted or []]
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
                keys.append(parse_public_key(line, f"--trusted-file {path}:{n}:"))
    if not keys:
        raise UsageError("no trusted issuer: pass --trusted PUBHEX or --trusted-file FILE")
    return keys


def _report(args: argparse.Namespace, label: str, code: int, reason: str, extra: dict[str, Any]) -> None:
    name = hopgate.Code(code).name
    if args.json:
        print(json.dumps({"file": label, "code": int(code), "name": name, "reason": reason, **extra}))
    elif code == 0:
        print(f"{label}: OK")
    else:
        print(f"{label}: {name} (code {int(code)}): {reason}")


def _malformed(item: Item) -> tuple[str, dict[str, Any]]:
    """The reason of a chain that does not parse, and the field and offset for --json."""
    assert item.error is not None
    extra = {"field": getattr(item.error, "field", ""), "offset": getattr(item.error, "offset", -1)}
    return malformed_reason(item.error), extra


def _verify(args: argparse.Namespace) -> int:
    stdin_once(
        *[("CHAIN_FILE", path) for path in args.chains], ("--invocation", args.invocation), ("--payload", args.payload)
    )
    if args.invocation is None:
        for option in _REQUEST_OPTIONS:
            if getattr(args, option[2:]) is not None:
                raise UsageError(f"{option} applies to --invocation only")
    trusted = _trusted(args)
    now = args.now
    session = None if args.session is None else parse_hex(args.session, "--session", 16, "a session id")
    revoked = [parse_hex(v, "--revoked", 32, "a revocation id") for v in args.revoked or []]
    items: list[Item] = []
    for path in args.chains:
        items.extend(read_chains(path))
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
            _report(args, item.label, code, *_malformed(item))
        else:
            _report(args, item.label, code, hopgate.REASONS[hopgate.Code(code)], {})
    return 0 if all(code == 0 for code in codes) else 1


def _verify_request(
    args: argparse.Namespace,
    items: list[Item],
    trusted: list[bytes],
    now: Optional[int],
    session: Optional[bytes],
    revoked: list[bytes],
) -> int:
    if len(items) != 1:
        raise UsageError(f"--invocation decides one request: give one chain, not {len(items)}")
    item = items[0]
    extra: dict[str, Any] = {"invocation": label_of(args.invocation)}
    if item.error is not None:
        reason, where = _malformed(item)
        _report(args, item.label, int(hopgate.Code.MALFORMED), reason, {**extra, **where})
        return 1
    invocation = read_invocation(args.invocation)
    payload = None if args.payload is None else read_input(args.payload)
    skew = 30 if args.skew is None else args.skew
    gate = hopgate.Gate(trusted, skew=skew, replay_window=max(300, 2 * skew), session=session, revoked=revoked)
    decision = gate.check(item.data, invocation, now=now, payload=payload, require=args.require)
    if decision.reservation is not None:
        decision.reservation.release()  # a dry run: nothing was spent
    code = int(decision.code)
    _report(args, item.label, code, decision.reason, extra)
    return 0 if code == 0 else 1
