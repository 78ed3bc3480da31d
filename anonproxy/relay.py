"""A bidirectional byte pipe between two streams, with half-close and an idle timeout.

The streams' transports are handed to one small protocol each (asyncio.Protocol), which writes
what it receives straight into the other transport: no task, no read buffer and no timeout
object per tunnel or per chunk, so an idle tunnel costs two protocol objects and one timer, and
a busy one one Python call per chunk the event loop reads (uvloop: up to 256 KiB).

Invariants: bytes are relayed unchanged and in order (what the streams had already buffered,
and the early bytes, go first); memory per direction is bounded by one read plus the writing
transport's high-water mark (reading pauses above it, resumes below); when one side finishes
sending, the other side is told (half-close) and may keep sending; when neither side moves for
`idle` seconds, or either side fails, both are torn down. Byte counts include the early bytes.
"""

from __future__ import annotations

import asyncio

HIGH_WATER = 1 << 20  # bytes queued toward one side before reading from the other pauses


class _Side(asyncio.Protocol):
    """One transport of a tunnel: what it receives goes to the peer's transport."""

    __slots__ = ("tunnel", "transport", "peer", "eof", "bytes")

    def __init__(self, tunnel: "_Tunnel", transport: asyncio.Transport) -> None:
        self.tunnel, self.transport = tunnel, transport
        self.peer: _Side | None = None
        self.eof = False  # this side has finished sending
        self.bytes = 0  # received from this side (and queued to the peer)

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        self.tunnel.active = True
        peer = self.peer.transport
        if not peer.is_closing():
            peer.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer.transport
        if peer.can_write_eof() and not peer.is_closing():
            peer.write_eof()
        self.tunnel.side_done()
        return True  # keep our own sending direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.finish()

    def pause_writing(self) -> None:  # our transport's buffer is full: stop reading the peer
        if not self.peer.transport.is_closing():
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.transport.is_closing() and not self.peer.eof:
            self.peer.transport.resume_reading()


class _Tunnel:
    __slots__ = ("done", "active", "idle", "loop", "timer", "a", "b")

    def __init__(self, idle: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        self.active = False
        self.idle = idle
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

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
            self.timer.cancel()
            for side in (self.a, self.b):
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
    ta, tb = a[1].transport, b[1].transport
    side_a, side_b = _Side(tunnel, ta), _Side(tunnel, tb)
    side_a.peer, side_b.peer = side_b, side_a
    tunnel.a, tunnel.b = side_a, side_b
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
