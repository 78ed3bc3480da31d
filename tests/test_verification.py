"""exits/verification.py: which verdicts refuse an exit, and how long; the dialer failing
closed on a refused exit and a pool leaving it out (no network: the refusal comes first)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_exit_kinds import PAGE

from anonproxy.config.profiles import load_profile
from anonproxy.exits.context import Context
from anonproxy.exits.verification import Verification
from anonproxy.policy.verify import Verdict
from anonproxy.wire.address import Address
from anonproxy.wire.errors import ExitDown


def _ok(country="DE", declared=("DE",)):
    return Verdict("x", "127.0.0.2", country, declared, country in declared, None)


def _mismatch(country="US", declared=("DE",)):
    return Verdict("x", "127.0.0.3", country, declared, False, f"leaves from {country}")


def _failed(declared=("DE",)):
    return Verdict("x", None, None, declared, False, "http://e/: refused")


@pytest.mark.parametrize(("verdicts", "refused"), [
    ([], False),
    ([_ok()], False),
    ([_mismatch()], True),
    ([_failed()], False),  # nothing measured: nothing to refuse it for
    ([_mismatch(), _failed()], True),  # a failed check does not lift a refusal
    ([_mismatch(), _ok()], False),  # a declared country measured again does
    ([_ok(), _mismatch()], True),
    ([_ok(), _failed()], False),
    ([_mismatch("NL", ("DE", "NL"))], False),  # one of a Tor exit's countries
    ([_mismatch("US", ())], False),  # nothing declared: nothing to lie about
])
def test_which_verdicts_refuse_an_exit(verdicts, refused):
    verification = Verification()
    for verdict in verdicts:
        verification.record(verdict)
    assert verification.refused("x") is refused
    assert verification.allows("x") is not refused
    assert (verification.refusal("x") is not None) is refused


def test_a_refusal_names_both_countries_in_public_too():
    verification = Verification()
    verification.record(_mismatch())
    error = verification.refusal("x")
    assert isinstance(error, ExitDown) and error.status == 503
    expected = "exit 'x' is out of service: it was measured leaving from US, but declares DE"
    assert error.message == error.public == expected
    shown = verification.snapshot("x")
    assert shown is not None
    assert {k: shown[k] for k in ("country", "address", "declared", "ok", "verdict",
                                  "refused")} == {
        "country": "US", "address": "127.0.0.3", "declared": ["DE"], "ok": False,
        "verdict": "MISMATCH", "refused": True}
    assert verification.snapshot("never-checked") is None


def test_a_refused_exit_fails_closed_and_its_pool_moves_on(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('default = "p"\n[exits.liar]\nvia = ["socks5://127.0.0.1:9"]\n'
                       'country = "DE"\n[exits.honest]\nvia = ["socks5://127.0.0.1:9"]\n'
                       'country = "DE"\n[exits.p]\npool = ["liar", "honest"]\n')
    loaded = load_profile(str(profile))
    ctx = Context(loaded, loaded.profile.listen_address)
    dest = Address("example.org", 80)
    assert ctx.choose_path("p", dest) == ("p", "liar")
    ctx.verification.record(Verdict("liar", "127.0.0.3", "US", ("DE",), False, "lies"))
    assert ctx.choose_path("p", dest) == ("p", "honest")  # left out as a down member is

    async def forced():
        with pytest.raises(ExitDown, match="measured leaving from US, but declares DE"):
            await ctx.open("liar", dest)
        ctx.verification.record(Verdict("honest", "127.0.0.3", "US", ("DE",), False, "lies"))
        with pytest.raises(ExitDown) as error:
            await ctx.open("p", dest)
        assert "liar: exit 'liar' is out of service" in error.value.public
        assert "honest: exit 'honest' is out of service" in error.value.public

    asyncio.run(forced())


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the page's script")
def test_the_dashboard_shows_a_refused_exit_measured_against_declared(tmp_path):
    script = tmp_path / "page.js"
    script.write_text(PAGE)
    verified = {"country": "US", "address": "127.0.0.3", "declared": ["DE"],
                "checked": 1764590000, "ok": False, "verdict": "MISMATCH", "error": "lies",
                "refused": True}
    exits = [{"name": "liar", "default": False, "kind": "chain", "through": "socks5://h",
              "state": None, "up": False, "country": "DE", "verified_country": None,
              "verified": verified}]
    app = Path(__file__).resolve().parents[1] / "anonproxy/admin/static/app.js"
    out = subprocess.run(["node", str(script), str(app)], text=True, capture_output=True,
                         input=json.dumps({"exits": exits, "traffic": {}}), timeout=60)
    cells = json.loads(out.stdout)[0]["cells"]
    assert (cells[3]["textContent"], cells[3]["className"]) == ("refused", "down")
    country = cells[4]["textContent"]
    assert country.startswith("DE / US (127.0.0.3, checked ") and country.endswith(" REFUSED")
    assert cells[4]["className"] == "mismatch"


def test_a_reload_keeps_the_verdicts_of_exits_left_as_they_were(tmp_path):
    profile = tmp_path / "p.toml"
    text = ('default = "liar"\n[exits.liar]\nvia = ["socks5://127.0.0.1:9"]\ncountry = "DE"\n'
            '[exits.other]\nvia = ["socks5://127.0.0.1:8"]\ncountry = "DE"\n')
    profile.write_text(text)
    loaded = load_profile(str(profile))
    before = Context(loaded, loaded.profile.listen_address)
    for name in ("liar", "other"):
        before.verification.record(Verdict(name, "127.0.0.3", "US", ("DE",), False, "lies"))
    profile.write_text(text.replace('8"]\ncountry = "DE"', '8"]\ncountry = "US"'))
    loaded = load_profile(str(profile))
    after = Context(loaded, loaded.profile.listen_address)
    after.carry_hits(before)
    assert after.verification.refused("liar")  # unchanged: still refused
    assert "other" not in after.verification.states  # changed: checked anew
