"""Several processes serving one port (`workers = N`): SO_REUSEPORT listening sockets, forked
before any event loop exists, so the kernel spreads new connections across the processes.

The first process (the parent) owns everything that must exist once: the dashboard, the pid
file, managed tors are refused (one tor per worker would mean N bootstraps and N sets of
circuits). It passes SIGTERM, SIGINT, SIGHUP and SIGUSR1 on to the others, and a dashboard
reload or new identity too. Each worker dies with the parent (PR_SET_PDEATHSIG), so a
crashed parent leaves no process holding the port.

Linux only (SO_REUSEPORT load balancing and prctl): elsewhere `require_linux` says so in one
sentence before anything is bound or forked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import socket
import sys
import time

from anonproxy.wire.address import Address


class WorkersUnavailable(Exception):
    """Workers cannot be used here or with this profile; the message says why."""


def require_linux() -> None:
    """Raise WorkersUnavailable anywhere but Linux: only its kernel spreads connections over
    SO_REUSEPORT sockets (elsewhere one socket would take them all), and a worker dies with its
    parent through prctl, which only Linux has."""
    if sys.platform != "linux":
        raise WorkersUnavailable("several worker processes need Linux (SO_REUSEPORT spreading "
                                 f"connections, prctl), and this system is {sys.platform}")


def reuseport_socket(listen: Address) -> socket.socket:
    """A listening TCP socket on `listen` that other processes may bind too."""
    require_linux()
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def fork_workers(count: int, listen: Address, run, timeout: float = 30.0) -> list[int]:
    """Start `count` worker processes, each serving its own SO_REUSEPORT socket on `listen`
    with `run(sock, ready)`, where `ready()` says it handles signals and accepts; their pids,
    once all are ready. Call before any event loop or thread exists."""
    readable, writable = os.pipe()
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's code
            code = 1
            try:
                os.close(readable)
                _die_with_parent()
                # a reload or new identity before our handlers exist must not kill us
                for sig in (signal.SIGHUP, signal.SIGUSR1):
                    signal.signal(sig, signal.SIG_IGN)

                def ready() -> None:
                    os.write(writable, b".")
                    os.close(writable)

                code = run(reuseport_socket(listen), ready)
            finally:
                os._exit(code or 0)
        pids.append(pid)
    os.close(writable)
    try:
        _wait_ready(readable, count, timeout)
    except WorkersUnavailable:
        forward(pids, signal.SIGKILL)
        reap(pids)
        raise
    finally:
        os.close(readable)
    return pids


def _wait_ready(fd: int, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise WorkersUnavailable(f"{count - seen} of {count} workers did not start "
                                     f"within {timeout:.0f} s")
        chunk = os.read(fd, count)
        if not chunk:  # every worker has exited or closed its end
            raise WorkersUnavailable(f"{count - seen} of {count} workers exited while starting")
        seen += len(chunk)


def forward(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reap(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
