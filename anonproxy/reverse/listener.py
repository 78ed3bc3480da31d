"""The listening side of one reverse entry: TLS when the entry terminates it, the top-level
`allow` list, the connection limit, and the drain at shutdown.

Invariants: a client outside `allow` is closed before a byte of it is read; past
`max_connections` a new client gets a 503, not a hang; a failed TLS handshake or any error on
one connection ends that connection only; draining stops accepting, closes idle keep-alive
connections, and gives busy ones `drain_timeout` before cutting them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from anonproxy import logs
from anonproxy.inbound.client import ClientConn
from anonproxy.inbound.listener import admit, drain
from anonproxy.reverse.entry import ReverseEntry
from anonproxy.reverse.session import serve_reverse
from anonproxy.transport.streams import start_server
from anonproxy.wire.address import Address
from anonproxy.wire.errors import Overloaded, StageTimeout, http_error_response


class EntryListener:
    """Accepts the clients of one entry (`entry()` gives its state as reloads leave it)."""

    def __init__(self, entry: ReverseEntry, allow: Callable[[], list],
                 stopping: asyncio.Event) -> None:
        self.entry = entry
        self._allow = allow
        self._stopping = stopping
        self._server: asyncio.base_events.Server | None = None
        self._tasks: dict[asyncio.Task, ClientConn | None] = {}

    async def start(self) -> Address:
        """Listen on the entry's address; the address bound (its port, when 0 was asked)."""
        entry = self.entry
        self._server = await start_server(
            self._handle, entry.listen.host, entry.listen.port, ssl=entry.tls,
            ssl_handshake_timeout=entry.ctx.limits.header_timeout if entry.tls else None,
            reuse_address=True, backlog=1024)
        port = self._server.sockets[0].getsockname()[1]
        if port != entry.listen.port:
            entry.listen = Address(entry.listen.host, port)
        return entry.listen

    async def drain(self, timeout: float) -> None:
        await drain(self._server, self._tasks, timeout)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        entry = self.entry
        if not admit(writer, self._allow()):
            return
        self._tasks[task] = None
        entry.connections += 1
        try:
            if len(self._tasks) > entry.ctx.limits.max_connections or self._stopping.is_set():
                writer.write(http_error_response(Overloaded(
                    "the service is at its connection limit; try again shortly")))
                return
            await serve_reverse(reader, writer, entry, time.monotonic(), self._stopping,
                                on_client=lambda c: self._tasks.__setitem__(task, c))
        except (OSError, StageTimeout, asyncio.CancelledError):
            pass  # the client went, or shutdown cut this connection
        except Exception:  # noqa: BLE001 -- a bug must not take the listener down: log it, close this one
            logs.log.exception("internal error on a connection to %s", entry.label)
        finally:
            entry.connections -= 1
            self._tasks.pop(task, None)
            try:
                if not writer.is_closing():
                    writer.close()
            except OSError:
                pass
