"""One HTTP client connection: absolute-form requests, CONNECT tunnels and WebSocket upgrades.

Flow per request: parse the head (llhttp) -> refuse loops -> sanitize headers -> pick the exit ->
reuse or open an upstream connection -> send the head, stream the body (re-framed exactly as the
client framed it) while streaming the response back.

Invariants:
- A request is sent upstream only after its whole head parsed cleanly; a malformed one gets a
  400 and the connection closes.
- Bodies stream with backpressure both ways; nothing is buffered whole.
- Once a response head has gone to the client, a failure aborts the client connection (so a
  truncated body is never mistaken for a complete one).
- Upstream connections are reused only after a complete exchange that both sides allow to be
  kept alive; a request is retried once on a fresh connection only when a reused one was found
  closed before it answered and the request had no body.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from . import logs
from .address import Address, AddressError, check_host, parse_authority
from .context import Context
from .errors import (
    BadRequest,
    BadUpstreamResponse,
    NotImplementedByProxy,
    ProxyError,
    RequestTimeout,
    StageTimeout,
    http_error_response,
)
from .exits import Stream
from .headers import is_websocket_upgrade, proxy_username, sanitize_request, sanitize_response
from .http1 import (
    END,
    LAST_CHUNK,
    Body,
    End,
    Event,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    Tunnel,
    chunk,
    parse_absolute_url,
    render_request_head,
    render_response_head,
)
from .relay import relay

READ_SIZE = 1 << 16
CONNECTED = b"HTTP/1.1 200 Connection established\r\n\r\n"


class ClientGone(Exception):
    """The client closed or reset its connection."""


class _StaleUpstream(Exception):
    """A reused upstream connection closed before answering."""


class ClientConn:
    """The client side: a reader fed through the request parser, and the writer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 select: Callable[[str | None], Context]):
        self.reader, self.writer, self.select = reader, writer, select
        self.ctx = select(None)  # the profile of the request at hand (a username may pick another)
        limits = self.ctx.limits
        self.parser = RequestParser(limits.max_header_bytes, limits.max_headers)
        self.pending: deque[Event] = deque()
        self.idle = True  # waiting between requests: safe to close on shutdown

    def feed(self, data: bytes) -> None:
        self.pending.extend(self.parser.feed(data))

    async def next_head(self, started: float | None) -> RequestHead | None:
        """The next request head, or None when the client is done (or idle too long)."""
        limits = self.ctx.limits
        while self.pending and self.pending[0] is END:  # the end of a bodiless request
            self.pending.popleft()
        while not self.pending:
            if started is None:
                self.idle = True
                timeout = limits.idle_timeout
            else:
                timeout = started + limits.header_timeout - time.monotonic()
            try:
                async with asyncio.timeout(max(timeout, 0)):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                if started is None:
                    return None
                raise RequestTimeout(
                    f"the request head did not arrive within {limits.header_timeout:g} s"
                ) from None
            except OSError:
                return None
            if not data:
                return None
            if started is None:
                started = time.monotonic()
                self.idle = False
            self.feed(data)
            while self.pending and self.pending[0] is END:
                self.pending.popleft()
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

    async def send(self, data: bytes) -> None:
        """Write to the client; one that stops reading for `idle_timeout` is cut off."""
        self.writer.write(data)
        try:
            async with asyncio.timeout(self.ctx.limits.idle_timeout):
                await self.writer.drain()
        except (OSError, TimeoutError):
            self.writer.transport.abort()
            raise ClientGone() from None


async def serve_http(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    select: Callable[[str | None], Context],
    first: bytes,
    started: float,
    stopping: asyncio.Event,
    on_client: Callable[[ClientConn], None] = lambda client: None,
) -> None:
    """Serve requests on one client connection until it closes. `select` gives the profile
    for a proxy username (None: the main one), read anew for every request so that a reload
    applies to the next request on a kept-alive connection."""
    client = ClientConn(reader, writer, select)
    on_client(client)
    try:
        client.feed(first)
        head = await client.next_head(started)
        while head is not None:
            keep_alive = await _serve_one(client, head)
            if not keep_alive or stopping.is_set():
                break
            head = await client.next_head(None)
    except ProxyError as error:  # malformed or slow request head: answer once, then close
        logs.connection("http", "-", "-", error.status, 0, 0, 0.0, error.message)
        if not writer.is_closing():
            writer.write(http_error_response(error))
    except ClientGone:
        pass


class Trace:
    """What one request's log line says: the exit path used and the body bytes each way."""

    __slots__ = ("exit", "up", "down")

    def __init__(self) -> None:
        self.exit, self.up, self.down = "-", 0, 0


