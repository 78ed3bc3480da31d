"""A connection's FIN sent right behind its last byte, not at its close.

Why: a client that reads a response to its end (a `Connection: close` answer, an HTTP/1.0 one
with no length) waits for the FIN, and a transport's `close()` sends it only later: asyncio and
uvloop close the socket on a following loop turn, after `connection_lost`, and the connection's
task still has its bookkeeping to do first (the upstream back to the pool, the log line). On
loopback that was ~50 µs between a fresh connection's last byte and its end (scripts/bench's
fresh-connection row), and a client asleep again by then pays a second wake-up. `shutdown
(SHUT_WR)` at once ends the sending while the transport, its reading and its close stay as they
were; it is what a later close would have sent, only sooner (a FIN, never a reset: unread
bytes from the client do not turn it into one, as they would a close).

Neither asyncio nor uvloop offers it: `write_eof()` waits for the next loop turn as `close()`
does, and the socket a transport lends (`get_extra_info("socket")`) refuses `shutdown` under
uvloop. So the descriptor is wrapped for the one call and let go (`detach`: the transport still
owns and closes it).

Invariants: only a plain TCP transport (uvloop's or asyncio's own, never TLS: its close_notify
must come first) whose every byte went to the kernel (nothing in its write buffer) is shut;
nothing may be written to it afterwards (its close follows as before); False, and nothing done,
otherwise.
"""

from __future__ import annotations

import asyncio
import socket
from asyncio import selector_events
from typing import Any, Final

try:
    from uvloop.loop import TCPTransport as _UVLOOP_TCP  # type: ignore[attr-defined]
except ImportError:  # (uvloop is optional: asyncio's own loop serves too)
    _UVLOOP_TCP = None

# asyncio's own TCP transport (Unix sockets too) and uvloop's TCP one
_ASYNCIO_TCP = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
_PLAIN: Final = frozenset(kind for kind in (_ASYNCIO_TCP, _UVLOOP_TCP) if kind is not None)


def send_fin(transport: asyncio.BaseTransport) -> bool:
    """End the sending of a plain TCP connection now (a FIN right behind what it sent), when
    every byte written to it went out; True when it did."""
    if type(transport) not in _PLAIN or transport.is_closing():
        return False
    plain: Any = transport
    if plain.get_write_buffer_size():
        return False  # (a FIN now would come before those bytes)
    sock = plain.get_extra_info("socket")
    if sock is None:
        return False
    try:  # (the family given, not asked of the socket: shutdown does not care, and asking is
        # a system call)
        wrapped = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, sock.fileno())
    except OSError:
        return False
    try:
        wrapped.shutdown(socket.SHUT_WR)
    except OSError:  # (the peer reset meanwhile: its close reports it)
        return False
    finally:
        wrapped.detach()
    return True
