"""hopgate against the reference and peers, as ratios measured in one run.

    python bench/peers.py [--quick] [--json OUT.json] [--png OUT.png]

Each figure is the best of several repetitions (time.perf_counter), reported as
microseconds per item (hashing: nanoseconds per message, or GB/s for one large
buffer) and as a speed-up over the peer it is compared with. Run on an idle
machine; `make bench` calls this, then the pytest-benchmark suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from functools import partial
from typing import Any, Callable, Literal

import blake3
import nacl.signing
import numpy as np
from biscuit_auth import Biscuit, BiscuitBuilder, BlockBuilder, KeyPair
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import hopgate
import hopgate.reference as ref

NOW = 1_750_000_000


def best(fn: Callable[[], Any], reps: int, budget_s: float = 3.0) -> float:
    """Best wall time of `reps` calls (fewer if the budget runs out, at least 1)."""
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return min(times)


def signatures(n: int, shared: bool) -> tuple[list[bytes], list[bytes], list[bytes]]:
    keys = [hopgate.SigningKey.generate() for _ in range(1 if shared else n)]
    msgs = [os.urandom(64) for _ in range(n)]
    sigs = [keys[i % len(keys)].sign(m) for i, m in enumerate(msgs)]
    pks = [keys[i % len(keys)].public_key for i in range(n)]
    return msgs, sigs, pks


def library_loops(msgs: list[bytes], sigs: list[bytes], pks: list[bytes]) -> tuple[Callable[[], None], Callable[[], None]]:
    """The peers' loops over the same items: PyNaCl's and pyca/cryptography's verify, a key
    object made per item as a caller holding raw keys makes one."""

    def pynacl() -> None:
        for m, s, k in zip(msgs, sigs, pks):
            nacl.signing.VerifyKey(k).verify(m, s)

    def crypto() -> None:
        for m, s, k in zip(msgs, sigs, pks):
            Ed25519PublicKey.from_public_bytes(k).verify(s, m)

    return pynacl, crypto


def new_keys(call: Callable[[], object]) -> Callable[[], None]:
    """`call` on keys the process has not seen, as the peers' loops see them: the cache of
    decoded keys emptied before each repetition (inside the timing; it costs microseconds)."""

    def run() -> None:
        hopgate.key_cache_clear()
        call()

    return run


def bench_verify(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for shared in (False, True):
        for n in (1, 64, 4096):
            msgs, sigs, pks = signatures(n, shared)
            reps = 3 if quick else (200 if n == 1 else 20 if n == 64 else 5)

            pynacl, crypto = library_loops(msgs, sigs, pks)
            sample = min(n, 256)  # the reference is measured on a sample, per item
            t_native = best(new_keys(lambda: hopgate.verify_batch(msgs, sigs, pks)), reps) / n
            t_nacl = best(pynacl, reps) / n
            t_crypto = best(crypto, reps) / n
            t_ref = best(lambda: ref.verify_batch(msgs[:sample], sigs[:sample], pks[:sample]), 2) / sample
            assert hopgate.verify_batch(msgs, sigs, pks).all()
            rows.append(
                dict(
                    bench="verify_batch",
                    case=f"n={n} {'one key' if shared else 'distinct keys'}",
                    **({} if shared or n == 1 else {"limit": f"verify_batch/{n}/new"}),
                    native_us=t_native * 1e6,
                    peers_us={"PyNaCl loop": t_nacl * 1e6, "cryptography loop": t_crypto * 1e6, "reference": t_ref * 1e6},
                )
            )
            if not shared and n > 1:
                hopgate.verify_batch(msgs, sigs, pks)
                rows.append(
                    dict(
                        bench="verify_batch",
                        case=f"n={n} distinct keys, seen before",
                        limit=f"verify_batch/{n}/seen",
                        native_us=best(lambda: hopgate.verify_batch(msgs, sigs, pks), reps) / n * 1e6,
                        peers_us={"PyNaCl loop": t_nacl * 1e6},
                    )
                )
    return rows


def bench_rules(quick: bool) -> list[dict[str, Any]]:
    """The drop-in rules against the library each one answers like: one signature, and
    a batch of distinct keys (each rule checks item by item, on all cores)."""
    rows = []
    for n in (1, 4096):
        msgs, sigs, pks = signatures(n, False)
        reps = 3 if quick else (300 if n == 1 else 5)

        pynacl, crypto = library_loops(msgs, sigs, pks)
        cases: list[tuple[Literal["libsodium", "openssl"], str, Callable[[], None]]] = [
            ("libsodium", "PyNaCl loop", pynacl),
            ("openssl", "cryptography loop", crypto),
        ]
        if n == 1:
            from hopgate.compat.nacl import VerifyKey

            m, s, k = msgs[0], sigs[0], pks[0]
            ours, theirs = VerifyKey(k), nacl.signing.VerifyKey(k)
            rows.append(
                dict(
                    bench="drop-in",
                    case="compat.nacl VerifyKey.verify, one call",
                    native_us=best(lambda: ours.verify(m, s), reps) * 1e6,
                    peers_us={"PyNaCl VerifyKey.verify": best(lambda: theirs.verify(m, s), reps) * 1e6},
                )
            )
        for rule, peer, loop in cases:
            if n == 1:
                m, s, k = msgs[0], sigs[0], pks[0]
                t_native = best(lambda: hopgate.verify(m, s, k, rule=rule), reps)
            else:
                t_native = best(new_keys(lambda: hopgate.verify_batch(msgs, sigs, pks, rule=rule)), reps) / n
            assert hopgate.verify_batch(msgs, sigs, pks, rule=rule).all()
            rows.append(
                dict(
                    bench="verify rule",
                    case=f"{rule}, {'one call' if n == 1 else f'batch of {n} distinct keys'}",
                    native_us=t_native * 1e6,
                    peers_us={peer: best(loop, reps) / n * 1e6},
                )
            )
    return rows


def bench_jwt(quick: bool) -> list[dict[str, Any]]:
    """EdDSA JWTs: ``hopgate.jwt.decode_batch`` of distinct-key tokens against a PyJWT
    ``jwt.decode`` loop, and one ``decode`` against PyJWT's (same tokens, keys, claims)."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    import hopgate.jwt as hj

    n = 256 if quick else 4096
    now = int(time.time())
    private = [Ed25519PrivateKey.generate() for _ in range(n)]
    public = [k.public_key() for k in private]
    claims = [{"sub": f"agent-{i}", "iss": "https://issuer.example", "aud": "api", "iat": now, "exp": now + 3600,
               "scope": "files:read"} for i in range(n)]
    tokens = [pyjwt.encode(c, k, algorithm="EdDSA") for c, k in zip(claims, private)]
    kwargs: dict[str, Any] = {"algorithms": ["EdDSA"], "audience": "api"}
    assert hj.decode_batch(tokens, public, **kwargs) == claims
    reps = 3 if quick else 5

    def theirs() -> None:
        for t, k in zip(tokens, public):
            pyjwt.decode(t, k, **kwargs)

    t_theirs = best(theirs, reps) / n
    t0, k0 = tokens[0], public[0]
    return [
        dict(bench="jwt", case=f"decode_batch, {n} distinct keys", native_us=best(
            new_keys(lambda: hj.decode_batch(tokens, public, **kwargs)), reps) / n * 1e6,
             peers_us={"PyJWT decode loop": t_theirs * 1e6}),
        dict(bench="jwt", case=f"decode_batch, {n} keys seen before", native_us=best(
            lambda: hj.decode_batch(tokens, public, **kwargs), reps) / n * 1e6,
             peers_us={"PyJWT decode loop": t_theirs * 1e6}),
        dict(bench="jwt", case="decode, one EdDSA token", native_us=best(lambda: hj.decode(t0, k0, **kwargs), 300) * 1e6,
             peers_us={"PyJWT decode": best(lambda: pyjwt.decode(t0, k0, **kwargs), 300) * 1e6}),
    ]


