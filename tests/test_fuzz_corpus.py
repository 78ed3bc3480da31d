"""The fuzz corpus (tests/fuzz-corpus/TARGET/*) replayed through scripts/fuzz's own target
functions, so every test run checks the fuzzer's invariants on the inputs it found worth keeping
(and the fuzz harness itself keeps working)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz-corpus"


def _load_fuzz_script():
    loader = importlib.machinery.SourceFileLoader("anonproxy_fuzz", str(ROOT / "scripts" / "fuzz"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


FUZZ = _load_fuzz_script()
INPUTS = sorted(p for p in CORPUS.glob("*/*") if p.is_file())


def test_the_corpus_covers_both_targets():
    assert {p.parent.name for p in INPUTS} == set(FUZZ.TARGETS)


@pytest.mark.parametrize("path", INPUTS, ids=[f"{p.parent.name}/{p.name}" for p in INPUTS])
def test_corpus_input_holds_the_fuzz_invariants(path):
    FUZZ.TARGETS[path.parent.name](path.read_bytes())


@pytest.mark.parametrize("target, data", [
    ("http1", b"\x00GET http://a/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),  # unfinished body
    ("socks5", b"\x00\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50"),  # empty hostname: refused
])
def test_targets_accept_what_is_merely_incomplete_or_refused(target, data):
    FUZZ.TARGETS[target](data)
