"""Idle upstream connections kept for reuse by plain-HTTP requests.

Invariants: a connection is only reused for the same exit and the same destination; one that
the other side has closed, or that sat idle longer than `ttl`, is never handed out; the number
kept is bounded per key, and every connection dropped from the pool is closed.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from anonproxy.transport.reads import quiet, transport_of

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Key = tuple[str, str, int]  # exit path ("pool>member"), host, port


class UpstreamPool:
    def __init__(self, per_key: int = 64, total: int = 512, ttl: float = 30.0) -> None:
        self._idle: defaultdict[Key, list[tuple[float, Stream]]] = defaultdict(list)
        self._per_key = per_key
        self._total = total
        self._ttl = ttl
        self._swept = time.monotonic()
        self.closed = False  # once closed (new identity, reload), it takes nothing back
        self._count = 0  # idle connections held, all keys

    def __len__(self) -> int:
        return self._count

    def take(self, key: Key) -> Stream | None:
        now = time.monotonic()
        if now - self._swept >= 1.0:
            self.sweep()
        idle = self._idle.get(key)
        while idle:
            since, stream = idle.pop()
            self._count -= 1
            if _usable(stream) and now - since < self._ttl:
                return stream
            stream[1].close()
        return None

    def give(self, key: Key, stream: Stream) -> None:
        idle = self._idle[key]
        if (self.closed or len(idle) >= self._per_key or not _usable(stream)
                or len(self) >= self._total):
            stream[1].close()
            return
        now = time.monotonic()
        idle.append((now, stream))
        self._count += 1
        if now - self._swept >= 1.0:
            self.sweep()

    def sweep(self) -> None:
        """Close what has idled past the TTL or gone bad (also run on a timer)."""
        now = self._swept = time.monotonic()
        for key in list(self._idle):
            keep = []
            for since, stream in self._idle[key]:
                if _usable(stream) and now - since < self._ttl:
                    keep.append((since, stream))
                else:
                    stream[1].close()
                    self._count -= 1
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def close(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            for _, stream in idle:
                stream[1].close()
        self._idle.clear()
        self._count = 0


def _usable(stream: Stream) -> bool:
    """Open, and silent since its last response: an upstream that sent anything unasked is out
    of step, and its bytes would be read as the next client's response."""
    reader, writer = stream
    return not transport_of(writer).is_closing() and quiet(reader)
