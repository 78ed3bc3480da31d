"""Tor processes: those we start, share or follow ("managed") and the user's ("system"), for
the Tor exit kind (exits/tor.py). Control goes through exits/tor_control.py (stem), in worker
threads; data directories, their owner and the keeper through exits/tor_datadir.py.

Exit countries: one managed tor per distinct country list, configured with `ExitNodes` and
`StrictNodes 1`, so a stream can never leave through a relay outside the list, and several
countries are served at once by separate processes. (The alternative — one tor whose circuits
the controller builds and attaches itself — saves memory but puts every stream of every exit
under our controller's care; a tor costs 13 MB RSS on the test network, tens of MB on the real
one.) A managed tor is started by us rather than stem's launcher: the launcher blocks a thread
and its timeout only works in the main thread, while ours reads tor's own progress lines
asynchronously and can be stopped.

One tor per data directory, shared: a managed tor already running for the same settings (a
serve's, or one a keeper keeps for fetch and exec) is used rather than a second one started;
only when none runs does this process start one (serve) or have a keeper start one (fetch, exec).

Invariants: a tor exit that is not ready (starting, bootstrapping, restarting, dead) fails
closed with a message saying so; a tor's SOCKS and control ports are known (never destinations)
before it is used; a tor that never became ready is not started again (its error quotes tor's
own last words), one that worked and died is, with backoff; a tor we start dies with its
owner (`__OwningControllerProcess`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from anonproxy import logs
from anonproxy.exits import tor_datadir
from anonproxy.exits.tor_control import Control, TorUnavailable
from anonproxy.exits.tor_datadir import tor_binary

BOOTSTRAP = re.compile(rb"Bootstrapped (\d+)%(?: \([^)]*\))?: ?(.*)")
PHASE = re.compile(r'PROGRESS=(\d+).*?SUMMARY="([^"]*)"')
LISTENER = re.compile(rb"Opened (Socks|Control) listener connection \(ready\) on (\S+)")


@dataclass(frozen=True, slots=True)
class TorSpec:
    """What distinguishes one tor instance from another."""

    control: str  # "managed" or "HOST:PORT" of a running tor's control port
    socks: str | None = None  # a system tor's SOCKS HOST:PORT (default: ask tor)
    password: str | None = None
    countries: tuple[str, ...] = ()
    torrc: str | None = None  # managed: a file of extra torrc lines (bridges, a test network)

    @property
    def managed(self) -> bool:
        return self.control == "managed"

    def label(self) -> str:
        where = "managed" if self.managed else f"system {self.control}"
        return where + (f", exits in {', '.join(self.countries)}" if self.countries else "")


class Tor:
    """One tor instance: its process (when managed), its control connection, its SOCKS port."""

    def __init__(self, spec: TorSpec, keep: float | None = None) -> None:
        """`keep`: a managed tor this process has to start is started by a keeper process and
        kept for `keep` seconds after its last use (fetch, exec); None: started by this process
        and dying with it (serve)."""
        self.spec, self.keep = spec, keep
        self.shared_with: str | None = None  # using a tor another process started: which
        self.last_said: str | None = None  # tor's last warning or error, for a stalled bootstrap
        self.state = "stopped"  # stopped | starting | bootstrapping | ready | restarting | failed
        self.progress = 0
        self.summary = ""
        self.socks: tuple[str, int] | None = None
        self.control: tuple[str, int] | None = None  # its control port: never a destination
        self.error: str | None = None
        self.controller: Control | None = None  # set once authenticated
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._ready = asyncio.Event()
        self.salt = secrets.token_hex(8)  # keeps our isolation keys apart from other users'
        self._epochs: dict[str, int] = {}  # per-site counters: a new one means new circuits
        self._site_renewals = 0  # new identities for single sites: renew the profile keys

    def isolation(self, mode: str, site: str, profile: str,
                  client: str | None = None) -> tuple[str, str]:
        """SOCKS credentials that tor (IsolateSOCKSAuth) uses to keep circuits apart: one per
        destination site (its registrable domain: a proxy sees destinations, not the page that
        embedded them), one per profile, or a fresh one per connection. `client` (an opaque
        digest of a SOCKS5 client's own credentials) splits the site and profile keys further,
        as tor would for that client; it is hashed again with this tor's salt, so tor's control
        port never shows the same value for it twice across tors."""
        if mode == "connection":
            return f"conn:{secrets.token_hex(8)}", self.salt
        own = ""
        if client:
            own = " client:" + hashlib.sha256(f"{self.salt}:{client}".encode()).hexdigest()[:24]
        renewed = self._epochs.get("", 0)
        if mode == "profile":
            return f"profile:{profile}{own}", f"{self.salt}:{renewed}:{self._site_renewals}"
        return f"site:{site}{own}", f"{self.salt}:{self._epochs.get(site, 0)}:{renewed}"

    def new_identity_for(self, site: str | None) -> None:
        """New isolation keys: for one site, or (None) for every site and profile. A profile
        key carries every site of its profile, so it is renewed by a new identity for any one
        site too (that site's old circuit must not carry its next stream)."""
        key = site or ""
        self._epochs[key] = self._epochs.get(key, 0) + 1
        self._site_renewals += site is not None

    # --- readiness as the data path sees it ---------------------------------------------

    def socks_address(self) -> tuple[str, int]:
        if self.state != "ready" or self.socks is None:
            detail = {
                "bootstrapping": f"bootstrapping ({self.progress}%: {self.summary})",
                "failed": f"failed: {self.error}",
            }.get(self.state, self.state)
            raise TorUnavailable(f"tor ({self.spec.label()}) is not ready: {detail}")
        return self.socks

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def last_words(self) -> str:
        """What tor last warned about (for a stalled or failed start), or ''."""
        if self.last_said:
            return self.last_said
        if not self.spec.managed:
            return ""
        return tor_datadir.log_tail(tor_datadir.data_dir(self.spec.countries, self.spec.torrc), 1)

    async def wait_ready(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Start (or attach to) tor and keep it up until cancelled; restart a managed tor that
        dies, with backoff."""
        delay = 1.0
        try:
            while True:
                started = time.monotonic()
                try:
                    if self.spec.managed:
                        await self._run_managed()
                    else:
                        await self._attach_system()
                        return
                except TorUnavailable as error:
                    self.state, self.error = "failed", str(error)
                    logs.log.error("tor (%s): %s", self.spec.label(), error)
                    if not self.spec.managed or not self._ready.is_set():
                        return  # it never worked: starting it again would fail again
                self._ready.clear()
                if time.monotonic() - started > 60:
                    delay = 1.0
                self.state = "restarting"
                logs.log.warning("tor (%s) stopped; restarting in %.0f s", self.spec.label(), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        finally:
            await self._shutdown()

    async def _run_managed(self) -> None:
        """Use the tor already running on this spec's data directory, or start one (this
        process, or a keeper that outlives it: `keep`), or wait for the one being started."""
        data = tor_datadir.data_dir(self.spec.countries, self.spec.torrc)
        tor_datadir.prepare(data, self.spec.countries, self.spec.torrc)
        self.state, self.progress, self.summary, self.error = "starting", 0, "", None
        self.socks = self.control = None  # learnt again from this run's tor
        if await self._attach_shared(data):
            return
        lock = tor_datadir.OwnerLock(data)
        if self.keep is None and lock.take():
            try:
                await self._start_own(data)
            finally:
                lock.release()
            return
        if self.keep is not None and not lock.held_elsewhere():
            tor_datadir.spawn_keeper(data, self.keep)
        await self._follow(data, lock)

    async def _start_own(self, data: Path) -> None:
        """Start the tor of `data` ourselves; it dies with us. Its output goes to our log and
        to `tor.log`, for the processes that use it meanwhile."""
        binary = tor_binary()
        (data / tor_datadir.CONTROL_PORT).unlink(missing_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            *tor_datadir.tor_command(binary, data, os.getpid()),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        logs.log.info("tor (%s): started, pid %d", self.spec.label(), self._process.pid)
        self.state = "bootstrapping"
        assert self._process.stdout is not None
        with open(data / tor_datadir.LOG, "wb") as copy:  # noqa: ASYNC230 - appends, local
            while line := await self._process.stdout.readline():
                copy.write(line)
                copy.flush()
                self._on_line(line)
                if self.progress == 100 and self.state == "bootstrapping":
                    where = tor_datadir.control_port(data)
                    if where is None:
                        raise TorUnavailable("tor bootstrapped but wrote no control port")
                    socks = await asyncio.to_thread(self._connect, *where, None)
                    self.state = "ready"
                    self._ready.set()
                    logs.log.info("tor (%s): ready, SOCKS on %s:%d", self.spec.label(), *socks)
        code = await self._process.wait()
        self._close_controller()
        if not self._stopping:
            said = tor_datadir.log_tail(data)
            raise TorUnavailable(f"tor exited with code {code}" + (f": {said}" if said else ""))

    async def _attach_shared(self, data: Path) -> bool:
        """Use the tor that another process of ours started on `data`, if one answers there:
        follow its bootstrap, then stay with it until it goes away (True); False when none
        answers."""
        where = tor_datadir.control_port(data)
        if where is None or not await asyncio.to_thread(tor_datadir.answering, where):
            return False
        try:
            socks = await asyncio.to_thread(self._connect, *where, None)
        except TorUnavailable:
            return False
        pid = await asyncio.to_thread(self._get_info, "process/pid")
        self.shared_with = f"pid {pid}" if pid else "another process"
        logs.log.info("tor (%s): using the tor already running for these settings (%s), "
                      "SOCKS on %s:%d", self.spec.label(), self.shared_with, *socks)
        self.state = "bootstrapping"
        while self._alive():
            tor_datadir.mark_used(data)
            phase = await asyncio.to_thread(self._get_info, "status/bootstrap-phase")
            self._on_phase(phase or "")
            if self.progress == 100 and not self._ready.is_set():
                self.state = "ready"
                self._ready.set()
                logs.log.info("tor (%s): ready, SOCKS on %s:%d", self.spec.label(), *socks)
            await asyncio.sleep(0.25 if self.state != "ready" else 5)
        self._close_controller()
        if self._ready.is_set():
            logs.log.warning("tor (%s): the shared tor went away", self.spec.label())
            return True
        raise TorUnavailable("the shared tor went away before it was ready"
                             + (f": {said}" if (said := tor_datadir.log_tail(data)) else ""))

    async def _follow(self, data: Path, lock: tor_datadir.OwnerLock) -> None:
        """Wait for the tor another process (a keeper we spawned, or a serve) is starting on
        `data`, showing its progress from `tor.log`, and use it; fail with tor's own words when
        its starter gives up."""
        self.state = "bootstrapping"
        began = time.time()
        while True:
            self._on_log(data)
            if await self._attach_shared(data):
                return
            # (a keeper just spawned needs a moment to take the lock: it has once its log is new)
            if not lock.held_elsewhere() and (tor_datadir.log_since(data, began)
                                              or time.time() - began > 10):
                raise TorUnavailable(tor_datadir.log_tail(data)
                                     or "the process that was starting it gave up")
            await asyncio.sleep(0.2)

    def _on_log(self, data: Path) -> None:
        """Progress from the `tor.log` of a tor being started elsewhere."""
        try:
            text = (data / tor_datadir.LOG).read_bytes()
        except OSError:
            return
        for line in text.splitlines()[-50:]:
            if BOOTSTRAP.search(line):
                self._on_line(line)

    def _on_phase(self, phase: str) -> None:
        """Progress from tor's `status/bootstrap-phase` answer."""
        match = PHASE.search(phase)
        if match and int(match.group(1)) != self.progress:
            self.progress, self.summary = int(match.group(1)), match.group(2)
            logs.log.info("tor (%s): bootstrapped %d%% %s", self.spec.label(), self.progress,
                          self.summary)

    def _alive(self) -> bool:
        return self.controller is not None and self.controller.alive()

    def _get_info(self, key: str) -> str | None:
        """(thread) One GETINFO answer, or None."""
        return self.controller.get_info(key) if self.controller is not None else None

    def _on_line(self, line: bytes) -> None:
        opened = LISTENER.search(line)
        if opened:  # the port is live now, long before bootstrap ends: never a destination
            host, _, port = opened.group(2).decode("ascii", "replace").rpartition(":")
            if port.isdigit():
                where = (host.strip("[]"), int(port))
                if opened.group(1) == b"Socks":
                    self.socks = where
                else:
                    self.control = where
            return
        match = BOOTSTRAP.search(line)
        if match:
            percent = int(match.group(1))
            if percent != self.progress:
                self.progress = percent
                self.summary = match.group(2).decode("utf-8", "replace").strip()
                logs.log.info("tor (%s): bootstrapped %d%% %s", self.spec.label(), percent,
                              self.summary)
        elif b"[warn]" in line or b"[err]" in line:
            said = line.decode("utf-8", "replace").strip().split("] ", 1)[-1]
            if said != self.last_said:
                logs.log.warning("tor (%s): %s", self.spec.label(), said)
            stuck = "Problem bootstrapping"  # tor's own diagnosis of a stall: kept over others
            if said.startswith(stuck) or not (self.last_said or "").startswith(stuck):
                self.last_said = said

    async def _attach_system(self) -> None:
        host, _, port = self.spec.control.rpartition(":")
        self.state = "starting"
        self.control = (host.strip("[]"), int(port))  # refused as a destination from now on
        if self.spec.socks:
            shost, _, sport = self.spec.socks.rpartition(":")
            self.socks = (shost.strip("[]"), int(sport))
        socks = await asyncio.to_thread(self._connect, host.strip("[]"), int(port),
                                        self.spec.password)
        self.state = "ready"
        self.progress = 100
        self._ready.set()
        logs.log.info("tor (%s): connected, SOCKS on %s:%d", self.spec.label(), *socks)
        await asyncio.Event().wait()  # attached until cancelled

    def _connect(self, host: str, port: int, password: str | None) -> tuple[str, int]:
        """(thread) Authenticate to the control port, learn the SOCKS port (set and returned),
        watch streams."""
        control = Control.open(host, port, password)
        self.control = (host, port)
        if self.spec.socks:
            shost, _, sport = self.spec.socks.rpartition(":")
            socks: tuple[str, int] | None = (shost.strip("[]"), int(sport))
        else:
            socks = control.socks()
        if socks is None:
            control.close()
            raise TorUnavailable("tor has no SOCKS port")
        self.socks = socks
        if self.spec.countries:
            control.watch_exits(self.spec.countries, self.spec.label())
        self.controller = control
        return socks

    async def newnym(self) -> float:
        """Ask for new circuits for new streams. Returns 0, or the seconds to wait (tor allows
        one NEWNYM per 10 s)."""
        controller = self.controller
        if controller is None:
            raise TorUnavailable(f"tor ({self.spec.label()}) is not connected")
        return await asyncio.to_thread(controller.newnym)

    async def circuits(self) -> list[dict]:
        """Built circuits that can carry streams out (Control.circuits); empty when tor is not
        connected."""
        controller = self.controller
        if controller is None or self.state != "ready":
            return []
        try:
            return await asyncio.to_thread(controller.circuits)
        except Exception:  # noqa: BLE001 - the control connection went away meanwhile
            return []

    def _close_controller(self) -> None:
        if self.controller is not None:
            self.controller.close()
            self.controller = None

    async def _shutdown(self) -> None:
        self._stopping = True
        self._ready.clear()
        if self.state != "failed":  # (a failure stays visible: its error says why)
            self.state = "stopped"
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await asyncio.to_thread(self._close_controller)
