"""Headless Chromium (Debian's) browsing an opened HTTPS host through the proxy: the local CA put
into its NSS database by `anonproxy ca install` (and nothing else: without it the page does not
load), the page and its image fetched inside TLS with the header policy applied there (the
User-Agent replaced), both reaching the origin through the exit. The names are known only to
the exit, a microsocks whose private /etc/hosts maps them to 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from pki import PublicRoot, https_origin
from test_browser import FLAGS
from upstreams import named_exit

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def site(tmp_path):
    root = PublicRoot(tmp_path)
    origin, server = https_origin(*root.issue("shop.test"))
    named = named_exit(tmp_path, ["shop.test"])
    yield root, origin, named
    named.stop()
    server.shutdown()
    server.server_close()


def _chromium(home, proxy, url: str, tmp_path) -> bytes:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/test installs it)")
    out = subprocess.run(
        [chromium, *FLAGS, f"--proxy-server=http://127.0.0.1:{proxy.port}",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=5000",
         "--dump-dom", url],
        capture_output=True, timeout=90, env={**os.environ, "HOME": str(home)})
    return out.stdout


def test_chromium_browses_an_opened_host_with_the_policy_applied_inside_tls(
        start_proxy, site, tmp_path):
    root, origin, named = site
    proxy = start_proxy(f"""
default = "block"
[exits.named]
via = ["{named.url}"]
[[rules]]
domains = ["shop.test"]
exit = "named"
[inspect]
hosts = ["shop.test"]
ca_bundle = "{root.path}"
[headers]
user_agent = {{ replace = "Mozilla/5.0 (anonproxy test)" }}
""")
    page = f"https://shop.test:{origin.port}/page?sub=https://shop.test:{origin.port}/bytes/500"

    # without the local CA in its NSS database, Chromium refuses the leaf: nothing loads
    bare = tmp_path / "bare-home"
    bare.mkdir()
    assert b'id="ok"' not in _chromium(bare, proxy, page, tmp_path)
    assert origin.received == []  # (the site was verified and kept out of it)

    home = tmp_path / "home"
    home.mkdir()
    installed = subprocess.run(["anonproxy", "ca", "install"], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "HOME": str(home)})
    assert installed.returncode == 0, installed.stderr
    assert b'<p id="ok">loaded</p>' in _chromium(home, proxy, page, tmp_path / "again")
    targets = [r.target for r in origin.received]
    assert any(t.startswith("/page") for t in targets) and "/bytes/500" in targets
    for record in origin.received:
        assert record.header("User-Agent") == "Mozilla/5.0 (anonproxy test)"
        assert record.peer[0] == "127.0.0.2"  # through the exit
    assert f"https shop.test:{origin.port} exit=named status=200" in proxy.wait_log(
        "https shop.test")
