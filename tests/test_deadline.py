"""transport/deadline.py on both event loops: a deadline armed for a time already past (a
request head whose header_timeout ran out while it arrived) cancels the task at once, instead of
failing (uvloop's handle for a past time has no when())."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from anonproxy.transport.deadline import Deadline


async def _armed_in_the_past() -> bool:
    deadline = Deadline()
    deadline.arm(0)
    deadline.arm(-1)  # earlier still: replaces the pending handle
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        return deadline.expired()
    return False


async def _moved_later_then_disarmed() -> bool:
    deadline = Deadline()
    deadline.arm(0.01)
    deadline.arm(0.05)  # later: the first handle re-arms itself for this time
    await asyncio.sleep(0.02)
    deadline.disarm()
    await asyncio.sleep(0.06)
    deadline.close()
    return True


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_deadline_in_the_past_cancels_at_once(run):
    assert run(_armed_in_the_past()) is True


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_deadline_moved_later_then_disarmed_never_fires(run):
    assert run(_moved_later_then_disarmed()) is True
