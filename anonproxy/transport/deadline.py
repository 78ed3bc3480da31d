"""A cheap per-task deadline: one timer handle per connection instead of a timeout per read.

`asyncio.timeout()` allocates a context manager, a timer handle and a cancel-scope state for
every read; on a keep-alive connection that is most of the per-request bookkeeping. A Deadline
is made once per task. Moving it (`arm`) is a float store; the timer is re-armed lazily when it
fires early, and only moved earlier when a shorter deadline is set.

    deadline.arm(timeout)
    try:
        data = await reader.read(n)
    except asyncio.CancelledError:
        if deadline.expired():     # ours: the deadline passed (clears the mark, uncancels)
            ...                    # handle the timeout
        raise                      # someone else's cancellation: pass it on
    finally:
        deadline.disarm()

Invariants: the task is cancelled only while armed (between `arm` and `disarm`), so the
cancellation lands in the awaited read; `expired()` tells our cancellation from any other and
undoes its count on the task, so TaskGroup and shutdown cancellation keep working.
"""

from __future__ import annotations

import asyncio


class Deadline:
    __slots__ = ("loop", "_task", "_when", "_handle", "_at", "_fired")

    def __init__(self, task: asyncio.Task[object] | None = None) -> None:
        # (the task's loop when given one: asking asyncio for the running loop costs a system
        # call, as its get_running_loop checks the process ID)
        current = task or asyncio.current_task()
        if current is None:
            raise RuntimeError("a Deadline belongs to a task: create it inside one")
        self.loop = current.get_loop()
        self._task = current
        self._when: float | None = None
        self._handle: asyncio.Handle | None = None
        self._at = 0.0  # when the pending handle fires (uvloop's handle for a time already
        # past is a plain Handle, without when())
        self._fired = False

    def arm(self, timeout: float) -> None:
        """Cancel the task if it is still armed `timeout` seconds from now."""
        when = self.loop.time() + timeout
        self._when = when
        handle = self._handle
        if handle is None or self._at > when:
            if handle is not None:
                handle.cancel()
            self._handle, self._at = self.loop.call_at(when, self._fire), when

    def disarm(self) -> None:
        self._when = None  # the pending handle (if any) finds nothing to do, and stops

    def close(self) -> None:
        self._when = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def expired(self) -> bool:
        """True (once) when the current CancelledError is this deadline's; uncancels the task."""
        if not self._fired:
            return False
        self._fired = False
        self._task.uncancel()
        return True

    def _fire(self) -> None:
        self._handle = None
        when = self._when
        if when is None:
            return
        if self.loop.time() < when:  # moved later since this handle was set
            self._handle, self._at = self.loop.call_at(when, self._fire), when
            return
        self._when = None
        self._fired = True
        self._task.cancel()
