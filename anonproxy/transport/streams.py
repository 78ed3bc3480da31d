"""Stream connections, opened and accepted as asyncio's `open_connection` and `start_server`
open them (their documentation says to copy their code to change their parts), but receiving
through transport/reads.py's compiled Feeder rather than StreamReaderProtocol's Python
`data_received`: the same reader, protocol and writer, fed the same way.

Every listener and every exit's TCP connection is opened here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from anonproxy.transport.reads import feed_fast

_LIMIT = 1 << 16  # (asyncio's own default buffer limit)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_server(handle: Handler, host: str | None = None, port: int | None = None, *,
                       limit: int = _LIMIT, **kwargs: Any) -> asyncio.Server:
    """asyncio.start_server: `handle(reader, writer)` runs as a task per connection."""
    loop = asyncio.get_running_loop()

    def connection() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, handle, loop=loop)
        feed_fast(protocol, reader)
        return protocol

    return await loop.create_server(connection, host, port, **kwargs)


async def open_connection(host: str, port: int, *,
                          limit: int = _LIMIT, **kwargs: Any
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_connection."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    feed_fast(protocol, reader)
    transport, _ = await loop.create_connection(lambda: protocol, host, port, **kwargs)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer
