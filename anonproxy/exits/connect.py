"""Dialing TCP for the exits, and what went wrong in words that name no address.

Shared by the kinds that connect themselves (direct.py, chain.py; tor.py through chain.py):
`tcp` opens a connection, from a chosen source address if one is given; `os_error` says what
an OSError means and which SOCKS5 reply code it maps to.

Invariants: a source address is honoured or the connection fails, never silently dropped;
`os_error`'s words never include an address (asyncio's own texts list the addresses it tried),
so they may go to a client; `raw_detail` (the OS's own text) goes to the owner's log only.
"""

from __future__ import annotations

import errno
import socket

from anonproxy.transport.streams import open_connection
from anonproxy.transport.upstream import Stream
from anonproxy.wire.errors import (
    SOCKS_CONNECTION_REFUSED,
    SOCKS_HOST_UNREACHABLE,
    SOCKS_NETWORK_UNREACHABLE,
)


async def tcp(host: str, port: int, *, source: str | None = None, limit: int = 1 << 16) -> Stream:
    kwargs: dict = {"limit": limit}
    if source is not None:
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        kwargs.update(local_addr=(source, 0), family=family)
    return await open_connection(host, port, **kwargs)


def os_error(error: OSError, source: str | None = None) -> tuple[str, int]:
    """What went wrong, in words that name no address (asyncio's own texts list the addresses
    it tried), and the SOCKS5 reply code for it."""
    code = error.errno
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the name ({error.strerror})", SOCKS_HOST_UNREACHABLE
    if code == errno.ECONNREFUSED or "refused" in str(error).lower():
        return "connection refused", SOCKS_CONNECTION_REFUSED
    if code == errno.EADDRNOTAVAIL and source:
        return "its source address is not available on this machine", SOCKS_NETWORK_UNREACHABLE
    if code in (errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return "network unreachable", SOCKS_NETWORK_UNREACHABLE
    if code == errno.EHOSTUNREACH:
        return "host unreachable", SOCKS_HOST_UNREACHABLE
    return (error.strerror or "the connection failed").lower(), SOCKS_HOST_UNREACHABLE


def raw_detail(error: OSError) -> str:
    """The OS's own text when os_error had no words for it (it may name addresses): owner only."""
    return f" ({error})" if error.strerror is None and str(error) else ""
