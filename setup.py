"""The build's one step beyond pyproject.toml: the hot path's pure modules compiled with mypyc.

Which modules, and how the package chooses between them and their sources at run time:
anonproxy/native.py. Compiled only where it can be: without a C compiler or Python's headers
(or with ANONPROXY_PURE=1 set), the package installs as pure Python, which is the same program,
slower (docs/benchmarks.md says by how much), and says so in `serve`'s startup line. A build
that fails part-way leaves nothing compiled behind: the compiled modules call each other
directly, so it is all of them or none.
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
import sys
import zlib
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _modules() -> tuple[str, ...]:
    """MODULES of anonproxy/native.py, read without importing the package."""
    tree = ast.parse((HERE / "anonproxy" / "native.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MODULES":
            return tuple(ast.literal_eval(node.value))
    raise SystemExit("setup.py: anonproxy/native.py has no MODULES")


MODULES = _modules()


def _source(module: str) -> Path:
    return HERE.joinpath(*module.split(".")).with_suffix(".py")


def _digest(source: bytes) -> str:
    """As anonproxy/native.py's digest (read there at run time, without importing setup.py)."""
    return f"{zlib.crc32(source):08x} {len(source)}"


def _say(message: str) -> None:
    print(f"anonproxy build: {message}", file=sys.stderr)


# The commands that build (pip runs setup.py for metadata first, twice: mypyc's type check and
# C generation take half a minute, for nothing there).
_BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


def _extensions() -> list:
    if not _BUILDING & set(sys.argv[1:]):
        return []
    if os.environ.get("ANONPROXY_PURE", "") not in ("", "0"):
        _say("ANONPROXY_PURE is set: pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed: pure Python")
        return []
    try:
        # The build environment has mypyc and httptools, not the package's other dependencies
        # (cryptography, aiohttp, ...), which the compiled modules reach through their imports:
        # their types are Any to mypyc, as they are to compiled code anyway. (A type: ignore
        # that only those types made necessary is then unused: not an error here.)
        return mypycify(["--ignore-missing-imports", "--no-warn-unused-ignores",
                         *(str(_source(m).relative_to(HERE)) for m in MODULES)],
                        opt_level="3", group_name="anonproxy")
    except (Exception, SystemExit) as error:  # noqa: BLE001 - any failure means: pure Python
        _say(f"mypyc could not compile the hot path ({error}): pure Python")
        return []


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python instead of failing the install, and records
    the sources it compiled (anonproxy/native.txt) where the compiled modules go."""

    def run(self) -> None:
        in_place = self.inplace or getattr(self, "editable_mode", False)
        if in_place:
            self._remove_stale()
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - no compiler, no headers, ...: pure Python
            _say(f"could not compile the hot path ({type(error).__name__}: no C compiler or "
                 "Python headers, or they failed); installing pure Python (Debian: apt install "
                 "gcc python3-dev, then install again)")
            self._remove_outputs(in_place)
            return
        manifest = "".join(f"{m} {_digest(_source(m).read_bytes())}\n" for m in MODULES)
        targets = [Path(self.build_lib) / "anonproxy"]
        if in_place:
            targets.append(HERE / "anonproxy")
        for target in targets:
            target.mkdir(parents=True, exist_ok=True)
            (target / "native.txt").write_text(manifest)

    def _remove_stale(self) -> None:
        """An in-place build's compiled module that is no longer in MODULES would be imported
        instead of its source, and fail: gone before building."""
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        for path in (HERE / "anonproxy").rglob("*.so"):
            name = path.name
            stem = next((name[:-len(s)] for s in suffixes if name.endswith(s)), None)
            module = ".".join((*path.parent.relative_to(HERE).parts, stem or ""))
            if stem is not None and module not in MODULES:
                path.unlink()

    def _remove_outputs(self, in_place: bool) -> None:
        """Nothing compiled stays behind (in the checkout too, when building there): a part of
        the group would fail at import."""
        bases = [Path(self.build_lib), HERE] if in_place else [Path(self.build_lib)]
        for base in bases:
            for ext in self.extensions:
                (base / self.get_ext_filename(self.get_ext_fullname(ext.name))).unlink(
                    missing_ok=True)
            (base / "anonproxy" / "native.txt").unlink(missing_ok=True)

    def get_outputs(self) -> list[str]:
        outputs = super().get_outputs()
        return [o for o in outputs if Path(o).exists()] if self.extensions else outputs


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
