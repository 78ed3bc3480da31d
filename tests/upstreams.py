"""Real third-party proxies as exits, each on its own loopback address so the origin can tell
which one carried a request (each also connects out from that address)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, process: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{process.args[0]} is not listening on {host}:{port}")


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        pytest.skip(f"{binary} is not installed (scripts/test installs it)")
    return path


@dataclass
class Upstream:
    kind: str  # socks5 | http
    host: str
    port: int
    process: subprocess.Popen
    auth: str = ""

    @property
    def url(self) -> str:
        return f"{self.kind}://{self.auth}{self.host}:{self.port}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def microsocks(host: str, work: Path, *, user: str | None = None, password: str | None = None,
               hosts_file: Path | None = None) -> Upstream:
    """microsocks on `host`, connecting out from `host`. `hosts_file`: the only /etc/hosts it
    sees (a private mount namespace), so names it can resolve may be unknown to everyone else."""
    binary = need("microsocks")
    port = free_port(host)
    args = [binary, "-i", host, "-p", str(port), "-b", host]
    if user is not None:
        args += ["-u", user, "-P", password or ""]
    if hosts_file is not None:
        args = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f'mount --bind "{hosts_file}" /etc/hosts && exec "$@"', "microsocks", *args]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(host, port, process)
    auth = f"{user}:{password}@" if user is not None else ""
    return Upstream("socks5", host, port, process, auth)


def named_exit(work: Path, names, host: str = "127.0.0.2") -> Upstream:
    """A microsocks on `host` that alone resolves `names` (to 127.0.0.1): names nobody else
    knows, so a test proves they reached the origin through it, by name."""
    hosts = work / "hosts"
    hosts.write_text("127.0.0.1 " + " ".join(names) + "\n")
    return microsocks(host, work, hosts_file=hosts)


def dante(host: str, work: Path) -> Upstream:
    binary = need("danted")
    port = free_port(host)
    conf = work / f"danted-{host}.conf"
    conf.write_text(f"""
logoutput: stderr
internal: {host} port = {port}
external: {host}
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
""")
    with open(work / f"danted-{host}.log", "w") as log:
        process = subprocess.Popen(
            [binary, "-f", str(conf), "-N", "1", "-p", str(work / f"danted-{host}.pid")],
            stdout=subprocess.DEVNULL, stderr=log)
    wait_listening(host, port, process)
    return Upstream("socks5", host, port, process)


def tinyproxy(host: str, work: Path, user: str | None = None,
              password: str | None = None) -> Upstream:
    """tinyproxy on `host`; with `user` and `password`, it demands them (BasicAuth)."""
    binary = need("tinyproxy")
    port = free_port(host)
    conf = work / f"tinyproxy-{host}.conf"
    auth = f"BasicAuth {user} {password}\n" if user else ""
    conf.write_text(auth + f"""
User nobody
Group nogroup
Port {port}
Listen {host}
Bind {host}
Timeout 60
Allow 127.0.0.0/8
MaxClients 100
LogLevel Warning
""")
    with open(work / f"tinyproxy-{host}.log", "w") as log:
        process = subprocess.Popen([binary, "-d", "-c", str(conf)],
                                   stdout=subprocess.DEVNULL, stderr=log)
    wait_listening(host, port, process)
    return Upstream("http", host, port, process, f"{user}:{password}@" if user else "")


def restart(upstream: Upstream) -> None:
    """Start a stopped or killed upstream again, same program, same address and port."""
    upstream.kill()
    args = upstream.process.args
    upstream.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(upstream.host, upstream.port, upstream.process)
