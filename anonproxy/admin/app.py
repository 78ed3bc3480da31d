"""The dashboard's web application: its guards and its API (aiohttp.web, imported here and by
pages.py only).

Pages (pages.py): `/` (the sections, or without a session only a login form) and its static
files; `/login` (GET with a one-time login token from `serve` or `anonproxy dashboard`, or POST
of one pasted into the form) sets the session cookie and redirects to `/`. API under `/api/`:
GET status, exits, rules, connections, tor, blocklists, inspect, cache, reverse, state (all
at once), events (server-sent events, a `tick` a second); POST reload, profile (switch), newnym,
login-token, cache/clear; DELETE connections (clear).

Guards, in order, on every request:
1. Host must name the admin address (or, on loopback, localhost/127.0.0.1/[::1] with its port):
   a DNS-rebinding page cannot make the browser talk to us under another name.
2. When a password is set: HTTP Basic, compared in constant time.
3. Every route but the page shell, the login form and /static/ (so every `/api/` route, reads
   and the event stream included) needs proof of being the owner: the per-run API token in
   `X-Anonproxy-Token` (the CLI reads it from the runtime directory, which only the owner can
   read), or, from the browser, the session cookie (HttpOnly, SameSite=Strict, set by /login)
   together with that session's page key in `X-Anonproxy-Session`; else 401. The cookie alone
   is not enough: browsers send it to every port of this host, so a page another account
   serves on 127.0.0.1:<its port> receives it. The page key it cannot have: /login hands it
   out once, in the fragment of its redirect (`/#key=...`, which goes to no server and into no
   Referer), and the page keeps it in localStorage, which is per origin, port included.
4. Anything but GET/HEAD must carry an Origin, if any, that is ours. The page key header is
   also what a cross-site form cannot send (nor know).
Public without a session: the login form, and /static/ (app.js and style.css: code and style,
no data, no token). `/` with a valid cookie is the page shell, which holds no data either (the
script fetches it with the key); without, the login form. Responses are `no-store`, framed by
nothing, carry no Server header, and the page's CSP allows only its own origin (forms may
post only to it).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import time
from pathlib import Path

from aiohttp import web

from anonproxy import logs
from anonproxy.admin import pages, snapshot
from anonproxy.admin.activity import Activity
from anonproxy.admin.login import Logins
from anonproxy.policy.geo import GeoDB, GeoError
from anonproxy.wire.address import Address, is_loopback_host, is_unspecified_host

TICK = 1.0  # seconds between live updates
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
}


async def open_control_socket(server, listen: Address) -> tuple[AdminApp, Path, Path | None] | None:
    """The dashboard's API on a unix socket in the runtime directory, for a serve without a
    dashboard (status, reload, newnym): the app, the socket and its token file; None, with a
    warning in the log, when the directory or the socket cannot be made."""
    from anonproxy.admin.control import (
        RuntimeDirError,
        control_socket_for,
        prepare_runtime_dir,
        write_token,
    )

    path = control_socket_for(listen)
    app = AdminApp(server, Address("localhost", 0), Logins(), None, Activity(), unix=path)
    try:
        prepare_runtime_dir()
        await app.start()
    except (OSError, RuntimeDirError) as error:  # status then has nothing to ask
        logs.log.warning("no control socket for status, reload and newnym (%s): %s", path,
                         getattr(error, "strerror", None) or error)
        await app.stop()
        return None
    return app, path, write_token(path, app.logins.api_token)


class AdminApp:
    """The dashboard for one running ProxyServer: its aiohttp runner and live-update streams."""

    def __init__(self, server, address: Address, logins: Logins, password: str | None,
                 activity: Activity, unix: Path | None = None) -> None:
        """`unix`: serve on this unix socket instead of `address` (a serve without a
        dashboard: the CLI's status, reload and newnym; no browser can reach it)."""
        self.server = server
        self.address = address
        self.unix = unix
        self.logins = logins
        self.password = password
        self.activity = activity
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._geo: tuple[object, GeoDB | None] = (None, None)  # (context, its database)

    async def start(self) -> Address:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.add_routes(pages.routes(self.logins, lambda: self.cookie))
        for name, handler in (
                ("status", self._status), ("exits", self._exits), ("tor", self._tor),
                ("rules", self._section(lambda ctx, _: snapshot.rules(ctx))),
                ("connections", self._section(lambda _, activity: activity.entries())),
                ("blocklists", self._section(snapshot.blocklists)),
                ("inspect", self._section(snapshot.inspection)),
                ("cache", self._section(snapshot.cache)), ("reverse", self._reverse),
                ("state", self._state),
                ("events", self._events)):
            app.router.add_get(f"/api/{name}", handler)
        app.router.add_post("/api/reload", self._reload)
        app.router.add_post("/api/profile", self._switch)
        app.router.add_post("/api/newnym", self._newnym)
        app.router.add_post("/api/login-token", self._login_token)
        app.router.add_delete("/api/connections", self._clear)
        app.router.add_post("/api/cache/clear", self._cache_clear)
        app.on_response_prepare.append(_security_headers)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        if self.unix is not None:
            self.unix.unlink(missing_ok=True)  # (one left by a serve that was killed)
            await web.UnixSite(self._runner, str(self.unix)).start()
            os.chmod(self.unix, 0o600)  # (in the 0700 runtime directory from the start)
            return self.address
        site = web.TCPSite(self._runner, self.address.host, self.address.port,
                           reuse_address=True)
        await site.start()
        _host, port = self._runner.addresses[0][:2]
        self.address = Address(self.address.host, port)
        return self.address

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- guards -----------------------------------------------------------------------------

    def _host_ok(self, host: str | None) -> bool:
        if self.unix is not None:
            return True  # a unix socket in the owner's 0700 directory: no page reaches it
        if host is None:
            return False
        if is_unspecified_host(self.address.host) and self.password is not None:
            return True  # every address of this machine; the password guards it
        port = self.address.port
        allowed = {self.address.authority(0).lower()}
        if is_loopback_host(self.address.host):
            allowed |= {f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
        return host.lower() in allowed

    @property
    def cookie(self) -> str:
        """The session cookie's name: one per dashboard port (cookies ignore ports)."""
        return f"anonproxy-{self.address.port}"

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if not self._host_ok(request.headers.get("Host")):
            return _error(421, "this dashboard answers only to its own address "
                               f"({self.address.authority(0)})")
        if self.password is not None and not _password_ok(request, self.password):
            response = _error(401, "the dashboard needs its password")
            response.headers["WWW-Authenticate"] = 'Basic realm="anonproxy", charset="UTF-8"'
            return response
        cookie = request.cookies.get(self.cookie)
        owner = self.logins.api_token_ok(request.headers.get("X-Anonproxy-Token")) \
            or self.logins.session_ok(cookie, request.headers.get("X-Anonproxy-Session"))
        public = request.path in ("/", "/login") or request.path.startswith("/static/")
        if not owner and not public:  # everything not listed as public needs the owner
            return _error(401, "this dashboard needs a login: open the link `anonproxy "
                               "dashboard` gives, or send the X-Anonproxy-Token header")
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if request.path == "/login" and origin == "null":
                origin = None  # a form post under no-referrer; only the owner's token logs in
            if origin is not None and origin != f"http://{request.headers['Host']}":
                return _error(403, f"cross-origin request from {origin[:100]} refused")
        request["owner"] = owner
        request["shell"] = owner or self.logins.cookie_ok(cookie)
        return await handler(request)

    # -- reading --------------------------------------------------------------------------------

    def _geo_for(self, ctx) -> GeoDB | None:
        """The active profile's GeoIP database, for checking exits' declared countries."""
        if ctx.geo is not None:
            return ctx.geo
        if self._geo[0] is not ctx:
            try:
                self._geo = (ctx, GeoDB.open(ctx.profile.geoip))
            except GeoError:
                self._geo = (ctx, None)
        return self._geo[1]

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(snapshot.overview(self.server, self.activity))

    async def _exits(self, request: web.Request) -> web.Response:
        ctx = self.server.ctx
        return web.json_response(snapshot.exits(ctx, self._geo_for(ctx)))

    def _section(self, make):
        """The GET handler of a section made from the active profile and the activity."""
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(make(self.server.ctx, self.activity))
        return handler

    async def _tor(self, request: web.Request) -> web.Response:
        return web.json_response(await snapshot.tors(self.server))

    async def _reverse(self, request: web.Request) -> web.Response:
        return web.json_response(snapshot.reverse(self.server))

    async def _state(self, request: web.Request) -> web.Response:
        ctx = self.server.ctx
        return web.json_response({
            "status": snapshot.overview(self.server, self.activity),
            "exits": snapshot.exits(ctx, self._geo_for(ctx)),
            "rules": snapshot.rules(ctx),
            "blocklists": snapshot.blocklists(ctx, self.activity),
            "inspect": snapshot.inspection(ctx, self.activity),
            "cache": snapshot.cache(ctx, self.activity),
            "reverse": snapshot.reverse(self.server),
            "connections": self.activity.entries(),
            "tor": await snapshot.tors(self.server),
            "series": list(self.activity.series),
        })

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a `tick` each second with the overview (without the profile list,
        which the page reads from /api/state) and the traffic sample."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            while not self._closing.is_set():
                data = {"status": snapshot.overview(self.server, self.activity, profiles=False),
                        "sample": self.activity.series[-1] if self.activity.series else None}
                await response.write(f"event: tick\ndata: {json.dumps(data)}\n\n".encode())
                try:
                    async with asyncio.timeout(TICK):
                        await self._closing.wait()
                except TimeoutError:
                    pass
        except (ConnectionResetError, RuntimeError):
            pass  # the page went away
        return response

    # -- acting -----------------------------------------------------------------------------

    async def _reload(self, request: web.Request) -> web.Response:
        error = await self.server.control_reload()
        return _outcome(error, f"reloaded profile {self.server.ctx.loaded.name}")

    async def _switch(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        name = body.get("profile")
        if not isinstance(name, str) or name not in self.server.switchable_profiles():
            return _error(400, f"profile must be one of: "
                               f"{', '.join(sorted(self.server.switchable_profiles()))}")
        error = await self.server.control_reload(name)
        return _outcome(error, f"switched to profile {name}")

    async def _newnym(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        site = body.get("site") or None
        if site is not None and not isinstance(site, str):
            return _error(400, "site must be a domain name")
        try:
            done = await self.server.control_newnym(site)
        except ValueError as error:
            return _error(400, str(error))
        return web.json_response({"ok": True, "message": done, "identities":
                                  self.server.identities})

    async def _login_token(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "token": self.logins.new_login_token(),
                                  "expires_in": round(self.logins.login_ttl)})

    async def _clear(self, request: web.Request) -> web.Response:
        self.activity.clear()
        return web.json_response({"ok": True, "message": "recent connections cleared"})

    async def _cache_clear(self, request: web.Request) -> web.Response:
        caches = [ctx.cache for ctx in self.server.contexts.all() if ctx.cache is not None]
        entries = sum(len(cache) for cache in caches)
        for cache in caches:
            cache.clear()
        return web.json_response({"ok": True, "message": f"cache cleared ({entries} entries)"})


async def sample_forever(activity: Activity) -> None:
    """Turn byte totals into the chart's series, once per TICK."""
    while True:
        activity.sample(time.time())
        await asyncio.sleep(TICK)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    response.headers.popall("Server", None)


async def _json_body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def _outcome(error: str | None, message: str) -> web.Response:
    if error is not None:
        return web.json_response({"ok": False, "error": error}, status=409)
    return web.json_response({"ok": True, "message": message})


def _password_ok(request: web.Request, expected: str) -> bool:
    """HTTP Basic with the dashboard's password (any user name), compared in constant time."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        _, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(password.encode(), expected.encode())


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)
