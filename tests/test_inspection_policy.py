"""policy/inspection.py as tables: which HTTPS destinations `[inspect]` opens (`hosts` less
`skip`, the patterns of rules' `domains`). Pure: the end-to-end side is tests/test_inspect.py."""

from __future__ import annotations

import pytest

from anonproxy.policy.inspection import Inspection

HOSTS = ["site.test", "*.shop.test", "re:api[0-9]+\\.test", "192.0.2.7"]
SKIP = ["login.shop.test", "*.bank.shop.test", "re:api9\\.test"]


def test_no_hosts_opens_nothing():
    assert Inspection.from_patterns([], []) is None
    assert Inspection.from_patterns([], ["site.test"]) is None  # skip alone opens nothing


@pytest.mark.parametrize(("host", "opened"), [
    ("site.test", True),
    ("SITE.Test.", True),  # any case, a trailing dot
    ("www.site.test", False),  # an exact pattern is that name only
    ("shop.test", True),  # `*.suffix` is the suffix and the names under it
    ("a.b.shop.test", True),
    ("notshop.test", False),
    ("api1.test", True),
    ("API42.test", True),
    ("api.test", False),
    ("192.0.2.7", True),
    ("192.0.2.8", False),
    ("other.test", False),
    # skip always wins
    ("login.shop.test", False),
    ("LOGIN.shop.test.", False),
    ("www.login.shop.test", True),  # an exact skip is that name only
    ("bank.shop.test", False),
    ("x.bank.shop.test", False),
    ("api9.test", False),
])
def test_hosts_less_skip(host, opened):
    inspection = Inspection.from_patterns(HOSTS, SKIP)
    assert inspection is not None and inspection.opens(host) is opened


def test_skip_wins_over_the_same_pattern_in_hosts():
    inspection = Inspection.from_patterns(["site.test"], ["site.test"])
    assert inspection is not None and not inspection.opens("site.test")


@pytest.mark.parametrize(("pattern", "address"), [
    ("*.0.2.7", "192.0.2.7"),
    ("re:.*", "192.0.2.7"),
    ("re:.*", "2001:db8::1"),
])
def test_an_address_is_opened_only_when_a_pattern_names_it_exactly(pattern, address):
    inspection = Inspection.from_patterns([pattern], [])
    assert inspection is not None and not inspection.opens(address)
