"""The shape of the exits: every registered kind implements the protocol (exits/base.py) and
describes itself in the keys the page and `status` render; nothing outside the kinds' own
modules knows a kind; and a kind made up here, registered in-process only, is opened, routed,
explained, listed in /api/exits, `status` and the dashboard's exits table without a change
anywhere else. In-process, with a real loopback server; the page's script runs under node."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from conftest import ROOT

from anonproxy.admin import snapshot
from anonproxy.cli.explain import describe_exit, explain_route, summarize
from anonproxy.cli.remote import exit_line
from anonproxy.config.profiles import load_profile
from anonproxy.exits import registry
from anonproxy.exits.base import STATUS_KEYS, Env, Opened, Plan
from anonproxy.exits.connect import tcp
from anonproxy.exits.context import Context
from anonproxy.exits.pool import Pool
from anonproxy.policy.rules import Decision
from anonproxy.wire.address import Address
from anonproxy.wire.errors import ExitDown

EVERY_KIND = """default = "d"
[exits.d]
source = "127.0.0.1"
[exits.c]
via = ["socks5://alice-customer-42:s3cret@127.0.0.2:1080", "http://127.0.0.3:3128"]
country = "de"
[exits.p]
pool = ["c", "d"]
strategy = "round-robin"
fallback = "d"
[exits.t]
tor = { control = "managed", countries = ["de", "nl"], isolation = "profile" }
"""
FLAGS = ("exposes_address", "reaches_onion", "shares_upstreams", "probes")


def _context(tmp_path, text: str = EVERY_KIND) -> Context:
    path = tmp_path / "p.toml"
    path.write_text(text)
    loaded = load_profile(str(path))
    return Context(loaded, loaded.profile.listen_address)


def test_every_registered_kind_implements_the_exit_protocol(tmp_path):
    ctx = _context(tmp_path)
    modules = {sys.modules[type(plan).__module__] for plan in ctx.plans.values()}
    assert modules == set(registry.kinds()), "EVERY_KIND must have one exit of each kind"
    for name, plan in ctx.plans.items():
        assert isinstance(plan, Plan), name
        assert plan.name == name and isinstance(plan.kind, str) and plan.kind
        assert all(isinstance(getattr(plan, flag), bool) for flag in FLAGS), name
        assert plan.identity is None or plan.identity in ("site", "profile", "connection")
        assert all(m in ctx.plans for m in plan.members)
        assert plan.describe().startswith(f"exit '{name}' (")
        assert plan.summary_lines(ctx.plans)[0].startswith(f"{name}: ")
    kinds = {plan.kind for plan in ctx.plans.values()}
    assert len(kinds) == len(ctx.plans), "each kind has a word of its own"


def test_the_capabilities_each_kind_declares(tmp_path):
    ctx = _context(tmp_path)
    d, c, p, t = (ctx.plans[n] for n in "dcpt")
    assert d.exposes_address and not any(x.exposes_address for x in (c, p, t))
    assert t.reaches_onion and not any(x.reaches_onion for x in (d, c, p))
    assert c.probes and not any(x.probes for x in (d, p, t))
    assert p.members == ("c", "d") and d.members == c.members == t.members == ()
    assert t.identity == "profile" and d.identity is c.identity is p.identity is None
    assert t.tor_spec is not None and ctx.tor_specs() == {t.tor_spec}
    assert ctx.probed_members() == ["c"]
    assert all(ctx.shares_upstreams(n) for n in "dcpt")
    per_connection = _context(tmp_path, EVERY_KIND.replace('"profile"', '"connection"'))
    assert not per_connection.shares_upstreams("t")


def test_every_kind_describes_itself_in_the_keys_the_page_and_status_render(tmp_path):
    ctx = _context(tmp_path)
    shown = {item["name"]: item for item in snapshot.exits(ctx, None)}
    for name, item in shown.items():
        assert set(STATUS_KEYS) <= item.keys(), name
        assert item["kind"] == ctx.plans[name].kind and isinstance(item["through"], str)
        assert item["up"] in (True, False, None)
        assert exit_line(item, None).startswith(f"exit {name:<12} {item['kind']:<7} ")
    text = json.dumps(shown)
    assert "alice" not in text and "s3cret" not in text  # credentials masked, as before
    # today's keys stay (docs/dashboard.md, tests/test_admin.py)
    assert shown["d"]["source"] == "127.0.0.1" and shown["d"]["default"]
    assert shown["c"]["hops"] == ["socks5://***:***@127.0.0.2:1080", "http://127.0.0.3:3128"]
    assert shown["c"]["country"] == "DE" and "country_matches" in shown["c"]
    assert shown["c"]["health"]["up"] and shown["c"]["through"] == " -> ".join(shown["c"]["hops"])
    assert [m["name"] for m in shown["p"]["members"]] == ["c", "d"]
    assert shown["p"]["strategy"] == "round-robin" and shown["p"]["fallback"] == "d"
    assert shown["t"]["state"] == "stopped" and shown["t"]["up"] is False
    assert shown["t"]["countries"] == ["DE", "NL"] and shown["t"]["isolation"] == "profile"
    assert exit_line(shown["t"], None).endswith(": stopped")


KIND_CLASS = re.compile(r"\b(Direct|Chain|Pool|TorExit)\b")
KIND_TEST = re.compile(r"""kind["']?\]?\s*===?\s*["']""")


def test_no_module_outside_the_kinds_knows_a_kind(tmp_path):
    """No isinstance against a kind's class, no `kind == "..."` branch: route explanations,
    status, the dashboard, the router and the server read what an exit says of itself."""
    classes = {type(plan).__name__ for plan in _context(tmp_path).plans.values()}
    assert classes == {"Direct", "Chain", "Pool", "TorExit"}  # (KIND_CLASS names them all)
    kinds = {ROOT / "anonproxy" / "exits" / f"{m.__name__.rsplit('.', 1)[-1]}.py"
             for m in registry.kinds()}
    knowing = []
    for path in sorted((ROOT / "anonproxy").rglob("*")):
        if path.suffix not in (".py", ".js") or path in kinds or path.name == "registry.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if KIND_CLASS.search(line) or KIND_TEST.search(line):
                knowing.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not knowing, "\n".join(knowing)


@dataclass(frozen=True, slots=True)
class Pigeon:
    """A kind made up here: it dials directly and says so in its own words."""

    name: str
    kind: ClassVar[str] = "pigeon"
    members: ClassVar[tuple[str, ...]] = ()
    exposes_address: ClassVar[bool] = False
    reaches_onion: ClassVar[bool] = True
    shares_upstreams: ClassVar[bool] = False
    identity: ClassVar[str | None] = "connection"
    tor_spec: ClassVar[Any] = None
    probes: ClassVar[bool] = True

    def describe(self) -> str:
        return f"exit '{self.name}' (pigeon post)"

    def summary_lines(self, plans, indent: str = "") -> list[str]:
        return [f"{indent}{self.name}: carried by pigeon"]

    def resolution(self, dest: Address, plans) -> str:
        return f"{dest.host} is read by the pigeon"

    def pick(self, dest: Address, env: Env) -> str | None:
        return None

    async def open(self, dest: Address, env: Env, path: tuple[str, ...],
                   prefer: tuple[str, ...] = (), isolation: str | None = None) -> Opened:
        return Opened(await tcp(dest.host, dest.port), path, self)

    async def probe(self, timeout: float) -> None:
        return None

    async def resolve_remotely(self, host: str, env: Env, isolation: str | None) -> str | None:
        raise ExitDown("pigeons resolve nothing")

    def status(self, env: Env, geo) -> dict[str, Any]:
        return {"kind": self.kind, "through": "loft 7, by air", "state": "flying", "up": True,
                "country": "IS", "verified_country": None, "ring": 7}


def _with_pigeon(tmp_path) -> Context:
    ctx = _context(tmp_path, 'default = "d"\n[exits.d]\n')
    ctx.plans["bird"] = Pigeon("bird")  # (the one dict the dialer and its Env hold too)
    ctx.plans["flock"] = Pool("flock", ("bird",))
    # the router is made from the plans once, when a profile is loaded: as if bird were in it
    ctx.router = dataclasses.replace(
        ctx.router, tor_exits=tuple(n for n, p in ctx.plans.items() if p.reaches_onion))
    return ctx


def test_a_made_up_kind_is_opened_routed_and_explained_without_a_change_elsewhere(tmp_path):
    ctx = _with_pigeon(tmp_path)
    assert isinstance(ctx.plans["bird"], Plan)

    async def scenario() -> None:
        async def answer(reader, writer):
            writer.write(b"coo")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        dest = Address("127.0.0.1", server.sockets[0].getsockname()[1])
        async with server:
            assert ctx.choose_path("flock", dest) == ("flock", "bird")
            opened = await ctx.open("flock", dest)
            assert opened.path == ("flock", "bird") and opened.plan is ctx.plans["bird"]
            assert await opened.stream[0].read() == b"coo"
            opened.stream[1].close()
        onion = await ctx.decide(Address("a" * 56 + ".onion", 443))
        assert onion.exit == "bird"  # it says it reaches .onion names: the router believes it

    asyncio.run(scenario())
    assert ctx.probed_members() == ["bird"] and not ctx.shares_upstreams("bird")
    assert describe_exit(ctx.plans, "flock") == [
        "flock: pool of bird (failover, fails closed when all are down)",
        "  bird: carried by pigeon"]
    lines = explain_route(ctx.plans, Decision("bird", None, None), Address("example.org", 443),
                          "tunnel", ctx.policy, "never")
    assert "exit         bird: carried by pigeon" in lines
    assert "resolution   example.org is read by the pigeon" in lines
    assert summarize(ctx.loaded, ctx.plans)  # (the profile's own exits, as before)


def test_a_made_up_kind_shows_in_api_exits_and_status(tmp_path):
    ctx = _with_pigeon(tmp_path)
    shown = {item["name"]: item for item in snapshot.exits(ctx, None)}
    assert shown["bird"]["ring"] == 7 and shown["bird"]["health"]["up"]  # (probed: a member)
    assert exit_line(shown["bird"], {"connections": 2, "up": 5, "down": 9}) == (
        "exit bird         pigeon  loft 7, by air: flying  up  2 conns, 5 B up, 9 B down")
    assert shown["flock"]["through"] == "failover: bird"


PAGE = """
const fs = require("fs"), vm = require("vm");
const elements = {};
function element() {
  const body = { rows: [], replaceChildren() { this.rows.length = 0; }, insertRow() {
    const row = { dataset: {}, cells: [], insertCell() {
      const td = { textContent: "", className: "" }; this.cells.push(td); return td; } };
    this.rows.push(row); return row; } };
  return { tBodies: [body], dataset: {}, textContent: "", hidden: false, value: "",
           addEventListener() {}, replaceChildren() {} };
}
const page = {
  document: { getElementById: id => elements[id] || (elements[id] = element()) },
  location: { hash: "", pathname: "/", search: "", replace() {} },
  history: { replaceState() {} },
  localStorage: { getItem() { return null; }, setItem() {}, removeItem() {} },
  fetch: () => new Promise(() => {}), setInterval() {}, setTimeout() {}, Date,
};
vm.createContext(page);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), page);
const input = JSON.parse(fs.readFileSync(0, "utf8"));
page.showExits(input.exits, input.traffic);
console.log(JSON.stringify(elements.exits.tBodies[0].rows));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the page's script")
def test_the_dashboard_table_renders_a_made_up_kind(tmp_path):
    ctx = _with_pigeon(tmp_path)
    script = tmp_path / "page.js"
    script.write_text(PAGE)
    traffic = {"bird": {"connections": 2, "up": 5, "down": 9}}
    out = subprocess.run(["node", str(script), str(ROOT / "anonproxy/admin/static/app.js")],
                         input=json.dumps({"exits": snapshot.exits(ctx, None),
                                           "traffic": traffic}),
                         text=True, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {row["dataset"]["exit"]: [(c["textContent"], c["className"]) for c in row["cells"]]
            for row in json.loads(out.stdout)}
    assert rows["bird"] == [("bird", ""), ("pigeon", ""), ("loft 7, by air", ""),
                            ("flying", "up"), ("IS / unknown", ""),
                            ("2 conns, ↑5 B ↓9 B", "")]
    assert [text for text, _ in rows["d"][:4]] == [
        "d (default)", "direct", "this machine's address", ""]
    assert rows["flock"][2] == ("failover: bird", "")
