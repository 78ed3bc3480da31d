"""The Tor exit: streams through a tor (managed by us or the user's own), each with the SOCKS
credentials its circuit isolation asks for.

The profile's `[exits.NAME]` table has `tor = { control, socks, password, countries, torrc,
isolation }`. The tor itself — its process, control connection and isolation keys — is
tor_process.py's; the server runs one per TorSpec (`tor_spec`) and shares them in `env.tors`.
A stream is a one-hop chain (chain.py) through the tor's SOCKS port.

Invariants: a tor that is not running or not ready fails closed with a sentence saying so
(ExitDown, 503); names reach Tor as names, and only here may a .onion name go
(`reaches_onion`); circuits are isolated per site, profile or connection (the client's own key
splits them further), so a connection isolated per connection is never reused for another
request (`shares_upstreams`); a remote lookup (`resolve = "tor"`) asks with the isolation the
request itself would use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from anonproxy.exits.base import Env, Opened, Plan
from anonproxy.exits.chain import Chain, open_chain, resolve_through_socks
from anonproxy.exits.connect import Stream
from anonproxy.exits.tor_process import TorSpec, TorUnavailable
from anonproxy.policy.sites import site_of
from anonproxy.wire.address import Address
from anonproxy.wire.errors import ExitDown, StageTimeout
from anonproxy.wire.hops import Hop

if TYPE_CHECKING:
    from anonproxy.config.models import Exit as ExitConfig
    from anonproxy.policy.geo import GeoDB


@dataclass(frozen=True, slots=True)
class TorExit:
    name: str
    spec: TorSpec
    isolation: str = "site"  # site | profile | connection

    kind: ClassVar[str] = "tor"
    members: ClassVar[tuple[str, ...]] = ()
    exposes_address: ClassVar[bool] = False
    reaches_onion: ClassVar[bool] = True
    probes: ClassVar[bool] = False

    @property
    def shares_upstreams(self) -> bool:
        return self.isolation != "connection"  # (a reused connection would share its circuit)

    @property
    def identity(self) -> str | None:
        return self.isolation

    @property
    def tor_spec(self) -> TorSpec | None:
        return self.spec

    def describe(self) -> str:
        return f"exit '{self.name}' (tor, {self.spec.label()})"

    def summary_lines(self, plans: Mapping[str, Plan], indent: str = "") -> list[str]:
        isolation = f"circuits isolated per {self.isolation}"
        return [f"{indent}{self.name}: tor ({self.spec.label()}), {isolation}"]

    def resolution(self, dest: Address, plans: Mapping[str, Plan]) -> str:
        return (f"{dest.host} is sent by name into Tor; the exit relay resolves it: "
                "no local DNS lookup")

    def pick(self, dest: Address, env: Env) -> str | None:
        return None

    async def open(self, dest: Address, env: Env, path: tuple[str, ...],
                   prefer: tuple[str, ...] = (), isolation: str | None = None) -> Opened:
        return Opened(await self._open(dest, env, isolation), path, self)

    async def _open(self, dest: Address, env: Env, isolation: str | None) -> Stream:
        tor = env.tors.get(self.spec)
        if tor is None:
            raise ExitDown(f"{self.describe()} is not running",
                           public=f"exit '{self.name}' (tor) is not running")
        try:
            host, port = tor.socks_address()
        except TorUnavailable as error:
            state = tor.state
            if state == "bootstrapping":
                state = f"bootstrapping ({tor.progress}%)"
            where = f" (exits in {', '.join(self.spec.countries)})" if self.spec.countries else ""
            raise ExitDown(f"exit '{self.name}': {error}",
                           public=f"exit '{self.name}': tor{where} is not ready: {state}") from None
        user, password = tor.isolation(self.isolation, site_of(dest.host), env.profile_name,
                                       isolation)
        chain = Chain(self.name, (Hop("socks5", Address(host, port), user, password),))
        try:
            return await open_chain(chain, dest, timeout=env.connect_timeout)
        except StageTimeout:
            where = f" through an exit in {', '.join(self.spec.countries).upper()}" \
                if self.spec.countries else ""
            raise StageTimeout(
                f"exit '{self.name}': tor found no circuit to {dest}{where} within "
                f"{env.connect_timeout:g} s (failing closed)"
            ) from None

    async def probe(self, timeout: float) -> None:
        raise NotImplementedError("a tor exit is not probed; its tor reports its own state")

    async def resolve_remotely(self, host: str, env: Env, isolation: str | None) -> str | None:
        """Tor's RESOLVE for `host`, with the isolation key a request to `host` would use (its
        site, profile or connection, and the client's own key), so a lookup never shares a
        circuit with another site's or client's."""
        tor = env.tors.get(self.spec)
        if tor is None or tor.state != "ready":
            raise ExitDown(f"exit '{self.name}': tor is not ready")
        user, password = tor.isolation(self.isolation, site_of(host), env.profile_name,
                                       isolation)
        hop = Hop("socks5", Address(*tor.socks_address()), user, password)
        return await resolve_through_socks(hop, host, timeout=env.connect_timeout)

    def status(self, env: Env, geo: GeoDB | None) -> dict[str, Any]:
        tor = env.tors.get(self.spec)
        state = tor.state if tor is not None else "stopped"
        countries = [c.upper() for c in self.spec.countries]
        return {"kind": self.kind, "tor": self.spec.label(), "isolation": self.isolation,
                "countries": countries, "state": state, "up": state == "ready",
                "through": f"{self.spec.label()} (isolation by {self.isolation})",
                "country": ", ".join(countries) or None, "verified_country": None}


def plan(name: str, exit_: ExitConfig) -> TorExit:
    """An `[exits.NAME]` table with `tor` (config/models.py, Exit)."""
    t = exit_.tor
    assert t is not None
    spec = TorSpec(t.control, t.socks, t.password, tuple(t.countries), t.torrc)
    return TorExit(name, spec, t.isolation)
