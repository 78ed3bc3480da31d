"""A hop that refuses our credentials, as a SOCKS5 client sees it: reply 0x02 (connection not
allowed by ruleset) whatever the hop's kind (issue 16)."""

from __future__ import annotations

import socket

import pytest
import requests
from helpers import socks_connect
from upstreams import microsocks, tinyproxy


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_a_hop_refusing_our_credentials_is_reply_0x02(start_proxy, origin, tmp_path, kind):
    if kind == "http":
        hop = tinyproxy("127.0.0.1", tmp_path, user="alice", password="right")
    else:
        hop = microsocks("127.0.0.1", tmp_path, user="alice", password="right")
    try:
        proxy = start_proxy(f"""
default = "x"
[exits.x]
via = ["{kind}://alice:wrong@{hop.host}:{hop.port}"]
""")
        with proxy.connect() as sock:
            reply = socks_connect(sock, 1, socket.inet_aton(origin.host), origin.port)
        assert reply[:2] == b"\x05\x02", reply
        # and an HTTP client is told which hop refused, and why
        answer = requests.get(origin.url("/echo"), proxies={"http": proxy.url}, timeout=10)
        assert answer.status_code == 502 and "hop 1" in answer.text
        if kind == "http":  # tinyproxy answers wrong credentials with 401
            assert "refuses our credentials (401" in answer.text
    finally:
        hop.kill()
