"""Reloading a running proxy, and profiles picked per connection by proxy username."""

from __future__ import annotations

import signal
import socket

from helpers import curl, recv_until


def test_sighup_switches_routes_without_dropping_an_open_tunnel(start_proxy_process, origin,
                                                               tmp_path):
    proxy = start_proxy_process('default = "a"\n[exits.a]\nsource = "127.0.0.2"\n', name="live")
    tunnel = proxy.connect()
    tunnel.sendall(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
    assert recv_until(tunnel, b"\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert origin.last.peer[0] == "127.0.0.2"

    (tmp_path / "live.toml").write_text('default = "b"\n[exits.b]\nsource = "127.0.0.3"\n')
    proxy.process.send_signal(signal.SIGHUP)
    proxy.wait_log("reloaded profile live")
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert origin.last.peer[0] == "127.0.0.3"

    tunnel.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert recv_until(tunnel, b"}").startswith(b"HTTP/1.1 200")  # the old tunnel still works
    assert origin.last.peer[0] == "127.0.0.2"
    tunnel.close()


def test_a_broken_profile_on_reload_keeps_the_running_one(start_proxy_process, origin,
                                                          tmp_path):
    proxy = start_proxy_process('default = "a"\n[exits.a]\nsource = "127.0.0.2"\n', name="live")
    (tmp_path / "live.toml").write_text('default = "a"\n[exits.a]\nsource = "not an ip"\n')
    proxy.process.send_signal(signal.SIGHUP)
    log = proxy.wait_log("reload failed")
    assert 'reload failed, keeping the running profile' in log and 'exits.a.source = "not an ip"' in log
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert origin.last.peer[0] == "127.0.0.2"
    assert proxy.process.poll() is None


def test_cli_reload_signals_the_proxy_on_an_address(start_proxy_process, origin, tmp_path):
    import subprocess
    import sys

    proxy = start_proxy_process('default = "a"\n[exits.a]\nsource = "127.0.0.2"\n', name="live")
    (tmp_path / "live.toml").write_text('default = "b"\n[exits.b]\nsource = "127.0.0.4"\n')
    out = subprocess.run([sys.executable, "-m", "anonproxy", "reload", "--listen",
                          f"{proxy.host}:{proxy.port}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    proxy.wait_log("reloaded profile live")
    assert curl("-x", proxy.url, origin.url("/echo")).returncode == 0
    assert origin.last.peer[0] == "127.0.0.4"


def test_a_proxy_username_selects_a_profile(start_proxy, origin, tmp_path):
    (tmp_path / "uk.toml").write_text('default = "uk"\n[exits.uk]\nsource = "127.0.0.2"\n')
    (tmp_path / "jp.toml").write_text('default = "jp"\n[exits.jp]\nsource = "127.0.0.3"\n')
    proxy = start_proxy('default = "home"\nselectable = ["uk.toml", "jp.toml"]\n'
                        '[exits.home]\nsource = "127.0.0.4"\n')
    cases = [((), "127.0.0.4"), (("-U", "uk:x"), "127.0.0.2"), (("-U", "jp:"), "127.0.0.3")]
    for args, peer in cases:
        assert curl(*args, "-x", proxy.url, origin.url("/echo")).returncode == 0
        assert origin.last.peer[0] == peer
        assert origin.last.header("proxy-authorization") is None
    assert curl("-x", f"socks5h://jp:x@{proxy.host}:{proxy.port}", origin.url("/echo")).returncode == 0
    assert origin.last.peer[0] == "127.0.0.3"
    seen = len(origin.received)
    out = curl("-U", "fr:x", "-x", proxy.url, origin.url("/echo"), "-i")
    assert out.stdout.startswith(b"HTTP/1.1 407") and b"choose one of: jp, uk" in out.stdout
    with socket.create_connection(proxy.address) as sock:
        sock.sendall(b"\x05\x01\x02")
        assert sock.recv(2) == b"\x05\x02"
        sock.sendall(b"\x01\x02fr\x01x")
        assert sock.recv(2) == b"\x01\x01"  # authentication failed: no silent default
    assert len(origin.received) == seen
