"""Running test code in a fresh interpreter where ``hopgate._native`` cannot be imported,
so that ``hopgate`` stands on its reference (the drop-in modules' differential tests run
their whole corpus there too)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

_PREAMBLE = f"""
import sys, warnings
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "hopgate._native":
            raise ImportError("simulated")
        return None
sys.meta_path.insert(0, Refuse())
warnings.simplefilter("ignore")
sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
import hopgate
assert hopgate.BACKEND == "reference"
"""


def run_on_reference(body: str, timeout: float) -> str:
    """Runs ``body`` after the native module is refused; returns its standard output (the
    test fails with the end of its standard error if it fails)."""
    done = subprocess.run([sys.executable, "-c", _PREAMBLE + body], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
