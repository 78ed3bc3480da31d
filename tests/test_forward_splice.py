"""Forwarded Content-Length bodies spliced socket -> pipe -> socket (transport/exchange.py):
exact bytes and counts, keep-alive and reuse after a spliced body, truncation and stalls as
resets, a client gone or not reading frees the upstream; on uvloop and on plain asyncio; never
over TLS, and the reads as before where splice is unavailable. And splice.move alone: exactly
its count, what follows left to the reader, early ends and stalls named."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import time

import pytest
from helpers import recv_exact, recv_until, wait_until
from test_compat_abort import read_to_the_end, reset_close
from test_splice import pipes, settle

from anonproxy.transport import exchange, splice
from anonproxy.transport.batch import batch_of
from anonproxy.transport.client_side import Trace
from anonproxy.transport.deadline import Deadline
from anonproxy.wire.http1 import RequestParser

BIG = 16 << 20
FAST = 'default = "direct"\n[exits.direct]\n[limits]\nidle_timeout = 1\n'


@pytest.fixture
def spliced(monkeypatch):
    """The counts of the splices the exchanges started."""
    counts: list[int] = []
    real = exchange.move

    async def counting(src, dst, count, **kwargs):
        counts.append(count)
        return await real(src, dst, count, **kwargs)

    monkeypatch.setattr(exchange, "move", counting)
    return counts


def ok(length: int, body: bytes = b"", keep: bool = True) -> bytes:
    connection = b"" if keep else b"Connection: close\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (length, connection) + body


def get(url: str, version: str = "1.1", method: str = "GET") -> bytes:
    return f"{method} {url} HTTP/{version}\r\nHost: raw.test\r\n\r\n".encode()


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One Content-Length response: its head and body."""
    data = recv_until(sock, b"\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head, body + recv_exact(sock, length - len(body))


def test_a_large_body_is_spliced_exactly_and_both_connections_are_kept(
        start_proxy, raw, loop_kind, spliced):
    """The part read with the head goes first, the splice takes the rest of the count; the
    client connection carries the next request, the upstream one is reused; counts exact."""
    bodies = [os.urandom(BIG), os.urandom(BIG + 12345)]
    paths = [raw.script(f"big{i}", ok(len(body), body), "keep") for i, body in enumerate(bodies)]
    proxy = start_proxy()
    assert ("uvloop" in type(proxy.loop).__module__) is (loop_kind == "uvloop")
    with proxy.connect() as sock:
        sock.settimeout(30)
        for path, body in zip(paths, bodies, strict=True):
            sock.sendall(get(raw.url(path)))
            head, got = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    assert [r.conn for r in raw.requests] == [0, 0]  # one upstream connection, reused
    assert len(spliced) == 2 and all(0 < n < len(b) for n, b in zip(spliced, bodies, strict=True))
    log = proxy.wait_log(f"down={len(bodies[1])}")
    assert f"down={len(bodies[0])} " in log and f"down={len(bodies[1])} " in log


def test_bytes_after_a_spliced_body_keep_the_upstream_out_of_the_pool(start_proxy, raw, spliced):
    body = os.urandom(BIG)
    path = raw.script("extra", ok(len(body), body) + b"HTTP/1.1 200 OK\r\n", "keep")
    proxy = start_proxy()
    with proxy.connect() as sock:
        sock.settimeout(30)
        sock.sendall(get(raw.url(path)))
        assert read_response(sock)[1] == body
        sock.sendall(get(raw.url("/good")))
        assert recv_until(sock, b"good").startswith(b"HTTP/1.1 200 ")
    assert [r.conn for r in raw.requests] == [0, 1] and len(spliced) == 1


@pytest.mark.parametrize("then", ["close", "reset"])
@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_an_upstream_gone_mid_splice_resets_the_client(start_proxy, raw, loop_kind, spliced,
                                                       version, then):
    path = raw.script("cut", ok(BIG, os.urandom(BIG // 2)), then)
    proxy = start_proxy()
    with proxy.connect() as sock:
        sock.sendall(get(raw.url(path), version))
        data, end = read_to_the_end(sock)
    assert data.startswith(b"HTTP/1.1 200 ") and end == "reset", (len(data), end)
    assert len(data) < BIG and spliced


def test_an_upstream_stalled_mid_splice_is_cut_after_idle_timeout(start_proxy, raw, loop_kind,
                                                                  spliced):
    path = raw.script("stall", ok(BIG, os.urandom(BIG // 4)), "keep")  # then it waits
    proxy = start_proxy(FAST)
    with proxy.connect() as sock:
        sock.sendall(get(raw.url(path)))
        started = time.monotonic()
        data, end = read_to_the_end(sock)  # (a timeout of 10 s here: never cut)
    assert data.startswith(b"HTTP/1.1 200 ") and end == "reset" and spliced
    assert time.monotonic() - started >= 0.9  # cut by idle_timeout (1 s), not before
    assert wait_until(lambda: not raw._open, timeout=5), "the upstream connection is still open"


def test_a_client_reset_mid_splice_frees_the_upstream_at_once(start_proxy, raw, loop_kind,
                                                              spliced):
    proxy = start_proxy()  # idle_timeout 300 s: what frees the upstream is the reset
    sock = proxy.connect()
    try:
        sock.sendall(get(raw.url("/flood")))
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        # (past the 256 KiB a splice starts at: how much more the socket buffers of a client
        # that does not read take depends on the kernel's autotuning and the machine's load)
        assert wait_until(lambda: raw.flooded > 1 << 20 and spliced), "no splice under way"
    except BaseException:
        sock.close()
        raise
    reset_close(sock)
    assert wait_until(lambda: not raw._open, timeout=5), "the upstream connection is still open"


def test_a_client_that_stops_reading_holds_the_upstream_back_then_is_cut(start_proxy, raw,
                                                                         loop_kind, spliced):
    proxy = start_proxy(FAST.replace("idle_timeout = 1", "idle_timeout = 3"))
    sock = proxy.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    try:
        sock.sendall(get(raw.url("/flood")))
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        assert wait_until(lambda: spliced), "no splice under way"
        deadline, last = time.monotonic() + 2, -1
        while time.monotonic() < deadline and raw.flooded != last:  # until it is held back
            last = raw.flooded
            time.sleep(0.2)
        assert raw.flooded < 64 << 20, raw.flooded  # socket buffers and one pipe, no more
        # nothing moves for idle_timeout: the client is cut off and the upstream freed
        assert wait_until(lambda: not raw._open, timeout=10), "the upstream is still open"
    finally:
        sock.close()


def test_a_stop_while_a_body_is_spliced_leaves_nothing_behind(start_proxy, raw, loop_kind,
                                                               spliced):
    """Drain ends, the splice is cancelled: its watchers and descriptors go, the upstream is
    closed, and the loop saw no error and kept no task (the fixture checks `problems`)."""
    proxy = start_proxy(FAST.replace("idle_timeout = 1", "drain_timeout = 0.5"))
    sock = proxy.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    try:
        sock.sendall(get(raw.url("/flood")))
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        assert wait_until(lambda: spliced), "no splice under way"
        proxy.stop()
        assert proxy.problems == []
        assert wait_until(lambda: not raw._open, timeout=5), "the upstream is still open"
    finally:
        sock.close()


def test_a_spliced_body_holds_its_pipe_only_while_it_moves(proxy_process, raw):
    """Descriptors counted from /proc (the proxy as a process): two more (the pipe) while a
    body waits on a slow client, none left after it, nor after one that broke off."""
    pid = proxy_process.process.pid
    base_pipes = pipes(pid)
    body = os.urandom(BIG)
    path = raw.script("pipe", ok(len(body), body), "keep")
    cut = raw.script("pipe-cut", ok(BIG, body[: BIG // 2]), "reset")
    with proxy_process.connect() as sock:
        sock.settimeout(30)
        sock.sendall(get(raw.url(path)))
        head, part = recv_until(sock, b"\r\n\r\n").split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ")
        # the client reads no more for now: the splice waits on it, holding its pipe
        assert wait_until(lambda: pipes(pid) == base_pipes + 2), pipes(pid)
        assert part + recv_exact(sock, BIG - len(part)) == body
    assert settle(lambda: pipes(pid), base_pipes) == base_pipes
    with proxy_process.connect() as sock:
        sock.sendall(get(raw.url(cut)))
        assert read_to_the_end(sock)[1] == "reset"
    assert settle(lambda: pipes(pid), base_pipes) == base_pipes


@pytest.mark.parametrize("method, status", [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_responses_without_a_body_are_not_spliced(start_proxy, raw, spliced, method, status):
    path = raw.script(f"nobody{status}", b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n"
                      % (status, BIG), "keep")
    proxy = start_proxy()
    with proxy.connect() as sock:
        sock.settimeout(10)
        sock.sendall(get(raw.url(path), method=method))
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 %d " % status)
        sock.sendall(get(raw.url("/good")))
        assert recv_until(sock, b"good").endswith(b"\r\n\r\ngood")
    assert [r.conn for r in raw.requests] == [0, 0] and spliced == []


def test_without_splice_a_large_body_goes_through_the_reads(start_proxy, raw, spliced,
                                                            monkeypatch):
    monkeypatch.setattr(splice, "AVAILABLE", False)  # as on any system but Linux
    body = os.urandom(BIG)
    path = raw.script("plain", ok(len(body), body), "keep")
    proxy = start_proxy()
    with proxy.connect() as sock:
        sock.settimeout(30)
        sock.sendall(get(raw.url(path)))
        assert read_response(sock)[1] == body
    assert spliced == []
    assert f"down={len(body)} " in proxy.wait_log(f"down={len(body)}")


# --- the exchange alone, over TLS on either side (plain asyncio) ---------------------------

class Limits:
    response_timeout, idle_timeout, max_response_header_bytes = 10.0, 10.0, 262144


class Client:
    """The proxy's side of a client connection, as transport/ sees it (transport.ClientSide)."""

    tap = None  # (no cache follows the responses)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.pending = reader, writer, None
        self.deadline, self.limits = Deadline(), Limits()
        self.batch = batch_of(asyncio.get_running_loop())
        self._lost = asyncio.get_running_loop().create_future()

    def write(self, data: bytes) -> bool:
        self.writer.write(data)
        return self.writer.transport.get_write_buffer_size() == 0

    def lost(self) -> asyncio.Future[None]:
        return self._lost

    async def drained(self) -> None:
        await self.writer.drain()


def tls_contexts(folder) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for 127.0.0.1, from a fresh self-signed certificate."""
    from tlsorigin import tls_origin_in

    origin = tls_origin_in(folder)
    _, cert_file = next(origin)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, folder / "origin.key")
    client = ssl.create_default_context(cafile=str(cert_file))
    origin.close()
    return server, client


async def connected(context: tuple[ssl.SSLContext, ssl.SSLContext] | None, answer: bytes = b""):
    """(the accepted side's streams, the connecting side's streams, the server); the accepted
    side writes `answer` once it has read a request head."""
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_accept(reader, writer):
        accepted.set_result((reader, writer))
        if answer:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0,
                                        ssl=context[0] if context else None)
    port = server.sockets[0].getsockname()[1]
    dialed = await asyncio.open_connection("127.0.0.1", port,
                                           ssl=context[1] if context else None)
    return await accepted, dialed, server


@pytest.mark.parametrize("tls", ["none", "client", "upstream", "both"])
async def test_splice_only_when_both_sides_are_plain_sockets(tmp_path, spliced, tls):
    contexts = tls_contexts(tmp_path) if tls != "none" else None
    body = os.urandom(4 << 20)
    up_ctx = contexts if tls in ("upstream", "both") else None
    down_ctx = contexts if tls in ("client", "both") else None
    (_, origin), upstream, up_server = await connected(up_ctx, ok(len(body), body))
    (c_reader, c_writer), (b_reader, b_writer), down_server = await connected(down_ctx)
    request = b"GET /big HTTP/1.1\r\nHost: o.test\r\n\r\n"
    head = RequestParser().feed(request)[0]
    trace = Trace()
    try:
        async with asyncio.TaskGroup() as tasks:
            run = tasks.create_task(exchange.exchange(
                Client(c_reader, c_writer), head, upstream, request, ("direct", "o.test", 80),
                trace, reused=False, pool=None))
            got = await b_reader.readexactly(len(ok(len(body))) + len(body))
        assert await run == (200, True)
    finally:
        for writer in (c_writer, b_writer, upstream[1], origin):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        for server in (up_server, down_server):
            server.close()
            await server.wait_closed()
    assert got == ok(len(body), body) and trace.down == len(body)
    assert bool(spliced) is (tls == "none" and splice.AVAILABLE)


# --- splice.move alone (plain asyncio) ------------------------------------------------------

COUNT = 3 << 20


@pytest.mark.skipif(not splice.AVAILABLE, reason="os.splice is Linux only")
@pytest.mark.parametrize("sent, then, outcome", [
    (COUNT, "wait", "done"),  # nothing past the count
    (COUNT + 4, "wait", "done, trailing"),  # the next response's first bytes: left unread
    (COUNT, "close", "done, trailing"),  # the upstream closed right after
    (COUNT // 2, "close", "broken src"),  # ended before its count
    (COUNT // 2, "wait", "stalled src"),  # nothing more for `idle`
])
async def test_move_takes_exactly_its_count_and_leaves_the_rest_to_the_reader(sent, then,
                                                                              outcome):
    data = os.urandom(sent)
    (src_reader, src), (_, sender), server_a = await connected(None)
    (_, dst), (receiver, receiver_w), server_b = await connected(None)
    moved: list[int] = []
    try:
        sender.write(data)
        if then == "close":
            sender.write_eof()
        try:
            trailing = await splice.move(src.transport, dst.transport, COUNT, idle=0.3,
                                         moved=moved.append)
            got = f"done{', trailing' if trailing else ''}"
        except splice.Broken as broken:
            got = f"{'stalled' if broken.stalled else 'broken'} {broken.side}"
        assert got == outcome
        assert sum(moved) == min(sent, COUNT)
        assert await receiver.readexactly(sum(moved)) == data[:COUNT]
        if sent > COUNT:  # reading resumed where the count ended
            assert await src_reader.readexactly(sent - COUNT) == data[COUNT:]
    finally:
        for writer in (src, sender, dst, receiver_w):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        for server in (server_a, server_b):
            server.close()
            await server.wait_closed()


@pytest.mark.skipif(not splice.AVAILABLE, reason="os.splice is Linux only")
async def test_move_to_a_peer_that_reads_nothing_stalls_on_the_destination():
    (_, src), (_, sender), server_a = await connected(None)
    (_, dst), (_, receiver_w), server_b = await connected(None)
    try:
        sender.write(os.urandom(64 << 20))  # more than the socket buffers and the pipe hold
        with pytest.raises(splice.Broken) as broken:
            await splice.move(src.transport, dst.transport, 64 << 20, idle=0.5,
                              moved=lambda n: None)
        assert (broken.value.side, broken.value.stalled) == ("dst", True)
    finally:
        for writer in (src, sender, dst, receiver_w):
            writer.transport.abort()
        for server in (server_a, server_b):
            server.close()
            await server.wait_closed()
