"""Small writes gathered for the end of the event loop's turn, then written back to back.

Why: a write to a loopback or LAN peer that sleeps in epoll wakes it, and the kernel does that
inside our send (sock_def_readable -> try_to_wake_up); on a virtual machine the wake-up of a
thread on another CPU is an inter-processor interrupt and a VM exit, which measured a third of
a cache hit's CPU (`scripts/bench-cache --profile`, then `perf record -a -g`: nearly all of the
kernel's share under `sock_def_readable`). When a loop turn's writes go out right after each
other, the first wakes the peer and the rest find it running. So the first write of a turn
goes at once (a lone request waits for nothing), and later ones wait for the turn's end: one
callback queued behind the ready tasks (`call_soon`) writes them back to back.

Invariants: the bytes of one writer keep their order, with each other and with everything
written to that writer directly: a user of this module flushes a writer's queued bytes
(`flush`) before any other write, close or transport operation on it; nothing larger than
`SMALL` waits (a large write's own buffer is its backpressure); a writer that closed meanwhile
gets nothing (its peer is gone, or we are closing it without an answer).
"""

from __future__ import annotations

import asyncio

from anonproxy.transport.reads import transport_of

SMALL = 1 << 16  # a write up to this size may wait for the end of the turn


class WriteBatch:
    """The writes of one event loop waiting for the end of its turn."""

    __slots__ = ("_loop", "_pending", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: dict[asyncio.StreamWriter, list[bytes]] = {}
        self._scheduled = False

    def add(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write `data` to `writer`: at once when it is the turn's first write (a lone request
        waits for nothing), else after what is queued for the turn's end."""
        if not self._scheduled:  # the turn's first write
            self._scheduled = True
            self._loop.call_soon(self._flush_all)
            transport_of(writer).write(data)  # (StreamWriter.write's one step)
            return
        parts = self._pending.get(writer)
        if parts is None:
            self._pending[writer] = [data]
        else:
            parts.append(data)

    def flush(self, writer: asyncio.StreamWriter) -> None:
        """Write what is queued for `writer` now (before another write or close of it)."""
        parts = self._pending.pop(writer, None)
        if parts is not None:
            _write(writer, parts)

    def _flush_all(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for writer, parts in pending.items():
            _write(writer, parts)


def _write(writer: asyncio.StreamWriter, parts: list[bytes]) -> None:
    transport = transport_of(writer)  # (StreamWriter's own calls are Python)
    if not transport.is_closing():
        transport.write(parts[0] if len(parts) == 1 else b"".join(parts))


_BATCHES: dict[asyncio.AbstractEventLoop, WriteBatch] = {}


def batch_of(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    """The loop's batch (one per loop: workers and tests run several loops)."""
    found = _BATCHES.get(loop)
    if found is None:
        if len(_BATCHES) > 64:  # (loops that ended: tests start many)
            for old in [other for other in _BATCHES if other.is_closed()]:
                del _BATCHES[old]
        found = _BATCHES[loop] = WriteBatch(loop)
    return found
