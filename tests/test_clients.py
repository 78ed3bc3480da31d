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
from helpers import curl, wait_until
from origin import pattern
from tlsorigin import tls_origin_in
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


def anonproxy(*args: str, input: bytes | None = None, cwd=None, timeout: float = 60,
              env: dict | None = None):
    """Run the CLI of this checkout (whatever the working directory)."""
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          input=input, cwd=cwd, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


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


def test_fetch_sends_only_what_the_user_gave(profile, origin):
    """Host, the user's own headers (identifying ones still stripped) and Content-Length for a
    body: no Accept, no Connection of ours."""
    out = anonproxy("fetch", "--profile", profile, origin.url("/echo"),
                    "-H", "X-Forwarded-For: 1.2.3.4", "-H", "X-Mine: kept")
    assert out.returncode == 0, out.stderr
    assert origin.last.headers == [("Host", f"127.0.0.1:{origin.port}"), ("X-Mine", "kept")]
    assert json.loads(out.stdout)["method"] == "GET"
    out = anonproxy("fetch", "--profile", profile, "-d", "abc", "-H", "Accept: text/plain",
                    origin.url("/echo"))
    assert out.returncode == 0, out.stderr
    assert origin.last.headers == [("Host", f"127.0.0.1:{origin.port}"),
                                   ("Accept", "text/plain"), ("Content-Length", "3")]


def test_fetch_ends_on_the_responses_framing_not_on_close(profile, origin, tmp_path):
    """Without Connection: close the origin keeps the connection open: the body's own framing
    (Content-Length, chunked) must end the fetch, not waiting for EOF."""
    for query in ("", "?chunked=1"):
        out_file = tmp_path / "body"
        out = anonproxy("fetch", "--profile", profile, "--max-time", "20", "-o", str(out_file),
                        origin.url(f"/bytes/300000{query}"), timeout=30)
        assert out.returncode == 0, out.stderr
        assert out_file.read_bytes() == pattern(300000)


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
    "urllib": [sys.executable, "-c", ("import sys, urllib.request as u; r = u.Request(sys.argv[1], "
               "headers={'X-Forwarded-For': '1.2.3.4'}); print(u.urlopen(r).read().decode())"),
               "{url}"],
    "requests": [sys.executable, "-c", ("import sys, requests; print(requests.get(sys.argv[1], "
                 "headers={'X-Forwarded-For': '1.2.3.4'}).text)"), "{url}"],
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


def _catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` (SigCgt in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (sig - 1)))


def test_exec_passes_signals_and_stdin_through(profile):
    import signal

    process = subprocess.Popen([sys.executable, "-m", "anonproxy", "exec", "--profile", profile,
                                "--", "sh", "-c", "read line; echo got:$line; sleep 30"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    process.stdin.write(b"hello\n")
    process.stdin.flush()
    assert process.stdout.readline() == b"got:hello\n"
    assert wait_until(lambda: _catches(process.pid, signal.SIGTERM))  # exec passes it on now
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 128 + signal.SIGTERM  # the program's own death, passed on
    process.stdin.close()
    process.stdout.close()


def test_fetch_with_a_forced_exit_still_refuses_unsafe_destinations(profile):
    out = anonproxy("fetch", "--profile", profile, "--exit", "a", "http://169.254.169.254/")
    assert out.returncode == 3 and b"link-local" in out.stderr


CREDENTIALS = ["-H", "Authorization: Bearer s3cret-token", "-H", "Cookie: session=s3cret-cookie"]


def _has_credentials(received) -> bool:
    return received.header("authorization") is not None or received.header("cookie") is not None


def test_fetch_never_sends_credentials_to_another_origin(profile, origin, second_origin):
    """-L: Authorization and Cookie given with -H go to the first URL's origin (scheme, host,
    port: 127.0.0.1 on another port is another origin) and to nobody a redirect names;
    --location-trusted opts in, as in curl."""
    elsewhere = second_origin.url("/echo")
    out = anonproxy("fetch", "--profile", profile, "-L", *CREDENTIALS,
                    origin.url(f"/redirect?to={elsewhere}"))
    assert out.returncode == 0, out.stderr
    assert origin.last.header("authorization") == "Bearer s3cret-token"
    assert second_origin.last.target == "/echo" and not _has_credentials(second_origin.last)
    # a redirect within the origin keeps them
    out = anonproxy("fetch", "--profile", profile, "-L", *CREDENTIALS,
                    origin.url(f"/redirect?to={origin.url('/echo')}"))
    assert out.returncode == 0, out.stderr
    assert origin.last.target == "/echo" and origin.last.header("cookie") == "session=s3cret-cookie"
    # ... and so does --location-trusted, to the other origin too
    out = anonproxy("fetch", "--profile", profile, "--location-trusted", *CREDENTIALS,
                    origin.url(f"/redirect?to={elsewhere}"))
    assert out.returncode == 0, out.stderr
    assert second_origin.last.header("authorization") == "Bearer s3cret-token"
    assert second_origin.last.header("cookie") == "session=s3cret-cookie"


@pytest.fixture
def tls_origin(tmp_path):
    """A recording origin behind TLS on 127.0.0.1 with a self-signed certificate, and the file
    to trust it by (SSL_CERT_FILE: fetch verifies with the default trust store)."""
    yield from tls_origin_in(tmp_path, "anonproxy test origin")


def test_fetch_never_sends_credentials_on_a_downgrade(profile, tls_origin, origin):
    """A redirect from https to http drops Authorization and Cookie even with
    --location-trusted (curl 7.88 sends them there; we are stricter)."""
    secure, cert_file = tls_origin
    plain = origin.url("/echo")
    env_trust = {"SSL_CERT_FILE": str(cert_file)}
    for follow in ("-L", "--location-trusted"):
        out = anonproxy("fetch", "--profile", profile, follow, *CREDENTIALS,
                        f"https://127.0.0.1:{secure.port}/redirect?to={plain}", env=env_trust)
        assert out.returncode == 0, out.stderr
        assert secure.last.header("authorization") == "Bearer s3cret-token"  # TLS: they went
        assert origin.last.target == "/echo" and not _has_credentials(origin.last), follow


@pytest.mark.parametrize("first, then, trusted, sent", [
    ("http://a.example/x", "http://a.example/y", False, True),
    ("http://a.example/x", "http://a.example:80/y", False, True),
    ("http://a.example/x", "http://a.example:8080/y", False, False),  # another port
    ("http://a.example/x", "http://b.example/y", False, False),
    ("http://a.example/x", "https://a.example/y", False, False),  # another scheme
    ("http://a.example/x", "http://b.example/y", True, True),
    ("https://a.example/x", "https://b.example/y", True, True),
    ("https://a.example/x", "http://a.example/y", False, False),  # downgrade
    ("https://a.example/x", "http://a.example/y", True, False),  # downgrade, even trusted
    ("https://a.example/x", "http://b.example/y", True, False),
])
def test_which_redirects_carry_credentials(first, then, trusted, sent):
    from anonproxy.cli.fetch import _target, sends_credentials

    assert sends_credentials(_target(first), _target(then), trusted) is sent
