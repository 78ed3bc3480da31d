"""A bidirectional byte pipe between two streams, with half-close and an idle timeout.

The streams' transports are handed to one small protocol each (asyncio.Protocol), which writes
what it receives straight into the other transport: no task, no read buffer and no timeout
object per tunnel or per chunk, so an idle tunnel costs two protocol objects and one timer, and
a busy one one Python call per chunk the event loop reads (uvloop: up to 256 KiB).

A direction that turns bulk (one read of BULK_READ bytes or more: the sender is ahead of us)
between two plain sockets is handed to splice.py: from then on its bytes go socket -> pipe ->
socket inside the kernel, until it ends, fails, or goes quiet (then back to the protocol).

Invariants: bytes are relayed unchanged and in order (what the streams had already buffered,
and the early bytes, go first; a splice starts only once the protocol's writes have drained);
memory per direction is bounded by one read plus the writing transport's high-water mark
(reading pauses above it, resumes below), or by one kernel pipe while spliced; when one side
finishes sending, the other side is told (half-close) and may keep sending (a TLS side cannot
be told: then the tunnel ends); when neither side
moves for `idle` seconds, or either side fails, both are torn down (splices included). Byte
counts include the early bytes. Idle tunnels hold no descriptors beyond their two sockets.
"""

from __future__ import annotations

import asyncio
from typing import cast

from anonproxy.transport.splice import Splice, spliceable

HIGH_WATER = 1 << 20  # bytes queued toward one side before reading from the other pauses
BULK_READ = 1 << 16  # a read this large means the sender is ahead of us: splice from now on


class _Side(asyncio.Protocol):
    """One transport of a tunnel: what it receives goes to the peer's transport."""

    __slots__ = ("tunnel", "transport", "peer", "eof", "bytes", "splice", "started")
    peer: _Side  # set by relay() right after both sides exist, before any byte arrives

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
        if len(data) >= BULK_READ and self.tunnel.spliceable:
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


class _Tunnel:
    __slots__ = ("done", "active", "idle", "loop", "timer", "a", "b", "spliceable")
    a: _Side  # set by relay() right after construction
    b: _Side

    def __init__(self, idle: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        self.active = False
        self.idle = idle
        self.spliceable = False
        self.timer = self.loop.call_later(idle, self._check_idle)

    def _check_idle(self) -> None:
        if self.done.done():
            return
        if self.active:  # something moved in the last `idle` seconds: look again later
            self.active = False
            self.timer = self.loop.call_later(self.idle, self._check_idle)
        else:
            self.finish()

    def side_done(self) -> None:
        if self.a.eof and self.b.eof:
            self.finish()

    def to_splice(self, side: _Side) -> None:
        """Move `side`'s sending to a splice; it starts once the peer's buffer has drained."""
        if side.splice is not None or side.eof or self.done.done():
            return
        peer = side.peer.transport
        if peer.is_closing():
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
        if not self.done.done():
            self.done.set_result(None)
            self.timer.cancel()
            for side in (self.a, self.b):
                if side.splice is not None:
                    side.splice.close()
                    side.splice = None
                if not side.transport.is_closing():
                    side.transport.pause_reading()


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    # asyncio has no public call for "take what is buffered"; StreamReader keeps it in _buffer
    buffer = getattr(reader, "_buffer", None)
    if not buffer:
        return b""
    data = bytes(buffer)
    buffer.clear()
    return data


async def relay(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    *,
    idle: float,
    early_ab: bytes = b"",
    early_ba: bytes = b"",
) -> tuple[int, int]:
    """Pipe a<->b until both directions end, after sending bytes that arrived before the
    tunnel did (a client's first bytes, a server's greeting). Returns the bytes a->b and b->a,
    early ones included. The caller closes both streams."""
    tunnel = _Tunnel(idle)
    # a stream's transport is a socket transport: it reads as well as writes
    ta, tb = cast(asyncio.Transport, a[1].transport), cast(asyncio.Transport, b[1].transport)
    side_a, side_b = _Side(tunnel, ta), _Side(tunnel, tb)
    side_a.peer, side_b.peer = side_b, side_a
    tunnel.a, tunnel.b = side_a, side_b
    tunnel.spliceable = spliceable(ta) and spliceable(tb)
    try:
        # no await from here to set_protocol: no byte can arrive between the two
        for side, (reader, _), early in ((side_a, a, early_ab), (side_b, b, early_ba)):
            data = early + _take_buffered(reader)
            side.bytes = len(data)
            if data and not side.peer.transport.is_closing():
                side.peer.transport.write(data)
        for side, (reader, _) in ((side_a, a), (side_b, b)):
            transport = side.transport
            if transport.is_closing() or reader.exception() is not None:
                tunnel.finish()
                break
            transport.set_write_buffer_limits(high=HIGH_WATER)
            transport.set_protocol(side)
            if reader.at_eof():
                side.eof_received()
            elif not transport.is_reading():
                transport.resume_reading()  # the stream had paused it (its buffer was full)
        for side in (side_a, side_b):
            if side.transport.get_write_buffer_size() > HIGH_WATER:
                side.pause_writing()
        await tunnel.done
    finally:
        tunnel.finish()
    return side_a.bytes, side_b.bytes
