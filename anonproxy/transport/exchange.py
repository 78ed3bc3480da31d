"""One request/response exchange on an upstream connection, and WebSocket hand-over: the I/O.

The decisions are wire/response_relay.py's (a sans-IO state machine); this driver only moves
bytes: it writes the request head up, pumps the body (if any) up while it reads the response,
feeds each upstream read to the machine, writes what it returns to the client in one write,
and carries out its verdicts (pool or close the upstream, abort the client, retry, tunnel).
The upstream is read here, not in a helper coroutine: this is the hot path of every request.

Once the head of a Content-Length response has gone out with SPLICE_MIN or more body bytes to
come, and the client and the upstream are both plain sockets (never TLS), the rest of the body
moves socket -> pipe -> socket with splice (transport/splice.py, Linux): what the upstream's
reader already holds goes first through the machine, and the splice starts only when the
client's write buffer is empty, so bytes keep their order. The machine counts spliced bytes
and ends the exchange as if it had read them.
Chunked bodies stay on the reads: splicing their data would take a read of every chunk-size
line into Python and a parser of our own beside llhttp for framing (a smuggling risk), which
pays only for chunks far larger than the 4-32 KiB most servers send. Close-delimited bodies
stay on the reads too (rare in bulk; their end is the upstream's close).

Invariants: once a response head has reached the client, a failure aborts the client connection
(a truncated body is never mistaken for a complete one); an upstream connection is handed back
for reuse only after a complete exchange that both sides allow to be kept alive and after which
nothing more arrived; a reused connection found closed before it answered raises StaleUpstream,
so the caller may retry a bodiless request once on a fresh one. A spliced body keeps these:
an upstream that ends early, fails or is silent for idle_timeout aborts the client, a client
that fails or takes nothing for idle_timeout is cut off and the upstream closed, and a
connection with anything past the body is not pooled; its bytes count as read ones do.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import cast

from anonproxy.transport.batch import SMALL
from anonproxy.transport.client_side import READ_SIZE, ClientGone, ClientSide, Trace
from anonproxy.transport.reads import read, transport_of, unread
from anonproxy.transport.relay import relay
from anonproxy.transport.splice import AVAILABLE as SPLICE
from anonproxy.transport.splice import Broken, move, spliceable
from anonproxy.transport.upstream import Stream, UpstreamPool
from anonproxy.wire.errors import ProxyError
from anonproxy.wire.headers import Headers
from anonproxy.wire.messages import END, RequestHead, Tunnel
from anonproxy.wire.response_relay import Failure, ResponseRelay

# Body bytes left (once the reader's buffer is drained) that pay for a splice's descriptors
# and system calls. Proxy CPU per keep-alive GET on loopback, reads -> splice: 350 KiB body
# the same (~320 us), 600 KiB 475 -> 393 us, 1 MiB 769 -> 507 us.
SPLICE_MIN = 1 << 18


class StaleUpstream(Exception):
    """A reused upstream connection closed before answering."""


async def exchange(
    client: ClientSide,
    head: RequestHead,
    stream: Stream,
    request: bytes,
    key: tuple[str, str, int],
    trace: Trace,
    *,
    reused: bool,
    pool: UpstreamPool | None,
    where: str | None = None,
    rewrite: Callable[[Headers], Headers] | None = None,
) -> tuple[int, bool]:
    """Send one request on `stream` and relay its response. Returns (status, client keep-alive).
    `pool`: where the connection goes back (under `key`) when it is clean — the pool it came
    from, so a new identity's fresh pool never receives an old connection; None: not kept.
    `where`: the upstream as errors name it (default: its address and exit; a reverse entry
    names no backend address); `rewrite`: what the response heads lose or change besides
    hop-by-hop fields (wire/response_relay.py)."""
    up_reader, up_writer = stream
    up = transport_of(up_writer)
    limits = client.limits
    machine = ResponseRelay(head, where or f"{key[1]}:{key[2]} (exit '{key[0]}')", reused=reused,
                            head_timeout=limits.response_timeout, idle_timeout=limits.idle_timeout,
                            max_head_bytes=limits.max_response_header_bytes)
    machine.tap = client.tap
    machine.rewrite = rewrite
    reusable = False
    try:
        if not head.has_body and not head.websocket and len(request) <= SMALL:
            # with the loop turn's other writes (transport/batch.py); nothing else writes to
            # this connection before its response came
            client.batch.add(up_writer, request)
            status = await _relay_response(client, machine, up_reader, up)
        elif not head.has_body:
            up_writer.write(request)
            if up_writer.transport.get_write_buffer_size() or up_writer.is_closing():
                await up_writer.drain()  # rare: the request head did not go out at once
            status = await _relay_response(client, machine, up_reader, up)
        else:
            up_writer.write(request)
            status = await _with_body(client, machine, up_reader, up_writer, up)
        reusable = machine.reusable
        if machine.tunnel is not None:
            await websocket(client, stream, machine.tunnel, trace)
        return status, machine.client_keep_alive
    except ConnectionError as error:  # the upstream reset under us
        verdict = machine.failure(error)
        if isinstance(verdict, ProxyError):
            raise verdict from error
        raise _carry_out(verdict, client) from None
    except ClientGone:
        raise ClientGone() from None
    except ProxyError as error:
        verdict = machine.failure(error)
        if isinstance(verdict, ProxyError):
            raise verdict from None
        raise _carry_out(verdict, client) from None
    finally:
        trace.up += machine.up_bytes
        trace.down += machine.down_bytes
        if reusable:
            machine.recycle()
        if pool is not None and reusable:
            pool.give(key, stream)
        elif machine.tunnel is None:
            up_writer.close()


def _carry_out(verdict: Failure, client: ClientSide) -> Exception:
    """The exception that carries out a failure's verdict: ABORT resets the client connection
    (it has a response head: an answer now would read as the rest of the body)."""
    if verdict is Failure.ABORT:
        reset(client.writer)
        return ClientGone()
    return StaleUpstream()


_LINGER_NONE = struct.pack("ii", 1, 0)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset, not a FIN: a client reading a body until the
    connection ends (HTTP/1.0, no length) takes a FIN for the body's end, a reset for an
    error. (A plain abort sends a FIN, what was still queued dropped.)"""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NONE)
        except OSError:
            pass  # (already closed: nothing to reset)
    writer.transport.abort()


