"""Rule decisions as tables (pure): first match wins, all matchers of a rule must hold, and a
hostname is never resolved unless the profile allows it and a rule needs it."""

from __future__ import annotations

import ipaddress

import pytest

from anonproxy.profiles import parse_profile
from anonproxy.rules import NEED_ADDRESS, Decision, compile_rules, decide

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
