"""The pool exit: other exits of the profile, tried in an order its strategy gives.

The profile's `[exits.NAME]` table has `pool = [exit names]`, a `strategy` (failover,
round-robin, sticky: policy/pools.py orders the members) and maybe a `fallback`. A pool opens
nothing itself: it asks the profile for its members in turn (`env.open_exit`), each of which
opens as its own kind does.

Invariants: a member is left out while health marks it down or verification refuses it
(exits/verification.py); a pool whose members are all down fails closed (ExitDown, 503)
unless it names a `fallback` in plain words; only a failure of the exit itself (a hop) moves
on to the next member, never a failure of the destination behind it; a member named in
`prefer` (the one a reused connection was kept under) goes first, and then a round-robin pool
does not move on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from anonproxy import logs
from anonproxy.exits.base import Env, Opened, Plan, hop_failed
from anonproxy.policy.pools import order_members
from anonproxy.policy.sites import site_of
from anonproxy.wire.address import Address
from anonproxy.wire.errors import ExitDown, ExitFailed, StageTimeout

if TYPE_CHECKING:
    from anonproxy.config.models import Exit as ExitConfig
    from anonproxy.exits.tor_process import TorSpec
    from anonproxy.policy.geo import GeoDB


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    members: tuple[str, ...]
    strategy: str = "failover"
    fallback: str | None = None

    kind: ClassVar[str] = "pool"
    exposes_address: ClassVar[bool] = False  # (its members say for themselves)
    reaches_onion: ClassVar[bool] = False
    shares_upstreams: ClassVar[bool] = True
    identity: ClassVar[str | None] = None
    tor_spec: ClassVar[TorSpec | None] = None
    probes: ClassVar[bool] = False

    def describe(self) -> str:
        return f"exit '{self.name}' (pool of {', '.join(self.members)}, {self.strategy})"

    def summary_lines(self, plans: Mapping[str, Plan], indent: str = "") -> list[str]:
        fallback = (f", fallback {self.fallback}" if self.fallback
                    else ", fails closed when all are down")
        head = f"{indent}{self.name}: pool of {', '.join(self.members)}"
        lines = [f"{head} ({self.strategy}{fallback})"]
        for member in self.members:
            lines += plans[member].summary_lines(plans, indent + "  ")
        return lines

    def resolution(self, dest: Address, plans: Mapping[str, Plan]) -> str:
        kinds = {plans[m].resolution(dest, plans) for m in self.members}
        if len(kinds) == 1:
            return kinds.pop()
        return "depends on the pool member: " + "; ".join(sorted(kinds))

    def order(self, dest: Address, env: Env, prefer: tuple[str, ...] = ()) -> list[str]:
        """Members to try, by strategy and health; a member named in `prefer` goes first
        (and then a round-robin pool does not move on again)."""
        chosen = next((m for m in self.members if m in prefer), None)
        order = order_members(self.members, self.strategy, env.usable,
                              turn=env.rotation.turn, site=site_of(dest.host))
        if chosen is None:
            env.rotation.turn += self.strategy == "round-robin"
        elif chosen in order:
            order.remove(chosen)
            order.insert(0, chosen)
        return order

    def pick(self, dest: Address, env: Env) -> str | None:
        order = self.order(dest, env)
        return order[0] if order else None

    async def open(self, dest: Address, env: Env, path: tuple[str, ...],
                   prefer: tuple[str, ...] = (), isolation: str | None = None) -> Opened:
        failures: list[str] = []
        public: list[str] = []
        for member in self.order(dest, env, prefer):
            try:
                return await env.open_exit(member, dest, path, prefer, isolation)
            except (ExitFailed, StageTimeout, ExitDown) as error:
                if not hop_failed(error):
                    raise  # the destination itself failed: another member would not help
                failures.append(f"{member}: {error.message}")
                public.append(f"{member}: {error.public}")
        if self.fallback is not None:
            logs.log.warning("exit '%s' has no usable member; using its fallback '%s'",
                             self.name, self.fallback)
            return await env.open_exit(self.fallback, dest, path, (), isolation)
        states = failures or [env.verification.describe(m) or env.health.describe(m)
                              for m in self.members]
        public = public or [env.verification.describe(m) or
                            f"{m}: {'up' if env.health.is_up(m) else 'down'}"
                            for m in self.members]
        raise ExitDown(f"exit '{self.name}' has no member up ({'; '.join(states)})",
                       public=f"exit '{self.name}' has no member up ({'; '.join(public)})")

    async def probe(self, timeout: float) -> None:
        raise NotImplementedError("a pool is not probed; its members are")

    async def resolve_remotely(self, host: str, env: Env, isolation: str | None) -> str | None:
        raise ExitDown(f"exit '{self.name}' resolves no names remotely")

    def status(self, env: Env, geo: GeoDB | None) -> dict[str, Any]:
        members = [{"name": m, **env.health.snapshot(m)} for m in self.members]
        for member in members:  # (a member verification refuses is down for the pool)
            member["up"] = member["up"] and env.verification.allows(member["name"])
        through = f"{self.strategy}: " + ", ".join(
            m["name"] + ("" if m["up"] else " (DOWN)") for m in members)
        if self.fallback:
            through += f"; fallback {self.fallback}"
        return {"kind": self.kind, "strategy": self.strategy, "fallback": self.fallback,
                "members": members, "through": through, "state": None, "up": None,
                "country": None, "verified_country": None}


def plan(name: str, exit_: ExitConfig) -> Pool:
    """An `[exits.NAME]` table with `pool` (config/models.py, Exit)."""
    assert exit_.pool is not None
    return Pool(name, tuple(exit_.pool), exit_.strategy, exit_.fallback)
