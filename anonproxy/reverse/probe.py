"""Active health probes of a reverse entry's backends: a TCP connection, or with
`health = { path = "/..." }` an HTTP GET of that path answered 2xx or 3xx.

The probe's request names no client and carries no identifying header: a Host of the backend's
own address, `Connection: close`, nothing else. What fails is one sentence (the owner's: it goes
to the log and status, which name backends).
"""

from __future__ import annotations

import asyncio

from anonproxy.exits.connect import os_error, tcp
from anonproxy.reverse.entry import ReverseEntry
from anonproxy.wire.errors import BadUpstreamResponse, StageTimeout
from anonproxy.wire.http1 import ResponseParser
from anonproxy.wire.messages import ResponseHead


class ProbeFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def probe(entry: ReverseEntry, name: str, timeout: float) -> None:
    """Probe backend `name` of `entry`; ProbeFailed says why it is not healthy."""
    address = entry.backends[name]
    health = entry.settings.health
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await tcp(address.host, address.port)
            try:
                if health is not None:
                    await _get(reader, writer, address.authority(80).encode(),
                               health.path.encode())
            finally:
                writer.close()
    except TimeoutError:
        raise ProbeFailed(f"no answer within {timeout:g} s") from None
    except OSError as error:
        raise ProbeFailed(os_error(error)[0]) from None
    except (BadUpstreamResponse, StageTimeout) as error:
        raise ProbeFailed(error.message) from None


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: bytes,
               path: bytes) -> None:
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: " + host +
                 b"\r\nConnection: close\r\n\r\n")
    parser = ResponseParser(b"GET", 65536)
    while True:
        data = await reader.read(65536)
        events = parser.feed(data) if data else parser.feed_eof()
        for event in events:
            if isinstance(event, ResponseHead) and event.status >= 200:
                if event.status >= 400:
                    raise ProbeFailed(f"{path.decode('latin-1')} answered {event.status}")
                return
        if not data:
            raise ProbeFailed(f"{path.decode('latin-1')}: closed without an answer")
