"""Zero-copy relaying socket -> pipe -> socket with os.splice: bulk tunnel directions, and
the rest of a forwarded body.

relay.py moves small and interactive traffic through asyncio protocols (one Python call per
read, no extra file descriptors). When a direction turns out to be bulk, it hands that direction
to a Splice: the bytes then go from the sending socket into a kernel pipe and from the pipe into
the receiving socket without ever being copied into Python, driven by the event loop's
add_reader/add_writer on duplicates of the two sockets' descriptors. exchange.py moves the rest
of a large Content-Length response body the same way, a counted number of bytes (`move`).

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
- A counted Splice (`move`) reads exactly its count from the source, never a byte past it, so
  what follows on the source stays for its next reader; it holds its descriptors until the
  count went through, a failure, or `idle` seconds without a byte moved either way (a stalled
  body is cut as the protocols cut it).
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
    (or `count` bytes were read) and every byte of it went to dst; `failed()` on any error of
    either socket (`broken` then says which: "src" or "dst"); `quiet()` when the direction went
    quiet and this Splice closed itself (the caller resumes the protocols; None: never quiet).
    """

    __slots__ = ("loop", "src", "dst", "pr", "pw", "size", "pending", "eof", "waiting",
                 "timer", "busy", "closed", "on_moved", "on_ended", "on_failed", "on_quiet",
                 "left", "last", "broken", "trailing")

    def __init__(self, src: asyncio.BaseTransport, dst: asyncio.BaseTransport, *,
                 moved: Callable[[int], None], ended: Callable[[], None],
                 failed: Callable[[], None], quiet: Callable[[], None] | None,
                 count: int | None = None) -> None:
        """Raises OSError when descriptors cannot be had (EMFILE): the caller stays as it was.
        `count`: read no more than this many bytes from src (None: until it ends)."""
        self.loop = asyncio.get_running_loop()
        self.on_moved, self.on_ended, self.on_failed, self.on_quiet = moved, ended, failed, quiet
        self.src = self.dst = self.pr = self.pw = -1
        self.closed = False
        self.waiting: str | None = None  # "read" (src), "write" (dst), or None
        self.timer: asyncio.TimerHandle | None = None
        self.pending = 0  # bytes in the pipe
        self.eof = False
        self.busy = False  # moved something since the last quiet check
        self.left = count  # bytes src may still send (None: no count)
        self.last = self.loop.time()  # when a byte last moved, either way
        self.broken: str | None = None  # the side whose error failed it
        self.trailing = False  # src had more to read after its count (or had ended)
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
        if self.on_quiet is not None:
            self.timer = self.loop.call_later(QUIET, self._check_quiet)
        self._run()

    def _run(self) -> None:
        if self.closed:
            return
        side = "dst"
        try:
            for _ in range(ROUNDS):
                if self.pending:
                    side = "dst"
                    before = self.pending
                    self.pending -= os.splice(self.pr, self.dst, self.pending, flags=FLAGS)
                    if self.pending != before:
                        self.last = self.loop.time()
                    if self.pending:  # the destination's socket buffer is full
                        self._wait("write")
                        return
                if self.eof or self.left == 0:
                    self._end()
                    return
                side = "src"
                want = self.size if self.left is None else min(self.size, self.left)
                n = os.splice(self.src, self.pw, want, flags=FLAGS)
                if n == 0:
                    self.eof = True
                    continue
                if self.left is not None:
                    self.left -= n
                self.pending = n
                self.busy = True
                self.last = self.loop.time()
                self.on_moved(n)
            self._wait("write" if self.pending else "read")  # more later: others' turn now
        except BlockingIOError:
            self._wait("write" if self.pending else "read")
        except OSError:  # reset, broken pipe: the tunnel is over
            self.broken = side
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
        if self.left == 0 and not self.eof:
            self.trailing = _readable(self.src)
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
        if self.on_quiet is not None:
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


def _readable(fd: int) -> bool:
    """Whether a read of socket `fd` would not block: a byte waits, or the peer has ended."""
    sock = socket.socket(fileno=fd)
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.detach()
    return True


class Broken(ConnectionError):
    """A counted move did not finish. `side`: "src" (it failed, ended before its count, or
    sent nothing for `idle` seconds) or "dst" (it failed, or took nothing for `idle` seconds);
    `stalled`: nothing moved for `idle` seconds."""

    def __init__(self, side: str, stalled: bool = False) -> None:
        super().__init__(f"{side} {'stalled' if stalled else 'failed'}")
        self.side, self.stalled = side, stalled


async def move(src: asyncio.Transport, dst: asyncio.Transport, count: int, *, idle: float,
               moved: Callable[[int], None]) -> bool:
    """Move exactly `count` bytes from src to dst through a pipe, telling `moved(n)` of each n
    read. The caller has given dst every byte it holds for it and emptied src's reader, and
    both are spliceable; src's reading is paused meanwhile and resumed after. Returns whether
    src had more to read past the count (or had ended). Raises Broken, or OSError when no
    descriptors can be had (nothing was moved: the caller may carry on without)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not done.done():
            done.set_result(None)

    splice = Splice(src, dst, moved=moved, ended=settle, failed=settle, quiet=None, count=count)
    watchdog: asyncio.TimerHandle | None = None

    def watch() -> None:  # cut after `idle` seconds with no byte moved either way
        nonlocal watchdog
        if loop.time() - splice.last >= idle:
            settle()
        else:
            watchdog = loop.call_at(splice.last + idle, watch)

    src.pause_reading()
    try:
        watchdog = loop.call_at(splice.last + idle, watch)
        splice.start()
        await done
        if splice.broken is not None:
            raise Broken(splice.broken)
        if not splice.closed:  # the watchdog settled it
            raise Broken("dst" if splice.waiting == "write" else "src", stalled=True)
        if splice.left:  # src ended before its count
            raise Broken("src")
        return splice.trailing
    finally:
        if watchdog is not None:
            watchdog.cancel()
        splice.close()
        if not src.is_closing():
            src.resume_reading()
