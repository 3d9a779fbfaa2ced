"""Fixtures shared by the tests: both implementations, deterministic keys."""

from __future__ import annotations

import json
import pathlib
from types import ModuleType
from typing import Any

import pytest

import hopgate
import hopgate.reference

# Known-answer vectors, each file naming its source (tests/vectors/).
VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"


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
    cases: list[dict[str, str]] = json.loads((VECTORS / "speccheck_cases.json").read_text())["cases"]
    return cases
