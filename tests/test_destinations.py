"""Destinations the proxy must never resolve or reach, whatever the exit, worker or command.

Special-use names (.onion, .exit, .i2p, .local, .invalid) are watched by a DNS stub on loopback
that records every query: the proxy, `route` and `fetch` run in a private mount namespace
whose /etc/resolv.conf names only the stub (and whose /etc/hosts may add names that resolve to
loopback), as tests/upstreams.py does for microsocks. The proxy's own services (listener,
dashboard, a managed tor's ports) are found from /proc, not from what the proxy says.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, Proxy
from helpers import curl, recv_until, socks_connect
from probes import listening_ports
from upstreams import free_port, microsocks

from anonproxy.config.profiles import LoadedProfile, parse_profile
from anonproxy.exits.context import Context
from anonproxy.wire.address import (
    Address,
    check_host,
    reaches,
    special_use,
    special_use_refusal,
)
from anonproxy.wire.errors import Forbidden

SPECIAL = ["x.onion", "a.exit", "b.i2p", "c.local", "d.invalid"]
CONTROL = "control.test"  # a name only the stub knows: it must reach the stub


# --- pure decisions --------------------------------------------------------------------------

@pytest.mark.parametrize("host, label", [
    ("x.onion", "onion"), ("a.b.onion", "onion"), ("onion", "onion"), ("a.exit", "exit"),
    ("b.i2p", "i2p"), ("printer.local", "local"), ("local", "local"), ("d.invalid", "invalid"),
    ("e.alt", "alt"), ("onion.example", None), ("example.com", None), ("127.0.0.1", None),
    ("::1", None), ("localhost", None), ("exit.example.org", None), ("X.Onion.", "onion"),
    ("C.LOCAL", "local"),
])
def test_special_use_names_are_known_from_the_name_alone(host, label):
    assert special_use(check_host(host)) == label  # as every parser hands names on


def test_only_a_tor_exit_may_carry_an_onion_name_and_nothing_carries_the_others():
    assert special_use_refusal("x.onion", tor_exit=True) is None
    assert "only a Tor exit" in special_use_refusal("x.onion")
    assert "I2P router" in special_use_refusal("b.i2p", tor_exit=True)
    assert "alone names no host" in special_use_refusal("onion", tor_exit=True)
    assert special_use_refusal("example.com") is None


@pytest.mark.parametrize("peer, local, own, reached", [
    (("127.0.0.1", 8119), "127.0.0.1", Address("127.0.0.1", 8119), True),
    (("::ffff:127.0.0.1", 8119), "127.0.0.1", Address("127.0.0.1", 8119), True),
    (("127.0.0.2", 8119), "127.0.0.2", Address("127.0.0.1", 8119), False),  # another socket
    (("127.0.0.1", 8120), "127.0.0.1", Address("127.0.0.1", 8119), False),
    (("192.0.2.7", 8119), "192.0.2.7", Address("0.0.0.0", 8119), True),  # our own interface
    (("192.0.2.8", 8119), "192.0.2.7", Address("0.0.0.0", 8119), False),  # another machine
    (("::1", 8119), "::1", Address("localhost", 8119), True),
])
def test_a_connection_reaches_our_socket_only_by_its_address(peer, local, own, reached):
    assert reaches(peer, local, own) is reached


def _context(profile: str, **kwargs) -> Context:
    loaded = LoadedProfile("t", None, parse_profile(__import__("tomllib").loads(profile), "t.toml"))
    return Context(loaded, Address("127.0.0.1", 8118), **kwargs)


TOR_PROFILE = ('resolve = "tor"\ndefault = "direct"\n[exits.direct]\n'
               '[exits.tor]\ntor = { control = "127.0.0.1:9" }\n'
               '[[rules]]\ncidrs = ["10.0.0.0/8"]\nexit = "direct"\n')


def test_an_onion_name_goes_to_tor_without_any_lookup_and_a_block_rule_still_blocks_it():
    ctx = _context(TOR_PROFILE)
    assert asyncio.run(ctx.route(Address("x.onion", 80))).exit == "tor"
    blocked = _context(TOR_PROFILE + '[[rules]]\ndomains = ["*.onion"]\nexit = "block"\n')
    with pytest.raises(Forbidden, match="blocked by rule 2"):
        asyncio.run(blocked.route(Address("x.onion", 80)))
    with pytest.raises(Forbidden, match=r"Tor '\.exit' name"):
        asyncio.run(ctx.route(Address("a.exit", 80)))


def test_a_hop_on_this_machine_is_never_asked_for_a_port_we_serve():
    ctx = _context('default = "direct"\n[exits.direct]\n', admin=Address("127.0.0.1", 8119))
    assert "dashboard" in ctx.forbidden_via_hop(Address("dash.example", 8119), True, None)
    assert ctx.forbidden_via_hop(Address("dash.example", 8119), False, None) is None
    assert ctx.forbidden_via_hop(Address("dash.example", 8119), False,
                                 Address("203.0.113.5", 4000)) is None
    assert "loopback" in ctx.forbidden_via_hop(Address("dash.example", 8119), False,
                                               Address("127.0.0.1", 4000))
    assert ctx.forbidden_via_hop(Address("dash.example", 443), True, None) is None


# --- a private resolver and hosts file --------------------------------------------------------

class DnsStub:
    """A DNS server on 127.0.0.X:53 (UDP and TCP) that records every name asked and knows only
    CONTROL (-> 127.0.0.1); and a resolv.conf that names only it."""

    def __init__(self, work: Path) -> None:
        from dnslib import QTYPE, RCODE, RR, A
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        self.asked: list[str] = []
        lock = threading.Lock()
        asked = self.asked

        class Resolver(BaseResolver):
            def resolve(self, request, handler):
                reply, q = request.reply(), request.q
                name = str(q.qname).rstrip(".").lower()
                with lock:
                    asked.append(name)
                if name != CONTROL:
                    reply.header.rcode = RCODE.NXDOMAIN
                elif q.qtype == QTYPE.A:
                    reply.add_answer(RR(q.qname, QTYPE.A, rdata=A("127.0.0.1"), ttl=0))
                return reply

        quiet = DNSLogger(logf=lambda message: None)
        for _ in range(20):
            self.address = f"127.0.0.{random.randint(60, 250)}"
            self.servers = []
            try:
                for tcp in (False, True):
                    self.servers.append(DNSServer(Resolver(), self.address, 53, tcp=tcp,
                                                  logger=quiet))
                break
            except OSError:
                for server in self.servers:
                    server.server.server_close()
        else:
            raise RuntimeError("no loopback address with port 53 free for the DNS stub")
        for server in self.servers:
            server.start_thread()
        self.resolv_conf = work / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {self.address}\noptions timeout:1 attempts:1\n")

    def names(self) -> set[str]:
        return set(self.asked)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
            server.server.server_close()


@pytest.fixture
def dns(tmp_path):
    pytest.importorskip("dnslib")
    stub = DnsStub(tmp_path)
    yield stub
    stub.stop()


def private(resolv_conf: Path | None = None, hosts: Path | None = None) -> list[str]:
    """A command prefix: a private mount namespace with these files over /etc's."""
    binds = [f'mount --bind "{src}" {dst}' for src, dst in
             ((resolv_conf, "/etc/resolv.conf"), (hosts, "/etc/hosts")) if src is not None]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            " && ".join([*binds, 'exec "$@"']), "private"]


