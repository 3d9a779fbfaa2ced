"""Opening a durable ledger: several processes creating one new SQLite file at once
all get the ledger (switching a new file to write-ahead logging takes a lock that
SQLite's busy handler does not wait for), and URLs are checked."""

from __future__ import annotations

import multiprocessing
import pathlib
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest

import hopgate
import hopgate.reference as ref

IMPLS = {"native": hopgate, "reference": ref}


def open_at_once(impl_name: str, url: str, barrier: Barrier) -> str:
    impl: Any = IMPLS[impl_name]
    barrier.wait()
    try:
        impl.Ledger.open(url, timeout=30).close()
        return "ok"
    except Exception as e:  # the answer is the test's to judge
        return f"{type(e).__name__}: {e}"


@pytest.mark.parametrize("impl_name", sorted(IMPLS))
def test_processes_open_one_new_file_at_once(impl_name: str, tmp_path: pathlib.Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        for trial in range(10):
            barrier = ctx.Manager().Barrier(4)
            url = f"sqlite:///{tmp_path / f'ledger-{trial}.db'}"
            assert pool.starmap(open_at_once, [(impl_name, url, barrier)] * 4) == ["ok"] * 4, trial


@pytest.mark.parametrize("impl_name", sorted(IMPLS))
@pytest.mark.parametrize("url", ["sqlite://host/x.db", "sqlite:", "sqlite:///tmp/", "mysql://h/x",
                                 "redis+cluster://h:1/2", "redis://h:1/0?replicas=x", ""])
def test_bad_urls_are_input_errors(impl_name: str, url: str) -> None:
    with pytest.raises(hopgate.InputError):
        IMPLS[impl_name].Ledger.open(url)


@pytest.mark.parametrize("impl_name", sorted(IMPLS))
@pytest.mark.parametrize("lease", [0, -1, float("nan"), float("inf")])
def test_lease_must_be_positive_seconds(impl_name: str, lease: float, tmp_path: pathlib.Path) -> None:
    with pytest.raises(hopgate.InputError):
        IMPLS[impl_name].Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", lease=lease)


@pytest.mark.parametrize("impl_name", sorted(IMPLS))
def test_unreachable_redis_is_a_store_error(impl_name: str) -> None:
    with pytest.raises(hopgate.StoreError):
        IMPLS[impl_name].Ledger.open("redis://127.0.0.1:1/0", timeout=0.5)
