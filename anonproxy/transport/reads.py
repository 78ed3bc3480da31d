"""One read from an asyncio StreamReader, as its `read(n)` does it, compiled.

The hot path reads each client and each upstream once per request. `StreamReader.read` is
Python that awaits a second coroutine (`_wait_for_data`) to wait: two frames made, run and
torn down per read, ~8,500 instructions of a request's ~200,000 each (`scripts/bench
--instructions`). `read` here does the same steps on the same fields, compiled, awaiting the
reader's waiter future directly.

Those fields are StreamReader's own (`_buffer`, `_eof`, `_exception`, `_waiter`, `_paused`,
`_transport`, `_loop`, `_maybe_resume_transport`), the same from Python 3.8 to 3.13; a reader
of another type, or a Python whose StreamReader sets other fields, is read with its own `read`.

Invariants: what `read` returns, raises and leaves in the reader is what `reader.read(n)` would
(tests/test_reads.py holds them side by side); one waiter at a time, cleared however the wait
ends (a cancellation included); a reader paused for its buffer's size is resumed before a wait,
and after a read that brought its buffer under the limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

# StreamReader sets these in its __init__ (checked once, on the class's code)
_FIELDS = ("_buffer", "_eof", "_exception", "_waiter", "_paused", "_transport", "_loop")
_KNOWN = (all(name in asyncio.StreamReader.__init__.__code__.co_names for name in _FIELDS)
          and callable(getattr(asyncio.StreamReader, "_maybe_resume_transport", None)))


async def read(stream: asyncio.StreamReader, n: int) -> bytes:
    """Up to `n` (> 0) bytes: what is buffered, else the next bytes to arrive; b"" at the
    end; raises what was set on the reader (a reset)."""
    if not _KNOWN or type(stream) is not asyncio.StreamReader:
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
    reader._maybe_resume_transport()
    return data
