"""The CLI as a user meets it: check, route, schema, geoip (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

from geodb import write_country_db

PROFILE = """
default = "tor"
resolve = "never"
[exits.tor]
via = ["socks5://127.0.0.1:9050"]
[exits.uk1]
via = ["http://user:secret@127.0.0.2:3128"]
country = "GB"
[exits.uk2]
via = ["socks5://127.0.0.3:1080", "socks5://127.0.0.4:1080"]
country = "gb"
[exits.uk]
pool = ["uk1", "uk2"]
strategy = "sticky"
[exits.home]
source = "127.0.0.5"
[[rules]]
domains = ["*.co.uk", "bbc.com"]
exit = "uk"
[[rules]]
cidrs = ["10.0.0.0/8"]
ports = [22]
exit = "home"
[[rules]]
domains = ["*.doubleclick.net"]
exit = "block"
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          text=True, timeout=60)


def test_check_summarises_exits_rules_with_credentials_masked(tmp_path):
    path = tmp_path / "uk.toml"
    path.write_text(PROFILE)
    out = run("check", str(path))
    assert out.returncode == 0, out.stderr
    assert "uk: pool of uk1, uk2 (sticky, fails closed when all are down)" in out.stdout
    assert "http://user:***@127.0.0.2:3128" in out.stdout and "secret" not in out.stdout
    assert 'rule 1   domains = ["*.co.uk", "bbc.com"] -> exit "uk"' in out.stdout


def test_check_reports_errors_with_exit_code_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[exits.direct]\n[[rules]]\nports = [80]\nexit = "nowhere"\n')
    out = run("check", str(path))
    assert out.returncode == 2
    assert out.stderr.strip().endswith('rules[1].exit = "nowhere": no exit by that name; defined: direct')


def test_route_explains_rule_exit_and_resolution(tmp_path):
    path = tmp_path / "uk.toml"
    path.write_text(PROFILE)
    out = run("route", "--profile", str(path), "https://www.bbc.co.uk/news")
    assert out.returncode == 0, out.stderr
    assert "rule         1: domains" in out.stdout
    assert "exit         uk: pool of uk1, uk2" in out.stdout
    assert "sent by name to the last hop" in out.stdout and "no local DNS lookup" in out.stdout
    assert "not visible" in out.stdout
    out = run("route", "--profile", str(path), "http://example.org/")
    assert "none matched: the profile's default exit" in out.stdout
    assert "x-forwarded-for" in out.stdout and "Referer: origin-only" in out.stdout
    out = run("route", "--profile", str(path), "10.1.1.1:22")
    assert "exit         home: direct, from 127.0.0.5" in out.stdout
    out = run("route", "--profile", str(path), "http://ads.doubleclick.net/")
    assert "block: refused" in out.stdout


def test_route_shows_a_country_from_geoip(tmp_path):
    geo = write_country_db(tmp_path / "g.mmdb", {"192.0.2.0/24": "DE"})
    path = tmp_path / "de.toml"
    path.write_text(f'default = "direct"\ngeoip = "{geo}"\n[exits.direct]\n[exits.de]\n'
                    'source = "127.0.0.9"\n[[rules]]\ncountries = ["DE"]\nexit = "de"\n')
    out = run("route", "--profile", str(path), "http://192.0.2.10/")
    assert "country      DE (GeoIP)" in out.stdout and "exit         de: direct" in out.stdout


def test_schema_is_json_schema_of_the_profile():
    out = run("schema")
    schema = json.loads(out.stdout)
    assert schema["type"] == "object" and {"exits", "rules", "headers"} <= set(schema["properties"])


def test_geoip_info_and_lookup_of_the_bundled_database():
    info = run("geoip", "info")
    assert info.returncode == 0 and "IPFire" in info.stdout
    out = run("geoip", "lookup", "81.2.69.160")
    assert out.stdout.strip() == "81.2.69.160 GB"
    out = run("geoip", "lookup", "example.com")
    assert out.returncode == 2 and "never resolved" in out.stderr


def test_a_missing_geoip_database_is_a_profile_error(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('geoip = "/nonexistent.mmdb"\n[exits.direct]\n[[rules]]\ncountries = ["DE"]\nexit = "direct"\n')
    out = run("check", str(path))
    assert out.returncode == 2
    assert 'geoip = "/nonexistent.mmdb": no such file' in out.stderr
