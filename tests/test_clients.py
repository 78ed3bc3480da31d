"""For scripts and browsers: `anonproxy fetch`, `anonproxy exec`, the PAC file — with real
clients (curl, wget, Python's urllib and requests) against a recording origin."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from helpers import curl
from origin import pattern
from upstreams import microsocks

PROFILE = """
default = "a"
[exits.a]
source = "127.0.0.2"
[exits.b]
source = "127.0.0.3"
[[rules]]
domains = ["localhost"]
exit = "b"
[[rules]]
ports = [9]
exit = "a"
[[rules]]
domains = ["ads.localhost"]
exit = "block"
"""


def anonproxy(*args: str, input: bytes | None = None, cwd=None, timeout: float = 60):
    """Run the CLI of this checkout (whatever the working directory)."""
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          input=input, cwd=cwd, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(PROFILE)
    return str(path)


def test_fetch_get_to_a_file_with_checksum(profile, origin, tmp_path):
    out_file = tmp_path / "body"
    out = anonproxy("fetch", "--profile", profile, "-o", str(out_file), origin.url("/bytes/3000000"))
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(out_file.read_bytes()).digest() == hashlib.sha256(pattern(3000000)).digest()
    assert origin.last.peer[0] == "127.0.0.2"
    assert out.stderr == b""  # quiet when not on a terminal


def test_fetch_sends_nothing_of_its_own(profile, origin):
    out = anonproxy("fetch", "--profile", profile, origin.url("/echo"),
                    "-H", "X-Forwarded-For: 1.2.3.4", "-H", "X-Mine: kept")
    assert out.returncode == 0, out.stderr
    names = [n.lower() for n in origin.last.names()]
    assert names == ["host", "accept", "x-mine", "connection"]
    assert json.loads(out.stdout)["method"] == "GET"


def test_fetch_post_with_a_body_from_a_file(profile, origin, tmp_path):
    body = pattern(200000)
    (tmp_path / "upload").write_bytes(body)
    out = anonproxy("fetch", "--profile", profile, "-d", "@upload", origin.url("/upload"),
                    cwd=tmp_path)
    reply = json.loads(out.stdout)
    assert reply["method"] == "POST" and reply["sha256"] == hashlib.sha256(body).hexdigest()


def test_fetch_follows_redirects_routing_each_hop_again(profile, origin):
    second = origin.url("/echo", host="localhost")
    out = anonproxy("fetch", "--profile", profile, "-L", "-v",
                    origin.url(f"/redirect?to={second}"))
    assert out.returncode == 0, out.stderr
    first, last = origin.received[-2:]
    assert first.target.startswith("/redirect") and first.peer[0] == "127.0.0.2"
    assert last.target == "/echo" and last.peer[0] == "127.0.0.3"  # the localhost rule's exit
    assert b"routed again" in out.stderr and b"exit b" in out.stderr


def test_fetch_include_head_and_exit_codes(profile, origin, tmp_path, upstreams_dead):
    out = anonproxy("fetch", "--profile", profile, "-i", origin.url("/status/204"))
    assert out.returncode == 0 and out.stdout.startswith(b"HTTP/1.1 204")
    out = anonproxy("fetch", "--profile", profile, "--fail", origin.url("/status/404"))
    assert out.returncode == 22
    out = anonproxy("fetch", "--profile", profile, f"http://ads.localhost:{origin.port}/")
    assert out.returncode == 3 and b"blocked by rule 3" in out.stderr
    out = anonproxy("fetch", "--profile", profile, "http://127.0.0.1:9/")
    assert out.returncode == 5 and b"connection refused" in out.stderr
    path = tmp_path / "dead.toml"
    path.write_text(f'default = "dead"\n[exits.dead]\nvia = ["{upstreams_dead}"]\n')
    out = anonproxy("fetch", "--profile", str(path), origin.url("/echo"))
    assert out.returncode == 4 and b"failed at hop 1" in out.stderr
    out = anonproxy("fetch", "--profile", profile, "--exit", "nope", origin.url("/echo"))
    assert out.returncode == 2


@pytest.fixture
def upstreams_dead(tmp_path):
    ms = microsocks("127.0.0.2", tmp_path)
    url = ms.url
    ms.kill()
    return url


CLIENTS = {
    "curl": ["curl", "-s", "-f", "-H", "X-Forwarded-For: 1.2.3.4", "{url}"],
    "curl-socks5h": ["curl", "-s", "-f", "-H", "X-Forwarded-For: 1.2.3.4", "--proxy",
                     "$ALL_PROXY", "{url}"],
    "wget": ["wget", "-q", "-O", "-", "--header", "X-Forwarded-For: 1.2.3.4", "{url}"],
    "urllib": [sys.executable, "-c", "import sys, urllib.request as u; r = u.Request(sys.argv[1], "
               "headers={'X-Forwarded-For': '1.2.3.4'}); print(u.urlopen(r).read().decode())",
               "{url}"],
    "requests": [sys.executable, "-c", "import sys, requests; print(requests.get(sys.argv[1], "
                 "headers={'X-Forwarded-For': '1.2.3.4'}).text)", "{url}"],
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_exec_wraps_real_clients_through_the_profile(profile, origin, client):
    argv = [a.replace("{url}", origin.url("/echo")) for a in CLIENTS[client]]
    if client == "curl-socks5h":
        argv = ["sh", "-c", " ".join(f"'{a}'" if a != "$ALL_PROXY" else '"$ALL_PROXY"' for a in argv)]
    out = anonproxy("exec", "--profile", profile, "--", *argv)
    assert out.returncode == 0, out.stderr
    assert origin.last.peer[0] == "127.0.0.2"
    assert origin.last.header("x-forwarded-for") is None or client == "curl-socks5h"
    assert origin.last.header("proxy-authorization") is None


def test_exec_passes_exit_codes_and_summarises(profile, origin):
    out = anonproxy("exec", "--profile", profile, "--", "sh", "-c", "exit 7")
    assert out.returncode == 7
    out = anonproxy("exec", "--profile", profile, "--summary", "--", "sh", "-c",
                    f'curl -s {origin.url("/echo")} >/dev/null; '
                    f'curl -s http://ads.localhost:{origin.port}/ >/dev/null')
    assert out.returncode == 0
    assert b"sites contacted: 127.0.0.1 (1)" in out.stderr
    assert b"exits used: a (1)" in out.stderr and b"blocked: ads.localhost (1)" in out.stderr


def test_exec_proxy_refuses_other_programs(profile, origin):
    """The ephemeral proxy demands the per-run credentials: another local program cannot use it."""
    script = ("import os, re, socket; u = os.environ['http_proxy']; "
              "host, port = re.search(r'@([^:]+):(\\d+)', u).groups(); "
              "s = socket.create_connection((host, int(port))); "
              f"s.sendall(b'GET {origin.url('/echo')} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); "
              "print(s.recv(100).split(b'\\r\\n')[0].decode())")
    out = anonproxy("exec", "--profile", profile, "--", sys.executable, "-c", script)
    assert out.stdout.strip() == b"HTTP/1.1 407 Proxy Authentication Required"
    assert not origin.received


def test_exec_strict_blocks_a_program_that_ignores_the_proxy(profile, origin):
    with open(profile, "a") as f:  # the origin is on loopback: --strict needs a rule for it
        f.write('[[rules]]\ncidrs = ["127.0.0.0/8"]\nexit = "a"\n')
    proxied = anonproxy("exec", "--profile", profile, "--strict", "--", "curl", "-s", "-f",
                        origin.url("/echo"))
    if proxied.returncode == 2 and b"--strict" in proxied.stderr:
        pytest.skip(proxied.stderr.decode().strip())
    assert proxied.returncode == 0, proxied.stderr
    assert origin.last.peer[0] == "127.0.0.2"
    seen = len(origin.received)
    bypass = anonproxy("exec", "--profile", profile, "--strict", "--", "curl", "-s",
                       "--noproxy", "*", origin.url("/echo"))
    assert bypass.returncode == 7  # curl: could not connect
    assert len(origin.received) == seen


def test_the_proxy_serves_its_pac_file(proxy):
    out = curl(f"{proxy.url}/proxy.pac")
    assert out.returncode == 0
    assert f'return "SOCKS5 127.0.0.1:{proxy.port}; PROXY 127.0.0.1:{proxy.port}";'.encode() in out.stdout
    assert b"DIRECT" not in out.stdout.split(b"\n", 1)[1]
    printed = anonproxy("pac", "--listen", f"127.0.0.1:{proxy.port}")
    assert printed.stdout == out.stdout


def test_exec_passes_signals_and_stdin_through(profile):
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-m", "anonproxy", "exec", "--profile", profile,
                                "--", "sh", "-c", "read line; echo got:$line; sleep 30"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    process.stdin.write(b"hello\n")
    process.stdin.flush()
    assert process.stdout.readline() == b"got:hello\n"
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 128 + signal.SIGTERM  # the program's own death, passed on
    process.stdin.close()
    process.stdout.close()


def test_fetch_with_a_forced_exit_still_refuses_unsafe_destinations(profile):
    out = anonproxy("fetch", "--profile", profile, "--exit", "a", "http://169.254.169.254/")
    assert out.returncode == 3 and b"link-local" in out.stderr