def hdp_records(n: int, hops: int, private: bytes) -> list[dict[str, Any]]:
    """`n` HDP records of `hops` hops, signed by the HDP SDK itself."""
    import uuid

    from hdp_langchain._crypto import sign_hop, sign_root  # type: ignore[import-untyped]

    records = []
    for i in range(n):
        record: dict[str, Any] = {
            "hdp": "0.1",
            "header": {"token_id": str(uuid.uuid4()), "issued_at": NOW * 1000, "expires_at": NOW * 1000 + 3_600_000,
                       "session_id": f"session-{i}", "version": "0.1"},
            "principal": {"id": "alice@example.com", "id_type": "email"},
            "scope": {"intent": "book travel", "data_classification": "internal", "network_egress": True,
                      "persistence": False, "authorized_tools": ["search", "book"], "max_hops": hops},
        }
        record["signature"] = sign_root(record, private, "issuer-1")
        chain: list[dict[str, Any]] = []
        for seq in range(1, hops + 1):
            hop = {"seq": seq, "agent_id": f"agent-{seq}", "agent_type": "sub-agent", "timestamp": NOW * 1000 + seq,
                   "action_summary": "searched flights", "parent_hop": seq - 1}
            hop["hop_signature"] = sign_hop([*chain, hop], record["signature"]["value"], private)
            chain.append(hop)
        record["chain"] = chain
        records.append(record)
    return records


