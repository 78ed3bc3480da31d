"""The JSON documents the dashboard shows and `/api/` serves, read off the running proxy.

Plain functions over the server's objects; no aiohttp here. Credentials never appear: hops are
rendered with their username and password masked (a username is often an account or customer
id at a paid proxy), and tor control passwords are not shown at all.

"Verified country" is what this machine can check without sending anything anywhere: for a
proxy exit, the GeoIP country of its last hop's address (when written as an IP); for a Tor exit,
the countries of the exit relays of its built circuits, as tor's own GeoIP says.
"""

from __future__ import annotations

import time

from anonproxy import __version__
from anonproxy.exits.connect import Chain, Direct, Pool, TorExit
from anonproxy.policy.geo import GeoDB


def overview(server, activity, profiles: bool = True) -> dict:
    """The overview; `profiles=False` leaves out the switchable profiles, which cost a look at
    the profile folders (the once-a-second event ticks do without them)."""
    ctx = server.ctx
    found = {
        "version": __version__,
        "profile": ctx.loaded.name,
        "profile_path": str(ctx.loaded.path) if ctx.loaded.path else None,
        "listen": str(server.listen),
        "admin": str(server.admin_address) if server.admin_address else None,
        "started": server.started,
        "uptime_s": round(time.time() - server.started, 1),
        "workers": len(server.children) + 1,  # the figures here are the first worker's
        "connections_now": server.connections_now(),
        "connections_total": server.accepted,
        "finished": activity.finished,
        "traffic": {name: {"up": t.up, "down": t.down, "connections": t.connections,
                           "errors": t.errors}
                    for name, t in sorted(activity.exits.items())},
        "identities": server.identities,
        "reloads": server.reloads,
        "last_reload_error": server.last_reload_error,
    }
    if profiles:
        found["profiles"] = sorted(server.switchable_profiles())
    return found


def exits(ctx, geo: GeoDB | None) -> list[dict]:
    """Every exit of the active profile: kind, hops (masked), health, countries."""
    found = []
    probed = set(ctx.probed_members())
    for name, plan in ctx.plans.items():
        item: dict = {"name": name, "default": name == ctx.profile.default}
        if isinstance(plan, Direct):
            item.update(kind="direct", source=plan.source)
        elif isinstance(plan, Chain):
            last = plan.hops[-1].address
            item.update(kind="chain", hops=[_masked(hop) for hop in plan.hops],
                        country=plan.country.upper() if plan.country else None,
                        verified_country=_country(geo, last.ip))
            item["country_matches"] = (None if not item["country"] or not item["verified_country"]
                                       else item["country"] == item["verified_country"])
        elif isinstance(plan, Pool):
            item.update(kind="pool", strategy=plan.strategy, fallback=plan.fallback,
                        members=[_member(ctx, m) for m in plan.members])
        elif isinstance(plan, TorExit):
            item.update(kind="tor", tor=plan.spec.label(), isolation=plan.isolation,
                        countries=[c.upper() for c in plan.spec.countries])
            tor = ctx.tors.get(plan.spec)
            item["state"] = tor.state if tor is not None else "stopped"
        if name in ctx.health.states or name in probed:
            item["health"] = _health(ctx, name)
        found.append(item)
    return found


def rules(ctx) -> list[dict]:
    """Each rule with its hit count since the profile was loaded; number 0 is the default."""
    listed = [{"number": rule.number, "text": rule.text, "exit": rule.exit,
               "hits": ctx.hits.get(rule.number, 0)} for rule in ctx.rules]
    listed.append({"number": 0, "text": "no rule matched", "exit": ctx.profile.default,
                   "hits": ctx.hits.get(0, 0)})
    return listed


async def tors(server) -> list[dict]:
    found = []
    for tor in list(server.tors.values()):
        circuits = await tor.circuits()
        found.append({
            "label": tor.spec.label(), "state": tor.state, "progress": tor.progress,
            "summary": tor.summary, "error": tor.error,
            "countries": [c.upper() for c in tor.spec.countries],
            "socks": "{}:{}".format(*tor.socks) if getattr(tor, "socks", None) else None,
            "circuits": circuits,
            "exit_countries": sorted({c["exit_country"].upper() for c in circuits
                                      if c["exit_country"]}),
        })
    return found


def _masked(hop) -> str:
    """A hop as kind://host:port, with `***:***@` where it has credentials."""
    return f"{hop.kind}://{'***:***@' if hop.username is not None else ''}{hop.address}"


def _member(ctx, name: str) -> dict:
    return {"name": name, **_health(ctx, name)}


def _health(ctx, name: str) -> dict:
    state = ctx.health.states.get(name)
    if state is None:
        return {"up": True, "last_probe": None, "latency_ms": None, "last_error": None}
    return {"up": state.up, "last_probe": state.last_probe,
            "latency_ms": None if state.latency_ms is None else round(state.latency_ms, 1),
            "last_error": state.last_error, "since": state.changed}


def _country(geo: GeoDB | None, ip) -> str | None:
    return geo.country(ip) if geo is not None and ip is not None else None
