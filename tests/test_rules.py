"""Rule decisions as tables (pure): first match wins, all matchers of a rule must hold, and a
hostname is never resolved unless the profile allows it and a rule needs it."""

from __future__ import annotations

import ipaddress

import pytest

from anonproxy.config.profiles import parse_profile
from anonproxy.policy.rules import NEED_ADDRESS, Decision, compile_rules, decide

PROFILE = {
    "default": "tor",
    "exits": {"tor": {}, "uk": {}, "home": {}, "de": {}, "re": {}},
    "rules": [
        {"domains": ["*.co.uk", "bbc.com"], "exit": "uk"},
        {"domains": ["*.doubleclick.net"], "exit": "block"},
        {"cidrs": ["10.0.0.0/8", "fd00::/8"], "ports": [22, 443], "exit": "home"},
        {"countries": ["DE"], "exit": "de"},
        {"domains": ["re:^api[0-9]+\\.example\\.org$"], "exit": "re"},
    ],
}
COUNTRIES = {ipaddress.ip_address("192.0.2.1"): "DE", ipaddress.ip_address("192.0.2.2"): "FR"}
RULES = compile_rules(parse_profile(PROFILE, "t.toml").rules)


def route(host, port=443, **kw):
    return decide(RULES, "tor", host, port, country_of=COUNTRIES.get, **kw)


@pytest.mark.parametrize("host, port, exit_, rule", [
    ("www.bbc.co.uk", 443, "uk", 1),
    ("co.uk", 80, "uk", 1),
    ("bbc.com", 80, "uk", 1),
    ("www.bbc.com", 80, "tor", None),
    ("BBC.COM", 80, "tor", None),          # hosts arrive lower-cased by the parser
    ("ad.doubleclick.net", 443, "block", 2),
    ("10.1.2.3", 22, "home", 3),
    ("10.1.2.3", 80, "tor", None),         # the CIDR holds, the port does not
    ("fd00::1", 443, "home", 3),
    ("192.0.2.1", 80, "de", 4),
    ("192.0.2.2", 80, "tor", None),
    ("api12.example.org", 80, "re", 5),
    ("xapi12.example.org", 80, "tor", None),
])
def test_first_matching_rule_wins(host, port, exit_, rule):
    decision = route(host, port)
    assert decision.exit == exit_
    assert (decision.rule.number if decision.rule else None) == rule


def test_country_rules_never_trigger_a_local_dns_lookup():
    decision = route("example.de")
    assert decision == Decision("tor", None, None)


def test_a_local_lookup_is_asked_for_only_when_a_rule_needs_it():
    assert route("www.bbc.co.uk", may_resolve=True).exit == "uk"  # decided before any lookup
    assert route("example.de", may_resolve=True) is NEED_ADDRESS
    d = route("example.de", address=ipaddress.ip_address("192.0.2.1"))
    assert d.exit == "de" and d.country == "DE"


def test_rule_text_reads_like_the_profile():
    assert RULES[0].text == 'domains = ["*.co.uk", "bbc.com"] -> exit "uk"'
    assert RULES[2].text == 'cidrs = ["10.0.0.0/8", "fd00::/8"] ports = [22, 443] -> exit "home"'


# --- the index gives the linear scan's answer --------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_LABELS = ["a", "b", "ex", "co"]
_NAMES = st.lists(st.sampled_from(_LABELS), min_size=1, max_size=3).map(".".join)
_PATTERNS = st.one_of(
    _NAMES,
    _NAMES.map(lambda n: "*." + n),
    st.sampled_from(["re:^a\\..*$", "re:.*\\.co$", "re:b"]),
)
_V4 = st.builds(lambda a, b, n: ipaddress.ip_network(f"10.{a}.{b}.0/{n}", strict=False),
                st.integers(0, 3), st.integers(0, 3), st.sampled_from([8, 15, 16, 24, 32]))
_V6 = st.builds(lambda a, n: ipaddress.ip_network(f"fd00:{a}::/{n}", strict=False),
                st.integers(0, 3), st.sampled_from([8, 32, 48, 128]))
_RULE = st.builds(
    lambda d, c, p, k, e: SimpleNamespace(domains=d, cidrs=c, ports=p, countries=k, exit=e),
    st.none() | st.lists(_PATTERNS, min_size=1, max_size=3),
    st.none() | st.lists(_V4 | _V6, min_size=1, max_size=3),
    st.none() | st.lists(st.sampled_from([22, 80, 443]), min_size=1, max_size=2),
    st.none() | st.lists(st.sampled_from(["DE", "FR"]), min_size=1, max_size=2),
    st.sampled_from(["x", "y", "z"]),
)
_ADDRESSES = st.builds(lambda a, b, c: ipaddress.ip_address(f"10.{a}.{b}.{c}"),
                       st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)) | st.builds(
    lambda a, c: ipaddress.ip_address(f"fd00:{a}::{c}"), st.integers(0, 3), st.integers(0, 2))
_HOSTS = _NAMES | _ADDRESSES.map(str)


def _country(ip):
    return ("DE", "FR", None)[int(ip) % 3]


@settings(max_examples=400, deadline=None)
@given(rules=st.lists(_RULE, max_size=12), host=_HOSTS, port=st.sampled_from([22, 80, 443, 8080]),
       address=st.none() | _ADDRESSES, may_resolve=st.booleans())
def test_indexed_decision_equals_the_linear_scan(rules, host, port, address, may_resolve):
    table = compile_rules(rules)
    linear = tuple(table)  # a plain tuple has no index: decide scans it rule by rule
    kw = {"country_of": _country, "address": address, "may_resolve": may_resolve}
    assert decide(table, "default", host, port, **kw) == decide(linear, "default", host, port, **kw)