async def _serve_one(client: ClientConn, head: RequestHead) -> bool:
    """Handle one request; return whether the client connection may carry another."""
    t0 = time.monotonic()
    proto, dest, trace = "http", "-", Trace()
    status: object = "-"
    problem = None
    try:
        ctx = client.ctx = client.select(proxy_username(head.headers))
        if head.method == b"CONNECT":
            proto = "connect"
            try:
                dest = parse_authority(head.target.decode("ascii"))
            except (AddressError, UnicodeDecodeError):
                # never echo the target: a mistaken URL here may carry a path or a token
                raise BadRequest("bad CONNECT target: expected host:port") from None
            trace.exit = (await ctx.route(dest)).exit
            status = await _tunnel(client, dest, trace)
            return False
        if head.target.startswith(b"/"):
            raise BadRequest(
                "this is a proxy: send requests in absolute form (configure it as your proxy)"
            )
        scheme, host, port, path = parse_absolute_url(head.target)
        if scheme != b"http":
            raise NotImplementedByProxy(
                f"{scheme.decode('latin-1')}:// URLs go through CONNECT; set this proxy "
                "for HTTPS too"
            )
        try:
            dest = Address(check_host(host.decode("ascii")), port or 80)
        except (AddressError, UnicodeDecodeError) as error:
            raise BadRequest(str(error)) from None
        trace.exit = (await ctx.route(dest)).exit
        status, keep = await _forward(client, head, dest, path, trace)
        return keep
    except ProxyError as error:
        status, problem = error.status, error.message
        if not client.writer.is_closing():
            client.writer.write(http_error_response(error))
        return False
    except ClientGone:
        problem = "client closed the connection"
        raise
    finally:
        logs.connection(proto, dest, trace.exit, status, trace.up, trace.down,
                        time.monotonic() - t0, problem)


async def _tunnel(client: ClientConn, dest: Address, trace: Trace) -> int:
    rest_event = await client.next_event()
    rest = rest_event.rest if isinstance(rest_event, Tunnel) else b""
    opened = await client.ctx.open(trace.exit, dest)
    trace.exit = ">".join(opened.path)
    up_reader, up_writer = opened.stream
    try:
        await client.send(CONNECTED)
        if rest:
            up_writer.write(rest)
        sent, received, _ = await relay(
            (client.reader, client.writer), (up_reader, up_writer), idle=client.ctx.limits.idle_timeout
        )
        trace.up, trace.down = sent + len(rest), received
        return 200
    finally:
        up_writer.close()


def _authority(dest: Address) -> bytes:
    host = f"[{dest.host}]" if ":" in dest.host else dest.host
    return (host if dest.port == 80 else f"{host}:{dest.port}").encode("ascii")


async def _forward(
    client: ClientConn, head: RequestHead, dest: Address, path: bytes, trace: Trace
) -> tuple[int, bool]:
    ctx = client.ctx
    authority = _authority(dest)
    headers = sanitize_request(
        head.headers, ctx.policy, target_origin="http://" + authority.decode(), host=authority
    )
    request = render_request_head(head.method, path, headers)
    websocket = is_websocket_upgrade(head.headers)
    if not head.has_body and not websocket:
        path = ctx.preferred_path(trace.exit, dest)
        key = (">".join(path), dest.host, dest.port)
        stream = ctx.pool.take(key)
        if stream is not None:
            try:
                exit_name, trace.exit = trace.exit, key[0]
                return await _exchange(client, head, stream, request, key, trace, reused=True)
            except _StaleUpstream:
                trace.exit = exit_name
    opened = await ctx.open(trace.exit, dest)
    trace.exit = ">".join(opened.path)
    key = (trace.exit, dest.host, dest.port)
    try:
        return await _exchange(client, head, opened.stream, request, key, trace, reused=False)
    except _StaleUpstream:
        raise BadUpstreamResponse(
            f"{dest} (exit '{key[0]}') closed the connection without a response"
        ) from None


async def _exchange(
    client: ClientConn,
    head: RequestHead,
    stream: Stream,
    request: bytes,
    key: tuple[str, str, int],
    trace: Trace,
    *,
    reused: bool,
) -> tuple[int, bool]:
    """Send one request on `stream` and relay its response. Returns (status, client keep-alive)."""
    up_reader, up_writer = stream
    exchange = _Exchange(client, head, up_reader, trace, f"{key[1]}:{key[2]} (exit '{key[0]}')")
    reusable = False
    try:
        up_writer.write(request)
        if not head.has_body:
            await up_writer.drain()
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
            await _websocket(client, stream, exchange.tunnel, trace)
            return status, False
        return status, exchange.client_keep_alive
    except* ConnectionError as group:  # the upstream reset under us
        if exchange.head_sent:
            client.writer.transport.abort()
            raise ClientGone() from None
        if reused and exchange.nothing_received:
            raise _StaleUpstream() from None
        raise BadUpstreamResponse(f"{exchange.where} reset the connection") from group
    except* ClientGone:
        raise ClientGone() from None
    except* ProxyError as group:
        error = group.exceptions[0]
        if exchange.head_sent:
            client.writer.transport.abort()
            raise ClientGone() from None
        if reused and exchange.nothing_received and isinstance(error, BadUpstreamResponse):
            raise _StaleUpstream() from None
        raise error from None
    finally:
        if reusable and exchange.tunnel is None:
            client.ctx.pool.give(key, stream)
        elif exchange.tunnel is None:
            up_writer.close()


