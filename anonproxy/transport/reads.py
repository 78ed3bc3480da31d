"""One read from an asyncio StreamReader, as its `read(n)` does it, and the bytes a
connection receives fed into it, as its protocol does it: compiled.

The hot path reads each client and each upstream once per request. `StreamReader.read` is
Python that awaits a second coroutine (`_wait_for_data`) to wait: two frames made, run and
torn down per read, ~8,500 instructions of a request's ~200,000 each (`scripts/bench
--instructions`). `read` here does the same steps on the same fields, compiled, awaiting the
reader's waiter future directly.

Those fields are StreamReader's own (`_buffer`, `_eof`, `_exception`, `_waiter`, `_paused`,
`_transport`, `_loop`, `_limit`), the same from Python 3.8 to 3.13; a reader of another type,
or a Python whose StreamReader sets other fields, is read with its own `read`.
`quiet` and `unread` read two of them the same way, and `transport_of` a StreamWriter's
`_transport`.

`Feeder` is the other side: what StreamReaderProtocol.data_received and StreamReader.feed_data
do for each read of the connection (Python: ~6,000 instructions a read), compiled; a
connection opened by transport/streams.py receives through it.

Invariants: what `read` returns, raises and leaves in the reader is what `reader.read(n)` would,
and what a Feeder leaves in it is what `data_received` would (tests/test_reads.py holds them
side by side); one waiter at a time, cleared however the wait
ends (a cancellation included); a reader paused for its buffer's size is resumed before a wait,
and after a read that brought its buffer under the limit.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Final

# StreamReader sets these in its __init__ (checked once, on the class's code)
_FIELDS = ("_buffer", "_eof", "_exception", "_waiter", "_paused", "_transport", "_loop",
           "_limit")
_KNOWN: Final = all(name in asyncio.StreamReader.__init__.__code__.co_names for name in _FIELDS)
_READER: Final = asyncio.StreamReader  # (a constant: `asyncio.StreamReader` is a lookup each time)
# StreamWriter keeps its transport in `_transport` (its `transport` property returns it, and
# start_tls replaces it), from Python 3.8 to 3.13
_WRITER: Final = asyncio.StreamWriter
_WRITER_KNOWN: Final = "_transport" in asyncio.StreamWriter.__init__.__code__.co_names


async def read(stream: asyncio.StreamReader, n: int) -> bytes:
    """Up to `n` (> 0) bytes: what is buffered, else the next bytes to arrive; b"" at the
    end; raises what was set on the reader (a reset)."""
    if not _KNOWN or type(stream) is not _READER:
        return await stream.read(n)
    reader: Any = stream
    exception = reader._exception
    if exception is not None:
        raise exception
    if not reader._buffer and not reader._eof:
        if reader._waiter is not None:
            raise RuntimeError("read() called while another coroutine is already waiting for "
                               "incoming data")
        if reader._paused:  # (waiting while paused would never end)
            reader._paused = False
            reader._transport.resume_reading()
        waiter = reader._loop.create_future()
        reader._waiter = waiter
        try:
            await waiter
        finally:
            reader._waiter = None
    buffer: bytearray = reader._buffer
    if len(buffer) <= n:
        data = bytes(buffer)
        buffer.clear()
    else:
        data = bytes(memoryview(buffer)[:n])
        del buffer[:n]
    if reader._paused and len(buffer) <= reader._limit:  # (its _maybe_resume_transport)
        reader._paused = False
        reader._transport.resume_reading()
    return data


def quiet(stream: asyncio.StreamReader) -> bool:
    """Not at its end, and nothing unread: what a kept connection's reader is while idle
    (transport/upstream.py)."""
    if not _KNOWN or type(stream) is not _READER:
        return not stream.at_eof() and not unread(stream)
    reader: Any = stream
    return not reader._eof and not reader._buffer


def unread(stream: asyncio.StreamReader) -> int:
    """The bytes a reader holds that were not read yet (asyncio has no public call for it);
    a reader of another kind, which may hold some elsewhere, counts as holding one."""
    return len(getattr(stream, "_buffer", b"x"))


def transport_of(writer: asyncio.StreamWriter) -> asyncio.Transport:
    """`writer.transport` (the one it writes to now: after start_tls, the TLS one) without
    the Python property call; a socket's, which reads as well."""
    if _WRITER_KNOWN and type(writer) is _WRITER:
        known: Any = writer
        return known._transport
    return writer.transport  # type: ignore[return-value]


class Feeder:
    """A connection's `data_received`: StreamReaderProtocol's (its reader, held weakly as the
    protocol holds it) and StreamReader.feed_data's steps, on the reader's fields."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = weakref.ref(reader)

    def __call__(self, data: bytes) -> None:
        reader: Any = self._reader()
        if reader is None:  # (the reader is gone: nothing reads what arrives)
            return
        if reader._eof:
            raise AssertionError("feed_data after feed_eof")  # (as feed_data asserts)
        if not data:
            return
        buffer: bytearray = reader._buffer
        buffer.extend(data)
        waiter = reader._waiter
        if waiter is not None:  # (its _wakeup_waiter)
            reader._waiter = None
            if not waiter.cancelled():
                waiter.set_result(None)
        transport = reader._transport
        if transport is not None and not reader._paused and len(buffer) > 2 * reader._limit:
            try:
                transport.pause_reading()
            except NotImplementedError:
                reader._transport = None
            else:
                reader._paused = True


def feed_fast(protocol: asyncio.StreamReaderProtocol, reader: asyncio.StreamReader) -> None:
    """Have `protocol` (made for `reader`, not yet connected) receive through a Feeder: its
    transport looks `data_received` up on it, the instance before the class."""
    if _KNOWN and type(reader) is _READER and (
            type(protocol) is asyncio.StreamReaderProtocol):
        protocol.data_received = Feeder(reader)  # type: ignore[method-assign]
