"""The exit protocol: what every kind of exit is to the rest of the proxy (`Plan`), and what
opening one needs from the profile it belongs to (`Env`).

A kind of exit is one module — direct.py, chain.py, pool.py, tor.py — holding a frozen
dataclass that implements `Plan` and a function `plan(name, exit_)` that builds it from the
profile's `[exits.NAME]` table; registry.py maps the profile key that selects a kind to its
module. Nothing outside exits/ knows the kinds: the dialer opens a plan, the router and the
server ask it what it can do (the capability properties below), and `check`, `route`,
`status` and the dashboard render what it describes (`summary_lines`, `resolution`, `status`).

Invariants: nothing a plan describes for the dashboard or `status` shows a credential (a hop's
username and password are masked); `open` translates every failure into a ProxyError whose
public sentence names the exit, never a hop's or a source address; only an exit that
`exposes_address` resolves a destination name on this machine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from anonproxy.exits.connect import Stream
from anonproxy.exits.health import Health
from anonproxy.exits.verification import Verification
from anonproxy.wire.address import Address

if TYPE_CHECKING:
    from anonproxy.exits.tor_process import Tor, TorSpec
    from anonproxy.policy.geo import GeoDB

# The keys every kind's status() has, which the dashboard's exits table and `status` render
# without knowing kinds (docs/dashboard.md): kind; through (how it leaves, in words, credentials
# masked); state (its own state word, such as a tor's "ready", or None); up (usable now as far
# as the proxy knows, or None); country (declared) and verified_country (as this machine can
# tell), or None. Kinds add their own keys beside them (hops, members, ...).
STATUS_KEYS = ("kind", "through", "state", "up", "country", "verified_country")


@runtime_checkable
class Plan(Protocol):
    """One exit of a profile, as its kind planned it from the profile."""

    @property
    def name(self) -> str:
        """The exit's name in the profile."""

    @property
    def kind(self) -> str:
        """The word `status` and the dashboard show for its kind ("direct", "chain", ...)."""

    @property
    def members(self) -> tuple[str, ...]:
        """Other exits it sends through, by name (a pool's members); () when it connects
        itself."""

    @property
    def exposes_address(self) -> bool:
        """Destinations see this machine's address (a direct exit): the server warns."""

    @property
    def reaches_onion(self) -> bool:
        """Names only Tor can reach (.onion) may go through it: the router sends them to the
        profile's first such exit, and refuses them when there is none."""

    @property
    def shares_upstreams(self) -> bool:
        """A connection through it may carry a later request too (not when every connection
        must get a circuit of its own)."""

    @property
    def identity(self) -> str | None:
        """What a new identity renews for it: its isolation ("site", "profile",
        "connection"); None when it has no identity to renew."""

    @property
    def tor_spec(self) -> TorSpec | None:
        """The tor it needs running (the server runs one per spec), or None."""

    @property
    def probes(self) -> bool:
        """probe() can check it without contacting any destination: a pool's member that can
        is probed on an interval."""

    def describe(self) -> str:
        """The owner's one line, for the log and `fetch -v`: `exit 'uk' (socks5 ...)`."""

    def summary_lines(self, plans: Mapping[str, Plan], indent: str = "") -> list[str]:
        """What `check` says of it (its members indented under it)."""

    def resolution(self, dest: Address, plans: Mapping[str, Plan]) -> str:
        """What `route` says of where the name of `dest` is resolved through it."""

    def pick(self, dest: Address, env: Env) -> str | None:
        """The member a request to `dest` goes through now (a round-robin pool moves on one
        step); None when it has no members, or none is up."""

    async def open(self, dest: Address, env: Env, path: tuple[str, ...],
                   prefer: tuple[str, ...] = (), isolation: str | None = None) -> Opened:
        """A stream to `dest` through it. `path`: exit names from the routed one to this one;
        `prefer`: members to try first; `isolation`: the client's own key, which an exit
        that isolates adds to what it isolates by."""

    async def probe(self, timeout: float) -> None:
        """Check that it works (only where `probes`); raises a ProxyError when it does not."""

    async def resolve_remotely(self, host: str, env: Env, isolation: str | None) -> str | None:
        """The address its far end finds for `host` (for `resolve = "tor"`), asked with the
        isolation a request to `host` would use; None when there is none. Raises ExitDown
        when it cannot ask now, or resolves no names at all."""

    def status(self, env: Env, geo: GeoDB | None) -> dict[str, Any]:
        """Its part of /api/exits: STATUS_KEYS, and its own keys (credentials masked)."""


@dataclass(slots=True)
class Opened:
    stream: Stream
    path: tuple[str, ...]  # exit names from the routed one to the concrete one used
    plan: Plan  # the concrete exit the stream goes through (the last of `path`)


@dataclass(slots=True)
class Rotation:
    """The round-robin turn a profile's pools share: one step per new pooled connection."""

    turn: int = 0


@dataclass(frozen=True, slots=True)
class Env:
    """What opening an exit needs from the profile it belongs to (the dialer's; one per
    profile). `tors`: the running tors, shared and kept current by the server. `refuse_peer`
    and `refuse_via_hop`: why a direct connection or a tunnel through a chain must not be used
    (the router's forbidden_peer and forbidden_via_hop). `open_exit(name, dest, path, prefer,
    isolation)`: open another exit of the profile (a pool's member). `verification`: the
    verdicts of the echo checks (exits/verification.py)."""

    plans: Mapping[str, Plan]
    health: Health
    tors: Mapping[TorSpec, Tor]
    profile_name: str
    connect_timeout: float
    refuse_peer: Callable[[Address, tuple[str, int], str], str | None]
    refuse_via_hop: Callable[[Address, bool, Address | None], str | None]
    open_exit: Callable[[str, Address, tuple[str, ...], tuple[str, ...], str | None],
                        Awaitable[Opened]]
    rotation: Rotation
    verification: Verification  # exits refused for leaving from a country they do not declare

    def usable(self, name: str) -> bool:
        """Up as far as health knows, and not refused by verification (a pool's order)."""
        return self.health.is_up(name) and self.verification.allows(name)


def hop_failed(error: Exception) -> bool:
    """True when an exit itself failed (a hop), not the destination behind it."""
    return getattr(error, "hop_failed", True)
