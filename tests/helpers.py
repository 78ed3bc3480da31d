"""Helpers for tests: real clients (curl, raw sockets)."""

from __future__ import annotations

import shutil
import socket
import subprocess

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
