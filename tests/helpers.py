"""Helpers for tests: real clients (curl, raw sockets), and waiting for a condition."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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


def answer(handler: BaseHTTPRequestHandler, body: bytes, kind: str | None = None,
           headers: tuple[tuple[str, str], ...] = ()) -> None:
    """A 200 with `body` (and its length) from a test server's request handler."""
    handler.send_response(200)
    if kind is not None:
        handler.send_header("Content-Type", kind)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler],
            host: str = "127.0.0.1") -> Iterator[ThreadingHTTPServer]:
    """A small HTTP server of a test's own on loopback, in a thread, shut down afterwards."""
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def c_build_possible(python: str = sys.executable) -> bool:
    """A C compiler ($CC, else gcc) and `python`'s headers: what setup.py compiles the hot path
    with (anonproxy/native.py)."""
    code = "import sysconfig; print(sysconfig.get_paths()['include'])"
    include = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
    return (shutil.which(os.environ.get("CC", "gcc")) is not None
            and (Path(include) / "Python.h").exists())
