"""End to end: CONNECT and SOCKS5 tunnels through the real proxy, with curl and raw sockets."""

from __future__ import annotations

import hashlib
import socket

import pytest
from helpers import curl, recv_all, recv_exact, recv_until, socks_connect
from origin import pattern


def test_connect_tunnel_relays_bytes_unchanged(proxy, origin):
    size = 10 * 1024 * 1024
    out = curl("-p", "-x", proxy.url, origin.url(f"/bytes/{size}"))
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(out.stdout).digest() == hashlib.sha256(pattern(size)).digest()
    body = pattern(size)
    out = curl("-p", "-x", proxy.url, origin.url("/upload"), "--data-binary", "@-", input=body)
    assert hashlib.sha256(body).hexdigest() in out.stdout.decode()


def test_connect_sends_nothing_of_its_own(proxy, origin):
    """Through a tunnel the origin sees exactly the client's bytes."""
    with proxy.connect() as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\nHost: x\r\n"
                     "User-Agent: client\r\n\r\n".encode())
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: inner\r\nX-Forwarded-For: 1.2.3.4\r\n"
                     b"Connection: close\r\n\r\n")
        recv_all(sock)
    # CONNECT cannot see inside (that would be TLS in real use): the bytes arrive as sent
    assert origin.last.headers == [("Host", "inner"), ("X-Forwarded-For", "1.2.3.4"),
                                   ("Connection", "close")]


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_socks5_with_curl(proxy, origin, scheme):
    size = 10 * 1024 * 1024
    out = curl("-x", f"{scheme}://{proxy.host}:{proxy.port}", origin.url(f"/bytes/{size}", host="localhost"))
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(out.stdout).digest() == hashlib.sha256(pattern(size)).digest()


def test_socks5_username_password(proxy, origin):
    out = curl("-x", f"socks5h://user:secret@{proxy.host}:{proxy.port}", origin.url("/echo"))
    assert out.returncode == 0, out.stderr
    assert origin.last.target == "/echo"


def test_socks5_ipv4_domain_and_ipv6_address_types(proxy, origin, origin6):
    for atyp, addr, target in (
        (1, socket.inet_aton("127.0.0.1"), origin),
        (3, bytes([9]) + b"localhost", origin),
        (4, socket.inet_pton(socket.AF_INET6, "::1"), origin6),
    ):
        with proxy.connect() as sock:
            reply = socks_connect(sock, atyp, addr, target.port)
            assert reply == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # BND 0.0.0.0:0
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert recv_all(sock).startswith(b"HTTP/1.1 200")
    assert origin6.last.peer[0] == "::1"


@pytest.mark.parametrize("command, name", [(2, "BIND"), (3, "UDP ASSOCIATE")])
def test_socks5_bind_and_udp_are_refused_with_command_not_supported(proxy, command, name):
    with proxy.connect() as sock:
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\x00"
        sock.sendall(b"\x05" + bytes([command]) + b"\x00\x01\x7f\x00\x00\x01\x00\x50")
        assert recv_exact(sock, 10)[:2] == b"\x05\x07"
    assert name in proxy.wait_log(name)


@pytest.mark.parametrize("greeting, expected", [
    (b"\x05\x00", b""),                       # zero methods: close
    (b"\x05\x01\x80", b"\x05\xff"),           # no acceptable method
    (b"\x05\x01\x00\x05\x01\x00\x09\x7f", b"\x05\x00\x05\x08"),  # unknown address type
    (b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50", b"\x05\x00\x05\x01"),  # empty hostname
    (b"\x05\x01\x00\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50", b"\x05\x00\x05\x01"),  # bad version
    (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b"\x00\x5b"),  # SOCKS4: refused (local DNS)
])
def test_hostile_socks_greetings_get_a_reply_code_or_a_clean_close(proxy, origin, greeting, expected):
    with proxy.connect() as sock:
        sock.sendall(greeting)
        got = recv_all(sock)
    assert got[: len(expected)] == expected
    if expected.startswith(b"\x05\x00\x05"):
        assert len(got) == 2 + 10
    assert curl("-x", f"socks5h://{proxy.host}:{proxy.port}", origin.url("/echo")).returncode == 0


def test_socks5_connect_refused_maps_to_reply_code(proxy):
    with proxy.connect() as sock:
        reply = socks_connect(sock, 1, socket.inet_aton("127.0.0.1"), 9)
    assert reply[1] == 0x05  # connection refused


def test_proxy_never_forwards_to_itself(proxy):
    with proxy.connect() as sock:
        reply = socks_connect(sock, 3, bytes([9]) + b"localhost", proxy.port)
    assert reply[1] == 0x02  # not allowed by ruleset
    for target in (f"http://127.0.0.1:{proxy.port}/", f"http://localhost:{proxy.port}/"):
        out = curl("-x", proxy.url, target, "-i")
        assert out.stdout.startswith(b"HTTP/1.1 403"), out.stdout
    out = curl("-p", "-x", proxy.url, f"http://127.0.0.1:{proxy.port}/")
    assert out.returncode != 0
    assert "proxy's own address" in proxy.wait_log("proxy's own address")


def test_ipv4_mapped_addresses_cannot_loop_back_to_the_proxy(proxy):
    out = curl("-x", proxy.url, f"http://[::ffff:127.0.0.1]:{proxy.port}/", "-i")
    assert out.stdout.startswith(b"HTTP/1.1 403"), out.stdout
    with proxy.connect() as sock:
        sock.sendall(f"CONNECT [::ffff:127.0.0.1]:{proxy.port} HTTP/1.1\r\n\r\n".encode())
        assert recv_all(sock).startswith(b"HTTP/1.1 403")


def test_a_bad_connect_target_is_never_echoed_into_the_log(proxy):
    with proxy.connect() as sock:
        sock.sendall(b"CONNECT http://example.com:80/account/reset?token=s3cr3t HTTP/1.1\r\n\r\n")
        reply = recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 400")
    log = proxy.wait_log("bad CONNECT target")
    assert "s3cr3t" not in log and "/account" not in log


def test_a_refused_socks4_client_is_logged(proxy):
    """The owner sees why a SOCKS4 program cannot connect: one log line naming the fix."""
    with proxy.connect() as sock:
        sock.sendall(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00")
        assert recv_all(sock)[:2] == b"\x00\x5b"
    line = proxy.wait_log("socks4 ")
    assert "status=0x5b" in line and "use SOCKS5 with remote names (socks5h://)" in line
