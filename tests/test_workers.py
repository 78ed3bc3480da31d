"""`workers = N`: several processes on one port (SO_REUSEPORT), started, reloaded and stopped
as one. Which process holds each connection is read from /proc."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from helpers import curl, recv_until
from probes import socket_inodes

WORKERS = 'workers = 3\ndefault = "direct"\n[exits.direct]\n'


def _workers(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [parent, *map(int, children)]


def _inodes_of_peers(ports: set[int]) -> set[str]:
    """Socket inodes of the proxy's side of connections from the given client ports."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port in ports:
            inodes.add(fields[9])
    return inodes


def test_workers_share_the_port_and_each_carries_connections(start_proxy_process, origin):
    proxy = start_proxy_process(WORKERS)
    pids = _workers(proxy.process.pid)
    assert len(pids) == 3
    tunnels = []
    try:
        for _ in range(30):
            s = proxy.connect()
            s.sendall(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert recv_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 200")
            tunnels.append(s)
        held = _inodes_of_peers({s.getsockname()[1] for s in tunnels})
        carrying = [pid for pid in pids if socket_inodes(pid) & held]
        assert len(carrying) >= 2, "the kernel spread 30 connections over one process only"
        for s in tunnels[:5]:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            assert recv_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        for s in tunnels:
            s.close()


def test_sighup_reloads_every_worker_and_sigterm_stops_them_all(start_proxy_process, origin,
                                                                tmp_path):
    proxy = start_proxy_process(WORKERS)
    pids = _workers(proxy.process.pid)
    path = tmp_path / "test.toml"
    path.write_text(path.read_text() + '[[rules]]\ndomains = ["blocked.example"]\nexit = "block"\n')
    proxy.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while proxy.log().count("reloaded profile test") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.log().count("reloaded profile test") == 3
    for _ in range(20):  # fresh connections: whichever worker takes each, the rule holds
        out = curl("-x", proxy.url, "http://blocked.example/")
        assert b"blocked by rule 1" in out.stdout
    assert proxy.stop() == 0
    for pid in pids[1:]:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    with socket.socket() as s:
        assert s.connect_ex(proxy.address) != 0


def test_workers_refuse_a_managed_tor(tmp_path):
    profile = tmp_path / "tor.toml"
    profile.write_text('default = "tor"\n[exits.tor]\ntor = { control = "managed" }\n')
    out = subprocess.run([sys.executable, "-m", "anonproxy", "serve", "--profile", str(profile),
                          "--workers", "2", "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert re.search(r"--workers 2: a managed tor exit would start one tor per worker", out.stderr)
