"""hopgate demo: a realistic delegation workload, verified natively and by the reference.

Run it from a checkout with ``python examples/demo.py`` (``make demo`` installs the package
into a virtualenv of its own with ``pip install .`` and does). It needs only what
``pip install hopgate`` brings; with the ``reference`` extra (``pip install
'hopgate[reference]'``) it also checks a sample against the pure-Python reference. It

1. derives every key from ``--seed`` (principals, who are the trusted issuers, a few
   untrusted "rogue" issuers, and agents), so that the same seed gives the same bytes;
2. generates ``--chains`` delegation chains of 1 to 4 links: a principal grants an agent
   a scoped, budgeted, time-boxed authority (``("payments/*", "refund")``,
   ``("files/reports/*", "read")``, ``("mcp/tools/*", "call")``, ...), and agents
   delegate narrower parts of it to other agents (narrower scope, smaller budget,
   shorter window, less depth);
3. tampers with about ``--tamper`` of them in named ways, each with the decision code
   docs/SPEC.md §4 says a verifier must return (a widening link is encoded and signed
   directly, with the delegator's real key, since the builders refuse to make one:
   ``demo_wire``);
4. verifies all chains with the native ``hopgate.verify_chains`` and, when the
   reference extra is installed, a random sample of them with the pure-Python
   ``hopgate.reference.verify_chains``;
5. prints the workload, the decisions against the expected ones, and the throughput;
6. runs the gate scenario of ``demo_gate``: agents spending concurrently through
   delegated budgets, a replay, a stolen chain, a revoked agent; then ``demo_stores``:
   the same agents from two processes on one SQLite ledger, and a restart.

The exit status is 1 when any chain gets another decision than the expected one, or
when the reference and the native module disagree on any sampled chain.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np
import numpy.typing as npt

import hopgate
from demo_gate import run as gate_scenario
from demo_stores import run as stores_scenario
from demo_wire import KIND_DELEGATION, KIND_GRANT, LINK_DOMAIN, cap_covers, encode_chain, encode_link_body
from hopgate import Chain, Code, Link, SigningKey

__all__ = ["main"]

#: The verifier's clock: 2026-01-01T00:00:00Z, fixed so that a seed gives the same run.
NOW = 1_767_225_600
HOUR = 3_600
DAY = 86_400
ZERO_DIGEST = bytes(32)
ROGUE_ISSUERS = 3
DECOY_REVOCATIONS = 1_000
#: How often (relative weights) a chain has 1, 2, 3 or 4 links.
LENGTH_WEIGHTS = (30, 35, 25, 10)

Cap = Tuple[str, str]


# ---------------------------------------------------------------------------
# Capabilities
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A kind of resource a principal delegates, with its naming tree and budget unit.

    A resource narrows one path segment at a time: ``root/*`` becomes ``root/a/*``
    with ``a`` drawn from ``levels[0]``, then ``root/a/b/*`` from ``levels[1]``, and
    the last level names a single resource (``{n}`` is replaced by a number).
    Abilities of the form ``x/*`` narrow to one of ``ability_leaves``.
    """

    name: str
    levels: Tuple[Tuple[str, ...], ...]
    abilities: Tuple[str, ...]
    ability_leaves: Tuple[str, ...]
    unit: str
    budget: Tuple[int, int]


FAMILIES: Tuple[Family, ...] = (
    Family(
        "payments",
        (("eu", "us", "apac"), ("orders", "subscriptions", "payouts"), ("ord-{n}",)),
        ("refund", "charge", "ops/*"),
        ("ops/capture", "ops/void", "ops/dispute"),
        "USD-cents",
        (50_000, 5_000_000),
    ),
    Family(
        "files",
        (("reports", "invoices", "contracts"), ("2024", "2025", "drafts"), ("doc-{n}.pdf",)),
        ("read", "write", "share"),
        (),
        "requests",
        (1_000, 200_000),
    ),
    Family(
        "mcp",
        (("tools", "resources", "prompts"), ("search", "fetch", "browser", "sql", "code-exec")),
        ("call", "list"),
        (),
        "calls",
        (100, 50_000),
    ),
    Family(
        "llm",
        (("models",), ("gpt-4o", "claude-sonnet", "llama-3-70b", "mistral-large")),
        ("infer", "embed"),
        (),
        "tokens",
        (100_000, 50_000_000),
    ),
    Family(
        "crm",
        (("contacts", "deals", "tickets"), ("emea", "amer", "apac"), ("rec-{n}",)),
        ("crud/*",),
        ("crud/read", "crud/create", "crud/update", "crud/delete"),
        "requests",
        (1_000, 100_000),
    ),
    Family(
        "cloud",
        (("compute", "storage", "dns"), ("eu-west-1", "us-east-1", "ap-south-1"), ("res-{n}",)),
        ("ops/*", "read"),
        ("ops/start", "ops/stop", "ops/snapshot", "ops/resize"),
        "USD-cents",
        (10_000, 2_000_000),
    ),
    Family(
        "mail",
        (("outbox", "drafts", "calendar"), ("team-{n}",)),
        ("send", "read", "schedule"),
        (),
        "messages",
        (50, 5_000),
    ),
)


