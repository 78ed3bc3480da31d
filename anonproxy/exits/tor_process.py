"""Tor processes: those we start and own ("managed") or the user's ("system"), for exits/tor.py.

This is the only module that imports stem. stem is synchronous, so every control call runs in a
worker thread (asyncio.to_thread); its event listeners run on stem's own thread and only touch
thread-safe state.

Exit countries: one managed tor per distinct country list, configured with `ExitNodes` and
`StrictNodes 1`, so a stream can never leave through a relay outside the list, and several
countries are served at once by separate processes. (The alternative — one tor whose circuits
the controller builds and attaches itself — saves memory but puts every stream of every exit
under our controller's care; a tor costs 13 MB RSS on the test network, tens of MB on the real
one.) A managed tor is started by us rather than stem's launcher: the launcher blocks a thread
and its timeout only works in the main thread, while ours reads tor's own progress lines
asynchronously and can be stopped.

Invariants: a tor exit that is not ready (starting, bootstrapping, restarting, dead) fails
closed with a message saying so; a managed tor's SOCKS and control ports are known (`socks`,
`control`: never destinations) from tor's own "Opened ... listener" lines, before bootstrap; a
managed tor dies with us (tor watches our control connection, `__OwningControllerProcess`); the
exit relay actually used is checked against the requested countries (tor's own GeoIP) and a
circuit outside them is closed and reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from anonproxy import logs

if TYPE_CHECKING:
    from stem.control import Controller

BOOTSTRAP = re.compile(rb"Bootstrapped (\d+)%(?: \([^)]*\))?: ?(.*)")
LISTENER = re.compile(rb"Opened (Socks|Control) listener connection \(ready\) on (\S+)")


class TorUnavailable(Exception):
    """Tor cannot be used (not installed, failed to start, cannot be reached)."""


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


def tor_binary() -> str:
    found = shutil.which("tor") or ("/usr/sbin/tor" if os.path.exists("/usr/sbin/tor") else None)
    if found is None:
        raise TorUnavailable(
            "this profile uses Tor, but no tor program is installed. Install it (Debian/Ubuntu: "
            "sudo apt-get install tor) or run `anonproxy serve --profile direct` to strip headers "
            "without hiding your address"
        )
    return found


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


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "anonproxy"


class Tor:
    """One tor instance: its process (when managed), its control connection, its SOCKS port."""

    def __init__(self, spec: TorSpec) -> None:
        self.spec = spec
        self.state = "stopped"  # stopped | starting | bootstrapping | ready | restarting | failed
        self.progress = 0
        self.summary = ""
        self.socks: tuple[str, int] | None = None
        self.control: tuple[str, int] | None = None  # its control port: never a destination
        self.error: str | None = None
        self.controller: Controller | None = None  # set once authenticated (stem's, untyped)
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
                    if not self.spec.managed:
                        return
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
        binary = tor_binary()
        key = hashlib.sha256(repr((self.spec.countries, self.spec.torrc)).encode()).hexdigest()[:12]
        data = cache_dir() / f"tor-{key}"
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(data, 0o700)
        torrc = data / "torrc"
        lines = [
            f"DataDirectory {data}",
            "SocksPort 127.0.0.1:auto",
            "ControlPort 127.0.0.1:auto",
            f"ControlPortWriteToFile {data / 'control.port'}",
            "CookieAuthentication 1",
            f"CookieAuthFile {data / 'control.cookie'}",
            f"__OwningControllerProcess {os.getpid()}",
            "Log notice stdout",
            "AvoidDiskWrites 1",
        ]
        if self.spec.countries:
            lines += ["ExitNodes " + ",".join(f"{{{c.lower()}}}" for c in self.spec.countries),
                      "StrictNodes 1"]
        if self.spec.torrc:
            torrc_path = Path(self.spec.torrc).expanduser().resolve()  # noqa: ASYNC240 (local, once)
            lines.append(f"%include {torrc_path}")
        torrc.write_text("\n".join(lines) + "\n")
        (data / "control.port").unlink(missing_ok=True)
        self.state, self.progress, self.summary, self.error = "starting", 0, "", None
        self.socks = self.control = None  # learnt again from this run's listener lines
        self._process = await asyncio.create_subprocess_exec(
            binary, "--defaults-torrc", os.devnull, "-f", str(torrc),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        logs.log.info("tor (%s): started, pid %d", self.spec.label(), self._process.pid)
        self.state = "bootstrapping"
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            self._on_line(line)
            if self.progress == 100 and self.state == "bootstrapping":
                port = (data / "control.port").read_text().strip().removeprefix("PORT=")
                host, _, number = port.rpartition(":")
                socks = await asyncio.to_thread(self._connect, host, int(number), None)
                self.state = "ready"
                self._ready.set()
                logs.log.info("tor (%s): ready, SOCKS on %s:%d", self.spec.label(), *socks)
        code = await self._process.wait()
        self._close_controller()
        if not self._stopping:
            raise TorUnavailable(f"tor exited with code {code}")

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
            logs.log.warning("tor (%s): %s", self.spec.label(),
                             line.decode("utf-8", "replace").strip().split("] ", 1)[-1])

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
        import stem
        import stem.connection
        from stem.control import Controller, EventType, Listener

        try:
            controller = Controller.from_port(address=host, port=port)
            controller.authenticate(password=password)
        except (stem.SocketError, stem.connection.AuthenticationFailure) as error:
            raise TorUnavailable(f"cannot use the control port {host}:{port}: {error}") from None
        self.control = (host, port)
        if self.spec.socks:
            shost, _, sport = self.spec.socks.rpartition(":")
            socks = (shost.strip("[]"), int(sport))
        else:
            listeners = controller.get_listeners(Listener.SOCKS)
            if not listeners:
                controller.close()
                raise TorUnavailable("tor has no SOCKS port")
            socks = listeners[0]
        self.socks = socks
        if self.spec.countries:
            controller.add_event_listener(self._on_stream, EventType.STREAM)
        self.controller = controller
        return socks

    def _on_stream(self, event) -> None:
        """(stem thread) Check the exit of each stream that succeeded against our countries."""
        controller = self.controller
        if event.status != "SUCCEEDED" or not event.circ_id or controller is None:
            return
        try:
            circuit = controller.get_circuit(event.circ_id)
            fingerprint = circuit.path[-1][0]
            address = controller.get_network_status(fingerprint).address
            country = controller.get_info(f"ip-to-country/{address}").lower()
        except Exception:  # noqa: BLE001 - the circuit may be gone already; nothing to check
            return
        if country not in self.spec.countries:  # (lower case, as the profile validator leaves them)
            logs.log.error("tor (%s): a stream left through %s (%s) outside the requested "
                           "countries; closing that circuit", self.spec.label(), address, country)
            try:
                controller.close_circuit(event.circ_id)
            except Exception:  # noqa: BLE001
                pass

    async def newnym(self) -> float:
        """Ask for new circuits for new streams. Returns 0, or the seconds to wait (tor allows
        one NEWNYM per 10 s)."""
        controller = self.controller
        if controller is None:
            raise TorUnavailable(f"tor ({self.spec.label()}) is not connected")

        def signal() -> float:
            from stem import Signal

            if not controller.is_newnym_available():
                return controller.get_newnym_wait()
            controller.signal(Signal.NEWNYM)
            return 0.0

        return await asyncio.to_thread(signal)

    async def circuits(self) -> list[dict]:
        """Built circuits that can carry streams out (general purpose, not one-hop directory
        or internal ones), with their exit relay and its country (tor's GeoIP); empty when tor
        is not connected."""
        if self.controller is None or self.state != "ready":
            return []

        def read() -> list[dict]:
            controller = self.controller
            if controller is None:
                return []
            found = []
            for circuit in controller.get_circuits([]):
                if (circuit.status != "BUILT" or circuit.purpose != "GENERAL" or not circuit.path
                        or {"ONEHOP_TUNNEL", "IS_INTERNAL"} & set(circuit.build_flags or ())):
                    continue
                fingerprint, nickname = circuit.path[-1]
                address = country = None
                try:
                    address = controller.get_network_status(fingerprint).address
                    country = controller.get_info(f"ip-to-country/{address}", "").lower()
                    country = country if country not in ("", "??") else None
                except Exception:  # noqa: BLE001 - a relay missing from our consensus view
                    pass
                found.append({"id": circuit.id, "hops": len(circuit.path), "exit": nickname,
                              "exit_address": address, "exit_country": country,
                              "isolation": bool(circuit.socks_username)})
            return found

        try:
            return await asyncio.to_thread(read)
        except Exception:  # noqa: BLE001 - the control connection went away meanwhile
            return []

    def _close_controller(self) -> None:
        if self.controller is not None:
            try:
                self.controller.close()
            except Exception:  # noqa: BLE001
                pass
            self.controller = None

    async def _shutdown(self) -> None:
        self._stopping = True
        self._ready.clear()
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
