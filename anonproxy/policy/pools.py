"""Which member of a pool to try, in which order (pure).

- failover: members in the order written;
- round-robin: rotated by a turn counter, one step per connection;
- sticky: per site, by rendezvous hashing, so a site keeps its member while that member is up,
  moves to the next-best one when it is down, and comes back when it recovers.

Members that are down are left out; an empty order means the pool is down (fail closed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def order_members(
    members: tuple[str, ...], strategy: str, is_up: Callable[[str], bool], *, turn: int, site: str
) -> list[str]:
    up = [m for m in members if is_up(m)]
    if not up:
        return []
    if strategy == "round-robin":
        k = turn % len(up)
        return up[k:] + up[:k]
    if strategy == "sticky":
        def weight(member: str) -> bytes:
            return hashlib.blake2b(f"{site}\0{member}".encode(), digest_size=8).digest()

        return sorted(up, key=weight, reverse=True)
    return up
