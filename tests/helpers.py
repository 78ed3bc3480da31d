"""Helpers for tests: real clients (curl, raw sockets), and waiting for a condition."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time

import pytest


def curl(*args: str, timeout: float = 60, input: bytes | None = None) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/test installs it)")
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--noproxy", "", *args],
        capture_output=True, timeout=timeout, input=input,
    )


def recv_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def socks_connect(sock: socket.socket, atyp: int, addr: bytes, port: int,
                  methods: bytes = b"\x00") -> bytes:
    sock.sendall(b"\x05" + bytes([len(methods)]) + methods)
    assert sock.recv(2) == b"\x05\x00"
    sock.sendall(b"\x05\x01\x00" + bytes([atyp]) + addr + struct.pack(">H", port))
    return recv_exact(sock, 10)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def dashboard_login_url(proxy, timeout: float = 10) -> str:
    """A one-time dashboard login URL: the one `serve` prints after its listening line (a
    proxy process), or a new one from the server (in-process)."""
    return proxy.login_url(timeout)


def wait_until(predicate, timeout: float = 10, interval: float = 0.02):
    """Poll `predicate` until it returns something true or `timeout` seconds pass; its last
    value (the caller asserts on it, with its own message)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value
