"""Who may use the dashboard: the per-run API token, one-time login tokens and sessions.

The API token (random, per run) is what the CLI reads from the runtime directory and sends in
`X-Anonproxy-Token`. A login token is what `serve` prints and `anonproxy dashboard` asks for:
it works once, within LOGIN_TTL seconds, and is traded for a session of two random secrets:
its id, which the browser keeps in an HttpOnly, SameSite=Strict cookie, and its page key,
which the dashboard's script keeps in the origin's localStorage and sends on every API call.
Both are needed: browsers send a cookie to every port of its host, so a page another account
serves on the same host but another port gets the cookie; the page key it cannot read (storage
is per origin, port included) and is handed out only once, in the login's redirect. Sessions
live in this process's memory only (a restart logs everyone out).

Invariants: every secret comparison is constant-time or a lookup by a SHA-256 digest (so a
timing difference reveals nothing about a valid secret); a login token is gone once used or
expired; a page key is valid only with its own session's cookie; at most MAX_SESSIONS sessions
and MAX_LOGIN_TOKENS unused login tokens are kept (the oldest go first). No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

LOGIN_TTL = 600.0  # seconds a login token stays valid
MAX_SESSIONS = 64
MAX_LOGIN_TOKENS = 32


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class Session:
    """A browser's session: `cookie` goes into the HttpOnly cookie, `page_key` to the page's
    script (once, in the login's redirect)."""

    cookie: str
    page_key: str


class Logins:
    """The dashboard's API token, its unused login tokens and its sessions."""

    def __init__(self, api_token: str | None = None, login_ttl: float = LOGIN_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api_token = api_token or secrets.token_urlsafe(32)
        self.login_ttl = login_ttl
        self._clock = clock
        self._login_tokens: OrderedDict[bytes, float] = OrderedDict()  # digest -> expiry
        # digest of the cookie -> digest of its page key
        self._sessions: OrderedDict[bytes, bytes] = OrderedDict()

    def api_token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(),
                                                         self.api_token.encode())

    def new_login_token(self) -> str:
        """A fresh one-time login token."""
        self._forget_expired()
        token = secrets.token_urlsafe(32)
        self._login_tokens[_digest(token)] = self._clock() + self.login_ttl
        while len(self._login_tokens) > MAX_LOGIN_TOKENS:
            self._login_tokens.popitem(last=False)
        return token

    def redeem(self, login_token: str | None) -> Session | None:
        """A new session for a valid, unused, unexpired login token (which is then spent),
        else None."""
        if not login_token:
            return None
        self._forget_expired()
        if self._login_tokens.pop(_digest(login_token), None) is None:
            return None
        return self.new_session()

    def new_session(self) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self._sessions[_digest(session.cookie)] = _digest(session.page_key)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def cookie_ok(self, cookie: str | None) -> bool:
        """The cookie names a live session: enough for the page shell, which holds no data,
        never for the API."""
        return cookie is not None and cookie != "" and _digest(cookie) in self._sessions

    def session_ok(self, cookie: str | None, page_key: str | None) -> bool:
        """The cookie names a live session and page_key is that session's key."""
        if not cookie or not page_key:
            return False
        key = self._sessions.get(_digest(cookie))
        return key is not None and hmac.compare_digest(key, _digest(page_key))

    def _forget_expired(self) -> None:
        now = self._clock()
        for digest in [d for d, expiry in self._login_tokens.items() if expiry <= now]:
            del self._login_tokens[digest]
