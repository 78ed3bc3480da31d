"""Plain-text explanations for the CLI: a profile's summary and why a URL takes its route.

Formatting only: decisions come from rules.py through Context and from the block lists
(policy/blocklists.py), so what `route` prints is what the proxy does; each exit says what it
is and where it resolves names (Plan.summary_lines and Plan.resolution, exits/base.py), so
nothing here knows the kinds.
"""

from __future__ import annotations

from collections.abc import Mapping

from anonproxy.config.models import BLOCK
from anonproxy.config.profiles import LoadedProfile
from anonproxy.config.reverse import Reverse
from anonproxy.exits.base import Plan
from anonproxy.policy.blocklists import Blocker, Verdict, http_request
from anonproxy.policy.rules import Decision
from anonproxy.wire.address import Address
from anonproxy.wire.headers import IDENTIFYING, HeaderPolicy


def describe_exit(plans: Mapping[str, Plan], name: str, indent: str = "") -> list[str]:
    """What `check` and `route` say of exit `name`, as its kind describes itself."""
    if name == BLOCK:
        return [f"{indent}block: refused (403 for HTTP, SOCKS reply 0x02)"]
    return plans[name].summary_lines(plans, indent)


def summarize(loaded: LoadedProfile, plans: Mapping[str, Plan], *,
              bound: tuple[Address, Address | None] | None = None,
              lists: bool = False) -> list[str]:
    """The profile in a few lines. `bound`: the listener's and the dashboard's addresses as
    really bound (serve, after --listen, --admin and port 0; None: no dashboard), shown
    instead of the profile's. `lists` (check): each block list, and its lines not
    understood."""
    p = loaded.profile
    listen, where = bound if bound is not None else (
        p.listen if p.forwarding else "off (no forward proxy: the reverse entries alone)",
        p.admin.address if p.admin is not None else None)
    lines = [f"profile {loaded.name} ({loaded.path})", f"  listen   {listen}",
             f"  default  exit {p.default}", f"  geoip    {p.geoip}", f"  resolve  {p.resolve}"]
    if p.forwarding:  # who may use the port (inbound/listener.py)
        lines.insert(2, "  clients  " + (
            "those with the profile's credentials (auth)" if p.auth is not None
            else "any local account's programs (local_accounts)" if p.local_accounts == "any"
            else "this account's programs only (other local accounts: 403)"
            + ("; other machines in allow" if p.allow else "")))
    if where is not None:
        guard = ", password" if p.admin is not None and p.admin.password else ""
        lines.insert(2, f"  admin    http://{where.authority(0)}/ (dashboard{guard})")
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
    if p.inspect.hosts:
        skip = f" (skip {', '.join(p.inspect.skip)})" if p.inspect.skip else ""
        lines.append(f"  inspect  {', '.join(p.inspect.hosts)}{skip}; sites verified against "
                     f"{p.inspect.ca_bundle}")
    lines += [f"  reverse {number:<2} {reverse_text(entry)}"
              for number, entry in enumerate(p.reverse, start=1)]
    if lists and loaded.blocker is not None:
        lines += summarize_blocklists(loaded.blocker)
    return lines


def reverse_text(entry: Reverse) -> str:
    """A [[reverse]] entry on one line: where it listens, its backends and strategy, and what
    else is set (files as written; the password never)."""
    said = [f"{entry.listen} -> {', '.join(entry.backends)} ({entry.strategy})"]
    if entry.hosts is not None:
        said.append(f"hosts {', '.join(entry.hosts)}")
    if entry.tls is not None:
        said.append(f"tls {entry.tls.cert} {entry.tls.key}")
    if entry.auth is not None:
        said.append(f"auth Basic (user {entry.auth.username})")
    if entry.health is not None:
        said.append(f"health GET {entry.health.path}")
    said += [word for word, on in (("cache", entry.cache), ("forwarded", entry.forwarded)) if on]
    if entry.onion is not None:
        onion = entry.onion
        n = len(onion.clients)
        extra = [f"{n} authorized client{'' if n == 1 else 's'}"] if n else []
        extra += [f"at most {onion.max_streams} streams a circuit"] if onion.max_streams else []
        said.append(f"onion through exit {onion.tor} (key {onion.key}"
                    + "".join(f", {e}" for e in extra) + ")")
    return "; ".join(said)


