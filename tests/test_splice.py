"""Bulk tunnels end to end: directions that turn bulk are spliced socket -> pipe -> socket
(Linux); checksums both ways, half-close, backpressure, resets, descriptors handed back and
byte order, counted from /proc (so the proxy is a process of its own where they are counted)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import threading
import time

import pytest
from helpers import recv_all, recv_exact, socks_connect

BULK = 50 * 1024 * 1024


def open_fds(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def pipes(pid: int) -> int:
    """Pipes the proxy holds (its stdout and the event loop's own among them)."""
    return sum(link.startswith("pipe:") for link in open_fds(pid))


def settle(measure, want: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while (now := measure()) > want and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@contextlib.contextmanager
def upstream(handler):
    """A one-connection TCP server on loopback running `handler(conn)` in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    result: dict = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                result["value"] = handler(conn)
            except OSError as error:
                result["error"] = error

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], result
    finally:
        thread.join(30)
        listener.close()


def tunnel_to(proxy, port: int, how: str) -> socket.socket:
    sock = proxy.connect()
    sock.settimeout(30)
    if how == "socks5":
        assert socks_connect(sock, 1, socket.inet_aton("127.0.0.1"), port)[:2] == b"\x05\x00"
    else:
        sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        established = b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert recv_exact(sock, len(established)) == established  # and not a byte more
    return sock


def send_then_shut(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


def sha_until_eof(sock: socket.socket) -> tuple[int, str]:
    digest, n = hashlib.sha256(), 0
    while chunk := sock.recv(1 << 20):
        digest.update(chunk)
        n += len(chunk)
    return n, digest.hexdigest()


@pytest.mark.parametrize("how", ["connect", "socks5"])
def test_a_bulk_tunnel_relays_50mb_each_way_unchanged_with_half_close_each_way(proxy_process,
                                                                              how):
    proxy = proxy_process
    pid = proxy.process.pid
    baseline = len(open_fds(pid))
    up, down = os.urandom(BULK), os.urandom(BULK)

    # the client finishes sending first: the origin sees EOF, then answers in bulk
    def answer_after_eof(conn):
        got = sha_until_eof(conn)
        send_then_shut(conn, down)
        return got

    with upstream(answer_after_eof) as (port, result), tunnel_to(proxy, port, how) as sock:
        send_then_shut(sock, up)
        assert sha_until_eof(sock) == (BULK, hashlib.sha256(down).hexdigest())
    assert result["value"] == (BULK, hashlib.sha256(up).hexdigest())

    # the origin finishes sending first: the client sees EOF, then sends in bulk
    def send_then_read(conn):
        send_then_shut(conn, down)
        return sha_until_eof(conn)  # the client may still send after our EOF

    with upstream(send_then_read) as (port, result), tunnel_to(proxy, port, how) as sock:
        assert sha_until_eof(sock) == (BULK, hashlib.sha256(down).hexdigest())
        send_then_shut(sock, up)
        assert recv_all(sock) == b""  # closed once both sides are done
    assert result["value"] == (BULK, hashlib.sha256(up).hexdigest())
    counted = f"up={BULK} down={BULK}"  # spliced bytes are counted for the log
    assert proxy.wait_log(counted).count(counted) == 2
    assert settle(lambda: len(open_fds(pid)), baseline) == baseline


@pytest.mark.parametrize("how", ["connect", "socks5"])
def test_a_client_that_stops_reading_a_spliced_tunnel_keeps_the_proxy_small(proxy_process, how):
    proxy = proxy_process
    pid = proxy.process.pid
    baseline, base_pipes, before = len(open_fds(pid)), pipes(pid), rss_kib(pid)
    sent = [0]
    stop = threading.Event()

    def flood(conn):
        block = b"z" * (1 << 20)
        conn.settimeout(1)
        while not stop.is_set():
            try:
                sent[0] += conn.send(block)
            except TimeoutError:
                pass
        return sent[0]

    with upstream(flood) as (port, _result):
        sock = tunnel_to(proxy, port, how)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        try:
            assert sock.recv(1 << 20)  # some bytes arrive, then the client reads no more
            deadline, last = time.monotonic() + 15, -1
            while time.monotonic() < deadline and sent[0] != last:
                last = sent[0]
                time.sleep(0.5)
            assert pipes(pid) == base_pipes + 2  # the bulk direction runs through a pipe now
            assert sent[0] < 64 << 20, sent[0]  # the sender is held back ...
            assert rss_kib(pid) - before < 20 << 10  # ... and the proxy did not buffer it
        finally:
            stop.set()
            sock.close()
    assert settle(lambda: pipes(pid), base_pipes) == base_pipes
    assert settle(lambda: len(open_fds(pid)), baseline) == baseline


def test_an_upstream_reset_mid_splice_closes_the_client_promptly(proxy_process):
    proxy = proxy_process
    pid = proxy.process.pid
    baseline, base_pipes = len(open_fds(pid)), pipes(pid)
    streamed = threading.Event()

    def reset_mid_stream(conn):
        for _ in range(64):
            conn.sendall(b"r" * (1 << 20))
        streamed.wait(30)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return "reset"  # closed with an RST by the with-block

    with upstream(reset_mid_stream) as (port, _result), tunnel_to(proxy, port, "connect") as sock:
        received = 0
        while received < 32 << 20:
            received += len(sock.recv(1 << 20))
        assert pipes(pid) == base_pipes + 2
        streamed.set()
        with pytest.raises((ConnectionResetError, EOFError)):
            while True:  # a timeout here (30 s) would mean the client was left hanging
                if not sock.recv(1 << 20):
                    raise EOFError
    assert settle(lambda: len(open_fds(pid)), baseline) == baseline


def test_a_spliced_direction_gives_its_descriptors_back_when_quiet_and_keeps_order(
        proxy_process):
    proxy = proxy_process
    pid = proxy.process.pid
    baseline, base_pipes = len(open_fds(pid)), pipes(pid)
    go_on = threading.Event()
    first, second = os.urandom(8 << 20), os.urandom(8 << 20)

    def two_bursts(conn):
        conn.sendall(first)
        go_on.wait(30)
        send_then_shut(conn, second)
        return sha_until_eof(conn)

    with upstream(two_bursts) as (port, result), tunnel_to(proxy, port, "connect") as sock:
        got = b""
        while len(got) < len(first):
            got += sock.recv(1 << 20)
        assert got == first
        assert pipes(pid) == base_pipes + 2
        # quiet for a few seconds: the descriptors go, the protocols take over again
        assert settle(lambda: pipes(pid), base_pipes, timeout=20) == base_pipes
        assert len(open_fds(pid)) <= baseline + 2  # just the tunnel's two sockets
        go_on.set()
        assert recv_all(sock) == second
        sock.sendall(b"after")
        sock.shutdown(socket.SHUT_WR)
    assert result["value"] == (5, hashlib.sha256(b"after").hexdigest())
    assert settle(lambda: len(open_fds(pid)), baseline) == baseline


def test_bytes_queued_before_a_direction_turns_bulk_go_first(proxy):
    """The client lags while the origin trickles, so the proxy holds a queue toward it when
    the origin starts to blast: the splice must wait for that queue to drain."""
    trickle = [os.urandom(16 << 10) for _ in range(400)]
    blast = os.urandom(32 << 20)

    def trickle_then_blast(conn):
        for piece in trickle:
            conn.sendall(piece)
            time.sleep(0.001)  # the trickle itself
        conn.sendall(blast)
        conn.shutdown(socket.SHUT_WR)
        return sha_until_eof(conn)

    with upstream(trickle_then_blast) as (port, result):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(proxy.address)
        with sock:
            sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert recv_exact(sock, 39).startswith(b"HTTP/1.1 200")
            time.sleep(1)  # the client lagging is the case under test: not reading yet
            assert sha_until_eof(sock) == (
                len(trickle) * len(trickle[0]) + len(blast),
                hashlib.sha256(b"".join(trickle) + blast).hexdigest())
            sock.shutdown(socket.SHUT_WR)
    assert result["value"] == (0, hashlib.sha256(b"").hexdigest())
