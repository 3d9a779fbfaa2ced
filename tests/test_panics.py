"""No panic crosses into Python as a crash: a panic anywhere in the native core
(the calling thread, a GIL-released section, a rayon worker, inside a lock)
becomes `hopgate.InternalError`, and what it leaves behind still works.

Panics are injected with `_native._inject_panic(site)`, which exists only in
builds with the `test-hooks` feature (`make build`, the test build; wheels never
have it; `rust/core/src/fault.rs` lists the sites).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import hopgate
from hopgate import Code

from craft import NOW, invocation

native: Any = pytest.importorskip("hopgate._native")
if not hasattr(native, "_inject_panic"):
    pytest.skip("built without the test-hooks feature (a wheel)", allow_module_level=True)

ISSUER, A = (hopgate.SigningKey.from_seed(bytes([i + 60]) * 32) for i in range(2))


def chain() -> Any:
    return hopgate.Chain.grant(ISSUER, A.public_key, [("pay/*", "refund")], 100, "usd",
                               NOW - 100, NOW + 3600, 2)


def inv(c: Any, cost: int = 5) -> bytes:
    return invocation(A, c.tail_signature, "refund", "pay/x", cost, NOW, random.randbytes(16), bytes(32))


@pytest.fixture(autouse=True)
def disarm() -> Iterator[None]:
    yield
    native._inject_panic(None)


def test_internal_error_is_an_ordinary_exception() -> None:
    assert issubclass(hopgate.InternalError, hopgate.HopgateError)
    assert issubclass(hopgate.InternalError, Exception)
    assert hopgate.reference.InternalError is hopgate.InternalError


def raises_internal(site: str, call: Callable[[], object]) -> None:
    native._inject_panic(site)
    with pytest.raises(hopgate.InternalError, match=f"injected panic at {site}"):
        call()


MSGS = [b"message %d" % i for i in range(256)]
SIGS = [A.sign(m) for m in MSGS]


@pytest.mark.parametrize("n", [1, 256], ids=["calling-thread", "rayon-worker"])
def test_panic_in_signature_verification(n: int) -> None:
    raises_internal("verify", lambda: hopgate.verify_batch(MSGS[:n], SIGS[:n], [A.public_key] * n))
    assert hopgate.verify_batch(MSGS[:n], SIGS[:n], [A.public_key] * n).all()


@pytest.mark.parametrize("n", [1, 100_000], ids=["gil-held", "gil-released-rayon"])
def test_panic_in_hashing(n: int) -> None:
    data = np.zeros(n * 64, dtype=np.uint8)
    offsets = np.arange(0, n * 64 + 1, 64, dtype=np.int64)
    raises_internal("hash", lambda: hopgate.blake3_many(data, offsets))
    assert hopgate.blake3_many(data, offsets).shape == (n, 32)


def test_panic_in_parsing() -> None:
    c = chain()
    raises_internal("parse", lambda: hopgate.Chain.from_bytes(bytes(c)))
    raises_internal("parse", lambda: hopgate.verify_chains([bytes(c)], [ISSUER.public_key], now=NOW))
    assert list(hopgate.verify_chains([bytes(c)], [ISSUER.public_key], now=NOW)) == [Code.OK]


def test_panic_inside_the_ledger_lock_leaves_it_consistent() -> None:
    """The panic poisons the account lock; the ledger takes it over, unchanged."""
    ledger = hopgate.Ledger()
    budget = ledger.budget([(b"\x07" * 32, 10)])
    budget.reserve(4).commit()
    raises_internal("reserve", lambda: budget.reserve(3))
    assert ledger.account(b"\x07" * 32) == (10, 4, 0, 0)
    r = budget.reserve(6)
    assert budget.remaining() == 0
    r.release()
    assert budget.remaining() == 6


def test_panic_in_a_gate_batch_releases_its_reservations() -> None:
    g = hopgate.Gate([ISSUER.public_key])
    c = chain()
    invs = [inv(c) for _ in range(8)]
    raises_internal("gate", lambda: g.check_batch([c] * 8, invs, now=NOW))
    # The batch was decided and reserved before the panic; no caller ever held
    # those reservations, so they were released, not forfeited.
    (account,) = g.ledger.accounts().values()
    assert (account.spent, account.reserved) == (0, 0)
    # The gate still works; the panicked batch's nonces stay consumed (refusing is
    # the safe side), fresh ones pass.
    assert g.check(c, invs[0], now=NOW).code is Code.REPLAY
    d = g.check(c, inv(c), now=NOW)
    assert d.code is Code.OK and d.reservation is not None
    d.reservation.commit()
    assert g.ledger.accounts()[next(iter(g.ledger.accounts()))].spent == 5


def test_unarmed_sites_do_nothing() -> None:
    native._inject_panic("no such site")
    c = chain()
    g = hopgate.Gate([ISSUER.public_key])
    d = g.check(c, inv(c), now=NOW)
    assert d.code is Code.OK and d.reservation is not None
    d.reservation.release()
