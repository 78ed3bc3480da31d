"""The router as tables (pure): destination -> decision, the order of its steps, and what it
refuses before and after a connection. No sockets, no lookups: where a rule needs an address
the router says NEED_ADDRESS and the test answers, as the proxy's Context does."""

from __future__ import annotations

import ipaddress

import pytest

from anonproxy.config.profiles import parse_profile
from anonproxy.policy.router import Router
from anonproxy.policy.rules import NEED_ADDRESS, Decision, compile_rules
from anonproxy.wire.address import Address, check_host
from anonproxy.wire.errors import Forbidden

PROFILE = {
    "default": "direct",
    "exits": {"direct": {}, "tor": {}, "tor2": {}, "home": {}, "de": {}},
    "rules": [
        {"domains": ["*.onion"], "exit": "tor2"},
        {"domains": ["ads.example"], "exit": "block"},
        {"cidrs": ["10.0.0.0/8", "169.254.1.0/24"], "exit": "home"},
        {"countries": ["DE"], "exit": "de"},
        {"cidrs": ["127.0.0.0/8"], "ports": [9999], "exit": "direct"},
    ],
}
RULES = compile_rules(parse_profile(PROFILE, "t.toml").rules)
COUNTRIES = {ipaddress.ip_address("192.0.2.1"): "DE"}
LISTENER = Address("127.0.0.1", 8118)
OWN = ((LISTENER, "listener"), (Address("127.0.0.1", 8119), "dashboard"))


def router(resolve="never", tor=("tor", "tor2"), loopback=True, rules=RULES) -> Router:
    return Router(rules, "direct", tor, resolve, loopback, COUNTRIES.get)


def ip(text: str):
    return ipaddress.ip_address(text)


@pytest.mark.parametrize("resolve", ["local", "tor"])
def test_router_asks_for_an_address_only_when_a_rule_needs_one(resolve):
    r = router(resolve)
    assert r.decide(Address("example.org", 443)) is NEED_ADDRESS
    found = r.decide_with(Address("example.org", 443), ip("192.0.2.1"))
    assert (found.exit, found.rule.number, found.country) == ("de", 4, "DE")
    nothing = r.decide_with(Address("example.org", 443), None)
    assert (nothing.exit, nothing.rule) == ("direct", None)
    # a rule that matches by name first decides without asking
    blocked = r.decide(Address("ads.example", 80))
    assert isinstance(blocked, Decision) and blocked.exit == "block"


def test_router_never_asks_when_the_profile_forbids_lookups():
    decision = router("never").decide(Address("example.org", 443))
    assert isinstance(decision, Decision) and decision.exit == "direct"
    assert router("never").decide(Address("192.0.2.1", 443)).exit == "de"  # an address needs none


@pytest.mark.parametrize("resolve", ["never", "local", "tor"])
def test_special_use_names_are_decided_before_any_lookup(resolve):
    """Even with lookups allowed and address rules first, a .onion name is decided from the
    name: never NEED_ADDRESS (which would hand it to a resolver)."""
    rules = compile_rules(parse_profile({**PROFILE, "rules": [
        {"cidrs": ["0.0.0.0/0"], "exit": "home"}, *PROFILE["rules"][1:]]}, "t.toml").rules)
    decision = router(resolve, rules=rules).decide(Address("abc.onion", 80))
    assert isinstance(decision, Decision) and decision.exit == "tor"


@pytest.mark.parametrize("host, tor, expected", [
    ("abc.onion", ("tor", "tor2"), "tor2"),   # the rules' exit is a Tor exit: kept
    ("abc.onion", ("tor",), "tor"),           # the rules' exit is not Tor: the first Tor exit
    ("x.onion", ("tor2", "tor"), "tor2"),
])
def test_onion_names_only_ever_go_to_a_tor_exit(host, tor, expected):
    assert router(tor=tor).decide(Address(host, 80)).exit == expected


def test_blocked_onion_stays_blocked():
    rules = compile_rules(parse_profile({**PROFILE, "rules": [
        {"domains": ["*.onion"], "exit": "block"}]}, "t.toml").rules)
    assert router(rules=rules).decide(Address("a.onion", 80)).exit == "block"


@pytest.mark.parametrize("host, tor, words", [
    ("abc.onion", (), "this profile has none"),
    ("a.exit", ("tor",), "a.exit"),
    ("printer.local", ("tor",), "printer.local"),
    ("onion", ("tor",), "names no host"),
])
def test_special_use_names_are_refused_without_a_tor_exit_or_always(host, tor, words):
    with pytest.raises(Forbidden) as refused:
        router(tor=tor).decide(Address(host, 80))
    assert words in refused.value.message


