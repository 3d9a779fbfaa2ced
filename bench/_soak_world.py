"""The generated world of the soak (bench/soak.py): keys, a pool of chains, requests.

Everything here draws from one ``random.Random``, and Ed25519 signing is
deterministic, so a seed fixes every byte the soak sends. Valid chains come from the
native builders (``hopgate.Chain.grant`` / ``.delegate``); the chains the builders
refuse to make (widening links, broken links, bad signatures, malformed bytes) are
crafted from valid ones with ``_soak_craft``. Each pool entry remembers what the
invocations need: the holder's key, the last link's signature, capabilities and
budget, and the revocation ids of its links.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import numpy as np
import numpy.typing as npt

import hopgate
from hopgate import Account, Decision, Requirement, ReservationLike

from _soak_craft import (
    HOSTILE_KEYS,
    IDENTITY_SIGNATURE,
    MAX_CAPS,
    MAX_CHAIN_LEN,
    U64_MAX,
    Cap,
    Keyring,
    RawLink,
    Signer,
    TorsionKey,
    encode_chain,
    frame_invocation,
    from_link,
    invocation_body,
    malleate,
    resign,
    sign_invocation,
)

#: Capability patterns granted and delegated (resources, abilities).
RESOURCE_PATTERNS = (
    "*", "files/*", "files/reports/*", "files/a", "files/reports/q1", "pay/*", "pay/x",
    "db/users/*", "db/users/42", "héllo/*", "x",
)
ABILITY_PATTERNS = ("*", "read", "write", "payments/*", "payments/refund", "refund", "admin/*")
#: Concrete names invoked, with near misses of the patterns ("files" is not under "files/*").
RESOURCES = (
    "files/a", "files/b", "files/reports/q1", "files/reports/", "files", "files/", "pay/x",
    "pay", "pay/", "pay/y", "db/users/42", "db/users", "héllo/ü", "x", "y", "*", "files/*",
)
ABILITIES = (
    "read", "write", "payments/refund", "payments/charge", "payments", "refund", "admin/root", "*",
)
UNITS = ("usd", "usd-cents", "tokens", "€")
BUDGETS = (0, 1, 5, 10, 20, 50, 100, 100, 250, 1000, 1000, 10**6, 2**32, 2**63, U64_MAX)

ChainArg = Union[hopgate.Chain, bytes]


class LedgerLike(Protocol):
    def accounts(self) -> dict[bytes, Account]: ...


class GateLike(Protocol):
    """What the soak uses of a ``Gate`` (native or reference)."""

    @property
    def ledger(self) -> Any: ...
    @property
    def cached(self) -> int: ...
    def revoke(self, revocation_id: bytes) -> None: ...
    def check(self, chain: ChainArg, invocation: bytes, now: Optional[int] = None, *,
              payload: Optional[bytes] = None, require: Optional[Requirement] = None) -> Decision: ...
    def check_batch(self, chains: Sequence[ChainArg], invocations: Sequence[bytes], now: Optional[int] = None, *,
                    payloads: Optional[Sequence[Optional[bytes]]] = None,
                    requires: Optional[Sequence[Optional[Requirement]]] = None,
                    ) -> tuple[npt.NDArray[np.uint8], Sequence[Optional[ReservationLike]]]: ...


def covers(pattern: str, name: str) -> bool:
    """SPEC §1 ``covers(p, c)``."""
    return pattern == "*" or pattern == name or (pattern.endswith("/*") and name.startswith(pattern[:-1]))


@dataclass
class ChainEntry:
    """One chain of the pool and what invoking it needs."""

    data: bytes
    obj: Optional[hopgate.Chain]  # the native Chain, when the bytes parse
    kind: str  # how it was made (a valid build or the defect crafted into it)
    holder: Optional[Signer]  # the key of the last link's holder, if known
    tail_sig: bytes
    caps: list[tuple[str, str]]  # of the last link
    budget: int  # of the last link
    rids: list[bytes]  # revocation ids of its links
    not_after: int  # the earliest not_after of its links

    def arg(self, rng: random.Random) -> ChainArg:
        """The chain as a gate is given it: mostly bytes, sometimes a native Chain."""
        if self.obj is not None and rng.random() < 0.2:
            return self.obj
        return self.data


@dataclass
class Request:
    """One request of a batch: the chain as passed, the invocation bytes, and how it was made."""

    chain: ChainArg
    invocation: bytes
    kind: str
    payload: Optional[bytes] = None  # the body the server received, when it binds one
    require: Optional[Requirement] = None  # what the server's route requires


class ConstSigner:
    """A 'signer' for a key nobody holds (a small-order or non-canonical point)."""

    def __init__(self, public_key: bytes, signature: bytes) -> None:
        self._public = public_key
        self._signature = signature

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, msg: bytes) -> bytes:
        return self._signature


# Weights of the kinds of pool entries.
ENTRY_KINDS: tuple[tuple[str, float], ...] = (
    ("valid", 62.0),
    ("valid-raw", 3.0),
    ("valid-64caps", 1.0),
    ("valid-16links", 0.5),
    ("valid-max-size", 0.3),
    ("torsion-holder", 0.6),
    ("torsion-middle", 0.4),
    ("torsion-issuer", 0.4),
    ("scope-widened", 3.0),
    ("budget-widened", 2.0),
    ("unit-changed", 1.0),
    ("time-widened", 2.0),
    ("depth-exceeded", 1.5),
    ("depth-zero-parent", 1.0),
    ("broken-link", 2.0),
    ("bad-sig-wrong-key", 2.0),
    ("bad-sig-malleated", 1.0),
    ("hostile-holder", 0.7),
    ("hostile-middle", 0.5),
    ("mal-truncated", 1.0),
    ("mal-trailing", 0.5),
    ("mal-body-len", 0.5),
    ("mal-count", 0.5),
    ("mal-magic", 0.2),
    ("mal-kind", 0.4),
    ("mal-window", 0.4),
    ("mal-empty-str", 0.3),
    ("mal-utf8", 0.3),
    ("mal-nul", 0.3),
    ("mal-ncap", 0.4),
    ("mal-65caps", 0.2),
    ("mal-17links", 0.2),
    ("mal-over-size", 0.2),
    ("flip", 3.0),
)

# Weights of the kinds of invocations made for an entry.
INVOCATION_KINDS: tuple[tuple[str, float], ...] = (
    ("fresh", 86.0),
    ("builder", 3.0),
    ("wrong-signer", 2.0),
    ("malleated", 0.8),
    ("other-tail", 2.0),
    ("inv-malformed", 3.0),
    ("inv-flip", 2.0),
    ("torsion-signer", 0.05),
)


class World:
    """Keys, the chain pool and the request generator of one soak run."""

    def __init__(self, rng: random.Random, pool_size: int = 256) -> None:
        self.rng = rng
        self.keyring = Keyring()
        seed = rng.randbytes

        def native() -> hopgate.SigningKey:
            key = hopgate.SigningKey.from_seed(seed(32))
            self.keyring.add(key)
            return key

        self.issuers = [native() for _ in range(4)]  # 0..2 trustable, 3 never trusted
        self.agents = [native() for _ in range(12)]
        self.torsion_issuer = TorsionKey(seed(32), 3)
        self.torsion_agents = [TorsionKey(seed(32), i) for i in range(2)]
        for key in (self.torsion_issuer, *self.torsion_agents):
            self.keyring.add(key)
        self.sessions = [seed(16) for _ in range(3)]
        self.pool_size = pool_size
        self.pool: list[ChainEntry] = []
        self.made: dict[str, int] = {}
        # The bodies of the invocations the builder signed (their digests'
        # preimages), so that a server can present the right body or another.
        self.bodies: dict[bytes, bytes] = {}
        self._entry_names = [k for k, _ in ENTRY_KINDS]
        self._entry_weights = [w for _, w in ENTRY_KINDS]
        self._inv_names = [k for k, _ in INVOCATION_KINDS]
        self._inv_weights = [w for _, w in INVOCATION_KINDS]

    # -- configuration helpers ----------------------------------------------

    def trusted_set(self) -> list[bytes]:
        """A random trusted set: always issuer 0, the others by chance, never issuer 3."""
        rng = self.rng
        keys = [self.issuers[0].public_key]
        for key in (self.issuers[1].public_key, self.issuers[2].public_key, self.torsion_issuer.public_key):
            if rng.random() < 0.85:
                keys.append(key)
        if rng.random() < 0.05:
            keys.append(rng.choice(self.agents).public_key)
        return keys

    # -- the pool -------------------------------------------------------------

    def refill(self, now: int) -> None:
        self.pool = [self.make_entry(now) for _ in range(self.pool_size)]

    def refresh(self, now: int, count: int) -> None:
        for _ in range(count):
            self.pool[self.rng.randrange(len(self.pool))] = self.make_entry(now)

    def make_entry(self, now: int) -> ChainEntry:
        kind = self.rng.choices(self._entry_names, self._entry_weights)[0]
        entry = self._make(kind, now)
        self.made[entry.kind] = self.made.get(entry.kind, 0) + 1
        return entry

    def _window(self, now: int) -> tuple[int, int]:
        rng = self.rng
        if rng.random() < 0.1:
            nb = now + rng.randint(1, 120)  # not yet valid
        else:
            nb = now - rng.choice((0, rng.randint(0, 60), rng.randint(0, 600)))
        length = rng.choices((rng.randint(1, 60), rng.randint(60, 3600), rng.randint(3600, 10**6)), (15, 45, 40))[0]
        nb = min(max(nb, 0), U64_MAX - 1)
        return nb, min(nb + length, U64_MAX)

    def _narrow_caps(self, parent: list[tuple[str, str]]) -> list[tuple[str, str]]:
        rng = self.rng
        out: list[tuple[str, str]] = []
        for _ in range(rng.randint(1, 3)):
            pr, pa = rng.choice(parent)
            if rng.random() < 0.4:
                cap = (pr, pa)
            else:
                res = [r for r in RESOURCE_PATTERNS + RESOURCES if covers(pr, r)] or [pr]
                abl = [a for a in ABILITY_PATTERNS + ABILITIES if covers(pa, a)] or [pa]
                cap = (rng.choice(res), rng.choice(abl))
            if cap not in out:
                out.append(cap)
        return out

    def build_valid(self, now: int, depth: int, issuer: Optional[hopgate.SigningKey] = None,
                    ncaps: int = 0, full: bool = False) -> tuple[hopgate.Chain, list[hopgate.SigningKey]]:
        """A chain from the builders, of ``depth`` links or fewer (a builder refusal
        ends it early; ``full`` leaves room for all of them), and its holders' keys."""
        rng = self.rng
        if issuer is None:
            issuer = self.issuers[3] if rng.random() < 0.05 else rng.choice(self.issuers[:3])
        holders = [rng.choice(self.agents) for _ in range(depth)]
        if ncaps:
            caps = [("*", "*")] + [(f"r/{i}/*", rng.choice(ABILITY_PATTERNS)) for i in range(ncaps - 1)]
        else:
            caps = [(rng.choice(RESOURCE_PATTERNS), rng.choice(ABILITY_PATTERNS))
                    for _ in range(rng.randint(1, 3))]
        budget = rng.choice(BUDGETS)
        nb, na = self._window(now)
        max_depth = depth - 1 if full else max(0, depth - 1 + rng.choice((0, 0, 0, 1, 2, 5, -1)))
        session = rng.choices(self.sessions + [bytes(16)], (60, 10, 10, 20))[0]
        chain = hopgate.Chain.grant(
            issuer, holders[0].public_key, caps, budget, rng.choice(UNITS), nb, na, max_depth,
            session_id=session, nonce=rng.randbytes(16),
            meta_digest=rng.randbytes(32) if rng.random() < 0.3 else None,
        )
        for i in range(1, depth):
            parent = chain.links[-1]
            p_nb, p_na = parent.not_before, parent.not_after
            c_nb = p_nb if rng.random() < 0.8 else rng.randint(p_nb, min(p_nb + 120, p_na - 1))
            c_na = p_na if rng.random() < 0.7 else rng.randint(c_nb + 1, p_na)
            c_budget = parent.budget if rng.random() < 0.4 else rng.randint(0, parent.budget)
            c_depth = max(parent.max_depth - 1, 0) if full or rng.random() < 0.7 else rng.randint(0, max(parent.max_depth - 1, 0))
            try:
                chain = chain.delegate(
                    holders[i - 1], holders[i].public_key,
                    caps=self._narrow_caps(list(parent.caps)), budget=c_budget,
                    not_before=c_nb, not_after=c_na, max_depth=c_depth, nonce=rng.randbytes(16),
                )
            except hopgate.DelegationError:
                return chain, holders[:i]
        return chain, holders

    def _entry(self, kind: str, data: bytes, links: list[RawLink], holder: Optional[Signer],
               obj: Optional[hopgate.Chain] = None) -> ChainEntry:
        if obj is None:
            try:
                obj = hopgate.Chain.from_bytes(data)
            except (hopgate.MalformedError, hopgate.InputError):
                obj = None
        last = links[-1]
        return ChainEntry(
            data=data,
            obj=obj,
            kind=kind,
            holder=holder,
            tail_sig=last.signature,
            caps=[(r.decode("utf-8", "replace"), a.decode("utf-8", "replace")) for r, a in last.caps] or [("*", "*")],
            budget=last.budget,
            rids=[hopgate.blake3(link.signature) for link in links],
            not_after=min(link.not_after for link in links),
        )

    def _from_chain(self, kind: str, chain: hopgate.Chain, holders: list[hopgate.SigningKey]) -> ChainEntry:
        links = [from_link(link) for link in chain.links]
        return self._entry(kind, bytes(chain), links, holders[len(links) - 1], obj=chain)

    def _depth(self) -> int:
        return self.rng.choices((1, 2, 3, 4, 5, 6), (20, 25, 25, 15, 10, 5))[0]

    def _make(self, kind: str, now: int) -> ChainEntry:
        rng = self.rng
        ring = self.keyring.by_pk
        if kind == "valid":
            return self._from_chain(kind, *self.build_valid(now, self._depth()))
        if kind == "valid-64caps":
            return self._from_chain(kind, *self.build_valid(now, rng.randint(1, 3), ncaps=MAX_CAPS))
        if kind == "valid-16links":
            chain, holders = self.build_valid(now, 16, issuer=self.issuers[0], full=True)
            return self._from_chain(kind if len(chain) == 16 else "valid", chain, holders)
        if kind == "valid-max-size":
            return self._sized(now, MAX_CHAIN_LEN, kind)
        if kind == "mal-over-size":
            return self._sized(now, MAX_CHAIN_LEN + 1, kind)

        # Everything else is a valid chain (of at least 2 links where the defect needs a
        # parent) decoded into raw links, changed, and signed again.
        need_parent = not kind.startswith(("mal-", "flip", "valid-raw", "torsion-holder", "torsion-issuer",
                                          "hostile-holder", "bad-sig"))
        chain, holders = self.build_valid(now, rng.randint(2, 6) if need_parent else self._depth(),
                                          issuer=rng.choice(self.issuers[:3]))
        links = [from_link(link) for link in chain.links]
        n = len(links)
        if need_parent and n < 2:
            return self._from_chain("valid", chain, holders)
        i = rng.randint(1, n - 1) if n >= 2 else 0
        parent = links[i - 1]
        link = links[i]
        start = i
        keep_prev: frozenset[int] = frozenset()
        signer_at: dict[int, Signer] = {}
        holder: Optional[Signer] = holders[n - 1]

        if kind == "valid-raw":
            links[0].meta_digest = rng.randbytes(32)
            start = 0
        elif kind == "torsion-holder":
            links[-1].holder = rng.choice(self.torsion_agents).public_key
            start = n - 1
            holder = ring[links[-1].holder]
        elif kind == "torsion-middle":
            links[i - 1].holder = rng.choice(self.torsion_agents).public_key
            start = i - 1
        elif kind == "torsion-issuer":
            links[0].issuer = self.torsion_issuer.public_key
            start = 0
        elif kind == "scope-widened":
            if rng.random() < 0.5:
                link.caps.append((b"zz/" + rng.choice(RESOURCE_PATTERNS).encode(), b"admin"))
            else:
                link.caps[rng.randrange(len(link.caps))] = (b"*", b"*")
        elif kind == "budget-widened":
            if parent.budget < U64_MAX:
                link.budget = parent.budget + rng.randint(1, min(1000, U64_MAX - parent.budget))
            else:
                link.unit = parent.unit + b"+"
        elif kind == "unit-changed":
            link.unit = parent.unit + b"!" if len(parent.unit) < 255 else b"x"
        elif kind == "time-widened":
            if parent.not_before > 0 and rng.random() < 0.5:
                link.not_before = parent.not_before - rng.randint(1, min(100, parent.not_before))
            elif parent.not_after < U64_MAX:
                link.not_after = parent.not_after + rng.randint(1, min(100, U64_MAX - parent.not_after))
            else:
                link.not_before = max(parent.not_before - 1, 0)
        elif kind == "depth-exceeded":
            link.max_depth = min(255, parent.max_depth + rng.choice((0, 0, 1, 10)))
        elif kind == "depth-zero-parent":
            parent.max_depth = 0
            start = i - 1
        elif kind == "broken-link":
            link.prev_sig = rng.choice((rng.randbytes(64), parent.signature[::-1], bytes(64)))
            keep_prev = frozenset({i})
        elif kind == "bad-sig-wrong-key":
            rightful = parent.holder
            signer_at = {i: rng.choice([k for k in self.agents + self.issuers if k.public_key != rightful])}
        elif kind == "bad-sig-malleated":
            # Only link i's signature changes (to S + L); the links after it are signed
            # again so that they point at the malleated signature.
            link.signature = malleate(link.signature)
            start = i + 1
        elif kind == "hostile-holder":
            links[-1].holder = rng.choice(HOSTILE_KEYS)
            start = n - 1
            holder = ConstSigner(links[-1].holder, rng.choice((IDENTITY_SIGNATURE, rng.randbytes(64))))
        elif kind == "hostile-middle":
            links[i - 1].holder = rng.choice(HOSTILE_KEYS)
            start = i - 1
            signer_at = {i: ConstSigner(links[i - 1].holder, IDENTITY_SIGNATURE)}
        elif kind.startswith("mal-") or kind == "flip":
            return self._malformed(kind, links, holder, now)
        if not resign(links, start, ring, keep_prev, signer_at):
            return self._from_chain("valid", chain, holders)
        return self._entry(kind, encode_chain(links), links, holder)

    def _malformed(self, kind: str, links: list[RawLink], holder: Optional[Signer], now: int) -> ChainEntry:
        rng = self.rng
        ring = self.keyring.by_pk
        n = len(links)
        k = rng.randrange(n)
        link = links[k]
        start = k
        count: Optional[int] = None
        magic = b"HGC1"
        if kind == "flip":
            flipped = bytearray(encode_chain(links))
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            return self._entry(kind, bytes(flipped), links, holder)
        if kind == "mal-truncated":
            whole = encode_chain(links)
            return self._entry(kind, whole[: rng.randrange(len(whole))], links, holder)
        if kind == "mal-trailing":
            return self._entry(kind, encode_chain(links) + rng.randbytes(rng.randint(1, 3)), links, holder)
        if kind == "mal-body-len":
            link.body_len_delta = rng.choice((-1, 1, 2, -64, 1 << 20))
        elif kind == "mal-count":
            count = rng.choice((0, n - 1, n + 1, 17, 255))
        elif kind == "mal-magic":
            magic = rng.choice((b"HGC2", b"hgc1", b"HGI1"))
        elif kind == "mal-kind":
            if k == 0:
                link.kind = 1
            else:
                link.kind = rng.choice((0, 2, 255))
                link.issuer = rng.choice(self.issuers).public_key
        elif kind == "mal-window":
            link.not_after = link.not_before if rng.random() < 0.5 else max(link.not_before - 1, 0)
        elif kind == "mal-empty-str":
            if rng.random() < 0.5:
                link.unit = b""
            else:
                r, a = link.caps[0]
                link.caps[0] = (b"", a) if rng.random() < 0.5 else (r, b"")
        elif kind == "mal-utf8":
            r, a = link.caps[0]
            link.caps[0] = (r + b"\xff", a) if rng.random() < 0.5 else (r, b"\xc3")
        elif kind == "mal-nul":
            r, a = link.caps[0]
            link.caps[0] = (r + b"\x00x", a) if rng.random() < 0.5 else (r, a + b"\x00")
        elif kind == "mal-ncap":
            choice = rng.randrange(3)
            if choice == 0:
                link.caps = []
            else:
                link.ncap = len(link.caps) + (1 if choice == 1 else -1)
        elif kind == "mal-65caps":
            link.caps = (link.caps * (MAX_CAPS + 1))[: MAX_CAPS + 1]
        elif kind == "mal-17links":
            chain, _ = self.build_valid(now, 16, issuer=self.issuers[0], full=True)
            links = [from_link(x) for x in chain.links]
            extra = links[-1].copy()
            extra.holder = rng.choice(self.agents).public_key
            links.append(extra)
            start = len(links) - 1
            holder = ring.get(extra.holder)
        resign(links, start, ring)  # every key is known here
        return self._entry(kind, encode_chain(links, count, magic), links, holder)

    def _sized(self, now: int, size: int, kind: str) -> ChainEntry:
        """Three links, each of up to 64 long capabilities (links 0 and 1 lead with
        ``("*", "*")`` so that the next one is covered), cut down until the encoding
        is exactly ``size`` bytes."""
        rng = self.rng
        issuer = self.issuers[0]
        holders = [rng.choice(self.agents) for _ in range(3)]
        nb, na = self._window(now)
        budget = rng.choice(BUDGETS[3:])

        def filler(count: int) -> list[Cap]:
            return [(b"f/" + bytes([48 + i % 10]) * 253, b"a" * 255) for i in range(count)]

        links = [
            RawLink(kind=0 if i == 0 else 1, holder=holders[i].public_key, not_before=nb, not_after=na,
                    max_depth=3 - i, budget=budget, unit=b"usd", nonce=rng.randbytes(16),
                    caps=([(b"*", b"*")] + filler(MAX_CAPS - 1)) if i < 2 else filler(MAX_CAPS),
                    issuer=issuer.public_key)
            for i in range(3)
        ]
        excess = len(encode_chain(links)) - size
        last = links[2]
        while excess >= 512 and len(last.caps) > 1:
            last.caps.pop()
            excess -= 512
        j = 0
        while excess > 0 and j < len(last.caps):
            r, ab = last.caps[j]
            cut_r = min(excess, len(r) - 3)
            cut_a = min(excess - cut_r, len(ab) - 1)
            last.caps[j] = (r[: len(r) - cut_r], ab[: len(ab) - cut_a])
            excess -= cut_r + cut_a
            j += 1
        resign(links, 0, self.keyring.by_pk)
        data = encode_chain(links)
        return self._entry(kind if len(data) == size else "valid-big", data, links, holders[2])

    # -- requests ---------------------------------------------------------------

    def scope(self, entry: ChainEntry) -> tuple[str, str, bool]:
        """(ability, resource, covered?): mostly covered by some capability of the last link."""
        rng = self.rng
        if rng.random() < 0.75:
            res_pat, ab_pat = rng.choice(entry.caps)
            res = [r for r in RESOURCES if covers(res_pat, r)]
            abl = [a for a in ABILITIES if covers(ab_pat, a)]
            if res and abl:
                return rng.choice(abl), rng.choice(res), True
            if not res_pat.endswith("*") and not ab_pat.endswith("*") and res_pat and ab_pat:
                return ab_pat, res_pat, True
        return rng.choice(ABILITIES), rng.choice(RESOURCES), False

    def cost(self, budget: int) -> int:
        rng = self.rng
        pick = rng.random()
        if pick < 0.35:
            return rng.randint(0, min(budget, 10))
        if pick < 0.6:
            return rng.randint(1, 5)
        if pick < 0.8:
            return rng.randint(0, budget)
        if pick < 0.88:
            return budget
        if pick < 0.96:
            return min(budget + 1, U64_MAX)
        return rng.choice((U64_MAX, 2**63, budget // 2 + 1))

    def timestamp(self, now: int, skew: int, window: int) -> int:
        rng = self.rng
        pick = rng.random()
        if pick < 0.55:
            ts = now
        elif pick < 0.75:
            ts = now + rng.randint(-skew, skew)
        elif pick < 0.85:
            ts = now + rng.choice((-skew, skew))
        elif pick < 0.92:
            ts = now + rng.choice((-skew - 1, skew + 1))
        elif pick < 0.97:
            ts = now + rng.choice((-1, 1)) * rng.randint(skew, max(window, skew + 1))
        else:
            ts = rng.choice((0, U64_MAX, now - 2**40, now + rng.randint(10**4, 10**6)))
        return min(max(ts, 0), U64_MAX)

    def invocation(self, entry: ChainEntry, now: int, skew: int, window: int,
                   other: Callable[[], ChainEntry], nonce: Optional[bytes] = None) -> tuple[bytes, str]:
        """An invocation for ``entry`` and the name of its kind; ``nonce`` reuses
        a nonce (replay identity is per root, so under another root it is fresh)."""
        rng = self.rng
        kind = rng.choices(self._inv_names, self._inv_weights)[0]
        ability, resource, _covered = self.scope(entry)
        cost = self.cost(entry.budget)
        ts = self.timestamp(now, skew, window)
        drawn = rng.randbytes(16)
        nonce = drawn if nonce is None else nonce
        holder = entry.holder
        if holder is None or kind == "wrong-signer":
            rightful = None if holder is None else holder.public_key
            holder = rng.choice([a for a in self.agents if a.public_key != rightful])
        if kind == "torsion-signer":
            holder = rng.choice(self.torsion_agents)
        if kind == "builder" and entry.obj is not None and isinstance(holder, hopgate.SigningKey):
            payload = rng.randbytes(rng.randint(0, 64))
            try:
                built = entry.obj.invoke(holder, ability, resource, cost, nonce=nonce, timestamp=ts,
                                         payload=payload)
            except hopgate.HopgateError:
                kind = "fresh"
            else:
                if len(self.bodies) >= 4096:
                    self.bodies.clear()
                self.bodies[built] = payload
                return built, "builder"
        elif kind == "builder":
            kind = "fresh"
        tail = other().tail_sig if kind == "other-tail" else entry.tail_sig
        body = invocation_body(tail, ability.encode(), resource.encode(), cost, ts, nonce, rng.randbytes(32))
        if kind == "inv-malformed":
            return self._malformed_invocation(holder, body, tail, cost, ts, nonce), kind
        data = sign_invocation(holder, body)
        if kind == "malleated":
            data = data[:-64] + malleate(data[-64:])
        elif kind == "inv-flip":
            flipped = bytearray(data)
            for _ in range(rng.choice((1, 1, 2))):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            data = bytes(flipped)
        return data, kind

    def _malformed_invocation(self, holder: Signer, body: bytes, tail: bytes, cost: int, ts: int,
                              nonce: bytes) -> bytes:
        rng = self.rng
        pick = rng.randrange(7)
        if pick == 0:
            data = sign_invocation(holder, body)
            return data[: rng.randrange(len(data))]
        if pick == 1:
            return sign_invocation(holder, body) + rng.randbytes(rng.randint(1, 3))
        if pick == 2:
            return frame_invocation(body, holder.sign(b"hopgate/v1/invoke\x00" + body),
                                    body_len_delta=rng.choice((-1, 1, 1 << 24)))
        if pick == 3:
            return frame_invocation(body, holder.sign(b"hopgate/v1/invoke\x00" + body), magic=b"HGI2")
        strings = ((b"", b"files/a"), (b"read", b""), (b"re\xffad", b"files/a"), (b"read", b"fi\x00les"),
                   (b"r" * 255, b"\xe2\x82"), (b"read", b"files/a" + b"x" * 248))
        ability, resource = strings[rng.randrange(len(strings))]
        raw = invocation_body(tail, ability, resource, cost, ts, nonce, rng.randbytes(32))
        return sign_invocation(holder, raw)
