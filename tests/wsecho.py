"""A WebSocket echo origin on loopback (aiohttp), for tests that carry WebSockets through the
proxy: each text message on /ws is answered "echo <text>", and the upgrade request's headers
are recorded in `seen`."""

from __future__ import annotations

from aiohttp import web


async def start_ws_echo(seen: dict[str, str] | None = None) -> tuple[web.AppRunner, int]:
    """Start it in the running loop; (its runner, to clean up, and its port)."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        if seen is not None:
            seen.update(request.headers)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str("echo " + message.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]
