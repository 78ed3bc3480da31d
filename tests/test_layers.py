"""The package's layers keep to their contracts ([tool.importlinter] in pyproject.toml): the
pure layers (wire, policy) and the profile format (config) import nothing above them, nothing
below the command line imports it, and the layers import one way only (no cycles)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


def test_the_layers_keep_their_import_contracts():
    lint = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable),
                                                        "lint-imports")
    if not os.path.exists(lint):
        pytest.skip("import-linter is not installed (scripts/test installs it)")
    out = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "broken" in out.stdout and "0 broken" in out.stdout  # it did check the contracts
    assert "the layers import downward only" in out.stdout  # ... the one that forbids cycles
