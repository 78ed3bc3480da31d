"""What signals and the dashboard asked of a running proxy's serve loop and it has not done
yet: reloads (or profile switches), in order, and a new identity — with the event that wakes
the loop.

Invariants: a burst of SIGHUPs is one reload; each reload the dashboard asked for gets the
outcome of its own request, and one still queued when the proxy stops is told so; a new
identity asked for again before it was made is made once, for the latest request's site.
"""

from __future__ import annotations

import asyncio

SIGHUP = (None, None)  # a reload of the running profile, nobody waiting for its outcome


class Asks:
    """The serve loop's inbox: filled from signal handlers and dashboard requests (same loop)."""

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()
        # the profile to load (None: the current one) and who waits for that outcome
        self._reloads: list[tuple[str | None, asyncio.Future | None]] = []
        self._newnym: tuple[bool, str | None] = (False, None)  # asked?, for which site (None: all)

    def reload(self, ref: str | None = None, waiter: asyncio.Future | None = None) -> None:
        if (ref, waiter) != SIGHUP or self._reloads[-1:] != [SIGHUP]:
            self._reloads.append((ref, waiter))
        self.wakeup.set()

    def new_identity(self, site: str | None) -> None:
        self._newnym = (True, site)
        self.wakeup.set()

    async def wait(self) -> None:
        await self.wakeup.wait()
        self.wakeup.clear()

    def take_reloads(self) -> list[tuple[str | None, asyncio.Future | None]]:
        taken, self._reloads = self._reloads, []
        return taken

    def put_back(self, reloads: list[tuple[str | None, asyncio.Future | None]]) -> None:
        """Reloads taken but not done (the proxy began to stop): first in the queue again."""
        self._reloads[:0] = reloads

    def take_new_identity(self) -> tuple[bool, str | None]:
        """Whether a new identity was asked for, and for which site (None: every site)."""
        asked, self._newnym = self._newnym, (False, None)
        return asked

    def refuse_reloads(self, reason: str) -> None:
        """Answer every reload still queued with `reason` (the proxy is stopping)."""
        for _, waiter in self.take_reloads():
            if waiter is not None and not waiter.done():
                waiter.set_result(reason)
