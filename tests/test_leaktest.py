"""Verified exits end to end: `anonproxy leaktest` and `[verify] enforce` in a running serve,
with microsocks exits on their own loopback addresses (each connecting out from it), a GeoIP
database that maps those addresses to countries, and an echo service on loopback that answers
with the address a request came from (tests/echo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from echo import start_echo
from geodb import write_country_db
from helpers import curl
from upstreams import free_port, microsocks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def echo():
    service, server = start_echo()
    yield service
    server.shutdown()
    server.server_close()


@pytest.fixture
def exits(tmp_path):
    """Two SOCKS5 exits: one leaving from 127.0.0.2 (DE), one from 127.0.0.3 (US)."""
    de, us = microsocks("127.0.0.2", tmp_path), microsocks("127.0.0.3", tmp_path)
    yield de, us
    de.stop()
    us.stop()


def _profile(tmp_path, exits, echo_urls: list[str], extra: str = "") -> Path:
    de, us = exits
    geo = write_country_db(tmp_path / "geo.mmdb",
                           {"127.0.0.2/32": "DE", "127.0.0.3/32": "US", "127.0.0.1/32": "GB"})
    urls = ", ".join(f'"{u}"' for u in echo_urls)
    path = tmp_path / "p.toml"
    path.write_text(f"""
default = "honest"
geoip = "{geo}"
{extra}
[verify]
echo = [{urls}]
[exits.honest]
via = ["{de.url}"]
country = "DE"
[exits.liar]
via = ["{us.url}"]
country = "DE"
[exits.us]
via = ["{us.url}"]
country = "US"
[exits.p]
pool = ["liar", "honest"]
""")
    return path


def _leaktest(profile: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "anonproxy", "leaktest", "--profile",
                           str(profile), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def _line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(name + " "))


def test_consistent_exits_pass_and_the_echo_travels_through_each_exit(tmp_path, exits, echo):
    profile = _profile(tmp_path, exits, [echo.url("/ip"), echo.url("/json")])
    done = _leaktest(profile, "--exit", "honest", "--exit", "us")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _line(done.stdout, "honest").split() == [
        "honest", "127.0.0.2", "DE", "declared", "DE", "ok"]
    assert _line(done.stdout, "us").split() == ["us", "127.0.0.3", "US", "declared", "US", "ok"]
    # each exit's requests left from its own address, never from ours (127.0.0.1)
    assert sorted(echo.peers) == ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]
    assert "the echo service saw" not in done.stdout  # nothing identifying reached it
    assert "local DNS lookups per exit: not measured" in done.stdout


def test_a_lying_exit_is_a_mismatch(tmp_path, exits, echo):
    profile = _profile(tmp_path, exits, [echo.url("/ip")])
    done = _leaktest(profile)
    assert done.returncode == 1, done.stdout + done.stderr
    liar = _line(done.stdout, "liar")
    assert liar.split()[:6] == ["liar", "127.0.0.3", "US", "declared", "DE", "MISMATCH:"]
    assert "leaves from US, declares DE" in liar
    assert _line(done.stdout, "honest").endswith("ok")
    assert "pool p: testing its members liar, honest" in done.stdout
    assert [line.split()[0] for line in done.stdout.splitlines()
            if line.split()[0] in ("honest", "liar", "us", "p")] == ["honest", "liar", "us"]


def test_a_dead_echo_service_fails_without_a_traceback(tmp_path, exits):
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}/ip"
    profile = _profile(tmp_path, exits, [dead])
    done = _leaktest(profile, "--exit", "honest")
    assert done.returncode == 1
    line = _line(done.stdout, "honest")
    assert "FAILED" in line and dead in line and "refused" in line, line


def test_an_echo_answer_without_an_address_fails(tmp_path, exits, echo):
    profile = _profile(tmp_path, exits, [echo.url("/nothing-here"), echo.url("/hello")])
    done = _leaktest(profile, "--exit", "honest")
    line = _line(done.stdout, "honest")
    assert done.returncode == 1 and "FAILED" in line, line
    assert "/nothing-here: the server answered 404" in line, line
    assert "/hello: '<html>hello</html>' is not an IP address" in line, line


def test_json_output_and_exit_filtering(tmp_path, exits, echo):
    profile = _profile(tmp_path, exits, [echo.url("/ip")])
    done = _leaktest(profile, "--json", "--exit", "p", "--echo", echo.url("/origin"))
    assert done.returncode == 1
    found = json.loads(done.stdout)
    assert [item["exit"] for item in found] == ["liar", "honest"]  # the pool's members
    liar, honest = found
    assert {k: liar[k] for k in ("exit", "address", "country", "declared", "ok")} == {
        "exit": "liar", "address": "127.0.0.3", "country": "US", "declared": "DE", "ok": False}
    assert liar["error"] == "leaves from US, declares DE" and liar["member_of"] == ["p"]
    assert {k: honest[k] for k in ("address", "country", "declared", "ok", "error")} == {
        "address": "127.0.0.2", "country": "DE", "declared": "DE", "ok": True, "error": None}
    assert honest["resolved_locally"] == "not measured" and honest["seen"] == []
    assert echo.peers == ["127.0.0.3", "127.0.0.2"]  # --echo replaced the profile's URL


def test_leaktest_usage_errors(tmp_path, exits, echo):
    profile = _profile(tmp_path, exits, [echo.url("/ip")])
    done = _leaktest(profile, "--exit", "nowhere")
    assert done.returncode == 2 and "--exit nowhere: no such exit" in done.stderr
    done = _leaktest(profile, "--echo", "gopher://x/")
    assert done.returncode == 2 and "gopher://x/" in done.stderr
    assert echo.peers == []


def test_enforce_refuses_a_lying_exit_and_its_pool_moves_on(tmp_path, exits, echo, origin,
                                                              start_proxy_process):
    profile = _profile(tmp_path, exits, [echo.url("/ip")], extra=f"""
[[rules]]
domains = ["localhost"]
exit = "liar"
[[rules]]
ports = [{origin.port}]
exit = "p"
""").read_text().replace("[verify]\n", "[verify]\nenforce = true\n")
    proxy = start_proxy_process(profile)
    log = proxy.wait_log("exit 'liar' is refused", timeout=20)
    assert "exit 'liar' is refused: it leaves from US, declares DE" in log, log

    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0  # through the pool
    assert origin.last.peer[0] == "127.0.0.2"  # the honest member, not the liar
    forced = curl("-s", "-i", "-x", proxy.url, origin.url("/echo", host="localhost"))
    head = forced.stdout.decode(errors="replace")
    assert head.startswith("HTTP/1.1 503"), head
    assert "measured leaving from US, but declares DE" in head, head
    assert len(origin.received) == 1  # the forced request never left

    status = subprocess.run([sys.executable, "-m", "anonproxy", "status", "--listen",
                             f"{proxy.host}:{proxy.port}"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            check=False)
    assert status.returncode == 0, status.stderr
    liar = next(line for line in status.stdout.splitlines() if line.startswith("exit liar "))
    assert "US from 127.0.0.3, declared DE: REFUSED" in liar, status.stdout
    honest = next(line for line in status.stdout.splitlines()
                  if line.startswith("exit honest "))
    assert "DE from 127.0.0.2, declared DE: ok" in honest, status.stdout
    assert "liar (DOWN)" in status.stdout  # the pool's members