def bench_hdp(quick: bool) -> list[dict[str, Any]]:
    """HDP records (one issuer key): ``hopgate.hdp.verify_chains`` against a loop over the
    HDP SDK's ``verify_chain`` (hdp-langchain), 1,024 records of 1 and of 3 hops."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from hdp_langchain.verify import verify_chain  # type: ignore[import-untyped]

    import hopgate.hdp as hh

    n = 128 if quick else 1024
    reps = 3 if quick else 5
    issuer = Ed25519PrivateKey.generate()
    public = issuer.public_key().public_bytes_raw()
    rows = []
    for hops in (1, 3):
        records = hdp_records(n, hops, issuer.private_bytes_raw())
        assert all(r.valid for r in hh.verify_chains(records, public))

        def theirs(records: list[dict[str, Any]] = records) -> None:
            for record in records:
                verify_chain(record, public)

        rows.append(dict(bench="hdp", case=f"verify_chains, {n} records of {hops} hop{'s' if hops > 1 else ''}",
                         native_us=best(partial(hh.verify_chains, records, public), reps) / n * 1e6,
                         peers_us={"hdp-langchain verify_chain loop": best(theirs, reps) / n * 1e6}))
    return rows


def bench_aip(quick: bool) -> list[dict[str, Any]]:
    """AIP JWT chains: ``hopgate.aip.verify_batch`` of 1,024 chains (1 and 3 links, a fresh
    root and holder key per chain, minted by the package) against a loop over the package's
    ``aip_token.jwt_chain.JwtChain.verify``, and one ``JwtChain.verify`` against the package's."""
    from aip_core.crypto import KeyPair  # type: ignore[import-untyped]
    from aip_token.jwt_chain import JwtChain as TheirChain  # type: ignore[import-untyped]

    import hopgate.aip as aip

    n = 128 if quick else 1024
    now = int(time.time())
    rows: list[dict[str, Any]] = []
    for links in (1, 3):
        tokens, roots = [], []
        for _ in range(n):
            keys = [KeyPair.generate() for _ in range(links + 1)]
            chain = TheirChain.create_root(
                issuer="aip:root", delegate="aip:agent-0", tools=["search:*", "mail:send"], max_depth=links,
                ttl_seconds=3600, issuer_keypair=keys[0], holder_public_key=keys[1].public_key_bytes(),
                budget_cents=10_000, now=now,
            )
            for i in range(1, links):
                chain = chain.append(holder_keypair=keys[i], delegate=f"aip:agent-{i}",
                                     next_holder_public_key=keys[i + 1].public_key_bytes(),
                                     context="research the market", tools=["search:*"], budget_cents=5_000, now=now)
            tokens.append(chain.serialize())
            roots.append(keys[0].public_key_bytes())
        results = aip.verify_batch(tokens, roots, now=now)
        assert all(isinstance(r, aip.JwtChain) and r.depth() == links - 1 for r in results)
        reps = 3 if quick else 5

        def theirs() -> None:
            for t, k in zip(tokens, roots):
                TheirChain.verify(t, k, now)

        t_theirs = best(theirs, reps) / n
        rows.append(dict(bench="aip", case=f"verify_batch, {n} chains of {links} link{'s' * (links > 1)}",
                         native_us=best(new_keys(lambda: aip.verify_batch(tokens, roots, now=now)), reps) / n * 1e6,
                         peers_us={"aip_token JwtChain.verify loop": t_theirs * 1e6}))
        t0, k0 = tokens[0], roots[0]
        rows.append(dict(bench="aip", case=f"JwtChain.verify, one chain of {links}",
                         native_us=best(lambda: aip.JwtChain.verify(t0, k0, now), 300) * 1e6,
                         peers_us={"aip_token JwtChain.verify": best(lambda: TheirChain.verify(t0, k0, now), 300) * 1e6}))
    return rows


