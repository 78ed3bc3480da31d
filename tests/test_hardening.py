"""Hostile input, exhaustion and faults, end to end through the real proxy process.

Counted, not guessed: file descriptors from /proc/PID/fd, memory from VmRSS in
/proc/PID/status. Smuggling tables live in test_smuggling.py.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import threading
import time
import urllib.request

import h11
import pytest
from helpers import curl, recv_all, recv_until
from origin import pattern
from rawserver import start_raw_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from upstreams import free_port, microsocks

from anonproxy.profiles import ProfileError, parse_profile

# --- broken profiles ------------------------------------------------------------------------

KEYS = ["listen", "allow", "default", "geoip", "resolve", "exits", "rules", "headers", "limits",
        "health", "auth", "selectable", "nonsense"]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 70000) | st.floats(allow_nan=False)
    | st.text(max_size=30) | st.sampled_from(["direct", "block", "tor", "socks4://1.2.3.4:1",
                                               "socks5://127.0.0.1:1080", "*.x", "re:(", "GB"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["via", "pool", "source", "tor", "domains", "cidrs", "ports",
                         "countries", "exit", "strategy", "fallback", "control", "x"]),
        children, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_generated_broken_profiles_give_one_line_errors_never_tracebacks(data):
    try:
        parse_profile(data, "gen.toml")
    except ProfileError as error:
        for line in str(error).splitlines():
            assert line.startswith("gen.toml: ") and "Traceback" not in line


# --- exhaustion ----------------------------------------------------------------------------

def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slowloris_clients_are_cut_and_do_not_delay_a_normal_client(start_proxy, origin):
    proxy = start_proxy('default = "direct"\n[exits.direct]\n[limits]\nheader_timeout = 2\n')
    slow = []
    for _ in range(200):
        sock = proxy.connect()
        sock.sendall(b"GET http://127.0.0.1/ HTTP/1.1\r\n")
        slow.append(sock)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for sock in slow:
                try:
                    sock.send(b"X")
                except OSError:
                    pass
            time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        out = curl("-x", proxy.url, origin.url("/echo"))
        assert out.returncode == 0 and time.monotonic() - started < 1.5
        time.sleep(3)  # past header_timeout: every trickler has been answered and closed
        cut = 0
        for sock in slow:
            sock.settimeout(2)
            try:
                if recv_all(sock).startswith(b"HTTP/1.1 408"):
                    cut += 1
            except OSError:
                cut += 1
        assert cut == len(slow)
    finally:
        stop.set()
        thread.join()
        for sock in slow:
            sock.close()


def test_file_descriptors_return_to_baseline_after_load(start_proxy, origin):
    proxy = start_proxy()
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    time.sleep(0.3)
    baseline = open_fds(proxy.process.pid)
    socks = [proxy.connect() for _ in range(300)]
    for sock in socks[:150]:
        sock.sendall(f"GET {origin.url('/bytes/100')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    for sock in socks[150:]:
        sock.sendall(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
    assert open_fds(proxy.process.pid) > baseline + 200
    for sock in socks:
        sock.close()
    # what may stay: idle upstream connections kept for reuse, at most 64 per destination
    # (closed after 30 s idle); every tunnel and client connection is gone
    allowed = baseline + 64 + 2
    deadline = time.monotonic() + 30  # 300 connections close in a few seconds, slower under load
    while open_fds(proxy.process.pid) > allowed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds(proxy.process.pid) <= allowed


# --- faults --------------------------------------------------------------------------------

def test_an_exit_killed_mid_download_fails_that_download_promptly_only(start_proxy, origin, tmp_path):
    ms = microsocks("127.0.0.2", tmp_path)
    proxy = start_proxy(f'default = "ms"\n[exits.ms]\nvia = ["{ms.url}"]\n')
    size = 200 * 1024 * 1024
    result = {}

    def download():
        started = time.monotonic()
        result["out"] = curl("-x", proxy.url, origin.url(f"/bytes/{size}"), "--limit-rate", "20M",
                             "-o", os.devnull, timeout=60)
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=download)
    thread.start()
    time.sleep(1.0)
    ms.kill()
    thread.join(30)
    assert result["out"].returncode != 0  # truncated, and told so
    assert result["seconds"] < 10
    assert proxy.process.poll() is None
    direct = curl("-x", proxy.url, origin.url("/bytes/1000"), "-i")
    assert direct.stdout.startswith(b"HTTP/1.1 502")  # the exit is down: fails closed, clearly
    assert b"exit 'ms' failed at hop 1" in direct.stdout


@pytest.fixture
def raw():
    server = start_raw_server()
    yield server
    server.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def get(sock: socket.socket, conn: h11.Connection, url: str) -> tuple[int, bytes]:
    """One GET on a kept-alive connection, read with a strict client."""
    sock.sendall(conn.send(h11.Request(method="GET", target=url, headers=[("Host", "x")])))
    sock.sendall(conn.send(h11.EndOfMessage()))
    status, body = 0, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(1 << 16))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            return status, b"".join(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("closed")


def socks5_connect(proxy, host: str, port: int) -> socket.socket:
    sock = proxy.connect()
    sock.sendall(b"\x05\x01\x00")
    assert sock.recv(2) == b"\x05\x00"
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack(">H", port))
    assert sock.recv(10)[:2] == b"\x05\x00"
    return sock


def http_connect(proxy, host: str, port: int) -> socket.socket:
    sock = proxy.connect()
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    return sock


def connections_now(admin_port: int) -> int:
    """The proxy's own count of connection tasks (the dashboard API's status)."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{admin_port}/api/status", timeout=10) as response:
        return json.load(response)["connections_now"]


