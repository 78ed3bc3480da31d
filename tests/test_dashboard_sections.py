"""The dashboard page in headless Chromium shows the HTTPS inspection section (hosts opened and
skipped, the CA's file, requests per opened site) and the cache section (entries, hit ratio)
once the profile turns them on, with real traffic behind each figure; and hides both when off."""

from __future__ import annotations

import shutil
import threading
from collections import Counter

import pytest
import requests
from helpers import curl, dashboard_login_url, serving
from pki import PublicRoot, https_origin
from test_blocklists_browser import FLAGS
from test_cache import _Counting
from upstreams import free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]


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


def test_both_sections_are_hidden_when_off(start_proxy):
    admin = free_port("127.0.0.1")
    proxy = start_proxy(f'admin = "127.0.0.1:{admin}"\ndefault = "direct"\n[exits.direct]\n')
    playwright, browser, page = _page(proxy)
    try:
        page.wait_for_selector("#rules tbody tr")  # the page has its state
        assert not page.is_visible("#inspect-section")
        assert not page.is_visible("#cache-section")
    finally:
        browser.close()
        playwright.stop()