def narrow_resource(family: Family, resource: str, rng: random.Random) -> str:
    """``resource`` one path segment narrower (``files/*`` -> ``files/reports/*``)."""
    parts = resource.split("/")
    level = len(parts) - 2  # how many segments below the root are already fixed
    if parts[-1] != "*" or not 0 <= level < len(family.levels):
        return resource  # already a single resource (or "*", never narrowed here)
    segment = rng.choice(family.levels[level]).format(n=rng.randrange(1, 10_000))
    last = level == len(family.levels) - 1
    return resource[:-1] + (segment if last else segment + "/*")


def narrow_ability(family: Family, ability: str, rng: random.Random) -> str:
    """``ability`` narrowed to one of the family's leaves (``ops/*`` -> ``ops/void``)."""
    if not ability.endswith("/*"):
        return ability
    leaves = [leaf for leaf in family.ability_leaves if leaf.startswith(ability[:-1])]
    return rng.choice(leaves) if leaves else ability


def widened_cap(family: Family, parent: Sequence[Cap], rng: random.Random) -> Cap:
    """A capability that no capability of ``parent`` covers (a scope widening)."""
    resource, ability = rng.choice(list(parent))
    upper = resource.rsplit("/", 2)[0] + "/*" if resource.count("/") >= 2 else "*"
    candidates: List[Cap] = [
        (upper, ability),  # one level up: ("files/*", "read") under ("files/reports/*", ...)
        (resource, "admin"),  # an ability nobody granted
        (family.name + "/*", "*"),  # everything in the family
        ("*", ability),  # every resource
    ]
    rng.shuffle(candidates)
    for cap in candidates:
        if not any(cap_covers(granted, cap) for granted in parent):
            return cap
    return ("*", "*")


# ---------------------------------------------------------------------------
# Link terms
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """What one link grants its holder (the fields attenuation compares)."""

    caps: Tuple[Cap, ...]
    budget: int
    unit: str
    not_before: int
    not_after: int
    max_depth: int


def grant_terms(family: Family, links: int, rng: random.Random) -> Terms:
    """The terms of a principal's grant, valid now, allowing ``links - 1`` delegations."""
    abilities = rng.sample(family.abilities, rng.randint(1, min(2, len(family.abilities))))
    caps: List[Cap] = []
    for ability in abilities:
        resource = family.name + "/*"
        if rng.random() < 0.3:
            resource = narrow_resource(family, resource, rng)
        caps.append((resource, ability))
    low, high = family.budget
    return Terms(
        caps=tuple(caps),
        budget=rng.randint(low, high),
        unit=family.unit,
        not_before=NOW - rng.randrange(HOUR, 30 * DAY),
        not_after=NOW + rng.randrange(2 * HOUR, 90 * DAY),
        max_depth=rng.randint(links - 1, max(links - 1, 4)),
    )


def narrowed_terms(family: Family, parent: Terms, remaining: int, rng: random.Random) -> Terms:
    """The terms of a clean delegation under ``parent``; ``remaining`` links follow it.

    Some capabilities are dropped, the others narrowed; the budget shrinks; the window
    shrinks but still contains ``NOW``; the depth leaves room for the links to come.
    """
    kept = rng.sample(list(parent.caps), rng.randint(1, len(parent.caps)))
    caps = []
    for resource, ability in kept:
        if rng.random() < 0.6:
            resource = narrow_resource(family, resource, rng)
        if rng.random() < 0.5:
            ability = narrow_ability(family, ability, rng)
        caps.append((resource, ability))
    start = rng.randint(parent.not_before, max(parent.not_before, NOW - HOUR))
    end = rng.randint(max(start + 1, min(NOW + HOUR, parent.not_after)), parent.not_after)
    return Terms(
        caps=tuple(dict.fromkeys(caps)),
        budget=max(1, int(parent.budget * rng.uniform(0.05, 1.0))),
        unit=parent.unit,
        not_before=start,
        not_after=end,
        max_depth=rng.randint(remaining, max(remaining, parent.max_depth - 1)),
    )


