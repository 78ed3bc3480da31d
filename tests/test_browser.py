"""Headless Chromium (Debian's) through the proxy: a page and its subresource from two local
origins, by --proxy-server (HTTP and SOCKS5) and by --proxy-pac-url; the origins must see no
identifying header and nothing of the proxy.

The origins are reached by names (page.test, img.test) that only the exit knows: a microsocks
whose private /etc/hosts maps them to 127.0.0.1. So every load proves that Chromium handed the
name to the proxy (no DNS of its own) and that the proxy did not resolve it either; and
Chromium's implicit bypass of loopback addresses does not apply."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from upstreams import microsocks

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--disable-features=Translate"]


@pytest.fixture
def named_exit(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 page.test img.test\n")
    exit_ = microsocks("127.0.0.2", tmp_path, hosts_file=hosts)
    yield exit_
    exit_.stop()


@pytest.mark.parametrize("how", ["http", "socks5", "pac"])
def test_chromium_loads_a_page_and_its_subresource_through_the_proxy(
        start_proxy, named_exit, origin, second_origin, tmp_path, how):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/test installs it)")
    # only the two test names are served; whatever else the browser tries on its own (update
    # checks, safe browsing) is refused by rule before any name is looked up
    proxy = start_proxy(f"""
default = "block"
[exits.named]
via = ["{named_exit.url}"]
[[rules]]
domains = ["page.test", "img.test"]
exit = "named"
""")
    image = second_origin.url("/bytes/500", host="img.test")
    page = origin.url(f"/page?sub={image}", host="page.test")
    proxy_flag = {
        "http": f"--proxy-server=http://127.0.0.1:{proxy.port}",
        "socks5": f"--proxy-server=socks5://127.0.0.1:{proxy.port}",
        "pac": f"--proxy-pac-url=http://127.0.0.1:{proxy.port}/proxy.pac",
    }[how]
    out = subprocess.run([chromium, *FLAGS, proxy_flag, f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=5000", "--dump-dom", page],
                         capture_output=True, timeout=90)
    assert b'<p id="ok">loaded</p>' in out.stdout, out.stderr[-2000:]
    assert any(r.target.startswith("/page") for r in origin.received)
    assert any(r.target == "/bytes/500" for r in second_origin.received)  # the subresource
    for record in (*origin.received, *second_origin.received):
        assert record.peer[0] == "127.0.0.2"  # through the exit
        names = {n.lower() for n in record.names()}
        assert not names & {"via", "x-forwarded-for", "forwarded", "proxy-connection",
                            "proxy-authorization", "sec-ch-ua-full-version-list"}
    protocol = "http" if how == "http" else "socks5"  # the PAC file puts SOCKS5 first
    log = proxy.wait_log(f"{protocol} img.test:{second_origin.port}")
    assert f"{protocol} img.test:{second_origin.port} exit=named" in log
