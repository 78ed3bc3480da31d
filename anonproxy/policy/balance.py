"""The order in which the members of a group are tried for one request or connection: the
backends of a reverse entry, the members of an exit pool (pure).

One function, one table of strategies:
- failover: the members in the order written;
- round-robin: the order written, rotated by a turn counter (one step per request or
  connection), so that n turns in a row start once at each member;
- least-connections: by the requests each has in flight, fewest first; members with equal load
  in round-robin order, so that equal load still spreads;
- sticky: per site, by rendezvous hashing, so a site keeps its member while that member is up,
  moves to the next-best one when it is down, and comes back when it recovers.

Invariants: members that are down are left out, whatever the strategy; when none is up the
order is empty, and the caller fails closed (an exit pool is down; a reverse entry answers 503,
"no backend is available", naming none). A member is up or down as its health says: one that
passive failures marked down is not tried again until its health rises, as a probe finds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Load:
    """What a strategy may look at besides the members that are up."""

    in_flight: Mapping[str, int]
    turn: int
    site: str


def _failover(up: list[str], load: Load) -> list[str]:
    return up


def _round_robin(up: list[str], load: Load) -> list[str]:
    k = load.turn % len(up)
    return up[k:] + up[:k]


def _least_connections(up: list[str], load: Load) -> list[str]:
    flights = load.in_flight
    return sorted(_round_robin(up, load), key=lambda m: flights.get(m, 0))  # stable: ties rotate


def _sticky(up: list[str], load: Load) -> list[str]:
    def weight(member: str) -> bytes:
        return hashlib.blake2b(f"{load.site}\0{member}".encode(), digest_size=8).digest()

    return sorted(up, key=weight, reverse=True)


STRATEGIES: dict[str, Callable[[list[str], Load], list[str]]] = {
    "failover": _failover,
    "round-robin": _round_robin,
    "least-connections": _least_connections,
    "sticky": _sticky,
}


def order(strategy: str, members: Sequence[str], up: Callable[[str], bool] | AbstractSet[str],
          in_flight: Mapping[str, int], turn: int, *, site: str = "") -> list[str]:
    """The members that are up, in the order `strategy` tries them; [] when none is up.

    `up`: a member's health, as a test or the set of members that are up. `in_flight`: the
    requests each member has under way (least-connections; absent counts as 0). `turn`: a
    counter the caller steps once per request. `site`: the request's site (sticky).
    """
    try:
        step = STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"'{strategy}' is not a strategy (one of {', '.join(STRATEGIES)})") \
            from None
    is_up = up.__contains__ if isinstance(up, AbstractSet) else up
    alive = [m for m in members if is_up(m)]
    if not alive:
        return []
    return step(alive, Load(in_flight, turn, site))