def make_chains(n: int, links: int = 3) -> tuple[list[bytes], bytes]:
    issuer = hopgate.SigningKey.generate()
    agents = [hopgate.SigningKey.generate() for _ in range(64)]
    out = []
    for i in range(n):
        hops = [agents[(i + j) % 64] for j in range(links)]
        c = hopgate.Chain.grant(issuer, hops[0].public_key, [("files/*", "read")], 1000, "usd", NOW - 10, NOW + 3600, links)
        for j in range(1, links):
            c = c.delegate(hops[j - 1], hops[j].public_key, budget=1000 - j)
        out.append(bytes(c))
    return out, issuer.public_key


def biscuit_tokens(n: int) -> tuple[list[Any], Any]:
    root = KeyPair()
    out = []
    for i in range(n):
        t = BiscuitBuilder(f'user("{i}"); right("files/a", "read");').build(root.private_key)
        for _ in range(3):
            t = t.append(BlockBuilder('check if right("files/a", "read");'))
        out.append(t.to_bytes())
    return out, root.public_key


def bench_chains(quick: bool) -> list[dict[str, Any]]:
    n = 256 if quick else 2048
    chains, issuer = make_chains(n)
    tokens, root = biscuit_tokens(min(n, 512))
    sample = chains[:128]
    t_native = best(lambda: hopgate.verify_chains(chains, [issuer], now=NOW), 3 if quick else 10) / n
    t_ref = best(lambda: ref.verify_chains(sample, [issuer], now=NOW), 2) / len(sample)
    t_bis = best(lambda: [Biscuit.from_bytes(t, root) for t in tokens], 3) / len(tokens)
    assert (hopgate.verify_chains(chains, [issuer], now=NOW) == 0).all()
    return [
        dict(
            bench="verify_chains",
            case=f"{n} chains x 3 links (biscuit: 4 blocks)",
            native_us=t_native * 1e6,
            peers_us={"reference": t_ref * 1e6, "biscuit-python": t_bis * 1e6},
        )
    ]


def gate_workload(n: int, reps: int) -> tuple[list[bytes], list[list[bytes]], bytes]:
    """`n` distinct 3-link chains and `reps` rounds of fresh invocations for each."""
    issuer = hopgate.SigningKey.generate()
    agents = [hopgate.SigningKey.generate() for _ in range(64)]
    chains, holders = [], []
    for i in range(n):
        hops = [agents[(i + j) % 64] for j in range(3)]
        c = hopgate.Chain.grant(issuer, hops[0].public_key, [("pay/*", "refund")], 10**12, "usd", NOW - 10, NOW + 3600, 3)
        for j in range(1, 3):
            c = c.delegate(hops[j - 1], hops[j].public_key)
        chains.append(c)
        holders.append(hops[2])
    rounds = [[c.invoke(h, "refund", "pay/x", 1, timestamp=NOW) for c, h in zip(chains, holders)] for _ in range(reps)]
    return [bytes(c) for c in chains], rounds, issuer.public_key


