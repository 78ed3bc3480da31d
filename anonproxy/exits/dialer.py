"""The dialer: from an exit decision to a connected stream.

`open()` opens a stream to a destination through a named exit: it hands the plan (base.Plan)
the profile's `Env` and the plan opens itself as its kind does (direct.py, chain.py, pool.py,
tor.py); a pool asks back here for its members. `choose_path` names the member a request would
use now, so reusable connections can be kept under it. What to dial is the router's decision
(context.py); what must never be reached is its too — the dialer passes the `refuse` callbacks
it was given to the kinds, which ask after a direct connect and through a hop on this machine.

Invariants: an exit verification refuses (exits/verification.py) fails closed here, whatever
routed or forced it, and a pool moves on past it. A special-use name (address.special_use) is
refused here for any exit that cannot reach it (only one that `reaches_onion` can, for
.onion), whatever forced it; an exit with members leaves that to the member it opens.
"""

from __future__ import annotations

from collections.abc import Callable

from anonproxy.exits.base import Env, Opened, Plan, Rotation
from anonproxy.exits.health import Health
from anonproxy.exits.tor_process import Tor, TorSpec
from anonproxy.exits.verification import Verification
from anonproxy.wire.address import Address, special_use, special_use_refusal
from anonproxy.wire.errors import Forbidden


class Dialer:
    """Opens streams through one profile's exits; its Env keeps the round-robin turn of its
    pools."""

    def __init__(self, plans: dict[str, Plan], health: Health, tors: dict[TorSpec, Tor],
                 profile_name: str, connect_timeout: float,
                 refuse_peer: Callable[[Address, tuple[str, int], str], str | None],
                 refuse_via_hop: Callable[[Address, bool, Address | None], str | None],
                 verification: Verification | None = None) -> None:
        """`tors`: the running tors, shared and kept current by the server. `refuse_peer` and
        `refuse_via_hop`: why a direct connection or a tunnel through a chain must not be used
        (the router's forbidden_peer and forbidden_via_hop). `verification`: exits refused for
        where they were measured leaving from."""
        self.plans = plans
        self.env = Env(plans, health, tors, profile_name, connect_timeout, refuse_peer,
                       refuse_via_hop, self.open, Rotation(), verification or Verification())

    def choose_path(self, name: str, dest: Address) -> tuple[str, ...]:
        """The exit names a request to `dest` goes through, each pool resolved to the member
        its strategy picks now (a round-robin pool moves on one step). Reusable connections
        are kept under this path, and `open(..., prefer=path)` tries it first."""
        path: tuple[str, ...] = (name,)
        plan = self.plans[name]
        while (member := plan.pick(dest, self.env)) is not None:
            path += (member,)
            plan = self.plans[member]
        return path

    async def open(self, name: str, dest: Address, _path: tuple[str, ...] = (),
                   prefer: tuple[str, ...] = (), isolation: str | None = None, *,
                   unverified: bool = False) -> Opened:
        """Open a stream to `dest` through exit `name` (pools resolved to a member, those in
        `prefer` first). `isolation`: the client's own key (a digest of its SOCKS5
        credentials), which a Tor exit adds to the circuit isolation it asks for. An exit
        verification refuses fails closed (ExitDown), unless `unverified` (the check itself)."""
        refused = None if unverified else self.env.verification.refusal(name)
        if refused is not None:
            raise refused
        plan = self.plans[name]
        if not plan.members and special_use(dest.host) is not None:
            refusal = special_use_refusal(dest.host, tor_exit=plan.reaches_onion)
            if refusal is not None:  # route() decided this already; an exit forced by fetch
                raise Forbidden(refusal)
        return await plan.open(dest, self.env, (*_path, name), prefer, isolation)
