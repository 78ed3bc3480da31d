"""The dashboard page in headless Chromium shows the HTTPS inspection section (hosts opened and
skipped, the CA's file, requests per opened site), the cache section (entries, hit ratio) and
the reverse entries (each backend up or down, with its traffic) once the profile has them,
with real traffic behind each figure; and hides them when off. The reverse entries' API
(/api/reverse, and "reverse" in /api/state) through the real dashboard: a real backend that
answers and one on a port nothing listens on, each said to be what it is; the owner's token
needed."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from helpers import answer, curl, dashboard_login_url, serving, wait_until
from pki import PublicRoot, https_origin
from test_admin import Admin
from test_blocklists_browser import FLAGS
from test_cache import _Counting
from upstreams import free_port

ONION = "xgn2njwtatbrqgvs7edhlwsfvtgcvmv5hdkuavxf2duvzb2fguvjyqad.onion"


def _page(proxy):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    playwright = sync_api.sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                         args=[f for f in FLAGS if f != "--headless"])
    page = browser.new_page()
    page.goto(dashboard_login_url(proxy))
    return playwright, browser, page


@pytest.mark.slow
@pytest.mark.browser
def test_the_inspection_and_cache_sections(start_proxy, tmp_path, local_ca):
    root = PublicRoot(tmp_path)
    site, server = https_origin(*root.issue("127.0.0.1"))
    handler = type("Handler", (_Counting,), {"counts": Counter(), "conditional": [],
                                             "lock": threading.Lock()})
    admin = free_port("127.0.0.1")
    try:
        with serving(handler) as plain:
            proxy = start_proxy(f'admin = "127.0.0.1:{admin}"\ndefault = "direct"\n'
                                f'[cache]\nenabled = true\n[exits.direct]\n[inspect]\n'
                                f'hosts = ["127.0.0.1"]\nskip = ["bank.test"]\n'
                                f'ca_bundle = "{root.path}"\n')
            assert curl("-sS", "--cacert", local_ca, "-x", proxy.url,
                        f"https://127.0.0.1:{site.port}/echo").returncode == 0
            url = f"http://127.0.0.1:{plain.server_address[1]}/c?cc=max-age%3D60"
            for _ in range(4):
                assert requests.get(url, proxies={"http": proxy.url}, timeout=10).ok
            playwright, browser, page = _page(proxy)
            try:
                page.wait_for_selector("#inspect-section:not([hidden])")
                assert page.inner_text("#inspect-hosts") == "127.0.0.1"
                assert page.inner_text("#inspect-skip") == "bank.test"
                assert page.inner_text("#inspect-ca") == local_ca
                row = page.wait_for_selector("#inspect-opened tbody tr")
                assert row.inner_text().split("\t") == [f"127.0.0.1:{site.port}", "1"]
                page.wait_for_selector("#cache-section:not([hidden])")
                figures = page.inner_text("#cache-figures")
                # (the opened /echo was a miss too; it allows no reuse, so it was not kept)
                assert figures.startswith("1 entries") and "hit ratio 60%" in figures, figures
                assert "(3 hits, 2 misses, 0 revalidated)" in figures
            finally:
                browser.close()
                playwright.stop()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.browser
def test_both_sections_are_hidden_when_off(start_proxy):
    admin = free_port("127.0.0.1")
    proxy = start_proxy(f'admin = "127.0.0.1:{admin}"\ndefault = "direct"\n[exits.direct]\n')
    playwright, browser, page = _page(proxy)
    try:
        page.wait_for_selector("#rules tbody tr")  # the page has its state
        assert not page.is_visible("#inspect-section")
        assert not page.is_visible("#cache-section")
        assert not page.is_visible("#reverse-section")  # (no [[reverse]] entry either)
    finally:
        browser.close()
        playwright.stop()


class _Backend(BaseHTTPRequestHandler):
    """A backend behind a reverse entry: answers every GET with "the app"."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        answer(self, b"the app")

    def log_message(self, *args) -> None:
        pass


def _reverse_profile(admin: int, up: str, down: str) -> str:
    """A dashboard and one reverse entry (Basic auth, its cache) over a backend that answers
    (`up`, host:port) and one where nothing listens (`down`); probes every second, a backend
    down after one failure."""
    return (f'admin = "127.0.0.1:{admin}"\ndefault = "direct"\n[exits.direct]\n'
            '[health]\ninterval = 1\nfall = 1\nrise = 1\n[[reverse]]\n'
            'listen = "127.0.0.1:0"\n'
            f'backends = ["http://{up}", "http://{down}"]\n'
            'strategy = "failover"\ncache = true\n'
            'auth = { username = "owner", password = "long enough" }\n')


def _down(entries: list[dict], backend: str) -> bool:
    return any(not b["up"] for entry in entries for b in entry["backends"]
               if b["backend"] == backend)


