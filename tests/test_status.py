"""status, reload and newnym for a serve without a dashboard: the same API on a unix socket in
the runtime directory (0600, removed when serve stops), and what status shows: exits with
their traffic, rules with their hits, recent connections, reverse entries with their backends
(one up, one down, and why). The real `anonproxy serve` and CLI as processes; curl as the
client; a real backend (an HTTP server in a thread) behind the reverse entry."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from helpers import answer, curl, serving, wait_until
from pki import PublicRoot
from upstreams import free_port

from anonproxy.cli.remote import reverse_lines

ROOT = Path(__file__).resolve().parents[1]


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def test_status_reload_and_newnym_work_without_a_dashboard(tmp_path, origin):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(run)}
    profile = tmp_path / "p.toml"
    profile.write_text('default = "d"\n[exits.d]\n[[rules]]\ndomains = ["ads.example"]\n'
                       'exit = "block"\n')
    serve = subprocess.Popen([sys.executable, "-m", "anonproxy", "serve", "--profile",
                              str(profile), "--listen", "127.0.0.1:0"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert serve.stdout is not None
        listen = serve.stdout.readline().decode().split()[-1]
        socket_path = next(run.rglob("*.sock"))
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        assert curl("-x", f"http://{listen}", origin.url("/echo")).returncode == 0
        assert b"403" in curl("-x", f"http://{listen}", "http://ads.example/", "-i").stdout

        status = _cli(env, "status", "--listen", listen)
        assert status.returncode == 0, status.stderr
        out = status.stdout
        assert f"listening    {listen}    no dashboard" in out
        assert "exit d " in out and "1 conns" in out
        assert 'rule 1       domains = ["ads.example"] -> exit "block"  (1 hits)' in out, out
        assert 'default      -> exit "d"  (1 hits)' in out, out
        assert f"127.0.0.1:{origin.port} exit=d status=200" in out, out
        assert "ads.example:80 exit=- status=403" in out or "ads.example:80 exit=block" in out, out

        reload = _cli(env, "reload", "--listen", listen)
        assert reload.returncode == 0 and "reloaded profile" in reload.stdout, reload
        newnym = _cli(env, "newnym", "--listen", listen)
        assert newnym.returncode == 1 and "has no Tor exit" in newnym.stderr, newnym
        board = _cli(env, "dashboard", "--print", "--listen", listen)
        assert board.returncode == 1 and "has no dashboard" in board.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=30)
    wait_until(lambda: not list(run.rglob("*.sock")), 5)
    assert not list(run.rglob("*.sock")) and not list(run.rglob("*.token"))
    gone = _cli(env, "status", "--listen", listen)
    assert gone.returncode == 1 and "no proxy of yours is running" in gone.stderr


class _App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        answer(self, b"the app")

    def log_message(self, *args) -> None:
        pass


def test_status_lists_each_reverse_entry_and_which_backend_is_down(start_proxy_process,
                                                                   tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))  # (serve's, and the CLI's below)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    root = PublicRoot(tmp_path)
    cert, key = root.issue("127.0.0.1")
    dead = f"127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    with serving(_App) as backend:
        alive = f"127.0.0.1:{backend.server_address[1]}"
        proxy = start_proxy_process(
            'default = "direct"\n[exits.direct]\n[health]\ninterval = 1\nfall = 1\nrise = 1\n'
            f'[[reverse]]\nlisten = "127.0.0.1:0"\nbackends = ["http://{alive}", "http://{dead}"]\n'
            f'tls = {{ cert = "{cert}", key = "{key}" }}\n')
        said = proxy.process.stdout.readline()  # (after the forward proxy's listening line)
        assert said.startswith("anonproxy reverse entry on ") and said.endswith(" (TLS)\n"), said
        listen = said.split()[4]
        for _ in range(4):
            done = curl("-sS", "--cacert", str(root.path), f"https://{listen}/x")
            assert done.returncode == 0 and done.stdout == b"the app", done.stderr

        def status_once_down() -> str:  # ("" until the probes have marked `dead` down)
            done = _cli(env, "status", "--listen", f"{proxy.host}:{proxy.port}")
            assert done.returncode == 0, done.stderr
            return done.stdout if f"{dead} down" in done.stdout else ""

        out = wait_until(status_once_down)
        assert out, _cli(env, "status", "--listen", f"{proxy.host}:{proxy.port}").stdout
    entry = re.search(r"^reverse {6}(.*)$", out, re.MULTILINE)
    assert entry is not None, out
    assert re.fullmatch(rf"{listen} \(TLS\) round-robin, \d+ connections?", entry[1]), entry[1]
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("backend ")}
    assert list(lines) == [alive, dead]  # in the profile's order, after their entry
    assert re.fullmatch(rf"backend {{8}}{alive} up, 4 requests, 0 failures, 0 in flight, "
                        r"0 B up, \d+ B down", lines[alive]), lines[alive]
    assert re.fullmatch(rf"backend {{8}}{dead} down \d+ s \(connection refused\), 0 requests, "
                        r"\d+ failures?, 0 in flight, 0 B up, 0 B down", lines[dead]), lines[dead]
    assert out.index("reverse      ") < out.index(f"backend        {alive}")


def test_status_lines_of_a_reverse_entry_with_every_mark():
    """What the API says of an entry (reverse/entry.py, ReverseEntry.status), in status lines:
    its marks, hosts and .onion address; a backend down for how long and why."""
    entry = {"listen": "127.0.0.1:8443", "strategy": "failover", "hosts": ["app.example"],
             "tls": True, "auth": True, "forwarded": True, "connections": 1,
             "cache": {"entries": 0}, "onion": "abc.onion", "backends": [
                 {"backend": "127.0.0.1:9001", "up": True, "requests": 1, "failures": 0,
                  "in_flight": 1, "up_bytes": 10, "down_bytes": 2000, "last_error": None},
                 {"backend": "127.0.0.1:9002", "up": False, "since": 986.0,
                  "last_error": "no answer within 5 s", "requests": 12, "failures": 3,
                  "in_flight": 0, "up_bytes": 0, "down_bytes": 0}]}
    assert reverse_lines([entry], now=1000.0) == [
        ("reverse      127.0.0.1:8443 (TLS, auth, cache, forwarded) failover for app.example, "
         "1 connection; onion abc.onion"),
        ("backend        127.0.0.1:9001 up, 1 request, 0 failures, 1 in flight, 10 B up, "
         "2000 B down"),
        ("backend        127.0.0.1:9002 down 14 s (no answer within 5 s), 12 requests, "
         "3 failures, 0 in flight, 0 B up, 0 B down")]
    assert reverse_lines([], now=1000.0) == []
