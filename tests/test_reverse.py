"""Reverse entries end to end: two real backends on loopback (HTTP servers in threads that
record each request, its fields and its peer, and answer with the fields a backend names itself
with), the real proxy in this process with a [[reverse]] entry, real clients (requests, curl,
raw sockets).

What is proven: each strategy's distribution, the backend-naming fields gone and Location /
Content-Location / Refresh turned to the Host the client used, errors that name no backend,
failover with no failed request, health probes, Host checks (421), Basic auth (401), TLS
termination, Forwarded only when asked, kept connections, the cache, `listen = "off"`."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections import Counter
from types import SimpleNamespace

import pytest
import requests
from backends import IDENTIFYING, Backend
from helpers import curl, recv_all, recv_until, wait_until
from pki import PublicRoot
from rawserver import start_raw_server


@pytest.fixture
def backends():
    started = [Backend("one"), Backend("two")]
    yield started
    for backend in started:
        backend.handler.release.set()
        backend.stop()


def _entry(backends, fall: int = 1, **keys) -> str:
    """A profile with one reverse entry over `backends` (extra keys as TOML values); probes
    every second, a backend down after `fall` failures and up after one success."""
    lines = ['listen = "127.0.0.1:0"'] + [f"{k} = {v}" for k, v in keys.items()]
    listed = ", ".join(f'"{b.url}"' for b in backends)
    return ('default = "direct"\n[exits.direct]\n[health]\ninterval = 1\n'
            f'fall = {fall}\nrise = 1\n[[reverse]]\nbackends = [{listed}]\n' + "\n".join(lines) + "\n")


def _address(proxy, index: int = 0) -> tuple[str, int]:
    entry = proxy.in_loop(lambda: proxy.server.reverses.entries[index])
    return entry.listen.host, entry.listen.port


def _base(proxy, index: int = 0) -> str:
    host, port = _address(proxy, index)
    return f"http://{host}:{port}"


def _get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=10, allow_redirects=False, **kwargs)


def test_round_robin_spreads_requests_evenly_over_the_backends(start_proxy, backends):
    proxy = start_proxy(_entry(backends, strategy='"round-robin"'))
    answers = Counter(_get(_base(proxy) + "/rr").text.split()[0] for _ in range(10))
    assert answers == {"one": 5, "two": 5}


def test_failover_sends_everything_to_the_first_backend_while_it_is_up(start_proxy, backends):
    proxy = start_proxy(_entry(backends, strategy='"failover"'))
    answers = Counter(_get(_base(proxy) + "/f").text.split()[0] for _ in range(6))
    assert answers == {"one": 6}


def test_least_connections_sends_a_request_to_the_backend_not_busy(start_proxy, backends):
    proxy = start_proxy(_entry(backends, strategy='"least-connections"'))
    base = _base(proxy)
    held: list = []
    waiter = threading.Thread(target=lambda: held.append(_get(base + "/busy?hold=1")))
    waiter.start()
    assert wait_until(lambda: sum(len(b.seen) for b in backends) == 1)
    busy = next(b for b in backends if b.seen)
    idle = next(b for b in backends if b is not busy)
    answers = [_get(base + "/next").text.split()[0] for _ in range(3)]
    assert answers == [idle.name] * 3  # one request in flight on `busy`: never chosen
    busy.handler.release.set()
    waiter.join(10)
    assert held[0].status_code == 200


def test_reverse_responses_name_no_backend(start_proxy, backends):
    proxy = start_proxy(_entry(backends[:1], hosts='["app.example"]'))
    host, port = _address(proxy)
    response = _get(f"http://{host}:{port}/x?location=/moved",
                    headers={"Host": f"app.example:{port}"})
    assert response.status_code == 302
    for name in (*IDENTIFYING, "Server"):
        assert name not in response.headers, name
    public = f"http://app.example:{port}"
    assert response.headers["Location"] == public + "/moved"
    assert response.headers["Content-Location"] == public + "/content"
    assert response.headers["Refresh"] == f"5; url={public}/later"
    raw = "\n".join(f"{k}: {v}" for k, v in response.headers.items()) + response.text
    assert f"127.0.0.1:{backends[0].port}" not in raw


def test_errors_a_client_reads_name_no_backend_address(start_proxy, backends):
    proxy = start_proxy(_entry(backends))
    for backend in backends:
        backend.stop()
    response = _get(_base(proxy) + "/down")
    assert response.status_code in (502, 503)
    for backend in backends:
        assert str(backend.port) not in response.text
    assert "127.0.0.1" not in response.text
    # the owner's log says which backend failed
    assert str(backends[0].port) in proxy.wait_log(str(backends[0].port))


def test_a_dead_backend_costs_no_failed_request(start_proxy, backends):
    proxy = start_proxy(_entry(backends))
    base = _base(proxy)
    assert _get(base + "/warm").status_code == 200
    backends[0].stop()
    statuses = [_get(base + f"/after{i}").status_code for i in range(20)]
    assert statuses == [200] * 20  # a refused connection moves the request to the other
    assert all(path.startswith("/after") for path, _, _ in backends[1].seen[-10:])
    assert wait_until(lambda: not proxy.in_loop(
        lambda: proxy.server.reverses.entries[0].health.is_up(
            f"127.0.0.1:{backends[0].port}")))
    backends[0].start()  # back on its port: probes bring it back
    assert wait_until(lambda: proxy.in_loop(
        lambda: proxy.server.reverses.entries[0].health.is_up(
            f"127.0.0.1:{backends[0].port}")), timeout=10)
    answers = Counter(_get(base + "/back").text.split()[0] for _ in range(4))
    assert answers == {"one": 2, "two": 2}


def test_a_failing_health_path_takes_the_backends_out(start_proxy, backends):
    proxy = start_proxy(_entry(backends, health='{ path = "/healthz?status=500" }'))
    for backend in backends:
        assert wait_until(lambda b=backend: any("/healthz" in p for p, _, _ in b.seen))
    assert wait_until(lambda: not any(proxy.in_loop(
        lambda: [b["up"] for b in proxy.server.reverses.status()[0]["backends"]])))
    status = proxy.in_loop(proxy.server.reverses.status)
    assert "500" in status[0]["backends"][0]["last_error"]
    probes = sum(len(b.seen) for b in backends)
    response = _get(_base(proxy) + "/x")
    assert response.status_code == 503  # none up: no request is sent to a backend
    assert not any(p == "/x" for b in backends for p, _, _ in b.seen)
    assert probes >= 2


def test_another_host_name_gets_421(start_proxy, backends):
    proxy = start_proxy(_entry(backends, hosts='["app.example"]'))
    host, port = _address(proxy)
    assert _get(f"http://{host}:{port}/", headers={"Host": "other.example"}).status_code == 421
    assert _get(f"http://{host}:{port}/", headers={"Host": "APP.example."}).status_code == 200
    assert all(path == "/" for b in backends for path, _, _ in b.seen)
    assert sum(len(b.seen) for b in backends) == 1


def test_basic_auth_is_asked_for_and_never_reaches_the_backend(start_proxy, backends):
    proxy = start_proxy(_entry(backends[:1],
                               auth='{ username = "owner", password = "long enough" }'))
    base = _base(proxy)
    refused = _get(base + "/a")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert _get(base + "/a", auth=("owner", "wrong password")).status_code == 401
    assert not backends[0].seen
    assert _get(base + "/a", auth=("owner", "long enough")).status_code == 200
    assert "Authorization" not in backends[0].seen[0][1]


def test_tls_is_terminated_with_the_entry_certificate(start_proxy, backends, tmp_path):
    root = PublicRoot(tmp_path)
    cert, key = root.issue("app.example")
    proxy = start_proxy(_entry(backends[:1], tls=f'{{ cert = "{cert}", key = "{key}" }}'))
    host, port = _address(proxy)
    done = curl("-sS", "--cacert", str(root.path), "--resolve", f"app.example:{port}:{host}",
                f"https://app.example:{port}/secure?location=/there", "-D", "-")
    assert done.returncode == 0, done.stderr
    assert f"location: https://app.example:{port}/there".encode() in done.stdout.lower()
    plain = socket.create_connection((host, port), timeout=10)
    plain.sendall(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
    assert not recv_all(plain).startswith(b"HTTP/1.1 200")  # no TLS: no answer
    plain.close()
    context = ssl.create_default_context(cafile=str(root.path))
    with socket.create_connection((host, port), timeout=10) as sock, \
            context.wrap_socket(sock, server_hostname="app.example") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("forwarded", [False, True])
def test_forwarded_fields_come_only_from_the_proxy(start_proxy, backends, forwarded):
    proxy = start_proxy(_entry(backends[:1], forwarded=str(forwarded).lower()))
    spoofed = {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9",
               "X-Real-IP": "203.0.113.9", "Via": "1.1 spoof"}
    assert _get(_base(proxy) + "/fwd", headers=spoofed).status_code == 200
    fields = {k.lower(): v for k, v in backends[0].seen[0][1].items()}
    assert "203.0.113.9" not in " ".join(fields.values())
    assert "x-real-ip" not in fields and "via" not in fields
    if forwarded:
        assert fields["x-forwarded-for"] == "127.0.0.1"
        assert fields["forwarded"].startswith("for=127.0.0.1;proto=http")
    else:
        assert "x-forwarded-for" not in fields and "forwarded" not in fields


def test_backend_connections_are_kept_and_reused(start_proxy, backends):
    proxy = start_proxy(_entry(backends[:1]))
    with requests.Session() as session:
        for i in range(5):
            assert session.get(_base(proxy) + f"/k{i}", timeout=10).status_code == 200
    assert len(backends[0].seen) == 5
    assert len(backends[0].handler.connections) == 1


def test_a_post_is_not_sent_twice(start_proxy, backends):
    proxy = start_proxy(_entry(backends))
    response = requests.post(_base(proxy) + "/form", data=b"x" * 1000, timeout=10)
    assert response.status_code == 200 and response.text.endswith("got 1000")
    assert sum(1 for b in backends for path, _, _ in b.seen if path == "/form") == 1


def test_the_cache_answers_a_repeat_without_the_backend(start_proxy, backends):
    proxy = start_proxy(_entry(backends[:1], cache="true"))
    url = _base(proxy) + "/cached?cc=max-age%3D60"
    first, second = _get(url), _get(url)
    assert first.text == second.text == "one /cached"
    assert len(backends[0].seen) == 1
    assert "Age" in second.headers
    assert "X-Powered-By" not in second.headers  # what is stored was already stripped


def test_listen_off_runs_the_reverse_entries_alone(start_proxy, backends):
    profile = _entry(backends[:1]).replace('default = "direct"', 'listen = "off"\ndefault = "direct"')
    proxy = start_proxy(profile)
    assert _get(_base(proxy) + "/alone").text == "one /alone"
    with pytest.raises(OSError):
        socket.create_connection(proxy.address, timeout=2).close()


def test_a_websocket_upgrade_passes_through(start_proxy):
    import aiohttp
    from wsecho import start_ws_echo

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, port = asyncio.run_coroutine_threadsafe(start_ws_echo(), loop).result(10)
    try:
        proxy = start_proxy(
            'default = "direct"\n[exits.direct]\n[[reverse]]\nlisten = "127.0.0.1:0"\n'
            f'backends = ["http://127.0.0.1:{port}"]\n')
        with socket.create_connection(_address(proxy), timeout=10) as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            head = recv_until(sock, b"\r\n\r\n").lower()
        assert head.startswith(b"http/1.1 101")
        assert b"\r\nserver:" not in head  # aiohttp's Server field was taken out of the 101

        async def talk():
            async with aiohttp.ClientSession() as session, \
                    session.ws_connect(_base(proxy) + "/ws") as ws:
                await ws.send_str("hi")
                return (await ws.receive(timeout=10)).data

        assert asyncio.run(talk()) == "echo hi"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_an_idempotent_request_broken_on_one_backend_is_answered_by_another(start_proxy,
                                                                              backends):
    raw = start_raw_server()  # reads a request head, then resets without answering
    slam = raw.script("slam", b"", then="reset")
    try:
        # (fall = 5: one broken request does not take it out, so the POST meets it too)
        first = SimpleNamespace(url=raw.url(""))
        proxy = start_proxy(_entry([first, backends[0]], fall=5, strategy='"failover"'))
        response = _get(_base(proxy) + slam)
        assert response.status_code == 200 and response.text == f"one {slam}"
        assert raw.paths() == [slam.encode()]  # it was tried first, and broke
        # a POST that broke once is not sent again: its effect may have happened
        posted = requests.post(_base(proxy) + slam + "?pay", data=b"1", timeout=10)
        assert posted.status_code == 502
        assert str(raw.port) not in posted.text
        assert raw.paths() == [slam.encode(), f"{slam}?pay".encode()]
        assert not any(path.endswith("?pay") for path, _, _ in backends[0].seen)
    finally:
        raw.close()


def test_a_reload_changes_the_backends_and_reads_the_certificate_again(start_proxy, backends,
                                                                       tmp_path):
    root = PublicRoot(tmp_path)
    cert, key = root.issue("app.example")
    tls = f'{{ cert = "{cert}", key = "{key}" }}'
    proxy = start_proxy(_entry(backends[:1], tls=tls))
    host, port = _address(proxy)

    def fetch() -> tuple[str, bytes]:
        context = ssl.create_default_context(cafile=str(root.path))
        with socket.create_connection((host, port), timeout=10) as sock, \
                context.wrap_socket(sock, server_hostname="app.example") as conn:
            conn.sendall(b"GET /r HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")
            return recv_all(conn).rsplit(b"\r\n", 1)[-1].decode(), conn.getpeercert(True)

    body, first_cert = fetch()
    assert body == "one /r"
    new_cert, new_key = root.issue("app.example")
    new_cert.replace(cert)
    new_key.replace(key)
    proxy.profile.write_text(_entry(backends[1:], tls=tls))
    assert asyncio.run_coroutine_threadsafe(proxy.server.control_reload(),
                                            proxy.loop).result(10) is None
    body, second_cert = fetch()
    assert body == "two /r"
    assert second_cert != first_cert
    assert _address(proxy) == (host, port)  # the same listener


@pytest.mark.parametrize("request_bytes, status", [
    # request smuggling: both framings, or a Content-Length llhttp cannot trust
    ((b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
      b"\r\n\r\n0\r\n\r\n"), b"400"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
     b"400"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 without Host
    (b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", b"501"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 70000 + b"\r\n\r\n", b"431"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40, b"400"),  # TLS to plain HTTP
])
def test_hostile_requests_get_an_error_and_reach_no_backend(start_proxy, backends,
                                                            request_bytes, status):
    proxy = start_proxy(_entry(backends))
    with socket.create_connection(_address(proxy), timeout=10) as sock:
        sock.sendall(request_bytes)
        answer = recv_all(sock)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert not [path for b in backends for path, _, _ in b.seen if not path.startswith("/h")]
    assert b"127.0.0.1" not in answer
    assert "Traceback" not in proxy.log()


def test_reverse_entries_run_from_one_process_and_the_main_profile_only(tmp_path, backends):
    import subprocess
    import sys

    main = tmp_path / "main.toml"
    main.write_text(_entry(backends[:1]))
    served = subprocess.run([sys.executable, "-m", "anonproxy", "serve", "--profile", str(main),
                             "--workers", "2"], capture_output=True, text=True, timeout=30)
    assert served.returncode == 2
    assert "need workers = 1" in served.stderr and "Traceback" not in served.stderr
    other = tmp_path / "other.toml"
    other.write_text(_entry(backends[:1]))
    chooser = tmp_path / "chooser.toml"
    chooser.write_text('default = "direct"\nselectable = ["other.toml"]\n[exits.direct]\n')
    checked = subprocess.run([sys.executable, "-m", "anonproxy", "serve", "--profile",
                              str(chooser), "--listen", "127.0.0.1:0"],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode != 0
    assert "not from a selectable one" in checked.stderr and "Traceback" not in checked.stderr


def test_the_quick_start_in_the_reverse_docs_serves_as_it_says(start_proxy, backends):
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "reverse.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    example = (example.replace("http://127.0.0.1:9001", backends[0].url)
               .replace("http://127.0.0.1:9002", backends[1].url)
               .replace('"127.0.0.1:8443"', '"127.0.0.1:0"'))
    proxy = start_proxy(example)
    base = _base(proxy)
    answers = Counter(_get(base + "/", headers={"Host": "app.example"}).text.split()[0]
                      for _ in range(4))
    assert answers == {"one": 2, "two": 2}
    assert _get(base + "/", headers={"Host": "elsewhere.example"}).status_code == 421
    assert wait_until(lambda: all(any(p == "/healthz" for p, _, _ in b.seen) for b in backends))


def test_the_profile_allow_list_applies_to_reverse_entries(start_proxy, backends):
    proxy = start_proxy(_entry(backends[:1]).replace(
        'default = "direct"', 'allow = ["127.0.0.2/32"]\ndefault = "direct"'))
    host, port = _address(proxy)
    with socket.create_connection((host, port), timeout=10) as refused:  # from 127.0.0.1
        try:
            refused.sendall(b"GET /no HTTP/1.1\r\nHost: a\r\n\r\n")
            assert recv_all(refused) == b""  # closed before a byte was read
        except ConnectionError:
            pass  # (reset before the request went, or as it went: the same refusal)
    with socket.create_connection((host, port), timeout=10,
                                  source_address=("127.0.0.2", 0)) as allowed:
        allowed.sendall(b"GET /yes HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert recv_all(allowed).startswith(b"HTTP/1.1 200")
    assert [path for path, _, _ in backends[0].seen if path in ("/no", "/yes")] == ["/yes"]


def test_a_reload_starts_new_entries_and_stops_those_gone(start_proxy, backends):
    proxy = start_proxy(_entry(backends[:1]))
    old = _address(proxy)
    two = _entry(backends[:1], health='{ path = "/probed-after-reload" }').replace(
        'listen = "127.0.0.1:0"', 'listen = "127.0.0.3:0"')
    proxy.profile.write_text(two)
    assert asyncio.run_coroutine_threadsafe(proxy.server.control_reload(),
                                            proxy.loop).result(10) is None
    assert wait_until(lambda: proxy.in_loop(lambda: [e.listen.host for e in
                                              proxy.server.reverses.entries]) == ["127.0.0.3"])
    assert _get(_base(proxy) + "/new").text == "one /new"
    with pytest.raises(OSError):
        socket.create_connection(old, timeout=2).close()
    # the new entry's backends are probed from the reload on
    assert wait_until(lambda: any(p == "/probed-after-reload" for p, _, _ in backends[0].seen))
