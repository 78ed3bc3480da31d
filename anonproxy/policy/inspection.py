"""Which HTTPS destinations the proxy opens: the profile's `[inspect]` `hosts`, less `skip`.

Patterns are those of rules' `domains` (exact, `*.suffix`, `re:`), matched the same way
(rules.DomainSet). A destination given as an address is opened only when a pattern names that
address exactly.

Invariant: `skip` always wins; with no `hosts` nothing is opened (None: inspection is off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from anonproxy.policy.rules import DomainSet


@dataclass(frozen=True, slots=True)
class Inspection:
    hosts: DomainSet
    skip: DomainSet

    @classmethod
    def from_patterns(cls, hosts: Sequence[str], skip: Sequence[str]) -> Inspection | None:
        """The compiled `[inspect]` section, or None when it opens nothing."""
        if not hosts:
            return None
        return cls(DomainSet.from_patterns(hosts), DomainSet.from_patterns(skip))

    def opens(self, host: str) -> bool:
        """Whether a TLS stream to `host` is opened at the proxy."""
        name = host.lower().rstrip(".")
        if ":" in name or name.replace(".", "").isdigit():  # an address: named exactly, or not
            return name in self.hosts.exact and name not in self.skip.exact
        return self.hosts.matches(name) and not self.skip.matches(name)
