"""Hostile input, exhaustion and faults, end to end through the real proxy (a process where
descriptors and memory are counted).

Counted, not guessed: file descriptors from /proc/PID/fd, memory from VmRSS in
/proc/PID/status (tests/probes.py). Smuggling tables live in test_smuggling.py, faults in
test_faults.py.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time

import pytest
from helpers import curl, recv_until, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from probes import (
    client_connections,
    http_connect,
    keep_alive_gets,
    open_fds,
    rss_kib,
    socks5_connect,
    tunnels,
)

from anonproxy.config.profiles import ProfileError, parse_profile

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
            time.sleep(0.2)  # the trickle itself: a byte per client every 0.2 s

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        out = curl("-x", proxy.url, origin.url("/echo"))
        assert out.returncode == 0 and time.monotonic() - started < 1.5
        # every trickler is answered and closed once header_timeout (2 s) has passed: each is
        # read until then, with a margin (a timeout is what shows one that was never cut)
        cut_by = time.monotonic() + 5
        outcomes: dict[str, int] = {}
        for sock in slow:
            outcome = _cut_outcome(sock, max(0.1, cut_by - time.monotonic()))
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # every trickler is cut, and the 408 is what they get; a CPU-starved CI runner once
        # showed 6 of 200 closed with no answer and no 408 logged (not reproduced since; the
        # outcome table says which it was if it comes back)
        assert set(outcomes) <= {"408", "closed without an answer"}, outcomes
        assert outcomes.get("408", 0) >= len(slow) - 10, outcomes
    finally:
        stop.set()
        thread.join()
        for sock in slow:
            sock.close()


def _cut_outcome(sock: socket.socket, timeout: float) -> str:
    """How the proxy ended a trickling client: "408" when the answer arrived, else what the
    socket saw instead (a timeout means the proxy never cut it)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return "still open: " + repr(data[:40])
    except OSError:
        pass  # a reset after the answer (the trickler kept sending): what arrived is read
    if not data:
        return "closed without an answer"
    return "408" if data.startswith(b"HTTP/1.1 408") else "answered " + repr(data[:40])


def test_file_descriptors_return_to_baseline_after_load(start_proxy_process, origin):
    proxy = start_proxy_process()
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert wait_until(lambda: client_connections(proxy.process.pid, proxy.port) == 0)
    baseline = open_fds(proxy.process.pid)
    socks = [proxy.connect() for _ in range(300)]
    try:
        for sock in socks[:150]:
            sock.sendall(f"GET {origin.url('/bytes/100')} HTTP/1.1\r\nHost: x\r\n"
                         "Connection: close\r\n\r\n".encode())
        for sock in socks[150:]:
            sock.sendall(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
        # the load is real: 150 tunnels hold two descriptors each once the proxy has taken
        # them all (the GETs may be done and closed by then)
        deadline = time.monotonic() + 15
        while open_fds(proxy.process.pid) <= baseline + 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_fds(proxy.process.pid) > baseline + 200
    finally:
        for sock in socks:
            sock.close()
    # what may stay: idle upstream connections kept for reuse, at most 64 per destination
    # (closed after 30 s idle); every tunnel and client connection is gone
    allowed = baseline + 64 + 2
    deadline = time.monotonic() + 30  # 300 connections close in a few seconds, slower under load
    while open_fds(proxy.process.pid) > allowed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds(proxy.process.pid) <= allowed


# --- memory and backpressure ------------------------------------------------------------

def test_memory_returns_to_its_level_after_2000_requests_and_tunnels(start_proxy_process, raw):
    proxy = start_proxy_process()
    url = raw.url("/good")
    pid = proxy.process.pid

    def round_() -> int:
        keep_alive_gets(proxy, url, 10, 200)
        tunnels(proxy, raw, 20)
        assert wait_until(lambda: client_connections(pid, proxy.port) == 0)  # idle
        return rss_kib(pid)

    round_()  # warm-up: buffers, caches and allocator arenas reach their working size
    levels = [round_() for _ in range(4)]
    steps = sorted(b - a for a, b in itertools.pairwise(levels))
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
def test_a_client_that_stops_reading_stops_the_upstream_not_grows_the_proxy(start_proxy_process,
                                                                            raw, how):
    proxy = start_proxy_process()
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
        time.sleep(1)  # what is checked: a second later, still blocked
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
