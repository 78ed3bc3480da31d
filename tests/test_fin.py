"""transport/fin.py on real loopback connections, under asyncio's loop and uvloop: the FIN
goes right behind the bytes written while the transport stays open, and nothing is done where
it would cut bytes off (a full write buffer) or skip TLS's goodbye."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import uvloop
from pki import PublicRoot, server_context

from anonproxy.transport import streams
from anonproxy.transport.fin import send_fin

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


async def _serving(handler, host: str = "127.0.0.1"):
    server = await streams.start_server(handler, host, 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("loop", LOOPS)
def test_the_peer_reads_every_byte_then_the_end_while_the_transport_is_still_open(loop, host):
    async def run():
        seen, finished = asyncio.Event(), asyncio.Event()
        states = []

        async def handler(reader, writer):
            writer.write(b"the whole answer")
            states.append(send_fin(writer.transport))
            await seen.wait()  # (not closed until the client saw the end)
            states.append(writer.transport.is_closing())
            writer.close()
            finished.set()

        server, port = await _serving(handler, host)
        reader, writer = await streams.open_connection(host, port)
        got = await asyncio.wait_for(reader.read(), 5)  # to the end: the FIN came
        seen.set()
        await asyncio.wait_for(finished.wait(), 5)
        writer.close()
        server.close()
        return got, states

    assert LOOPS[loop](run()) == (b"the whole answer", [True, False])


@pytest.mark.parametrize("loop", LOOPS)
def test_bytes_still_in_the_write_buffer_keep_the_fin_for_the_close(loop):
    payload = b"y" * (16 << 20)  # more than loopback's socket buffers take at once

    async def run():
        states = []
        checked = asyncio.Event()

        async def handler(reader, writer):
            writer.write(payload)
            states.append(writer.transport.get_write_buffer_size() > 0)
            states.append(send_fin(writer.transport))
            checked.set()
            await writer.drain()
            writer.close()

        server, port = await _serving(handler)
        reader, writer = await streams.open_connection("127.0.0.1", port)
        await asyncio.wait_for(checked.wait(), 5)  # (asked before anything was read)
        got = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        return len(got), states

    assert LOOPS[loop](run()) == (len(payload), [True, False])


@pytest.mark.parametrize("loop", LOOPS)
def test_a_tls_connection_is_not_shut_under_its_tls(loop, tmp_path):
    root = PublicRoot(tmp_path)
    served = server_context(*root.issue("127.0.0.1"))
    trusted = ssl.create_default_context(cafile=root.path)

    async def run():
        states = []

        async def handler(reader, writer):
            writer.write(b"secret")
            await writer.drain()
            states.append(send_fin(writer.transport))
            writer.close()

        server = await streams.start_server(handler, "127.0.0.1", 0, ssl=served)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await streams.open_connection(
            "127.0.0.1", port, ssl=trusted, server_hostname="127.0.0.1")
        got = await asyncio.wait_for(reader.read(), 5)  # (an end without close_notify raises)
        writer.close()
        server.close()
        return got, states

    assert LOOPS[loop](run()) == (b"secret", [False])


@pytest.mark.parametrize("loop", LOOPS)
def test_a_closing_transport_is_left_to_its_close(loop):
    async def run():
        states = []

        async def handler(reader, writer):
            writer.write(b"bye")
            writer.close()
            states.append(send_fin(writer.transport))

        server, port = await _serving(handler)
        reader, writer = await streams.open_connection("127.0.0.1", port)
        got = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        server.close()
        return got, states

    assert LOOPS[loop](run()) == (b"bye", [False])
