"""The dialer: from an exit decision to a connected stream.

`open()` opens a stream to a destination through a named exit: directly, through a chain of
hops, through a tor with the isolation credentials the exit asks for, or through a pool, whose
members it tries by strategy and health (`choose_path` names the member a request would use
now, so reusable connections can be kept under it). What to dial is the router's decision
(context.py); what must never be reached is its too — the dialer asks it through the `refuse`
callbacks it was given, after a direct connect and through a hop on this machine.

Invariants: a pool whose members are all down fails closed (ExitDown, 503) unless it names a
`fallback` in plain words; only a failure of the exit itself (a hop) moves on to the next
member or marks the member down, never a failure of the destination behind it; a special-use
name (address.special_use) is refused here too for any exit other than Tor, whatever forced it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from anonproxy import logs
from anonproxy.exits import connect
from anonproxy.exits.connect import Chain, Direct, Plan, Pool, TorExit
from anonproxy.exits.health import Health
from anonproxy.exits.tor_process import Tor, TorSpec, TorUnavailable
from anonproxy.policy.pools import order_members
from anonproxy.policy.sites import site_of
from anonproxy.wire.address import Address, special_use, special_use_refusal
from anonproxy.wire.errors import ExitDown, ExitFailed, Forbidden, StageTimeout
from anonproxy.wire.hops import Hop


@dataclass
class Opened:
    stream: connect.Stream
    path: tuple[str, ...]  # exit names from the routed one to the concrete one used


class Dialer:
    """Opens streams through one profile's exits; keeps the round-robin turn of its pools."""

    def __init__(self, plans: dict[str, Plan], health: Health, tors: dict[TorSpec, Tor],
                 profile_name: str, connect_timeout: float,
                 refuse_peer: Callable[[Address, tuple[str, int], str], str | None],
                 refuse_via_hop: Callable[[Address, bool, Address | None], str | None]) -> None:
        """`tors`: the running tors, shared and kept current by the server. `refuse_peer` and
        `refuse_via_hop`: why a direct connection or a tunnel through a chain must not be used
        (the router's forbidden_peer and forbidden_via_hop)."""
        self.plans, self.health, self.tors = plans, health, tors
        self.profile_name, self.connect_timeout = profile_name, connect_timeout
        self.refuse_peer, self.refuse_via_hop = refuse_peer, refuse_via_hop
        self.turn = 0  # round-robin position: advances once per new pooled connection

    def choose_path(self, name: str, dest: Address) -> tuple[str, ...]:
        """The exit names a request to `dest` goes through, each pool resolved to the member
        its strategy picks now (a round-robin pool moves on one step). Reusable connections
        are kept under this path, and `open(..., prefer=path)` tries it first."""
        path: tuple[str, ...] = (name,)
        plan = self.plans[name]
        while isinstance(plan, Pool):
            order = self._order(plan, dest)
            if not order:
                break
            path += (order[0],)
            plan = self.plans[order[0]]
        return path

    def _order(self, plan: Pool, dest: Address, prefer: tuple[str, ...] = ()) -> list[str]:
        """Members to try, by strategy and health; a member named in `prefer` goes first
        (and then a round-robin pool does not move on again)."""
        chosen = next((m for m in plan.members if m in prefer), None)
        order = order_members(plan.members, plan.strategy, self.health.is_up,
                              turn=self.turn, site=site_of(dest.host))
        if chosen is None:
            self.turn += plan.strategy == "round-robin"
        elif chosen in order:
            order.remove(chosen)
            order.insert(0, chosen)
        return order

    async def open(self, name: str, dest: Address, _path: tuple[str, ...] = (),
                   prefer: tuple[str, ...] = (), isolation: str | None = None) -> Opened:
        """Open a stream to `dest` through exit `name` (pools resolved to a member, those in
        `prefer` first). `isolation`: the client's own key (a digest of its SOCKS5
        credentials), which a Tor exit adds to the circuit isolation it asks for."""
        plan = self.plans[name]
        path = (*_path, name)
        timeout = self.connect_timeout
        if not isinstance(plan, Pool) and special_use(dest.host) is not None:
            refusal = special_use_refusal(dest.host, tor_exit=isinstance(plan, TorExit))
            if refusal is not None:  # route() decided this already; an exit forced by fetch
                raise Forbidden(refusal)
        if isinstance(plan, Direct):
            stream = await connect.open_direct(plan, dest, timeout=timeout,
                                               refuse=self.refuse_peer)
            return Opened(stream, path)
        if isinstance(plan, TorExit):
            return Opened(await self._open_tor(plan, dest, isolation), path)
        if isinstance(plan, Chain):
            return Opened(await self._open_chain(plan, dest), path)
        return await self._open_pool(plan, dest, path, prefer, isolation)

    async def _open_chain(self, plan: Chain, dest: Address) -> connect.Stream:
        """Through the chain's hops; the outcome counts toward the exit's health."""
        started = time.monotonic()
        try:
            stream = await connect.open_chain(plan, dest, timeout=self.connect_timeout,
                                              refuse=self.refuse_via_hop)
        except (ExitFailed, StageTimeout) as error:
            if hop_failed(error):
                self.health.record(plan.name, False, error.message)
            raise
        self.health.record(plan.name, True, latency_ms=(time.monotonic() - started) * 1000)
        return stream

    async def _open_tor(self, plan: TorExit, dest: Address,
                        isolation: str | None = None) -> connect.Stream:
        tor = self.tors.get(plan.spec)
        if tor is None:
            raise ExitDown(f"{plan.describe()} is not running",
                           public=f"exit '{plan.name}' (tor) is not running")
        try:
            host, port = tor.socks_address()
        except TorUnavailable as error:
            state = tor.state
            if state == "bootstrapping":
                state = f"bootstrapping ({tor.progress}%)"
            where = f" (exits in {', '.join(plan.spec.countries)})" if plan.spec.countries else ""
            raise ExitDown(f"exit '{plan.name}': {error}",
                           public=f"exit '{plan.name}': tor{where} is not ready: {state}") from None
        user, password = tor.isolation(plan.isolation, site_of(dest.host), self.profile_name,
                                       isolation)
        chain = Chain(plan.name, (Hop("socks5", Address(host, port), user, password),))
        try:
            return await connect.open_chain(chain, dest, timeout=self.connect_timeout)
        except StageTimeout:
            where = f" through an exit in {', '.join(plan.spec.countries).upper()}" \
                if plan.spec.countries else ""
            raise StageTimeout(
                f"exit '{plan.name}': tor found no circuit to {dest}{where} within "
                f"{self.connect_timeout:g} s (failing closed)"
            ) from None

    async def _open_pool(self, plan: Pool, dest: Address, path: tuple[str, ...],
                         prefer: tuple[str, ...], isolation: str | None = None) -> Opened:
        failures: list[str] = []
        public: list[str] = []
        for member in self._order(plan, dest, prefer):
            try:
                return await self.open(member, dest, path, prefer, isolation)
            except (ExitFailed, StageTimeout, ExitDown) as error:
                if not hop_failed(error):
                    raise  # the destination itself failed: another member would not help
                failures.append(f"{member}: {error.message}")
                public.append(f"{member}: {error.public}")
        if plan.fallback is not None:
            logs.log.warning("exit '%s' has no usable member; using its fallback '%s'",
                             plan.name, plan.fallback)
            return await self.open(plan.fallback, dest, path, isolation=isolation)
        states = failures or [self.health.describe(m) for m in plan.members]
        public = public or [f"{m}: {'up' if self.health.is_up(m) else 'down'}"
                            for m in plan.members]
        raise ExitDown(f"exit '{plan.name}' has no member up ({'; '.join(states)})",
                       public=f"exit '{plan.name}' has no member up ({'; '.join(public)})")


def hop_failed(error: Exception) -> bool:
    """True when an exit itself failed (a hop), not the destination behind it."""
    return getattr(error, "hop_failed", True)
