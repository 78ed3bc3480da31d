"""Aborts a client can see (issue 16): an upstream that dies in the middle of a body the client
reads until the connection ends reaches the client as a reset, never as a clean end."""

from __future__ import annotations

import socket
import struct

import pytest
from helpers import recv_until, wait_until

BODY = b"x" * 200_000

# (name, the upstream's response before it dies)
CUT = [
    ("http10-close-delimited", b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + BODY),
    ("http11-no-length", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY),
    ("chunked-mid-chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (len(BODY) * 2)
     + BODY),
    ("length-short", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(BODY) * 2) + BODY),
]


def read_to_the_end(sock: socket.socket) -> tuple[bytes, str]:
    """What the client read, and how the connection ended: "reset" or "fin"."""
    data = b""
    sock.settimeout(10)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "fin"
        data += chunk


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize("name, response", CUT, ids=[c[0] for c in CUT])
def test_an_upstream_reset_mid_body_resets_the_client(proxy, raw, name, response, version):
    path = raw.script(name, response, "reset")
    with proxy.connect() as sock:
        sock.sendall(f"GET {raw.url(path)} HTTP/{version}\r\nHost: raw.test\r\n\r\n".encode())
        data, end = read_to_the_end(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert end == "reset", (name, version, len(data))


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_a_framed_body_cut_by_a_clean_close_resets_the_client(proxy, raw, version):
    for name, response in CUT[2:]:
        path = raw.script(name + "-fin", response, "close")
        with proxy.connect() as sock:
            sock.sendall(f"GET {raw.url(path)} HTTP/{version}\r\nHost: raw.test\r\n\r\n".encode())
            data, end = read_to_the_end(sock)
        assert data.startswith(b"HTTP/1.1 200 ") and end == "reset", (name, version)


def reset_close(sock: socket.socket) -> None:
    """Close with an RST, as a browser does when it drops a connection with unread bytes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_gone_while_its_request_waits_frees_the_upstream_at_once(proxy, raw):
    sock = proxy.connect()
    sock.sendall(f"GET {raw.url('/silent')} HTTP/1.1\r\nHost: raw.test\r\n\r\n".encode())
    assert wait_until(lambda: raw._open), "the request never reached the upstream"
    reset_close(sock)
    # the upstream connection is closed at once, not after the response or idle timeout
    assert wait_until(lambda: not raw._open, timeout=3), "the upstream connection is still open"
    # and never pooled: the next request comes on a new connection
    with proxy.connect() as sock:
        sock.sendall(f"GET {raw.url('/good')} HTTP/1.1\r\nHost: raw.test\r\n\r\n".encode())
        assert recv_until(sock, b"good").startswith(b"HTTP/1.1 200 ")
    assert [r.conn for r in raw.requests] == [0, 1]


def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(proxy, raw):
    path = raw.script("answer", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "keep")
    with proxy.connect() as sock:
        sock.sendall(f"GET {raw.url(path)} HTTP/1.1\r\nHost: raw.test\r\n\r\n".encode())
        sock.shutdown(socket.SHUT_WR)
        data, end = read_to_the_end(sock)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"ok") and end == "fin"
