"""Hostile input, exhaustion and faults (a first part of the hardening work)."""

from __future__ import annotations

import os
import threading
import time

from helpers import curl, recv_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from upstreams import microsocks

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
