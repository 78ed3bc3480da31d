"""The router: from a destination to an exit decision and its reason, and what must never be
reached (pure: no I/O, no lookups).

Deciding is a sequence of explicit steps, each a plain function of what the caller passes in:
1. A special-use name (address.special_use) is decided from the name alone: `.onion` only ever
   goes to a Tor exit (the rules' own, or the profile's first one), anything else is refused.
   No later step may look it up.
2. The rules (rules.decide) decide without an address where they can. When a rule needs one
   and the profile says how to get it (`resolve = "local"` or `"tor"`), `decide` answers
   NEED_ADDRESS: the caller looks the name up (I/O, outside this module) and asks again with
   the address. Nothing here resolves.
3. `refusal` says why a decided destination must not be reached: one of the proxy's own
   services (by any local spelling), this machine under `exec --strict` unless a rule's cidrs
   name it, a link-local (cloud metadata) address unless the rule's cidrs name it, or a rule
   (or the default) that says `block`.
After a connection is made, `peer_refusal` (direct) and `hop_refusal` (through a chain) judge
what it really reached, with the same own-services list (own_services.py).

Invariants: a `block` refusal names the rule's number and text; what is refused here is refused
whatever the exit; `own` (what the proxy serves now) is passed in by the caller on each call, so
a router never holds stale ports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from anonproxy.policy import own_services
from anonproxy.policy.rules import (
    BLOCK,
    CompiledRule,
    Decision,
    IPAddress,
    _NeedAddress,
    decide,
)
from anonproxy.wire.address import (
    Address,
    is_loopback_host,
    is_unspecified_host,
    plain_ip,
    special_use,
    special_use_refusal,
)
from anonproxy.wire.errors import Forbidden

Owned = tuple[tuple[Address, str], ...]  # what the proxy serves, each with its kind


@dataclass(frozen=True, slots=True)
class Router:
    """One profile's routing: its rules, default, which exits reach onion names, how names may
    be resolved, and whether this machine may be a destination."""

    rules: tuple[CompiledRule, ...]
    default: str
    tor_exits: tuple[str, ...]  # exits that reach .onion names (Tor), in profile order
    resolve: str = "never"  # never | local | tor: whether a rule may ask for an address
    loopback_allowed: bool = True  # False (exec --strict): only where a rule's cidrs name it
    country_of: Callable[[IPAddress], str | None] = lambda ip: None

    def decide(self, dest: Address) -> Decision | _NeedAddress:
        """The exit for `dest` (steps 1 and 2 above), or NEED_ADDRESS when a rule needs an
        address and the profile lets the caller look it up; the caller then answers with
        `decide_with`. Raises Forbidden for a special-use name no exit of the profile may
        reach."""
        if special_use(dest.host) is not None:
            return self._decide_special(dest)
        return decide(self.rules, self.default, dest.host, dest.port,
                      country_of=self.country_of, may_resolve=self.resolve != "never")

    def decide_with(self, dest: Address, address: IPAddress | None) -> Decision:
        """The decision once the caller has answered NEED_ADDRESS with what its lookup found
        (None: nothing, and rules that need an address do not match)."""
        decision = decide(self.rules, self.default, dest.host, dest.port,
                          country_of=self.country_of, address=address)
        assert isinstance(decision, Decision)  # (no lookup is offered: never NEED_ADDRESS)
        return decision

    def _decide_special(self, dest: Address) -> Decision:
        """A special-use name, from the name alone: rules that need an address do not match it.
        A .onion name goes to the rules' exit if that is a Tor exit (or block), else to the
        profile's first Tor exit; anything else is Forbidden."""
        tor = self.tor_exits[0] if self.tor_exits else None
        refusal = special_use_refusal(dest.host, tor_exit=tor is not None)
        if refusal is not None:
            raise Forbidden(refusal)
        decision = self.decide_with(dest, None)
        if decision.exit != BLOCK and decision.exit not in self.tor_exits:
            assert tor is not None  # (special_use_refusal refuses every name without one)
            decision = Decision(tor, decision.rule, None)
        return decision

    def refusal(self, dest: Address, decision: Decision | None, own: Owned) -> str | None:
        """Why `dest` must not be reached although `decision` routes it (step 3), or None.
        With no decision (an exit forced by `fetch --exit`), only the safety checks apply."""
        rule = decision.rule if decision is not None else None
        reason = self.unsafe(dest, rule, own)
        if reason is None and decision is not None and decision.exit == BLOCK:
            where = f"rule {rule.number} ({rule.text})" if rule else "the profile's default"
            reason = f"{dest.host} is blocked by {where}"
        return reason

    def unsafe(self, dest: Address, rule: CompiledRule | None, own: Owned) -> str | None:
        """Loops (our own services, by any local spelling), this machine under strict, and
        link-local (cloud metadata) addresses unless `rule`'s cidrs name them."""
        reason = own_services.before_connect(dest, own)
        if reason is None:
            reason = self.local_refusal(dest, dest.host)
        ip = dest.ip
        if reason is None and ip is not None and ip.is_link_local and not (
            rule and rule.networks and any(ip in n for n in rule.networks)
        ):
            reason = (f"refusing link-local {dest} (cloud metadata lives there); a rule whose "
                      "cidrs name it may allow it")
        return reason

    def peer_refusal(self, dest: Address, peer: tuple[str, int], local_host: str,
                     own: Owned) -> str | None:
        """Why a direct connection to `dest` must not be used, now that we know what it
        reached (a name can resolve anywhere): one of our own services, this machine under
        strict, or a link-local address the destination did not name itself. None when fine."""
        refusal = own_services.after_connect(dest, peer, local_host, own)
        if refusal is not None:
            return refusal
        host = plain_ip(peer[0])
        local = host == plain_ip(local_host) or is_loopback_host(host)
        if (reason := self.local_refusal(dest, host, ours=local)) is not None:
            return reason
        ip = ipaddress.ip_address(host)
        if ip.is_link_local and dest.ip != ip:
            # (not which address: a web page reads this sentence, and our resolver's answer
            # for a name is not its to learn)
            return (f"refusing {dest}: it resolved to a link-local address (cloud metadata "
                    "lives there)")
        return None

    def hop_refusal(self, dest: Address, hop_local: bool, bound: Address | None,
                    own: Owned) -> str | None:
        """Why a tunnel to `dest` through a chain must not be used (own_services.through_hop):
        `hop_local`, its last hop runs on this machine; `bound`, the hop's SOCKS5 BND.ADDR."""
        return own_services.through_hop(dest, hop_local, bound, own)

    def local_refusal(self, dest: Address, reached: str, ours: bool = False) -> str | None:
        """Unless loopback is allowed: why `reached` (the host `dest` names, or the peer it
        connected to; `ours`: that peer is loopback or our own address) must not be used — it
        is this machine (loopback, ::ffff:127.x, 0.0.0.0, ::, localhost) and no rule that lets
        traffic through names it in its cidrs (and the destination's port, if it gives ports).
        None when it may be used."""
        if self.loopback_allowed:
            return None
        host = plain_ip(reached)
        if not (ours or is_loopback_host(host) or is_unspecified_host(host)):
            return None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:  # localhost, *.localhost
            ip = ipaddress.ip_address("127.0.0.1")
        if any(ip in net for r in self.rules
               if r.exit != BLOCK and (r.ports is None or dest.port in r.ports)
               for net in r.networks or ()):
            return None
        return (f"refusing {dest}: {ip} is this machine, and only a rule whose cidrs name it "
                "lets a program under exec --strict reach it")
