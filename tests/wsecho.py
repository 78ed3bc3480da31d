"""aiohttp origins on loopback: `start_app` serves an app on a free port, and `start_ws_echo` a
WebSocket echo for tests that carry WebSockets through the proxy: each text message on /ws is
answered "echo <text>", and the upgrade request's headers are recorded in `seen`."""

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
    return await start_app(app)


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1 on a free port, in the running loop: (its runner, to clean up,
    and its port)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]
