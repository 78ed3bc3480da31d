"""Every command, given broken input, answers in one sentence with its exit status: never a
traceback. Each case runs the real command line in a process of its own, with a runtime
directory of its own, and nothing running unless the case says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BROKEN_TOML = 'listen = "127.0.0.1:8118"\n[exits.direct\n'
BAD_KEY = '[exits.direct]\nsourze = "1.2.3.4"\n'
BINARY = b"\x00\xff\xfe garbage \x80\x81"


def _files(tmp: Path) -> dict[str, str]:
    (tmp / "broken.toml").write_text(BROKEN_TOML)
    (tmp / "badkey.toml").write_text(BAD_KEY)
    (tmp / "binary.toml").write_bytes(BINARY)
    (tmp / "dir.toml").mkdir(exist_ok=True)
    (tmp / "notdb.mmdb").write_text("not a database")
    (tmp / "nogeo.toml").write_text('geoip = "none"\n')
    return {"tmp": str(tmp)}


# (arguments, expected exit status, words the one sentence must contain)
CASES = [
    (["serve", "--profile", "{tmp}/nope.toml"], 2, "nope.toml"),
    (["serve", "--profile", "{tmp}/broken.toml"], 2, "broken.toml"),
    (["serve", "--profile", "{tmp}/binary.toml"], 2, "binary.toml"),
    (["serve", "--profile", "{tmp}/dir.toml"], 2, "dir.toml"),
    (["serve", "--profile", "direct", "--listen", "nonsense"], 2, "nonsense"),
    (["serve", "--profile", "direct", "--listen", "127.0.0.1:99999"], 2, "99999"),
    (["serve", "--profile", "direct", "--listen", "0.0.0.0:0"], 2, "allow"),
    (["serve", "--profile", "direct", "--workers", "0"], 2, "workers"),
    (["serve", "--profile", "direct", "--admin", "bogus"], 2, "bogus"),
    (["check", "{tmp}/nope.toml"], 2, "nope.toml"),
    (["check", "{tmp}/broken.toml"], 2, "broken.toml"),
    (["check", "{tmp}/badkey.toml"], 2, "exits.direct.sourze: unknown key"),
    (["check", "{tmp}/binary.toml"], 2, "binary.toml"),
    (["check", "{tmp}/dir.toml"], 2, "dir.toml"),
    (["route", "--profile", "direct", "http://[bad"], 2, "[bad"),
    (["route", "--profile", "direct", "ftp://example.org/"], 2, "http"),
    (["route", "--profile", "direct", "http://abc.onion/"], 3, "onion"),
    (["route", "--profile", "direct", "http://a.local/"], 3, "a.local"),
    (["route", "--profile", "{tmp}/broken.toml", "http://example.org/"], 2, "broken.toml"),
    (["geoip", "lookup", "not-an-ip"], 2, "not-an-ip"),
    (["geoip", "lookup"], 2, "address"),
    (["geoip", "info", "--db", "{tmp}/nope.mmdb"], 2, "nope.mmdb"),
    (["geoip", "info", "--db", "{tmp}/notdb.mmdb"], 2, "notdb.mmdb"),
    (["fetch", "not a url", "--profile", "direct"], 2, "not a url"),
    (["fetch", "http://127.0.0.1:1/", "--profile", "direct"], 5, "refused"),
    (["fetch", "http://127.0.0.1:1/", "--profile", "direct", "--exit", "nosuch"], 2, "nosuch"),
    (["fetch", "http://127.0.0.1:1/", "--profile", "direct", "-d", "@{tmp}/nope"], 2, "nope"),
    (["fetch", "http://127.0.0.1:1/", "--profile", "direct", "-H", "no colon"], 2, "no colon"),
    (["fetch", "http://127.0.0.1:1/", "--profile", "direct", "--max-time", "-1"], 2,
     "argument --max-time: '-1': give a number of seconds above 0"),
    (["fetch", "http://abc.onion/", "--profile", "direct"], 3, "onion"),
    (["fetch", "http://x/", "--profile", "{tmp}/badkey.toml"], 2, "sourze"),
    (["leaktest", "--profile", "{tmp}/broken.toml"], 2, "broken.toml"),
    (["leaktest", "--profile", "{tmp}/nogeo.toml"], 2,
     'geoip = "none", but leaktest looks up the countries'),
    (["leaktest", "--profile", "direct", "--exit", "nosuch"], 2, "--exit nosuch"),
    (["leaktest", "--profile", "direct", "--echo", "ftp://x/"], 2, "--echo ftp://x/"),
    (["leaktest", "--profile", "direct", "--echo", "http://127.0.0.1:1/"], 1,
     "1 of 1 exits inconsistent: direct (FAILED)"),
    (["leaktest", "--profile", "direct", "--json", "--echo", "http://[bad/"], 2, "[bad"),
    (["exec", "--profile", "direct"], 2, "command"),
    (["exec", "--profile", "{tmp}/broken.toml", "--", "true"], 2, "broken.toml"),
    (["exec", "--profile", "direct", "--", "{tmp}/no-such-program"], 127, "no-such-program"),
    (["pac", "--listen", "bad"], 2, "argument --listen: 'bad'"),
    (["status", "--listen", "127.0.0.1:1"], 1, "127.0.0.1:1"),
    (["reload", "--listen", "127.0.0.1:1"], 1, "127.0.0.1:1"),
    (["newnym", "--listen", "127.0.0.1:1"], 1, "127.0.0.1:1"),
    (["dashboard", "--print", "--listen", "127.0.0.1:1"], 1, "127.0.0.1:1"),
    (["status", "--listen", "nonsense"], 2, "argument --listen: 'nonsense'"),
    (["reload", "--admin", "nonsense:x"], 2, "argument --admin: 'nonsense:x'"),
    (["no-such-command"], 2, "invalid choice"),
]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(tmp / "home"),
               XDG_RUNTIME_DIR=str(tmp / "run"), XDG_CACHE_HOME=str(tmp / "cache"),
               XDG_CONFIG_HOME=str(tmp / "config"), XDG_DATA_HOME=str(tmp / "data"))
    env.pop("ANONPROXY_DEBUG", None)
    for key in ("HOME", "XDG_RUNTIME_DIR"):
        Path(env[key]).mkdir(mode=0o700, exist_ok=True)
    return env


@pytest.mark.parametrize("args, status, words", CASES,
                         ids=[" ".join(c[0])[:60] for c in CASES])
def test_no_traceback_reaches_a_user(tmp_path, args, status, words):
    names = _files(tmp_path)
    argv = [a.format(**names) for a in args]
    done = subprocess.run([sys.executable, "-m", "anonproxy", *argv], capture_output=True,
                          env=_env(tmp_path), timeout=60, check=False, stdin=subprocess.DEVNULL)
    out = (done.stdout + done.stderr).decode(errors="replace")
    assert "Traceback" not in out, out
    assert done.returncode == status, out
    assert words.format(**names) in done.stderr.decode(errors="replace"), out
    assert done.stderr.strip(), "an error says something"
    said = [line for line in done.stderr.decode().strip().splitlines()
            if not line.startswith(("usage:", " "))]  # (argparse's usage lines come first)
    assert len(said) <= 3, out


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`anonproxy schema | head -1`: the reader goes away; no BrokenPipe traceback."""
    done = subprocess.run(f"'{sys.executable}' -m anonproxy schema | head -c 1", shell=True,
                          capture_output=True, env=_env(tmp_path), timeout=60, check=False,
                          executable="/bin/bash")
    assert done.stdout == b"{"
    assert done.stderr == b"", done.stderr.decode()
    piped = subprocess.run(f"set -o pipefail; '{sys.executable}' -m anonproxy schema | true",
                           shell=True, capture_output=True, env=_env(tmp_path), timeout=60,
                           check=False, executable="/bin/bash")
    assert b"Traceback" not in piped.stderr and piped.returncode in (0, 141), piped.stderr
