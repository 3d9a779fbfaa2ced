#!/usr/bin/env python3
"""Writes tests/vectors/decisions.json: negative (and a few positive) worked examples
of the gate's decision, at least one per decision code 0..18 (docs/SPEC.md §4, §10).

Every case carries what any implementation needs to decide it: the chain and the
invocation as hex, the gate's settings, the requests to decide first on the same
gate, and the code it must give. Chains are made with the library's own builders
(`Chain.grant`, `delegate`, `invoke`) where they build them, and with the raw encoder
of tests/craft.py where the builders refuse (widening links, lying lengths, bad
strings, wrong signers). Seeds, nonces and times are fixed and Ed25519 signing is
deterministic, so a run always writes the same bytes:

    python tools/make_decision_vectors.py            # write the file
    python tools/make_decision_vectors.py --check    # exit 1 if the file differs
    python tools/make_decision_vectors.py --impl reference --check

(`--impl reference` builds with hopgate.reference; both must give the same file.)
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
from dataclasses import replace
from types import ModuleType
from typing import Any, Optional, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "vectors" / "decisions.json"

sys.path.insert(0, str(ROOT / "tests"))
import craft  # noqa: E402  (the raw encoder shared with the tests)

NOW = 1_750_000_000
SKEW = 30
WINDOW = 300
PAYLOAD = b"GET /files/reports/q3.pdf"
U64_MAX = 2**64 - 1

#: Key name -> seed byte (the seed is that byte 32 times).
SEEDS = {"issuer": 0x01, "A": 0x02, "B": 0x03, "C": 0x04, "D": 0x05, "other_issuer": 0x06, "thief": 0x07}

HOW = [
    "Each case is decided on a fresh gate built from case.gate (trusted issuer keys, skew, "
    "replay_window, session: 16 bytes or null, revoked: revocation ids) on a fresh ledger "
    "(case.ledger, when present, gives some of its limits: max_accounts, max_nonces, "
    "max_accounts_per_root, max_nonces_per_root; the rest keep their defaults).",
    "First every request of case.before is decided on that gate, in order, at its own now, "
    "and must give its code; a reservation of an allowed one is committed at its full "
    "amount before the next request.",
    "Then case.chain with case.invocation is decided at case.gate.now, with case.require "
    "(null, or [ability, resource, price]: what the server requires) and case.payload "
    "(null, or the request body as hex, whose BLAKE3 must equal the signed payload_digest); "
    "the decision must be case.code (case.name).",
    "All byte strings are lowercase hex; times are unix seconds; amounts are in the chain's unit.",
]


def nonce(byte: int) -> bytes:
    return bytes([byte]) * 16


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


class Maker:
    """Builds the cases with one implementation's keys and builders."""

    def __init__(self, impl: ModuleType) -> None:
        self.impl = impl
        self.key = {name: impl.SigningKey.from_seed(bytes([seed]) * 32) for name, seed in SEEDS.items()}
        self.pk = {name: bytes(k.public_key) for name, k in self.key.items()}
        self.cases: list[dict[str, Any]] = []

    # -- the base chain: issuer -> A -> B, made by the builders ------------

    def base_grant(self, **kw: Any) -> Any:
        terms: dict[str, Any] = dict(
            caps=[("files/*", "read"), ("pay/*", "refund")], budget=1000, unit="usd-cents",
            not_before=NOW - 1000, not_after=NOW + 100_000, max_depth=3, nonce=nonce(0x10),
        )
        terms.update(kw)
        return self.impl.Chain.grant(self.key["issuer"], self.pk["A"], **terms)

    def base_chain(self, grant: Any = None, **kw: Any) -> Any:
        terms: dict[str, Any] = dict(caps=[("files/reports/*", "read")], budget=200, nonce=nonce(0x11))
        terms.update(kw)
        return (grant if grant is not None else self.base_grant()).delegate(
            self.key["A"], self.pk["B"], **terms)

    def base_invocation(self, chain: Any, **kw: Any) -> bytes:
        terms: dict[str, Any] = dict(
            ability="read", resource="files/reports/q3.pdf", cost=5, nonce=nonce(0x20), timestamp=NOW,
            payload=PAYLOAD,
        )
        terms.update(kw)
        return bytes(chain.invoke(self.key["B"], **terms))

    # -- the same chain, link by link, for the raw encoder ------------------

    def base_links(self) -> list[craft.L]:
        grant = craft.L(signer=self.key["issuer"], holder=self.pk["A"], max_depth=3, budget=1000,
                        unit="usd-cents", nonce=nonce(0x10), caps=(("files/*", "read"), ("pay/*", "refund")),
                        not_before=NOW - 1000, not_after=NOW + 100_000)
        delegation = craft.L(signer=self.key["A"], holder=self.pk["B"], max_depth=2, budget=200,
                             unit="usd-cents", nonce=nonce(0x11), caps=(("files/reports/*", "read"),),
                             not_before=NOW - 1000, not_after=NOW + 100_000)
        return [grant, delegation]

    def crafted(self, links: Sequence[craft.L], n: Optional[int] = None, magic: bytes = b"HGC1") -> craft.Built:
        return craft.build(links, n=n, magic=magic)

    def crafted_invocation(self, tail_sig: bytes, holder: str = "B", ability: craft.Str = "read",
                           resource: craft.Str = "files/reports/q3.pdf", cost: int = 5,
                           timestamp: int = NOW, n: int = 0x20, payload: bytes = PAYLOAD) -> bytes:
        digest = bytes(self.impl.blake3(payload))
        return craft.invocation(self.key[holder], tail_sig, ability, resource, cost, timestamp, nonce(n), digest)

    # -- recording ----------------------------------------------------------

    def request(self, chain: Any, invocation: bytes, code: int = 0, now: int = NOW,
                require: Optional[tuple[str, str, int]] = None, payload: Optional[bytes] = None) -> dict[str, Any]:
        return {
            "chain": bytes(chain).hex(),
            "invocation": bytes(invocation).hex(),
            "now": now,
            "require": None if require is None else list(require),
            "payload": None if payload is None else payload.hex(),
            "code": code,
        }

    def case(self, id: str, code: int, why: str, chain: Any, invocation: bytes, *, now: int = NOW,
             trusted: Sequence[str] = ("issuer",), skew: int = SKEW, replay_window: int = WINDOW,
             session: Optional[bytes] = None, revoked: Sequence[bytes] = (),
             require: Optional[tuple[str, str, int]] = None, payload: Optional[bytes] = None,
             before: Sequence[dict[str, Any]] = (), ledger: Optional[dict[str, int]] = None) -> None:
        name = self.impl.Code(code).name
        assert not any(c["id"] == id for c in self.cases), id
        entry: dict[str, Any] = {
            "id": id,
            "code": code,
            "name": name,
            "why": why,
            "gate": {
                "trusted": [self.pk[t].hex() for t in trusted],
                "now": now,
                "skew": skew,
                "replay_window": replay_window,
                "session": None if session is None else session.hex(),
                "revoked": [bytes(r).hex() for r in revoked],
            },
        }
        if ledger is not None:
            entry["ledger"] = ledger
        entry["before"] = list(before)
        entry.update(
            chain=bytes(chain).hex(),
            invocation=bytes(invocation).hex(),
            require=None if require is None else list(require),
            payload=None if payload is None else payload.hex(),
        )
        self.cases.append(entry)


