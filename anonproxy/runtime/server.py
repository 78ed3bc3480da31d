"""The running proxy: its profiles (the main one and those a proxy username selects:
contexts.py), the tors they use (tors.py), health probes and exit verification, reloads, new
identities, the dashboard, and the serve loop that turns signals and dashboard actions
(asks.py) into them.
Accepting connections is the Listener's.

Invariants:
- A reload or profile switch that fails keeps the running profile and says why; connections in
  flight keep the profile they started with.
- Credentials, when the proxy requires them, are compared in constant time (contexts.py).
- It never listens beyond loopback without an allow-list or credentials: start() and every
  reload or switch ask profiles.listen_problems about the address actually bound.
- SIGINT/SIGTERM: stop accepting, drain (listener.py), stop tors and the dashboard, return;
  other worker processes get the same signals (workers.py).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from anonproxy import logs
from anonproxy.admin.control import newnym_request_file, take_newnym_request
from anonproxy.config.models import Admin
from anonproxy.config.profiles import (
    LoadedProfile,
    ProfileError,
    known_profiles,
    listen_problems,
    load_profile,
)
from anonproxy.exits.context import Context
from anonproxy.exits.echo import check_enforced, declared
from anonproxy.exits.tor_process import TorUnavailable
from anonproxy.inbound.listener import Listener
from anonproxy.runtime.asks import Asks
from anonproxy.runtime.contexts import Contexts, profile_credentials
from anonproxy.runtime.reverses import Reverses
from anonproxy.runtime.tors import Tors
from anonproxy.runtime.workers import forward, reap
from anonproxy.wire.address import Address, AddressError, check_host

NO_IDENTITY = ("this proxy has no Tor exit, so there is no identity to renew (other exits "
               "keep their addresses)")

if TYPE_CHECKING:
    from anonproxy.admin.activity import Activity
    from anonproxy.admin.app import AdminApp


class ProxyServer:
    """The running proxy: owns the listening socket and the live connections."""

    def __init__(self, loaded: LoadedProfile, listen: Address | None = None,
                 profile_ref: str | None = None,
                 credentials: tuple[str, str] | None = None,
                 admin: Admin | None = None, loopback_allowed: bool = True,
                 tor_keep: float | None = None) -> None:
        """`profile_ref` (a name or path) is what reloads re-read; without it, no reloads.
        `admin`: the dashboard's settings (started by start_admin). `loopback_allowed=False`
        (exec --strict): this machine's addresses only where a rule's cidrs name them.
        `tor_keep`: a managed tor this process must start is kept by a keeper for that many
        seconds after its last use (exec); None: it dies with this process (serve)."""
        self.loopback_allowed = loopback_allowed
        self.listen = listen or loaded.profile.listen_address
        self.profile_ref = profile_ref
        self.admin = admin
        self.admin_address: Address | None = admin.address if admin is not None else None
        self._admin_app: AdminApp | None = None
        self.activity: Activity | None = None  # what the dashboard shows (set by start_admin)
        self.token_path: Path | None = None
        self.control_path: Path | None = None  # the control socket of a serve without dashboard
        self.started = time.time()
        self.identities = 0  # new identities made since start
        self.reloads = 0
        self.last_reload_error: str | None = None
        self.children: list[int] = []  # other worker processes on our port (workers.py)
        self._fixed_credentials = credentials is not None  # given by `exec`, not the profile
        self._tors = Tors(tor_keep)
        self.tors = self._tors.running  # (every Context holds this same dict)
        self.contexts = self._load(loaded, credentials or profile_credentials(loaded))
        self._stopping = asyncio.Event()
        self.listener = Listener(self.context_for, lambda: self.ctx,
                                 lambda: self.contexts.credentials is not None, self._stopping,
                                 loaded.profile.allow, loaded.profile.local_accounts)
        self._asks = Asks()  # reloads and a new identity, for the serve loop
        self.reverses = Reverses(self._stopping)  # the [[reverse]] entries (runtime/reverses.py)

    def _load(self, loaded: LoadedProfile, credentials: tuple[str, str] | None) -> Contexts:
        return Contexts.load(loaded, self.listen, credentials, tors=self.tors,
                             admin=self.admin_address, loopback_allowed=self.loopback_allowed)

    @property
    def ctx(self) -> Context:
        """The main profile's context."""
        return self.contexts.main

    def context_for(self, credentials: tuple[str, str] | None) -> Context:
        """The context for a client (Contexts.for_client): AuthRequired, NoSuchProfile."""
        return self.contexts.for_client(credentials)

    @property
    def limits(self):
        return self.ctx.limits

    async def start(self, sock: socket.socket | None = None) -> Address:
        """Listen on the profile's (or given) address, or accept on a socket made elsewhere.
        Raises ProfileError for an address beyond loopback without allow or credentials."""
        if not self.ctx.profile.forwarding:  # listen = "off": reverse entries alone
            await self.reverses.start(self.ctx)
            return self.listen
        host = sock.getsockname()[0] if sock is not None else self.listen.host
        problems = listen_problems(Address(host, self.listen.port), self.ctx.profile.allow,
                                   self.contexts.credentials)
        if problems:
            raise ProfileError(f"{self.ctx.loaded.path}: {'; '.join(problems)}")
        bound = await self.listener.start(self.listen, sock)
        if bound != self.listen:  # a socket made elsewhere, or an ephemeral port: the real one
            self.listen = bound
            for ctx in self.contexts.all():
                ctx.listen = bound
        await self.reverses.start(self.ctx)
        return self.listen

    async def start_admin(self, control_socket: bool = True) -> Address | None:
        """Start the dashboard when the profile (or --admin) asks for one; its address. Without
        one, the same API on a unix socket in the runtime directory (`control_socket`), so
        that status, reload and newnym work for every serve; None then."""
        from anonproxy.admin.activity import Activity
        from anonproxy.admin.app import AdminApp, open_control_socket
        from anonproxy.admin.control import write_token
        from anonproxy.admin.login import Logins

        if self.admin is None:
            opened = await open_control_socket(self, self.listen) if control_socket else None
            if opened is not None:
                self._admin_app, self.control_path, self.token_path = opened
                self.activity = self._admin_app.activity
                logs.observers.append(self.activity.observe)
            return None
        assert self.admin_address is not None  # (set with `admin`)
        activity = self.activity = Activity()
        app = AdminApp(self, self.admin_address, Logins(), self.admin.password, activity)
        self.admin_address = await app.start()
        self._admin_app = app
        for ctx in self.contexts.all():
            ctx.admin = self.admin_address
        logs.observers.append(activity.observe)
        self.token_path = write_token(self.admin_address, app.logins.api_token)
        return self.admin_address

    def login_url(self) -> str | None:
        """A one-time URL that logs a browser into the dashboard (None without one)."""
        if self._admin_app is None or self.admin_address is None:
            return None
        from anonproxy.admin.control import login_url

        return login_url(self.admin_address, self._admin_app.logins.new_login_token())

    async def _stop_admin(self) -> None:
        app, self._admin_app = self._admin_app, None
        if app is not None:
            if self.activity is not None:
                logs.observers.remove(self.activity.observe)
            await app.stop()
            if self.token_path is not None:
                self.token_path.unlink(missing_ok=True)
            if self.control_path is not None:
                self.control_path.unlink(missing_ok=True)

    @property
    def accepted(self) -> int:
        return self.listener.accepted

    def connections_now(self) -> int:
        return self.listener.open_connections

    def switchable_profiles(self) -> dict[str, str]:
        """Profiles the dashboard may switch to: the user's and shipped ones, and those beside
        the running profile's file; name -> what load_profile takes."""
        if self.profile_ref is None:
            return {}
        path = self.ctx.loaded.path
        return known_profiles(path.parent if path is not None else None)

    async def control_reload(self, name: str | None = None) -> str | None:
        """Reload the profile (or switch to profile `name`) and wait for it: None, or why the
        running profile was kept."""
        if self.profile_ref is None:
            return "this proxy was started without a profile to re-read"
        if name and self.children:
            return (f"switching profiles needs workers = 1 (this proxy runs "
                    f"{len(self.children) + 1}); restart it with --profile {name}")
        waiter = asyncio.get_running_loop().create_future()
        self._asks.reload(self.switchable_profiles()[name] if name else None, waiter)
        return await waiter

    async def control_newnym(self, site: str | None) -> str:
        """A new identity now, for one site or all; what was done, in words. ValueError when
        there is nothing to renew (no profile has a Tor exit)."""
        if not self.contexts.has_identities():
            raise ValueError(NO_IDENTITY)
        if site is not None:
            from anonproxy.policy.sites import site_of

            try:
                site = site_of(check_host(site))
            except AddressError as error:
                raise ValueError(f"site: {error}") from None
        self._newnym_children(site)
        await self.new_identity(site)
        return self.contexts.renewal_words(site) if site else "new identity for every site"

    def stop_on_signals(self) -> None:
        """SIGINT and SIGTERM start a graceful stop, SIGHUP a reload (install these before
        announcing readiness)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGUSR1, self.request_new_identity)

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            forward(self.children, signal.SIGTERM)
        self._stopping.set()
        self._asks.wakeup.set()

    def request_reload(self) -> None:
        self._asks.reload()  # (a burst of SIGHUPs is one reload)

    def request_new_identity(self, site: str | None = None) -> None:
        """SIGUSR1: a new identity, for the site named in the request file if there is one."""
        if site is None:
            site = take_newnym_request(self.listen)
        self._asks.new_identity(site)
        self._newnym_children(site)

    def _newnym_children(self, site: str | None) -> None:
        from anonproxy.admin.control import RuntimeDirError, write_private

        for pid in self.children:
            if site is not None:
                try:
                    write_private(newnym_request_file(self.listen, pid), site + "\n")
                except (OSError, RuntimeDirError) as error:
                    logs.log.error("cannot pass the site to worker %d (%s); it renews "
                                   "every site", pid, error)
        forward(self.children, signal.SIGUSR1)

    def _sync_tors(self, tasks: asyncio.TaskGroup) -> None:
        """Run one tor per spec the profiles use; stop those no profile uses any more."""
        self._tors.sync({spec for ctx in self.contexts.all() for spec in ctx.tor_specs()}, tasks)

    async def new_identity(self, site: str | None) -> None:
        """New circuits: for one site (new isolation keys), or for everything (also NEWNYM);
        upstream connections kept for reuse are dropped either way."""
        if not self.contexts.has_identities():  # (SIGUSR1: the log is where the answer goes)
            logs.log.warning("new identity asked for, but %s", NO_IDENTITY)
            return
        self.identities += 1
        await self._tors.new_identity(site)
        if site is not None:
            logs.log.info("%s", self.contexts.renewal_words(site))
        for ctx in self.contexts.all():
            ctx.new_identity()

    async def serve_until_signalled(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            self._sync_tors(tasks)
            probers = self._start_probers(tasks)
            sweeper = tasks.create_task(self._sweep_idle_upstreams())
            background = [sweeper]
            if self._admin_app is not None and self.activity is not None:
                from anonproxy.admin.app import sample_forever

                background.append(tasks.create_task(sample_forever(self.activity)))
            while not self._stopping.is_set():
                await self._asks.wait()
                probers = await self._do_reloads(tasks, probers)
                asked, site = self._asks.take_new_identity()
                if asked and not self._stopping.is_set():
                    tasks.create_task(self.new_identity(site))
            logs.log.info("stopping: no new connections; draining %d",
                          self.listener.open_connections)
            for task in (*probers, *background, *self.reverses.onion_tasks(),
                         *self._tors.tasks()):
                task.cancel()
            self._asks.refuse_reloads("the proxy is stopping")
            await self._stop_admin()
            await self.stop()
            await asyncio.to_thread(reap, self.children)

    async def _do_reloads(self, tasks: asyncio.TaskGroup,
                    probers: list[asyncio.Task]) -> list[asyncio.Task]:
        """The reloads asked for, in order, each answered with its outcome; after one that took,
        workers reload too and tors and health probes follow the new profiles. Returns the
        probers now running."""
        queue = self._asks.take_reloads()
        for i, (ref, waiter) in enumerate(queue):
            if self._stopping.is_set():
                self._asks.put_back(queue[i:])  # answered when stopping
                break
            error = self.reload(ref)
            if error is None:
                forward(self.children, signal.SIGHUP)
                await self.reverses.reload(self.ctx, tasks)
                self._sync_tors(tasks)
                for prober in probers:
                    prober.cancel()
                probers = self._start_probers(tasks)
            if waiter is not None and not waiter.done():
                waiter.set_result(error)
        return probers

    def reload(self, ref: str | None = None) -> str | None:
        """Re-read the profile (or switch to the one `ref` names); on any error keep the
        running one and return why. Connections in flight keep the profile they started with;
        new requests and connections get the new one."""
        if self.profile_ref is None:
            return "this proxy was started without a profile to re-read"
        try:
            loaded = load_profile(ref or self.profile_ref)
            credentials = self.contexts.credentials if self._fixed_credentials \
                else profile_credentials(loaded)
            problems = listen_problems(self.listen, loaded.profile.allow, credentials)
            if problems:  # the bound address stays; the profile must still guard it
                raise ProfileError(f"{loaded.path}: the proxy stays on {self.listen} until it "
                                   f"restarts; {'; '.join(problems)}")
            contexts = self._load(loaded, credentials)
            self.reverses.check(contexts.main)
        except (ProfileError, TorUnavailable) as error:
            logs.log.error("reload failed, keeping the running profile: %s", error)
            self.last_reload_error = str(error)
            return str(error)
        if ref is not None:
            self.profile_ref = ref
        self.reloads += 1
        self.last_reload_error = None
        if loaded.profile.listen_address != self.ctx.profile.listen_address:
            logs.log.warning("reload: the listen address only changes on restart")
        old = self.contexts.all()
        if loaded.path == self.ctx.loaded.path:  # a reload, not a switch
            contexts.main.carry_hits(self.ctx)
        for ctx in contexts.all():
            ctx.listen = self.listen
        self.contexts = contexts
        self.listener.allow = loaded.profile.allow
        self.listener.accounts = loaded.profile.local_accounts
        for ctx in old:
            ctx.pool.close()
        logs.log.info("reloaded profile %s (%s)", loaded.name, loaded.path)
        self.contexts.warn_if_direct()
        return None

    def _start_probers(self, tasks: asyncio.TaskGroup) -> list[asyncio.Task]:
        """Health probes of pool members and reverse entries' backends and, with `[verify]
        enforce`, the echo checks of exits that declare a country (exits/echo.py,
        exits/verification.py)."""
        self.reverses.sync_onions(tasks, self.ctx, self.tors)
        probers = self.reverses.probers(tasks, self.ctx)
        for ctx in self.contexts.all():
            members = ctx.probed_members()
            if members:
                health = ctx.profile.health
                probers.append(tasks.create_task(
                    ctx.health.run(members, ctx.probe, health.interval, health.timeout)))
            declaring = [name for name in ctx.plans if declared(ctx, name)]
            if ctx.profile.verify.enforce and declaring:
                probers.append(tasks.create_task(ctx.verification.run(
                    declaring, partial(check_enforced, ctx), ctx.profile.verify.interval)))
        return probers

    async def _sweep_idle_upstreams(self) -> None:
        while True:
            await asyncio.sleep(5)
            for ctx in self.contexts.all():
                ctx.pool.sweep()

    async def stop(self) -> None:
        self.request_stop()
        await asyncio.gather(self.listener.drain(self.limits.drain_timeout),
                             self.reverses.drain(self.limits.drain_timeout))
        for ctx in self.contexts.all():
            ctx.pool.close()
