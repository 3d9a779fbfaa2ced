"""Importing hopgate: the fallback to the reference is announced, a failure of both names
both causes, and ``hopgate.__version__`` is the installed version.

The import failures are simulated in a fresh interpreter, by an import hook that refuses
the named modules with an ImportError of its own.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import subprocess
import sys

import pytest

import hopgate

IMPORTER = '''
import json, sys, warnings

class Refuse:
    """Refuses to import the modules named on the command line."""
    def find_spec(self, name, path=None, target=None):
        if name in sys.argv[1:]:
            raise ImportError(f"simulated: {name} cannot be loaded here")
        return None

sys.meta_path.insert(0, Refuse())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        import hopgate
    except ImportError as e:
        print(json.dumps({"error": str(e)}))
        raise SystemExit(0)
print(json.dumps({
    "backend": hopgate.BACKEND,
    "gate": hopgate.Gate.__module__ + "." + hopgate.Gate.__qualname__,
    "warnings": [[w.category.__name__, str(w.message), w.filename] for w in caught
                 if issubclass(w.category, RuntimeWarning)],
}))
'''


def import_hopgate(tmp_path: pathlib.Path, *refused: str) -> tuple[dict[str, object], pathlib.Path]:
    """Imports hopgate in a fresh interpreter with ``refused`` modules unimportable."""
    script = tmp_path / "importer.py"
    script.write_text(IMPORTER)
    result = subprocess.run([sys.executable, str(script), *refused], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return answer, script


def test_native_import_warns_nothing(tmp_path: pathlib.Path) -> None:
    answer, _ = import_hopgate(tmp_path)
    assert answer["backend"] == hopgate.BACKEND == "native"
    assert answer["warnings"] == []


def test_fallback_to_the_reference_warns_and_says_why(tmp_path: pathlib.Path) -> None:
    answer, script = import_hopgate(tmp_path, "hopgate._native")
    assert answer["backend"] == "reference"
    assert str(answer["gate"]).startswith("hopgate.reference")
    warned = answer["warnings"]
    assert isinstance(warned, list) and len(warned) == 1, warned
    category, message, filename = (str(field) for field in warned[0])
    assert category == "RuntimeWarning"
    assert "simulated: hopgate._native cannot be loaded here" in message
    assert "pure-Python reference" in message
    assert filename == str(script)  # reported at the importer's line, not inside hopgate


@pytest.mark.parametrize("missing", ["nacl", "blake3"])
def test_without_native_or_reference_the_error_names_both(tmp_path: pathlib.Path, missing: str) -> None:
    answer, _ = import_hopgate(tmp_path, "hopgate._native", missing)
    message = str(answer["error"])
    assert "simulated: hopgate._native cannot be loaded here" in message
    assert f"simulated: {missing} cannot be loaded here" in message
    assert "pip install 'hopgate[reference]'" in message


def test_version_is_the_installed_distributions() -> None:
    assert hopgate.__version__ == importlib.metadata.version("hopgate")
    assert hopgate.__version__ != "0+unknown"


def test_version_without_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert hopgate._version() == "0+unknown"
