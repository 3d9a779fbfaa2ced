"""The demo (examples/, outside the package): its gate scenario, its hand encoder, and whole
runs, with and without the reference extra."""

from __future__ import annotations

import importlib
import io
import os
import pathlib
import subprocess
import sys
from types import ModuleType

import pytest

import hopgate
import hopgate.reference as ref

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A module of examples/, imported as ``python examples/demo.py`` sees it."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module(name)


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / "demo.py"), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)


SMALL = ("--chains", "400", "--principals", "3", "--agents", "12", "--reference-sample", "80")


@pytest.mark.parametrize("impl_name", ["native", "reference"])
def test_demo_gate_scenario(impl_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario `make demo` prints: concurrent spending never passes the grant,
    and the replay, the stolen chain and the revoked worker are refused."""
    run = example("demo_gate", monkeypatch).run
    out = io.StringIO()
    assert run(out, hopgate if impl_name == "native" else ref) == []
    text = out.getvalue()
    assert "REPLAY" in text and "BAD_SIGNATURE" in text and "REVOKED" in text


def test_demo_stores_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario across two processes on one SQLite ledger: the grant's cap holds
    over both, a replay crosses processes, and a restart forgets no spending."""
    run = example("demo_stores", monkeypatch).run
    out = io.StringIO()
    assert run(out) == []
    text = out.getvalue()
    assert "-> REPLAY" in text and "nothing left reserved: True" in text and "BUDGET_EXHAUSTED" in text


def test_demo_wire_encodes_what_the_builders_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's hand encoder (for the links the builders refuse) writes a builder-made
    chain and invocation back byte for byte, from their parsed fields."""
    wire = example("demo_wire", monkeypatch)
    alice, bob, carol = (hopgate.SigningKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
    grant = hopgate.Chain.grant(alice, bob.public_key, [("files/*", "read"), ("mcp/tools/*", "call")],
                                budget=5_000, unit="calls", not_before=1_700_000_000,
                                not_after=1_800_000_000, max_depth=3, session_id=b"s" * 16,
                                meta_digest=hopgate.blake3(b"consent"))
    chain = grant.delegate(bob, carol.public_key, caps=[("files/reports/*", "read")], budget=700)
    pairs = []
    for link in chain.links:
        body = wire.encode_link_body(
            kind=link.kind, issuer=link.issuer, session_id=link.session_id, prev_sig=link.prev_sig,
            holder=link.holder, not_before=link.not_before, not_after=link.not_after,
            max_depth=link.max_depth, budget=link.budget, unit=link.unit, nonce=link.nonce,
            caps=link.caps, meta_digest=link.meta_digest)
        assert body == link.body
        assert hopgate.verify(wire.LINK_DOMAIN + body, link.signature, alice.public_key if link.kind == 0
                              else bob.public_key)
        pairs.append((body, link.signature))
    assert wire.encode_chain(pairs) == bytes(chain)

    raw = chain.invoke(carol, "read", "files/reports/q3.pdf", cost=2, payload=b"{}")
    inv = hopgate.parse_invocation(raw)
    body = wire.encode_invocation_body(tail_sig=inv.tail_sig, ability=inv.ability, resource=inv.resource,
                                       cost=inv.cost, timestamp=inv.timestamp, nonce=inv.nonce,
                                       payload_digest=inv.payload_digest)
    assert body == inv.body and wire.encode_invocation(body, inv.signature) == raw
    assert hopgate.verify(wire.INVOKE_DOMAIN + body, inv.signature, carol.public_key)


def test_demo_runs_and_agrees_with_the_reference() -> None:
    result = run_demo(*SMALL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result: OK, every decision as expected" in result.stdout
    assert "reference decisions on the 80 sampled chains: identical to native" in result.stdout


def test_demo_runs_without_the_reference_extra(tmp_path: pathlib.Path) -> None:
    """What `pip install hopgate` brings is enough: with PyNaCl and blake3-py made
    unimportable, the demo runs natively and says what the comparison would need."""
    for name in ("nacl", "blake3"):
        (tmp_path / f"{name}.py").write_text(f'raise ImportError("no module named {name} (hidden by the test)")\n')
    path = [str(tmp_path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    result = run_demo(*SMALL, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backend: native" in result.stdout
    assert "result: OK, every decision as expected" in result.stdout
    assert "reference: not compared" in result.stdout and "pip install 'hopgate[reference]'" in result.stdout
    assert "hidden by the test" in result.stdout
