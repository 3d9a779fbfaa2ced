"""Fixtures shared by the tests: both implementations, deterministic keys."""

from __future__ import annotations

import json
import os
import pathlib
from types import ModuleType
from typing import Any

import pytest

import hopgate
import hopgate.reference

# ../shared/vectors beside the repository; HOPGATE_VECTORS points elsewhere (a wheel's tests run
# outside the tree). HOPGATE_VECTORS_OPTIONAL=1 turns their absence into a skip: the shared
# vectors are not published with the repository, so GitHub's wheel jobs run without them.
VECTORS = pathlib.Path(
    os.environ.get("HOPGATE_VECTORS") or pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
)


@pytest.fixture(params=["native", "reference"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each test taking `impl` runs once on the native core and once on the reference."""
    return hopgate if request.param == "native" else hopgate.reference


@pytest.fixture(scope="session")
def keys() -> list[Any]:
    """Eight deterministic native keys (their signatures are valid for both implementations)."""
    return [hopgate.SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(8)]


@pytest.fixture(scope="session")
def speccheck() -> list[dict[str, str]]:
    path = VECTORS / "speccheck_cases.json"
    if not path.exists() and os.environ.get("HOPGATE_VECTORS_OPTIONAL") == "1":
        pytest.skip(f"{path} absent and HOPGATE_VECTORS_OPTIONAL=1")
    cases: list[dict[str, str]] = json.loads(path.read_text())
    return cases
