"""Idle upstream connections kept for reuse by plain-HTTP requests.

Invariants: a connection is only reused for the same exit and the same destination; one that
the other side has closed, or that sat idle longer than `ttl`, is never handed out; the number
kept is bounded per key, and every connection dropped from the pool is closed.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Key = tuple[str, str, int]  # exit path ("pool>member"), host, port


class UpstreamPool:
    def __init__(self, per_key: int = 64, ttl: float = 30.0) -> None:
        self._idle: defaultdict[Key, list[tuple[float, Stream]]] = defaultdict(list)
        self._per_key = per_key
        self._ttl = ttl
        self._swept = time.monotonic()

    def take(self, key: Key) -> Stream | None:
        self._sweep()
        idle = self._idle.get(key)
        while idle:
            since, stream = idle.pop()
            if _usable(stream) and time.monotonic() - since < self._ttl:
                return stream
            stream[1].close()
        return None

    def give(self, key: Key, stream: Stream) -> None:
        idle = self._idle[key]
        if len(idle) >= self._per_key or not _usable(stream):
            stream[1].close()
            return
        idle.append((time.monotonic(), stream))
        self._sweep()

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < 1.0:
            return
        self._swept = now
        for key in list(self._idle):
            keep = []
            for since, stream in self._idle[key]:
                if _usable(stream) and now - since < self._ttl:
                    keep.append((since, stream))
                else:
                    stream[1].close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def close(self) -> None:
        for idle in self._idle.values():
            for _, stream in idle:
                stream[1].close()
        self._idle.clear()


def _usable(stream: Stream) -> bool:
    reader, writer = stream
    return not writer.is_closing() and not reader.at_eof()
