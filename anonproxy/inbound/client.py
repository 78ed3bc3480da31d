"""The client side of one HTTP connection: requests parsed as they arrive, and writes back.

Invariants: a request head must arrive within `header_timeout` of its first byte (else 408);
between requests a connection may idle for `idle_timeout`; a client that stops reading for
`idle_timeout` is cut off; the bytes read are bounded by one read size plus the parser's own
limits. The hot path (heads, writes back) uses the connection's one Deadline, not a timeout
object per read; body and tunnel reads, which may run in another task, use asyncio.timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from anonproxy.config.models import Limits
from anonproxy.exits.context import Context
from anonproxy.transport.batch import SMALL, batch_of
from anonproxy.transport.client_side import READ_SIZE, ClientGone
from anonproxy.transport.deadline import Deadline
from anonproxy.transport.fin import send_fin
from anonproxy.transport.reads import read, transport_of
from anonproxy.wire.errors import (
    BadRequest,
    Blocked,
    ProxyError,
    RequestTimeout,
    http_error_response,
)
from anonproxy.wire.http1 import RequestParser
from anonproxy.wire.messages import END, Event, RequestHead
from anonproxy.wire.response_relay import ResponseTap

_NO_EVENTS: deque[Event] = deque()  # every tunnel's (empty) queue: one, shared, never filled


class ClientConn:
    """The client side: a reader fed through the request parser, and the writer (the
    transport layer's ClientSide)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 select: Callable[[tuple[str, str] | None], Context], ctx: Context,
                 deadline: Deadline | None = None):
        """`deadline`: the connection task's timer, when the listener made one already."""
        self.reader, self._writer, self.select = reader, writer, select
        self.ctx = ctx  # the profile of the request at hand (credentials may pick another)
        limits = self.ctx.limits
        self.parser = RequestParser(limits.max_header_bytes, limits.max_headers)
        self.pending: deque[Event] = deque()
        self.idle = True  # waiting between requests: safe to close on shutdown
        self.deadline = deadline or Deadline()  # for the connection's own task
        self.batch = batch_of(self.deadline.loop)  # small writes wait for the turn's end
        self._lost: asyncio.Future[None] | None = None
        self._watcher: asyncio.Future[None] | None = None  # a task of ours behind _lost, if any
        # nobody else follows its responses (a cache's Capture stands in when one does)
        self.tap: ResponseTap | None = None
        self.tunnel: asyncio.Future[None] | None = None  # once the connection became a tunnel

    @property
    def writer(self) -> asyncio.StreamWriter:
        """The client's writer, with what `write` queued for it written first: whoever uses
        it directly (errors, tunnels, TLS, splice, close) comes after every byte before."""
        self.batch.flush(self._writer)
        return self._writer

    @property
    def limits(self) -> Limits:
        """The limits of the profile serving the request at hand."""
        return self.ctx.limits

    def become_tunnel(self, tunnel: asyncio.Future[None]) -> None:
        """The connection is a tunnel from now on, one that runs on without the connection's
        task (transport/relay.py's take_over): `tunnel` is done when it has ended, and cut
        when cancelled. Its parser and queue go."""
        self.tunnel = tunnel
        self.parser.close()
        self.parser = None  # type: ignore[assignment]  # (never fed again)
        self.pending = _NO_EVENTS

    def feed(self, data: bytes) -> None:
        self.pending.extend(self.parser.feed(data))

    def lost(self) -> asyncio.Future[None]:
        """Done when the connection is lost (a reset, or closed after a write to a client that
        closed); a FIN alone is a half-close and leaves it pending. One per connection."""
        if self._lost is None:
            waiter = _close_waiter(self._writer)
            if waiter is not None:  # the stream's own: no task per connection to watch it
                self._lost = waiter
            else:
                self._lost = self._watcher = asyncio.ensure_future(self.writer.wait_closed())
                self._watcher.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self._lost

    def ended(self) -> None:
        """The response went out whole and nothing follows on this connection: its FIN goes
        right behind the last byte (transport/fin.py), ahead of the bookkeeping and the close
        (`end`); not when bytes still wait in the transport (they go first, the FIN at the
        close) nor on TLS."""
        self.batch.flush(self._writer)
        send_fin(transport_of(self._writer))

    def end(self) -> None:
        """Nothing more goes to the client: what is queued goes out, then the connection
        closes (its FIN follows the last byte)."""
        self.batch.flush(self._writer)
        self._writer.close()

    def close(self) -> None:
        """The connection's task is ending: what is queued goes out, its timer, parser and
        watcher go with it."""
        self.batch.flush(self._writer)
        self.deadline.close()
        if self.parser is not None:
            self.parser.close()
        if self._watcher is not None:
            self._watcher.cancel()

    async def next_head(self, started: float | None) -> RequestHead | None:
        """The next request head, or None when the client is done (or idle too long)."""
        limits = self.ctx.limits
        while True:
            while self.pending and self.pending[0] is END:  # the end of a bodiless request
                self.pending.popleft()
            if self.pending:
                break
            if started is None:
                self.idle = True
                timeout = limits.idle_timeout
            else:
                timeout = started + limits.header_timeout - time.monotonic()
            deadline = self.deadline
            deadline.arm(max(timeout, 0))
            try:
                data = await read(self.reader, READ_SIZE)
            except asyncio.CancelledError:
                if not deadline.expired():
                    raise
                if started is None:
                    return None
                raise RequestTimeout(
                    f"the request head did not arrive within {limits.header_timeout:g} s"
                ) from None
            except OSError:
                return None
            finally:
                deadline.disarm()
            if not data:
                return None
            if started is None:
                started = time.monotonic()
                self.idle = False
            self.feed(data)
        self.idle = False
        event = self.pending.popleft()
        if not isinstance(event, RequestHead):
            raise BadRequest("unexpected data between requests")
        return event

    async def next_event(self) -> Event:
        """The next body piece, end of message, or tunnel start of the current request."""
        while not self.pending:
            try:
                async with asyncio.timeout(self.ctx.limits.idle_timeout):
                    data = await self.reader.read(READ_SIZE)
            except (OSError, TimeoutError):
                raise ClientGone() from None
            if not data:
                raise ClientGone()
            self.feed(data)
        return self.pending.popleft()

    def refuse(self, error: ProxyError) -> tuple[str, str] | None:
        """Answer a request with `error` (a response that closes the connection, unless the
        connection is gone already); the list and rule when a block list refused it."""
        if not self.writer.is_closing():
            self.writer.write(http_error_response(error))
        return (error.list_name, error.rule) if isinstance(error, Blocked) else None

    async def send(self, data: bytes) -> None:
        """Write to the client; one that stops reading for `idle_timeout` is cut off."""
        if not self.write(data):
            await self.drained()

    def write(self, data: bytes) -> bool:
        """Write to the client; True when it all went out at once (the usual case), else the
        caller must await `drained()`. A small write waits for the end of the loop's turn
        (transport/batch.py), so that the turn's responses go out back to back."""
        writer = self._writer
        transport = transport_of(writer)
        if len(data) <= SMALL and not transport.is_closing():
            self.batch.add(writer, data)
            return True
        self.batch.flush(writer)
        transport.write(data)
        return transport.get_write_buffer_size() == 0 and not transport.is_closing()

    async def drained(self) -> None:
        """Wait until the client took what was written; one that stops reading for
        `idle_timeout` is cut off (ClientGone)."""
        writer = self.writer  # (what is queued, written first)
        deadline = self.deadline
        deadline.arm(self.ctx.limits.idle_timeout)
        try:
            await writer.drain()
        except asyncio.CancelledError:
            if not deadline.expired():
                raise
            writer.transport.abort()
            raise ClientGone() from None
        except OSError:
            writer.transport.abort()
            raise ClientGone() from None
        finally:
            deadline.disarm()


def _close_waiter(writer: asyncio.StreamWriter) -> asyncio.Future[None] | None:
    """The future a stream's protocol completes when its connection is lost (what
    `wait_closed` awaits: StreamReaderProtocol._get_close_waiter, Python 3.8 to 3.13), or None
    where asyncio has none. It is the protocol's: never cancelled here."""
    get = getattr(getattr(writer, "_protocol", None), "_get_close_waiter", None)
    waiter = get(writer) if get is not None else None
    return waiter if isinstance(waiter, asyncio.Future) else None
