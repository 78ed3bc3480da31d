"""End to end with real third-party proxies as exits: microsocks and dante (SOCKS5) and
tinyproxy (HTTP), each on its own loopback address, so the origin's peer address says which
exit carried each request."""

from __future__ import annotations

import json
import socket
import struct

import pytest
from geodb import write_country_db
from helpers import curl
from upstreams import Upstream, dante, microsocks, tinyproxy


@pytest.fixture
def upstreams(tmp_path):
    started = []

    def start(factory, host, **kw):
        upstream = factory(host, tmp_path, **kw)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.stop()


def peer_of(origin) -> str:
    return origin.last.peer[0]


def pool_profile(members: dict, pool: str = "", extra: str = "") -> str:
    """A profile whose default is pool "p" of chain exits named after `members` (name -> upstream)."""
    exits = "".join(f'[exits.{name}]\nvia = ["{u.url}"]\n' for name, u in members.items())
    names = ", ".join(f'"{name}"' for name in members)
    return f'default = "p"\n{exits}[exits.p]\npool = [{names}]\n{pool}\n{extra}'


def test_each_rule_kind_routes_to_its_exit(start_proxy, origin, upstreams, tmp_path):
    ms, dn, tp = (upstreams(microsocks, "127.0.0.2"), upstreams(dante, "127.0.0.3"),
                  upstreams(tinyproxy, "127.0.0.4"))
    geo = write_country_db(tmp_path / "geo.mmdb", {"127.0.0.1/32": "GB"})
    proxy = start_proxy(f"""
default = "tiny"
geoip = "{geo}"
[exits.ms]
via = ["{ms.url}"]
[exits.dante]
via = ["{dn.url}"]
[exits.tiny]
via = ["{tp.url}"]
[exits.home]
source = "127.0.0.9"
[[rules]]
domains = ["localhost"]
exit = "ms"
[[rules]]
cidrs = ["127.0.0.0/8"]
ports = [{origin.port}]
countries = ["JP"]
exit = "home"
[[rules]]
countries = ["GB"]
ports = [{origin.port}]
exit = "dante"
""")
    assert curl("-x", proxy.url, origin.url("/echo", host="localhost")).returncode == 0
    assert peer_of(origin) == "127.0.0.2"  # domain rule -> microsocks
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert peer_of(origin) == "127.0.0.3"  # 127.0.0.1 is "GB" -> dante (the JP rule did not hold)
    assert curl("-p", "-x", proxy.url, origin.url("/echo")).returncode == 0
    assert peer_of(origin) == "127.0.0.3"
    other = socket.create_server(("127.0.0.6", 0))
    port = other.getsockname()[1]
    other.close()
    out = curl("-x", proxy.url, f"http://127.0.0.6:{port}/", "-i")
    assert out.stdout.startswith(b"HTTP/1.1 502") and b"exit 'tiny'" in out.stdout  # default
    log = proxy.wait_log("exit=tiny")
    assert "exit=ms" in log and "exit=dante" in log


def test_http_exit_adds_nothing_to_plain_http(start_proxy, origin, upstreams):
    tp = upstreams(tinyproxy, "127.0.0.4")
    proxy = start_proxy(f'default = "tiny"\n[exits.tiny]\nvia = ["{tp.url}"]\n')
    assert curl("-x", proxy.url, origin.url("/echo"), "-H", "X-Forwarded-For: 1.2.3.4").returncode == 0
    assert peer_of(origin) == "127.0.0.4"
    names = {n.lower() for n in origin.last.names()}
    assert not names & {"via", "x-forwarded-for", "forwarded", "proxy-connection"}


@pytest.mark.parametrize("length", [2, 3])
def test_chains_leave_by_the_last_hop(start_proxy, origin, upstreams, length):
    hops = [upstreams(microsocks, "127.0.0.2"), upstreams(dante, "127.0.0.3"),
            upstreams(tinyproxy, "127.0.0.4")][:length]
    via = ", ".join(f'"{h.url}"' for h in hops)
    proxy = start_proxy(f'default = "chain"\n[exits.chain]\nvia = [{via}]\n')
    for args in ((), ("-p",)):
        out = curl(*args, "-x", proxy.url, origin.url("/bytes/100000"))
        assert out.returncode == 0 and len(out.stdout) == 100000
        assert peer_of(origin) == hops[-1].host
    out = curl("-x", f"socks5h://{proxy.host}:{proxy.port}", origin.url("/echo"))
    assert out.returncode == 0 and peer_of(origin) == hops[-1].host