def _policy(value) -> str:
    return value if isinstance(value, str) else "replace"


def _resolution(plans: Mapping[str, Plan], name: str, dest: Address) -> str:
    if dest.ip is not None:
        return "none needed: the destination is an address"
    if name == BLOCK:
        return "none: the destination is refused"
    return plans[name].resolution(dest, plans)


def explain_route(plans: Mapping[str, Plan], decision: Decision, dest: Address, scheme: str,
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


BLOCKED_WORDS = "403 for HTTP and CONNECT, SOCKS reply 0x02"
SHOWN_LINES = 5  # lines not understood shown for each reason, with the count of the rest


def explain_blocklists(blocker: Blocker | None, dest: Address, scheme: str,
                       path: bytes) -> tuple[list[str], bool]:
    """`route`: the list and rule that block the destination (a plain-HTTP URL by its path,
    anything else by host), or that none does; and whether one does. Nothing without lists."""
    if blocker is None:
        return [], False
    verdict = (blocker.check(http_request(dest, path, [])) if scheme == "http"
               else blocker.check_tunnel(dest))
    return _verdict_lines(blocker, verdict, scheme), verdict.block is not None


def _verdict_lines(blocker: Blocker, verdict: Verdict, scheme: str) -> list[str]:
    how = ("by its full URL, as a plain-HTTP request from an unknown page" if scheme == "http"
           else "by host, as a CONNECT or SOCKS5 tunnel")
    if verdict.block is not None:
        return [f"blocklist    blocked by {verdict.block.list}: {verdict.block.rule}",
                f"             ({BLOCKED_WORDS}; matched {how}; the rules are not asked)"]
    names = ", ".join(fl.name for fl in blocker.lists)
    lines = [f"blocklist    not blocked ({names}; matched {how})"]
    if verdict.allowed_by is not None:
        lines.append(f"             an exception let it through: {verdict.allowed_by.list}: "
                     f"{verdict.allowed_by.rule}")
    return lines


def summarize_blocklists(blocker: Blocker) -> list[str]:
    """`check`: per list its format, the rules loaded, what was skipped, and the lines not
    understood with their numbers (grouped by why; the first few of each reason in full)."""
    lines = []
    for fl in blocker.lists:
        kind = "hosts file" if fl.format == "hosts" else "Adblock Plus list"
        not_taken = blocker.not_taken(fl)
        bad = sorted([*fl.bad, *not_taken])
        said = [f"{len(fl.rules) - len(not_taken)} rules loaded"]
        if fl.cosmetic:
            said.append(f"{fl.cosmetic} cosmetic rules skipped")
        if fl.skipped:
            said.append(f"{fl.skipped} entries for this machine skipped")
        said.append(f"{len(bad)} lines not understood")
        lines.append(f"  blocklist {fl.name}: {kind}, " + ", ".join(said))
        by_reason: dict[str, list[tuple[int, str]]] = {}
        for number, text, why in bad:
            by_reason.setdefault(why, []).append((number, text))
        for why, found in sorted(by_reason.items(), key=lambda item: -len(item[1])):
            for number, text in found[:SHOWN_LINES]:
                lines.append(f"           line {number}: {_clip(text)}: {why}")
            if len(found) > SHOWN_LINES:
                rest = [str(number) for number, _ in found[SHOWN_LINES:]]
                shown = ", ".join(rest[:20]) + (", ..." if len(rest) > 20 else "")
                lines.append(f"           and {len(rest)} more lines ({why}): {shown}")
    return lines


def _clip(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