async def _with_body(client: ClientSide, machine: ResponseRelay,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                     up: asyncio.Transport) -> int:
    """The response relayed while the request body is pumped up beside it; what failed comes
    out alone, not in a group (the upstream's reset before the client's going, before a
    ProxyError: the order exchange's handlers take them in)."""
    try:
        async with asyncio.TaskGroup() as tasks:
            body = tasks.create_task(_pump_body(client, machine, up_writer))
            status = await _relay_response(client, machine, up_reader, up)
            if not body.done():  # answered before the body was sent: stop reading it
                body.cancel()
                machine.request_cut()
    except BaseExceptionGroup as group:
        for kind in (ConnectionError, ClientGone, ProxyError):
            found = group.subgroup(kind)
            if found is not None:
                raise _first(found) from None
        raise
    return status


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first exception of a group, nested groups opened."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _pump_body(client: ClientSide, machine: ResponseRelay,
                     up_writer: asyncio.StreamWriter) -> None:
    """The request body, from the client up, as it arrives; stops quietly when the upstream
    stops reading (its response, if any, still comes)."""
    while not machine.request_complete:
        data = machine.request_body(await client.next_event())
        if up_writer.is_closing():  # the upstream went (its reset is the relay's to report)
            return
        if data:
            up_writer.write(data)
        try:
            await up_writer.drain()
        except ConnectionError:
            return


async def _relay_response(client: ClientSide, machine: ResponseRelay,
                          up_reader: asyncio.StreamReader, up: asyncio.Transport) -> int:
    """Feed the upstream's reads to the machine and write what it returns to the client, in
    one write per read, until the response is done (or became a tunnel, or its body's rest
    was spliced).

    While the answer is awaited, the client is watched too: when its connection is lost (a
    reset; a FIN alone is a half-close, and the client still gets its answer) the upstream
    connection is aborted at once, never pooled, instead of waiting out its answer. (One
    callback on the connection's `lost` future for the whole exchange: no task or wait per
    read.) Once the answer came, a lost client shows on the next write."""
    lost = client.lost()
    if lost.done():
        raise ClientGone()
    gone = False

    def cut(_: object) -> None:
        nonlocal gone
        if machine.final is None:
            gone = True
            up.abort()

    lost.add_done_callback(cut)
    deadline = client.deadline  # this runs in the connection's own task
    splice = SPLICE
    try:
        while True:
            deadline.arm(machine.read_timeout)
            try:
                data = await read(up_reader, READ_SIZE)
            except ConnectionError:
                if gone:
                    raise ClientGone() from None
                raise
            except asyncio.CancelledError:
                if not deadline.expired():
                    raise
                raise machine.silence() from None
            finally:
                deadline.disarm()
            if gone:
                raise ClientGone()
            out = machine.feed(data) if data else machine.feed_eof()
            if out:
                if not client.write(out):
                    await client.drained()
                machine.sent()
            if machine.done:
                if not machine.client_keep_alive and machine.tunnel is None:
                    client.ended()  # (the client sees its end before our bookkeeping)
                return machine.status
            if splice and machine.body_left >= SPLICE_MIN:
                spliced = await _splice_rest(client, machine, up_reader, up)
                if spliced:
                    return machine.status
                splice = spliced is not None
    finally:
        lost.remove_done_callback(cut)


async def _splice_rest(client: ClientSide, machine: ResponseRelay,
                       up_reader: asyncio.StreamReader, up: asyncio.Transport) -> bool | None:
    """Move the rest of a Content-Length body with splice: True once it went. False when not
    now (the upstream's reader holds bytes, or the client's write buffer does: the reads go on,
    and this is asked again after the next one); None when not for this response (a side is not
    a plain socket, or no descriptors are to be had)."""
    down = cast(asyncio.Transport, client.writer.transport)
    if unread(up_reader) or down.get_write_buffer_size():
        return False
    if up_reader.at_eof() or up_reader.exception() is not None:
        return None
    if not (spliceable(up) and spliceable(down)):
        return None
    try:
        trailing = await move(up, down, machine.body_left, idle=machine.read_timeout,
                              moved=machine.body_moved)
    except Broken as broken:
        if broken.side == "dst":  # the client reset, or stopped reading
            down.abort()
            raise ClientGone() from None
        if broken.stalled:
            raise machine.silence() from None
        raise
    except OSError:  # (EMFILE) nothing moved
        return None
    machine.body_moved_all(trailing)
    return True


async def websocket(client: ClientSide, stream: Stream, rest: bytes, trace: Trace) -> None:
    up_reader, up_writer = stream
    try:
        event = await client.next_event() if client.pending else END
        sent, received = await relay(
            (client.reader, client.writer), (up_reader, up_writer),
            idle=client.limits.idle_timeout,
            early_ab=event.rest if isinstance(event, Tunnel) else b"", early_ba=rest,
        )
        trace.up += sent
        trace.down += received
    finally:
        up_writer.close()
