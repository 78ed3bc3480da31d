"""What every connection of a running proxy shares: the profile, its exits and reusable upstreams.

The only mutable runtime state besides the listener's connection accounting lives here (the
upstream pool). Routing is still one default exit per profile; rule-based choice plugs in at
`route()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import exits
from .address import Address, is_loopback_host, is_unspecified_host, targets_listener
from .config import LoadedProfile
from .errors import Forbidden
from .exits import ExitPlan
from .headers import HeaderPolicy
from .upstream import UpstreamPool


@dataclass
class Context:
    loaded: LoadedProfile
    listen: Address
    policy: HeaderPolicy = field(init=False)
    plans: dict[str, ExitPlan] = field(init=False)
    pool: UpstreamPool = field(default_factory=UpstreamPool)

    def __post_init__(self) -> None:
        profile = self.loaded.profile
        self.policy = profile.headers.policy()
        self.plans = {name: ExitPlan.from_config(name, e) for name, e in profile.exits.items()}

    @property
    def limits(self):
        return self.loaded.profile.limits

    def route(self, dest: Address) -> ExitPlan:
        """The exit for `dest`: the profile's default exit (rules come with exit profiles)."""
        return self.plans[self.loaded.profile.default]

    def refuse_self(self, dest: Address) -> None:
        if targets_listener(dest, self.listen):
            raise Forbidden(f"refusing to forward to the proxy's own address {dest}")

    def is_self(self, peer_host: str, peer_port: int, local_host: str) -> bool:
        """Whether a connected peer is our own listener (the name resolved to ourselves)."""
        if peer_port != self.listen.port:
            return False
        if peer_host == self.listen.host:
            return True
        local = peer_host == local_host or is_loopback_host(peer_host)
        return local and is_unspecified_host(self.listen.host)

    async def open(self, plan: ExitPlan, dest: Address) -> exits.Stream:
        return await exits.open_stream(
            plan, dest, timeout=self.limits.connect_timeout, is_self=self.is_self
        )
