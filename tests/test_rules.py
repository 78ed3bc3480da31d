"""Rule decisions as tables (pure): first match wins, all matchers of a rule must hold, and a
hostname is never resolved unless the profile allows it and a rule needs it."""

from __future__ import annotations

import ipaddress

import pytest

from anonproxy.config.profiles import ProfileError, parse_profile
from anonproxy.policy.rules import (
    NEED_ADDRESS,
    Decision,
    compile_rules,
    decide,
    domain_pattern_problem,
)

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
    assert RULES[3].text == 'countries = ["DE"] -> exit "de"'


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


# --- properties the mutation run found untested --------------------------------------------------

def _table(rules, default="tor"):
    profile = {"default": default, "exits": {"tor": {}, "a": {}, "b": {}, "c": {}}, "rules": rules}
    return compile_rules(parse_profile(profile, "t.toml").rules)


@pytest.mark.parametrize("rules", [_table, tuple], ids=["indexed", "linear"])
def test_a_hostname_meets_a_cidr_only_rule_only_through_an_address_the_caller_has(rules):
    table = _table([{"cidrs": ["10.0.0.0/8"], "exit": "a"}, {"ports": [443], "exit": "b"}])
    table = table if rules is _table else tuple(table)
    ten = ipaddress.ip_address("10.9.9.9")

    def decide_(host, **kw):
        return decide(table, "tor", host, 443, country_of=COUNTRIES.get, **kw)

    assert decide_("intranet.example").exit == "b"  # no address, no lookup: the CIDR rule is skipped
    assert decide_("intranet.example", may_resolve=True) is NEED_ADDRESS
    assert decide_("intranet.example", address=ten).exit == "a"
    assert decide_("intranet.example", address=ipaddress.ip_address("11.0.0.1")).exit == "b"
    assert decide_("10.0.0.1").exit == "a" and decide_("9.255.255.255").exit == "b"


@pytest.mark.parametrize("cidr, inside, outside", [
    ("10.0.0.0/8", ["10.0.0.0", "10.255.255.255"], ["9.255.255.255", "11.0.0.0"]),
    ("192.168.4.0/22", ["192.168.4.0", "192.168.7.255"], ["192.168.3.255", "192.168.8.0"]),
    ("192.0.2.7/32", ["192.0.2.7"], ["192.0.2.6", "192.0.2.8"]),
    ("0.0.0.0/0", ["0.0.0.0", "255.255.255.255"], ["::1"]),
    ("2001:db8::/33", ["2001:db8::1", "2001:db8:7fff::1"], ["2001:db8:8000::", "2001:db9::"]),
    ("::1/128", ["::1"], ["::2", "127.0.0.1"]),
])
def test_a_cidr_rule_holds_exactly_the_addresses_its_mask_covers(cidr, inside, outside):
    table = _table([{"cidrs": [cidr], "exit": "a"}])
    for rules in (table, tuple(table)):
        for host in inside:
            assert decide(rules, "tor", host, 80, country_of=COUNTRIES.get).exit == "a", host
        for host in outside:
            assert decide(rules, "tor", host, 80, country_of=COUNTRIES.get).exit == "tor", host


@pytest.mark.parametrize("pattern", ["a*b.com", "*example.com", "x.*.com", "**.com", "*.*.com",
                                     "*", "exa mple.com", "re:(", "*.-bad.example", "*.", "-x.com"])
def test_a_domain_pattern_that_could_never_match_is_refused_when_the_profile_loads(pattern):
    problem = domain_pattern_problem(pattern)
    assert problem is not None
    if "*" in pattern[2:] or (pattern.startswith("*") and not pattern.startswith("*.")):
        assert problem.startswith("a wildcard may only start a pattern"), problem
    with pytest.raises(ProfileError, match=r"rules\[1\]\.domains"):
        parse_profile({"exits": {"a": {}}, "rules": [{"domains": [pattern], "exit": "a"}]}, "t.toml")


@pytest.mark.parametrize("pattern", ["example.com", "*.example.com", "re:.*\\.example", "x_y.com"])
def test_usable_domain_patterns_are_accepted(pattern):
    assert domain_pattern_problem(pattern) is None


@pytest.mark.parametrize("host, hit", [
    ("example.com", True), ("a.b.example.com", True), ("EXAMPLE.com", False),
    ("notexample.com", False), ("com", False), ("example.com.evil", False),
])
def test_a_wildcard_covers_the_name_and_everything_under_it_only(host, hit):
    table = _table([{"domains": ["*.Example.COM."], "exit": "a"}])
    for rules in (table, tuple(table)):
        assert (decide(rules, "tor", host, 80, country_of=COUNTRIES.get).exit == "a") is hit


def test_a_country_is_looked_up_once_and_reported_with_the_default():
    calls = []
    def country_of(ip):
        calls.append(ip)
        return "FR"
    table = _table([{"countries": ["DE"], "exit": "a"}, {"countries": ["AT"], "exit": "b"}])
    for rules in (table, tuple(table)):
        calls.clear()
        assert decide(rules, "tor", "192.0.2.9", 80, country_of=country_of) == Decision(
            "tor", None, "FR")
        assert len(calls) == 1


def test_ports_only_rules_are_always_candidates_and_keep_rule_order():
    table = _table([{"ports": [8080], "exit": "a"}, {"domains": ["x.example"], "exit": "b"},
                    {"ports": [80], "exit": "c"}])
    for rules in (table, tuple(table)):
        exits = [decide(rules, "tor", host, port, country_of=COUNTRIES.get).exit
                 for host, port in (("x.example", 80), ("x.example", 8080), ("y.example", 80),
                                    ("y.example", 81))]
        assert exits == ["b", "a", "c", "tor"]


def test_the_need_for_an_address_reads_as_such_in_a_log_or_a_failed_assertion():
    assert repr(NEED_ADDRESS) == "NEED_ADDRESS"
