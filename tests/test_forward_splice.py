"""splice.move: a counted splice, as transport/exchange.py uses it for the rest of a forwarded
body; exactly its count, what follows left to the reader, early ends and stalls named."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl

import pytest

from anonproxy.transport import splice


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
