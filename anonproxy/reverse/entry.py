"""One reverse entry while it runs: its settings, its backends with their health and traffic,
the order a request tries them in, the connections kept to them, its cache and TLS context.

Invariants: a backend marked down (by probes, or by `fall` failed connections in a row) gets no
request until `rise` successes bring it back; requests in flight per backend are counted exactly
(taken and given back around each exchange); nothing here is ever shown to a client — the
backends' addresses are the owner's (status, log), never a response's.
"""

from __future__ import annotations

import hmac
import ssl
from collections import Counter
from dataclasses import dataclass

from anonproxy.cache.store import MemoryCache
from anonproxy.config.models import Profile
from anonproxy.config.reverse import Reverse
from anonproxy.exits.context import Context
from anonproxy.exits.health import Health
from anonproxy.policy.balance import order
from anonproxy.reverse.onion import OnionService
from anonproxy.transport.upstream import UpstreamPool
from anonproxy.wire.address import Address
from anonproxy.wire.backend_headers import BackendNames
from anonproxy.wire.headers import Headers, basic_credentials


@dataclass
class Traffic:
    """What one backend carried since the entry started."""

    requests: int = 0
    failures: int = 0  # connections refused or broken, answers that were not HTTP
    up: int = 0  # request body bytes
    down: int = 0  # response body bytes


class ReverseEntry:
    """A [[reverse]] entry's running state (see the module); `update` takes a reload."""

    def __init__(self, settings: Reverse, ctx: Context, tls: ssl.SSLContext | None) -> None:
        self.listen: Address = settings.listen_address
        self.tls = tls
        self.pool = UpstreamPool()
        self.in_flight: Counter[str] = Counter()
        self.traffic: dict[str, Traffic] = {}
        self.onion_service: OnionService | None = None  # with `onion`, once it is kept
        self.connections = 0  # client connections open now
        self._turn = 0
        self.update(settings, ctx)

    def update(self, settings: Reverse, ctx: Context) -> None:
        """Take new settings (start, reload): backends that stay keep their health and
        traffic; kept connections go (a backend may have changed behind the same address)."""
        profile: Profile = ctx.profile
        self.settings, self.ctx = settings, ctx
        self.backends: dict[str, Address] = {
            address.authority(): address for address in settings.backend_addresses}
        self.names = BackendNames.of(self.backends.values())
        old = getattr(self, "health", None)
        self.health = Health(profile.health.rise, profile.health.fall, label="backend")
        if old is not None:
            self.health.states = {n: s for n, s in old.states.items() if n in self.backends}
        self.traffic = {name: self.traffic.get(name, Traffic()) for name in self.backends}
        cache = getattr(self, "cache", None)
        if settings.cache:
            sizes = profile.cache
            if cache is None or (cache.max_bytes, cache.max_object_bytes) != (
                    sizes.max_bytes, sizes.max_object_bytes):
                cache = MemoryCache(sizes.max_bytes, sizes.max_object_bytes)
            else:
                cache.clear()  # (what the backends answered may have changed with the profile)
        self.cache = cache if settings.cache else None
        self.pool.close()
        self.pool = UpstreamPool()
        hosts = settings.hosts
        self._hosts = None if hosts is None else frozenset(hosts)
        auth = settings.auth
        self._credentials = None if auth is None else (
            f"{auth.username}:{auth.password}".encode())

    @property
    def onion(self) -> str | None:
        """The entry's .onion address, once known."""
        service = self.onion_service
        return None if service is None else service.address

    @property
    def label(self) -> str:
        """How the log and status name this entry: its listen address."""
        return f"reverse {self.listen.authority()}"

    def order(self) -> list[str]:
        """The backends one request may try, in order (none up: empty)."""
        self._turn += 1
        return order(self.settings.strategy, list(self.backends), self.health.is_up,
                     self.in_flight, self._turn)

    @property
    def checks_hosts(self) -> bool:
        """Whether the entry answers only some Host names (`hosts`)."""
        return self._hosts is not None

    def answers_host(self, host: str | None) -> bool:
        """Whether a request for `host` (the Host's name, lower case, no port) is this entry's:
        any, when `hosts` is absent; else one of them or the entry's own onion address."""
        if self._hosts is None:
            return True
        return host is not None and (host in self._hosts or host == self.onion)

    def authorized(self, headers: Headers) -> bool:
        """Whether the request carries the entry's Basic credentials (always, without `auth`);
        compared in constant time."""
        expected = self._credentials
        if expected is None:
            return True
        found = basic_credentials(headers, b"authorization")
        given = b"" if found is None else f"{found[0]}:{found[1]}".encode()
        return hmac.compare_digest(given, expected)

    def status(self) -> dict:
        """What the owner sees of this entry (status, dashboard): every backend with its
        health and traffic."""
        settings = self.settings
        backends = []
        for name in self.backends:
            traffic = self.traffic[name]
            backends.append({"backend": name, **self.health.snapshot(name),
                             "in_flight": self.in_flight[name], "requests": traffic.requests,
                             "failures": traffic.failures, "up_bytes": traffic.up,
                             "down_bytes": traffic.down})
        return {
            "listen": self.listen.authority(), "strategy": settings.strategy,
            "hosts": settings.hosts, "tls": self.tls is not None,
            "auth": settings.auth is not None, "forwarded": settings.forwarded,
            "cache": None if self.cache is None else self.cache.snapshot(),
            "onion": self.onion, "connections": self.connections, "backends": backends,
            "onion_service": None if self.onion_service is None else self.onion_service.status(),
        }