def settle_tasks(admin_port: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while (now := connections_now(admin_port)) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


def settle_fds(pid: int, allowed: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while open_fds(pid) > allowed and time.monotonic() < deadline:
        time.sleep(0.1)
    return open_fds(pid)


@pytest.mark.parametrize("where", ["origin", "exit"])
def test_an_upstream_that_never_answers_gets_a_prompt_clear_error_and_others_carry_on(
        start_proxy, origin, raw, where):
    """`origin`: the destination accepts the request and says nothing (response_timeout);
    `exit`: a SOCKS5 exit accepts the TCP connection and says nothing (connect_timeout)."""
    limits = "[limits]\nresponse_timeout = 3\nconnect_timeout = 3\n"
    if where == "origin":
        proxy = start_proxy(f'default = "direct"\n[exits.direct]\n{limits}')
        target, expected = raw.url("/silent"), b"did not answer within 3 s"
    else:
        proxy = start_proxy(f'default = "direct"\n[exits.direct]\n[exits.mute]\n'
                            f'via = ["socks5://{raw.host}:{raw.port}"]\n'
                            f'[[rules]]\ndomains = ["mute.test"]\nexit = "mute"\n{limits}')
        target, expected = "http://mute.test/", b"exit 'mute'"
    started = time.monotonic()
    hung = []
    for _ in range(5):
        sock = proxy.connect()
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        hung.append(sock)
    out = curl("-x", proxy.url, origin.url("/echo"))  # others carry on meanwhile ...
    assert out.returncode == 0
    assert select.select(hung, [], [], 0)[0] == []  # ... not after the hung ones were answered
    for sock in hung:
        answer = recv_until(sock, b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 504 "), answer
        assert expected in recv_all(sock) or expected in answer
        sock.close()
    assert time.monotonic() - started < 10  # the 3 s limit, not the default 60 s (or never)
    assert proxy.process.poll() is None


def test_an_origin_resetting_mid_response_is_a_prompt_error_and_leaks_nothing(start_proxy, origin, raw):
    admin = free_port("127.0.0.1")
    proxy = start_proxy(f'default = "direct"\nadmin = "127.0.0.1:{admin}"\n[exits.direct]\n')
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    baseline = open_fds(proxy.process.pid)
    for _ in range(50):
        started = time.monotonic()
        out = curl("-x", proxy.url, raw.url("/reset"), "-o", os.devnull, "--fail", timeout=20)
        # partial file, an HTTP error (502: the reset came before the head was read), empty
        # reply or receive failure: never a complete download
        assert out.returncode in (18, 22, 52, 56), out
        assert time.monotonic() - started < 5
    assert proxy.process.poll() is None
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert settle_fds(proxy.process.pid, baseline + 1) <= baseline + 1  # (+1: the kept /echo upstream)
    assert settle_tasks(admin) == 0


def test_a_pool_fails_over_under_load_and_only_requests_in_flight_at_the_kill_fail(
        start_proxy, origin, tmp_path):
    a, b = microsocks("127.0.0.2", tmp_path), microsocks("127.0.0.5", tmp_path)
    try:
        admin = free_port("127.0.0.1")
        proxy = start_proxy(f'default = "p"\nadmin = "127.0.0.1:{admin}"\n'
                            f'[exits.a]\nvia = ["{a.url}"]\n[exits.b]\n'
                            f'via = ["{b.url}"]\n[exits.p]\npool = ["a", "b"]\n'
                            f'strategy = "failover"\n[health]\ninterval = 3600\n')
        size = 300_000
        url = origin.url(f"/bytes/{size}?close=1")  # the origin closes: no idle upstreams kept
        assert curl("-x", proxy.url, url, "-o", os.devnull).returncode == 0
        baseline = open_fds(proxy.process.pid)
        with proxy.connect():  # (the task count counts: an open client connection is one)
            deadline = time.monotonic() + 5
            while connections_now(admin) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert connections_now(admin) == 1
        results: list[tuple[float, float, bool]] = []  # (start, end, complete and intact)
        done = threading.Semaphore(0)
        expected = pattern(size)

        def client(n: int) -> None:
            for _ in range(n):
                started, ok = time.monotonic(), False
                try:
                    with proxy.connect() as sock:
                        ok = get(sock, h11.Connection(h11.CLIENT), url) == (200, expected)
                except (OSError, h11.ProtocolError):
                    pass
                results.append((started, time.monotonic(), ok))
                done.release()

        threads = [threading.Thread(target=client, args=(10,)) for _ in range(20)]
        for thread in threads:
            thread.start()
        for _ in range(60):
            assert done.acquire(timeout=30)
        kill_started = time.monotonic()
        a.kill()
        killed = time.monotonic()
        for thread in threads:
            thread.join(60)
        assert len(results) == 200
        failed = [(s, e) for s, e, ok in results if not ok]
        # every failure was in flight when the member died; everything begun after it succeeded
        assert all(s <= killed and e >= kill_started for s, e in failed), (failed, kill_started)
        after = [ok for s, _, ok in results if s > killed]
        assert len(after) >= 50 and all(after)
        assert len(failed) <= 20  # at most one per client connection
        peers = [r.peer[0] for r in origin.received[-len(after):]]
        assert set(peers) == {"127.0.0.5"}
        assert settle_fds(proxy.process.pid, baseline) <= baseline
        assert settle_tasks(admin) == 0
        assert proxy.process.poll() is None
    finally:
        a.kill()
        b.kill()


def keep_alive_gets(proxy, url: str, connections: int, per_connection: int) -> None:
    """`url` answers b"good" (rawserver): a lean client, so the proxy is what the time goes to."""
    request = f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    failures = []

    def run() -> None:
        with proxy.connect() as sock:
            for _ in range(per_connection):
                sock.sendall(request)
                if not recv_until(sock, b"\r\n\r\ngood").endswith(b"\r\n\r\ngood"):
                    failures.append(url)
                    return

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures


def tunnels(proxy, raw, count: int) -> None:
    for _ in range(count):
        with http_connect(proxy, raw.host, raw.port) as sock:
            sock.sendall(b"GET /good HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
            answers = b""
            while answers.count(b"\r\n\r\ngood") < 50 and (data := sock.recv(65536)):
                answers += data
            assert answers.count(b"\r\n\r\ngood") == 50


def test_memory_returns_to_its_level_after_2000_requests_and_tunnels(start_proxy, raw):
    proxy = start_proxy()
    url = raw.url("/good")
    pid = proxy.process.pid

    def round_() -> int:
        keep_alive_gets(proxy, url, 10, 200)
        tunnels(proxy, raw, 20)
        time.sleep(0.5)  # idle
        return rss_kib(pid)

    round_()  # warm-up: buffers, caches and allocator arenas reach their working size
    levels = [round_() for _ in range(4)]
    steps = sorted(b - a for a, b in zip(levels, levels[1:]))
    # Each round is 2000 requests and 20 tunnels: a leak of 1 KiB per request alone would add
    # ~2000 KiB to every step, twice the margin. A one-off step (a busier moment needing more
    # buffers at once, kept by the allocator) shows in one step only, hence the median.
    # Measured here: steps of 0 to 60 KiB, once a single one of ~3 MB under a parallel run.
    assert steps[1] < 1024, levels


def flood(raw, proxy, how: str) -> socket.socket:
    request = b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n"
    if how == "connect":
        sock = http_connect(proxy, raw.host, raw.port)
    elif how == "socks5":
        sock = socks5_connect(proxy, raw.host, raw.port)
    else:
        sock, request = proxy.connect(), request.replace(b"/flood", raw.url("/flood").encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.sendall(request)
    assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    return sock  # and it reads no more


@pytest.mark.parametrize("how", ["connect", "http", "socks5"])
def test_a_client_that_stops_reading_stops_the_upstream_not_grows_the_proxy(start_proxy, raw, how):
    proxy = start_proxy()
    pid = proxy.process.pid
    before = rss_kib(pid)
    sock = flood(raw, proxy, how)
    try:
        # wait until the upstream is blocked: the raw server's writes stop advancing
        deadline, last = time.monotonic() + 15, -1
        while time.monotonic() < deadline and raw.flooded != last:
            last = raw.flooded
            time.sleep(0.5)
        # socket buffers on loopback hold a few MB at each of the three hops; without
        # backpressure the proxy would read the upstream at GB/s into its own memory
        # (measured here: blocked after ~10 MB, the proxy ~1 MB larger)
        assert raw.flooded < 64 << 20, raw.flooded
        assert rss_kib(pid) - before < 20 << 10, rss_kib(pid) - before
        time.sleep(1)
        assert raw.flooded < 64 << 20, raw.flooded  # still blocked
    finally:
        sock.close()
    assert proxy.process.poll() is None


def test_socks5_ipv4_mapped_address_cannot_dodge_a_cidr_rule(start_proxy, origin):
    proxy = start_proxy('default = "direct"\n[exits.direct]\n'
                        '[[rules]]\ncidrs = ["127.0.0.0/8"]\nexit = "block"\n')
    mapped = b"\x00" * 10 + b"\xff\xff" + socket.inet_aton(origin.host)
    with proxy.connect() as sock:
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\x00"
        sock.sendall(b"\x05\x01\x00\x04" + mapped + struct.pack(">H", origin.port))
        assert sock.recv(10)[:2] == b"\x05\x02"  # not allowed, by the rule
    assert not origin.connections
