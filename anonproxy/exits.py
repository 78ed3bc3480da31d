"""Opening a stream to a destination through an exit.

For now one kind of exit: direct, leaving from this machine, optionally from a chosen source
address. Every failure is translated here into a ProxyError that names the exit, the
destination and the stage, so clients get one clear sentence (502/504 or a SOCKS reply code).

Invariants: a connection whose peer turns out to be the proxy's own listener is closed before a
byte is sent (no loops, even through a name that resolves to ourselves); a source address is
honoured or the connection fails, never silently dropped.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass

from .address import Address
from .config import Exit
from .errors import (
    SOCKS_CONNECTION_REFUSED,
    SOCKS_HOST_UNREACHABLE,
    SOCKS_NETWORK_UNREACHABLE,
    ExitFailed,
    Forbidden,
    StageTimeout,
)

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """An exit as the data path uses it."""

    name: str
    source: str | None = None

    @classmethod
    def from_config(cls, name: str, exit_: Exit) -> "ExitPlan":
        return cls(name, str(exit_.source) if exit_.source is not None else None)

    def describe(self) -> str:
        return f"exit '{self.name}' (direct{', from ' + self.source if self.source else ''})"


async def open_stream(
    plan: ExitPlan,
    dest: Address,
    *,
    timeout: float,
    is_self: Callable[[str, int, str], bool],
    limit: int = 1 << 16,
) -> Stream:
    """Connect to `dest` through `plan`; raise ProxyError naming the exit on any failure."""
    kwargs: dict = {"limit": limit}
    if plan.source is not None:
        family = socket.AF_INET6 if ":" in plan.source else socket.AF_INET
        kwargs.update(local_addr=(plan.source, 0), family=family)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(dest.host, dest.port, **kwargs)
    except TimeoutError:
        raise StageTimeout(
            f"{plan.describe()} timed out connecting to {dest} after {timeout:g} s"
        ) from None
    except socket.gaierror as error:
        raise ExitFailed(
            f"{plan.describe()} could not resolve {dest.host}: {error.strerror}",
            socks_reply=SOCKS_HOST_UNREACHABLE,
        ) from None
    except OSError as error:
        raise _connect_error(plan, dest, error) from None
    peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
    if peer and local and is_self(peer[0], peer[1], local[0]):
        writer.transport.abort()
        raise Forbidden(f"refusing to connect to the proxy itself ({dest})")
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


def _connect_error(plan: ExitPlan, dest: Address, error: OSError) -> ExitFailed:
    code = error.errno
    if code == errno.ECONNREFUSED or "refused" in str(error).lower():
        what, reply = "connection refused", SOCKS_CONNECTION_REFUSED
    elif code in (errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        what, reply = "network unreachable", SOCKS_NETWORK_UNREACHABLE
        if code == errno.EADDRNOTAVAIL and plan.source:
            what = f"source address {plan.source} is not available on this machine"
    elif code == errno.EHOSTUNREACH:
        what, reply = "host unreachable", SOCKS_HOST_UNREACHABLE
    else:
        what, reply = (error.strerror or str(error)).lower(), SOCKS_HOST_UNREACHABLE
    return ExitFailed(f"{plan.describe()} could not connect to {dest}: {what}", socks_reply=reply)
