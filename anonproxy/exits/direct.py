"""The direct exit: connect from this machine, optionally from a chosen source address.

The profile's `[exits.NAME]` table has none of the other kinds' keys (`source` at most).

Invariants: destinations see this machine's address (`exposes_address`: the server warns about
a profile that sends traffic here), and the name is resolved by this machine's resolver; a
source address is honoured or the connection fails, never silently dropped; a connection whose
peer turns out to be one of the proxy's own services (a name can resolve to anything) is closed
before a byte is sent — the router's `refuse_peer` sees what was really reached and may veto it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from anonproxy.exits.base import Env, Opened, Plan
from anonproxy.exits.connect import os_error, raw_detail, tcp
from anonproxy.wire.address import Address
from anonproxy.wire.errors import ExitDown, ExitFailed, Forbidden, StageTimeout

if TYPE_CHECKING:
    from anonproxy.config.models import Exit as ExitConfig
    from anonproxy.exits.tor_process import TorSpec
    from anonproxy.policy.geo import GeoDB


@dataclass(frozen=True, slots=True)
class Direct:
    name: str
    source: str | None = None

    kind: ClassVar[str] = "direct"
    members: ClassVar[tuple[str, ...]] = ()
    exposes_address: ClassVar[bool] = True
    reaches_onion: ClassVar[bool] = False
    shares_upstreams: ClassVar[bool] = True
    identity: ClassVar[str | None] = None
    tor_spec: ClassVar[TorSpec | None] = None
    probes: ClassVar[bool] = False

    def describe(self) -> str:
        return f"exit '{self.name}' (direct{', from ' + self.source if self.source else ''})"

    def summary_lines(self, plans: Mapping[str, Plan], indent: str = "") -> list[str]:
        where = f"from {self.source}" if self.source else "from this machine's default address"
        return [f"{indent}{self.name}: direct, {where}"]

    def resolution(self, dest: Address, plans: Mapping[str, Plan]) -> str:
        return f"{dest.host} is resolved by this machine's resolver (direct exit)"

    def pick(self, dest: Address, env: Env) -> str | None:
        return None

    async def open(self, dest: Address, env: Env, path: tuple[str, ...],
                   prefer: tuple[str, ...] = (), isolation: str | None = None) -> Opened:
        timeout = env.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await tcp(dest.host, dest.port, source=self.source)
        except TimeoutError:
            raise StageTimeout(
                f"{self.describe()} timed out connecting to {dest} after {timeout:g} s",
                public=f"exit '{self.name}' timed out connecting to {dest} after {timeout:g} s",
            ) from None
        except OSError as error:
            what, reply = os_error(error, self.source)
            raise ExitFailed(
                f"{self.describe()} could not connect to {dest}: {what}{raw_detail(error)}",
                socks_reply=reply, hop_failed=False,
                public=f"exit '{self.name}' could not connect to {dest}: {what}") from None
        peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        reason = env.refuse_peer(dest, peer[:2], local[0]) if peer and local else None
        if reason is not None:
            writer.transport.abort()
            raise Forbidden(reason)
        return Opened((reader, writer), path, self)

    async def probe(self, timeout: float) -> None:
        raise NotImplementedError("a direct exit is not probed")

    async def resolve_remotely(self, host: str, env: Env, isolation: str | None) -> str | None:
        raise ExitDown(f"exit '{self.name}' resolves no names remotely")

    def status(self, env: Env, geo: GeoDB | None) -> dict[str, Any]:
        through = f"from {self.source}" if self.source else "this machine's address"
        return {"kind": self.kind, "source": self.source, "through": through, "state": None,
                "up": None, "country": None, "verified_country": None}


def plan(name: str, exit_: ExitConfig) -> Direct:
    """An `[exits.NAME]` table with none of the other kinds' keys (config/models.py, Exit)."""
    return Direct(name, str(exit_.source) if exit_.source is not None else None)