class _Exchange:
    """The state of one request/response exchange."""

    def __init__(self, client: ClientConn, head: RequestHead, up_reader, trace: Trace, where: str):
        self.client, self.head, self.up_reader, self.trace = client, head, up_reader, trace
        self.where = where
        self.head_queued = False  # a response head is in the output (maybe not yet written)
        self.head_sent = False  # ... and has been written: errors must now abort, not answer
        self.nothing_received = True
        self.body_complete = not head.has_body
        self.client_keep_alive = head.keep_alive
        self.upstream_reusable = False
        self.tunnel: bytes | None = None
        self.chunked_up = any(
            n.lower() == b"transfer-encoding" for n, _ in head.headers
        )

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

    async def _upstream_events(self, parser: ResponseParser, timeout: float):
        try:
            async with asyncio.timeout(timeout):
                data = await self.up_reader.read(READ_SIZE)
        except TimeoutError:
            if self.head_sent:
                raise ConnectionResetError("upstream idle") from None
            raise StageTimeout(f"{self.where} did not answer within {timeout:g} s") from None
        if not data:
            return parser.feed_eof()
        self.nothing_received = False
        return parser.feed(data)

    async def relay_response(self) -> int:
        """Relay interim responses, then the final one, to the client.

        Everything one upstream read produced goes to the client in one write (fewer system
        calls); the head counts as sent only once that write happened.
        """
        limits = self.client.ctx.limits
        parser = ResponseParser(self.head.method)
        pending: deque[Event] = deque()
        out: list[bytes] = []
        final: ResponseHead | None = None
        to_client = "length"
        while True:
            if not pending:
                await self._flush(out)
                wait = limits.response_timeout if final is None else limits.idle_timeout
                pending.extend(await self._upstream_events(parser, wait))
                continue
            event = pending.popleft()
            if isinstance(event, ResponseHead):
                if event.status == 101:
                    if not is_websocket_upgrade(self.head.headers):
                        raise BadUpstreamResponse("the upstream switched protocols unasked")
                    headers = sanitize_response(event.headers, websocket=True)
                    final = event
                elif event.status < 200:
                    if self.head.version == b"1.1":
                        out.append(render_response_head(
                            event.status, event.reason, sanitize_response(event.headers)))
                    continue
                else:
                    final = event
                    headers = self._final_headers(event)
                    to_client = self._client_framing(event)
                out.append(render_response_head(event.status, event.reason, headers))
                self.head_queued = True
            elif isinstance(event, Body):
                self.trace.down += len(event.data)
                out.append(chunk(event.data) if to_client == "chunked" else event.data)
            elif isinstance(event, End):
                if final is None or final.status < 200:
                    continue  # end of an interim response
                if to_client == "chunked":
                    out.append(LAST_CHUNK)
                await self._flush(out)
                self.upstream_reusable = (final.keep_alive and final.framing != "close"
                                          and parser.reusable and not pending)
                return final.status
            elif isinstance(event, Tunnel):
                assert final is not None and final.status == 101
                await self._flush(out)
                self.tunnel = event.rest
                return 101

    async def _flush(self, out: list[bytes]) -> None:
        if out:
            data = b"".join(out) if len(out) > 1 else out[0]
            out.clear()
            await self.client.send(data)
            self.head_sent = self.head_queued

    def _final_headers(self, response: ResponseHead):
        """The final response's headers for the client, and whether its connection stays open."""
        headers = sanitize_response(response.headers)
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


async def _websocket(client: ClientConn, stream: Stream, rest: bytes, trace: Trace) -> None:
    up_reader, up_writer = stream
    try:
        event = await client.next_event() if client.pending else END
        if isinstance(event, Tunnel) and event.rest:
            up_writer.write(event.rest)
        if rest:
            await client.send(rest)
        sent, received, _ = await relay(
            (client.reader, client.writer), (up_reader, up_writer),
            idle=client.ctx.limits.idle_timeout,
        )
        trace.up += sent
        trace.down += received + len(rest)
    finally:
        up_writer.close()

