"""Connection log lines: host and exit, never paths, queries or bodies.

One line per tunnel (CONNECT, SOCKS5) or per proxied plain-HTTP request, as key=value pairs.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("anonproxy")


def setup(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
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
    if not log.isEnabledFor(logging.INFO):
        return
    line = (
        f"{proto} {dest} exit={exit_name} status={status} up={up} down={down} "
        f"ms={seconds * 1000:.0f}"
    )
    if error:
        line += f' error="{error}"'
    log.info(line)
