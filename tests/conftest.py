"""Fixtures: a recording origin on loopback, the real `anonproxy serve` as a subprocess, curl.

The whole session runs with XDG_RUNTIME_DIR, XDG_CACHE_HOME, XDG_CONFIG_HOME and XDG_DATA_HOME
pointing into a temporary directory of its own (exported, so every `anonproxy` subprocess gets
them too): nothing a test starts writes into the user's ~/.cache/anonproxy,
~/.local/share/anonproxy or ~/.config/anonproxy, or reads profiles from there. A test that
sets one of them itself (monkeypatch.setenv) gets its own for its duration.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from origin import start_origin
from rawserver import start_raw_server
from tornet import tornet  # noqa: F401  (session fixture: a private Tor network on loopback)

ROOT = Path(__file__).resolve().parent.parent


XDG = {"XDG_RUNTIME_DIR": "run", "XDG_CACHE_HOME": "cache", "XDG_CONFIG_HOME": "config",
       "XDG_DATA_HOME": "data"}
_SESSION_HOME: dict[str, object] = {}


def pytest_configure(config) -> None:
    """A private set of XDG directories for the session (0700, as the user's would be)."""
    base = Path(tempfile.mkdtemp(prefix="anonproxy-tests-"))
    _SESSION_HOME["base"] = base
    _SESSION_HOME["before"] = {name: os.environ.get(name) for name in XDG}
    for name, folder in XDG.items():
        (base / folder).mkdir(mode=0o700)
        os.environ[name] = str(base / folder)


def pytest_unconfigure(config) -> None:
    base = _SESSION_HOME.pop("base", None)
    for name, value in _SESSION_HOME.pop("before", {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


def _serve_origin(host: str):
    origin, server = start_origin(host)
    yield origin
    server.shutdown()
    server.server_close()


@pytest.fixture
def origin():
    yield from _serve_origin("127.0.0.1")


@pytest.fixture
def second_origin():
    """Another recording origin, for pages with subresources from a second site."""
    yield from _serve_origin("127.0.0.1")


@pytest.fixture
def origin6():
    yield from _serve_origin("::1")


@dataclass
class Proxy:
    process: subprocess.Popen
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 5) -> str:
        """The log once it contains `text` (log lines are written just after replies)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return log

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode


def launch(tmp_path: Path, profile_toml: str, name: str = "test",
           listen: str = "127.0.0.1:0") -> Proxy:
    profile = tmp_path / f"{name}.toml"
    profile.write_text(profile_toml)
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "anonproxy", "serve", "--profile", str(profile),
             "--listen", listen],
            stdout=subprocess.PIPE, stderr=log_file, cwd=ROOT, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("anonproxy listening on ") or process.poll() is not None:
            break
    if not line.startswith("anonproxy listening on "):
        process.kill()
        process.wait()
        process.stdout.close()
        raise RuntimeError(f"proxy did not start: {log_path.read_text()}")
    host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
    return Proxy(process, host, int(port), log_path)


DIRECT = """
default = "direct"
[exits.direct]
"""


@pytest.fixture
def start_proxy(tmp_path):
    started: list[Proxy] = []

    def start(profile_toml: str = DIRECT, name: str = "test", listen: str = "127.0.0.1:0") -> Proxy:
        proxy = launch(tmp_path, profile_toml, name, listen)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        if proxy.process.poll() is None:
            proxy.process.kill()
            proxy.process.wait()
        proxy.process.stdout.close()


@pytest.fixture
def proxy(start_proxy) -> Proxy:
    return start_proxy()


@pytest.fixture
def raw():
    """A raw-socket server that answers each path with scripted bytes (tests/rawserver.py)."""
    server = start_raw_server()
    yield server
    server.close()
