"""`anonproxy exec --strict`: what a confined program can no longer reach (unix sockets by
path, the main proxy's token file, its dashboard, loopback services) and what still works
(curl, git and Python through the proxy, stdio, temporary files, the working directory).

Every test runs the real CLI; where this system forbids unprivileged namespaces, they skip
with the reason the CLI gives."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from conftest import ROOT
from helpers import wait_until
from upstreams import free_port

DIRECT = 'default = "direct"\n[exits.direct]\n'
LOOPBACK_RULE = '[[rules]]\ncidrs = ["127.0.0.0/8"]\nexit = "direct"\n'


def anonproxy(*args: str, input: bytes | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          input=input, cwd=cwd, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="session")
def strict_works(tmp_path_factory):
    """Skip (with the CLI's own reason) where the system forbids the namespaces."""
    profile = tmp_path_factory.mktemp("strict") / "p.toml"
    profile.write_text(DIRECT)
    out = anonproxy("exec", "--profile", str(profile), "--strict", "--", "true")
    if out.returncode == 2 and b"--strict" in out.stderr:
        pytest.skip(out.stderr.decode().strip())
    assert out.returncode == 0, out.stderr


@pytest.fixture
def run(strict_works, tmp_path):
    """run(*cmd, strict=True, profile=DIRECT, ...): the CLI's `exec [--strict] -- cmd`."""
    def start(*cmd: str, strict: bool = True, profile: str = DIRECT, **kw):
        path = tmp_path / "exec.toml"
        path.write_text(profile)
        return anonproxy("exec", "--profile", str(path), *(["--strict"] if strict else []),
                         "--", *cmd, **kw)
    return start


@pytest.fixture
def main_proxy(start_proxy, tmp_path, monkeypatch):
    """The owner's real proxy with a dashboard, and its token (from its file)."""
    from anonproxy.admin.control import runtime_dir

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    port = free_port("127.0.0.1")
    (tmp_path / "blocking.toml").write_text('default = "block"\n[exits.direct]\n')
    proxy = start_proxy(f'admin = "127.0.0.1:{port}"\n' + DIRECT, name="main")
    tokens = [p for p in runtime_dir().iterdir() if "token" in p.name]
    assert len(tokens) == 1, list(runtime_dir().iterdir())
    return proxy, port, tokens[0], tokens[0].read_text().strip()


def test_strict_program_cannot_connect_to_a_unix_socket_by_path(run, tmp_path):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "service.sock"))
    listener.listen()
    listener.setblocking(False)
    connect = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
               "print('connected')")
    unconfined = run(sys.executable, "-c", connect, listener.getsockname(), strict=False)
    assert unconfined.stdout == b"connected\n", unconfined.stderr  # the path is right
    listener.accept()[0].close()
    confined = run(sys.executable, "-c", connect, listener.getsockname())
    assert confined.returncode == 1 and b"PermissionError" in confined.stderr, confined.stderr
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing connected
    pair = run(sys.executable, "-c", "import socket; a, b = socket.socketpair(); a.send(b'x'); "
               "print(b.recv(1).decode())")
    assert pair.stdout == b"x\n"  # a program's own socketpair still works
    listener.close()


def test_strict_program_cannot_read_the_main_proxy_token(run, main_proxy):
    _, _, token_file, token = main_proxy
    read = ["sh", "-c", 'cat "$0"; ls -A "$(dirname "$0")"', str(token_file)]
    assert token.encode() in run(*read, strict=False).stdout  # readable without --strict
    confined = run(*read)
    assert token.encode() not in confined.stdout + confined.stderr
    assert confined.stdout == b""  # the runtime directory looks empty
    assert b"No such file" in confined.stderr


def test_strict_program_cannot_read_the_owners_profiles(run, tmp_path, monkeypatch):
    """Profiles in ~/.config/anonproxy hold hop and proxy passwords."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    secret = tmp_path / "config" / "anonproxy" / "uk.toml"
    secret.parent.mkdir(parents=True)
    secret.write_text('[exits.uk]\nvia = ["socks5://me:hop-password@127.0.0.9:1080"]\n')
    read = ["cat", str(secret)]
    assert b"hop-password" in run(*read, strict=False).stdout  # readable without --strict
    confined = run(*read)
    assert b"hop-password" not in confined.stdout + confined.stderr
    assert b"No such file" in confined.stderr


def test_strict_program_cannot_uncover_the_hidden_directories(run, main_proxy):
    _, _, token_file, token = main_proxy
    confined = run("sh", "-c", 'umount "$1"; umount -l "$1"; unshare -r -m umount "$1"; '
                   'cat "$0"', str(token_file), str(token_file.parent))
    assert token.encode() not in confined.stdout
    assert b"No such file" in confined.stderr


def test_strict_program_cannot_reach_the_main_dashboard_through_its_proxy(run, main_proxy):
    _, port, _, token = main_proxy
    status = f"http://127.0.0.1:{port}/api/status"

    def profile_now() -> str:
        answer = requests.get(status, headers={"X-Anonproxy-Token": token}, timeout=10,
                              proxies={"http": None, "https": None})
        return answer.json()["profile"]

    assert profile_now() == "main"
    switch = (f"-X POST -H 'X-Anonproxy-Token: {token}' -H 'Content-Type: application/json' "
              f"""-d '{{"profile": "blocking"}}' http://127.0.0.1:{port}/api/profile""")
    script = (f'curl -s -o /dev/null -w "http %{{http_code}}\\n" {status}; '
              f'curl -s -o /dev/null -w "switch %{{http_code}}\\n" {switch}; '
              f'curl -s -o /dev/null -p -w "connect %{{http_connect}}\\n" {switch}; '
              f'curl -s -o /dev/null --proxy "$ALL_PROXY" -w "socks %{{http_code}}\\n" {switch}')
    out = run("sh", "-c", script)
    assert out.stdout.decode().split("\n") == [
        "http 403", "switch 403", "connect 403", "socks 000", ""], out.stderr
    assert profile_now() == "main"


