"""Plain-text explanations for the CLI: a profile's summary and why a URL takes its route.

Formatting only: decisions come from rules.py through Context, so what `route` prints is what
the proxy does.
"""

from __future__ import annotations

from anonproxy.config.models import BLOCK
from anonproxy.config.profiles import LoadedProfile
from anonproxy.exits.connect import Chain, Direct, Plan, TorExit
from anonproxy.policy.rules import Decision
from anonproxy.wire.address import Address
from anonproxy.wire.headers import IDENTIFYING, HeaderPolicy


def describe_exit(plans: dict[str, Plan], name: str, indent: str = "") -> list[str]:
    if name == BLOCK:
        return [f"{indent}block: refused (403 for HTTP, SOCKS reply 0x02)"]
    plan = plans[name]
    if isinstance(plan, Direct):
        where = f"from {plan.source}" if plan.source else "from this machine's default address"
        return [f"{indent}{name}: direct, {where}"]
    if isinstance(plan, TorExit):
        isolation = f"circuits isolated per {plan.isolation}"
        return [f"{indent}{name}: tor ({plan.spec.label()}), {isolation}"]
    if isinstance(plan, Chain):
        hops = " -> ".join(h.masked_url() for h in plan.hops)
        country = f" (declared country {plan.country})" if plan.country else ""
        plural = "s" if len(plan.hops) > 1 else ""
        return [f"{indent}{name}: {len(plan.hops)} hop{plural}: {hops}{country}"]
    fallback = (f", fallback {plan.fallback}" if plan.fallback
                else ", fails closed when all are down")
    lines = [f"{indent}{name}: pool of {', '.join(plan.members)} ({plan.strategy}{fallback})"]
    for member in plan.members:
        lines += describe_exit(plans, member, indent + "  ")
    return lines


def summarize(loaded: LoadedProfile, plans: dict[str, Plan]) -> list[str]:
    p = loaded.profile
    lines = [f"profile {loaded.name} ({loaded.path})", f"  listen   {p.listen}",
             f"  default  exit {p.default}", f"  geoip    {p.geoip}", f"  resolve  {p.resolve}"]
    if p.admin is not None:
        guard = ", password" if p.admin.password else ""
        lines.insert(2, f"  admin    http://{p.admin.address.authority(0)}/ (dashboard{guard})")
    for name in p.exits:
        for i, line in enumerate(describe_exit(plans, name)):
            lines.append(("  exit     " if i == 0 else "           ") + line)
    for number, rule in enumerate(p.rules, start=1):
        from anonproxy.policy.rules import rule_text

        lines.append(f"  rule {number:<3} {rule_text(rule)}")
    h = p.headers
    lines.append(
        f"  headers  user_agent={_policy(h.user_agent)}"
        f" accept_language={_policy(h.accept_language)}"
        f" referer={h.referer} cookie={h.cookie} client_hints={h.client_hints}"
    )
    return lines


def _policy(value) -> str:
    return value if isinstance(value, str) else "replace"


def _resolution(plans: dict[str, Plan], name: str, dest: Address) -> str:
    if dest.ip is not None:
        return "none needed: the destination is an address"
    if name == BLOCK:
        return "none: the destination is refused"
    plan = plans[name]
    if isinstance(plan, Direct):
        return f"{dest.host} is resolved by this machine's resolver (direct exit)"
    if isinstance(plan, Chain):
        return (f"{dest.host} is sent by name to the last hop ({plan.hops[-1]}), which resolves "
                "it: no local DNS lookup")
    if isinstance(plan, TorExit):
        return (f"{dest.host} is sent by name into Tor; the exit relay resolves it: "
                "no local DNS lookup")
    kinds = {_resolution(plans, m, dest) for m in plan.members}
    if len(kinds) == 1:
        return kinds.pop()
    return "depends on the pool member: " + "; ".join(sorted(kinds))


def explain_route(plans: dict[str, Plan], decision: Decision, dest: Address, scheme: str,
                  policy: HeaderPolicy, resolve: str) -> list[str]:
    carried = "plain HTTP" if scheme == "http" else "tunnelled: CONNECT or SOCKS5"
    lines = [f"destination  {dest} ({carried})"]
    if decision.rule is not None:
        lines.append(f"rule         {decision.rule.number}: {decision.rule.text}")
    else:
        lines.append("rule         none matched: the profile's default exit")
    if decision.country:
        lines.append(f"country      {decision.country} (GeoIP)")
    lines += ["exit         " + line if i == 0 else "             " + line
              for i, line in enumerate(describe_exit(plans, decision.exit))]
    lines.append(f"resolution   {_resolution(plans, decision.exit, dest)}")
    if resolve != "never" and dest.ip is None:
        where = "locally" if resolve == "local" else "through Tor (RESOLVE)"
        lines.append(f"             (resolve = \"{resolve}\": country and CIDR rules may look "
                     f"the name up {where})")
    if scheme == "http":
        lines.append("headers      removed: " + ", ".join(sorted(n.decode() for n in IDENTIFYING))
                     + ", hop-by-hop headers")
        changes = [f"Referer: {policy.referer}", f"client hints: {policy.client_hints}"]
        if policy.user_agent_replace is not None:
            changes.append("User-Agent: replaced")
        elif policy.user_agent == "strip":
            changes.append("User-Agent: removed")
        if policy.accept_language_replace is not None:
            changes.append("Accept-Language: replaced")
        if policy.cookie == "strip":
            changes.append("Cookie: removed")
        lines.append("             by policy: " + "; ".join(changes))
    else:
        lines.append("headers      not visible: the tunnel carries TLS (or other bytes) unchanged")
    return lines
