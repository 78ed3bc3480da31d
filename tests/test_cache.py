"""The response cache end to end: a counting origin on loopback (it answers what its query
asks for: Cache-Control, ETag, Vary, Set-Cookie, a body size, and honours If-None-Match), real
clients (requests, curl), the real proxy with `[cache] enabled = true`.

Each RFC 9111 rule the cache applies is one test, counting what reached the origin; and the
partitions: a response stored for one identity (profile, exit, top-level site, identity epoch)
is never served to another."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from helpers import curl, serving

CACHED = '[cache]\nenabled = true\nmax_bytes = 1048576\nmax_object_bytes = 65536\n'


class _Counting(BaseHTTPRequestHandler):
    """GET /any/path?cc=...&etag=...&vary=...&cookie=1&size=N: counts requests per path and
    remembers the conditional fields it saw."""

    protocol_version = "HTTP/1.1"
    counts: Counter
    conditional: list
    lock = threading.Lock()

    def do_HEAD(self) -> None:
        self.do_GET(body=False)

    def do_GET(self, body: bool = True) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.lock:
            self.counts[url.path] += 1
            self.conditional.append(self.headers.get("If-None-Match"))
        etag = query.get("etag")
        if etag and self.headers.get("If-None-Match") == f'"{etag}"':
            self.send_response(304)
            self.send_header("ETag", f'"{etag}"')
            if "cc" in query:
                self.send_header("Cache-Control", query["cc"])
            self.end_headers()
            return
        content = (query.get("body", "x") * int(query.get("size", "1"))).encode()
        if "vary" in query:
            content = json.dumps({"lang": self.headers.get(query["vary"])}).encode()
        self.send_response(200)
        for name, key in (("Cache-Control", "cc"), ("Vary", "vary")):
            if key in query:
                self.send_header(name, query[key])
        if etag:
            self.send_header("ETag", f'"{etag}"')
        if "cookie" in query:
            self.send_header("Set-Cookie", "id=123")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def origin():
    handler = type("Handler", (_Counting,), {"counts": Counter(), "conditional": []})
    with serving(handler) as server:
        server.counts = handler.counts
        server.conditional = handler.conditional
        server.url = lambda path: f"http://127.0.0.1:{server.server_address[1]}{path}"
        yield server


@pytest.fixture
def proxy(start_proxy):
    return start_proxy(f'default = "direct"\n{CACHED}[exits.direct]\n')


def _get(proxy, url: str, **headers) -> requests.Response:
    return requests.get(url, proxies={"http": proxy.url}, headers=headers, timeout=10)


def test_a_fresh_response_is_served_from_memory_with_its_age(proxy, origin):
    url = origin.url("/fresh?cc=max-age%3D60&size=3000")
    first, second = _get(proxy, url), _get(proxy, url)
    assert first.content == second.content == b"x" * 3000
    assert origin.counts["/fresh"] == 1  # the origin was not contacted again
    assert "Age" not in first.headers and int(second.headers["Age"]) >= 0
    assert second.headers["Cache-Control"] == "max-age=60"


@pytest.mark.parametrize("query, headers", [
    ("cc=no-store", {}),
    ("cc=private%2C%20max-age%3D60", {}),
    ("cc=max-age%3D60&cookie=1", {}),  # sets a cookie: one browser's
    ("cc=max-age%3D60", {"Authorization": "Basic dTpw"}),
    ("cc=max-age%3D60&size=70000", {}),  # larger than max_object_bytes
    ("", {}),  # nothing says it may be stored (no validator for heuristics either)
])
def test_what_must_not_be_stored_is_not(proxy, origin, query, headers):
    url = origin.url(f"/never?{query}")
    for _ in range(2):
        assert _get(proxy, url, **headers).status_code == 200
    assert origin.counts["/never"] == 2


def test_authorization_with_public_may_be_stored(proxy, origin):
    url = origin.url("/public?cc=public%2C%20max-age%3D60")
    for _ in range(2):
        _get(proxy, url, Authorization="Basic dTpw")
    assert origin.counts["/public"] == 1


def test_vary_keeps_variants_apart(proxy, origin):
    url = origin.url("/vary?cc=max-age%3D60&vary=Accept-Language")
    seen = [_get(proxy, url, **{"Accept-Language": lang}).json()["lang"]
            for lang in ("en", "de", "en", "de")]
    assert seen == ["en", "de", "en", "de"]
    assert origin.counts["/vary"] == 2


def test_a_stale_response_is_revalidated_and_the_client_gets_the_whole_200(proxy, origin):
    url = origin.url("/stale?cc=max-age%3D0&etag=v1&size=500")
    first, second = _get(proxy, url), _get(proxy, url)
    assert second.status_code == 200 and second.content == first.content == b"x" * 500
    assert origin.counts["/stale"] == 2
    assert origin.conditional == [None, '"v1"']  # the second asked If-None-Match: the 304 path


def test_a_stale_response_revalidated_for_a_closing_client_comes_whole_before_its_end(
        proxy, origin):
    """The origin's 304 to the cache's own validators is the client's 200 from the store: the
    client, reading to the connection's end (`Connection: close`), gets all of it before the
    end, which is not sent when the exchange with the origin ends."""
    url = origin.url("/closing?cc=max-age%3D0&etag=v1&size=700")
    assert _get(proxy, url).content == b"x" * 700
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n" + b"x" * 700)
    assert origin.conditional == [None, '"v1"']  # (the 304 path)


def test_a_client_no_cache_goes_to_the_origin(proxy, origin):
    url = origin.url("/nocache?cc=max-age%3D60")
    _get(proxy, url)
    _get(proxy, url, **{"Cache-Control": "no-cache"})
    _get(proxy, url, **{"Cache-Control": "max-age=0"})
    assert origin.counts["/nocache"] == 3


def test_a_client_revalidating_its_own_copy_gets_the_origins_answer(proxy, origin):
    url = origin.url("/own?cc=max-age%3D60&etag=v1")
    _get(proxy, url)
    mine = _get(proxy, url, **{"If-None-Match": '"v1"'})
    assert mine.status_code == 304
    assert origin.counts["/own"] == 2


def test_partitions_by_top_level_site(proxy, origin):
    url = origin.url("/img?cc=max-age%3D60")
    _get(proxy, url, Referer="https://a.example/page")
    _get(proxy, url, Referer="https://www.a.example/other")  # the same site: a hit
    _get(proxy, url, Referer="https://b.example/page")  # another site: its own entry
    _get(proxy, url, Origin="https://b.example")  # b.example again (by Origin): a hit
    _get(proxy, url)  # a page that says nothing: a partition of its own
    assert origin.counts["/img"] == 3


def test_partitions_by_profile(start_proxy, origin, tmp_path):
    (tmp_path / "other.toml").write_text(f'default = "direct"\n{CACHED}')
    proxy = start_proxy(f'default = "direct"\nselectable = ["other.toml"]\n{CACHED}')
    url = origin.url("/prof?cc=max-age%3D60")
    _get(proxy, url)
    via_other = requests.get(url, timeout=10, proxies={
        "http": f"http://other:x@127.0.0.1:{proxy.port}"})
    assert via_other.status_code == 200
    _get(proxy, url)
    assert origin.counts["/prof"] == 2


def test_a_new_identity_starts_with_an_empty_cache(proxy, origin):
    url = origin.url("/ident?cc=max-age%3D60")
    _get(proxy, url)
    _get(proxy, url)
    assert origin.counts["/ident"] == 1
    proxy.in_loop(proxy.server.ctx.new_identity)
    _get(proxy, url)
    assert origin.counts["/ident"] == 2


def test_curl_head_and_get_are_kept_apart(proxy, origin):
    url = origin.url("/head?cc=max-age%3D60&size=10")
    head = curl("-sS", "-I", "-x", proxy.url, url)
    assert head.returncode == 0 and b"200" in head.stdout.split(b"\r\n", 1)[0]
    body = curl("-sS", "-x", proxy.url, url)
    assert body.stdout == b"x" * 10
    again = curl("-sS", "-x", proxy.url, url)
    assert again.stdout == b"x" * 10
    assert origin.counts["/head"] == 2  # HEAD, then GET; the second GET was a hit


def test_inside_an_opened_https_connection(start_proxy, tmp_path, local_ca):
    from http.server import ThreadingHTTPServer

    from pki import PublicRoot, server_context

    root = PublicRoot(tmp_path)
    handler = type("Handler", (_Counting,), {"counts": Counter(), "conditional": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = server_context(*root.issue("127.0.0.1")).wrap_socket(server.socket,
                                                                         server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proxy = start_proxy(f'default = "direct"\n{CACHED}[exits.direct]\n[inspect]\n'
                            f'hosts = ["127.0.0.1"]\nca_bundle = "{root.path}"\n')
        url = f"https://127.0.0.1:{server.server_address[1]}/tls?cc=max-age%3D60&size=2000"
        bodies = [curl("-sS", "--cacert", local_ca, "-x", proxy.url, url).stdout
                  for _ in range(3)]
        assert bodies == [b"x" * 2000] * 3
        assert handler.counts["/tls"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_status_the_dashboard_and_cache_clear(start_proxy, origin, capsys):
    from test_admin import Admin
    from upstreams import free_port

    from anonproxy.cli.remote import cache_clear, status
    from anonproxy.wire.address import Address

    port = free_port("127.0.0.1")
    proxy = start_proxy(f'admin = "127.0.0.1:{port}"\ndefault = "direct"\n{CACHED}'
                        "[exits.direct]\n")
    url = origin.url("/seen?cc=max-age%3D60&size=1000")
    for _ in range(3):
        _get(proxy, url)
    found = Admin(port).json("/api/cache")
    assert found["enabled"] and found["entries"] == 1 and found["hits"] == 2
    assert found["misses"] == 1 and found["hit_ratio"] == 0.667 and found["bytes"] > 1000
    assert "/seen" not in json.dumps(Admin(port).json("/api/state"))  # never a URL
    admin = Address("127.0.0.1", port)
    assert status(admin, None, proxy.url) == 0
    assert "cache        1 entries" in capsys.readouterr().out
    assert cache_clear(admin, None, proxy.url) == 0
    assert "cache cleared (1 entries)" in capsys.readouterr().out
    _get(proxy, url)
    assert origin.counts["/seen"] == 2


def test_a_large_storable_body_is_read_and_stored_not_spliced_past_the_cache(start_proxy, origin):
    """Past 256 KiB a plain-HTTP body would move by splice, which the cache cannot see: one
    to be stored is read instead, and the repeat is a hit."""
    proxy = start_proxy('default = "direct"\n[cache]\nenabled = true\nmax_bytes = 8388608\n'
                        'max_object_bytes = 2097152\n[exits.direct]\n')
    url = origin.url("/large?cc=max-age%3D60&size=600000")
    first, second = _get(proxy, url), _get(proxy, url)
    assert len(first.content) == len(second.content) == 600000
    assert origin.counts["/large"] == 1
    assert "Age" in second.headers
    too_large = origin.url("/larger?cc=max-age%3D60&size=3000000")  # over max_object_bytes
    assert len(_get(proxy, too_large).content) == len(_get(proxy, too_large).content) == 3000000
    assert origin.counts["/larger"] == 2