def _loopback_names(port: int) -> list[str]:
    names = ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"]
    host = socket.gethostname()  # a name that resolves to loopback, where this system has one
    if all(ip.startswith("127.") for *_, (ip, *_) in socket.getaddrinfo(host, port)):
        names.append(host)
    return names


def _try_each(run, origin, names: list[str], profile: str) -> list[str]:
    """For each name: the status through the HTTP proxy, a CONNECT tunnel and SOCKS5."""
    script = "".join(
        f'curl -s -o /dev/null -w "%{{http_code}} " http://{h}:{origin.port}/echo; '
        f'curl -s -o /dev/null -p -w "%{{http_connect}} " http://{h}:{origin.port}/echo; '
        f'curl -s -o /dev/null --proxy "$ALL_PROXY" -w "%{{http_code}}\\n" '
        f'http://{h}:{origin.port}/echo; ' for h in names)
    out = run("sh", "-c", script, profile=profile)
    return out.stdout.decode().splitlines()


def test_strict_proxy_refuses_loopback_services_without_a_rule(run, origin):
    names = [*_loopback_names(origin.port), "0.0.0.0"]
    assert _try_each(run, origin, names, DIRECT) == ["403 403 000"] * len(names)
    assert origin.received == []


def test_strict_proxy_reaches_loopback_services_a_rule_names(run, origin):
    names = _loopback_names(origin.port)
    assert _try_each(run, origin, names, DIRECT + LOOPBACK_RULE) == \
        ["200 200 200"] * len(names)
    assert len(origin.received) == 3 * len(names)


def test_exec_without_strict_still_reaches_loopback(run, origin):
    out = run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", origin.url("/echo"),
              strict=False)
    assert out.stdout == b"200"


def _dumb_http_repo(tmp_path: Path):
    """A git repository with one commit, served over dumb HTTP on loopback."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
           "-c", "init.defaultBranch=main"]
    work, served = tmp_path / "work", tmp_path / "served"
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    (work / "hello.txt").write_text("hello from git\n")
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "one"], check=True)
    subprocess.run([*git, "clone", "-q", "--bare", str(work), str(served / "repo.git")],
                   check=True)
    subprocess.run(["git", "-C", str(served / "repo.git"), "update-server-info"], check=True)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_strict_program_uses_curl_git_and_python_through_the_proxy(run, origin, tmp_path):
    server = _dumb_http_repo(tmp_path)
    try:
        repo = f"http://127.0.0.1:{server.server_address[1]}/repo.git"
        (tmp_path / "out").mkdir()
        script = (f"curl -s -f {origin.url('/echo')} >/dev/null && echo curl ok; "
                  f"git clone -q {repo} clone && cat clone/hello.txt; "
                  f"{sys.executable} -c \"import urllib.request as u; "
                  f"print(u.urlopen('{origin.url('/echo')}').status)\"")
        out = run("sh", "-c", script, profile=DIRECT + LOOPBACK_RULE, cwd=tmp_path / "out")
    finally:
        server.shutdown()
        server.server_close()
    assert out.stdout == b"curl ok\nhello from git\n200\n", out.stderr
    assert len(origin.received) == 2


def test_strict_program_keeps_its_stdio_and_temp_files(run):
    script = ('read line; f=$(mktemp); echo "kept: $line" > "$f"; cat "$f"; rm "$f"; '
              'echo to-stderr >&2; exit 3')
    out = run("sh", "-c", script, input=b"hello\n")
    assert out.returncode == 3
    assert out.stdout == b"kept: hello\n"
    assert out.stderr == b"to-stderr\n"


def test_strict_program_starts_in_the_callers_cwd(run, tmp_path):
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "marker").write_text("right place\n")
    out = run("sh", "-c", "pwd; cat marker", cwd=tmp_path / "here")
    assert out.stdout == f"{tmp_path / 'here'}\nright place\n".encode(), out.stderr


IO_URING_SETUP = 425


def _syscall_script(number: int) -> str:
    return (f"import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
            f"buf = ctypes.create_string_buffer(120); "
            f"print(libc.syscall({number}, 4, buf), ctypes.get_errno())")


def test_strict_program_cannot_make_sockets_through_io_uring(run):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(IO_URING_SETUP, 4, ctypes.create_string_buffer(120))
    if fd < 0:
        pytest.skip("this kernel does not offer io_uring")
    os.close(fd)
    out = run(sys.executable, "-c", _syscall_script(IO_URING_SETUP))
    assert out.stdout == b"-1 38\n", out.stderr  # ENOSYS


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 exists only on x86_64")
def test_strict_program_is_killed_on_another_syscall_abi(run):
    out = run(sys.executable, "-c", _syscall_script(0x40000000 | 39))  # x32 getpid
    assert out.returncode == 128 + signal.SIGSYS, (out.returncode, out.stdout)


_SCAN = r"""
import os, sys
secret = sys.argv[1].encode()
seen, refused = [], 0
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        command = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        continue
    if command.split(b"\0")[1:3] != [b"-m", b"anonproxy"]:  # (`python -m anonproxy ...`)
        continue
    try:
        regions = open(f"/proc/{pid}/maps").read().splitlines()
        memory = open(f"/proc/{pid}/mem", "rb", 0)
    except OSError:
        refused += 1
        continue
    for line in regions:
        span, permissions = line.split()[:2]
        start, end = (int(x, 16) for x in span.split("-"))
        if "r" not in permissions or end - start > 1 << 28:
            continue
        try:
            memory.seek(start)
            if secret in memory.read(end - start):
                seen.append(pid)
                break
        except (OSError, ValueError, OverflowError):
            continue
