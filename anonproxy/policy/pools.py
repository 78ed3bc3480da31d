"""Which member of an exit pool to try, in which order (pure): the pool's strategy (failover,
round-robin or sticky) as policy/balance.py orders any group, asked with the pool's terms.

Members that are down are left out; an empty order means the pool is down (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable

from anonproxy.policy.balance import order


def order_members(
    members: tuple[str, ...], strategy: str, is_up: Callable[[str], bool], *, turn: int, site: str
) -> list[str]:
    return order(strategy, members, is_up, {}, turn, site=site)