def test_block_refusal_names_the_rule_number_and_text():
    r = router()
    decision = r.decide(Address("ads.example", 80))
    assert r.refusal(Address("ads.example", 80), decision, OWN) == \
        'ads.example is blocked by rule 2 (domains = ["ads.example"] -> exit "block")'
    default_block = Router(RULES, "block", (), "never", True, COUNTRIES.get)
    other = default_block.decide(Address("other.example", 80))
    assert "blocked by the profile's default" in default_block.refusal(
        Address("other.example", 80), other, OWN)
    assert r.refusal(Address("fine.example", 80), r.decide(Address("fine.example", 80)),
                     OWN) is None


@pytest.mark.parametrize("host, port", [
    ("127.0.0.1", 8118), ("localhost", 8118), ("::ffff:127.0.0.1", 8118), ("0.0.0.0", 8118),
    ("127.0.0.1", 8119),
])
def test_router_refuses_the_proxys_own_services_by_any_spelling(host, port):
    dest = Address(check_host(host), port)  # as the parsers give it
    assert r_refusal(dest) is not None
    assert r_refusal(Address(dest.host, 8120)) is None  # another port of this machine is fine


def r_refusal(dest: Address, rule=None, loopback=True) -> str | None:
    return router(loopback=loopback).unsafe(dest, rule, OWN)


def test_link_local_is_refused_unless_the_rules_cidrs_name_it():
    assert "link-local" in r_refusal(Address("169.254.169.254", 80))
    home = RULES[2]
    assert r_refusal(Address("169.254.1.5", 80), home) is None
    assert "link-local" in r_refusal(Address("169.254.169.254", 80), home)  # not in its cidrs
    decision = router().decide(Address("169.254.1.5", 80))
    assert router().refusal(Address("169.254.1.5", 80), decision, OWN) is None


@pytest.mark.parametrize("host", ["127.0.0.2", "localhost", "0.0.0.0", "::1", "::ffff:127.0.0.9",
                                  "app.localhost"])
def test_strict_refuses_this_machine_unless_a_rule_names_it(host):
    dest = Address(check_host(host), 80)
    assert "exec --strict" in r_refusal(dest, loopback=False)
    assert r_refusal(dest, loopback=True) is None
    # rule 5 names 127.0.0.0/8 for port 9999 only (localhost stands for 127.0.0.1)
    on_its_port = router(loopback=False).local_refusal(Address(dest.host, 9999), dest.host)
    assert (on_its_port is None) == (host in ("127.0.0.2", "localhost", "::ffff:127.0.0.9",
                                              "app.localhost"))


def test_strict_ignores_blocking_rules_naming_this_machine():
    rules = compile_rules(parse_profile({**PROFILE, "rules": [
        {"cidrs": ["127.0.0.0/8"], "exit": "block"}]}, "t.toml").rules)
    r = router(loopback=False, rules=rules)
    assert r.local_refusal(Address("127.0.0.1", 80), "127.0.0.1") is not None
    assert r.local_refusal(Address("example.org", 80), "192.0.2.7") is None


def test_peer_refusal_judges_what_a_direct_connection_reached():
    r = router()
    assert "proxy itself" in r.peer_refusal(Address("me.example", 8118), ("127.0.0.1", 8118),
                                            "127.0.0.1", OWN)
    refusal = r.peer_refusal(Address("meta.example", 80), ("169.254.169.254", 80), "10.0.0.2",
                             OWN)
    assert "link-local" in refusal and "169.254" not in refusal  # (a page reads it)
    assert r.peer_refusal(Address("169.254.169.254", 80), ("169.254.169.254", 80), "10.0.0.2",
                          OWN) is None  # named by the destination itself: unsafe() decided
    assert r.peer_refusal(Address("ok.example", 80), ("192.0.2.9", 80), "10.0.0.2", OWN) is None
    strict = router(loopback=False)
    assert "exec --strict" in strict.peer_refusal(Address("a.example", 80), ("192.0.2.50", 80),
                                                  "192.0.2.50", OWN)  # our own address
    assert strict.peer_refusal(Address("a.example", 80), ("192.0.2.50", 80), "192.0.2.51",
                               OWN) is None  # another machine


def test_hop_refusal_on_a_local_hop_by_port():
    r = router()
    assert "dashboard" in r.hop_refusal(Address("dash.example", 8119), True, None, OWN)
    assert r.hop_refusal(Address("dash.example", 8119), False, None, OWN) is None
    assert r.hop_refusal(Address("dash.example", 443), True, None, OWN) is None
