"""A bidirectional byte pipe between two streams, with half-close and an idle timeout.

Invariants: bytes are relayed unchanged and in order; memory per direction is bounded by one read
buffer plus the writer's high-water mark (each write waits for drain); when one side finishes
sending, the other side is told (half-close) and may keep sending; when neither side moves for
`idle` seconds, or either side fails, both are torn down.
"""

from __future__ import annotations

import asyncio

READ_SIZE = 1 << 18


class _Pipe:
    __slots__ = ("bytes", "_touch")

    def __init__(self, touch) -> None:
        self.bytes = 0
        self._touch = touch

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            self._touch()
            self.bytes += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()


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
    if early_ab:
        b[1].write(early_ab)
    if early_ba:
        a[1].write(early_ba)
    loop = asyncio.get_running_loop()
    deadline = asyncio.timeout(idle)

    def touch() -> None:
        deadline.reschedule(loop.time() + idle)

    up, down = _Pipe(touch), _Pipe(touch)
    up.bytes, down.bytes = len(early_ab), len(early_ba)
    try:
        async with deadline:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(up.pump(a[0], b[1]))
                tasks.create_task(down.pump(b[0], a[1]))
    except* (OSError, asyncio.IncompleteReadError):
        pass  # one side reset: both are done
    except* TimeoutError:
        pass  # idle too long
    return up.bytes, down.bytes