# ---------------------------------------------------------------------------
# Tampering: each named way, with the code docs/SPEC.md §4 requires
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tamper:
    """One named way of tampering with a chain, and the decision it must get."""

    key: str
    code: Code
    min_links: int
    what: str


TAMPERS: Tuple[Tamper, ...] = (
    Tamper("truncated", Code.MALFORMED, 1, "chain bytes cut short"),
    Tamper("trailing-bytes", Code.MALFORMED, 1, "junk appended after the last link"),
    Tamper("untrusted-issuer", Code.UNTRUSTED_ISSUER, 1, "grant by a key nobody trusts"),
    Tamper("flipped-sig-bit", Code.BAD_SIGNATURE, 1, "one bit of a link signature flipped"),
    Tamper("wrong-signer", Code.BAD_SIGNATURE, 1, "a link signed by the wrong key"),
    Tamper("spliced-link", Code.BROKEN_LINK, 2, "tail link from another chain, re-signed"),
    Tamper("scope-widened", Code.SCOPE_WIDENED, 2, "a delegation adds an uncovered cap"),
    Tamper("budget-widened", Code.BUDGET_WIDENED, 2, "a delegation raises budget / swaps unit"),
    Tamper("time-widened", Code.TIME_WIDENED, 2, "a delegation outlives its parent"),
    Tamper("depth-exceeded", Code.DEPTH_EXCEEDED, 2, "a delegation beyond max_depth"),
    Tamper("not-yet-valid", Code.NOT_YET_VALID, 1, "last link starts in the future"),
    Tamper("expired", Code.EXPIRED, 1, "last link already lapsed"),
    Tamper("session-mismatch", Code.SESSION_MISMATCH, 1, "grant bound to another session"),
    Tamper("revoked", Code.REVOKED, 1, "a link's revocation id is revoked"),
)
WIDENINGS = ("scope-widened", "budget-widened", "time-widened", "depth-exceeded")


# ---------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------


def derive_seed(seed: int, role: str, index: int) -> bytes:
    """32 bytes for key ``index`` of ``role``, derived from the run's ``--seed``."""
    label = f"hopgate-demo/v1/{seed}/{role}/{index}".encode()
    return hashlib.blake2b(label, digest_size=32).digest()


@dataclass
class Workload:
    """The generated chains, what each should get, and what the verifier is given."""

    chains: List[bytes]
    links: List[int]  # links per chain (as built, before any byte tampering)
    expected: npt.NDArray[np.uint8]
    tamper: List[Optional[str]]  # the tamper key of each chain, None when clean
    trusted: List[bytes]
    session: bytes
    revoked: List[bytes]
    names: Dict[bytes, str]  # public key -> "principal#3" / "agent#17" / "rogue#1"
    key_seconds: float
    chain_seconds: float


