"""The Python examples of README.md and docs/GUIDE.md pass ``mypy --strict``, as written.

Each README block is a program of its own, so each is checked as a module of its own;
the guide's blocks run in one namespace (tests/test_docs.py), so they are checked as one
module, concatenated in order. Errors are reported at their line in the Markdown file.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

pytest.importorskip("mypy")

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
MESSAGE = re.compile(r"^(?P<module>[\w.]+\.py):(?P<line>\d+): (?P<rest>.*)$")

#: Where each line of a generated module comes from: (Markdown file, line in it).
Origins = list[tuple[str, int]]


def python_blocks(name: str) -> list[tuple[int, str]]:
    """The ```python blocks of ``name`` (relative to the root), with the line of the
    Markdown file where each block's code starts."""
    text = (ROOT / name).read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def modules() -> dict[str, tuple[str, Origins]]:
    """module file name -> (its source, the origin of each of its lines)."""
    out: dict[str, tuple[str, Origins]] = {}
    readme = python_blocks("README.md")
    assert readme, "README.md has no python example"
    for i, (start, code) in enumerate(readme):
        lines = code.splitlines()
        out[f"readme_block_{i + 1}.py"] = (code, [("README.md", start + k) for k in range(len(lines))])
    guide = python_blocks("docs/GUIDE.md")
    assert len(guide) >= 10
    source: list[str] = []
    origins: Origins = []
    for start, code in guide:
        lines = code.splitlines()
        source += lines
        origins += [("docs/GUIDE.md", start + k) for k in range(len(lines))]
    out["guide_blocks.py"] = ("\n".join(source) + "\n", origins)
    return out


def test_readme_and_guide_examples_pass_mypy_strict(tmp_path: pathlib.Path) -> None:
    found = modules()
    for name, (source, _) in found.items():
        (tmp_path / name).write_text(source)
    # The project's settings (python_version and the rest) with --strict on top; the
    # file list replaces the configured one.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(ROOT / ".mypy_cache"), "--no-pretty", "--show-error-codes", *sorted(found)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    report = []
    for line in result.stdout.splitlines():
        m = MESSAGE.match(line)
        if m and m["module"] in found:
            origins = found[m["module"]][1]
            index = int(m["line"]) - 1
            where = "%s:%d" % origins[index] if 0 <= index < len(origins) else m["module"]
            report.append(f"{where}: {m['rest']}")
        else:
            report.append(line)
    assert result.returncode == 0, "mypy --strict on the documentation's examples:\n" + "\n".join(
        report + [result.stderr])
    assert result.stdout.startswith("Success"), result.stdout
