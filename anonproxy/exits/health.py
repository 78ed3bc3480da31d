"""Health of the exits that pools draw on: probed on an interval, with hysteresis.

A member starts up. `fall` consecutive failures (probes or real connections) mark it down;
`rise` consecutive successes mark it up again. Only members of pools whose kind can check
itself are probed (Plan.probes: chains, whose probe reaches the last hop through the others
and greets it, contacting no destination).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from anonproxy import logs


@dataclass
class MemberState:
    up: bool = True
    streak: int = 0  # consecutive results contrary to `up`
    last_error: str | None = None
    last_probe: float | None = None
    latency_ms: float | None = None
    changed: float = field(default_factory=time.time)


class Health:
    def __init__(self, rise: int, fall: int, label: str = "exit") -> None:
        self.rise, self.fall = rise, fall
        self.label = label  # what the log calls a member: an exit, or a reverse entry's backend
        self.states: dict[str, MemberState] = {}

    def is_up(self, name: str) -> bool:
        state = self.states.get(name)
        return state is None or state.up

    def record(self, name: str, ok: bool, error: str | None = None,
               latency_ms: float | None = None) -> None:
        state = self.states.setdefault(name, MemberState())
        if latency_ms is not None:
            state.latency_ms = latency_ms
        if not ok:
            state.last_error = error
        if ok == state.up:
            state.streak = 0
            return
        state.streak += 1
        if state.streak >= (self.rise if ok else self.fall):
            state.up, state.streak, state.changed = ok, 0, time.time()
            if ok:
                logs.log.warning("%s '%s' is up again", self.label, name)
            else:
                logs.log.warning("%s '%s' is down: %s", self.label, name, error)

    def describe(self, name: str) -> str:
        state = self.states.get(name)
        if state is None or state.up:
            return f"{name}: up"
        ago = time.time() - state.changed
        return f"{name}: down for {ago:.0f} s ({state.last_error})"

    def snapshot(self, name: str) -> dict:
        """What the dashboard shows of `name`'s health (a member never seen counts as up)."""
        state = self.states.get(name)
        if state is None:
            return {"up": True, "last_probe": None, "latency_ms": None, "last_error": None}
        return {"up": state.up, "last_probe": state.last_probe,
                "latency_ms": None if state.latency_ms is None else round(state.latency_ms, 1),
                "last_error": state.last_error, "since": state.changed}

    async def run(self, names: list[str], probe, interval: float, timeout: float) -> None:
        """Probe `names` every `interval` seconds until cancelled."""
        while True:
            async with asyncio.TaskGroup() as tasks:
                for name in names:
                    tasks.create_task(self._probe_one(name, probe, timeout))
            await asyncio.sleep(interval)

    async def _probe_one(self, name: str, probe, timeout: float) -> None:
        started = time.monotonic()
        try:
            await probe(name, timeout)
        except Exception as error:  # noqa: BLE001 - any failure is this member's failure
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            self.record(name, False, message)
        else:
            self.record(name, True, latency_ms=(time.monotonic() - started) * 1000)
        self.states[name].last_probe = time.time()
