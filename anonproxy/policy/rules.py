"""Routing rules: which exit a destination leaves through (pure).

A rule matches on any of: domain patterns (`example.com` exact, `*.example.com` the name and
everything under it, `re:<regex>` a full match), CIDRs, ports, and the destination's country.
Every matcher a rule gives must hold; the first rule that matches wins; no match -> default.

Invariant (no DNS leak): deciding never resolves a name. A country or CIDR rule matches a
hostname only through an address the caller already has; when the profile allows a local lookup
and a rule needs one, `decide` returns NEED_ADDRESS and the caller resolves and asks again.
Rules that come before are decided without any lookup, so a name matched by a domain rule is
never resolved.

compile_rules builds a RuleIndex (rule_index.py) once per profile, so deciding stays flat as
profiles grow; decide checks only the candidates it returns, with the same per-rule logic as a
linear scan (which is what a plain tuple of rules gets: the reference the tests compare with).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from anonproxy.policy.rule_index import RuleIndex
from anonproxy.wire.address import AddressError, check_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

BLOCK = "block"  # the exit name of rules (and defaults) that refuse a destination


def domain_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable domain pattern, or None."""
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as error:
            return f"not a valid regular expression ({error})"
        return None
    name = pattern.removeprefix("*.")
    if "*" in name:
        return "a wildcard may only start a pattern, as in *.example.com (or use re:...)"
    try:
        check_host(name)
    except AddressError:
        return "not a host name; write example.com, *.example.com or re:<regex>"
    return None


@dataclass(frozen=True, slots=True)
class DomainSet:
    exact: frozenset[str]
    suffixes: frozenset[str]
    regexes: tuple[re.Pattern[str], ...]

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> DomainSet:
        exact, suffixes, regexes = set(), set(), []
        for p in patterns:
            if p.startswith("re:"):
                regexes.append(re.compile(p[3:], re.IGNORECASE))
            elif p.startswith("*."):
                suffixes.add(p[2:].lower().rstrip("."))
            else:
                exact.add(p.lower().rstrip("."))
        return cls(frozenset(exact), frozenset(suffixes), tuple(regexes))

    def matches(self, host: str) -> bool:
        if host in self.exact:
            return True
        if self.suffixes:
            name = host
            while True:
                if name in self.suffixes:
                    return True
                dot = name.find(".")
                if dot < 0:
                    break
                name = name[dot + 1 :]
        return any(r.fullmatch(host) for r in self.regexes)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    number: int  # 1-based, as the user counts
    text: str
    exit: str
    domains: DomainSet | None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None
    ports: frozenset[int] | None
    countries: frozenset[str] | None

    @property
    def needs_address(self) -> bool:
        return self.networks is not None or self.countries is not None


@dataclass(frozen=True, slots=True)
class Decision:
    exit: str
    rule: CompiledRule | None  # None: the profile's default
    country: str | None = None  # the destination's country, when it was looked up


class _NeedAddress:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_ADDRESS"


NEED_ADDRESS = _NeedAddress()


def rule_text(rule: Any) -> str:
    parts = []
    for key in ("domains", "cidrs", "ports", "countries"):
        value = getattr(rule, key)
        if value:
            items = ", ".join(f'"{v}"' if key != "ports" else str(v) for v in value)
            parts.append(f"{key} = [{items}]")
    return f'{" ".join(parts)} -> exit "{rule.exit}"'


class RuleTable(tuple["CompiledRule", ...]):
    """The compiled rules in order (a tuple), with their index."""

    lookup: RuleIndex


def compile_rules(rules: Iterable[Any]) -> RuleTable:
    """From profile rules (objects with domains, cidrs, ports, countries, exit)."""
    table = RuleTable(
        CompiledRule(
            number=i,
            text=rule_text(r),
            exit=r.exit,
            domains=DomainSet.from_patterns(r.domains) if r.domains else None,
            networks=tuple(r.cidrs) if r.cidrs else None,
            ports=frozenset(r.ports) if r.ports else None,
            countries=frozenset(r.countries) if r.countries else None,  # upper-cased by config
        )
        for i, r in enumerate(rules, start=1)
    )
    table.lookup = RuleIndex(table)
    return table


def decide(
    rules: tuple[CompiledRule, ...],
    default: str,
    host: str,
    port: int,
    *,
    country_of: Callable[[IPAddress], str | None],
    address: IPAddress | None = None,
    may_resolve: bool = False,
) -> Decision | _NeedAddress:
    """The exit for host:port. `address`: an address for a hostname the caller already has.

    A rule is tried in two steps: what the name and port show (`_name_and_port_match`), then
    what only an address shows (networks, then the country, looked up once per call and only
    when a rule gets that far)."""
    name, known = _name_and_address(host, address)
    country: str | None = None
    looked_up = False
    index = getattr(rules, "lookup", None)
    if index is not None:
        rules = index.candidates(name, known, port, may_resolve)
    for rule in rules:
        if not _name_and_port_match(rule, name, port):
            continue
        if not rule.needs_address:
            return Decision(rule.exit, rule, country)
        if known is None:
            if may_resolve:
                return NEED_ADDRESS
            continue  # a hostname has no address and may not get one: no match
        if not _in_networks(rule, known):
            continue
        if rule.countries is not None:
            if not looked_up:
                country, looked_up = country_of(known), True
            if country not in rule.countries:
                continue
        return Decision(rule.exit, rule, country)
    return Decision(default, None, country)


def _name_and_address(host: str, address: IPAddress | None) -> tuple[str | None, IPAddress | None]:
    """(the hostname, the address the caller has for it), or (None, the address) when `host`
    is an IP literal (then `address` is not used)."""
    try:
        return None, ipaddress.ip_address(host)
    except ValueError:
        return host, address


def _name_and_port_match(rule: CompiledRule, name: str | None, port: int) -> bool:
    """Whether the rule's ports and domains (those it gives) hold; a domain needs a name."""
    return ((rule.ports is None or port in rule.ports)
            and (rule.domains is None or (name is not None and rule.domains.matches(name))))


def _in_networks(rule: CompiledRule, known: IPAddress) -> bool:
    """Whether the rule's networks (when it gives some) hold the address."""
    return rule.networks is None or any(known in net for net in rule.networks)