def bench_gate(quick: bool) -> list[dict[str, Any]]:
    n = 256 if quick else 1024
    reps = 3 if quick else 6
    chains, rounds, issuer = gate_workload(n, reps + 1)
    sample = 64

    def cold_native() -> Callable[[], None]:
        it = iter(rounds)

        def once() -> None:
            codes, reservations = hopgate.Gate([issuer]).check_batch(chains, next(it), now=NOW)
            assert not codes.any()
            for r in reservations:
                r.commit()  # type: ignore[union-attr]

        return once

    t_cold = best(cold_native(), reps) / n

    def cold_reference() -> None:
        g = ref.Gate([issuer])
        codes, reservations = g.check_batch(chains[:sample], rounds[0][:sample], now=NOW)
        assert not codes.any()
        for r in reservations:
            r.commit()  # type: ignore[union-attr]

    t_ref = best(cold_reference, 2) / sample

    tokens, root = biscuit_tokens(min(n, 256))
    from biscuit_auth import AuthorizerBuilder

    def biscuit() -> None:
        for t in tokens:
            AuthorizerBuilder("allow if user($u);").build(Biscuit.from_bytes(t, root)).authorize()

    t_bis = best(biscuit, 3) / len(tokens)

    warm = hopgate.Gate([issuer])
    warm.check_batch(chains, rounds[0], now=NOW)
    it = iter(rounds[1:])

    def warm_round() -> None:
        codes, reservations = warm.check_batch(chains, next(it), now=NOW)
        assert not codes.any()
        for r in reservations:
            r.commit()  # type: ignore[union-attr]

    t_warm = best(warm_round, reps) / n

    msgs, sigs, pks = signatures(256, shared=False)
    t_nacl = best(lambda: [nacl.signing.VerifyKey(k).verify(m, s) for m, s, k in zip(msgs, sigs, pks)], 3) / 256
    return [
        dict(bench="gate cold", case=f"{n} new 3-link chains + invocation", native_us=t_cold * 1e6,
             peers_us={"reference gate": t_ref * 1e6, "biscuit parse+verify+authorize": t_bis * 1e6}),
        dict(bench="gate warm", case=f"{n} cached chains, new invocations", native_us=t_warm * 1e6,
             peers_us={"one PyNaCl verify": t_nacl * 1e6}),
    ]


