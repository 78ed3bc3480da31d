"""Zero-copy relaying of one bulk tunnel direction: socket -> pipe -> socket with os.splice.

relay.py moves small and interactive traffic through asyncio protocols (one Python call per
read, no extra file descriptors). When a direction turns out to be bulk, it hands that direction
to a Splice: the bytes then go from the sending socket into a kernel pipe and from the pipe into
the receiving socket without ever being copied into Python, driven by the event loop's
add_reader/add_writer on duplicates of the two sockets' descriptors.

Invariants:
- Used only on Linux, for plain stream sockets (TCP or Unix; never TLS, never anything that is
  not a socket); `spliceable` says so, and the relay falls back to its protocols otherwise.
- While a Splice runs, the source's transport does not read (the relay paused it), and nothing
  is spliced into the destination before its transport's write buffer is empty, so bytes keep
  their order.
- Memory is bounded by one pipe in the kernel: the pipe is emptied into the destination before
  the source is read again, and while the destination does not take it, the source is not read
  (backpressure reaches the sender through TCP, as with the protocols).
- The four descriptors (two duplicates, the pipe) exist only while the direction is bulk: after
  QUIET seconds with nothing moved and the pipe empty, they are closed and the direction goes
  back to the protocols; `close` (idempotent) drops them at once. Watchers are removed before
  their descriptor is closed.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
from collections.abc import Callable

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
AVAILABLE = hasattr(os, "splice") and hasattr(os, "pipe2")
FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
PIPE_SIZE = 1 << 20  # asked for; the kernel may give less (fs.pipe-max-size)
ROUNDS = 8  # pipe-fuls moved per wake-up before other connections get their turn
QUIET = 5.0  # seconds without a byte before a direction gives its descriptors back
_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


def spliceable(transport: asyncio.BaseTransport) -> bool:
    """Whether `transport` is a plain stream socket that splice can read and write."""
    if not AVAILABLE or transport.is_closing():
        return False
    if transport.get_extra_info("sslcontext") is not None:
        return False
    if transport.get_extra_info("ssl_object") is not None:
        return False
    sock = transport.get_extra_info("socket")
    try:
        return (sock is not None and sock.type == socket.SOCK_STREAM
                and sock.family in _FAMILIES and sock.fileno() >= 0)
    except (AttributeError, OSError):
        return False


class Splice:
    """One direction, src socket -> dst socket, through a pipe.

    `moved(n)` is told of every n bytes read from src; `ended()` once src has finished sending
    and every byte of it went to dst; `failed()` on any error of either socket; `quiet()` when
    the direction went quiet and this Splice closed itself (the caller resumes the protocols).
    """

    __slots__ = ("loop", "src", "dst", "pr", "pw", "size", "pending", "eof", "waiting",
                 "timer", "busy", "closed", "on_moved", "on_ended", "on_failed", "on_quiet")

    def __init__(self, src: asyncio.BaseTransport, dst: asyncio.BaseTransport, *,
                 moved: Callable[[int], None], ended: Callable[[], None],
                 failed: Callable[[], None], quiet: Callable[[], None]) -> None:
        """Raises OSError when descriptors cannot be had (EMFILE): the caller stays as it was."""
        self.loop = asyncio.get_running_loop()
        self.on_moved, self.on_ended, self.on_failed, self.on_quiet = moved, ended, failed, quiet
        self.src = self.dst = self.pr = self.pw = -1
        self.closed = False
        self.waiting: str | None = None  # "read" (src), "write" (dst), or None
        self.timer: asyncio.TimerHandle | None = None
        self.pending = 0  # bytes in the pipe
        self.eof = False
        self.busy = False  # moved something since the last quiet check
        try:
            self.src = os.dup(src.get_extra_info("socket").fileno())
            self.dst = os.dup(dst.get_extra_info("socket").fileno())
            self.pr, self.pw = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.fcntl(self.pw, F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # a smaller pipe only means more system calls
            self.size = fcntl.fcntl(self.pw, F_GETPIPE_SZ)
        except BaseException:
            self._close_fds()
            raise

    def start(self) -> None:
        """Begin moving bytes (the destination's transport buffer must be empty by now)."""
        if self.closed:
            return
        self.timer = self.loop.call_later(QUIET, self._check_quiet)
        self._run()

    def _run(self) -> None:
        if self.closed:
            return
        try:
            for _ in range(ROUNDS):
                if self.pending:
                    self.pending -= os.splice(self.pr, self.dst, self.pending, flags=FLAGS)
                    if self.pending:  # the destination's socket buffer is full
                        self._wait("write")
                        return
                if self.eof:
                    self._end()
                    return
                n = os.splice(self.src, self.pw, self.size, flags=FLAGS)
                if n == 0:
                    self.eof = True
                    continue
                self.pending = n
                self.busy = True
                self.on_moved(n)
            self._wait("write" if self.pending else "read")  # more later: others' turn now
        except BlockingIOError:
            self._wait("write" if self.pending else "read")
        except OSError:  # reset, broken pipe: the tunnel is over
            self.close()
            self.on_failed()

    def _wait(self, what: str) -> None:
        if self.waiting == what:
            return
        if self.waiting == "read":
            self.loop.remove_reader(self.src)
        elif self.waiting == "write":
            self.loop.remove_writer(self.dst)
        if what == "read":
            self.loop.add_reader(self.src, self._run)
        else:
            self.loop.add_writer(self.dst, self._run)
        self.waiting = what

    def _end(self) -> None:
        self.close()
        self.on_ended()

    def _check_quiet(self) -> None:
        self.timer = None
        if self.closed:
            return
        if self.busy or self.pending or self.waiting != "read":
            self.busy = False
            self.timer = self.loop.call_later(QUIET, self._check_quiet)
            return
        self.close()
        self.on_quiet()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.waiting == "read":
            self.loop.remove_reader(self.src)
        elif self.waiting == "write":
            self.loop.remove_writer(self.dst)
        self.waiting = None
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self.src, self.dst, self.pr, self.pw):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.src = self.dst = self.pr = self.pw = -1
