"""Waiting for tor in fetch and exec: its bootstrap as a progress bar on a terminal, a sentence
when it stalls (with what tor last said), and one sentence when it is not ready in time.

Invariants: the wait is bounded (fetch's --max-time, exec's TOR_WAIT); a tor that failed ends
the wait at once with its error; nothing is printed when stderr is not a terminal unless tor
stalls or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator

from anonproxy.cli.progress import Progress
from anonproxy.exits.context import Context
from anonproxy.exits.tor_datadir import keep_seconds
from anonproxy.exits.tor_process import Tor

STALL = 20.0  # seconds without progress before saying so


class TorNotReady(Exception):
    """Tor was not ready in time, or could not start: one sentence for the user."""


@contextlib.asynccontextmanager
async def tors_for(ctx: Context, timeout: float) -> AsyncIterator[list[Tor]]:
    """The tors `ctx`'s exits need, ready, for a one-shot command (fetch, lists update): a tor
    already running for the same settings is used, else a keeper starts one that the next
    command finds ready (tor_datadir). TorNotReady when one is not ready within `timeout`;
    stopped using them when the block ends."""
    failure: Exception | None = None
    async with asyncio.TaskGroup() as tasks:
        tors = [Tor(spec, keep_seconds()) for spec in ctx.tor_specs()]
        runs = [tasks.create_task(tor.run()) for tor in tors]
        ctx.tors.update({tor.spec: tor for tor in tors})
        try:
            await wait_for_tors(tors, timeout)
            yield tors
        except Exception as error:  # noqa: BLE001 - the command's own: raised below, as itself
            failure = error  # (raised in here, the task group would wrap it in a group)
        finally:
            for run in runs:
                run.cancel()
    if failure is not None:
        raise failure


async def wait_for_tors(tors: list[Tor], timeout: float) -> None:
    """Until every tor in `tors` is ready; TorNotReady when one fails or `timeout` passes."""
    deadline = time.monotonic() + timeout
    bar = Progress.for_terminal("tor")
    try:
        for tor in tors:
            await _wait_for(tor, deadline, timeout, bar)
    finally:
        if bar is not None:
            bar.close()


async def _wait_for(tor: Tor, deadline: float, timeout: float, bar: Progress | None) -> None:
    label = tor.spec.label()
    shown, since = -1, time.monotonic()
    if bar is not None:
        bar.start_percent()
    while not tor.ready:
        now = time.monotonic()
        if tor.state == "failed":
            raise TorNotReady(f"tor ({label}) could not start: {tor.error}")
        if tor.progress != shown:
            shown, since = tor.progress, now
            if bar is not None:
                bar.set(tor.progress, tor.summary)
        elif now - since >= STALL:
            since = now
            print(f"anonproxy: tor ({label}) is still at {tor.progress}% "
                  f"({tor.summary or tor.state}){_last_words(tor)}", file=sys.stderr)
        if now >= deadline:
            raise TorNotReady(f"tor ({label}) was not ready after {timeout:g} s: bootstrapped "
                              f"{tor.progress}% ({tor.summary or tor.state})" + _last_words(tor))
        try:
            await tor.wait_ready(min(0.25, max(deadline - now, 0.01)))
        except TimeoutError:
            pass


def _last_words(tor: Tor) -> str:
    said = tor.last_words()
    return f"; tor last said: {said}" if said else ""
