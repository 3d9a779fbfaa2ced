"""``hopgate grant``, ``delegate`` and ``invoke``: signing the links of a chain and the
invocations made with it. What the library's builders refuse (a delegation or an
invocation that would not verify) is a usage error naming its decision code."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Optional

import hopgate

from ._common import (
    HOLDER_KEY_ENV,
    ISSUER_KEY_ENV,
    PUBLIC_HELP,
    TIME_HELP,
    UsageError,
    add_command,
    parse_hex,
    parse_public_key,
    signing_key,
    time_arg,
    u8,
    u64,
    utf8,
)
from ._files import label_of, read_input, read_one_chain, stdin_once, write_output

if TYPE_CHECKING:
    from ._common import Commands

_KEY_FILE = ", a key file of the wrong kind"
_WRITTEN = [(0, "written to -o OUT, or to stdout")]
_FORMATS = (
    "Chains and invocations are written in the text form (base64url without padding, one line: "
    "the HTTP header value) unless --format raw asks for the wire bytes; a chain is read in either "
    "form, - for stdin."
)


def add_parsers(commands: Commands) -> None:
    grant = add_command(
        commands,
        "grant",
        summary="sign a grant (link 0 of a new chain)",
        description=f"""
        Sign a grant: link 0 of a new chain, issued by --issuer-key to --holder, for the
        capabilities --cap, a budget of --budget units of --unit, valid from --not-before
        to --not-after, and allowing --max-depth delegations after it.

        {_FORMATS}
        """,
        example="""
        hopgate grant --issuer-key alice.key --holder "$(cat agent.pub)" \\
            --cap 'tools/*:call' --budget 100 --unit calls \\
            --not-before now --not-after +1d --max-depth 1 -o grant.txt
        """,
        statuses=_WRITTEN,
        usage_also=f"{_KEY_FILE}, a grant the library refuses (not_before after not_after, say)",
    )
    grant.add_argument(
        "--issuer-key", metavar="FILE", help=f"the issuer's signing-key file (default ${ISSUER_KEY_ENV})"
    )
    grant.add_argument("--holder", metavar="PUBHEX", required=True, help=f"the holder; {PUBLIC_HELP}")
    grant.add_argument(
        "--cap", type=utf8, metavar="RESOURCE:ABILITY", action="append", required=True, help="a capability (repeatable)"
    )
    grant.add_argument("--budget", type=u64, required=True, metavar="N", help="the budget, in --unit; 0..2**64-1")
    grant.add_argument("--unit", type=utf8, required=True, metavar="U", help="the budget's unit, for example usd-cents")
    grant.add_argument("--not-before", type=time_arg, required=True, metavar="T", help=TIME_HELP)
    grant.add_argument("--not-after", type=time_arg, required=True, metavar="T", help=TIME_HELP)
    grant.add_argument(
        "--max-depth", type=u8, required=True, metavar="D", help="how many delegations may follow; 0..255"
    )
    grant.add_argument("--session", metavar="HEX", help="the session id (32 hex digits; default zeros)")
    grant.add_argument("--meta-file", metavar="F", help="out-of-band metadata; its BLAKE3 becomes meta_digest")
    _output_options(grant, "chain")
    grant.set_defaults(run=_grant)

    delegate = add_command(
        commands,
        "delegate",
        summary="append a delegation to a chain",
        description=f"""
        Append a delegation, signed by the chain's holder (--holder-key), to --to. Options
        left out keep the parent's value (max depth: one less). A delegation that would not
        verify (wider scope, budget or time, or no depth left) is refused with its decision
        code, and nothing is written.

        {_FORMATS}
        """,
        example="""
        hopgate delegate grant.txt --holder-key agent.key --to "$(cat worker.pub)" \\
            --budget 10 -o worker.txt
        """,
        statuses=_WRITTEN,
        usage_also=f"{_KEY_FILE}, a delegation that would not verify, named by its decision code "
        "(BUDGET_WIDENED, code 6, say)",
    )
    delegate.add_argument("chain", metavar="CHAIN_FILE", help="the chain (raw or text; - for stdin)")
    delegate.add_argument(
        "--holder-key", metavar="FILE", help=f"the holder's signing-key file (default ${HOLDER_KEY_ENV})"
    )
    delegate.add_argument("--to", metavar="PUBHEX", required=True, help=f"the next holder; {PUBLIC_HELP}")
    delegate.add_argument(
        "--cap", type=utf8, metavar="RESOURCE:ABILITY", action="append", help="a capability (repeatable)"
    )
    delegate.add_argument("--budget", type=u64, metavar="N", help="0..2**64-1")
    delegate.add_argument("--not-before", type=time_arg, metavar="T", help=TIME_HELP)
    delegate.add_argument("--not-after", type=time_arg, metavar="T", help=TIME_HELP)
    delegate.add_argument("--max-depth", type=u8, metavar="D", help="0..255")
    delegate.add_argument("--meta-file", metavar="F", help="out-of-band metadata; its BLAKE3 becomes meta_digest")
    _output_options(delegate, "chain")
    delegate.set_defaults(run=_delegate)

    invoke = add_command(
        commands,
        "invoke",
        summary="sign an invocation with the chain's final holder",
        description=f"""
        Sign an invocation (one request: an ability on a resource, at a cost in the chain's
        unit, with the BLAKE3 of its body) with the key of the chain's final holder. An
        invocation that the chain does not cover is refused with its decision code, and
        nothing is written.

        {_FORMATS}
        """,
        example="""
        hopgate invoke worker.txt --holder-key worker.key --ability call \\
            --resource tools/search --cost 3 --payload-file body.json -o call.txt
        """,
        statuses=_WRITTEN,
        usage_also=f"{_KEY_FILE}, an invocation the chain does not cover, named by its decision code "
        "(SCOPE_DENIED, code 13, say)",
    )
    invoke.add_argument("chain", metavar="CHAIN_FILE", help="the chain (raw or text; - for stdin)")
    invoke.add_argument(
        "--holder-key", metavar="FILE", help=f"the holder's signing-key file (default ${HOLDER_KEY_ENV})"
    )
    invoke.add_argument("--ability", type=utf8, required=True, metavar="A")
    invoke.add_argument("--resource", type=utf8, required=True, metavar="R")
    invoke.add_argument("--cost", type=u64, required=True, metavar="N", help="in the chain's unit; 0..2**64-1")
    invoke.add_argument("--payload-file", metavar="F", help="the request body it authorises (BLAKE3 is signed)")
    invoke.add_argument("--timestamp", type=time_arg, metavar="T", help=f"default now; {TIME_HELP}")
    invoke.add_argument("--nonce", metavar="HEX", help="32 hex digits (default random)")
    _output_options(invoke, "invocation")
    invoke.set_defaults(run=_invoke)


def _output_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--output", metavar="OUT", help=f"write the {what} here (default: stdout)")
    parser.add_argument(
        "--format",
        choices=("text", "raw"),
        default="text",
        help="text: base64url without padding, one line (the HTTP header form; default); raw: the wire bytes",
    )


def _cap(value: str) -> tuple[str, str]:
    resource, sep, ability = value.rpartition(":")
    if not sep or not resource or not ability:
        raise UsageError(f"--cap {value!r}: expected RESOURCE:ABILITY (for example payments/*:refund)")
    return resource, ability


def _caps(values: Optional[list[str]]) -> Optional[list[tuple[str, str]]]:
    return None if not values else [_cap(v) for v in values]


def _refused(action: str, e: Exception) -> UsageError:
    """A builder's refusal, with the decision code a verifier would have returned."""
    code = getattr(e, "code", None)
    if code is None:
        return UsageError(f"{action}: {e}")
    name = hopgate.Code(code).name
    message = str(e)
    if message.startswith(f"{name}: "):
        message = message[len(name) + 2 :]
    return UsageError(f"{action} refused: {name} (code {int(code)}): {message}")