def test_socks_exit_never_resolves_locally(start_proxy, origin, upstreams, tmp_path):
    """The name `origin.anonproxy.test` resolves only inside the exit's own mount namespace:
    the request can only succeed if the name travelled to the exit unresolved."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 origin.anonproxy.test\n")
    ms = upstreams(microsocks, "127.0.0.2", hosts_file=hosts)
    proxy = start_proxy(f'default = "ms"\n[exits.ms]\nvia = ["{ms.url}"]\n')
    target = origin.url("/echo", host="origin.anonproxy.test")
    for args in ((), ("-p",)):
        out = curl(*args, "-x", proxy.url, target)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["target"] == "/echo"
    out = curl("-x", f"socks5h://{proxy.host}:{proxy.port}", target)
    assert out.returncode == 0, out.stderr
    # and the same name through a direct exit fails: the proxy itself cannot resolve it
    direct = start_proxy('default = "direct"\n[exits.direct]\n', name="direct")
    out = curl("-x", direct.url, target, "-i")
    assert out.stdout.startswith(b"HTTP/1.1 502") and b"cannot resolve" in out.stdout


def test_socks5_hop_with_username_and_password(start_proxy, origin, upstreams):
    ms = upstreams(microsocks, "127.0.0.2", user="alice", password="s3cret")
    proxy = start_proxy(f'default = "ms"\n[exits.ms]\nvia = ["{ms.url}"]\n')
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert peer_of(origin) == "127.0.0.2"
    bad = ms.url.replace("s3cret", "wrong")
    proxy2 = start_proxy(f'default = "ms"\n[exits.ms]\nvia = ["{bad}"]\n', name="bad")
    out = curl("-x", proxy2.url, origin.url("/echo"), "-i")
    assert out.stdout.startswith(b"HTTP/1.1 502")
    assert b"hop 1" in out.stdout and b"rejected the username and password" in out.stdout


def test_exit_down_fails_closed_and_never_goes_direct(start_proxy, origin, upstreams):
    ms = upstreams(microsocks, "127.0.0.2")
    proxy = start_proxy(f'default = "ms"\n[exits.ms]\nvia = ["{ms.url}"]\n[exits.direct]\n')
    ms.kill()
    out = curl("-x", proxy.url, origin.url("/echo"), "-i")
    assert out.stdout.startswith(b"HTTP/1.1 502")
    assert b"exit 'ms' failed at hop 1 (socks5): connection refused" in out.stdout  # no address
    assert f"hop 1 (socks5 127.0.0.2:{ms.port}): connection refused" in proxy.wait_log("refused")
    with socket.create_connection((proxy.host, proxy.port)) as sock:
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\x00"
        sock.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + struct.pack(">H", origin.port))
        assert sock.recv(10)[1] == 0x05  # connection refused, as the hop said
    assert not origin.received


def test_pool_fails_over_when_a_member_dies_and_closes_when_all_do(start_proxy, origin, upstreams):
    a, b = upstreams(microsocks, "127.0.0.2"), upstreams(microsocks, "127.0.0.5")
    proxy = start_proxy(pool_profile({"a": a, "b": b}, 'strategy = "failover"',
                                     "[health]\ninterval = 3600\nfall = 1\n"))
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert peer_of(origin) == "127.0.0.2"
    a.kill()
    for _ in range(3):
        assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
        assert peer_of(origin) == "127.0.0.5"
    assert "exit=p>b" in proxy.wait_log("exit=p>b")
    b.kill()
    seen = len(origin.received)
    out = curl("-x", proxy.url, origin.url("/echo"), "-i")
    assert out.stdout.startswith(b"HTTP/1.1 503")
    assert b"exit 'p' has no member up" in out.stdout
    assert len(origin.received) == seen


def test_pool_fallback_only_when_named(start_proxy, origin, upstreams):
    a = upstreams(microsocks, "127.0.0.2")
    proxy = start_proxy(f"""
