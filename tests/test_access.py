"""Who may connect, and where the proxy will never go."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess

import pytest
from helpers import curl, recv_all, socks_connect, wait_until

from anonproxy.config.profiles import LoadedProfile, parse_profile
from anonproxy.exits.context import Context
from anonproxy.wire.address import Address, check_host
from anonproxy.wire.errors import Forbidden

AUTH = '[auth]\nusername = "alice"\npassword = "correct horse"\n'


def test_proxy_authentication_is_required_when_configured(start_proxy, origin):
    proxy = start_proxy('default = "direct"\n[exits.direct]\n' + AUTH)
    out = curl("-x", proxy.url, origin.url("/echo"), "-i")
    assert out.stdout.startswith(b"HTTP/1.1 407") and b"Proxy-Authenticate: Basic" in out.stdout
    out = curl("-x", proxy.url, "-U", "alice:wrong horse", origin.url("/echo"), "-i")
    assert out.stdout.startswith(b"HTTP/1.1 407")
    assert not origin.received
    out = curl("-x", proxy.url, "-U", "alice:correct horse", origin.url("/echo"))
    assert out.returncode == 0 and origin.last.header("proxy-authorization") is None
    out = curl("-x", f"socks5h://alice:correct%20horse@{proxy.host}:{proxy.port}", origin.url("/echo"))
    assert out.returncode == 0
    with socket.create_connection(proxy.address) as sock:
        sock.sendall(b"\x05\x01\x00")  # no-auth only: refused
        assert recv_all(sock) == b"\x05\xff"
    out = curl("-x", f"socks5h://alice:nope@{proxy.host}:{proxy.port}", origin.url("/echo"))
    assert out.returncode != 0


def _route(profile: str, host: str, port: int = 80):
    loaded = LoadedProfile("t", None, parse_profile(__import__("tomllib").loads(profile), "t.toml"))
    ctx = Context(loaded, Address("127.0.0.1", 8118))
    return asyncio.run(ctx.route(Address(check_host(host), port)))  # as parsers give it


@pytest.mark.parametrize("host", ["169.254.169.254", "fe80::1"])
def test_link_local_metadata_addresses_are_refused_unless_a_rule_names_them(host):
    with pytest.raises(Forbidden, match="link-local"):
        _route('[exits.direct]\n', host)
    allowed = _route('[exits.direct]\n[[rules]]\ncidrs = ["169.254.0.0/16", "fe80::/10"]\n'
                     'exit = "direct"\n', host)
    assert allowed.exit == "direct" and allowed.rule.number == 1


def test_link_local_refusal_happens_before_any_connection(proxy):
    out = curl("-x", proxy.url, "http://169.254.169.254/latest/meta-data/", "-i")
    assert out.stdout.startswith(b"HTTP/1.1 403") and b"link-local" in out.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", "localhost", "::ffff:127.0.0.1"])
def test_every_local_spelling_of_the_listener_is_refused(host):
    with pytest.raises(Forbidden, match="own address"):
        _route('[exits.direct]\n', host, 8118)


def _second_host_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("unshare") is not None


@pytest.mark.skipif(not _second_host_available(), reason="needs root, ip and unshare")
def test_allow_list_refuses_other_hosts_before_parsing(start_proxy):
    """A second host in a network namespace of our own, joined by a veth pair on 192.0.2.0/24
    (a documentation range, used only inside this pair): 192.0.2.2 is allowed, 192.0.2.3 not."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    try:
        pid = holder.pid
        names = (f"apx{pid % 10000}a", f"apx{pid % 10000}b")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "link", "add", names[0], "type", "veth", "peer", "name", names[1])
        run("ip", "link", "set", names[1], "netns", str(pid))
        run("ip", "addr", "add", "192.0.2.1/24", "dev", names[0])
        run("ip", "link", "set", names[0], "up")
        inside = ["nsenter", f"--target={pid}", "--net"]
        run(*inside, "ip", "addr", "add", "192.0.2.2/24", "dev", names[1])
        run(*inside, "ip", "addr", "add", "192.0.2.3/24", "dev", names[1])
        run(*inside, "ip", "link", "set", names[1], "up")
        run(*inside, "ip", "link", "set", "lo", "up")
        served = start_proxy('listen = "192.0.2.1:0"\nallow = ["192.0.2.2/32"]\n'
                             'default = "direct"\n[exits.direct]\n', listen="192.0.2.1:0")

        def client(source: str) -> subprocess.CompletedProcess:
            # /proxy.pac is answered by the proxy itself: nothing goes anywhere else
            return subprocess.run([*inside, "curl", "-s", "-i", "--interface", source,
                                   "--max-time", "5", f"{served.url}/proxy.pac"],
                                  capture_output=True, timeout=30)

        assert client("192.0.2.2").stdout.startswith(b"HTTP/1.1 200")
        refused = client("192.0.2.3")
        assert refused.stdout == b"" and refused.returncode in (52, 56)  # closed, no reply
    finally:
        holder.kill()
        holder.wait()