def test_the_reverse_api_says_which_backend_is_up_and_which_down(start_proxy):
    port, dead = free_port("127.0.0.1"), f"127.0.0.1:{free_port('127.0.0.1')}"
    with serving(_Backend) as backend:
        alive = f"127.0.0.1:{backend.server_address[1]}"
        proxy = start_proxy(_reverse_profile(port, alive, dead))
        listen = proxy.in_loop(lambda: proxy.server.reverses.entries[0]).listen.authority()
        for _ in range(3):
            response = requests.get(f"http://{listen}/page", auth=("owner", "long enough"),
                                    timeout=10)
            assert response.text == "the app"
        admin = Admin(port)
        assert wait_until(lambda: _down(admin.json("/api/reverse"), dead)), \
            admin.json("/api/reverse")
        found = admin.json("/api/reverse")
    assert len(found) == 1
    entry = found[0]
    assert (entry["listen"], entry["strategy"], entry["hosts"]) == (listen, "failover", None)
    assert (entry["tls"], entry["auth"], entry["forwarded"], entry["onion"]) == (
        False, True, False, None)
    assert entry["cache"]["entries"] == 0  # (nothing the backend said may be kept)
    assert entry["cache"]["hits"] == 0 and entry["cache"]["max_bytes"] > 0
    assert isinstance(entry["connections"], int)
    backends = {b["backend"]: b for b in entry["backends"]}
    assert list(backends) == [alive, dead]  # in the profile's order
    up, down = backends[alive], backends[dead]
    assert up["up"] is True and up["requests"] == 3 and up["failures"] == 0
    assert up["in_flight"] == 0 and up["down_bytes"] >= 3 * len("the app")
    assert down["up"] is False and down["last_error"] == "connection refused"
    assert down["requests"] == 0 and down["since"] <= time.time()
    assert down["last_probe"] is not None
    # /api/state carries the same list
    state = admin.json("/api/state")["reverse"]
    assert [b["backend"] for b in state[0]["backends"]] == [alive, dead]
    # its visitors' requests are listed as such, and their bytes are the entry's (above), not
    # an exit's: the traffic per exit stays empty, as no forward request was made
    assert [c["proto"] for c in admin.json("/api/connections")] == ["reverse"] * 3
    assert admin.json("/api/status")["traffic"] == {}
    # and it is the owner's only, like every other route
    assert admin.send("GET", "/api/reverse", token=False).status_code == 401
    wrong = admin.get("/api/reverse", headers={"X-Anonproxy-Token": "guess"})
    assert wrong.status_code == 401 and "needs a login" in wrong.json()["error"]


@pytest.mark.slow
@pytest.mark.browser
def test_the_reverse_section(start_proxy):
    port, dead = free_port("127.0.0.1"), f"127.0.0.1:{free_port('127.0.0.1')}"
    with serving(_Backend) as backend:
        alive = f"127.0.0.1:{backend.server_address[1]}"
        proxy = start_proxy(_reverse_profile(port, alive, dead))
        entry = proxy.in_loop(lambda: proxy.server.reverses.entries[0])
        listen = entry.listen.authority()
        for _ in range(2):
            assert requests.get(f"http://{listen}/", auth=("owner", "long enough"),
                                timeout=10).ok

        def publish() -> None:  # what the onion service has once tor published it
            from anonproxy.reverse.onion import OnionService, OnionSettings

            service = OnionService(OnionSettings(Path("unused.onion-key")), entry.label)
            service.address, service.published = ONION, True
            entry.onion_service = service

        proxy.in_loop(publish)
        assert wait_until(lambda: _down(Admin(port).json("/api/reverse"), dead))
        playwright, browser, page = _page(proxy)
        try:
            page.wait_for_selector("#reverse-section:not([hidden])")
            title = page.inner_text(f'#reverse div[data-listen="{listen}"] p')
            assert re.fullmatch(rf"{listen} \(auth, cache, onion\), failover, \d+ open; "
                                rf"onion {ONION}", title), title
            up = page.inner_text(f'#reverse tr[data-backend="{alive}"]').split("\t")
            assert up[0] == alive and up[1].startswith("up") and up[2:5] == ["0", "2", "0"]
            assert re.fullmatch(r"\d+ B / \d+ B", up[5]) and not up[5].endswith(" 0 B"), up
            row = page.wait_for_selector(f'#reverse tr[data-backend="{dead}"] td.down')
            assert row is not None
            down = page.inner_text(f'#reverse tr[data-backend="{dead}"]').split("\t")
            assert down[0] == dead and down[1].startswith("down since ")
            assert down[1].endswith("(connection refused)") and down[2:5] == ["0", "0", "0"]
        finally:
            browser.close()
            playwright.stop()
