"""Connection log lines: host and exit, never paths, queries or bodies.

One line per tunnel (CONNECT, SOCKS5) or per proxied plain-HTTP request, as key=value pairs.
These lines are on the hot path, so they skip the logging machinery: formatted here in the
same layout as the other log lines, gathered while the event loop runs callbacks, and written
to the log stream in one write per loop iteration (measured: the logging module cost about a
fifth of the proxy's time per request).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger("anonproxy")

class Record:
    """One finished tunnel or plain-HTTP request, as observers see it (read by attribute:
    compiled, a plain class is made and read without a Python call, which a NamedTuple's
    fields are not)."""

    __slots__ = ("proto", "dest", "exit", "status", "up", "down", "seconds", "error", "blocked")

    def __init__(self, proto: str, dest: object, exit_name: str, status: object, up: int,
                 down: int, seconds: float, error: str | None = None,
                 blocked: tuple[str, str] | None = None) -> None:
        self.proto = proto
        self.dest = dest  # an Address, or "-" when the request never named one
        self.exit = exit_name
        self.status = status  # an int, or a SOCKS reply code as text
        self.up = up
        self.down = down
        self.seconds = seconds
        self.error = error
        self.blocked = blocked  # (list, rule) when a block list refused it


# Called with each connection's Record, e.g. by `anonproxy exec --summary` and the dashboard;
# an observer must be quick and must not raise.
observers: list = []


_stamp_second = -1
_stamp = ""


def _timestamp(now: float) -> str:
    """The local time, formatted once per second rather than once per line."""
    global _stamp_second, _stamp
    second = int(now)
    if second != _stamp_second:
        _stamp_second = second
        _stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
    return _stamp


class _Formatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record.created)


_pending: list[str] = []
_stream: TextIO = sys.stderr


def setup(verbose: bool = False) -> None:
    global _stream
    _stream = sys.stderr
    handler = logging.StreamHandler(_stream)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    atexit.register(_flush)  # lines still gathered when the loop stops


def _flush() -> None:
    if not _pending:
        return
    lines = "".join(_pending)
    _pending.clear()
    try:
        _stream.write(lines)
        _stream.flush()
    except (OSError, ValueError):  # the log stream went away: the proxy carries on
        pass


def _batched(line: str) -> None:
    """Gather `line` for the write at the end of this loop iteration."""
    if not _pending:
        try:
            asyncio.get_running_loop().call_soon(_flush)
        except RuntimeError:  # no event loop: write now
            _pending.append(line)
            _flush()
            return
    _pending.append(line)


# Where connection lines go: a variable, not a function, so that tests can send each line to
# the proxy that wrote it (tests/proxies.py); compiled code reads a variable at each call.
_emit: Callable[[str], None] = _batched


def connection(
    proto: str,
    dest: object,
    exit_name: str,
    status: object,
    up: int,
    down: int,
    seconds: float,
    error: str | None = None,
    blocked: tuple[str, str] | None = None,
) -> None:
    if observers:
        record = Record(proto, dest, exit_name, status, up, down, seconds, error, blocked)
        for observe in observers:
            observe(record)
    # (the level is asked on a loop iteration's first line, the others go as it went: asking
    # the logging module is a Python call)
    if not _pending and not log.isEnabledFor(logging.INFO):
        return
    end = f' error="{error}"\n' if error else "\n"
    _emit(f"{_timestamp(time.time())} INFO {proto} {dest} exit={exit_name} status={status} "
          f"up={up} down={down} ms={int(seconds * 1000 + 0.5)}{end}")  # (an int formats faster)
