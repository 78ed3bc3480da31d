"""An index over a profile's rules, so a decision costs about the same with 10 rules or 10,000.

Built once per profile (compile_rules). For a destination it returns the candidate rules, in
rule order: every rule that could match it or ask for an address; rules.decide then checks each
candidate exactly as the linear scan would, so first-match-wins order is kept by construction.

- Domain patterns: `name` and `*.name` live in hash tables keyed by the name (a suffix trie
  flattened into one dict per kind); a host is looked up once, then once per parent domain.
  `re:` patterns cannot be indexed: rules that have them are always candidates.
- CIDRs: one hash table per (IP version, prefix length), keyed by the network's number; an
  address is masked once per prefix length the profile uses (at most 33 for IPv4, 129 for IPv6,
  in practice a handful). CIDRs nest or are disjoint, so this finds exactly the networks that
  contain the address.
- Rules with neither domains nor CIDRs (ports or countries only) are always candidates.
- A rule with domains is a candidate only when its domains match; CIDRs and the rest are then
  checked by decide. A rule with CIDRs and no domains is a candidate when a CIDR holds the
  address, or, with no address yet and a lookup allowed, when it is the first such rule whose
  ports allow the port (it answers NEED_ADDRESS; no later one could be reached).

Pure: no I/O, no DNS.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anonproxy.policy.rules import CompiledRule


class RuleIndex:
    __slots__ = ("rules", "exact", "suffix", "always", "nets", "need_address")

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = rules
        exact: defaultdict[str, list[int]] = defaultdict(list)
        suffix: defaultdict[str, list[int]] = defaultdict(list)
        always: list[int] = []
        nets: dict[tuple[int, int], defaultdict[int, list[int]]] = {}
        need_address: list[int] = []  # CIDR rules without domains, in order
        for i, rule in enumerate(rules):
            if rule.domains is not None:
                if rule.domains.regexes:
                    always.append(i)
                    continue
                for name in rule.domains.exact:
                    exact[name].append(i)
                for name in rule.domains.suffixes:
                    suffix[name].append(i)
            elif rule.networks is not None:
                need_address.append(i)
                for net in rule.networks:
                    key = (net.version, net.prefixlen)
                    nets.setdefault(key, defaultdict(list))[int(net.network_address)].append(i)
            else:
                always.append(i)
        self.exact, self.suffix, self.always = dict(exact), dict(suffix), always
        # per version: (prefix length, shift, table), longest first (any order is correct)
        self.nets: dict[int, list[tuple[int, dict[int, list[int]]]]] = {4: [], 6: []}
        for (version, length), table in sorted(nets.items(), key=lambda kv: -kv[0][1]):
            bits = 32 if version == 4 else 128
            self.nets[version].append((bits - length, dict(table)))
        self.need_address = need_address

    def candidates(self, name: str | None, known: IPv4Address | IPv6Address | None, port: int,
                   may_resolve: bool) -> list[CompiledRule]:
        """The rules to check, in rule order (see the module docstring)."""
        found: set[int] = set(self.always)
        if name is not None:
            hits = self.exact.get(name)
            if hits:
                found.update(hits)
            if self.suffix:
                label = name
                while True:
                    hits = self.suffix.get(label)
                    if hits:
                        found.update(hits)
                    dot = label.find(".")
                    if dot < 0:
                        break
                    label = label[dot + 1 :]
        if known is not None:
            number = int(known)
            for shift, table in self.nets[known.version]:
                hits = table.get(number >> shift << shift)
                if hits:
                    found.update(hits)
        elif may_resolve:
            for i in self.need_address:
                ports = self.rules[i].ports
                if ports is None or port in ports:
                    found.add(i)
                    break
        rules = self.rules
        return [rules[i] for i in sorted(found)]
