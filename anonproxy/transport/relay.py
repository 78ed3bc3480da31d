"""A bidirectional byte pipe between two streams, with half-close and an idle timeout.

The streams' transports are handed to one small protocol each (asyncio.Protocol), which writes
what it receives straight into the other transport: no task, no read buffer and no timeout
object per tunnel or per chunk, so an idle tunnel costs two protocol objects and a place in its
loop's idle sweep, and a busy one one Python call per chunk the event loop reads (uvloop: up to
256 KiB).

`relay` is awaited by a task that closes the streams after it. `take_over` returns at once: the
tunnel owns the transports from then on (no task waits for it), so the stream objects, and the
task and frames that led to the tunnel, can go; it closes both transports when it ends, then
reports its byte counts. What it returns is done when the tunnel has ended, and cancelling it
cuts the tunnel (a stopping listener drains it so).

A direction that turns bulk (one read of BULK_READ bytes or more: the sender is ahead of us)
between two plain sockets is handed to splice.py: from then on its bytes go socket -> pipe ->
socket inside the kernel, until it ends, fails, or goes quiet (then back to the protocol).

Invariants: bytes are relayed unchanged and in order (what the streams had already buffered,
and the early bytes, go first; a splice starts only once the protocol's writes have drained);
memory per direction is bounded by one read plus the writing transport's high-water mark
(reading pauses above it, resumes below), or by one kernel pipe while spliced; when one side
finishes sending, the other side is told (half-close) and may keep sending (a TLS side cannot
be told: then the tunnel ends); when neither side moves for `idle` seconds (it ends before
2 x `idle`), or either side fails, both are torn down (splices included). Byte counts include
the early bytes; an owned tunnel reports them once, after closing both transports. Idle tunnels
hold no descriptors beyond their two sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from anonproxy.transport.splice import Splice, spliceable
from anonproxy.transport.upstream import Stream

HIGH_WATER = 1 << 20  # bytes queued toward one side before reading from the other pauses
BULK_READ = 1 << 16  # a read this large means the sender is ahead of us: splice from now on


class _Side(asyncio.Protocol):
    """One transport of a tunnel: what it receives goes to the peer's transport."""

    __slots__ = ("tunnel", "transport", "peer", "eof", "bytes", "splice", "started")
    peer: _Side  # set by _start() right after both sides exist, before any byte arrives

    def __init__(self, tunnel: _Tunnel, transport: asyncio.Transport) -> None:
        self.tunnel, self.transport = tunnel, transport
        self.eof = False  # this side has finished sending
        self.bytes = 0  # received from this side (and queued to the peer)
        self.splice: Splice | None = None  # set while this side's sending is spliced
        self.started = False  # ... and the splice runs (not waiting for the peer to drain)

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        self.tunnel.active = True
        peer = self.peer.transport
        if not peer.is_closing():
            peer.write(data)
        if len(data) >= BULK_READ and self.tunnel.spliceable is not False:
            self.tunnel.to_splice(self)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer.transport
        if not peer.is_closing():
            if not peer.can_write_eof():  # TLS has no half-close: one end ends the tunnel
                self.tunnel.finish()
                return False
            peer.write_eof()
        self.tunnel.side_done()
        # keep our own sending direction open (half-close); TLS cannot, and says so if asked
        return self.transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.finish()

    def pause_writing(self) -> None:  # our transport's buffer is full: stop reading the peer
        if not self.peer.transport.is_closing():
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer.splice is not None:  # the peer's bytes wait for our buffer to drain, or flow
            if not peer.started and self.transport.get_write_buffer_size() == 0:
                self.transport.set_write_buffer_limits(high=HIGH_WATER)
                peer.started = True
                peer.splice.start()
        elif not peer.transport.is_closing() and not peer.eof:
            peer.transport.resume_reading()

    # the splice's reports about this side's sending
    def spliced(self, n: int) -> None:
        self.bytes += n
        self.tunnel.active = True

    def splice_ended(self) -> None:
        self.splice = None
        self.eof_received()

    def splice_quiet(self) -> None:
        self.splice, self.started = None, False
        if not self.transport.is_closing() and not self.eof:
            self.transport.resume_reading()


