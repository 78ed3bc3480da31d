"""Headless Chromium (Debian's) through the proxy with EasyList and EasyPrivacy: a local page
whose own script loads while its script from an ad server EasyList names is blocked; and the
dashboard's page showing what a list blocked.

The page (page.test) and the ad server's name (ad.doubleclick.net) are known only to the exit,
a microsocks whose private /etc/hosts maps both to 127.0.0.1, and a rule sends both there: so
without the lists the ad script would load from the local server, and nothing leaves the
machine either way."""

from __future__ import annotations

import shutil
import subprocess
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from helpers import answer, curl, dashboard_login_url, serving
from test_browser import FLAGS
from upstreams import free_port, microsocks

pytestmark = [pytest.mark.slow, pytest.mark.browser]

EASYLIST_DIR = Path("/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist")
AD_PATH = "/ddm/adj/N1234/ad.js"


class _Site(BaseHTTPRequestHandler):
    """The page, its own script, and the script the ad server would serve."""

    seen: list[str]
    port: int

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.path == "/page.html":
            body = (f'<html><body><p id="page">page</p>'
                    f'<script src="http://ad.doubleclick.net:{self.port}{AD_PATH}"></script>'
                    f'<script src="http://page.test:{self.port}/own.js"></script>'
                    "</body></html>").encode()
            kind = "text/html"
        elif self.path in ("/own.js", AD_PATH):
            mark = "own" if self.path == "/own.js" else "ad"
            body = f'document.body.dataset.{mark} = "loaded";'.encode()
            kind = "application/javascript"
        else:
            self.send_error(404)
            return
        answer(self, body, kind)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def site():
    seen: list[str] = []
    with serving(_Site) as server:
        _Site.seen, _Site.port = seen, server.server_address[1]
        yield server.server_address[1], seen


@pytest.fixture
def named_exit(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 page.test ad.doubleclick.net\n")
    exit_ = microsocks("127.0.0.2", tmp_path, hosts_file=hosts)
    yield exit_
    exit_.stop()


@pytest.mark.parametrize("how", ["http", "socks5"])
def test_chromium_gets_the_page_but_not_the_ad_script_easylist_names(
        start_proxy, named_exit, site, tmp_path, how):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/test installs it)")
    if not (EASYLIST_DIR / "easylist.txt").is_file():
        pytest.skip("webext-ublock-origin-chromium is not installed (scripts/test installs it)")
    port, seen = site
    proxy = start_proxy(f"""
blocklists = ["{EASYLIST_DIR / 'easylist.txt'}", "{EASYLIST_DIR / 'easyprivacy.txt'}"]
default = "block"
[exits.named]
via = ["{named_exit.url}"]
[[rules]]
domains = ["page.test", "ad.doubleclick.net"]
exit = "named"
""")
    out = subprocess.run([chromium, *FLAGS, f"--proxy-server={how}://127.0.0.1:{proxy.port}",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                          "--dump-dom", f"http://page.test:{port}/page.html"],
                         capture_output=True, timeout=90)
    assert b'<p id="page">page</p>' in out.stdout, out.stderr[-2000:]
    assert b'data-own="loaded"' in out.stdout
    assert b"data-ad=" not in out.stdout
    assert "/own.js" in seen and AD_PATH not in seen
    log = proxy.wait_log("easylist.txt (rule: ||ad.doubleclick.net^)")
    protocol = "http" if how == "http" else "socks5"
    assert f"{protocol} ad.doubleclick.net:{port} exit=- status=" in log
    assert "is blocked by" in log and "easylist.txt (rule: ||ad.doubleclick.net^)" in log


def test_the_dashboard_page_shows_blocks_per_list_and_the_latest_match(start_proxy, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    (tmp_path / "hosts.txt").write_text("0.0.0.0 ads.hosts.test\n")
    admin_port = free_port("127.0.0.1")
    proxy = start_proxy(f'admin = "127.0.0.1:{admin_port}"\nblocklists = ["hosts.txt"]\n'
                        "[exits.direct]\n")
    assert b"403" in curl("-x", proxy.url, "-i", "http://cdn.ads.hosts.test/x").stdout
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=[f for f in FLAGS if f != "--headless"])
        try:
            page = browser.new_page()
            page.goto(dashboard_login_url(proxy))
            row = page.wait_for_selector('#blocklists tbody tr[data-list="hosts.txt"]')
            assert row.inner_text().split("\t") == ["hosts.txt", "hosts", "1", "1"]
            match = page.wait_for_selector("#matches tbody tr")
            assert "cdn.ads.hosts.test:80" in match.inner_text()
            assert "ads.hosts.test" in match.inner_text().split("\t")[-1]
            assert page.is_visible("#blocklists-section")
        finally:
            browser.close()
