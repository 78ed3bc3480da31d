"""The errors a connection can end with, and how each is told to the client (pure).

Every error carries one sentence for the user, the HTTP status for HTTP clients and the reply
code for SOCKS5 clients, so the I/O code never decides wording or codes itself.

Invariant: an HTTP error body (which a web page can read) carries only `public`, which names the
exit and the stage but no hop address, hop username or back-end address; `message`, the full
sentence, goes to the owner only — the log, the dashboard, `anonproxy fetch` and `route`.
SOCKS5 replies carry a code and no text.
"""

from __future__ import annotations

# SOCKS5 reply codes (RFC 1928 section 6)
SOCKS_GENERAL_FAILURE = 0x01
SOCKS_NOT_ALLOWED = 0x02
SOCKS_NETWORK_UNREACHABLE = 0x03
SOCKS_HOST_UNREACHABLE = 0x04
SOCKS_CONNECTION_REFUSED = 0x05
SOCKS_TTL_EXPIRED = 0x06
SOCKS_COMMAND_NOT_SUPPORTED = 0x07
SOCKS_ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class ProxyError(Exception):
    """A failure to report to the client, never a crash."""

    status = 502
    reason = "Bad Gateway"
    socks_reply = SOCKS_GENERAL_FAILURE

    def __init__(self, message: str, *, socks_reply: int | None = None,
                 public: str | None = None) -> None:
        super().__init__(message)
        self.message = message  # the whole story, for the owner
        self.public = message if public is None else public  # what an HTTP client may read
        if socks_reply is not None:
            self.socks_reply = socks_reply


class BadRequest(ProxyError):
    status, reason = 400, "Bad Request"


class NotFound(ProxyError):
    status, reason = 404, "Not Found"


class RequestTimeout(BadRequest):
    status, reason = 408, "Request Timeout"
    socks_reply = SOCKS_TTL_EXPIRED


class Misdirected(BadRequest):
    """A request inside an opened HTTPS connection for another host than the one it was opened
    for (RFC 9110 §15.5.20): it would reach that host with this host's connection."""

    status, reason = 421, "Misdirected Request"


class SiteUntrusted(ProxyError):
    """An opened HTTPS site whose certificate failed verification: the client gets a 502 naming
    the reason (inside TLS), and the site no request."""

    status, reason = 502, "Bad Gateway"


class HeadersTooLarge(BadRequest):
    status, reason = 431, "Request Header Fields Too Large"


class NotImplementedByProxy(ProxyError):
    status, reason = 501, "Not Implemented"
    socks_reply = SOCKS_COMMAND_NOT_SUPPORTED


class Forbidden(ProxyError):
    status, reason = 403, "Forbidden"
    socks_reply = SOCKS_NOT_ALLOWED


class Blocked(Forbidden):
    """A block list blocks the request: 403 (SOCKS reply 0x02) whose body names the list's file
    and the rule, so that whoever wonders why a page broke sees which rule to except. The
    public sentence names the file only (a path could say whose home folder it lives in)."""

    def __init__(self, target: str, list_name: str, rule: str) -> None:
        file = list_name.replace("\\", "/").rsplit("/", 1)[-1]
        super().__init__(f"{target} is blocked by {list_name} (rule: {rule})",
                         public=f"{target} is blocked by the block list {file} (rule: {rule})")
        self.list_name, self.rule = list_name, rule


class AuthRequired(ProxyError):
    """The client must authenticate (or authenticate differently) to use this proxy."""

    status, reason = 407, "Proxy Authentication Required"
    socks_reply = SOCKS_NOT_ALLOWED


class Unauthorized(ProxyError):
    """A reverse entry's client must authenticate (HTTP Basic) to reach what it serves."""

    status, reason = 401, "Unauthorized"


class NoSuchProfile(AuthRequired):
    """A client named a profile (as its proxy username) that may not be selected."""


class ExitFailed(ProxyError):
    """The exit, or the destination behind it, could not be reached.

    `hop_failed`: the exit itself failed (a hop refused, vanished or rejected our credentials),
    as opposed to the destination behind a working exit; only the former counts against the
    exit's health or moves a pool to its next member.
    """

    status, reason = 502, "Bad Gateway"

    def __init__(self, message: str, *, socks_reply: int | None = None,
                 hop_failed: bool = True, public: str | None = None) -> None:
        super().__init__(message, socks_reply=socks_reply, public=public)
        self.hop_failed = hop_failed


class ExitDown(ProxyError):
    """No usable exit: every member of a pool is down (fail closed)."""

    status, reason = 503, "Service Unavailable"


class BadUpstreamResponse(ProxyError):
    status, reason = 502, "Bad Gateway"


class StageTimeout(ProxyError):
    status, reason = 504, "Gateway Timeout"
    socks_reply = SOCKS_TTL_EXPIRED


class Overloaded(ProxyError):
    status, reason = 503, "Service Unavailable"


def http_error_response(error: ProxyError) -> bytes:
    """A complete, connection-closing HTTP/1.1 response carrying the error's public sentence."""
    body = (error.public.rstrip(".") + ".\n").encode("utf-8", "replace")
    challenge = {407: 'Proxy-Authenticate: Basic realm="anonproxy profile"\r\n',
                 401: 'WWW-Authenticate: Basic realm="restricted", charset="UTF-8"\r\n',
                 }.get(error.status, "")
    head = (
        f"HTTP/1.1 {error.status} {error.reason}\r\n"
        f"{challenge}"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head + body
