"""Who may use the dashboard: the per-run API token, one-time login tokens and sessions.

The API token (random, per run) is what the CLI reads from the runtime directory and sends in
`X-Anonproxy-Token`. A login token is what `serve` prints and `anonproxy dashboard` asks for:
it works once, within LOGIN_TTL seconds, and is traded for a session whose random id the
browser keeps in an HttpOnly, SameSite=Strict cookie. Sessions live in this process's memory
only (a restart logs everyone out).

Invariants: every secret comparison is constant-time or a lookup by a SHA-256 digest (so a
timing difference reveals nothing about a valid secret); a login token is gone once used or
expired; at most MAX_SESSIONS sessions and MAX_LOGIN_TOKENS unused login tokens are kept
(the oldest go first). No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

LOGIN_TTL = 600.0  # seconds a login token stays valid
MAX_SESSIONS = 64
MAX_LOGIN_TOKENS = 32


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Logins:
    """The dashboard's API token, its unused login tokens and its sessions."""

    def __init__(self, api_token: str | None = None, login_ttl: float = LOGIN_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api_token = api_token or secrets.token_urlsafe(32)
        self.login_ttl = login_ttl
        self._clock = clock
        self._login_tokens: OrderedDict[bytes, float] = OrderedDict()  # digest -> expiry
        self._sessions: OrderedDict[bytes, float] = OrderedDict()  # digest -> created

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

    def redeem(self, login_token: str | None) -> str | None:
        """A new session id for a valid, unused, unexpired login token (which is then spent),
        else None."""
        if not login_token:
            return None
        self._forget_expired()
        if self._login_tokens.pop(_digest(login_token), None) is None:
            return None
        return self.new_session()

    def new_session(self) -> str:
        session = secrets.token_urlsafe(32)
        self._sessions[_digest(session)] = self._clock()
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def session_ok(self, session: str | None) -> bool:
        return bool(session) and _digest(session) in self._sessions

    def _forget_expired(self) -> None:
        now = self._clock()
        for digest in [d for d, expiry in self._login_tokens.items() if expiry <= now]:
            del self._login_tokens[digest]
