"""Verified exits at run time: the last verdict of each exit's echo check (policy/verify.py),
and the refusal of an exit that was measured leaving from a country it does not declare.

`[verify] enforce = true` makes the server check every exit that declares a country at start
and every `interval` (runtime/server.py runs `run`); the dialer asks `refusal` before it opens
an exit, and a pool leaves a refused member out of its order (as it leaves out one health
marks down), so that it moves on to another.

Invariants: a refused exit fails closed with a 503 that names both countries (a country is not
an address: the public sentence says it too); a check that measured nothing (the echo
services failed) does not lift a refusal: the last measured country stands until a later
check measures a declared one; an exit never checked is not refused (the first check runs as
the server starts). Separate from Health: a mismatch is no connection failure, and a
successful connection through a lying exit must not bring it back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from anonproxy import logs
from anonproxy.policy.verify import Verdict
from anonproxy.wire.errors import ExitDown


@dataclass
class Checked:
    verdict: Verdict
    checked: float  # Unix time
    measured: str | None  # the last country measured (kept across checks that measured none)


class Verification:
    def __init__(self) -> None:
        self.states: dict[str, Checked] = {}

    def record(self, verdict: Verdict, checked: float | None = None) -> None:
        previous = self.states.get(verdict.exit)
        measured = verdict.country if verdict.address is not None else (
            previous.measured if previous is not None else None)
        self.states[verdict.exit] = Checked(verdict, checked or time.time(), measured)
        was = previous is not None and self.refused(verdict.exit, previous)
        now = self.refused(verdict.exit)
        if now and not was:
            logs.log.warning("exit '%s' is refused: it leaves from %s, declares %s", verdict.exit,
                             self.states[verdict.exit].measured, ", ".join(verdict.declared))
        elif was and not now:
            logs.log.warning("exit '%s' is verified again (%s)", verdict.exit, verdict.country)

    def refused(self, name: str, state: Checked | None = None) -> bool:
        """Whether the last measured country of `name` is one it does not declare."""
        state = state or self.states.get(name)
        if state is None or state.measured is None:
            return False
        declared = state.verdict.declared
        return bool(declared) and state.measured not in declared

    def allows(self, name: str) -> bool:
        return not self.refused(name)

    def refusal(self, name: str) -> ExitDown | None:
        """The error a request routed to `name` fails with, or None when it may be used."""
        if not self.refused(name):
            return None
        state = self.states[name]
        sentence = (f"exit '{name}' is out of service: it was measured leaving from "
                    f"{state.measured}, but declares {', '.join(state.verdict.declared)}")
        return ExitDown(sentence, public=sentence)

    def describe(self, name: str) -> str | None:
        """`name: refused (...)` for a pool's message, or None when it is not refused."""
        error = self.refusal(name)
        return None if error is None else f"{name}: {error.message}"

    def snapshot(self, name: str) -> dict | None:
        """What status and the dashboard show (`verified`), or None when never checked."""
        state = self.states.get(name)
        if state is None:
            return None
        verdict = state.verdict
        return {"country": verdict.country, "address": verdict.address,
                "declared": list(verdict.declared), "checked": state.checked, "ok": verdict.ok,
                "verdict": verdict.word, "error": verdict.error,
                "refused": self.refused(name)}

    async def run(self, names: list[str], check: Callable[[str], Awaitable[Verdict]],
                  interval: float) -> None:
        """Check `names` now and every `interval` seconds until cancelled; `check` never
        raises for a failed measurement (the verdict says FAILED)."""
        while True:
            async with asyncio.TaskGroup() as tasks:
                for name in names:
                    tasks.create_task(self._check_one(name, check))
            await asyncio.sleep(interval)

    async def _check_one(self, name: str, check: Callable[[str], Awaitable[Verdict]]) -> None:
        try:
            verdict = await check(name)
        except Exception as error:  # noqa: BLE001 - a check that broke must not stop the proxy
            logs.log.error("exit '%s' verification could not run: %s", name, error)
            return
        if not verdict.ok:
            logs.log.warning("exit '%s' verification: %s %s", name, verdict.word, verdict.error)
        self.record(verdict)
