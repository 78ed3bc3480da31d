"""Fixtures: a recording origin on loopback, the proxy under test (in this process by default,
as `anonproxy serve` where a test needs a process: tests/proxies.py), curl.

The whole session runs with XDG_RUNTIME_DIR, XDG_CACHE_HOME, XDG_CONFIG_HOME and XDG_DATA_HOME
pointing into a temporary directory of its own (exported, so every `anonproxy` subprocess gets
them too): nothing a test starts writes into the user's ~/.cache/anonproxy,
~/.local/share/anonproxy or ~/.config/anonproxy, or reads profiles from there. A test that
sets one of them itself (monkeypatch.setenv) gets its own for its duration.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from origin import start_origin
from proxies import ROOT, InProcessProxy, Proxy, launch, launch_in_process
from rawserver import start_raw_server
from tornet import tornet  # noqa: F401  (session fixture: a private Tor network on loopback)

__all__ = ["DIRECT", "ROOT", "InProcessProxy", "Proxy", "launch", "launch_in_process"]

XDG = {"XDG_RUNTIME_DIR": "run", "XDG_CACHE_HOME": "cache", "XDG_CONFIG_HOME": "config",
       "XDG_DATA_HOME": "data"}
# a tor that fetch or exec leaves to a keeper stops 10 s after its last use, not 10 minutes:
# nothing of the session outlives it for long (tests of the keeper set their own)
KEEP = {"ANONPROXY_TOR_KEEP": "10"}
_SESSION_HOME: dict[str, object] = {}


def pytest_configure(config) -> None:
    """A private set of XDG directories for the session (0700, as the user's would be)."""
    base = Path(tempfile.mkdtemp(prefix="anonproxy-tests-"))
    _SESSION_HOME["base"] = base
    _SESSION_HOME["before"] = {name: os.environ.get(name) for name in (*XDG, *KEEP)}
    for name, folder in XDG.items():
        (base / folder).mkdir(mode=0o700)
        os.environ[name] = str(base / folder)
    os.environ.update(KEEP)


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


@pytest.fixture(scope="session")
def local_ca() -> str:
    """The file of the proxies' local CA certificate (in the session's XDG_DATA_HOME), which
    a client of an opened HTTPS host trusts."""
    from anonproxy.tls.authority import Authority

    return str(Authority.load_or_create().cert_path)


@pytest.fixture
def second_origin():
    """Another recording origin, for pages with subresources from a second site."""
    yield from _serve_origin("127.0.0.1")


@pytest.fixture
def origin6():
    yield from _serve_origin("::1")


DIRECT = """
default = "direct"
[exits.direct]
"""


@pytest.fixture
def start_proxy(tmp_path):
    """start(profile_toml, name, listen): the real server in this process (tests/proxies.py).
    At teardown each one is stopped as SIGTERM stops `serve`, and the test fails if its loop
    caught an error or a task outlived the server."""
    started: list[InProcessProxy] = []

    def start(profile_toml: str = DIRECT, name: str = "test",
              listen: str = "127.0.0.1:0") -> InProcessProxy:
        proxy = launch_in_process(tmp_path, profile_toml, name, listen)
        started.append(proxy)
        return proxy

    yield start
    problems = []
    for proxy in started:
        proxy.stop()
        problems += proxy.problems
    assert not problems, "\n".join(problems)


@pytest.fixture
def proxy(start_proxy) -> InProcessProxy:
    return start_proxy()


@pytest.fixture
def start_proxy_process(tmp_path):
    """start(profile_toml, name, listen): `anonproxy serve` as a child process, for tests of
    what only a process has (output, signals, workers, pid files, exit status, /proc)."""
    started: list[Proxy] = []

    def start(profile_toml: str = DIRECT, name: str = "test", listen: str = "127.0.0.1:0") -> Proxy:
        proxy = launch(tmp_path, profile_toml, name, listen)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.kill()


@pytest.fixture
def proxy_process(start_proxy_process) -> Proxy:
    return start_proxy_process()


@pytest.fixture
def raw():
    """A raw-socket server that answers each path with scripted bytes (tests/rawserver.py)."""
    server = start_raw_server()
    yield server
    server.close()


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_kind(request, monkeypatch):
    """The in-process proxy on uvloop (as `serve` runs it when installed) or on plain asyncio."""
    if request.param == "asyncio":
        monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` fails: asyncio.run
    return request.param
