"""The hot path compiled (anonproxy/native.py, setup.py): it runs compiled where the build had a
C compiler, interpreted when its sources changed since or ANONPROXY_PURE=1 asks, all or none;
and the interpreted path passes the layers' own tests too (so the fallback is the same program).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import c_build_possible

from anonproxy import native

ROOT = Path(__file__).resolve().parent.parent

# The tests of the compiled modules' own behaviour, and one end to end over plain HTTP, run again
# with the sources (a compiled module checks its annotations; the sources do not, and both must
# give the same answers).
PURE_PASS = ["test_address.py", "test_headers.py", "test_http1.py", "test_response_block.py",
             "test_response_relay.py", "test_compat.py", "test_batch.py", "test_deadline.py",
             "test_reads.py", "test_cache_fresh.py", "test_cache_partition.py",
             "test_cache_store.py",
             "test_proxy_http.py"]

_REPORT = ("import anonproxy.native as n, importlib\n"
           "files = [importlib.import_module(m).__file__ for m in n.MODULES]\n"
           "print(n.COMPILED, '|', n.WHY_NOT, '|', ' '.join(files))\n")


def _report(env: dict[str, str], cwd: Path, path: Path | None = None) -> tuple[bool, str, list]:
    """COMPILED, WHY_NOT and the modules' files, as a fresh interpreter sees them."""
    env = {**os.environ, **env}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    out = subprocess.run([sys.executable, "-c", _REPORT], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    compiled, why, files = (part.strip() for part in out.stdout.split("|"))
    return compiled == "True", why, files.split()


def _compiled_file(name: str) -> bool:
    return name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


needs_build = pytest.mark.skipif(not native.COMPILED,
                                 reason=f"the hot path is {native.describe()}")


def test_the_hot_path_runs_compiled_where_the_build_had_a_compiler():
    if not c_build_possible():
        pytest.skip("no C compiler or Python headers here: the build is pure Python")
    assert native.COMPILED, (
        f"hot path {native.describe()}: scripts/test rebuilds it (or pip install -e .)")
    for name in native.MODULES:
        assert _compiled_file(importlib.import_module(name).__file__ or ""), name


def test_anonproxy_pure_runs_every_module_from_its_source():
    compiled, why, files = _report({native.PURE_ENV: "1"}, cwd=ROOT)
    assert not compiled and why == f"{native.PURE_ENV} is set"
    assert files and all(f.endswith(".py") for f in files)


@needs_build
def test_a_source_edited_since_the_build_makes_all_of_them_interpreted(tmp_path):
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "anonproxy", copy / "anonproxy")
    for lib in ROOT.glob("anonproxy__mypyc*"):  # the compiled modules' shared library
        shutil.copy(lib, copy)
    compiled, _, files = _report({native.PURE_ENV: ""}, cwd=tmp_path, path=copy)
    assert compiled and all(_compiled_file(f) for f in files)

    edited = copy / "anonproxy" / "wire" / "headers.py"
    edited.write_text(edited.read_text() + "\n# edited\n")
    compiled, why, files = _report({native.PURE_ENV: ""}, cwd=tmp_path, path=copy)
    assert not compiled and why == "headers.py changed since it was compiled"
    assert all(f.endswith(".py") for f in files)  # all of them, not only the edited one

    (copy / "anonproxy" / native.MANIFEST).unlink()
    compiled, why, _ = _report({native.PURE_ENV: ""}, cwd=tmp_path, path=copy)
    assert not compiled and why.startswith("not compiled")


@pytest.mark.slow
def test_the_layers_pass_their_tests_interpreted_too():
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
         *(f"tests/{name}" for name in PURE_PASS)],
        env={**os.environ, native.PURE_ENV: "1"}, cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 0, out.stdout[-4000:]
    assert " passed" in out.stdout.splitlines()[-1]