class WorkloadBuilder:
    """Generates chains one by one from a seeded random generator."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        started = time.perf_counter()
        total = args.principals + ROGUE_ISSUERS + args.agents
        bar = Progress("keys", total)
        self.principals = [
            self._key(args.seed, "principal", i, bar) for i in range(args.principals)
        ]
        self.rogues = [self._key(args.seed, "rogue", i, bar) for i in range(ROGUE_ISSUERS)]
        self.agents = [self._key(args.seed, "agent", i, bar) for i in range(args.agents)]
        bar.close()
        self.key_seconds = time.perf_counter() - started
        self.session = derive_seed(args.seed, "session", 0)[:16]
        self.revoked: List[bytes] = []
        self.donors: List[Chain] = []  # recent clean multi-link chains, for splicing
        self.names: Dict[bytes, str] = {}
        for role, keys in (("principal", self.principals), ("rogue", self.rogues),
                           ("agent", self.agents)):
            for i, key in enumerate(keys):
                self.names[key.public_key] = f"{role}#{i}"

    def _key(self, seed: int, role: str, index: int, bar: Progress) -> SigningKey:
        bar.advance()
        return hopgate.SigningKey.from_seed(derive_seed(seed, role, index))

    # -- link builders ------------------------------------------------------

    def _consent_digest(self, issuer: SigningKey, holder: bytes, terms: Terms) -> bytes:
        """BLAKE3 of the principal's consent record, carried as the grant's meta_digest."""
        record = (
            f"consent/v1 issuer={issuer.public_key.hex()} agent={holder.hex()} "
            f"caps={list(terms.caps)} budget={terms.budget} {terms.unit} at={terms.not_before}"
        ).encode()
        digest: bytes = hopgate.blake3_many([record])[0].tobytes()
        return digest

    def grant(self, issuer: SigningKey, holder: bytes, terms: Terms, session: bytes) -> Chain:
        """A grant made with the public builder."""
        return hopgate.Chain.grant(
            issuer, holder, caps=list(terms.caps), budget=terms.budget, unit=terms.unit,
            not_before=terms.not_before, not_after=terms.not_after,
            max_depth=terms.max_depth, session_id=session, nonce=self.rng.randbytes(16),
            meta_digest=self._consent_digest(issuer, holder, terms),
        )

    def delegate(self, chain: Chain, holder: SigningKey, next_pk: bytes, terms: Terms) -> Chain:
        """A delegation made with the public builder (which refuses any widening)."""
        return chain.delegate(
            holder, next_pk, caps=list(terms.caps), budget=terms.budget, unit=terms.unit,
            not_before=terms.not_before, not_after=terms.not_after,
            max_depth=terms.max_depth, nonce=self.rng.randbytes(16),
        )

    def forge(
        self,
        chain: Optional[Chain],
        signer: SigningKey,
        holder: bytes,
        terms: Terms,
        issuer: Optional[bytes] = None,
    ) -> Chain:
        """A link the builders would refuse, encoded by hand and signed by ``signer``.

        With ``chain`` None it is a grant naming ``issuer``; otherwise a delegation
        appended to ``chain`` whose ``prev_sig`` is the chain's tail signature.
        """
        grant = chain is None
        pairs: List[Tuple[bytes, bytes]] = (
            [] if chain is None else [(link.body, link.signature) for link in chain.links]
        )
        body = encode_link_body(
            kind=KIND_GRANT if grant else KIND_DELEGATION,
            issuer=issuer if grant else None,
            session_id=self.session if grant else None,
            prev_sig=None if chain is None else chain.links[-1].signature,
            holder=holder,
            not_before=terms.not_before,
            not_after=terms.not_after,
            max_depth=terms.max_depth,
            budget=terms.budget,
            unit=terms.unit,
            nonce=self.rng.randbytes(16),
            caps=terms.caps,
            meta_digest=ZERO_DIGEST,
        )
        pairs.append((body, signer.sign(LINK_DOMAIN + body)))
        return hopgate.Chain.from_bytes(encode_chain(pairs))

    # -- one chain ------------------------------------------------------------

    def make(self, tamper: Optional[Tamper]) -> Tuple[bytes, int]:
        """One chain (tampered as ``tamper`` says, if given) and its number of links."""
        rng = self.rng
        key = None if tamper is None else tamper.key
        family = rng.choice(FAMILIES)
        links = rng.choices((1, 2, 3, 4), weights=LENGTH_WEIGHTS)[0]
        links = max(links, 1 if tamper is None else tamper.min_links)
        path = [self.agents[i] for i in rng.sample(range(len(self.agents)), links)]
        issuer = rng.choice(self.rogues if key == "untrusted-issuer" else self.principals)
        session = rng.randbytes(16) if key == "session-mismatch" else self.session
        # The link that is tampered with, for the ways that target one link.
        if key in WIDENINGS:
            target = rng.randrange(1, links)
        elif key in ("wrong-signer", "flipped-sig-bit", "revoked"):
            target = rng.randrange(0, links)
        else:
            target = links - 1
        zero_depth_parent = key == "depth-exceeded" and target == links - 1 and rng.random() < 0.5

        chain: Optional[Chain] = None
        terms = grant_terms(family, links, rng)
        for i in range(links):
            remaining = links - 1 - i
            if i > 0:
                terms = narrowed_terms(family, terms, remaining, rng)
            if zero_depth_parent and i == target - 1:
                terms = replace(terms, max_depth=0)  # "act yourself, do not re-delegate"
            if i == target:
                terms = self._time_tamper(key, terms, chain)
            holder = path[i].public_key
            if i == target and key in WIDENINGS:
                assert chain is not None
                parent = chain.links[-1]
                terms = self._widen(key, family, parent, terms)
                chain = self.forge(chain, path[i - 1], holder, terms)
            elif i == target and key == "wrong-signer":
                # Link 0: another trusted principal signs a grant naming `issuer`.
                # Link i >= 1: the new holder signs its own delegation.
                if chain is None:
                    others = [p for p in self.principals if p is not issuer] or self.rogues
                    chain = self.forge(None, rng.choice(others), holder, terms,
                                       issuer=issuer.public_key)
                else:
                    chain = self.forge(chain, path[i], holder, terms)
            elif i == target and key == "spliced-link":
                assert chain is not None
                chain = self._splice(chain, path[i - 1])
            elif chain is None:
                chain = self.grant(issuer, holder, terms, session)
            else:
                chain = self.delegate(chain, path[i - 1], holder, terms)
        assert chain is not None
        raw: bytes = bytes(chain)

        if key is None and links >= 2:
            self.donors.append(chain)
            del self.donors[:-64]
        elif key == "revoked":
            self.revoked.append(chain.links[target].revocation_id)
        elif key == "flipped-sig-bit":
            pairs = [(link.body, bytearray(link.signature)) for link in chain.links]
            bit = rng.randrange(512)
            pairs[target][1][bit // 8] ^= 1 << (bit % 8)
            raw = encode_chain(pairs)
        elif key == "truncated":
            raw = raw[: rng.randrange(1, len(raw))]
        elif key == "trailing-bytes":
            raw = raw + rng.randbytes(rng.randint(1, 16))
        return raw, links

    def _time_tamper(self, key: Optional[str], terms: Terms, chain: Optional[Chain]) -> Terms:
        """The last link's window moved out of ``NOW`` (inside its parent's window)."""
        rng = self.rng
        if chain is None:  # the grant itself: the principal's window is the bound
            low, high = NOW - 90 * DAY, NOW + 90 * DAY
        else:
            low, high = chain.links[-1].not_before, chain.links[-1].not_after
        if key == "expired":
            end = rng.randint(max(low + 1, NOW - 7 * DAY), NOW)
            return replace(terms, not_before=rng.randint(max(low, end - 30 * DAY), end - 1),
                           not_after=end)
        if key == "not-yet-valid":
            start = rng.randint(NOW + 1, min(high - 1, NOW + 7 * DAY))
            return replace(terms, not_before=start, not_after=rng.randint(start + 1, high))
        return terms

    def _widen(self, key: Optional[str], family: Family, parent: Link, terms: Terms) -> Terms:
        """``terms`` made to break exactly one attenuation rule against ``parent``."""
        rng = self.rng
        if key == "scope-widened":
            extra = widened_cap(family, parent.caps, rng)
            return replace(terms, caps=(*terms.caps, extra)[-64:])
        if key == "budget-widened":
            if rng.random() < 0.25:
                other = "EUR-cents" if terms.unit != "EUR-cents" else "GBP-pence"
                return replace(terms, unit=other)
            return replace(terms, budget=parent.budget + rng.randint(1, 9 * parent.budget))
        if key == "time-widened":
            return replace(terms, not_after=parent.not_after + rng.randrange(HOUR, 30 * DAY))
        if key == "depth-exceeded":
            # Under a max_depth-0 parent any delegation exceeds; otherwise the child
            # keeps the parent's depth instead of parent.max_depth - 1.
            return replace(terms, max_depth=parent.max_depth)
        return terms

    def _splice(self, chain: Chain, tail_holder: SigningKey) -> Chain:
        """``chain`` plus a delegation link taken from another chain.

        The holder at the tail re-signs the lifted body with its own key, so every
        signature verifies and only ``prev_sig`` (which names the donor's parent) is wrong.
        """
        donor = self.rng.choice(self.donors) if self.donors else self._fresh_donor()
        lifted = donor.links[self.rng.randrange(1, len(donor.links))].body
        pairs = [(link.body, link.signature) for link in chain.links]
        pairs.append((lifted, tail_holder.sign(LINK_DOMAIN + lifted)))
        return hopgate.Chain.from_bytes(encode_chain(pairs))

    def _fresh_donor(self) -> Chain:
        family = self.rng.choice(FAMILIES)
        first = grant_terms(family, 2, self.rng)
        a, b = self.rng.sample(self.agents, 2)
        chain = self.grant(self.rng.choice(self.principals), a.public_key, first, self.session)
        return self.delegate(chain, a, b.public_key, narrowed_terms(family, first, 0, self.rng))


def build_workload(args: argparse.Namespace) -> Workload:
    """Keys, then ``args.chains`` chains with ``round(chains * tamper)`` tampered ones."""
    builder = WorkloadBuilder(args)
    rng = builder.rng
    count = args.chains
    tampered = min(count, round(count * args.tamper))
    plan: List[Optional[Tamper]] = [None] * count
    for j, index in enumerate(rng.sample(range(count), tampered)):
        plan[index] = TAMPERS[j % len(TAMPERS)]

    started = time.perf_counter()
    chains: List[bytes] = []
    links: List[int] = []
    bar = Progress("chains", count)
    for tamper in plan:
        raw, n = builder.make(tamper)
        chains.append(raw)
        links.append(n)
        bar.advance()
    bar.close()
    chain_seconds = time.perf_counter() - started

    # Ids of other, long-retired links: a revocation list is mostly unrelated entries.
    revoked = builder.revoked + [rng.randbytes(32) for _ in range(DECOY_REVOCATIONS)]
    rng.shuffle(revoked)
    expected = np.array([Code.OK if t is None else t.code for t in plan], dtype=np.uint8)
    return Workload(
        chains=chains,
        links=links,
        expected=expected,
        tamper=[None if t is None else t.key for t in plan],
        trusted=[key.public_key for key in builder.principals],
        session=builder.session,
        revoked=revoked,
        names=builder.names,
        key_seconds=builder.key_seconds,
        chain_seconds=chain_seconds,
    )


# ---------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------


class Progress:
    """A plain-text progress bar on stderr (redrawn in place on a terminal).

    Off a terminal only the final line is written, so logs stay readable.
    """

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.live = stream.isatty()
        self.started = time.perf_counter()
        self.drawn = 0.0

    def advance(self, step: int = 1) -> None:
        self.done += step
        now = time.perf_counter()
        if self.live and (now - self.drawn >= 0.1 or self.done >= self.total):
            self.drawn = now
            self._draw(now)

    def _draw(self, now: float, end: str = "") -> None:
        width = 30
        filled = min(width, self.done * width // self.total)
        bar = "#" * filled + "." * (width - filled)
        pct = 100.0 * self.done / self.total
        self.stream.write(
            f"\r  {self.label:<10} [{bar}] {pct:5.1f}%  {self.done:,}/{self.total:,}"
            f"  {now - self.started:6.1f} s{end}"
        )
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.perf_counter(), end="\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: integers get thousands separators and, like every column
    whose cells all look like numbers, are right-aligned."""
    text = [[f"{c:,}" if isinstance(c, int) else str(c) for c in row] for row in rows]
    right = [
        all(cell.replace(",", "").replace(".", "").rstrip("x").isdigit() for cell in column)
        for column in zip(*text)
    ] if text else [False] * len(headers)
    widths = [max([len(h)] + [len(row[i]) for row in text]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return "  " + "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in text])


def fields(pairs: Sequence[Tuple[str, str]]) -> str:
    """``name  value`` lines, names padded to one width."""
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in pairs)


def rate(count: int, seconds: float) -> str:
    """``count / seconds`` with thousands separators."""
    return f"{count / seconds:,.0f}" if seconds > 0 else "inf"


def when(t: int) -> str:
    """A unix time relative to ``NOW``, in days."""
    return f"now{(t - NOW) / DAY:+.1f}d"


def describe_chain(raw: bytes, names: Dict[bytes, str]) -> str:
    """The links of one chain, one line each."""
    lines = []
    for i, link in enumerate(hopgate.Chain.from_bytes(raw).links):
        who = names.get(link.issuer or b"", "?") if link.kind == KIND_GRANT else "delegation"
        caps = ", ".join(f"({r!r}, {a!r})" for r, a in link.caps)
        lines.append(
            f"    link {i} {who:>13} -> {names.get(link.holder, '?'):<10} [{caps}]"
            f"  budget {link.budget:,} {link.unit}"
            f"  [{when(link.not_before)}, {when(link.not_after)})  max_depth {link.max_depth}"
        )
    return "\n".join(lines)


def best_of(
    repeat: int, run: Callable[[], npt.NDArray[np.uint8]]
) -> Tuple[float, npt.NDArray[np.uint8]]:
    """The fastest of ``repeat`` runs (seconds) and the result of the last one."""
    best = float("inf")
    result = run()  # warm-up (thread pool, page faults)
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python examples/demo.py",
        description="Generate a delegation workload, verify it natively (and a sample with "
        "the pure-Python reference, when the reference extra is installed), and check every "
        "decision.",
    )
    parser.add_argument("--principals", type=int, default=100, help="trusted issuers (100)")
    parser.add_argument("--agents", type=int, default=1000, help="agents (1000)")
    parser.add_argument("--chains", type=int, default=20_000, help="chains (20000)")
    parser.add_argument("--tamper", type=float, default=0.02,
                        help="fraction of chains tampered with (0.02)")
    parser.add_argument("--seed", type=int, default=42, help="seed of keys and workload (42)")
    parser.add_argument("--reference-sample", type=int, default=2000,
                        help="chains also verified by the slow pure-Python reference, which "
                        "needs pip install 'hopgate[reference]' (2000)")
    args = parser.parse_args(argv)
    if args.principals < 2:
        parser.error("--principals must be at least 2")
    if args.agents < 4:
        parser.error("--agents must be at least 4 (a chain has up to 4 agents)")
    if args.chains < 1:
        parser.error("--chains must be at least 1")
    if not 0.0 <= args.tamper <= 1.0:
        parser.error("--tamper must be between 0 and 1")
    if args.reference_sample < 0:
        parser.error("--reference-sample must not be negative")
    return args


def load_reference() -> Tuple[Optional[ModuleType], str]:
    """``hopgate.reference``, or None and why not: it stands on PyNaCl and blake3-py, which
    only the ``reference`` extra installs."""
    try:
        import hopgate.reference
    except ImportError as e:
        return None, str(e)
    return hopgate.reference, ""


def pick_sample(work: Workload, size: int, rng: random.Random) -> List[int]:
    """Random chain indices for the reference, with at least one chain of each tamper way."""
    size = min(size, len(work.chains))
    chosen: Dict[int, None] = {}
    by_way: Dict[str, List[int]] = {}
    for i, key in enumerate(work.tamper):
        if key is not None:
            by_way.setdefault(key, []).append(i)
    for indices in by_way.values():
        if len(chosen) < size:
            chosen[rng.choice(indices)] = None
    rest = [i for i in range(len(work.chains)) if i not in chosen]
    for i in rng.sample(rest, size - len(chosen)):
        chosen[i] = None
    return sorted(chosen)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = sys.stdout
    print(f"hopgate demo  (backend: {hopgate.BACKEND}, seed {args.seed})", file=out)
    print("generating workload ...", file=sys.stderr)
    work = build_workload(args)
    n = len(work.chains)
    total_links = sum(work.links)
    tampered = sum(key is not None for key in work.tamper)
    lengths = Counter(work.links)
    workload_digest = hopgate.blake3_many([b"".join(work.chains)])[0].tobytes().hex()

    size = sum(map(len, work.chains))
    print("\nworkload", file=out)
    print(fields([
        ("principals", f"{args.principals:,} trusted issuers (+{ROGUE_ISSUERS} untrusted)"),
        ("agents", f"{args.agents:,}"),
        ("chains", f"{n:,} with {total_links:,} links ("
         + ", ".join(f"{k} link{'s' if k > 1 else ''}: {lengths[k]:,}" for k in sorted(lengths))
         + ")"),
        ("tampered", f"{tampered:,} ({100 * tampered / n:.1f}%) in "
         f"{len({k for k in work.tamper if k})} named ways"),
        ("capabilities", ", ".join(f"{f.name}/*" for f in FAMILIES)),
        ("chain bytes", f"{size:,} ({size / n:,.0f} per chain)"),
        ("verifier", f"now={NOW}, session {work.session.hex()[:12]}..., "
         f"{len(work.revoked):,} revoked ids, {len(work.trusted):,} trusted keys"),
        ("digest", f"BLAKE3 of all chains {workload_digest[:32]}... (a seed gives the same)"),
        ("generation", f"{work.key_seconds + work.chain_seconds:.2f} s wall (keys "
         f"{work.key_seconds:.2f} s, chains {work.chain_seconds:.2f} s = "
         f"{rate(n, work.chain_seconds)} chains/s)"),
    ]), file=out)
    example = next((i for i in range(n) if work.tamper[i] is None and work.links[i] >= 3), None)
    if example is not None:
        print(f"\n  example clean chain #{example}:", file=out)
        print(describe_chain(work.chains[example], work.names), file=out)

    def native(chains: List[bytes]) -> Callable[[], npt.NDArray[np.uint8]]:
        def run() -> npt.NDArray[np.uint8]:
            codes: npt.NDArray[np.uint8] = hopgate.verify_chains(
                chains, work.trusted, now=NOW, session=work.session, revoked=work.revoked)
            return codes
        return run

    # Native: every chain, as a list of bytes and as one buffer with Arrow offsets.
    print("verifying natively ...", file=sys.stderr)
    native_seconds, codes = best_of(3, native(work.chains))
    buffer = b"".join(work.chains)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(c) for c in work.chains], out=offsets[1:])

    def native_buffer() -> npt.NDArray[np.uint8]:
        result: npt.NDArray[np.uint8] = hopgate.verify_chains(
            buffer, work.trusted, now=NOW, session=work.session, revoked=work.revoked,
            offsets=offsets)
        return result

    buffer_seconds, buffer_codes = best_of(3, native_buffer)

    # Reference: a random sample (it runs at roughly 0.3 ms per signature), when installed.
    reference, missing = load_reference()
    sample_size = args.reference_sample if reference is not None else 0
    sample = pick_sample(work, sample_size, random.Random(args.seed + 1))
    sample_chains = [work.chains[i] for i in sample]
    sample_links = sum(work.links[i] for i in sample)
    sample_native_seconds, _ = best_of(3, native(sample_chains))
    # The same, untampered chains only: a batch with a bad signature in it must fall
    # back to finding exactly which items fail (docs/SPEC.md §3), which has a cost.
    clean_idx = [i for i, key in enumerate(work.tamper) if key is None]
    clean_seconds, _ = best_of(3, native([work.chains[i] for i in clean_idx]))
    clean_links = sum(work.links[i] for i in clean_idx)
    reference_codes = np.zeros(len(sample), dtype=np.uint8)
    reference_seconds = 0.0
    if reference is not None and sample:
        bar = Progress("reference", len(sample))
        step = 50
        for start in range(0, len(sample), step):
            part = sample_chains[start:start + step]
            began = time.perf_counter()
            reference_codes[start:start + len(part)] = reference.verify_chains(
                part, work.trusted, now=NOW, session=work.session, revoked=work.revoked)
            reference_seconds += time.perf_counter() - began
            bar.advance(len(part))
        bar.close()

    # Decisions.
    failures = 0
    got = Counter(int(c) for c in codes)
    want = Counter(int(c) for c in work.expected)
    print("\ndecisions  (native verify_chains, all chains)", file=out)
    print(table(("code", "name", "count", "expected"), [
        (code.value, code.name, got.get(code.value, 0), want.get(code.value, 0))
        for code in Code if got.get(code.value) or want.get(code.value)
    ]), file=out)

    print("\ntampering  (every chain must get exactly the code of its named way)", file=out)
    rows = []
    for tamper in TAMPERS:
        idx = [i for i, key in enumerate(work.tamper) if key == tamper.key]
        if not idx:
            continue
        right = int(np.count_nonzero(codes[idx] == tamper.code))
        rows.append((tamper.key, tamper.what, f"{tamper.code.value} {tamper.code.name}",
                     len(idx), right))
    clean = [i for i, key in enumerate(work.tamper) if key is None]
    rows.append(("clean", "built with the public builders", "0 OK", len(clean),
                 int(np.count_nonzero(codes[clean] == Code.OK))))
    print(table(("way", "what", "expected code", "chains", "as expected"), rows), file=out)

    wrong = np.flatnonzero(codes != work.expected)
    if wrong.size:
        failures += 1
        print(f"\nFAIL: {wrong.size:,} chains got another code than expected:", file=out)
        for i in wrong[:10]:
            print(f"  chain #{i} ({work.tamper[i] or 'clean'}): got {Code(int(codes[i])).name},"
                  f" expected {Code(int(work.expected[i])).name}", file=out)
    if not np.array_equal(codes, buffer_codes):
        failures += 1
        print("\nFAIL: list input and buffer+offsets input give different codes", file=out)
    native_sample = codes[sample]
    disagree = np.flatnonzero(reference_codes != native_sample)
    if disagree.size:
        failures += 1
        print(f"\nFAIL: reference and native disagree on {disagree.size:,} sampled chains:",
              file=out)
        for j in disagree[:10]:
            i = sample[j]
            print(f"  chain #{i} ({work.tamper[i] or 'clean'}): native "
                  f"{Code(int(native_sample[j])).name}, reference "
                  f"{Code(int(reference_codes[j])).name}", file=out)

    # Throughput.
    print(f"\nthroughput  (best of 3 for native; link signatures counted per chain)", file=out)
    timings = [
        ("native", "list of bytes", n, native_seconds, total_links),
        ("native", "buffer + offsets", n, buffer_seconds, total_links),
        ("native", "untampered only", len(clean_idx), clean_seconds, clean_links),
        ("native", "reference sample", len(sample), sample_native_seconds, sample_links),
        ("reference", "reference sample", len(sample), reference_seconds, sample_links),
    ]
    print(table(("verifier", "input", "chains", "seconds", "chains/s", "link sigs/s"), [
        (who, what, count, f"{seconds:.4f}", rate(count, seconds), rate(sigs, seconds))
        for who, what, count, seconds, sigs in timings if count
    ]), file=out)
    if sample and reference_seconds > 0 and sample_native_seconds > 0:
        same = reference_seconds / sample_native_seconds
        full = (n / native_seconds) / (len(sample) / reference_seconds)
        print(f"  speed ratio native / reference: {same:,.0f}x on the same sample "
              f"(native over all chains vs reference: {full:,.0f}x)", file=out)
        verdict = "identical" if not disagree.size else "DIFFERENT"
        print(f"  reference decisions on the {len(sample):,} sampled chains: {verdict} "
              "to native", file=out)
    elif reference is None:
        print("  reference: not compared: hopgate.reference needs the reference extra, "
              f"pip install 'hopgate[reference]' ({missing})", file=out)
    else:
        print("  reference: not run (--reference-sample 0)", file=out)

    gate_failures = gate_scenario(out) + stores_scenario(out)
    for failure in gate_failures:
        print(f"  FAILED: {failure}", file=out)
    failures += len(gate_failures)

    print("\nresult: " + ("OK, every decision as expected" if not failures else "FAILED"),
          file=out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
