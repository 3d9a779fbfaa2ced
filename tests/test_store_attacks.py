"""Attacks on the durable ledger's rules (docs/SPEC.md §5.8), by name, on both
implementations and on SQLite and Redis.

- attack_longer_window_revives_a_forgotten_nonce: a gate with a short replay window prunes
  a nonce; a gate that joins later with a longer window (a rolling deploy that raised
  `skew`) must not find it fresh again. The root's threshold clock − retention never moves
  back, so the replay is refused.
"""

from __future__ import annotations

from typing import Any

import pytest

import hopgate
import hopgate.reference as ref

IMPLS = {"native": hopgate, "reference": ref}
NOW = 1_800_000_000


@pytest.mark.parametrize("store_url", ["sqlite", "redis"], indirect=True)
@pytest.mark.parametrize("impl_name", sorted(IMPLS))
def test_attack_longer_window_revives_a_forgotten_nonce(impl_name: str, store_url: str) -> None:
    impl: Any = IMPLS[impl_name]
    issuer, holder = impl.SigningKey.from_seed(b"\xa1" * 32), impl.SigningKey.from_seed(b"\xa2" * 32)
    chain = impl.Chain.grant(issuer, holder.public_key, [("api/*", "call")], 100, "usd", NOW - 60, NOW + 3600, 1)
    short = impl.Gate([issuer.public_key], skew=1, replay_window=2, ledger=impl.Ledger.open(store_url))
    inv = chain.invoke(holder, "call", "api/x", 1, timestamp=NOW)
    d = short.check(chain, inv, now=NOW)
    assert d.allowed
    d.held.commit()
    # The short gate steps on past the nonce's window: the store may forget it.
    later = chain.invoke(holder, "call", "api/x", 1, timestamp=NOW + 3)
    d = short.check(chain, later, now=NOW + 3)
    assert d.allowed
    d.held.commit()
    # A gate with a longer window joins, in another process, and sees the old invocation
    # within its skew: a replay, whatever was forgotten.
    long = impl.Gate([issuer.public_key], skew=5, replay_window=10, ledger=impl.Ledger.open(store_url))
    assert long.precheck(chain, inv, now=NOW + 3) == impl.Code.REPLAY
    assert long.check(chain, inv, now=NOW + 3).code == impl.Code.REPLAY
    # Fresh requests are decided on their merits, and the longer window takes hold.
    d = long.check(chain, chain.invoke(holder, "call", "api/x", 1, timestamp=NOW + 2), now=NOW + 3)
    assert d.code == impl.Code.OK
    d.held.commit()
    for g in (short, long):
        g.ledger.close()
