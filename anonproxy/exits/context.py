"""What every connection of a running proxy shares: the profile compiled for use, the exits'
health, the GeoIP database and the reusable upstream connections; the I/O around the router.

`route()` first asks the profile's block lists (policy/blocklists.py), by full URL for a
plain-HTTP request and by host for a tunnel; then the pure router (policy/router.py) for an
exit and its reason; when the router
answers NEED_ADDRESS (a rule needs an address and the profile says `resolve = "local"` or
`"tor"`), this module looks the name up and answers; then the router says what is refused.
Outcomes that needed no lookup are remembered per destination. `open()` hands the decision to
the profile's Dialer (dialer.py), which connects through the exit and calls back here
(forbidden_peer, forbidden_via_hop) about what the connection reached — the router judges it
against what the proxy serves now (own_services, gathered here).

Invariants: nothing here resolves a destination name unless the router asks and the
profile's `resolve` says how, and the router never asks for a special-use name
(address.special_use). The proxy never reaches its own services (listener, dashboard, its
tors' ports, and for `fetch` what running proxies announced).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from anonproxy.cache.store import MemoryCache
from anonproxy.config.models import Limits
from anonproxy.config.profiles import LoadedProfile
from anonproxy.exits.base import Opened, Plan
from anonproxy.exits.dialer import Dialer
from anonproxy.exits.health import Health
from anonproxy.exits.registry import plan_from_config
from anonproxy.exits.tor_process import Tor, TorSpec
from anonproxy.exits.verification import Verification
from anonproxy.policy.blocklists import Request
from anonproxy.policy.geo import GeoDB
from anonproxy.policy.inspection import Inspection
from anonproxy.policy.router import Router
from anonproxy.policy.rules import NEED_ADDRESS, CompiledRule, Decision, compile_rules
from anonproxy.transport.upstream import UpstreamPool
from anonproxy.wire.address import Address
from anonproxy.wire.errors import Blocked, ExitDown, Forbidden
from anonproxy.wire.headers import HeaderPolicy

if TYPE_CHECKING:
    import ssl

    from anonproxy.tls.authority import Authority


@dataclass
class Context:
    loaded: LoadedProfile
    listen: Address
    geo: GeoDB | None = None
    tors: dict[TorSpec, Tor] = field(default_factory=dict)  # shared by every context
    policy: HeaderPolicy = field(init=False)
    plans: dict[str, Plan] = field(init=False)
    rules: tuple[CompiledRule, ...] = field(init=False)
    health: Health = field(init=False)
    verification: Verification = field(default_factory=Verification)  # (exits/verification.py)
    pool: UpstreamPool = field(default_factory=UpstreamPool)
    admin: Address | None = None  # the dashboard's address: never a destination
    loopback_allowed: bool = True  # False (exec --strict): this machine only where cidrs name it
    also_own: tuple[Address, ...] = ()  # other proxies of this user (fetch): never destinations
    hits: Counter = field(default_factory=Counter)  # routed requests by rule number (0: default)
    authority: Authority | None = None  # the local CA, when the proxy opens HTTPS ([inspect])
    inspection: Inspection | None = field(init=False)  # which HTTPS destinations it opens
    cache: MemoryCache | None = field(init=False)  # responses kept ([cache] enabled)
    identity_epoch: int = 0  # new identities made: a cache partition of each (cache/store.py)
    router: Router = field(init=False)  # destination -> decision, and what is refused
    dialer: Dialer = field(init=False)  # decision -> connected stream
    # read per request by the hot path (inbound/http_session.py), where a method call is a
    # Python call: the profile's limits; the exits that send through no other exit, with their
    # path (their own name: choose_path's answer for them); and shares_upstreams of each exit
    limits: Limits = field(init=False)
    straight: dict[str, tuple[str, ...]] = field(init=False)
    sharing: dict[str, bool] = field(init=False)
    # route() outcomes for decisions that needed no lookup, valid while `_routes_key` holds
    _routes: dict = field(default_factory=dict, repr=False)
    _routes_key: tuple = ()
    _owns: tuple = field(default=(), repr=False)  # own_services(), valid while `_owns_key` holds
    _owns_key: tuple = ()

    def __post_init__(self) -> None:
        profile = self.loaded.profile
        self.policy = profile.headers.policy()
        self.plans = {name: plan_from_config(name, e) for name, e in profile.exits.items()}
        self.rules = compile_rules(profile.rules)
        self.router = Router(self.rules, profile.default,
                             tuple(n for n, p in self.plans.items() if p.reaches_onion),
                             profile.resolve, self.loopback_allowed, self.country_of)
        self.health = Health(profile.health.rise, profile.health.fall)
        self.inspection = Inspection.from_patterns(profile.inspect.hosts, profile.inspect.skip)
        kept = profile.cache
        self.cache = MemoryCache(kept.max_bytes, kept.max_object_bytes) if kept.enabled else None
        self.dialer = Dialer(self.plans, self.health, self.tors, self.loaded.name,
                             profile.limits.connect_timeout, self.forbidden_peer,
                             self.forbidden_via_hop, self.verification)
        self.limits = profile.limits
        self.straight = {name: (name,) for name, plan in self.plans.items() if not plan.members}
        self.sharing = {name: plan.shares_upstreams for name, plan in self.plans.items()}

    def carry_hits(self, previous: Context) -> None:
        """After a reload of the same profile: rules left as they were (same text and exit)
        keep their hit counts, and so does the default if it still names the same exit; exits
        left as they were keep their verification (a refused one stays refused until the
        checks that start anew measure it)."""
        for name, state in previous.verification.states.items():
            if name in self.plans and self.plans[name] == previous.plans.get(name):
                self.verification.states[name] = state
        kept: dict[tuple[str, str], int] = {}
        for rule in previous.rules:
            kept.setdefault((rule.text, rule.exit), previous.hits[rule.number])
        for rule in self.rules:
            count = kept.pop((rule.text, rule.exit), 0)
            if count:
                self.hits[rule.number] = count
        if self.profile.default == previous.profile.default and previous.hits[0]:
            self.hits[0] = previous.hits[0]

    @property
    def profile(self):
        return self.loaded.profile

    def probed_members(self) -> list[str]:
        """Exits that some pool draws on and that can check themselves: these get health
        probes."""
        members = {m for p in self.plans.values() for m in p.members}
        return sorted(m for m in members if self.plans[m].probes)

    async def probe(self, name: str, timeout: float) -> None:
        await self.plans[name].probe(timeout)

    def country_of(self, ip) -> str | None:
        return self.geo.country(ip) if self.geo is not None else None

    def tor_specs(self) -> set[TorSpec]:
        return {p.tor_spec for p in self.plans.values() if p.tor_spec is not None}

    async def decide(self, dest: Address) -> Decision:
        """The rule decision for `dest`. A name is looked up only when the router asks for an
        address and the profile says how: `resolve = "local"` (this machine) or `"tor"` (at a
        Tor exit)."""
        return (await self._decide(dest))[0]

    async def _decide(self, dest: Address,
                      isolation: str | None = None) -> tuple[Decision, bool]:
        """The router's decision, answering its NEED_ADDRESS with a lookup; and whether it took
        one (then the decision may change over time)."""
        decision = self.router.decide(dest)
        if decision is not NEED_ADDRESS:
            assert isinstance(decision, Decision)
            return decision, False
        if self.profile.resolve == "tor":
            address = await self._resolve_through_tor(dest.host, isolation)
        else:
            address = await _resolve_locally(dest.host)
        return self.router.decide_with(dest, address), True

    async def _resolve_through_tor(self, host: str, isolation: str | None = None):
        """The address the profile's first ready exit that resolves remotely (a Tor exit's
        RESOLVE) finds for `host`, asked with the isolation key the request it serves would use
        (Plan.resolve_remotely), so a lookup never shares a circuit with another site's or
        client's."""
        for plan in self.plans.values():
            try:
                found = await plan.resolve_remotely(host, self.dialer.env, isolation)
            except ExitDown:
                continue  # resolves no names, or not ready now
            return ipaddress.ip_address(found) if found else None
        return None

    def _own_key(self) -> tuple:
        """What own_services depends on that can change (cheap to build and compare)."""
        tors = self.tors
        if not tors:
            return (self.listen, self.admin)
        return (self.listen, self.admin, *((tor.control, tor.socks) for tor in tors.values()))

    def own_services(self) -> tuple[tuple[Address, str], ...]:
        """What this proxy serves, each with its kind (own_services.KINDS): never a
        destination. A managed tor's ports count from the moment tor reports them
        (tor_process.py)."""
        key = self._own_key()
        if key != self._owns_key:
            self._owns, self._owns_key = self._gather_own(), key
        return self._owns

    def _gather_own(self) -> tuple[tuple[Address, str], ...]:
        found = [(self.listen, "listener")]
        if self.admin is not None:
            found.append((self.admin, "dashboard"))
        for tor in self.tors.values():
            if tor.control is not None:
                found.append((Address(*tor.control), "tor control"))
            if tor.socks is not None:
                found.append((Address(*tor.socks), "tor socks"))
        found += [(address, "other") for address in self.also_own]
        return tuple(found)

    def refuse_unsafe(self, dest: Address, rule: CompiledRule | None = None) -> None:
        """Forbidden for loops (our own services, by any local spelling), this machine under
        strict, and link-local (cloud metadata) addresses unless `rule`'s cidrs name them —
        whatever exit is chosen (Router.unsafe)."""
        reason = self.router.unsafe(dest, rule, self.own_services())
        if reason is not None:
            raise Forbidden(reason)

    def refuse_listed(self, dest: Address, request: Request | None = None) -> None:
        """Blocked when a block list blocks `request` (a plain-HTTP request's URL and what its
        headers say), or, without one, a tunnel to `dest`."""
        blocker = self.loaded.blocker
        if blocker is not None:
            verdict = blocker.check(request) if request else blocker.check_tunnel(dest)
            hit = verdict.block
            if hit is not None:
                raise Blocked(str(dest), hit.list, hit.rule)

    async def route(self, dest: Address, isolation: str | None = None,
                    request: Request | None = None) -> Decision:
        """The exit for `dest`; raises Blocked when a block list blocks it (before the rules:
        refuse_listed), Forbidden for unsafe destinations (refuse_unsafe) and for rules that
        block. (`known_route`, then `look_up_route` when it knows nothing.)"""
        known = self.known_route(dest, request)
        return known if known is not None else await self.look_up_route(dest, isolation)

    def known_route(self, dest: Address, request: Request | None = None) -> Decision | None:
        """`route` without waiting: the block lists' verdict, then the remembered outcome for
        `dest`, or None when there is none (then `look_up_route`: the hot path makes no
        coroutine for a destination it knows).

        Outcomes that needed no lookup are remembered per destination: they depend only on the
        rules, the GeoIP table and the addresses refuse_unsafe checks (own_services), and
        what those addresses come from is the memo's key (also_own is fixed)."""
        if self.loaded.blocker is not None:
            self.refuse_listed(dest, request)
        key = self._own_key()
        if key != self._routes_key:
            self._routes.clear()
            self._routes_key = key
        known = self._routes.get(dest)
        return self._counted(known) if known is not None else None

    async def look_up_route(self, dest: Address, isolation: str | None = None) -> Decision:
        """`route` after `known_route` found nothing: the rules decide (looking the address up
        when one needs it), and an outcome that needed no lookup is remembered."""
        decision, looked_up = await self._decide(dest, isolation)
        known = (decision, self.router.refusal(dest, decision, self.own_services()))
        if not looked_up:
            if len(self._routes) >= 4096:
                self._routes.clear()
            self._routes[dest] = known
        return self._counted(known)

    def _counted(self, known: tuple[Decision, str | None]) -> Decision:
        decision, refusal = known
        self.hits[decision.rule.number if decision.rule else 0] += 1
        if refusal is not None:
            raise Forbidden(refusal)
        return decision

    def forbidden_peer(self, dest: Address, peer: tuple[str, int], local_host: str) -> str | None:
        """Why a direct connection to `dest` must not be used, now that we know what it
        reached (Router.peer_refusal). None when it is fine."""
        return self.router.peer_refusal(dest, peer, local_host, self.own_services())

    def forbidden_via_hop(self, dest: Address, hop_local: bool,
                          bound: Address | None) -> str | None:
        """Why a tunnel to `dest` through a chain must not be used (Router.hop_refusal)."""
        return self.router.hop_refusal(dest, hop_local, bound, self.own_services())

    def new_identity(self) -> None:
        """Nothing fetched before carries over: kept upstream connections are dropped, the cache
        emptied, and what is stored from now on goes to partitions of the new epoch."""
        self.pool.close()
        self.pool = UpstreamPool()
        self.identity_epoch += 1
        if self.cache is not None:
            self.cache.clear()

    def inspects(self, dest: Address) -> bool:
        """Whether a tunnel to `dest` is opened at the proxy (`[inspect]`, with the local CA)."""
        return (self.inspection is not None and self.authority is not None
                and self.inspection.opens(dest.host))

    def site_tls(self) -> ssl.SSLContext:
        """The TLS settings for the proxy's own connections to opened sites: certificates
        verified against `[inspect] ca_bundle` (tls/trust.py caches one per bundle)."""
        from anonproxy.tls.trust import upstream_context

        return upstream_context(self.loaded.ca_bundle)

    def shares_upstreams(self, name: str) -> bool:
        """Whether a connection through this exit may carry a later request too: not for a Tor
        exit that isolates every connection (a reused connection would share its circuit)."""
        shared = self.sharing.get(name)
        if shared is None:  # (an exit not in the profile: none of its plans)
            plan = self.plans.get(name)
            return plan is None or plan.shares_upstreams
        return shared

    def choose_path(self, name: str, dest: Address) -> tuple[str, ...]:
        """The exit names a request to `dest` goes through, pools resolved (Dialer.choose_path)."""
        alone = self.straight.get(name)
        return alone if alone is not None else self.dialer.choose_path(name, dest)

    async def open(self, name: str, dest: Address, prefer: tuple[str, ...] = (),
                   isolation: str | None = None) -> Opened:
        """Open a stream to `dest` through exit `name` (Dialer.open)."""
        return await self.dialer.open(name, dest, prefer=prefer, isolation=isolation)


async def _resolve_locally(host: str):
    """A local DNS lookup, only ever for `resolve = "local"` profiles."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    return ipaddress.ip_address(infos[0][4][0]) if infos else None
