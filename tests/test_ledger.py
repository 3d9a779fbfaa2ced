"""SPEC §5: the affine budget ledger, native and reference."""

from __future__ import annotations

import asyncio
import copy
import gc
import pickle
import threading
import warnings
from types import ModuleType
from typing import Any

import pytest

import hopgate
from hopgate import AffineError, BudgetExhaustedError, Code, DelegationError, OverrunError

ROOT = bytes([1]) * 32


def fanout(impl: ModuleType, cap: int = 100) -> tuple[Any, Any, Any]:
    ledger = impl.Ledger()
    parent = ledger.budget([(ROOT, cap)])
    parent, a = parent.delegate(cap, bytes([2]) * 32)
    parent, b = parent.delegate(cap, bytes([3]) * 32)
    return ledger, a, b


def spend_until_refused(budget: Any, spent: list[int], lock: threading.Lock) -> None:
    while True:
        try:
            r = budget.reserve(1)
        except BudgetExhaustedError:
            return
        r.commit(1)
        with lock:
            spent[0] += 1


@pytest.mark.parametrize("trial", range(30))
def test_fanout_race_threads(impl: ModuleType, trial: int) -> None:
    """Two siblings (cap 100 each) under a parent (cap 100), 16 threads: the parent's
    cap is never exceeded and exactly reached."""
    ledger, a, b = fanout(impl)
    spent, lock = [0], threading.Lock()
    threads = [threading.Thread(target=spend_until_refused, args=((a, b)[i % 2], spent, lock)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spent[0] == 100
    root = ledger.account(ROOT)
    assert (root.spent, root.reserved, root.overrun) == (100, 0, 0)
    children = [ledger.account(bytes([i]) * 32) for i in (2, 3)]
    assert sum(c.spent for c in children if c is not None) == 100


@pytest.mark.parametrize("trial", range(30))
def test_fanout_race_asyncio(impl: ModuleType, trial: int) -> None:
    """1,000 asyncio tasks spending through two siblings, yielding while they hold a
    reservation: no overshoot, and the cap is reached exactly."""
    ledger, a, b = fanout(impl)
    spent = 0

    async def agent(i: int) -> None:
        nonlocal spent
        budget = (a, b)[i % 2]
        try:
            r = budget.reserve(1)
        except BudgetExhaustedError:
            return
        await asyncio.sleep(0)  # work happens while the amount is held
        r.commit(1)
        spent += 1

    async def main() -> None:
        await asyncio.gather(*(agent(i) for i in range(1000)))

    asyncio.run(main())
    assert spent == 100
    assert ledger.account(ROOT).spent == 100


def test_reserve_is_atomic_over_the_path(impl: ModuleType) -> None:
    ledger = impl.Ledger()
    budget = ledger.budget([(ROOT, 100), (bytes([2]) * 32, 40)])
    held = budget.reserve(30)
    with pytest.raises(BudgetExhaustedError) as info:
        budget.reserve(11)
    assert info.value.code is Code.BUDGET_EXHAUSTED
    assert ledger.account(ROOT).reserved == 30  # the refusal changed nothing
    assert budget.remaining() == 10
    held.release()
    assert budget.remaining() == 40 and ledger.account(ROOT) == hopgate.Account(100, 0, 0, 0)


def test_affine_handles(impl: ModuleType) -> None:
    ledger = impl.Ledger()
    budget = ledger.budget([(ROOT, 10)])
    r = budget.reserve(4)
    r.commit(3)
    assert r.settled
    with pytest.raises(AffineError):
        r.commit(3)  # double commit
    with pytest.raises(AffineError):
        r.release()
    r = budget.reserve(1)
    r.release()
    with pytest.raises(AffineError):
        r.commit()  # commit after release
    parent, child = budget.delegate(5)
    with pytest.raises(AffineError):
        budget.reserve(1)  # use after delegation
    with pytest.raises(AffineError):
        budget.delegate(1)
    assert ledger.account(ROOT).spent == 3
    child.reserve(5).commit()
    assert ledger.account(ROOT).spent == 8
    with pytest.raises(BudgetExhaustedError):
        parent.reserve(3)


def test_delegate_refusal_keeps_the_budget(impl: ModuleType) -> None:
    budget = impl.Ledger().budget([(ROOT, 10)])
    with pytest.raises(DelegationError) as info:
        budget.delegate(11)
    assert info.value.code is Code.BUDGET_WIDENED
    assert budget.reserve(10).amount == 10


def test_overrun_is_charged_then_raised(impl: ModuleType) -> None:
    ledger = impl.Ledger()
    budget = ledger.budget([(ROOT, 100), (bytes([2]) * 32, 50)])
    r = budget.reserve(10)
    with pytest.raises(OverrunError) as info:
        r.commit(25)
    assert (info.value.reserved, info.value.actual) == (10, 25)
    assert ledger.account(ROOT) == hopgate.Account(100, 25, 0, 15)
    assert ledger.account(bytes([2]) * 32) == hopgate.Account(50, 25, 0, 15)
    with pytest.raises(AffineError):
        r.commit(1)


def test_unsettled_reservations_are_forfeited(impl: ModuleType) -> None:
    ledger = impl.Ledger()
    budget = ledger.budget([(ROOT, 100)])
    with budget.reserve(7):
        pass  # left the block without commit or release
    assert ledger.account(ROOT).spent == 7
    with pytest.raises(RuntimeError):
        with budget.reserve(5) as r:
            raise RuntimeError("the tool call failed half-way")
    assert r.settled and ledger.account(ROOT).spent == 12
    with budget.reserve(5) as r:
        r.release()
    assert ledger.account(ROOT).spent == 12
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        budget.reserve(9)  # dropped at once
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    assert ledger.account(ROOT) == hopgate.Account(100, 21, 0, 0)


def test_handles_cannot_be_copied_or_pickled(impl: ModuleType) -> None:
    budget = impl.Ledger().budget([(ROOT, 100)])
    r = budget.reserve(1)
    for obj in (budget, r):
        for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError):
                attempt(obj)
    r.release()


def test_racing_settlements_settle_once(impl: ModuleType) -> None:
    ledger = impl.Ledger()
    budget = ledger.budget([(ROOT, 10_000)])
    for _ in range(50):
        r = budget.reserve(2)
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def settle() -> None:
            barrier.wait()
            try:
                r.commit(2)
            except AffineError as e:
                errors.append(e)

        threads = [threading.Thread(target=settle) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 3
    assert ledger.account(ROOT).spent == 100


def test_bad_arguments(impl: ModuleType) -> None:
    ledger = impl.Ledger()
    with pytest.raises(hopgate.InputError):
        ledger.budget([])
    with pytest.raises(hopgate.InputError):
        ledger.budget([(b"short", 1)])
    budget = ledger.budget([(ROOT, 1)])
    for bad in (-1, 2**64):
        with pytest.raises(hopgate.InputError):
            budget.reserve(bad)


def test_budget_from_a_chain(impl: ModuleType) -> None:
    import blake3

    k = [impl.SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(3)]
    c = impl.Chain.grant(k[0], k[1].public_key, [("a", "b")], 100, "usd", 0, 2**40, 2).delegate(k[1], k[2].public_key, budget=30)
    budget = impl.Ledger().budget(c)
    assert budget.path == [(blake3.blake3(l.signature).digest(), l.budget) for l in c.links]
    assert budget.remaining() == 30


def test_a_path_names_each_account_once(impl: ModuleType) -> None:
    ledger = impl.Ledger()
    with pytest.raises(hopgate.InputError):
        ledger.budget([(ROOT, 10), (ROOT, 10)])
    budget = ledger.budget([(ROOT, 10)])
    with pytest.raises(hopgate.InputError):
        budget.delegate(5, ROOT)
    budget.reserve(1).release()  # the refusal left the handle usable