print(f"seen in {len(seen)}, refused by {refused}")
"""


def test_strict_program_sees_signals_and_reads_only_its_own_processes(run, tmp_path):
    """Its parent, `anonproxy exec`, holds the profile's passwords (the file is hidden, its
    content is in memory), and it, `serve`, the browser all run as the same user: signals are
    allowed by uid, and memory reads by uid within a user namespace. In a process namespace
    of its own the program sees its own processes only: no anonproxy process to scan, no
    outside process to signal. Unconfined, the same scan finds the password in an `exec` of
    the same profile, and the same signal reaches the outside process."""
    secret = "pw-" + os.urandom(8).hex()
    profile = f'{DIRECT}[exits.hop]\nvia = ["socks5://user:{secret}@127.0.0.1:9"]\n'
    outside = subprocess.Popen(["sleep", "60"])
    signal_it = ("import os, sys\ntry:\n    os.kill(int(sys.argv[1]), 0)\nexcept OSError as e:\n"
                 "    print(type(e).__name__)\nelse:\n    print('reached')\n"
                 "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    try:
        confined = run(sys.executable, "-c", _SCAN, secret, profile=profile)
        assert confined.stdout == b"seen in 0, refused by 0\n", confined
        signalled = run(sys.executable, "-c", signal_it, str(outside.pid))
        assert signalled.stdout.splitlines() == [b"ProcessLookupError", b"[1, 2]"], signalled
        assert outside.poll() is None
        unconfined = run(sys.executable, "-c", signal_it, str(outside.pid), strict=False)
        assert unconfined.stdout.splitlines()[0] == b"reached"
        (tmp_path / "secret.toml").write_text(profile)
        assert _scan_from_outside(tmp_path / "secret.toml", secret).startswith(b"seen in 1,")
    finally:
        outside.kill()
        outside.wait()


def _scan_from_outside(profile: Path, secret: str) -> bytes:
    """The scan run unconfined while an `exec` of `profile` runs: what it printed once it saw
    the secret (or its last try)."""
    holder = subprocess.Popen([sys.executable, "-m", "anonproxy", "exec", "--profile",
                               str(profile), "--", "sleep", "30"],
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    scans: list[bytes] = []

    def seen() -> bool:  # (once the holder has read its profile)
        scans.append(subprocess.run([sys.executable, "-c", _SCAN, secret], capture_output=True,
                                    timeout=60).stdout)
        return scans[-1].startswith(b"seen in 1,")

    try:
        wait_until(seen, timeout=10, interval=0.2)
        return scans[-1]
    finally:
        holder.kill()
        holder.wait()


def test_strict_program_gets_execs_signals_and_leaves_nothing_running(strict_works, tmp_path):
    """exec passes SIGTERM on through the layers that make the process namespace (the exit
    code is the program's: 128 + 15), and what the program started ends with it."""
    profile = tmp_path / "p.toml"
    profile.write_text(DIRECT)
    marker = str(500 + os.getpid() % 400)  # (a sleep no other test runs)
    started = tmp_path / "started"
    process = subprocess.Popen(
        [sys.executable, "-m", "anonproxy", "exec", "--profile", str(profile), "--strict", "--",
         "sh", "-c", f'sleep {marker} & touch "$0"; sleep 30', str(started)],
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert wait_until(started.exists)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 128 + signal.SIGTERM
        assert wait_until(lambda: not [
            pid for pid in os.listdir("/proc")
            if pid.isdigit() and _cmdline(pid) == [b"sleep", marker.encode()]])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _cmdline(pid: str) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        return []