def bench_ledger(quick: bool) -> list[dict[str, Any]]:
    import threading

    n = 20_000 if quick else 200_000
    rows = []
    for impl, name in ((hopgate, "native"), (ref, "reference")):
        budget = impl.Ledger().budget([(bytes([i]) * 32, 10**15) for i in range(1, 4)])

        def pairs(count: int, b: Any = budget) -> None:
            for _ in range(count):
                b.reserve(1).commit()

        m = n if name == "native" else n // 10
        one = best(lambda: pairs(m), 2) / m
        threads = 4

        def contended() -> None:
            ts = [threading.Thread(target=pairs, args=(m // threads,)) for _ in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        many = best(contended, 2) / m
        rows.append((name, one, many))
    (_, n1, n4), (_, r1, r4) = rows
    return [
        dict(bench="ledger", case="reserve+commit, 3-link path, 1 thread", native_us=n1 * 1e6,
             peers_us={"reference": r1 * 1e6}),
        dict(bench="ledger", case="reserve+commit, 4 threads, one path", native_us=n4 * 1e6,
             peers_us={"reference": r4 * 1e6}),
    ]


MAC_KEY = bytes(range(32))


def hash_messages(n: int, size: int) -> tuple[list[bytes], Any, Any]:
    """`n` random `size`-byte messages: as a list of bytes, and as one read-only numpy
    buffer (borrowed by hopgate, not copied) plus int64 Arrow offsets."""
    raw = np.random.default_rng(size).bytes(n * size)
    msgs = [raw[i : i + size] for i in range(0, n * size, size)]
    buf = np.frombuffer(raw, dtype=np.uint8)
    offsets = np.arange(n + 1, dtype=np.int64) * size
    return msgs, buf, offsets


def bench_hashing(quick: bool) -> list[dict[str, Any]]:
    """Batch hashing of many small messages, and BLAKE3 of one large buffer."""
    rows: list[dict[str, Any]] = []
    n = 100_000 if quick else 1_000_000
    reps = 2 if quick else 3
    sample = 20_000  # the reference is measured on a sample, per message
    label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    for size in (256, 64):
        msgs, buf, offsets = hash_messages(n, size)
        # The peers: what a Python developer writes without hopgate, one call per message.
        loops = {
            "hashlib.sha256 loop": best(lambda: [hashlib.sha256(m).digest() for m in msgs], reps) / n,
            "hashlib.blake2b loop": best(lambda: [hashlib.blake2b(m, digest_size=32).digest() for m in msgs], reps) / n,
            "blake3-py loop": best(lambda: [blake3.blake3(m).digest() for m in msgs], reps) / n,
        }
        keyed_loop = best(lambda: [blake3.blake3(m, key=MAC_KEY).digest() for m in msgs], reps) / n
        functions: list[tuple[str, Callable[..., Any], Callable[..., Any], tuple[bytes, ...]]] = [
            ("blake3_many", hopgate.blake3_many, ref.blake3_many, ()),
            ("sha256_many", hopgate.sha256_many, ref.sha256_many, ()),
            ("mac_many", hopgate.mac_many, ref.mac_many, (MAC_KEY,)),
        ]
        for name, native, reference, args in functions:
            # Same digests in both forms, and equal to the peers' on a sample.
            out = native(*args, buf, offsets)
            assert (out == native(*args, msgs)).all()
            assert (out[:64] == reference(*args, msgs[:64])).all()
        for name, native, reference, args in functions:
            t_ref = best(lambda: reference(*args, msgs[:sample]), 2) / sample
            peers = dict(loops)
            if name == "mac_many":
                peers = {"blake3-py keyed loop": keyed_loop, **peers}
            for form, call_args in (("buffer+offsets", (*args, buf, offsets)), ("list of bytes", (*args, msgs))):
                t = best(lambda: native(*call_args), reps) / n
                rows.append(
                    dict(
                        bench=name,
                        case=f"{label} x {size} B, {form}",
                        unit="ns",
                        limit=f"{name.removesuffix('_many').replace('mac', 'blake3')}/{size}",
                        bytes_per_item=size,
                        native_us=t * 1e6,
                        peers_us={**{k: v * 1e6 for k, v in peers.items()}, "reference": t_ref * 1e6},
                    )
                )
        del msgs, buf, offsets

    size = (32 if quick else 256) << 20
    data = np.random.default_rng(1).bytes(size)  # `bytes`: borrowed by every contender
    reps = 3 if quick else 5
    want = blake3.blake3(data).digest()
    assert hopgate.blake3(data) == hopgate.blake3(data, threads=1) == want
    t_auto = best(lambda: blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest(), reps)
    t_one = best(lambda: blake3.blake3(data).digest(), reps)
    t_sha = best(lambda: hashlib.sha256(data).digest(), 2)
    for threads in (None, 1):
        t = best(lambda: hopgate.blake3(data, threads=threads), reps)
        rows.append(
            dict(
                bench="blake3",
                case=f"one {size >> 20} MiB buffer, threads={threads}",
                unit="GB/s",
                bytes=size,
                native_us=t * 1e6,
                peers_us={"blake3-py AUTO threads": t_auto * 1e6, "blake3-py 1 thread": t_one * 1e6,
                          "hashlib.sha256": t_sha * 1e6},
            )
        )
    return rows


def bench_audit(quick: bool) -> list[dict[str, Any]]:
    """Appending gate-sized records (74 B) to an audit log, and verifying the log."""
    import shutil
    import tempfile

    n = 100_000 if quick else 1_000_000
    sample = 20_000  # the reference is measured on a sample, per record
    batch = 1000  # records per append call: a gate batch
    rng = np.random.default_rng(7)
    records = [b"G\x00" + rng.bytes(72) for _ in range(n)]
    label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    tmp = tempfile.mkdtemp(prefix="hopgate-bench-")
    try:
        def write(impl: Any, path: str, count: int) -> float:
            if os.path.exists(path):
                os.remove(path)
            t = time.perf_counter()
            with impl.AuditLog(path, key=MAC_KEY, fsync=False) as log:
                for i in range(0, count, batch):
                    log.append_many(records[i : i + batch])
            return (time.perf_counter() - t) / count

        native_path, ref_path = os.path.join(tmp, "native.log"), os.path.join(tmp, "ref.log")
        t_append = min(write(hopgate, native_path, n) for _ in range(2))
        t_append_ref = write(ref, ref_path, sample)
        report = hopgate.audit_verify(native_path, key=MAC_KEY)
        assert report.ok and report.records == n
        t_verify = best(lambda: hopgate.audit_verify(native_path, key=MAC_KEY), 3)
        t_verify_ref = best(lambda: ref.audit_verify(ref_path, key=MAC_KEY), 2) / sample
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [
        dict(bench="audit append", case=f"{label} x 74 B records, {batch} per call", unit="ns",
             native_us=t_append * 1e6, peers_us={"reference": t_append_ref * 1e6}),
        dict(bench="audit verify", case=f"{label} records ({1 / (t_verify / n) / 1e6:.1f}M records/s)", unit="ns",
             native_us=t_verify / n * 1e6, peers_us={"reference": t_verify_ref * 1e6}),
    ]


def figure(r: dict[str, Any], us: float) -> str:
    """One time in the row's unit: µs/item (the default), "ns" per item, or "GB/s" over `bytes`."""
    unit = r.get("unit", "us")
    if unit == "ns":
        return f"{us * 1e3:,.1f} ns"
    if unit == "GB/s":
        return f"{r['bytes'] / (us * 1e-6) / 1e9:,.2f} GB/s"
    return f"{us:,.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'bench':<14} {'case':<40} {'hopgate µs/item':>16}  peers (µs/item, hopgate speed-up)"]
    for r in rows:
        peers = "  ".join(f"{k}: {figure(r, v)} ({v / r['native_us']:.1f}x)" for k, v in r["peers_us"].items())
        lines.append(f"{r['bench']:<14} {r['case']:<40} {figure(r, r['native_us']):>16}  {peers}")
    return "\n".join(lines)


def against_limits(rows: list[dict[str, Any]], path: str) -> str:
    """The Python figures next to the pure-Rust limits `rust/core/benches/limits.rs` measured
    on this machine (``cargo bench -p hopgate-core --bench limits -- --json PATH``): the
    fraction of the limit each reaches (1.0: at the limit)."""
    with open(path) as f:
        report = json.load(f)
    limits = {r["key"]: r for r in report["rows"] if "key" in r}
    lines = [f"# against the pure-Rust limits ({report['cores']} cores; CPU features: {' '.join(report['features'])})"]
    for r in rows:
        limit = limits.get(r.get("limit", ""))
        if limit is None:
            continue
        if limit["unit"] == "GB/s":
            ours = r["bytes_per_item"] / (r["native_us"] * 1e-6) / 1e9
            fraction, figures = ours / limit["limit"], f"{ours:.2f} of {limit['limit']:.2f} GB/s"
        else:
            fraction, figures = limit["limit"] / r["native_us"], f"{r['native_us']:.2f} against {limit['limit']:.2f} µs"
        lines.append(f"{r['bench']:<14} {r['case']:<40} {fraction:>6.0%}  ({figures}: {limit['limit_name']})")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: str) -> None:
    """Horizontal bars: hopgate's speed-up over each peer (log scale), the reference in
    grey, the other peers in colour, in table order from the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, speedups, colours = [], [], []
    for r in rows:
        for k, v in r["peers_us"].items():
            labels.append(f"{r['bench']}: {r['case']} vs {k}")
            speedups.append(v / r["native_us"])
            colours.append("#9a9a9a" if k.startswith("reference") else "#1f6fb4")
    fig, ax = plt.subplots(figsize=(11, 0.22 * len(labels) + 1.6))
    ax.barh(range(len(labels)), speedups, color=colours)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    for y, x in enumerate(speedups):
        ax.text(x * 1.05, y, f"{x:.1f}x", va="center", fontsize=6)
    ax.set_xlabel("hopgate speed-up over the peer (x, log scale; grey: hopgate.reference)")
    ax.set_title(f"hopgate {hopgate.BACKEND} on {platform.machine()}, {os.cpu_count()} cores, "
                 f"hash engine {hopgate.hash_backend()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bench_biscuit(quick: bool) -> list[dict[str, Any]]:
    """Biscuit tokens: ``hopgate.biscuit.verify_signatures`` of a batch (signature layer
    only) against a ``biscuit_auth.Biscuit.from_bytes`` loop (which also decodes the
    Datalog), on the same tokens: 1 block (authority only) and 3 blocks."""
    import hopgate.biscuit as hb

    n = 128 if quick else 1024
    reps = 3 if quick else 5
    rows = []
    for blocks in (1, 3):
        root = KeyPair()
        tokens = []
        for i in range(n):
            t = BiscuitBuilder(f'user("{i}"); right("files/a", "read");').build(root.private_key)
            for _ in range(blocks - 1):
                t = t.append(BlockBuilder('check if right("files/a", "read");'))
            tokens.append(bytes(t.to_bytes()))
        pub = root.public_key.to_bytes()
        answers = hb.verify_signatures(tokens, pub)
        assert all(isinstance(a, list) and len(a) == blocks for a in answers)
        sample = tokens[: max(16, n // 16)]
        rows.append(dict(
            bench="biscuit",
            case=f"verify_signatures, {n} x {blocks} block{'s' if blocks > 1 else ''}",
            native_us=best(lambda: hb.verify_signatures(tokens, pub), reps) / n * 1e6,
            peers_us={
                "reference": best(lambda: ref.biscuit_verify(sample, pub), 2) / len(sample) * 1e6,
                "biscuit-python from_bytes loop": best(
                    lambda: [Biscuit.from_bytes(t, root.public_key) for t in tokens], reps) / n * 1e6,
            },
        ))
    return rows


SECTIONS: dict[str, Callable[[bool], list[dict[str, Any]]]] = {
    "verify": bench_verify,
    "rules": bench_rules,
    "jwt": bench_jwt,
    "hdp": bench_hdp,
    "aip": bench_aip,
    "chains": bench_chains,
    "gate": bench_gate,
    "ledger": bench_ledger,
    "hashing": bench_hashing,
    "audit": bench_audit,
    "biscuit": bench_biscuit,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions (a smoke run)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--png", help="also draw a chart here (needs matplotlib)")
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only this section (repeatable)")
    ap.add_argument("--limits", help="the JSON of rust/core/benches/limits.rs: print fractions of those limits")
    args = ap.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"hopgate {hopgate.BACKEND}, hash backend {hopgate.hash_backend()}"
    )
    rows = [row for name, section in SECTIONS.items() if not args.only or name in args.only for row in section(args.quick)]
    print(table(rows))
    if args.limits:
        print(against_limits(rows, args.limits))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.png:
        chart(rows, args.png)


if __name__ == "__main__":
    main()