default = "pool"
[exits.a]
via = ["{a.url}"]
[exits.home]
source = "127.0.0.8"
[exits.pool]
pool = ["a"]
fallback = "home"
""")
    a.kill()
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert peer_of(origin) == "127.0.0.8"
    assert "using its fallback 'home'" in proxy.wait_log("fallback")


def test_sticky_pool_keeps_a_site_on_one_member(start_proxy, origin, upstreams):
    ups = {f"m{i}": upstreams(microsocks, f"127.0.0.{i}") for i in (2, 5, 7)}
    proxy = start_proxy(pool_profile(ups, 'strategy = "sticky"'))
    for host in ("localhost", "127.0.0.1"):
        peers = set()
        for _ in range(4):
            assert curl("-x", proxy.url, origin.url("/echo", host=host)).returncode == 0
            peers.add(peer_of(origin))
        assert len(peers) == 1


def test_round_robin_pool_spreads_connections(start_proxy, origin, upstreams):
    a, b = upstreams(microsocks, "127.0.0.2"), upstreams(microsocks, "127.0.0.5")
    proxy = start_proxy(pool_profile({"a": a, "b": b}, 'strategy = "round-robin"'))
    peers = []
    for _ in range(4):
        assert curl("-p", "-x", proxy.url, origin.url("/echo")).returncode == 0
        peers.append(peer_of(origin))
    assert sorted(set(peers)) == ["127.0.0.2", "127.0.0.5"]


def test_block_rule_refuses_naming_the_rule(start_proxy, origin):
    proxy = start_proxy("""
default = "direct"
[exits.direct]
[[rules]]
domains = ["*.localhost", "localhost"]
exit = "block"
""")
    out = curl("-x", proxy.url, origin.url("/echo", host="localhost"), "-i")
    assert out.stdout.startswith(b"HTTP/1.1 403")
    assert b'blocked by rule 1 (domains = ["*.localhost", "localhost"] -> exit "block")' in out.stdout
    with socket.create_connection((proxy.host, proxy.port)) as sock:
        sock.sendall(b"\x05\x01\x00")
        sock.recv(2)
        sock.sendall(b"\x05\x01\x00\x03\x09localhost" + struct.pack(">H", origin.port))
        assert sock.recv(10)[1] == 0x02
    assert not origin.received


def test_health_probes_mark_a_dead_member_down_and_back_up(start_proxy, origin, upstreams, tmp_path):
    a = upstreams(microsocks, "127.0.0.2")
    b = upstreams(microsocks, "127.0.0.5")
    proxy = start_proxy(pool_profile({"a": a, "b": b}, extra=(
        "[health]\ninterval = 1\ntimeout = 1\nfall = 2\nrise = 2\n")))
    port = a.port
    a.kill()
    proxy.wait_log("exit 'a' is down", timeout=10)
    assert "exit 'a' is down" in proxy.log()
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert peer_of(origin) == "127.0.0.5"
    import subprocess

    from upstreams import need, wait_listening
    revived = subprocess.Popen([need("microsocks"), "-i", "127.0.0.2", "-p", str(port), "-b", "127.0.0.2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening("127.0.0.2", port, revived)
        assert "exit 'a' is up again" in proxy.wait_log("exit 'a' is up again", timeout=10)
        assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
        assert peer_of(origin) == "127.0.0.2"
    finally:
        revived.kill()
        revived.wait()


def test_round_robin_reuses_each_members_connection(start_proxy, origin, upstreams):
    """Plain-HTTP requests from separate clients: each member gets one upstream connection,
    which later requests reuse (the reuse key and the member opened agree)."""
    a, b = upstreams(microsocks, "127.0.0.2"), upstreams(microsocks, "127.0.0.5")
    proxy = start_proxy(pool_profile({"a": a, "b": b}, 'strategy = "round-robin"'))
    peers = []
    for _ in range(4):
        assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
        peers.append(peer_of(origin))
    assert peers == ["127.0.0.2", "127.0.0.5", "127.0.0.2", "127.0.0.5"]
    assert len(origin.connections) == 2


def test_a_probed_http_hop_that_refuses_our_credentials_is_down(start_proxy, origin, upstreams):
    """Before, a probe only connected to an HTTP hop: one refusing our credentials counted as
    up (and flapped with every real request). Now it answers OPTIONS * with them."""
    good = upstreams(tinyproxy, "127.0.0.4", user="alice", password="hunter2secret")
    bad = Upstream(good.kind, good.host, good.port, good.process, "alice:wrong@")
    proxy = start_proxy(pool_profile({"good": good, "bad": bad}, extra=(
        "[health]\ninterval = 1\ntimeout = 2\nfall = 1\nrise = 1\n")))
    line = proxy.wait_log("exit 'bad' is down", timeout=10)
    assert "exit 'bad' is down" in line and "refuses our credentials (401" in line, line
    assert "exit 'good' is down" not in proxy.log()
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
