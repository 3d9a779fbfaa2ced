"""Decision: ``held`` at run time, and what mypy sees of a gate's decisions."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from types import ModuleType

import pytest

import hopgate
import hopgate.reference as ref
from hopgate import Code


@pytest.mark.parametrize("impl", [hopgate, ref], ids=["native", "reference"])
def test_held_is_the_reservation_of_an_allowed_decision(impl: ModuleType) -> None:
    now = int(time.time())
    alice, agent = impl.SigningKey.generate(), impl.SigningKey.generate()
    chain = impl.Chain.grant(alice, agent.public_key, [("tools/*", "call")], budget=10, unit="calls",
                             not_before=now - 60, not_after=now + 60, max_depth=0)
    gate = impl.Gate([alice.public_key])
    request = chain.invoke(agent, "call", "tools/x", cost=3)
    allowed = gate.check(chain, request)
    assert allowed.held is allowed.reservation and allowed.held.amount == 3
    allowed.held.commit()

    denied = gate.check(chain, request)
    assert denied.code is Code.REPLAY and denied.reservation is None
    with pytest.raises(ValueError, match=r"denied \(REPLAY: .*decision.allowed"):
        denied.held


TYPED = '''
import hopgate
import hopgate.reference as ref
from hopgate import Decision, ReservationLike

def charge(d: Decision) -> ReservationLike:          # either implementation's
    return d.held

def run(gate: hopgate.Gate, rgate: ref.Gate, chain: hopgate.Chain, request: bytes) -> None:
    d = gate.check(chain, request)
    reveal_type(d)
    reveal_type(d.held)
    reveal_type(d.receipt)
    if d.allowed:
        d.reservation.commit(1)                      # error: still Optional
    charge(d)
    rd = rgate.check(chain, request)
    charge(rd)
    native: Decision[hopgate.Reservation, hopgate.Receipt] = rd   # error: the reference's
'''


def test_mypy_sees_typed_decisions(tmp_path: pathlib.Path) -> None:
    """A native gate's decision is Decision[Reservation, Receipt]; ``held`` is the
    Reservation, ``reservation`` stays Optional; a bare Decision takes either."""
    pytest.importorskip("mypy")
    (tmp_path / "typed.py").write_text(TYPED)
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-pretty", "--python-version", "3.10",
                             "--cache-dir", str(tmp_path / "cache"), "typed.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    lines = result.stdout.splitlines()
    revealed = [line.split("Revealed type is ", 1)[1] for line in lines if "Revealed type is" in line]
    assert revealed == [
        '"hopgate._decision.Decision[hopgate._native.Reservation, hopgate._native.Receipt]"',
        '"hopgate._native.Reservation"',
        '"hopgate._native.Receipt | None"',
    ], result.stdout
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 2, result.stdout
    assert "typed.py:15:" in errors[0] and "union-attr" in errors[0]
    assert "typed.py:19:" in errors[1] and "assignment" in errors[1]
