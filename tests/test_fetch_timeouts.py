"""`anonproxy fetch` honours the profile's timeouts: a silent origin, one that stalls in the
middle of a body, and one that never completes TLS each end the fetch with exit status 5 and one
sentence naming the limit, instead of hanging for as long as the origin stays silent."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = """
default = "direct"
[exits.direct]
[limits]
connect_timeout = 1
response_timeout = 1
idle_timeout = 1
"""


def _fetch(tmp_path: Path, url: str) -> subprocess.CompletedProcess:
    """(The old fetch waited forever here: the process timeout below would fail the test.)"""
    profile = tmp_path / "short.toml"
    profile.write_text(PROFILE)
    return subprocess.run([sys.executable, "-m", "anonproxy", "fetch", "--profile", str(profile),
                           url], capture_output=True, timeout=60, check=False,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_fetch_gives_up_on_a_silent_origin(raw, tmp_path):
    done = _fetch(tmp_path, f"http://127.0.0.1:{raw.port}/silent")
    assert done.returncode == 5, done.stderr
    assert b"never answered within 1 s (limits.response_timeout)" in done.stderr
    assert b"Traceback" not in done.stderr


def test_fetch_gives_up_on_a_body_that_stalls(raw, tmp_path):
    raw.script("stall", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", "keep")
    done = _fetch(tmp_path, f"http://127.0.0.1:{raw.port}/raw/stall")
    assert done.returncode == 5, done.stderr
    assert done.stdout == b"0123456789"  # what came is delivered; the end says it is not all
    assert b"never sent more of the body within 1 s (limits.idle_timeout)" in done.stderr


def test_fetch_gives_up_on_tls_that_never_completes(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never speaks TLS
        done = _fetch(tmp_path, f"https://127.0.0.1:{listener.getsockname()[1]}/")
    assert done.returncode == 5, done.stderr
    assert b"did not complete within 1 s (limits.connect_timeout)" in done.stderr
