"""A tunnel after its connection's task has ended (transport/relay.py's take_over): the log
line it writes when it ends, the connection limit and the drain that still count it, its idle
timeout and half-close; for CONNECT and SOCKS5 alike, through the real proxy in this process."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time

import pytest
from helpers import recv_all, recv_exact, socks_connect, wait_until

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


@contextlib.contextmanager
def echo_server():
    """A TCP echo server on loopback: each connection's bytes sent back, its FIN answered with
    ours once everything went back. Yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()


def tunnel(proxy, port: int, how: str, early: bytes = b"") -> socket.socket:
    """A tunnel to 127.0.0.1:port through the proxy; `early`: bytes sent with the request."""
    sock = proxy.connect()
    sock.settimeout(10)
    if how == "socks5":
        assert socks_connect(sock, 1, socket.inet_aton("127.0.0.1"), port)[:2] == b"\x05\x00"
        sock.sendall(early)
    else:
        sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode() + early)
        assert recv_exact(sock, len(ESTABLISHED)) == ESTABLISHED
    return sock


def connection_tasks(proxy) -> int:
    """The listener's connection tasks still running in the proxy's loop."""
    def count() -> int:
        return sum(task.get_coro().__qualname__ == "Listener._handle"
                   for task in asyncio.all_tasks())
    return proxy.in_loop(count)


def line_of(proxy, how: str, port: int, text: str = "") -> str:
    """The log line of the tunnel to `port`, once it is there (with `text` in it)."""
    proto = "connect" if how == "connect" else "socks5"
    want = re.compile(rf"{proto} 127\.0\.0\.1:{port} exit=direct status=\S+ .*{re.escape(text)}")
    wait_until(lambda: want.search(proxy.log()))
    found = want.search(proxy.log())
    assert found, f"no {proto} line for port {port} with {text!r}:\n{proxy.log()[-2000:]}"
    return found.group(0)


@pytest.mark.parametrize("how", ["connect", "socks5"])
def test_a_tunnel_writes_its_line_with_its_bytes_after_its_task_has_ended(start_proxy, loop_kind,
                                                                        how):
    proxy = start_proxy()
    assert ("uvloop" in type(proxy.loop).__module__) is (loop_kind == "uvloop")
    with echo_server() as port:
        sock = tunnel(proxy, port, how, early=b"early")
        assert recv_exact(sock, 5) == b"early"
        sock.sendall(b"0123456789")
        assert recv_exact(sock, 10) == b"0123456789"
        # the tunnel runs without a task of its own, and still counts as a connection
        assert wait_until(lambda: connection_tasks(proxy) == 0), "the connection's task lives on"
        assert proxy.in_loop(proxy.server.connections_now) == 1
        assert f"127.0.0.1:{port}" not in proxy.log()  # no line before the tunnel ends
        sock.close()
        line = line_of(proxy, how, port)
    status = "200" if how == "connect" else "0"
    assert f"status={status} up=15 down=15 " in line, line
    assert wait_until(lambda: proxy.in_loop(proxy.server.connections_now) == 0)


@pytest.mark.parametrize("how", ["connect", "socks5"])
def test_tunnels_count_toward_the_connection_limit_while_they_run(start_proxy, how):
    proxy = start_proxy('default = "direct"\n[exits.direct]\n[limits]\nmax_connections = 2\n')
    with echo_server() as port:
        held = [tunnel(proxy, port, how) for _ in range(2)]
        assert wait_until(lambda: connection_tasks(proxy) == 0)
        with proxy.connect() as sock:
            sock.settimeout(10)
            sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert recv_all(sock).startswith(b"HTTP/1.1 503 ")
        held.pop().close()
        assert wait_until(lambda: proxy.in_loop(proxy.server.connections_now) == 1)
        with tunnel(proxy, port, how) as sock:
            sock.sendall(b"again")
            assert recv_exact(sock, 5) == b"again"
        for sock in held:
            sock.close()


@pytest.mark.parametrize("how", ["connect", "socks5"])
def test_a_stopping_proxy_cuts_a_running_tunnel_and_logs_its_bytes(start_proxy, loop_kind, how):
    proxy = start_proxy('default = "direct"\n[exits.direct]\n[limits]\ndrain_timeout = 0.5\n')
    with echo_server() as port, tunnel(proxy, port, how) as sock:
        sock.sendall(b"hello")
        assert recv_exact(sock, 5) == b"hello"
        assert wait_until(lambda: connection_tasks(proxy) == 0)
        started = time.monotonic()
        assert proxy.stop() == 0
        assert time.monotonic() - started < 5
        assert recv_all(sock) == b""  # cut
        line = line_of(proxy, how, port)
    assert "up=5 down=5 " in line, line


@pytest.mark.parametrize("how", ["connect", "socks5"])
def test_an_idle_tunnel_ends_after_the_idle_timeout_and_a_busy_one_does_not(start_proxy, how):
    proxy = start_proxy('default = "direct"\n[exits.direct]\n[limits]\nidle_timeout = 1\n')
    with echo_server() as port:
        idle, busy = tunnel(proxy, port, how), tunnel(proxy, port, how)
        started = time.monotonic()
        while time.monotonic() - started < 3:  # the busy one moves a byte every 0.3 s
            busy.sendall(b"x")
            assert recv_exact(busy, 1) == b"x"
            time.sleep(0.3)
        idle.settimeout(0)
        assert idle.recv(1) == b""  # the idle one was closed (between 1 and 2 s of quiet)
        busy.sendall(b"still")
        assert recv_exact(busy, 5) == b"still"
        idle.close()
        busy.close()
        assert wait_until(lambda: proxy.in_loop(proxy.server.connections_now) == 0)


@pytest.mark.parametrize("how", ["connect", "socks5"])
def test_a_half_closed_tunnel_still_carries_the_other_direction(start_proxy, loop_kind, how):
    proxy = start_proxy()
    with echo_server() as port, tunnel(proxy, port, how) as sock:
        sock.sendall(b"a" * 100_000)
        sock.shutdown(socket.SHUT_WR)  # our FIN reaches the server; its echo still comes back
        assert recv_all(sock) == b"a" * 100_000
        line = line_of(proxy, how, port)
    assert "up=100000 down=100000 " in line, line
