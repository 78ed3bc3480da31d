"""The code passes its quality gates: ruff with the rule set in [tool.ruff] and mypy with
[tool.mypy] (pyproject.toml), over the package (and, for ruff, the tests). scripts/test installs
both through the `test` extra; a missing tool skips its test rather than passing it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (scripts/test installs it with the test extra)")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)


def test_ruff_finds_nothing():
    out = _run("ruff", "check", "--no-cache", "anonproxy", "tests")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "All checks passed" in out.stdout  # it did check



def test_mypy_finds_nothing():
    out = _run("mypy", "--no-incremental", "--cache-dir", os.devnull, "anonproxy")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Success: no issues found" in out.stdout  # it did check
