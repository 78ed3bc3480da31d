"""The tors a running proxy's profiles use: one per TorSpec, started when some profile needs
it, stopped when none does any more (after a reload or profile switch), and asked for new
identities.

Invariants: one tor per spec, shared by every profile (context) that uses it — `running` is
the one dict every Context holds; a tor no profile uses is stopped and leaves `running` at
once, so no new connection goes through it; a new identity renews the isolation keys of every
tor at once, and NEWNYM (for all sites) is sent only to a tor that is ready, when tor allows it.
"""

from __future__ import annotations

import asyncio

from anonproxy import logs
from anonproxy.exits.tor_process import Tor, TorSpec


def site_renewal_words(site: str, exits: list[tuple[str, str, str]]) -> str:
    """What a new identity for one site did, in words, given (profile, exit, isolation) of each
    Tor exit: a profile key carries every site of its profile, so it was renewed whole; a
    per-connection exit had nothing to renew."""
    modes = {mode for _, _, mode in exits}
    said = [f"new identity for {site}"] if not modes or "site" in modes else []
    for profile, name, mode in exits:
        if mode == "profile":
            said.append(f"exit '{name}' isolates per profile: a new identity for one site is a "
                        f"new identity for the whole profile '{profile}'")
        elif mode == "connection":
            said.append(f"exit '{name}' isolates per connection: every connection already gets "
                        f"a circuit of its own, so there was nothing to renew for {site}")
    return "; ".join(dict.fromkeys(said))


class Tors:
    """The running tors and the tasks that run them (inside the serve loop's TaskGroup)."""

    def __init__(self, keep: float | None = None) -> None:
        self.keep = keep  # Tor(keep=...): None for serve, seconds for exec
        self.running: dict[TorSpec, Tor] = {}  # shared with every Context (Context.tors)
        self._tasks: dict[TorSpec, asyncio.Task] = {}

    def sync(self, wanted: set[TorSpec], tasks: asyncio.TaskGroup) -> None:
        """Run one tor per spec in `wanted`; stop those not in it any more."""
        for spec in wanted - self._tasks.keys():
            self.running[spec] = Tor(spec, self.keep)
            self._tasks[spec] = tasks.create_task(self.running[spec].run())
        for spec in self._tasks.keys() - wanted:
            self._tasks.pop(spec).cancel()
            self.running.pop(spec, None)

    def tasks(self) -> list[asyncio.Task]:
        return list(self._tasks.values())

    async def new_identity(self, site: str | None) -> None:
        """New isolation keys for `site` (or every site) in every tor; for every site also
        NEWNYM, waiting as long as tor asks before the second try."""
        for tor in list(self.running.values()):
            tor.new_identity_for(site)
            if site is not None or tor.state != "ready":
                continue
            wait = await tor.newnym()
            if wait:
                logs.log.warning("tor (%s): tor allows a new identity in %.0f s; isolation keys "
                                 "were renewed now, NEWNYM follows then", tor.spec.label(), wait)
                await asyncio.sleep(wait)
                await tor.newnym()
            logs.log.info("tor (%s): new identity", tor.spec.label())
