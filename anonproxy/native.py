"""Which modules run compiled, and whether they do: the hot path's pure code, compiled to C.

The modules in MODULES (parsing, the header policy, the response state machine, the write
batch, the stream reads and feeds, the exchange, the client connection, HTTP session and
listener that drive them, the cache's hit path, the connection log and the dashboard's activity
record) are compiled with mypyc when the package is built where a C compiler and Python's
headers are at hand (setup.py); the sources stay beside them and are the same program. Compiled
code checks the types its functions are annotated with, so an annotation here must be true of
every value a caller passes (tests/test_native.py runs the layers' tests both ways). Compiled,
a keep-alive request runs 53% fewer instructions (151,000 against 319,000: docs/benchmarks.md,
"Counted, not timed").

They run compiled only when the build is of exactly these sources: setup.py writes the CRC-32 and
size of each source into MANIFEST beside them, and at the package's first import the sources are
read again (CRC-32, not a cryptographic hash: this catches an edit, not an attacker, who could
replace the compiled files as well; and it keeps `anonproxy fetch`'s start-up free of hashlib,
as of pathlib).
When one differs (a source edited since the build, as in a checkout under work or a mutation
run), when the build is missing or partial, or when ANONPROXY_PURE=1 asks for it, every one of
them is imported from its source instead: all or none, since compiled modules call each other
directly, past the module objects.

Invariant: this module is imported before any module of MODULES (anonproxy/__init__.py).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

# Compiled by setup.py, in this order.
MODULES = (
    "anonproxy.wire.address",
    "anonproxy.wire.messages",
    "anonproxy.wire.render",
    "anonproxy.wire.headers",
    "anonproxy.wire.request_line",
    "anonproxy.wire.response_head",
    "anonproxy.wire.http1",
    "anonproxy.wire.response_relay",
    "anonproxy.policy.cache_partition",
    "anonproxy.cache.store",
    "anonproxy.cache.fresh",
    "anonproxy.transport.batch",
    "anonproxy.transport.reads",
    "anonproxy.transport.deadline",
    "anonproxy.transport.upstream",
    "anonproxy.transport.client_side",
    "anonproxy.transport.exchange",
    "anonproxy.logs",
    "anonproxy.admin.activity",
    "anonproxy.inbound.client",
    "anonproxy.inbound.http_session",
    "anonproxy.inbound.listener",
)
MANIFEST = "native.txt"  # "module crc32 size" per line, written by setup.py beside this file
PURE_ENV = "ANONPROXY_PURE"

ROOT = os.path.dirname(os.path.realpath(__file__))  # the package's folder (no pathlib: see above)
_UNBUILT = "not compiled (no C compiler or Python headers when it was built)"


def source_of(module: str) -> str:
    """The source file of one of MODULES."""
    return os.path.join(ROOT, *module.split(".")[1:]) + ".py"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def digest(source: bytes) -> str:
    """A source's CRC-32 and size, as the manifest records them."""
    return f"{zlib.crc32(source):08x} {len(source)}"


def _built() -> bool:
    """A compiled module sits beside each source (by the interpreter's own suffixes)."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    for module in MODULES:
        stem = source_of(module)[:-3]
        if not any(os.path.exists(stem + suffix) for suffix in suffixes):
            return False
    return True


def _why_pure() -> str:
    """Why the sources must be imported ("" when the compiled modules may be)."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    if not _built():
        return _UNBUILT
    try:
        text = _read(os.path.join(ROOT, MANIFEST)).decode()
    except (OSError, UnicodeDecodeError):
        return _UNBUILT
    recorded = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    for module in MODULES:
        try:
            if recorded.get(module) != digest(_read(source_of(module))):
                return f"{os.path.basename(source_of(module))} changed since it was compiled"
        except OSError:
            return f"{os.path.basename(source_of(module))} is missing"
    return ""


class _SourcesFirst:
    """A finder that imports the modules of MODULES from their sources, not the compiled
    files beside them (which the path finder would take first)."""

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name not in MODULES or not path:
            return None
        loader = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, loader).find_spec(name, target)
            if spec is not None:
                return spec
        return None


def describe() -> str:
    """One line on how the hot path runs."""
    return "compiled (mypyc)" if COMPILED else f"interpreted: {WHY_NOT}"


# Decided once, at the package's first import (anonproxy/__init__.py imports this module before
# anything else of ours): compiled modules when they are exactly these sources built, else the
# sources, put first by a finder.
WHY_NOT = _why_pure()  # why the hot path runs interpreted ("" when it runs compiled)
COMPILED = not WHY_NOT
if not COMPILED and not any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourcesFirst())


if __name__ == "__main__":  # the compiled modules' sources, for scripts/test's rebuild check
    print(" ".join(os.path.relpath(source_of(module)) for module in MODULES))