def hosts_file(tmp_path: Path, names: dict[str, str]) -> Path:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n::1 localhost\n"
                    + "".join(f"{ip} {name}\n" for name, ip in names.items()))
    return path


def anonproxy(tmp_path: Path, *args: str, prefix: list[str] = (), timeout: float = 60):
    """Run an anonproxy command (route, fetch) as the user would, in `prefix`'s namespace."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run([*prefix, sys.executable, "-m", "anonproxy", *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=timeout, check=False)


@pytest.fixture
def serve(tmp_path):
    """Start `anonproxy serve` with a profile, in a private namespace (`prefix`), with extra
    arguments; the runtime and cache directories are the test's own."""
    started: list[Proxy] = []

    def start(profile_toml: str, prefix: list[str] = (), args: tuple[str, ...] = (),
              name: str = "test") -> Proxy:
        profile = tmp_path / f"{name}.toml"
        profile.write_text(profile_toml)
        log_path = tmp_path / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
               "XDG_CACHE_HOME": str(tmp_path / "cache")}
        with open(log_path, "w") as log_file:
            process = subprocess.Popen(
                [*prefix, sys.executable, "-m", "anonproxy", "serve", "--profile", str(profile),
                 "--listen", "127.0.0.1:0", *args],
                stdout=subprocess.PIPE, stderr=log_file, cwd=ROOT, text=True, env=env)
        proxy = Proxy(process, "127.0.0.1", 0, log_path)
        started.append(proxy)
        line = process.stdout.readline()
        if not line.startswith("anonproxy listening on "):
            raise RuntimeError(f"proxy did not start: {log_path.read_text()}")
        proxy.port = int(line.rsplit(":", 1)[1])
        return proxy

    yield start
    for proxy in started:
        if proxy.process.poll() is None:
            proxy.process.terminate()
            try:
                proxy.process.wait(15)
            except subprocess.TimeoutExpired:
                proxy.process.kill()
                proxy.process.wait()
        proxy.process.stdout.close()


