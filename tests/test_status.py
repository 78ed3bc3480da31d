"""status, reload and newnym for a serve without a dashboard: the same API on a unix socket in
the runtime directory (0600, removed when serve stops), and what status shows: exits with
their traffic, rules with their hits, recent connections. The real `anonproxy serve` and CLI
as processes; curl as the client."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from helpers import curl, wait_until

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
