"""One request/response exchange on an upstream connection, and WebSocket hand-over.

The request head goes up, the body (if any) is pumped up while the response streams down:
interim responses are forwarded, the final one is re-framed for the client (chunked passed
through to HTTP/1.1 clients, close-delimited otherwise).

Invariants: once a response head has reached the client, a failure aborts the client connection
(a truncated body is never mistaken for a complete one); an upstream connection is handed back
for reuse only after a complete exchange that both sides allow to be kept alive and after which
nothing more arrived; a reused connection found closed before it answered raises StaleUpstream,
so the caller may retry a bodiless request once on a fresh one.
"""

from __future__ import annotations

import asyncio
from collections import deque

from anonproxy.exits.connect import Stream
from anonproxy.inbound.client import READ_SIZE, ClientConn, ClientGone, Trace
from anonproxy.transport.relay import relay
from anonproxy.transport.upstream import UpstreamPool
from anonproxy.wire.errors import BadUpstreamResponse, ProxyError, StageTimeout
from anonproxy.wire.headers import sanitize_response
from anonproxy.wire.http1 import (
    END,
    LAST_CHUNK,
    Body,
    End,
    Event,
    RequestHead,
    ResponseHead,
    ResponseParser,
    Tunnel,
    chunk,
    render_response_head,
)


class StaleUpstream(Exception):
    """A reused upstream connection closed before answering."""


async def exchange(
    client: ClientConn,
    head: RequestHead,
    stream: Stream,
    request: bytes,
    key: tuple[str, str, int],
    trace: Trace,
    *,
    reused: bool,
    pool: UpstreamPool | None,
) -> tuple[int, bool]:
    """Send one request on `stream` and relay its response. Returns (status, client keep-alive).
    `pool`: where the connection goes back (under `key`) when it is clean — the pool it came
    from, so a new identity's fresh pool never receives an old connection; None: not kept."""
    up_reader, up_writer = stream
    exchange = Exchange(client, head, up_reader, trace, key)
    reusable = False
    try:
        up_writer.write(request)
        if not head.has_body:
            if up_writer.transport.get_write_buffer_size() or up_writer.is_closing():
                await up_writer.drain()  # rare: the request head did not go out at once
            status = await exchange.relay_response()
            reusable = exchange.upstream_reusable
        else:
            async with asyncio.TaskGroup() as tasks:
                body = tasks.create_task(exchange.pump_body(up_writer))
                status = await exchange.relay_response()
                if not body.done():  # answered before the body was sent: stop reading it
                    body.cancel()
                    exchange.client_keep_alive = False
            reusable = exchange.upstream_reusable and exchange.body_complete
        if exchange.tunnel is not None:
            await websocket(client, stream, exchange.tunnel, trace)
            return status, False
        if head.websocket:
            # refused upgrade: what the client sent after it was parsed as tunnel bytes
            return status, False
        return status, exchange.client_keep_alive
    except* ConnectionError as group:  # the upstream reset under us
        if exchange.head_sent:
            client.writer.transport.abort()
            raise ClientGone() from None
        if reused and exchange.nothing_received:
            raise StaleUpstream() from None
        raise BadUpstreamResponse(f"{exchange.where} reset the connection") from group
    except* ClientGone:
        raise ClientGone() from None
    except* ProxyError as group:
        error = group.exceptions[0]
        if exchange.head_sent:
            client.writer.transport.abort()
            raise ClientGone() from None
        if reused and exchange.nothing_received and isinstance(error, BadUpstreamResponse):
            raise StaleUpstream() from None
        raise error from None
    finally:
        if pool is not None and reusable and exchange.tunnel is None:
            pool.give(key, stream)
        elif exchange.tunnel is None:
            up_writer.close()


