"""The order of a group's members per strategy and health, as tables (pure)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonproxy.policy.balance import STRATEGIES, order

B = ("a", "b", "c")
ALL = frozenset(B)
IDLE: dict[str, int] = {}


# strategy, members up, in flight, turn -> the order tried
TABLE = [
    ("failover", ALL, IDLE, 7, ["a", "b", "c"]),
    ("failover", {"b", "c"}, IDLE, 0, ["b", "c"]),
    ("failover", {"c"}, {"c": 9}, 0, ["c"]),
    ("round-robin", ALL, IDLE, 0, ["a", "b", "c"]),
    ("round-robin", ALL, IDLE, 1, ["b", "c", "a"]),
    ("round-robin", ALL, IDLE, 5, ["c", "a", "b"]),
    ("round-robin", {"a", "c"}, IDLE, 1, ["c", "a"]),
    ("round-robin", {"a", "c"}, IDLE, 2, ["a", "c"]),
    ("least-connections", ALL, {"a": 3, "b": 1, "c": 2}, 0, ["b", "c", "a"]),
    ("least-connections", ALL, {"a": 3, "b": 1, "c": 2}, 2, ["b", "c", "a"]),
    ("least-connections", ALL, {"a": 0, "b": 0, "c": 5}, 1, ["b", "a", "c"]),
    ("least-connections", ALL, {"a": 1}, 0, ["b", "c", "a"]),
    ("least-connections", {"a", "c"}, {"a": 1, "b": 0, "c": 2}, 0, ["a", "c"]),
]


@pytest.mark.parametrize(("strategy", "up", "in_flight", "turn", "expected"), TABLE)
def test_order_per_strategy(strategy, up, in_flight, turn, expected):
    assert order(strategy, B, up, in_flight, turn) == expected


def test_up_may_be_a_test_instead_of_a_set():
    assert order("failover", B, lambda m: m != "a", IDLE, 0) == ["b", "c"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_down_members_are_never_tried_whatever_the_strategy(strategy):
    for turn in range(6):
        assert "b" not in order(strategy, B, {"a", "c"}, {"a": 4}, turn, site="s.example")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_none_up_is_an_empty_order_so_the_caller_answers_503(strategy):
    assert order(strategy, B, frozenset(), {"a": 0}, 3, site="x") == []
    assert order(strategy, (), ALL, IDLE, 0) == []


def test_round_robin_spreads_1000_turns_exactly():
    firsts = Counter(order("round-robin", B, ALL, IDLE, turn)[0] for turn in range(1000))
    assert firsts == {"a": 334, "b": 333, "c": 333}
    firsts = Counter(order("round-robin", B, {"a", "c"}, IDLE, turn)[0] for turn in range(1000))
    assert firsts == {"a": 500, "c": 500}


def test_least_connections_picks_the_minimum_and_spreads_equal_load():
    assert order("least-connections", B, ALL, {"a": 2, "b": 2, "c": 1}, 0)[0] == "c"
    firsts = Counter(order("least-connections", B, ALL, {"a": 1, "b": 1, "c": 1}, turn)[0]
                     for turn in range(999))
    assert firsts == {"a": 333, "b": 333, "c": 333}


def test_failover_takes_the_first_up_and_comes_back_when_it_recovers():
    assert order("failover", B, {"b", "c"}, IDLE, 0)[0] == "b"
    assert order("failover", B, ALL, IDLE, 1)[0] == "a"


def test_an_unknown_strategy_is_named_in_the_error():
    with pytest.raises(ValueError, match="'random' is not a strategy"):
        order("random", B, ALL, IDLE, 0)


members = st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8)


@given(members, st.data(), st.integers(min_value=0, max_value=10**6))
def test_every_order_is_the_up_members_once_each(group, data, turn):
    up = data.draw(st.sets(st.sampled_from(group))) if group else set()
    in_flight = {m: data.draw(st.integers(0, 5)) for m in group}
    for strategy in STRATEGIES:
        got = order(strategy, group, up, in_flight, turn, site="s")
        assert sorted(got) == sorted(up)
        if strategy == "least-connections" and got:
            assert in_flight[got[0]] == min(in_flight[m] for m in up)
            assert [in_flight[m] for m in got] == sorted(in_flight[m] for m in got)
        if strategy == "failover":
            assert got == [m for m in group if m in up]


@given(st.integers(min_value=1, max_value=8), st.integers(min_value=1, max_value=20),
       st.integers(min_value=0, max_value=10**6))
def test_round_robin_starts_at_each_member_once_in_n_turns(n, rounds, start):
    group = [f"m{i}" for i in range(n)]
    firsts = Counter(order("round-robin", group, set(group), IDLE, start + t)[0]
                     for t in range(n * rounds))
    assert firsts == dict.fromkeys(group, rounds)
