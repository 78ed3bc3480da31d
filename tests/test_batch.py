"""Small writes gathered for the end of the loop's turn (transport/batch.py), on real loopback
sockets: the turn's first write goes at once, later ones at the turn's end, each writer's bytes
in the order written, a closed writer gets nothing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from anonproxy.transport.batch import WriteBatch


@contextlib.asynccontextmanager
async def _pairs(count: int) -> AsyncIterator[list[tuple[asyncio.StreamWriter, socket.socket]]]:
    """`count` writers of ours, each with the raw socket at its other end (non-blocking);
    all closed after."""
    pairs: list[tuple[asyncio.StreamWriter, socket.socket]] = []
    try:
        for _ in range(count):
            with socket.create_server(("127.0.0.1", 0)) as server:
                _, writer = await asyncio.open_connection(*server.getsockname()[:2])
                peer, _ = server.accept()
            peer.setblocking(False)
            pairs.append((writer, peer))
        yield pairs
    finally:
        for writer, peer in pairs:
            writer.close()
            peer.close()


async def _arrived(peer: socket.socket, expected: bytes, timeout: float = 5) -> bytes:
    """What reaches `peer` once `expected` has, or by `timeout` (awaiting each read)."""
    loop = asyncio.get_running_loop()
    got = b""
    deadline = loop.time() + timeout
    while len(got) < len(expected) and (left := deadline - loop.time()) > 0:
        try:
            piece = await asyncio.wait_for(loop.sock_recv(peer, 1 << 16), left)
        except TimeoutError:
            break
        if not piece:
            break
        got += piece
    return got


async def test_the_first_write_of_a_turn_goes_at_once_later_ones_at_its_end():
    batch = WriteBatch(asyncio.get_running_loop())
    async with _pairs(2) as [(first, first_peer), (second, second_peer)]:
        batch.add(first, b"at once")
        batch.add(second, b"at the end")
        assert await _arrived(first_peer, b"at once") == b"at once"
        assert await _arrived(second_peer, b"at the end") == b"at the end"


async def test_a_later_write_waits_until_the_turn_ends():
    batch = WriteBatch(asyncio.get_running_loop())
    async with _pairs(2) as [(first, _), (second, second_peer)]:
        batch.add(first, b"1")
        batch.add(second, b"2")
        # no await in between: still inside the turn
        second_peer.setblocking(True)
        second_peer.settimeout(0.05)
        try:
            early = second_peer.recv(10)
        except TimeoutError:
            early = b""
        assert early == b""  # queued, not written yet
        second_peer.setblocking(False)
        assert await _arrived(second_peer, b"2") == b"2"


async def test_one_writers_bytes_keep_their_order_with_direct_writes_after_a_flush():
    batch = WriteBatch(asyncio.get_running_loop())
    async with _pairs(2) as [(other, _), (writer, peer)]:
        batch.add(other, b"")  # the turn's first write is another writer's
        batch.add(writer, b"1")
        batch.add(writer, b"2")
        batch.flush(writer)  # what a direct user of the writer does first
        writer.write(b"3")
        batch.add(writer, b"4")
        assert await _arrived(peer, b"1234") == b"1234"


async def test_a_writer_closed_before_the_turn_ends_gets_nothing():
    batch = WriteBatch(asyncio.get_running_loop())
    async with _pairs(2) as [(other, other_peer), (writer, peer)]:
        batch.add(other, b"x")
        batch.add(writer, b"never")
        writer.close()
        assert await _arrived(other_peer, b"x") == b"x"  # the turn ended: the batch went out
        peer.setblocking(True)
        peer.settimeout(1)
        assert peer.recv(10) == b""  # the close, nothing before it
