"""Pool member order by strategy and health (pure)."""

from __future__ import annotations

from anonproxy.policy.pools import order_members

MEMBERS = ("a", "b", "c")


def up_all(_):
    return True


def test_failover_keeps_written_order_and_skips_down():
    assert order_members(MEMBERS, "failover", up_all, turn=5, site="x") == ["a", "b", "c"]
    assert order_members(MEMBERS, "failover", lambda m: m != "a", turn=0, site="x") == ["b", "c"]


def test_round_robin_rotates():
    firsts = [order_members(MEMBERS, "round-robin", up_all, turn=t, site="x")[0] for t in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]


def test_sticky_keeps_a_site_on_one_member_and_moves_only_when_it_is_down():
    sites = [f"site{i}.example" for i in range(30)]
    first = {s: order_members(MEMBERS, "sticky", up_all, turn=0, site=s)[0] for s in sites}
    assert len(set(first.values())) == 3  # sites spread over members
    for s in sites:
        assert order_members(MEMBERS, "sticky", up_all, turn=99, site=s)[0] == first[s]
        down = first[s]
        moved = order_members(MEMBERS, "sticky", lambda m, down=down: m != down, turn=0, site=s)[0]
        assert moved != down
        others = [t for t in sites if first[t] != down]
        assert all(order_members(MEMBERS, "sticky", lambda m, down=down: m != down, turn=0, site=t)[0] == first[t]
                   for t in others)


def test_all_down_is_empty():
    assert order_members(MEMBERS, "sticky", lambda m: False, turn=0, site="x") == []


def test_a_pool_with_every_member_down_offers_none_whatever_the_strategy():
    for strategy in ("failover", "round-robin", "sticky"):
        assert order_members(MEMBERS, strategy, lambda m: False, turn=3, site="x") == []
