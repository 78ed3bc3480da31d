"""The dashboard's pages for a browser: `/` (the page shell, or the login form), `/login` and
`/static/` (app.js and style.css).

`/login` trades a one-time login token (GET, the link `serve` and `anonproxy dashboard` give)
or the API token or a login token pasted into the form (POST) for a session: its cookie
(HttpOnly, SameSite=Strict) and a 303 to `/#key=PAGE-KEY`, the only time the page key is sent,
to the one browser that spent the token (login.py keeps the secrets).

Invariants: nothing here serves data — the shell and the static files hold none (the script
fetches it from `/api/` with the page key), and the login form shows only its own message,
escaped; a login token works once; the guard in app.py runs before every handler here and
sets `request["shell"]` (an owner, or a browser with a live session's cookie).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from importlib import resources

from aiohttp import web

from anonproxy.admin.login import Logins, Session

STATIC = {"app.js": "text/javascript", "style.css": "text/css"}


def routes(logins: Logins, cookie: Callable[[], str]) -> list[web.RouteDef]:
    """The page routes of one dashboard; `cookie()` names its session cookie (one per port,
    known once it listens)."""

    async def page(request: web.Request) -> web.Response:
        """The page shell (no data: its script fetches that with the page key), or the form."""
        if not request["shell"]:
            return login_page(401, "")
        return web.Response(text=asset("index.html"), content_type="text/html")

    async def login(request: web.Request) -> web.Response:
        """GET /login?token=ONE-TIME-TOKEN: a session, and the page without the token in the
        address bar (303 to /#key=PAGE-KEY)."""
        token = request.query.get("token")
        if token is None:
            return login_page(200, "")
        session = logins.redeem(token)
        if session is None:
            return login_page(403, "This login link was used already or has expired; run "
                                   "`anonproxy dashboard` for a new one.")
        return logged_in(session)

    async def login_form(request: web.Request) -> web.Response:
        """POST /login with the API token (or a login token) pasted into the form."""
        form = await request.post()
        given = form.get("token")
        given = given.strip() if isinstance(given, str) else None
        if logins.api_token_ok(given):
            return logged_in(logins.new_session())
        session = logins.redeem(given)
        if session is None:
            return login_page(403, "That is not this dashboard's token.")
        return logged_in(session)

    def logged_in(session: Session) -> web.Response:
        """The cookie, and the page key in the redirect's fragment: the only time it is sent,
        to the one browser that spent the login token, for the page's script on this origin."""
        response = web.Response(status=303, headers={"Location": f"/#key={session.page_key}"})
        response.set_cookie(cookie(), session.cookie, path="/", httponly=True,
                            samesite="Strict")
        return response

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(text=asset(name), content_type=STATIC[name])

    return [web.get("/", page), web.get("/login", login), web.post("/login", login_form),
            web.get("/static/{name}", static)]


def login_page(status: int, message: str) -> web.Response:
    text = asset("login.html").replace("{{MESSAGE}}", html.escape(message))
    return web.Response(status=status, text=text, content_type="text/html")


def asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")
