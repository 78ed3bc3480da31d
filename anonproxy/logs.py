"""Connection log lines: host and exit, never paths, queries or bodies.

One line per tunnel (CONNECT, SOCKS5) or per proxied plain-HTTP request, as key=value pairs.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("anonproxy")

# Called with each connection record (proto, dest, exit, status, error), e.g. by
# `anonproxy exec --summary`; an observer must be quick and must not raise.
observers: list = []


class _Formatter(logging.Formatter):
    """Formats the timestamp once per second, not once per line (the log is on the hot path)."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return self._stamp


def setup(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def connection(
    proto: str,
    dest: object,
    exit_name: str,
    status: object,
    up: int,
    down: int,
    seconds: float,
    error: str | None = None,
) -> None:
    for observe in observers:
        observe(proto, dest, exit_name, status, error)
    if not log.isEnabledFor(logging.INFO):
        return
    line = (
        f"{proto} {dest} exit={exit_name} status={status} up={up} down={down} "
        f"ms={seconds * 1000:.0f}"
    )
    if error:
        line += f' error="{error}"'
    log.info(line)
