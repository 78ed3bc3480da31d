"""transport/reads.py's read against StreamReader.read: the same bytes, errors and reader
state, on readers fed by hand and on a real loopback connection (flow control included)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
import uvloop
from pki import PublicRoot, server_context

from anonproxy.transport import reads, streams
from anonproxy.transport.reads import read


async def _until(condition, seconds: float = 5.0) -> None:
    """Each loop turn, until `condition()` holds; AssertionError past `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not condition():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0)


async def _read_all_from_paused(reader, writer, server) -> tuple[bytes, bool]:
    """Everything until the end, 700 bytes a read, each read waiting first until the buffer is
    past its limit (or the sender is done), so that it starts from a paused reader; and whether
    the reader was ever seen paused. Then the connection and the server are closed."""
    got = bytearray()
    paused_seen = False
    while True:
        await _until(lambda: reader._paused or reader._eof)
        paused_seen = paused_seen or reader._paused
        data = await read(reader, 700)
        if not data:
            break
        got += data
    writer.close()
    server.close()
    return bytes(got), paused_seen


def test_the_stream_reader_of_this_python_has_the_fields_read_uses():
    assert reads._KNOWN


async def _both(feed, n: int):
    """What read and StreamReader.read give on two readers fed the same way: (result or the
    exception's type and text, bytes left in the reader)."""
    outcomes = []
    for reading in (read, lambda r, k: r.read(k)):
        reader = asyncio.StreamReader()
        pending = asyncio.ensure_future(reading(reader, n))
        await _until(lambda r=reader: r._waiter is not None)  # (the read waits: feed it)
        feed(reader)
        try:
            got: object = await asyncio.wait_for(pending, 5)
        except Exception as error:  # noqa: BLE001 -- compared, not handled
            got = (type(error), str(error))
        outcomes.append((got, bytes(reader._buffer), reader._waiter))
    return outcomes


@pytest.mark.parametrize("feed, n", [
    (lambda r: r.feed_data(b"hello"), 10),  # fewer bytes than asked
    (lambda r: r.feed_data(b"hello"), 5),
    (lambda r: r.feed_data(b"hello"), 2),  # more than asked: the rest stays
    (lambda r: (r.feed_data(b"ab"), r.feed_data(b"cd")), 3),
    (lambda r: r.feed_eof(), 4),  # the end: b""
    (lambda r: (r.feed_data(b"x"), r.feed_eof()), 4),
    (lambda r: r.set_exception(ConnectionResetError("reset")), 4),
])
def test_a_read_that_waits_gives_what_stream_reader_read_gives(feed, n):
    first, second = asyncio.run(_both(feed, n))
    assert first == second
    assert first[2] is None  # no waiter left behind


@pytest.mark.parametrize("prepare, n", [
    (lambda r: r.feed_data(b"buffered"), 3),
    (lambda r: r.feed_data(b"buffered"), 100),
    (lambda r: (r.feed_data(b"last"), r.feed_eof()), 100),
    (lambda r: r.feed_eof(), 1),
    (lambda r: (r.feed_data(b"lost"), r.set_exception(ConnectionResetError("reset"))), 4),
])
def test_a_read_of_what_is_there_gives_what_stream_reader_read_gives(prepare, n):
    async def run():
        outcomes = []
        for reading in (read, lambda r, k: r.read(k)):
            reader = asyncio.StreamReader()
            prepare(reader)
            try:
                got: object = await reading(reader, n)
            except Exception as error:  # noqa: BLE001 -- compared, not handled
                got = (type(error), str(error))
            outcomes.append((got, bytes(reader._buffer)))
        return outcomes

    first, second = asyncio.run(run())
    assert first == second


def test_a_second_reader_waiting_is_refused_as_stream_reader_refuses_it():
    async def run():
        reader = asyncio.StreamReader()
        waiting = asyncio.ensure_future(read(reader, 4))
        await _until(lambda: reader._waiter is not None)
        with pytest.raises(RuntimeError, match="already waiting"):
            await read(reader, 4)
        reader.feed_data(b"ok")
        return await waiting

    assert asyncio.run(run()) == b"ok"


def test_a_cancelled_wait_leaves_no_waiter_and_the_next_read_works():
    async def run():
        reader = asyncio.StreamReader()
        waiting = asyncio.ensure_future(read(reader, 4))
        await _until(lambda: reader._waiter is not None)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert reader._waiter is None
        reader.feed_data(b"next")
        return await read(reader, 4)

    assert asyncio.run(run()) == b"next"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_reader_paused_by_its_limit_resumes_and_every_byte_arrives_in_order(loop):
    """A real connection with a small limit: the reader pauses its transport when its buffer
    passes twice the limit; reads drain it and resume it, and nothing is lost or reordered."""
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def run():
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        async def send(_, writer):
            writer.write(payload)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(send, sock=listener)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024)
        return await _read_all_from_paused(reader, writer, server)

    runner = uvloop.run if loop == "uvloop" else asyncio.run
    got, paused_seen = runner(run())
    assert got == payload
    assert paused_seen  # (the flow control was exercised)


async def _paused_connection(limit: int = 1024):
    """A real loopback connection whose reader has paused its transport (its buffer passed
    twice `limit`), and what closes it."""
    listener = socket.create_server(("127.0.0.1", 0))

    async def send(_, writer):
        writer.write(b"z" * (16 << 20))  # (more than the socket buffers hold)
        await writer.drain()

    server = await asyncio.start_server(send, sock=listener)
    reader, writer = await asyncio.open_connection(*listener.getsockname()[:2], limit=limit)
    await _until(lambda: reader._paused)

    def close():
        writer.close()
        server.close()
    return reader, close


@pytest.mark.parametrize("reading", [read, lambda r, k: r.read(k)], ids=["read", "StreamReader"])
def test_a_read_that_brings_the_buffer_under_the_limit_resumes_the_transport(reading):
    async def run():
        reader, close = await _paused_connection()
        await reading(reader, len(reader._buffer))  # all of it
        resumed = not reader._paused and reader._transport.is_reading()
        close()
        return resumed

    assert asyncio.run(run())


def test_a_paused_reader_with_nothing_buffered_is_resumed_before_the_wait():
    """(as StreamReader's _wait_for_data does: waiting while paused would never end)"""
    async def run():
        reader, close = await _paused_connection()
        reader._buffer.clear()  # paused, and nothing to read: only a resume brings more
        data = await asyncio.wait_for(read(reader, 100), 5)
        close()
        return data

    assert asyncio.run(run()) == b"z" * 100


# Feeder: what a connection receives, fed into its reader as StreamReaderProtocol does it

def _pair(feeding: bool):
    """A reader and its protocol (no transport), receiving through a Feeder or not."""
    reader = asyncio.StreamReader(limit=4)
    protocol = asyncio.StreamReaderProtocol(reader)
    if feeding:
        reads.feed_fast(protocol, reader)
        assert isinstance(protocol.data_received, reads.Feeder)
    return reader, protocol


@pytest.mark.parametrize("pieces", [
    [b"hello"],
    [b"ab", b"", b"cd"],  # (an empty piece changes nothing)
    [b"x" * 9],  # past twice the limit: with no transport, nothing to pause
    [b"one", b"two", b"three"],
])
def test_a_feeder_leaves_in_the_reader_what_data_received_leaves(pieces):
    async def run():
        outcomes = []
        for feeding in (True, False):
            reader, protocol = _pair(feeding)
            waiting = asyncio.ensure_future(reader.read(100))
            await _until(lambda r=reader: r._waiter is not None)
            for piece in pieces:
                protocol.data_received(piece)
            first = await asyncio.wait_for(waiting, 5)  # (the waiting read was woken)
            outcomes.append((first, bytes(reader._buffer), reader._waiter, reader._paused))
        return outcomes

    fed, plain = asyncio.run(run())
    assert fed == plain


def test_a_feeder_after_the_end_refuses_as_feed_data_does():
    async def run():
        outcomes = []
        for feeding in (True, False):
            reader, protocol = _pair(feeding)
            protocol.eof_received()
            assert reader.at_eof()
            with pytest.raises(AssertionError) as raised:
                protocol.data_received(b"late")
            outcomes.append(str(raised.value))
        return outcomes

    fed, plain = asyncio.run(run())
    assert fed == plain


def test_a_feeder_whose_reader_is_gone_does_nothing():
    async def run():
        reader, protocol = _pair(True)
        feeder = protocol.data_received
        del reader  # (the protocol holds its reader weakly, and so does the Feeder)
        feeder(b"nobody reads this")

    asyncio.run(run())


def test_a_feeder_is_not_put_on_a_reader_of_another_kind():
    class Reader(asyncio.StreamReader):
        pass

    async def run():
        reader = Reader()
        protocol = asyncio.StreamReaderProtocol(reader)
        reads.feed_fast(protocol, reader)
        return "data_received" in vars(protocol)

    assert asyncio.run(run()) is False


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_connections_opened_here_receive_every_byte_in_order_through_a_feeder(loop):
    """transport/streams.py's server and client, a 1 MiB answer to a small limit: both sides
    receive through Feeders, the reader pauses and resumes, nothing is lost or reordered."""
    payload = bytes(range(256)) * 4096
    seen = []

    async def run():
        async def answer(reader, writer):
            seen.append(isinstance(writer.transport.get_protocol().data_received, reads.Feeder))
            seen.append(await reader.readexactly(5))
            writer.write(payload)
            await writer.drain()
            writer.close()

        server = await streams.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await streams.open_connection("127.0.0.1", port, limit=1024)
        protocol = writer.transport.get_protocol()
        assert isinstance(protocol.data_received, reads.Feeder)
        writer.write(b"hello")
        return await _read_all_from_paused(reader, writer, server)

    runner = uvloop.run if loop == "uvloop" else asyncio.run
    got, paused_seen = runner(run())
    assert seen == [True, b"hello"]
    assert got == payload
    assert paused_seen


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_transport_of_is_the_writers_transport_before_and_after_start_tls(loop, tmp_path):
    """(what the write batch and the client write to: after start_tls, the TLS transport)"""
    root = PublicRoot(tmp_path)
    served = server_context(*root.issue("127.0.0.1"))
    trusted = ssl.create_default_context(cafile=root.path)

    async def run():
        async def echo(reader, writer):
            writer.write(await reader.readexactly(4))
            await writer.drain()
            writer.close()

        server = await streams.start_server(echo, "127.0.0.1", 0, ssl=served)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await streams.open_connection("127.0.0.1", port)
        plain = reads.transport_of(writer)
        same_before = plain is writer.transport
        await writer.start_tls(trusted, server_hostname="127.0.0.1")
        secure = reads.transport_of(writer)
        secure.write(b"ping")  # (through TLS: the server reads it in the clear)
        echoed = await reader.readexactly(4)
        writer.close()
        server.close()
        return same_before, secure is writer.transport, secure is not plain, echoed

    runner = uvloop.run if loop == "uvloop" else asyncio.run
    assert runner(run()) == (True, True, True, b"ping")


def test_unread_and_quiet_say_what_a_reader_holds():
    async def run():
        reader = asyncio.StreamReader()
        states = [(reads.unread(reader), reads.quiet(reader))]
        reader.feed_data(b"abc")
        states.append((reads.unread(reader), reads.quiet(reader)))
        await read(reader, 2)
        states.append((reads.unread(reader), reads.quiet(reader)))
        await read(reader, 5)
        reader.feed_eof()
        states.append((reads.unread(reader), reads.quiet(reader)))
        return states

    assert asyncio.run(run()) == [(0, True), (3, False), (1, False), (0, False)]
    assert reads.unread(object()) == 1  # (a reader of another kind may hold bytes elsewhere)
