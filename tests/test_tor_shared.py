"""One tor per data directory, shared by serve, fetch and exec (a private Tor network on
loopback, tests/tornet.py), and a tor that cannot start or stalls said in one sentence.

What each test checks is read from the processes themselves: which tor processes run on a data
directory (/proc/*/cmdline), whether a keeper runs, and what the commands print."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
NAME = "origin.tor.test"  # resolvable only by the exits (the network's DNS stub)

pytestmark = [pytest.mark.tor, pytest.mark.slow]


def _profile(tmp_path: Path, torrc: Path | str, limits: str = "connect_timeout = 20") -> Path:
    path = tmp_path / "tor.toml"
    path.write_text(f'default = "tor"\n[exits.tor]\ntor = {{ control = "managed", torrc = '
                    f'"{torrc}" }}\n[limits]\n{limits}\n')
    return path


def _env(tmp_path: Path, keep: float = 120) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_RUNTIME_DIR": str(tmp_path / "run"), "ANONPROXY_TOR_KEEP": f"{keep:g}"}


def _anonproxy(tmp_path: Path, *args: str, keep: float = 120, timeout: float = 180):
    (tmp_path / "run").mkdir(mode=0o700, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          env=_env(tmp_path, keep), timeout=timeout, check=False)


def _processes(tmp_path: Path, word: str) -> list[int]:
    """Processes whose command line names both our cache directory and `word`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if str(tmp_path / "cache") in text and word in text:
            found.append(int(entry.name))
    return found


def _tors(tmp_path: Path) -> list[int]:
    return [pid for pid in _processes(tmp_path, "torrc")
            if "tor_keeper" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]


def _until(predicate, timeout: float = 30) -> bool:
    return bool(wait_until(predicate, timeout, interval=0.2))


@pytest.fixture
def stop_keepers(tmp_path):
    yield
    for pid in _processes(tmp_path, "tor_keeper"):
        os.kill(pid, signal.SIGTERM)  # (its tor exits with it)
    assert _until(lambda: not _tors(tmp_path) and not _processes(tmp_path, "tor_keeper"))


def test_fetch_in_a_loop_shares_one_tor(tornet, origin, tmp_path, stop_keepers):
    profile = _profile(tmp_path, tornet.client_torrc)
    url = origin.url("/echo", host=NAME)
    first = _anonproxy(tmp_path, "fetch", "-v", "--profile", str(profile), url)
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    tors = _tors(tmp_path)
    assert len(tors) == 1, tors
    keepers = _processes(tmp_path, "tor_keeper")
    assert len(keepers) == 1  # the first fetch had it started; the keeper outlives the fetch
    for _ in range(2):
        again = _anonproxy(tmp_path, "fetch", "-v", "--profile", str(profile), url)
        assert again.returncode == 0, again.stderr.decode()[-2000:]
        assert b"using the tor already running for these settings" in again.stderr
        assert _tors(tmp_path) == tors  # the same tor process, no second one
    assert _processes(tmp_path, "tor_keeper") == keepers


def test_fetch_uses_the_tor_of_a_running_serve(tornet, origin, tmp_path):
    profile = _profile(tmp_path, tornet.client_torrc)
    (tmp_path / "run").mkdir(mode=0o700)
    serve = subprocess.Popen([sys.executable, "-m", "anonproxy", "serve", "--profile", str(profile),
                              "--listen", "127.0.0.1:0", "--admin", "off"],
                             env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _until(lambda: len(_tors(tmp_path)) == 1, 60)
        tors = _tors(tmp_path)
        fetched = _anonproxy(tmp_path, "fetch", "-v", "--profile", str(profile),
                             origin.url("/echo", host=NAME))
        assert fetched.returncode == 0, fetched.stderr.decode()[-2000:]
        assert f"using the tor already running for these settings (pid {tors[0]})".encode() \
            in fetched.stderr
        assert _tors(tmp_path) == tors and not _processes(tmp_path, "tor_keeper")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=30)
    assert _until(lambda: not _tors(tmp_path))  # serve's tor dies with serve


def test_an_unused_tor_is_stopped_by_its_keeper(tornet, origin, tmp_path):
    profile = _profile(tmp_path, tornet.client_torrc)
    fetched = _anonproxy(tmp_path, "fetch", "--profile", str(profile),
                         origin.url("/echo", host=NAME), keep=3)
    assert fetched.returncode == 0, fetched.stderr.decode()[-2000:]
    assert _until(lambda: not _tors(tmp_path) and not _processes(tmp_path, "tor_keeper"), 60)


def test_a_tor_that_cannot_start_is_one_sentence_with_tors_own_words(tmp_path):
    torrc = tmp_path / "broken.torrc"
    torrc.write_text("NoSuchOptionAtAll 1\n")
    profile = _profile(tmp_path, torrc)
    for command in (["fetch", "--profile", str(profile), "http://example.org/"],
                    ["exec", "--profile", str(profile), "--", "true"]):
        done = _anonproxy(tmp_path, *command, timeout=60)
        err = done.stderr.decode()
        assert done.returncode == 4, err
        assert "could not start" in err and "NoSuchOptionAtAll" in err, err
        assert "Traceback" not in err
    assert _until(lambda: not _tors(tmp_path) and not _processes(tmp_path, "tor_keeper"))


def test_a_stalled_bootstrap_is_said_with_what_tor_last_said(tmp_path):
    """A bridge that refuses every connection: tor stays near 0% and says why; fetch says so
    after 20 s and gives up at --max-time with exit status 4, quoting tor."""
    torrc = tmp_path / "dead-bridge.torrc"
    torrc.write_text("UseBridges 1\nBridge 127.0.0.1:1\n")
    profile = _profile(tmp_path, torrc)
    done = _anonproxy(tmp_path, "fetch", "--max-time", "26", "--profile", str(profile),
                      "http://example.org/", keep=2, timeout=90)
    err = done.stderr.decode()
    assert done.returncode == 4, err
    assert "is still at" in err  # the stall, said while waiting
    assert "was not ready after 26 s: bootstrapped" in err and "tor last said:" in err, err
    assert "Traceback" not in err
    assert _until(lambda: not _tors(tmp_path) and not _processes(tmp_path, "tor_keeper"), 60)