class _Sweep:
    """The idle checks of one loop's tunnels that share an idle timeout: one timer for all of
    them instead of one each. Every `idle` seconds a tunnel that moved since the last look is
    marked still, and one still since then is finished: a tunnel quiet from time t ends between
    t + idle and t + 2 * idle. The sweep exists while it has tunnels."""

    __slots__ = ("key", "loop", "idle", "tunnels", "timer")

    def __init__(self, key: tuple[asyncio.AbstractEventLoop, float]) -> None:
        self.key = key
        self.loop, self.idle = key
        self.tunnels: set[_Tunnel] = set()
        self.timer = self.loop.call_later(self.idle, self._look)

    def _look(self) -> None:
        self.timer = self.loop.call_later(self.idle, self._look)  # (cancelled once empty)
        still = [t for t in self.tunnels if not t.active]
        for tunnel in self.tunnels:
            tunnel.active = False
        for tunnel in still:
            tunnel.finish()

    def remove(self, tunnel: _Tunnel) -> None:
        self.tunnels.discard(tunnel)
        if not self.tunnels:
            self.timer.cancel()
            if _SWEEPS.get(self.key) is self:
                del _SWEEPS[self.key]


_SWEEPS: dict[tuple[asyncio.AbstractEventLoop, float], _Sweep] = {}  # by loop and idle timeout


def _sweep(loop: asyncio.AbstractEventLoop, idle: float) -> _Sweep:
    key = (loop, idle)
    sweep = _SWEEPS.get(key)
    if sweep is None:
        sweep = _SWEEPS[key] = _Sweep(key)
    return sweep


class _Owned(asyncio.Future):
    """The future of a tunnel that owns its transports: done when the tunnel has ended;
    cancelling it cuts the tunnel, which then ends as it would have by itself."""

    __slots__ = ("tunnel",)
    tunnel: _Tunnel

    def cancel(self, msg: object = None) -> bool:
        self.tunnel.finish()
        return super().cancel(msg)