NUMERIC_LOOPBACK = ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "0x7f000001", "127.0.1"]


@pytest.mark.parametrize("spelling", NUMERIC_LOOPBACK)
@pytest.mark.parametrize("form", ["absolute", "connect"])
def test_numeric_spellings_of_loopback_are_caught(proxy, spelling, form):
    # Sent raw: curl rewrites 127.1 and 2130706433 to 127.0.0.1 before sending, so a test
    # through curl would only ever show the proxy the plain spelling.
    target = f"{spelling}:{proxy.port}"
    line = f"GET http://{target}/ HTTP/1.1" if form == "absolute" else f"CONNECT {target} HTTP/1.1"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"{line}\r\nHost: {target}\r\n\r\n".encode())
        out = recv_all(sock)
    assert out.startswith(b"HTTP/1.1 403") and b"own address" in out, out


@pytest.mark.parametrize("spelling", NUMERIC_LOOPBACK)
def test_numeric_spellings_of_loopback_are_caught_through_socks5(proxy, spelling):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        name = spelling.encode()
        reply = socks_connect(sock, 3, bytes([len(name)]) + name, proxy.port)
    assert reply[:2] == b"\x05\x02", reply  # connection not allowed by ruleset


def test_a_name_that_resolves_to_link_local_is_refused_after_connecting():
    loaded = LoadedProfile("t", None, parse_profile({"exits": {"direct": {}}}, "t.toml"))
    ctx = Context(loaded, Address("127.0.0.1", 8118))
    refusal = ctx.forbidden_peer(Address("metadata.example", 80), ("169.254.169.254", 80),
                                 "169.254.1.1")
    assert "link-local" in refusal
    assert "169.254.169.254" not in refusal  # a web page reads it: not what the name resolved to
    assert ctx.forbidden_peer(Address("169.254.169.254", 80), ("169.254.169.254", 80),
                              "169.254.1.1") is None  # named by address: route() decided
    assert "proxy itself" in ctx.forbidden_peer(Address("me.example", 8118),
                                                ("127.0.0.1", 8118), "127.0.0.1")


def test_accepted_clients_have_nagles_algorithm_off(start_proxy, loop_kind):
    """A response's small writes must go out at once: the event loop (uvloop as `serve` runs,
    or plain asyncio) turns Nagle's algorithm off on every connection it accepts, and the
    listener relies on that rather than setting it again."""
    proxy = start_proxy()
    assert ("uvloop" in type(proxy.loop).__module__) is (loop_kind == "uvloop")
    with proxy.connect() as sock:
        sock.sendall(b"GET http://a.test/ HTTP/1.1\r\n")  # (a head still arriving: it waits)

        def nodelay() -> list[int]:
            return [client.writer.get_extra_info("socket").getsockopt(
                        socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    for client in proxy.server.listener._tasks.values()
                    if hasattr(client, "writer")]

        assert wait_until(lambda: proxy.in_loop(nodelay))
        assert all(proxy.in_loop(nodelay))
