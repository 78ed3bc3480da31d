"""Headless Chromium through the caching proxy: a repeat visit (a fresh browser profile, so the
browser's own cache holds nothing) gets the page's image from the proxy's cache, while the same
image embedded by another site is fetched again (its own partition: no cross-site probing). The
names are known only to the exit, a microsocks whose private /etc/hosts maps them to 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import serving
from test_browser import FLAGS
from upstreams import named_exit

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c0000000001"
                      "0001000002024401003b")  # a 1x1 GIF


class _Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counts: Counter
    lock = threading.Lock()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        with self.lock:
            self.counts[url.path] += 1
        if url.path == "/page":
            image = parse_qs(url.query)["img"][0]
            body = (f'<html><body><img id="i" src="{image}" '
                    'onload="document.body.insertAdjacentHTML(\'beforeend\', '
                    '\'<p id=ok>loaded</p>\')"></body></html>').encode()
            kind, cache = "text/html", "no-store"
        else:
            body, kind, cache = PIXEL, "image/gif", "max-age=3600"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", cache)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_repeat_visit_hits_the_cache_and_another_site_does_not(start_proxy, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/test installs it)")
    named = named_exit(tmp_path, ["page.test", "other.test", "img.test"])
    handler = type("Site", (_Site,), {"counts": Counter()})
    try:
        with serving(handler) as server:
            port = server.server_address[1]
            proxy = start_proxy(f"""
default = "block"
[cache]
enabled = true
[exits.named]
via = ["{named.url}"]
[[rules]]
domains = ["page.test", "other.test", "img.test"]
exit = "named"
""")
            image = f"http://img.test:{port}/pixel.gif"

            def visit(site: str, profile: str) -> bytes:
                return subprocess.run(
                    [chromium, *FLAGS, f"--proxy-server=http://127.0.0.1:{proxy.port}",
                     f"--user-data-dir={tmp_path / profile}", "--virtual-time-budget=5000",
                     "--dump-dom", f"http://{site}:{port}/page?img={image}"],
                    capture_output=True, timeout=90).stdout

            assert b'id="ok"' in visit("page.test", "first")
            assert handler.counts["/pixel.gif"] == 1
            assert b'id="ok"' in visit("page.test", "second")  # a new browser profile
            assert handler.counts["/pixel.gif"] == 1  # ... served by the proxy's cache
            assert handler.counts["/page"] == 2  # (no-store: fetched each time)
            assert b'id="ok"' in visit("other.test", "third")
            assert handler.counts["/pixel.gif"] == 2  # another top-level site: its own entry
    finally:
        named.stop()
