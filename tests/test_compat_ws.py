"""ws:// absolute-form upgrades through the proxy (issue 16): aiohttp's
ws_connect("ws://…", proxy="http://…") sends `GET ws://host/path` with an Upgrade; it is carried
as a WebSocket tunnel, the profile's header policy applied to the upgrade request."""

from __future__ import annotations

import asyncio

import aiohttp
from conftest import DIRECT
from wsecho import start_ws_echo

PROFILE = DIRECT + """
[headers]
user_agent = { replace = "Mozilla/5.0 (test)" }
"""


async def _round_trip(proxy_url: str) -> tuple[list[str], dict[str, str]]:
    seen: dict[str, str] = {}
    runner, port = await start_ws_echo(seen)
    got = []
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"ws://127.0.0.1:{port}/ws", proxy=proxy_url,
                headers={"X-Forwarded-For": "1.2.3.4"}) as ws:
            for text in ("one", "two"):
                await ws.send_str(text)
                got.append((await ws.receive(timeout=10)).data)
    finally:
        await runner.cleanup()
    return got, seen


def test_aiohttp_ws_connect_through_the_proxy(start_proxy):
    proxy = start_proxy(PROFILE)
    got, seen = asyncio.run(_round_trip(proxy.url))
    assert got == ["echo one", "echo two"]
    assert seen["User-Agent"] == "Mozilla/5.0 (test)"  # the header policy applied
    assert "X-Forwarded-For" not in seen
    assert seen["Upgrade"].lower() == "websocket"


def test_a_ws_url_without_an_upgrade_is_still_refused(proxy):
    import socket
    with socket.create_connection(proxy.address) as sock:
        sock.sendall(b"GET ws://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 501 ")