def connect_status(proxy: Proxy, target: str) -> bytes:
    """The status line the proxy answers CONNECT `target` with."""
    with proxy.connect() as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return recv_until(s, b"\r\n").split(b"\r\n", 1)[0]


def socks_reply(proxy: Proxy, host: str, port: int) -> int:
    with proxy.connect() as s:
        name = host.encode()
        return socks_connect(s, 3, bytes([len(name)]) + name, port)[1]


# --- special-use names never reach a resolver ---------------------------------------------------

LOOKUP_PROFILE = """resolve = "local"
default = "direct"
[exits.direct]
[[rules]]
cidrs = ["10.0.0.0/8"]
exit = "direct"
[[rules]]
countries = ["DE"]
exit = "direct"
"""


def test_special_use_names_never_reach_a_resolver_through_http_connect_or_socks(serve, dns,
                                                                                 origin):
    proxy = serve(LOOKUP_PROFILE, prefix=private(dns.resolv_conf))
    answers = {}
    for name in SPECIAL:
        answers[name, "http"] = curl("-x", proxy.url, f"http://{name}/", "-i").stdout
        answers[name, "connect"] = connect_status(proxy, f"{name}:443")
        answers[name, "socks"] = socks_reply(proxy, name, 443)
    assert dns.names() == set(), f"special-use names reached the resolver: {dns.names()}"
    for (name, how), answer in answers.items():
        refused = answer == 0x02 if how == "socks" else answer.startswith(b"HTTP/1.1 403")
        assert refused, (name, how, answer)
    out = curl("-x", proxy.url, origin.url("/echo", host=CONTROL))  # the stub does see lookups
    assert out.returncode == 0, (out.stderr, proxy.log()[-2000:])
    assert dns.names() == {CONTROL}
    body = curl("-x", proxy.url, "http://x.onion/").stdout
    assert b"only a Tor exit can reach it" in body and b"has none" in body


def test_route_and_fetch_never_resolve_special_use_names(tmp_path, dns, origin):
    profile = tmp_path / "lookup.toml"
    profile.write_text(LOOKUP_PROFILE)
    with_tor = tmp_path / "with-tor.toml"  # a tor exit that is not running: route starts none
    with_tor.write_text(LOOKUP_PROFILE + '[exits.tor]\ntor = { control = "127.0.0.1:9" }\n')
    prefix = private(dns.resolv_conf)
    runs = [anonproxy(tmp_path, command, "--profile", str(profile), f"http://{name}/",
                      prefix=prefix) for name in SPECIAL for command in ("route", "fetch")]
    onion = anonproxy(tmp_path, "route", "--profile", str(with_tor), "http://x.onion/",
                      prefix=prefix)
    assert dns.names() == set(), f"special-use names reached the resolver: {dns.names()}"
    for out in runs:  # refused in one sentence, exit code 3 (as fetch's "blocked")
        assert out.returncode == 3, (out.args[-1], out.args[-4], out.stdout, out.stderr)
        assert b"Traceback" not in out.stderr and out.stderr.count(b"\n") == 1, out.stderr
    assert onion.returncode == 0 and b"exit         tor:" in onion.stdout, onion.stderr
    out = anonproxy(tmp_path, "fetch", "--profile", str(profile),
                    origin.url("/echo", host=CONTROL), prefix=prefix)
    assert out.returncode == 0, out.stderr
    assert dns.names() == {CONTROL}


# --- the proxy's own services are never destinations ------------------------------------------

def _dashboard_profile(port: int, body: str = "") -> str:
    return f'admin = "127.0.0.1:{port}"\ndefault = "direct"\n[exits.direct]\n{body}'


def test_the_dashboard_is_refused_by_a_name_that_resolves_to_loopback(serve, tmp_path):
    port = free_port("127.0.0.1")
    hosts = hosts_file(tmp_path, {"dash.test": "127.0.0.1"})
    proxy = serve(_dashboard_profile(port), prefix=private(hosts=hosts))
    plain = curl("-x", proxy.url, f"http://dash.test:{port}/", "-i")
    assert plain.stdout.startswith(b"HTTP/1.1 403"), plain.stdout[:300]
    assert b"dashboard" in plain.stdout
    assert connect_status(proxy, f"dash.test:{port}").startswith(b"HTTP/1.1 403")
    assert socks_reply(proxy, "dash.test", port) == 0x02


