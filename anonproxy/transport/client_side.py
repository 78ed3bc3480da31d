"""What the transport layer needs of a client connection, as a protocol of its own.

inbound/ owns client connections (inbound/client.py's ClientConn implements `ClientSide`);
transport/ moves bytes for them. Defining the protocol, the error a vanished client raises and
the per-request trace here keeps the imports one way: inbound/ imports transport/, never the
reverse (the layers contract in pyproject.toml).

Invariants: `write` never blocks (True when everything went out at once or waits for the end
of the loop's turn, else the caller awaits `drained`, which cuts off a client that stopped
reading); `writer` comes with every byte written before it in it; a client that closed or reset
raises ClientGone, never an OSError.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from anonproxy.transport.batch import WriteBatch
from anonproxy.transport.deadline import Deadline
from anonproxy.wire.messages import Event
from anonproxy.wire.response_relay import ResponseTap

READ_SIZE = 1 << 16  # one read from either side


class ClientGone(Exception):
    """The client closed or reset its connection."""


class Trace:
    """What one request's log line says: the exit path used and the body bytes each way."""

    __slots__ = ("exit", "up", "down")

    def __init__(self) -> None:
        self.exit, self.up, self.down = "-", 0, 0


class Timeouts(Protocol):
    """The limits of the profile serving the request that transport/ applies."""

    @property
    def response_timeout(self) -> float: ...

    @property
    def idle_timeout(self) -> float: ...

    @property
    def max_response_header_bytes(self) -> int: ...


class ClientSide(Protocol):
    """One client connection, as an exchange or a WebSocket relay uses it."""

    reader: asyncio.StreamReader
    pending: deque[Event]  # parsed, not yet taken: bytes the client sent past the request head
    deadline: Deadline  # the connection task's own timer
    batch: WriteBatch  # the loop's writes for the end of its turn (asking the loop for it costs
    # a system call: asyncio's get_running_loop checks the process ID each time)
    tap: ResponseTap | None  # who else follows the response (the cache), or None

    @property
    def writer(self) -> asyncio.StreamWriter:
        """The writer, once what `write` queued went into it (see transport/batch.py)."""
        ...

    @property
    def limits(self) -> Timeouts: ...

    def write(self, data: bytes) -> bool: ...

    def ended(self) -> None:
        """The response went out whole and the connection carries no other: the client may
        see its end now (transport/fin.py), before the request's bookkeeping."""
        ...

    def lost(self) -> asyncio.Future[None]: ...

    async def drained(self) -> None: ...

    async def next_event(self) -> Event: ...
