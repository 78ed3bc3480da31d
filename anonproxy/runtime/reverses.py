"""The reverse entries of a running server: each one's listener, health probes and onion
service; started with the server, changed by reloads, drained at stop.

Invariants: an entry whose certificate or key does not load stops the start with one sentence
naming the file (at reload: the running entry is kept, and the reload says why); a reload keeps
each entry's listener, health and traffic when its listen address stays, starts entries that are
new and drains those that went; `allow` is read anew for each connection.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from anonproxy import logs
from anonproxy.config.profiles import LoadedProfile, ProfileError
from anonproxy.config.reverse import Reverse
from anonproxy.exits.context import Context
from anonproxy.reverse.entry import ReverseEntry
from anonproxy.reverse.listener import EntryListener
from anonproxy.reverse.onion import OnionService, OnionSettings
from anonproxy.reverse.probe import probe
from anonproxy.tls.termination import TlsFilesError, reload_context, server_context
from anonproxy.wire.address import Address


def _tls_files(loaded: LoadedProfile, settings: Reverse) -> tuple[Path, Path] | None:
    tls = settings.tls
    if tls is None:
        return None
    return loaded.resolve_path(tls.cert), loaded.resolve_path(tls.key)


def _onion_plan(ctx: Context, entry: ReverseEntry) -> tuple | None:
    """What an entry's onion service is published with (None: it has none): its settings, the
    tor, the target and the virtual port (443 when the entry speaks TLS, else 80)."""
    onion = entry.settings.onion
    if onion is None:
        return None
    spec = ctx.plans[onion.tor].tor_spec
    listen = entry.listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)
    return (OnionSettings(ctx.loaded.resolve_path(onion.key), tuple(onion.clients),
                          onion.max_streams), spec, Address(host, listen.port),
            443 if entry.tls is not None else 80)


class Reverses:
    """The running entries, by the listen address each was configured with."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self.allow: list = []
        self.running: dict[Address, EntryListener] = {}
        # each entry's onion service: what it was published with, and the task keeping it
        self._onions: dict[Address, tuple[tuple, asyncio.Task]] = {}

    @property
    def entries(self) -> list[ReverseEntry]:
        return [listener.entry for listener in self.running.values()]

    async def start(self, ctx: Context) -> None:
        """Start every entry of the profile (ProfileError: one could not start)."""
        self.allow = ctx.profile.allow
        for settings in ctx.profile.reverse:
            await self._start_one(settings, ctx)

    async def _start_one(self, settings: Reverse, ctx: Context) -> None:
        where = f"{ctx.loaded.path}: reverse entry {settings.listen}"
        files = _tls_files(ctx.loaded, settings)
        try:
            tls = server_context(*files) if files else None
        except TlsFilesError as error:
            raise ProfileError(f"{where}: tls: {error}") from None
        entry = ReverseEntry(settings, ctx, tls)
        listener = EntryListener(entry, lambda: self.allow, self._stopping)
        try:
            bound = await listener.start()
        except OSError as error:
            raise ProfileError(f"{where}: cannot listen ({error.strerror or error})") from None
        self.running[settings.listen_address] = listener
        logs.log.info("reverse entry on %s%s: %d backend(s), %s", bound.authority(),
                      " (TLS)" if tls else "", len(entry.backends), settings.strategy)

    def check(self, ctx: Context) -> None:
        """Before a reload takes: ProfileError when an entry's certificate or key does not
        load (the running profile and entries are then kept)."""
        for settings in ctx.profile.reverse:
            files = _tls_files(ctx.loaded, settings)
            if files is not None:
                try:
                    server_context(*files)
                except TlsFilesError as error:
                    raise ProfileError(f"{ctx.loaded.path}: reverse entry {settings.listen}: "
                                       f"tls: {error}") from None

    async def reload(self, ctx: Context, tasks: asyncio.TaskGroup) -> None:
        """Take a re-read profile (`check`ed): entries that stay are updated (their
        certificate and key read again), new ones start now (so that the probes and onion
        services that follow the reload include them), those gone are drained in `tasks`."""
        wanted = {settings.listen_address: settings for settings in ctx.profile.reverse}
        self.allow = ctx.profile.allow
        for address in [a for a in self.running if a not in wanted]:
            tasks.create_task(_drain(self.running.pop(address), ctx.limits.drain_timeout))
        for address, settings in wanted.items():
            listener = self.running.get(address)
            if listener is None:
                try:
                    await self._start_one(settings, ctx)
                except ProfileError as error:  # (an address taken meanwhile, say)
                    logs.log.error("%s", error)
            elif (listener.entry.tls is None) != (settings.tls is None):
                logs.log.warning("reverse entry %s keeps running as it was: turning TLS on or "
                                 "off needs a restart", settings.listen)
            else:
                files = _tls_files(ctx.loaded, settings)
                if files is not None and listener.entry.tls is not None:
                    try:
                        reload_context(listener.entry.tls, *files)
                    except TlsFilesError as error:  # (changed since `check`)
                        logs.log.error("reverse entry %s keeps its certificate: %s",
                                       settings.listen, error)
                listener.entry.update(settings, ctx)

    def probers(self, tasks: asyncio.TaskGroup, ctx: Context) -> list[asyncio.Task]:
        """Health probes of every entry's backends, on the profile's [health] interval."""
        health = ctx.profile.health
        return [tasks.create_task(entry.health.run(list(entry.backends), partial(probe, entry),
                                                   health.interval, health.timeout))
                for entry in self.entries]

    def sync_onions(self, tasks: asyncio.TaskGroup, ctx: Context, tors: dict) -> None:
        """Keep each entry's onion service published through its tor (`tors`: the server's
        running tors by spec): a service whose settings are unchanged keeps running across a
        reload; a changed one is withdrawn before it is published again; one whose entry went
        is withdrawn."""
        wanted = {}
        for address, listener in self.running.items():
            plan = _onion_plan(ctx, listener.entry)
            if plan is not None and plan[1] in tors:
                wanted[address] = plan
        for address, (plan, task) in list(self._onions.items()):
            if wanted.get(address) != plan:
                task.cancel()
                del self._onions[address]
                if address in self.running:
                    self.running[address].entry.onion_service = None
        for address, plan in wanted.items():
            if address in self._onions:
                continue
            previous = [task for (_, task) in self._onions.values()]  # (withdrawing, maybe)
            service = OnionService(plan[0], label=self.running[address].entry.label)
            self.running[address].entry.onion_service = service
            task = tasks.create_task(_keep(service, tors[plan[1]], plan[2], plan[3], previous))
            self._onions[address] = (plan, task)

    def onion_tasks(self) -> list[asyncio.Task]:
        return [task for (_, task) in self._onions.values()]

    async def drain(self, timeout: float) -> None:
        listeners = list(self.running.values())
        self.running.clear()
        await asyncio.gather(*(_drain(listener, timeout) for listener in listeners))

    def status(self) -> list[dict]:
        return [entry.status() for entry in self.entries]


async def _keep(service: OnionService, tor, target: Address, port: int,
                previous: list[asyncio.Task]) -> None:
    """Keep `service` published until cancelled, once the services withdrawn before it are
    gone (tor refuses a second service with the same key); any failure is logged, never
    raised into the serve loop."""
    if previous:
        await asyncio.wait(previous)
    try:
        await service.keep(tor, target, port)
    except Exception as error:  # noqa: BLE001 -- the serve loop must outlive one service's bug
        logs.log.error("onion service of %s stopped: %s", service.label, error)


async def _drain(listener: EntryListener, timeout: float) -> None:
    """Stop an entry: no new clients, the busy ones given `timeout`, its kept connections
    closed."""
    await listener.drain(timeout)
    listener.entry.pool.close()