def test_every_worker_refuses_the_dashboard(serve):
    proxy = serve('admin = "127.0.0.1:0"\ndefault = "direct"\n[exits.direct]\n',
                  args=("--workers", "2"))
    deadline = time.monotonic() + 10
    while not (ports := listening_ports(proxy.process.pid) - {proxy.port}):
        assert time.monotonic() < deadline, "no dashboard socket"
        time.sleep(0.05)
    (dashboard,) = ports
    answers = [connect_status(proxy, f"127.0.0.1:{dashboard}") for _ in range(40)]
    through = sum(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert through == 0, f"{through} of 40 reached the dashboard"
    assert all(a.startswith(b"HTTP/1.1 403") for a in answers), set(answers)


def test_a_hop_on_this_machine_does_not_lead_to_the_dashboard(serve, tmp_path, origin):
    """microsocks resolves dash.test (its private /etc/hosts) to 127.0.0.1 and would connect."""
    port = free_port("127.0.0.1")
    hop = microsocks("127.0.0.2", tmp_path,
                     hosts_file=hosts_file(tmp_path, {"dash.test": "127.0.0.1"}))
    try:
        proxy = serve(f'admin = "127.0.0.1:{port}"\ndefault = "hop"\n'
                      f'[exits.hop]\nvia = ["socks5h://127.0.0.2:{hop.port}"]\n')
        answer = connect_status(proxy, f"dash.test:{port}")
        assert answer.startswith(b"HTTP/1.1 403"), answer
        assert connect_status(proxy, f"localhost:{port}").startswith(b"HTTP/1.1 403")
        assert connect_status(proxy, f"127.0.0.1:{origin.port}").startswith(b"HTTP/1.1 200")
    finally:
        hop.stop()


def _dead_network_torrc(tmp_path: Path) -> Path:
    """A test-network tor whose only directory authority is a closed loopback port: it starts,
    listens, and never gets past the first steps of bootstrapping (and never leaves loopback)."""
    dead = free_port("127.0.0.1")
    torrc = tmp_path / "dead-network.torrc"
    torrc.write_text("TestingTorNetwork 1\nUseDefaultFallbackDirs 0\n"
                     f"DirAuthority dead orport={dead} no-v2 v3ident={'1' * 40} "
                     f"127.0.0.1:{dead} {'2' * 40}\n")
    return torrc


def test_a_managed_tors_ports_are_refused_while_it_bootstraps(serve, tmp_path):
    if not any(os.path.exists(p) for p in ("/usr/bin/tor", "/usr/sbin/tor")):
        pytest.skip("tor is not installed")
    proxy = serve(f'default = "direct"\n[exits.direct]\n[exits.tor]\n'
                  f'tor = {{ control = "managed", torrc = "{_dead_network_torrc(tmp_path)}" }}\n')
    log = proxy.wait_log("bootstrapped 5%", timeout=30)
    assert "bootstrapped 5%" in log, log[-2000:]
    pid = int(log.split("started, pid ", 1)[1].split()[0])
    control_file = next((tmp_path / "cache" / "anonproxy").glob("tor-*/control.port"))
    control = int(control_file.read_text().strip().rsplit(":", 1)[1])
    ports = listening_ports(pid)
    assert control in ports and len(ports) == 2  # its control and SOCKS ports
    for port in ports:
        for host in ("127.0.0.1", "localhost"):
            answer = connect_status(proxy, f"{host}:{port}")
            assert answer.startswith(b"HTTP/1.1 403"), (host, port, answer)
        assert socks_reply(proxy, "localhost", port) == 0x02
    assert ": ready, SOCKS on" not in proxy.log()  # all of this while tor was bootstrapping


@pytest.mark.parametrize("spelling", ["127.0.0.1", "dash.test"])
def test_fetch_follows_no_redirect_to_a_running_proxys_dashboard(serve, tmp_path, origin,
                                                                 spelling):
    port = free_port("127.0.0.1")
    serve(_dashboard_profile(port), name="running")
    profile = tmp_path / "fetch.toml"
    profile.write_text('default = "direct"\n[exits.direct]\n')
    hosts = hosts_file(tmp_path, {"dash.test": "127.0.0.1"})
    url = origin.url(f"/redirect?to=http://{spelling}:{port}/")
    out = anonproxy(tmp_path, "fetch", "-L", "--profile", str(profile), url,
                    prefix=private(hosts=hosts))
    assert out.returncode == 3, (out.returncode, out.stdout[:300], out.stderr)
    assert out.stdout == b"" and b"refusing" in out.stderr
    assert origin.received  # the first request went out; only the redirect was refused
