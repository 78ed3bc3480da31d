"""The process as a whole: logs, shutdown, limits, and isolation between connections."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

from helpers import curl, recv_all, recv_until, wait_until
from origin import pattern


def test_logs_never_contain_paths_queries_or_bodies(proxy, origin):
    curl("-x", proxy.url, origin.url("/echo?token=SECRETQUERY"), "-d", "SECRETBODY")
    curl("-x", f"socks5h://{proxy.host}:{proxy.port}", origin.url("/secretpath/echo"))
    curl("-x", proxy.url, origin.url("/status/404?x=SECRETQUERY"))
    log = proxy.wait_log("status=404")
    assert f"127.0.0.1:{origin.port}" in log and "exit=direct" in log
    for secret in ("SECRETQUERY", "SECRETBODY", "secretpath", "/echo", "/status"):
        assert secret not in log


def test_one_line_per_request_with_protocol_host_exit_status_and_bytes(proxy, origin):
    curl("-x", proxy.url, origin.url("/bytes/1234"))
    line = [ln for ln in proxy.wait_log("down=1234").splitlines() if " http " in ln][-1]
    assert f"http 127.0.0.1:{origin.port} exit=direct status=200 up=0 down=1234" in line


def test_sigterm_drains_active_transfers_and_exits_zero(proxy_process, origin):
    """A download in flight when SIGTERM arrives completes; idle connections close; exit 0."""
    proxy = proxy_process
    with proxy.connect() as idle, proxy.connect() as busy:  # closed even when a check fails
        idle.sendall(f"GET {origin.url('/bytes/10')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        recv_until(idle, pattern(10))
        size = 20 * 1024 * 1024
        busy.sendall(f"GET {origin.url(f'/bytes/{size}')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        first = busy.recv(1000)  # the transfer has started
        assert first.startswith(b"HTTP/1.1 200")
        proxy.process.send_signal(signal.SIGTERM)
        assert idle.recv(10) == b""  # the idle keep-alive connection is closed (recv waits)
        body = first.split(b"\r\n\r\n", 1)[1]
        while len(body) < size:
            chunk = busy.recv(1 << 20)
            if not chunk:
                break
            body += chunk
        assert len(body) == size, f"{len(body)} of {size} bytes, then EOF:\n{proxy.log()[-2000:]}"
        assert body == pattern(size)
    assert proxy.process.wait(15) == 0
    with socket.socket() as sock:
        assert sock.connect_ex(proxy.address) != 0  # no longer listening


def test_sigint_stops_cleanly(proxy_process):
    assert proxy_process.stop(signal.SIGINT) == 0


def test_slow_header_client_is_cut_and_does_not_delay_others(start_proxy, origin):
    proxy = start_proxy('default = "direct"\n[exits.direct]\n[limits]\nheader_timeout = 1\n')
    slow = proxy.connect()
    slow.sendall(b"GET http://127.0.0.1/ HTTP/1.1\r\nX-Slow: ")
    started = time.monotonic()
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert time.monotonic() - started < 1
    slow.settimeout(5)
    reply = recv_all(slow)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in reply
    slow.close()


def test_connection_limit_refuses_cleanly(start_proxy, origin):
    proxy = start_proxy('default = "direct"\n[exits.direct]\n[limits]\nmax_connections = 3\n')
    held = [proxy.connect() for _ in range(3)]
    for sock in held:
        sock.sendall(b"GET ")  # started but unfinished heads keep the slots busy
    assert wait_until(lambda: proxy.in_loop(proxy.server.connections_now) == 3)
    with proxy.connect() as sock:
        sock.settimeout(5)
        sock.sendall(f"GET {origin.url('/echo')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert recv_all(sock).startswith(b"HTTP/1.1 503 ")
    with proxy.connect() as sock:
        sock.settimeout(5)
        sock.sendall(b"\x05\x01\x00")
        assert recv_all(sock) == b"\x05\xff"
    for sock in held:
        sock.close()
    assert wait_until(lambda: proxy.in_loop(proxy.server.connections_now) == 0)
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0


def test_bad_input_never_takes_the_process_down(proxy, origin):
    garbage = [b"\x00" * 100, b"\x05\xff" + b"\x00" * 300, b"CONNECT \r\n\r\n",
               b"GET http://[::1 HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
               b"GET http://a/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n"]
    for raw in garbage:
        with proxy.connect() as sock:
            sock.settimeout(15)
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            recv_all(sock)
    assert proxy.alive()
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert "Traceback" not in proxy.log()


def test_a_reset_client_does_not_disturb_a_parallel_transfer(proxy, origin):
    size = 30 * 1024 * 1024
    result = {}

    def download():
        result["out"] = curl("-x", proxy.url, origin.url(f"/bytes/{size}"), "--limit-rate", "50M")

    thread = threading.Thread(target=download)
    thread.start()
    for _ in range(20):
        sock = proxy.connect()
        sock.sendall(f"GET {origin.url(f'/bytes/{size}')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.recv(100)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST mid-transfer
    thread.join()
    assert result["out"].returncode == 0 and result["out"].stdout == pattern(size)


def test_serve_with_a_broken_profile_names_it_and_exits_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('default = "direct"\n[exits.direct]\nsource = "nope"\n')
    out = subprocess.run([sys.executable, "-m", "anonproxy", "serve", "--profile", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip() == f'anonproxy: {path}: exits.direct.source = "nope": not an IP address'


def test_listen_address_in_use_is_a_clear_error(proxy):
    out = subprocess.run([sys.executable, "-m", "anonproxy", "serve", "--listen",
                          f"{proxy.host}:{proxy.port}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"cannot listen on {proxy.host}:{proxy.port}" in out.stderr
