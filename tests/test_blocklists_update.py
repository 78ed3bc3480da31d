"""`anonproxy lists update`: lists that name a URL are fetched through the profile's own rule
and exit (here a microsocks on 127.0.0.2, the only way to the list's host), conditionally, and
replace their file only when whole; the profile refuses to load while one was never fetched."""

from __future__ import annotations

import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from helpers import answer, serving
from upstreams import microsocks

ROOT = Path(__file__).resolve().parents[1]
LIST = b"! Title: served\n||served-ad.example^\n@@||served-ad.example/ok/\n"


class _Lists(BaseHTTPRequestHandler):
    """/list.txt with an ETag, 304 to If-None-Match; /empty.txt with no rules; each request's
    peer and conditional headers recorded."""

    seen: list[tuple[str, str, str | None]]
    body: bytes = LIST

    def do_GET(self) -> None:
        self.seen.append((self.client_address[0], self.path, self.headers.get("If-None-Match")))
        etag = f'"v{len(self.body)}"'
        if self.path == "/list.txt" and self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        body = self.body if self.path == "/list.txt" else b"! nothing here\n"
        answer(self, body, headers=(("ETag", etag),))

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def lists_server():
    seen: list = []
    _Lists.seen, _Lists.body = seen, LIST
    with serving(_Lists) as server:
        yield server.server_address[1], seen


@pytest.fixture
def named_exit(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 lists.test\n")
    exit_ = microsocks("127.0.0.2", tmp_path, hosts_file=hosts)
    yield exit_
    exit_.stop()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_lists_update_fetches_through_the_profiles_exit_conditionally(
        tmp_path, lists_server, named_exit):
    port, seen = lists_server
    profile = tmp_path / "p.toml"
    profile.write_text(f"""
blocklists = [{{ url = "http://lists.test:{port}/list.txt", path = "lists/served.txt" }}]
default = "block"
[exits.named]
via = ["{named_exit.url}"]
[[rules]]
domains = ["lists.test"]
exit = "named"
""")
    never = _cli("check", str(profile))
    assert never.returncode == 2
    assert 'blocklists[1] = "lists/served.txt": no such file' in never.stderr
    assert f"it comes from http://lists.test:{port}/list.txt: run anonproxy lists update" in never.stderr

    first = _cli("lists", "update", "--profile", str(profile))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (f'blocklists[1] "lists/served.txt": updated from '
                                    f"http://lists.test:{port}/list.txt: {len(LIST)} bytes, "
                                    "2 rules (adblock)")
    assert (tmp_path / "lists" / "served.txt").read_bytes() == LIST
    assert seen == [("127.0.0.2", "/list.txt", None)]  # through the exit, never directly
    assert oct((tmp_path / "lists" / "served.txt").stat().st_mode & 0o777) == "0o600"

    again = _cli("lists", "update", "--profile", str(profile))
    assert again.returncode == 0, again.stderr
    assert "not modified since the last update" in again.stdout
    assert seen[-1] == ("127.0.0.2", "/list.txt", f'"v{len(LIST)}"')

    route = _cli("route", "--profile", str(profile), "http://served-ad.example/x.js")
    assert "blocklist    blocked by lists/served.txt: ||served-ad.example^" in route.stdout


def test_a_list_without_rules_keeps_the_old_file(tmp_path, lists_server):
    port, _ = lists_server
    (tmp_path / "kept.txt").write_text("||kept.example^\n")
    profile = tmp_path / "p.toml"
    profile.write_text(f'blocklists = [{{ url = "http://127.0.0.1:{port}/empty.txt", '
                       'path = "kept.txt" }]\n[exits.direct]\n')
    out = _cli("lists", "update", "--profile", str(profile))
    assert out.returncode == 5
    assert "gave no rules (HTTP 200); kept the old file" in out.stderr
    assert (tmp_path / "kept.txt").read_text() == "||kept.example^\n"


def test_lists_update_without_a_url_says_so(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text("[exits.direct]\n")
    out = _cli("lists", "update", "--profile", str(profile))
    assert out.returncode == 2 and "has no block list with a url" in out.stderr


@pytest.mark.parametrize("entry", ['{ url = "ftp://x/list.txt", path = "a.txt" }',
                                   '{ url = "https://x/list.txt" }',
                                   '{ path = "a.txt", urls = "https://x/" }'])
def test_a_list_source_needs_an_http_url_and_a_path(tmp_path, entry):
    profile = tmp_path / "p.toml"
    profile.write_text(f"blocklists = [{entry}]\n[exits.direct]\n")
    out = _cli("check", str(profile))
    assert out.returncode == 2 and "blocklists[1]" in out.stderr, out.stderr