class _Tunnel:
    __slots__ = ("done", "active", "sweep", "a", "b", "spliceable", "ended", "since", "over")
    a: _Side  # set by _start() right after construction
    b: _Side

    def __init__(self, idle: float, ended: Callable[[int, int, float], None] | None = None,
                 since: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        if ended is None:
            self.done: asyncio.Future[None] = loop.create_future()
        else:  # the tunnel owns its transports (take_over)
            self.done = owned = _Owned(loop=loop)
            owned.tunnel = self
        self.active = True  # (new: the first sweep only marks it still)
        self.spliceable: bool | None = None  # (asked when a direction first turns bulk)
        self.ended, self.since = ended, since
        self.over = False
        self.sweep = _sweep(loop, idle)
        self.sweep.tunnels.add(self)

    def side_done(self) -> None:
        if self.a.eof and self.b.eof:
            self.finish()

    def to_splice(self, side: _Side) -> None:
        """Move `side`'s sending to a splice; it starts once the peer's buffer has drained."""
        if side.splice is not None or side.eof or self.over:
            return
        peer = side.peer.transport
        if peer.is_closing():
            return
        if self.spliceable is None:
            self.spliceable = spliceable(side.transport) and spliceable(peer)
            if not self.spliceable:
                return
        try:
            side.splice = Splice(side.transport, peer, moved=side.spliced,
                                 ended=side.splice_ended, failed=self.finish,
                                 quiet=side.splice_quiet)
        except OSError:  # out of descriptors: this tunnel stays with the protocols
            self.spliceable = False
            return
        side.transport.pause_reading()
        if peer.get_write_buffer_size() == 0:
            side.started = True
            side.splice.start()
        else:  # the peer's _Side.resume_writing starts it once the buffer is empty
            peer.set_write_buffer_limits(high=0)

    def finish(self) -> None:
        """End the tunnel (once): its splices close; an owned tunnel closes both transports
        and reports its counts, an awaited one stops reading and lets its task close them."""
        if self.over:
            return
        self.over = True
        self.sweep.remove(self)
        if not self.done.done():
            self.done.set_result(None)
        for side in (self.a, self.b):
            if side.splice is not None:
                side.splice.close()
                side.splice = None
            if self.ended is not None:
                side.transport.close()
            elif not side.transport.is_closing():
                side.transport.pause_reading()
        if self.ended is not None:
            self.ended(self.a.bytes, self.b.bytes, time.monotonic() - self.since)


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    # asyncio has no public call for "take what is buffered"; StreamReader keeps it in _buffer
    buffer = getattr(reader, "_buffer", None)
    if not buffer:
        return b""
    data = bytes(buffer)
    buffer.clear()
    return data


class _Released(asyncio.StreamWriter):
    """A writer whose transport a tunnel owns: collecting it leaves the transport open."""

    def __del__(self) -> None:
        pass  # (asyncio's StreamWriter closes a transport still open when it is collected)


def _start(tunnel: _Tunnel, a: Stream, b: Stream, early_ab: bytes, early_ba: bytes) -> None:
    """Hand both streams' transports to the tunnel's protocols, what was buffered and the early
    bytes written first; never awaits, so no byte can arrive in between."""
    # a stream's transport is a socket transport: it reads as well as writes
    ta, tb = cast(asyncio.Transport, a[1].transport), cast(asyncio.Transport, b[1].transport)
    side_a, side_b = _Side(tunnel, ta), _Side(tunnel, tb)
    side_a.peer, side_b.peer = side_b, side_a
    tunnel.a, tunnel.b = side_a, side_b
    for side, (reader, _), early in ((side_a, a, early_ab), (side_b, b, early_ba)):
        data = early + _take_buffered(reader)
        side.bytes = len(data)
        if data and not side.peer.transport.is_closing():
            side.peer.transport.write(data)
    for side, (reader, _) in ((side_a, a), (side_b, b)):
        transport = side.transport
        if transport.is_closing() or reader.exception() is not None:
            tunnel.finish()
            return
        transport.set_write_buffer_limits(high=HIGH_WATER)
        transport.set_protocol(side)
        if reader.at_eof():
            side.eof_received()
        elif not transport.is_reading():
            transport.resume_reading()  # the stream had paused it (its buffer was full)
    for side in (side_a, side_b):
        if side.transport.get_write_buffer_size() > HIGH_WATER:
            side.pause_writing()


async def relay(a: Stream, b: Stream, *, idle: float, early_ab: bytes = b"",
                early_ba: bytes = b"") -> tuple[int, int]:
    """Pipe a<->b until both directions end, after sending bytes that arrived before the
    tunnel did (a client's first bytes, a server's greeting). Returns the bytes a->b and b->a,
    early ones included. The caller closes both streams."""
    tunnel = _Tunnel(idle)
    try:
        _start(tunnel, a, b, early_ab, early_ba)
        await tunnel.done
    finally:
        tunnel.finish()
    return tunnel.a.bytes, tunnel.b.bytes


def take_over(a: Stream, b: Stream, *, idle: float, since: float,
              ended: Callable[[int, int, float], None], early_ab: bytes = b"",
              early_ba: bytes = b"") -> asyncio.Future[None]:
    """Pipe a<->b as `relay` does, without a task: the tunnel owns both transports from now on
    and closes them when it ends, then calls `ended(bytes a->b, bytes b->a, seconds since
    `since` (time.monotonic()))`. The streams are of no more use to anyone and may be dropped.
    The future returned is done once the tunnel has ended; cancelling it cuts the tunnel."""
    tunnel = _Tunnel(idle, ended, since)
    for _, writer in (a, b):
        writer.__class__ = _Released
    _start(tunnel, a, b, early_ab, early_ba)
    return tunnel.done
