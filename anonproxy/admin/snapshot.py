"""The JSON documents the dashboard shows and `/api/` serves, read off the running proxy.

Plain functions over the server's objects; no aiohttp here. Each exit describes itself
(Plan.status, exits/base.py), so nothing here knows the kinds. Credentials never appear: hops
are rendered with their username and password masked (a username is often an account or
customer id at a paid proxy), and tor control passwords are not shown at all.

"Verified country" is what this machine can check without sending anything anywhere: for a
proxy exit, the GeoIP country of its last hop's address (when written as an IP); for a Tor exit,
the countries of the exit relays of its built circuits, as tor's own GeoIP says (`tors()`).
"""

from __future__ import annotations

import time

from anonproxy import __version__
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
    """Every exit of the active profile, as its kind describes itself (Plan.status: the keys
    in base.STATUS_KEYS, which the page and `status` render, and the kind's own), with its
    health where it has a record or is probed, and its verification where it was checked."""
    found = []
    probed = set(ctx.probed_members())
    env = ctx.dialer.env
    for name, plan in ctx.plans.items():
        item: dict = {"name": name, "default": name == ctx.profile.default,
                      **plan.status(env, geo)}
        if name in ctx.health.states or name in probed:
            item["health"] = ctx.health.snapshot(name)
        verified = ctx.verification.snapshot(name)
        if verified is not None:  # (checked: `[verify] enforce`; exits/verification.py)
            item["verified"] = verified
            if verified["refused"]:
                item["up"] = False
        found.append(item)
    return found


def rules(ctx) -> list[dict]:
    """Each rule with its hit count since the profile was loaded; number 0 is the default."""
    listed = [{"number": rule.number, "text": rule.text, "exit": rule.exit,
               "hits": ctx.hits.get(rule.number, 0)} for rule in ctx.rules]
    listed.append({"number": 0, "text": "no rule matched", "exit": ctx.profile.default,
                   "hits": ctx.hits.get(0, 0)})
    return listed


def blocklists(ctx, activity) -> dict:
    """The active profile's block lists with the rules each holds and how many requests each
    blocked, and the latest matches. The counts are by list name and outlive reloads."""
    blocker = ctx.loaded.blocker
    lists = [] if blocker is None else [
        {"name": fl.name, "format": fl.format, "rules": len(fl.rules),
         "blocks": activity.blocks.get(fl.name, 0)} for fl in blocker.lists]
    return {"lists": lists, "latest": activity.latest_matches()}


def inspection(ctx, activity) -> dict:
    """Which HTTPS hosts the active profile opens (and skips), the local CA that signs what
    their clients see (its file and name: never its key), and the requests seen inside per
    site. `hosts` empty: inspection is off."""
    found = ctx.profile.inspect
    authority = ctx.authority if found.hosts else None
    return {"hosts": list(found.hosts), "skip": list(found.skip), "ca_bundle": found.ca_bundle,
            "ca": str(authority.cert_path) if authority is not None else None,
            "ca_name": authority.subject if authority is not None else None,
            "opened": [{"site": site, "requests": n}
                       for site, n in sorted(activity.opened.items(), key=lambda i: -i[1])]}


def cache(ctx, activity) -> dict:
    """The active profile's cache: entries, bytes, hits and misses (cache/store.py); off when
    `[cache] enabled` is false. Never a URL."""
    del activity
    return {"enabled": False} if ctx.cache is None else {"enabled": True,
                                                          **ctx.cache.snapshot()}


def reverse(server) -> list[dict]:
    """Each reverse entry ([[reverse]]) as it runs (reverse/entry.py, ReverseEntry.status): its
    listen address, strategy, hosts, TLS, auth, forwarded and cache (its figures, or None), its
    .onion address once published (else None), the client connections open, and per backend
    ("host:port") its health (up, last_probe, latency_ms, last_error, since) and traffic
    (in_flight, requests, failures, up_bytes, down_bytes). The backends' addresses are the
    owner's to see, here and in the log; no client ever reads them."""
    return server.reverses.status()


async def tors(server) -> list[dict]:
    found = []
    for tor in list(server.tors.values()):
        circuits = await tor.circuits()
        found.append({
            "label": tor.spec.label(), "state": tor.state, "progress": tor.progress,
            "summary": tor.summary, "error": tor.error,
            "shared_with": tor.shared_with,  # a tor another process started: which
            "last_said": tor.last_words() or None,  # tor's last warning (a stalled bootstrap)
            "countries": [c.upper() for c in tor.spec.countries],
            "socks": "{}:{}".format(*tor.socks) if getattr(tor, "socks", None) else None,
            "circuits": circuits,
            "exit_countries": sorted({c["exit_country"].upper() for c in circuits
                                      if c["exit_country"]}),
        })
    return found