def _grant(args: argparse.Namespace) -> int:
    key = signing_key(args.issuer_key, "--issuer-key", ISSUER_KEY_ENV)
    holder = parse_public_key(args.holder, "--holder")
    caps = _caps(args.cap)
    assert caps is not None  # required=True
    session = None if args.session is None else parse_hex(args.session, "--session", 16, "a session id")
    meta = None if args.meta_file is None else hopgate.blake3(read_input(args.meta_file))
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
    write_output(args.output, bytes(chain), args.format)
    return 0


def _delegate(args: argparse.Namespace) -> int:
    stdin_once(("CHAIN_FILE", args.chain), ("--meta-file", args.meta_file))
    key = signing_key(args.holder_key, "--holder-key", HOLDER_KEY_ENV)
    to = parse_public_key(args.to, "--to")
    chain = read_one_chain(args.chain)
    meta = None if args.meta_file is None else hopgate.blake3(read_input(args.meta_file))
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
        raise _refused(f"{label_of(args.chain)}: delegation", e) from None
    write_output(args.output, bytes(longer), args.format)
    return 0


def _invoke(args: argparse.Namespace) -> int:
    stdin_once(("CHAIN_FILE", args.chain), ("--payload-file", args.payload_file))
    key = signing_key(args.holder_key, "--holder-key", HOLDER_KEY_ENV)
    chain = read_one_chain(args.chain)
    payload = b"" if args.payload_file is None else read_input(args.payload_file)
    nonce = None if args.nonce is None else parse_hex(args.nonce, "--nonce", 16, "a nonce")
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
        raise _refused(f"{label_of(args.chain)}: invocation", e) from None
    write_output(args.output, invocation, args.format)
    return 0