class Exchange:
    """The state of one request/response exchange."""

    def __init__(self, client: ClientConn, head: RequestHead, up_reader, trace: Trace,
                 key: tuple[str, str, int]):
        self.client, self.head, self.up_reader, self.trace = client, head, up_reader, trace
        self.key = key
        self.head_queued = False  # a response head is in the output (maybe not yet written)
        self.head_sent = False  # ... and has been written: errors must now abort, not answer
        self.nothing_received = True
        self.body_complete = not head.has_body
        self.client_keep_alive = head.keep_alive
        self.upstream_reusable = False
        self.tunnel: bytes | None = None
        self.chunked_up = head.framing == "chunked"
        self.final: ResponseHead | None = None  # the final (2xx-5xx) response head, once it came
        self.read_timeout = client.ctx.limits.response_timeout  # for the head; then idle_timeout
        self.to_client = "length"  # how its body goes to the client (_client_framing)

    @property
    def where(self) -> str:
        """The upstream, for error messages: host:port (exit 'path')."""
        return f"{self.key[1]}:{self.key[2]} (exit '{self.key[0]}')"

    async def pump_body(self, up_writer: asyncio.StreamWriter) -> None:
        client = self.client
        while True:
            event = await client.next_event()
            if isinstance(event, End):
                if self.chunked_up:
                    up_writer.write(LAST_CHUNK)
                self.body_complete = True
                break
            if isinstance(event, Body):
                self.trace.up += len(event.data)
                up_writer.write(chunk(event.data) if self.chunked_up else event.data)
            try:
                await up_writer.drain()
            except ConnectionError:
                return  # the upstream stopped reading; its response (if any) still comes
        try:
            await up_writer.drain()
        except ConnectionError:
            return

    async def relay_response(self) -> int:
        """Relay interim responses, then the final one, to the client.

        Everything one upstream read produced goes to the client in one write (fewer system
        calls); the head counts as sent only once that write happened. The upstream is read
        here, not in a helper coroutine: this is the hot path of every request. Heads go
        through `_queue_head`, the end through `_finish`.
        """
        deadline = self.client.deadline  # this runs in the connection's own task
        up_reader = self.up_reader
        parser = ResponseParser(self.head.method)
        pending: deque[Event] = deque()
        out: list[bytes] = []
        while True:
            if not pending:
                if out:
                    await self._flush(out)
                timeout = self.read_timeout
                deadline.arm(timeout)
                try:
                    data = await up_reader.read(READ_SIZE)
                except asyncio.CancelledError:
                    if not deadline.expired():
                        raise
                    raise self._silence(timeout) from None
                finally:
                    deadline.disarm()
                if data:
                    self.nothing_received = False
                    pending.extend(parser.feed(data))
                else:
                    pending.extend(parser.feed_eof())
                continue
            event = pending.popleft()
            if isinstance(event, Body):
                self.trace.down += len(event.data)
                out.append(chunk(event.data) if self.to_client == "chunked" else event.data)
            elif isinstance(event, ResponseHead):
                self._queue_head(event, out)
            elif isinstance(event, End) and self.final is not None:  # (not an interim's end)
                return await self._finish(out, parser.reusable and not pending)
            elif isinstance(event, Tunnel):
                await self._flush(out)
                self.tunnel = event.rest
                return 101

    def _silence(self, timeout: float) -> Exception:
        """What an upstream that stayed silent past `timeout` raises: before the head reached
        the client, a timeout to answer with; after, a reset (the client connection aborts)."""
        if self.head_sent:
            return ConnectionResetError("upstream idle")
        return StageTimeout(f"{self.where} did not answer within {timeout:g} s")

    def _queue_head(self, event: ResponseHead, out: list[bytes]) -> None:
        """Queue a response head for the client: an interim one (HTTP/1.1 clients only), a
        101 the client asked for, or the final one (which sets the body's framing)."""
        if event.status == 101:
            if not self.head.websocket:
                raise BadUpstreamResponse("the upstream switched protocols unasked")
            # (not `final`: a Tunnel, not an End, ends it)
            headers = sanitize_response(event.headers, websocket=True, listed=event.listed)
        elif event.status < 200:
            if self.head.version == b"1.1":
                out.append(render_response_head(
                    event.status, event.reason,
                    sanitize_response(event.headers, listed=event.listed)))
            return
        else:
            self.final = event
            self.read_timeout = self.client.ctx.limits.idle_timeout  # now between body reads
            headers = self._final_headers(event)
            self.to_client = self._client_framing(event)
        out.append(render_response_head(event.status, event.reason, headers))
        self.head_queued = True

    async def _finish(self, out: list[bytes], parser_clean: bool) -> int:
        """The final response ended: send what is left; the upstream may be reused if both
        ends allow it and nothing more arrived (`parser_clean`)."""
        final = self.final
        if self.to_client == "chunked":
            out.append(LAST_CHUNK)
        await self._flush(out)
        self.upstream_reusable = final.keep_alive and final.framing != "close" and parser_clean
        return final.status

    async def _flush(self, out: list[bytes]) -> None:
        if out:
            data = b"".join(out) if len(out) > 1 else out[0]
            out.clear()
            if not self.client.write(data):
                await self.client.drained()
            self.head_sent = self.head_queued

    def _final_headers(self, response: ResponseHead):
        """The final response's headers for the client, and whether its connection stays open."""
        headers = sanitize_response(response.headers, listed=response.listed)
        old_client = self.head.version != b"1.1"
        if response.framing == "close" or (response.framing == "chunked" and old_client):
            self.client_keep_alive = False  # the body will end where the connection does
            if response.framing == "chunked":
                headers = [(n, v) for n, v in headers if n.lower() != b"transfer-encoding"]
        if not self.client_keep_alive:
            headers.append((b"Connection", b"close"))
        elif old_client:
            headers.append((b"Connection", b"keep-alive"))
        return headers

    def _client_framing(self, response: ResponseHead) -> str:
        """How the body goes to the client: as framed upstream, or raw until close."""
        if response.framing == "chunked" and self.head.version == b"1.1":
            return "chunked"
        if response.framing in ("chunked", "close"):
            return "close-raw"
        return response.framing


async def websocket(client: ClientConn, stream: Stream, rest: bytes, trace: Trace) -> None:
    up_reader, up_writer = stream
    try:
        event = await client.next_event() if client.pending else END
        sent, received = await relay(
            (client.reader, client.writer), (up_reader, up_writer),
            idle=client.ctx.limits.idle_timeout,
            early_ab=event.rest if isinstance(event, Tunnel) else b"", early_ba=rest,
        )
        trace.up += sent
        trace.down += received
    finally:
        up_writer.close()
