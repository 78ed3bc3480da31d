"""The startup summary shows the addresses really bound, not the profile's: after --listen,
--admin and port 0 (a user reading the log must find the proxy where it is)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]


def _serve(tmp_path: Path, *args: str) -> str:
    (tmp_path / "run").mkdir(mode=0o700, exist_ok=True)
    profile = tmp_path / "p.toml"
    profile.write_text('listen = "127.0.0.1:8118"\nadmin = "127.0.0.1:8119"\ndefault = "d"\n'
                       '[exits.d]\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        serve = subprocess.Popen([sys.executable, "-m", "anonproxy", "serve", "--profile",
                                  str(profile), *args], env=env, stdout=subprocess.PIPE,
                                 stderr=err)
        try:
            assert serve.stdout is not None
            first = serve.stdout.readline().decode()  # "anonproxy listening on HOST:PORT"
            assert first.startswith("anonproxy listening on "), first
            wait_until(lambda: "  resolve  " in log.read_text())
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.communicate(timeout=30)
    return first.split()[-1] + "\n" + log.read_text()


def test_the_summary_shows_the_addresses_really_bound(tmp_path):
    out = _serve(tmp_path, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
    bound = out.splitlines()[0]
    listen = re.search(r"  listen   (\S+)", out).group(1)
    admin = re.search(r"  admin    http://(\S+)/", out).group(1)
    assert listen == bound and not listen.endswith(":8118") and not listen.endswith(":0")
    assert not admin.endswith(":8119") and not admin.endswith(":0")


def test_the_summary_has_no_dashboard_line_with_admin_off(tmp_path):
    out = _serve(tmp_path, "--listen", "127.0.0.1:0", "--admin", "off")
    assert "  admin    " not in out and "  listen   127.0.0.1:" in out
