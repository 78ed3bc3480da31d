"""The package's layers keep to their contracts ([tool.importlinter] in pyproject.toml): the
pure layers (wire, policy) and the profile format (config) import nothing above them, nothing
below the command line imports it, and the layers import one way only (no cycles). And each
third-party library wrapped in one module is imported by that module only."""

from __future__ import annotations

import ast
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


# A library -> the one module of ours that imports it (its errors translated at that border).
ONE_IMPORTER = {
    "cryptography": "anonproxy/tls/certs.py",
    "stem": "anonproxy/exits/tor_control.py",
    "adblock": "anonproxy/policy/filter_engine.py",
    "hishel": "anonproxy/cache/rfc.py",
}


def _importers(library: str) -> set[str]:
    found = set()
    for path in (ROOT / "anonproxy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                     and node.module else [])
            if any(name.split(".")[0] == library for name in names):
                found.add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("library", sorted(ONE_IMPORTER))
def test_a_wrapped_library_is_imported_by_its_one_module_only(library):
    assert _importers(library) == {ONE_IMPORTER[library]}


def test_a_proxy_without_cache_or_inspection_loads_neither_hishel_nor_cryptography():
    """What only the cache (hishel) and HTTPS inspection (cryptography) need is imported
    where they are used, so `serve` with neither on starts without them (tens of ms)."""
    code = ("import sys, anonproxy.cli.serve, anonproxy.runtime.server; "
            "print(sorted(m for m in ('hishel', 'cryptography') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
