"""`anonproxy leaktest`: where each exit of a profile really leaves, measured through it.

For each exit (or those named with --exit; a pool's members stand for the pool), each echo URL
(--echo, else the profile's `[verify] echo`, else the defaults in policy/verify.py) is fetched
through that exit exactly as `anonproxy fetch --exit NAME` fetches (fetch.py: the header
policy applies, nothing goes directly), and exits/echo.py judges what it saw against the
country the exit declares. One line per exit, or with --json a list of objects with the keys
exit, address, country, declared, ok, error (and seen, tor, resolution, resolved_locally,
member_of).

Invariants: exit status 0 only when every tested exit is consistent, 1 otherwise, 2 for a
usage error; a failed measurement is a FAILED line, never a traceback. What an echo service
saw that identifies is reported as it said it. Local lookups per exit are not counted by the
proxy, so they are reported as "not measured"; what is known is how the exit resolves names by
design (its `resolution`, as `route` says it).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from typing import Any

from anonproxy.cli.fetch import FetchFailed, FetchRequest, fetch
from anonproxy.config.profiles import LoadedProfile
from anonproxy.exits.context import Context
from anonproxy.exits.echo import EchoFailed, check_exit, echo_urls, target
from anonproxy.policy.verify import Verdict

CONSISTENT, INCONSISTENT, USAGE = 0, 1, 2
NOT_MEASURED = "not measured"


async def get_by_fetch(ctx: Context, name: str, url: str) -> bytes:
    """The body of `url` fetched through exit `name` as `anonproxy fetch --exit` does."""
    target(url)  # (EchoFailed for a URL fetch could not parse)
    out = io.BytesIO()
    try:
        await fetch(ctx, FetchRequest(url, follow=True, fail=True, exit=name), out)
    except FetchFailed as error:
        raise EchoFailed(error.message) from None
    return out.getvalue()


def chosen_exits(ctx: Context, named: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The exits to test, pools replaced by their members (in order, once each), and for
    each member the pools it stands for. Raises ValueError naming an unknown exit."""
    unknown = [n for n in named if n not in ctx.plans]
    if unknown:
        raise ValueError(f"--exit {unknown[0]}: no such exit in the profile "
                         f"(defined: {', '.join(sorted(ctx.plans))})")
    tested: list[str] = []
    member_of: dict[str, list[str]] = {}
    pending = list(named or ctx.plans)
    while pending:
        name = pending.pop(0)
        members = ctx.plans[name].members
        for member in members:
            member_of.setdefault(member, []).append(name)
        if members:
            pending[:0] = [m for m in members if m not in tested and m not in pending]
        elif name not in tested:
            tested.append(name)
    return tested, member_of


def leaktest(loaded: LoadedProfile, named: list[str], echo: list[str], as_json: bool) -> int:
    """The command (argparse's arguments): the exit status."""
    from anonproxy import logs
    from anonproxy.cli.remote import announced_services
    from anonproxy.config.profiles import open_geo

    for url in echo:
        try:
            target(url)
        except EchoFailed as error:
            print(f"anonproxy: leaktest --echo {error}", file=sys.stderr)
            return USAGE
    geo = open_geo(loaded, "leaktest looks up the countries exits leave from")
    ctx = Context(loaded, loaded.profile.listen_address, geo=geo,
                  also_own=announced_services())
    try:
        tested, member_of = chosen_exits(ctx, named)
    except ValueError as error:
        print(f"anonproxy: leaktest: {error}", file=sys.stderr)
        return USAGE
    logs.setup(False)
    logs.log.setLevel("CRITICAL")  # (what failed is said in each exit's line)
    verdicts = asyncio.run(_measure_all(ctx, tested, tuple(echo)))
    if isinstance(verdicts, str):
        print(f"anonproxy: leaktest: {verdicts}", file=sys.stderr)
        return INCONSISTENT
    found = [_found(ctx, v, member_of.get(v.exit, [])) for v in verdicts]
    if as_json:
        print(json.dumps(found, indent=2))
    else:
        for pool in dict.fromkeys(p for pools in member_of.values() for p in pools):
            print(f"pool {pool}: testing its members "
                  f"{', '.join(ctx.plans[pool].members)}")
        for item in found:
            print("\n".join(_lines(item)))
        print(f"local DNS lookups per exit: {NOT_MEASURED} (the proxy keeps no such count; "
              "leaktest's own requests name their exit, so no rule asked for one)")
    wrong = [f"{v.exit} ({v.word})" for v in verdicts if not v.ok]
    if wrong:
        print(f"anonproxy: leaktest: {len(wrong)} of {len(verdicts)} exits inconsistent: "
              f"{', '.join(wrong)}", file=sys.stderr)
    return INCONSISTENT if wrong else CONSISTENT


async def _measure_all(ctx: Context, names: list[str],
                       echo: tuple[str, ...]) -> list[Verdict] | str:
    """Each exit's verdict, with the tors those exits need running; a sentence when tor
    never became ready."""
    from anonproxy.cli.tor_wait import TorNotReady, wait_for_tors
    from anonproxy.cli.wrap import TOR_WAIT
    from anonproxy.exits.tor_datadir import keep_seconds
    from anonproxy.exits.tor_process import Tor

    specs = {ctx.plans[n].tor_spec for n in names} - {None}
    async with asyncio.TaskGroup() as tasks:
        tors = [Tor(spec, keep_seconds()) for spec in specs if spec is not None]
        runs = [tasks.create_task(tor.run()) for tor in tors]
        ctx.tors.update({tor.spec: tor for tor in tors})
        try:
            try:
                await wait_for_tors(tors, TOR_WAIT)
            except TorNotReady as error:
                return str(error)
            return [await check_exit(ctx, name, echo or echo_urls(ctx, name), get_by_fetch)
                    for name in names]
        finally:
            for run in runs:
                run.cancel()


def _found(ctx: Context, verdict: Verdict, pools: list[str]) -> dict[str, Any]:
    from anonproxy.wire.address import Address

    plan = ctx.plans[verdict.exit]
    return {"exit": verdict.exit, "address": verdict.address, "country": verdict.country,
            "declared": ", ".join(verdict.declared) or None, "ok": verdict.ok,
            "error": verdict.error, "verdict": verdict.word, "seen": list(verdict.seen),
            "tor": verdict.is_tor,
            "resolution": plan.resolution(Address("example.org", 443), ctx.plans),
            "resolved_locally": NOT_MEASURED, "member_of": pools}


def _lines(item: dict[str, Any]) -> list[str]:
    verdict = item["verdict"] + (f": {item['error']}" if item["error"] else "")
    lines = [(f"{item['exit']:<14} {item['address'] or '-':<16} {item['country'] or '?':<3} "
              f"declared {item['declared'] or '-':<8} {verdict}")]
    lines += [f"  the echo service saw {seen}" for seen in item["seen"]]
    if item["tor"] is not None:
        lines.append("  Tor's check: " + ("a Tor exit" if item["tor"] else "NOT a Tor exit"))
    return lines