def build(impl: ModuleType) -> dict[str, Any]:
    """Every case, in code order."""
    m = Maker(impl)
    Code = impl.Code
    grant = m.base_grant()
    chain = m.base_chain(grant)
    inv = m.base_invocation(chain)
    links = m.base_links()
    raw = m.crafted(links)
    # The raw encoder and the builders agree on the base chain, byte for byte.
    assert raw.data == bytes(chain), "tests/craft.py and the builders disagree"
    assert m.crafted_invocation(raw.sigs[-1]) == inv, "tests/craft.py and invoke() disagree"
    l0, l1 = links
    chain_bytes = bytes(chain)
    # Offsets into the base chain: link 0's signature, link 1's signature.
    sig0_at = chain_bytes.index(raw.sigs[0])
    sig1_at = chain_bytes.rindex(raw.sigs[1])

    def crafted_with(changes0: Optional[dict[str, Any]] = None, changes1: Optional[dict[str, Any]] = None,
                     **kw: Any) -> tuple[bytes, bytes]:
        """The base chain with some fields of link 0 / link 1 changed (re-signed by
        the same signers), and B's base invocation bound to it."""
        built = m.crafted([replace(l0, **(changes0 or {})), replace(l1, **(changes1 or {}))])
        return built.data, m.crafted_invocation(built.sigs[-1], **kw)

    # ---- 0 OK ---------------------------------------------------------------
    m.case("ok-two-links", Code.OK,
           "issuer grants A files/* read, A delegates files/reports/* read with a budget of 200 to B, "
           "and B signs a read of files/reports/q3.pdf costing 5 at the gate's now: every check passes.",
           chain, inv)
    m.case("ok-require-and-payload", Code.OK,
           "The server requires exactly (read, files/reports/q3.pdf) at a price of 5 and binds the body "
           "whose BLAKE3 the invocation signed: allowed.",
           chain, inv, require=("read", "files/reports/q3.pdf", 5), payload=PAYLOAD)
    m.case("ok-boundaries", Code.OK,
           "now equals link 0's not_before (inclusive), the timestamp is exactly skew seconds ahead and "
           "the cost equals the last link's budget: each bound is allowed.",
           chain, m.base_invocation(chain, cost=200, timestamp=NOW - 1000 + SKEW, nonce=nonce(0x21)),
           now=NOW - 1000)
    m.case("ok-zero-session", Code.OK,
           "A gate given the zero session id (16 zero bytes) accepts a grant whose session id is zero: "
           "the zero id is compared like any other.",
           chain, inv, session=bytes(16))
    utf8 = m.impl.Chain.grant(
        m.key["issuer"], m.pk["B"], [("fichiers/été/日本/🎉", "lire"), ("€" * 85, "𝄞" * 63 + "abc")],
        1000, "€-cent", NOW - 1000, NOW + 100_000, 0, nonce=nonce(0x12))
    m.case("ok-utf8-multibyte", Code.OK,
           "Names of 2-, 3- and 4-byte UTF-8 characters are accepted, including a resource and an "
           "ability of exactly 255 bytes.",
           utf8, bytes(utf8.invoke(m.key["B"], "lire", "fichiers/été/日本/🎉", 5, nonce=nonce(0x22),
                                   timestamp=NOW)))

    # ---- 1 MALFORMED --------------------------------------------------------
    M = Code.MALFORMED
    m.case("malformed-chain-trailing-byte", M,
           "One zero byte follows the last link: nothing may follow it.", chain_bytes + b"\x00", inv)
    m.case("malformed-invocation-trailing-byte", M,
           "One zero byte follows the invocation's signature: nothing may follow it.", chain, inv + b"\x00")
    m.case("malformed-invocation-713-bytes", M,
           "The invocation is 713 bytes, longer than the largest valid one (712), refused before parsing.",
           chain, inv + bytes(713 - len(inv)))
    m.case("malformed-chain-magic", M, "The chain starts with HGC2 instead of HGC1.",
           m.crafted(links, magic=b"HGC2").data, inv)
    m.case("malformed-invocation-magic", M, "The invocation starts with HGI0 instead of HGI1.",
           chain, b"HGI0" + inv[4:])
    m.case("malformed-link-count-zero", M, "The link count byte is 0 (it must be 1..=16).",
           m.crafted(links, n=0).data, inv)
    m.case("malformed-link-count-17", M, "The link count byte is 17 (it must be 1..=16).",
           m.crafted(links, n=17).data, inv)
    data, _ = crafted_with(changes0=dict(body_len_delta=1))
    m.case("malformed-body-len-one-more", M,
           "Link 0's body_len is one more than its body: the body parse stops one byte short of it.",
           data, inv)
    data, _ = crafted_with(changes1=dict(body_len_delta=-1))
    m.case("malformed-body-len-one-less", M,
           "Link 1's body_len is one less than its body: the body parse reads past body_len.", data, inv)
    big = chain_bytes[:5] + b"\xff\xff\xff\xff" + chain_bytes[9:]
    m.case("malformed-body-len-past-end", M,
           "Link 0's body_len is 2^32 - 1, running past the end of the chain.", big, inv)
    m.case("malformed-invocation-body-len", M,
           "The invocation's body_len is one more than its body.",
           chain, inv[:4] + (int.from_bytes(inv[4:8], "little") + 1).to_bytes(4, "little") + inv[8:])
    m.case("malformed-truncated-chain", M, "The chain's last byte is missing.", chain_bytes[:-1], inv)
    data, _ = crafted_with(changes0=dict(kind=1))
    m.case("malformed-link-0-kind", M, "Link 0 has kind 1 (delegation); link 0 must be a grant (kind 0).",
           data, inv)
    data, _ = crafted_with(changes1=dict(kind=0, issuer=m.pk["issuer"]))
    m.case("malformed-link-1-kind", M, "Link 1 has kind 0 (grant); every later link must be a delegation.",
           data, inv)
    data, i = crafted_with(changes1=dict(not_before=NOW, not_after=NOW))
    m.case("malformed-empty-window", M, "Link 1's not_before equals its not_after (it must be less).", data, i)
    data, i = crafted_with(changes1=dict(caps=(), ncap=0))
    m.case("malformed-ncap-zero", M, "Link 1 has no capability (ncap must be 1..=64).", data, i)
    data, i = crafted_with(changes1=dict(caps=(("files/reports/*", "read"),) * 65))
    m.case("malformed-ncap-65", M, "Link 1 has 65 capabilities (ncap must be 1..=64).", data, i)
    data, i = crafted_with(changes1=dict(unit=""))
    m.case("malformed-empty-unit", M, "Link 1's unit is a zero-length str.", data, i)
    data, i = crafted_with(changes1=dict(caps=(("files/reports/*", b""),)))
    m.case("malformed-empty-ability-in-cap", M, "Link 1's capability has a zero-length ability.", data, i)
    for label, bad, what in [
        ("bad-utf8", b"files/reports/\xff", "a 0xFF byte, never valid in UTF-8"),
        ("overlong", b"files\xc0\xafreports/*", "the overlong two-byte encoding C0 AF of '/'"),
        ("overlong-3", b"files/reports/\xe0\x80\xaf", "the overlong three-byte encoding E0 80 AF of '/'"),
        ("surrogate", b"files/reports/\xed\xa0\x80", "ED A0 80, the encoded surrogate U+D800"),
        ("above-10ffff", b"files/reports/\xf4\x90\x80\x80", "F4 90 80 80, beyond U+10FFFF"),
        ("nul", b"files/reports/\x00", "a NUL byte"),
        ("truncated-utf8", b"files/reports/\xe6\x97", "a three-byte character cut after two bytes"),
    ]:
        data, i = crafted_with(changes1=dict(caps=((bad, "read"),)))
        m.case(f"malformed-str-{label}", M, f"Link 1's capability resource contains {what}.", data, i)
    data, i = crafted_with(changes1=dict(caps=((b"r" * 256, "read"),)))
    m.case("malformed-str-256-bytes", M,
           "Link 1's capability resource is 256 bytes: its length byte wraps to 0, a zero-length str "
           "followed by bytes that do not parse.", data, i)
    m.case("malformed-invocation-empty-ability", M, "The invocation's ability is a zero-length str.",
           chain, m.crafted_invocation(raw.sigs[-1], ability=""))
    m.case("malformed-invocation-surrogate", M,
           "The invocation's resource contains ED A0 80, the encoded surrogate U+D800.",
           chain, m.crafted_invocation(raw.sigs[-1], resource=b"files/reports/\xed\xa0\x80"))
    m.case("malformed-invocation-nul", M, "The invocation's ability contains a NUL byte.",
           chain, m.crafted_invocation(raw.sigs[-1], ability=b"re\x00ad"))
    m.case("malformed-before-untrusted", M,
           "A malformed invocation under a chain nobody trusts: parsing (a) comes before trust (b).",
           chain, inv + b"\x00", trusted=("other_issuer",))

    # ---- 2 UNTRUSTED_ISSUER -------------------------------------------------
    U = Code.UNTRUSTED_ISSUER
    m.case("untrusted-issuer", U, "The gate trusts another issuer key, not link 0's issuer_pk.",
           chain, inv, trusted=("other_issuer",))
    m.case("untrusted-delegate-key", U,
           "The gate trusts A's key, which holds link 0 but did not issue it: only link 0's issuer_pk counts.",
           chain, inv, trusted=("A",))
    m.case("untrusted-before-signatures", U,
           "Link 0's signature is damaged and its issuer untrusted: trust (b) is checked before signatures (c).",
           flip(chain_bytes, sig0_at + 40), inv, trusted=("other_issuer",))

    # ---- 3 BAD_SIGNATURE ----------------------------------------------------
    S = Code.BAD_SIGNATURE
    m.case("bad-signature-link-0", S,
           "One bit of link 0's signature is flipped (so link 1's prev_sig no longer matches it either): "
           "signatures (c) are checked before links (d).",
           flip(chain_bytes, sig0_at + 40), inv)
    m.case("bad-signature-link-1", S, "One bit of link 1's signature is flipped (the invocation's tail_sig "
           "no longer matches either).", flip(chain_bytes, sig1_at + 33), inv)
    data, i = crafted_with(changes1=dict(signer=m.key["thief"]))
    m.case("bad-signature-link-1-wrong-signer", S,
           "Link 1 is signed by a key other than link 0's holder (A), and the invocation is bound to it.",
           data, i)
    m.case("bad-signature-invocation-wrong-signer", S,
           "The invocation is signed by A, not by the last link's holder B.",
           chain, m.crafted_invocation(raw.sigs[-1], holder="A"))
    m.case("bad-signature-invocation-bit", S, "One bit of the invocation's signature is flipped.",
           chain, flip(inv, len(inv) - 1, 3))
    m.case("bad-signature-truncated-chain", S,
           "The 1-link prefix of the chain with B's invocation: the invocation must be signed by the "
           "prefix's holder A, and B signed it.",
           grant, m.crafted_invocation(raw.sigs[0]))
    m.case("bad-signature-payload", S,
           "The gate is given a body whose BLAKE3 is not the invocation's signed payload_digest.",
           chain, inv, payload=b"GET /files/reports/q4.pdf")
    m.case("bad-signature-empty-payload", S,
           "The gate is given an empty body; the invocation signed the digest of a non-empty one.",
           chain, inv, payload=b"")
    data, i = crafted_with(changes1=dict(signer=m.key["thief"], budget=5000))
    m.case("bad-signature-before-widening", S,
           "Link 1 is signed by the wrong key and also widens the budget: signatures (c) come before "
           "attenuation (e).", data, i)

    # ---- 4 BROKEN_LINK ------------------------------------------------------
    K = Code.BROKEN_LINK
    other_grant = m.base_grant(nonce=nonce(0x13))
    data, i = crafted_with(changes1=dict(prev_sig=bytes(other_grant.tail_signature)))
    m.case("broken-link-prev-sig", K,
           "Link 1 is spliced: its prev_sig is the signature of another grant to A, though A (the right "
           "holder) signed it.", data, i)
    other_chain = m.base_chain(other_grant)
    m.case("broken-link-tail-sig", K,
           "B's invocation is bound (tail_sig) to another chain that also ends at B, and is presented "
           "with this one.", chain, m.base_invocation(other_chain))
    m.case("broken-link-before-scope", K,
           "Link 1 is spliced (prev_sig of another grant) and also widens the scope: links (d) come "
           "before attenuation (e).",
           *crafted_with(changes1=dict(prev_sig=bytes(other_grant.tail_signature), caps=(("*", "*"),))))

    # ---- 5..8 attenuation ---------------------------------------------------
    data, i = crafted_with(changes1=dict(caps=(("files/*", "write"),)), ability="write",
                           resource="files/reports/q3.pdf")
    m.case("scope-widened-ability", Code.SCOPE_WIDENED,
           "Link 1 grants files/* write; link 0 grants only read on files/* and refund on pay/*.", data, i)
    data, i = crafted_with(changes1=dict(caps=(("files/reports/*", "read"), ("*", "read"))))
    m.case("scope-widened-second-cap", Code.SCOPE_WIDENED,
           "Link 1's second capability (* read) is covered by no capability of link 0, though its first is.",
           data, i)
    data, i = crafted_with(changes1=dict(caps=(("files*", "read"),)))
    m.case("scope-widened-star-not-after-slash", Code.SCOPE_WIDENED,
           "Link 1 names the resource 'files*', a literal string that link 0's 'files/*' does not cover.",
           data, i)
    data, i = crafted_with(changes1=dict(budget=1001))
    m.case("budget-widened-amount", Code.BUDGET_WIDENED, "Link 1's budget (1001) exceeds link 0's (1000).",
           data, i)
    data, i = crafted_with(changes1=dict(unit="usd"))
    m.case("budget-widened-unit", Code.BUDGET_WIDENED,
           "Link 1 changes the unit from usd-cents to usd (units must be equal bytes).", data, i)
    data, i = crafted_with(changes1=dict(caps=(("*", "*"),), budget=1001))
    m.case("scope-before-budget", Code.SCOPE_WIDENED,
           "Link 1 widens both the scope and the budget: the scope rule is judged first.", data, i)
    data, i = crafted_with(changes1=dict(not_after=NOW + 100_001))
    m.case("time-widened-not-after", Code.TIME_WIDENED,
           "Link 1's not_after is one second later than link 0's.", data, i)
    data, i = crafted_with(changes1=dict(not_before=NOW - 1001))
    m.case("time-widened-not-before", Code.TIME_WIDENED,
           "Link 1's not_before is one second earlier than link 0's.", data, i)
    data, i = crafted_with(changes1=dict(max_depth=3))
    m.case("depth-exceeded-child-depth", Code.DEPTH_EXCEEDED,
           "Link 1's max_depth (3) is not less than link 0's (3).", data, i)
    data, i = crafted_with(changes0=dict(max_depth=0), changes1=dict(max_depth=0))
    m.case("depth-exceeded-parent-zero", Code.DEPTH_EXCEEDED,
           "Link 0 has max_depth 0, which admits no delegation, and link 1 follows it.", data, i)

    # ---- 9, 10 time ---------------------------------------------------------
    m.case("not-yet-valid", Code.NOT_YET_VALID,
           "now is one second before not_before (the invocation's own timestamp is stale too, but time "
           "(e) is judged before freshness (f)).", chain, inv, now=NOW - 1001)
    m.case("expired", Code.EXPIRED, "now equals not_after, which is exclusive.", chain, inv, now=NOW + 100_000)
    short = m.base_chain(grant, not_after=NOW + 10, nonce=nonce(0x14))
    m.case("expired-link-1", Code.EXPIRED,
           "Link 1's not_after is earlier than link 0's and now equals it: the chain is expired though "
           "link 0 is valid.", short, m.base_invocation(short, timestamp=NOW + 10), now=NOW + 10)
    data, i = crafted_with(changes0=dict(not_after=NOW), changes1=dict(caps=(("*", "*"),)))
    m.case("expired-before-widening", Code.EXPIRED,
           "Link 0 has expired and link 1 widens the scope and the window: link 0's rules are judged "
           "before link 1's.",
           data, i)

    # ---- 11 SESSION_MISMATCH ------------------------------------------------
    session = bytes([0x5A]) * 16
    m.case("session-mismatch", Code.SESSION_MISMATCH,
           "The gate expects session 5a..5a; the grant's session id is zero.", chain, inv, session=session)
    with_session = m.base_chain(m.base_grant(session_id=session, nonce=nonce(0x15)))
    m.case("session-mismatch-zero-expected", Code.SESSION_MISMATCH,
           "The gate is given the zero session id; the grant names session 5a..5a (zero is compared like "
           "any other id, not read as 'none').",
           with_session, m.base_invocation(with_session), session=bytes(16))

    # ---- 12 REVOKED ---------------------------------------------------------
    ids = [bytes(r) for r in chain.revocation_ids]
    m.case("revoked-link-1", Code.REVOKED, "Link 1's revocation id (BLAKE3 of its signature) is revoked.",
           chain, inv, revoked=[ids[1]])
    m.case("revoked-root", Code.REVOKED, "Link 0's revocation id is revoked, which revokes every chain under it.",
           chain, inv, revoked=[ids[0]])
    m.case("expired-before-revoked", Code.EXPIRED,
           "The chain is expired and link 0 revoked: link 0's time is judged before its revocation.",
           chain, inv, revoked=[ids[0]], now=NOW + 100_000)

    # ---- 13 SCOPE_DENIED ----------------------------------------------------
    D = Code.SCOPE_DENIED
    m.case("scope-denied-ability", D, "B asks to write; the last link grants only read.",
           chain, m.crafted_invocation(raw.sigs[-1], ability="write"))
    m.case("scope-denied-resource", D,
           "B asks for files/reports, which files/reports/* does not cover (the slash is part of the prefix).",
           chain, m.crafted_invocation(raw.sigs[-1], resource="files/reports"))
    m.case("scope-denied-granted-upstream", D,
           "B asks to refund pay/x: link 0 grants it, but the last link does not.",
           chain, m.crafted_invocation(raw.sigs[-1], ability="refund", resource="pay/x"))
    m.case("scope-denied-requirement", D,
           "The chain covers the invocation (read files/reports/q3.pdf), but the server requires "
           "files/reports/q4.pdf for this request.",
           chain, inv, require=("read", "files/reports/q4.pdf", 5))
    m.case("scope-denied-requirement-pattern", D,
           "The server's requirement names files/reports/*: requirement and invocation must be equal "
           "strings, not a pattern and a match.",
           chain, inv, require=("read", "files/reports/*", 5))
    m.case("scope-denied-before-cost", D,
           "B asks to write and at a cost above the budget: scope is judged before cost.",
           chain, m.crafted_invocation(raw.sigs[-1], ability="write", cost=201))

    # ---- 14 COST_EXCEEDS_GRANT ----------------------------------------------
    m.case("cost-exceeds-grant", Code.COST_EXCEEDS_GRANT, "The invocation's cost (201) exceeds the last link's "
           "budget (200).", chain, m.crafted_invocation(raw.sigs[-1], cost=201))
    m.case("cost-exceeds-before-price", Code.COST_EXCEEDS_GRANT,
           "Cost 201 exceeds the budget and the server's price is 500: the grant is judged before the price.",
           chain, m.crafted_invocation(raw.sigs[-1], cost=201), require=("read", "files/reports/q3.pdf", 500))

    # ---- 18 COST_BELOW_PRICE ------------------------------------------------
    m.case("cost-below-price", Code.COST_BELOW_PRICE,
           "The server's price for this request is 6; the invocation signs a cost of 5.",
           chain, inv, require=("read", "files/reports/q3.pdf", 6))
    m.case("cost-below-price-zero-cost", Code.COST_BELOW_PRICE,
           "The invocation signs a cost of 0 where the server's price is 1.",
           chain, m.base_invocation(chain, cost=0), require=("read", "files/reports/q3.pdf", 1))
    m.case("price-before-stale", Code.COST_BELOW_PRICE,
           "Cost 5 under a price of 6, with a stale timestamp: the price is judged before freshness.",
           chain, m.base_invocation(chain, timestamp=NOW - 31), require=("read", "files/reports/q3.pdf", 6))

    # ---- 15 STALE_INVOCATION ------------------------------------------------
    m.case("stale-past", Code.STALE_INVOCATION, "The timestamp is 31 seconds before now; skew is 30.",
           chain, m.base_invocation(chain, timestamp=NOW - 31))
    m.case("stale-future", Code.STALE_INVOCATION, "The timestamp is 31 seconds after now; skew is 30.",
           chain, m.base_invocation(chain, timestamp=NOW + 31))

    # ---- 16 REPLAY ----------------------------------------------------------
    R = Code.REPLAY
    m.case("replay-same-request", R, "The same request was allowed 10 seconds earlier on this gate: its nonce "
           "is remembered.", chain, inv, now=NOW + 10, before=[m.request(chain, inv)])
    other = m.base_invocation(chain, cost=7, resource="files/reports/q4.pdf", payload=b"other")
    m.case("replay-same-nonce-other-request", R,
           "An earlier, different invocation under the same root used this nonce: a nonce is single use "
           "per root, whatever the request.", chain, inv, before=[m.request(chain, other)])
    sibling = m.base_chain(grant, caps=[("files/reports/q3.pdf", "read")], budget=100, nonce=nonce(0x16))
    m.case("replay-across-chains-of-one-root", R,
           "A sibling chain under the same grant (root) used this nonce first: nonces are kept per root.",
           chain, inv, before=[m.request(sibling, m.base_invocation(sibling))])
    m.case("replay-nonce-horizon", R,
           "With max_nonces_per_root = 1, the root's second nonce pushed out its first, raising the root's "
           "horizon to that nonce's timestamp: a fresh nonce dated at or before the horizon is refused "
           "(it may have been seen).",
           chain, m.base_invocation(chain, nonce=nonce(0x23)), ledger={"max_nonces_per_root": 1},
           before=[m.request(chain, inv), m.request(chain, m.base_invocation(chain, nonce=nonce(0x24)))])
    m.case("replay-before-budget", R,
           "The nonce was used by an earlier request, and the budget is also spent: replay is judged before "
           "the ledger.", chain, m.base_invocation(chain, cost=150),
           before=[m.request(chain, m.base_invocation(chain, cost=150))])

    # ---- 17 BUDGET_EXHAUSTED ------------------------------------------------
    E = Code.BUDGET_EXHAUSTED
    m.case("budget-exhausted-last-link", E,
           "An earlier request spent 150 of the last link's 200; this one asks for 60.",
           chain, m.base_invocation(chain, cost=60, nonce=nonce(0x25)),
           before=[m.request(chain, m.base_invocation(chain, cost=150))])
    right_grant = grant.delegate(m.key["A"], m.pk["C"], caps=[("files/reports/*", "read")], budget=200,
                                 nonce=nonce(0x18))
    right = right_grant.delegate(m.key["C"], m.pk["D"], budget=200, nonce=nonce(0x19))
    middle = right_grant.delegate(m.key["C"], m.pk["B"], budget=200, nonce=nonce(0x1A))
    m.case("budget-exhausted-middle-link", E,
           "issuer -> A -> C (200) -> D and issuer -> A -> C (200) -> B share the middle link: D spent 150 "
           "through it, so B's 60 fits B's own link (200) and the grant (1000) but not the middle one.",
           middle, bytes(middle.invoke(m.key["B"], "read", "files/reports/q3.pdf", 60, nonce=nonce(0x26),
                                       timestamp=NOW)),
           before=[m.request(right, bytes(right.invoke(m.key["D"], "read", "files/reports/q1.pdf", 150,
                                                       nonce=nonce(0x27), timestamp=NOW)))])
    small_root = m.base_grant(budget=100, nonce=nonce(0x1B))
    kid1 = small_root.delegate(m.key["A"], m.pk["B"], budget=100, nonce=nonce(0x1C))
    kid2 = small_root.delegate(m.key["A"], m.pk["C"], budget=100, nonce=nonce(0x1D))
    m.case("budget-exhausted-root", E,
           "Two delegations of a grant with a budget of 100, each of 100: after 70 through one, 31 "
           "through the other exceeds the grant.",
           kid2, bytes(kid2.invoke(m.key["C"], "read", "files/a", 31, nonce=nonce(0x28), timestamp=NOW)),
           before=[m.request(kid1, bytes(kid1.invoke(m.key["B"], "read", "files/a", 70, nonce=nonce(0x29),
                                                     timestamp=NOW)))])
    lone = m.impl.Chain.grant(m.key["other_issuer"], m.pk["A"], [("files/*", "read")], 50, "usd-cents",
                              NOW - 1000, NOW + 100_000, 0, nonce=nonce(0x1E))
    m.case("budget-exhausted-max-accounts", E,
           "The ledger holds at most 2 accounts and the earlier request opened 2 (one per link); this "
           "request's chain needs 1 more, and no account has expired to make room.",
           lone, bytes(lone.invoke(m.key["A"], "read", "files/a", 1, nonce=nonce(0x2A), timestamp=NOW)),
           trusted=("issuer", "other_issuer"), ledger={"max_accounts": 2, "max_accounts_per_root": 2},
           before=[m.request(chain, inv)])
    brief = m.impl.Chain.grant(m.key["issuer"], m.pk["A"], [("files/*", "read")], 50, "usd-cents",
                               NOW - 1000, NOW + 10, 0, nonce=nonce(0x1F))
    lone_inv = bytes(lone.invoke(m.key["A"], "read", "files/a", 1, nonce=nonce(0x2B), timestamp=NOW + 20))
    m.case("budget-exhausted-forgotten-account", E,
           "With max_accounts = 1: a grant valid until now + 10 spent 1; at now + 20 another grant needed "
           "the room and the expired account was forgotten; back at now (a clock stepped back) the first "
           "grant's account cannot be opened again, or its budget would be spent twice.",
           brief, bytes(brief.invoke(m.key["A"], "read", "files/a", 1, nonce=nonce(0x2C), timestamp=NOW)),
           trusted=("issuer", "other_issuer"), ledger={"max_accounts": 1},
           before=[
               m.request(brief, bytes(brief.invoke(m.key["A"], "read", "files/a", 1, nonce=nonce(0x2D),
                                                   timestamp=NOW))),
               m.request(lone, lone_inv, now=NOW + 20),
           ])

    codes = {str(int(c)): c.name for c in impl.Code}
    seen = {c["code"] for c in m.cases}
    assert seen == {int(c) for c in impl.Code}, f"codes without a case: {set(map(int, impl.Code)) - seen}"
    m.cases.sort(key=lambda c: c["code"])  # stable: the order above within a code
    return {
        "format": "hopgate-decision-vectors-v1",
        "source": "tools/make_decision_vectors.py in this repository (fixed seeds, nonces and times; "
                  "Ed25519 signing is deterministic, so a run reproduces this file byte for byte)",
        "contract": "docs/SPEC.md §4 (decision codes and check order), §5 (ledger), §6 (gate)",
        "how_to_run": HOW,
        "keys": {name: {"seed": (bytes([seed]) * 32).hex(), "public_key": m.pk[name].hex()}
                 for name, seed in SEEDS.items()},
        "codes": codes,
        "cases": m.cases,
    }


def render(impl: ModuleType) -> str:
    """The file's text."""
    return json.dumps(build(impl), indent=1, ensure_ascii=False) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    parser.add_argument("--impl", choices=["native", "reference"], default="native",
                        help="whose builders and keys to use (both give the same bytes)")
    parser.add_argument("--out", type=pathlib.Path, default=OUT, help=f"the file (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    impl = importlib.import_module("hopgate" if args.impl == "native" else "hopgate.reference")
    text = render(impl)
    if args.check:
        if not args.out.exists() or args.out.read_text(encoding="utf-8") != text:
            print(f"{args.out}: differs from a fresh run; rerun {pathlib.Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date ({len(json.loads(text)['cases'])} cases)")
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(json.loads(text)['cases'])} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
