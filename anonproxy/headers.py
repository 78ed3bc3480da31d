"""Header sanitizing by policy (pure).

Invariants:
- Nothing is ever added upstream except a Host header when the request had none (HTTP/1.0).
- Hop-by-hop headers (and every name the Connection header lists) never cross the proxy; the
  WebSocket upgrade pair is the one exception, and only on a WebSocket handshake.
- Headers that carry a client address or identity (X-Forwarded-For, Forwarded, Via, From, ...)
  are always dropped, whatever the policy.
- What is kept keeps its order, its name's case and its value byte for byte.
- Framing headers (Content-Length, Transfer-Encoding) are left to the HTTP layer, which re-frames
  the body exactly as they say.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urlsplit

Headers = list[tuple[bytes, bytes]]

# Never dropped because the Connection header lists them: framing and routing are not optional.
PROTECTED = frozenset({b"host", b"content-length", b"transfer-encoding"})

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
    }
)

IDENTIFYING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-server",
        b"forwarded",
        b"via",
        b"x-real-ip",
        b"client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"x-client-ip",
        b"x-originating-ip",
        b"x-cluster-client-ip",
        b"from",
        b"x-proxyuser-ip",
    }
)

# Client hints that say little (brand, mobile, platform) versus those that fingerprint.
LOW_ENTROPY_HINTS = frozenset({b"sec-ch-ua", b"sec-ch-ua-mobile", b"sec-ch-ua-platform"})
LEGACY_HINTS = frozenset(
    {b"dpr", b"device-memory", b"viewport-width", b"width", b"rtt", b"downlink", b"ect"}
)

KEEP, STRIP = "keep", "strip"
ORIGIN_ONLY, SAME_ORIGIN_ONLY = "origin-only", "same-origin-only"
HINTS_HIGH_ENTROPY, HINTS_ALL = "strip-high-entropy", "strip-all"


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """What to do with the headers a user may want to keep. A `replace` value wins over keep."""

    user_agent: str = KEEP  # keep | strip
    user_agent_replace: bytes | None = None
    accept_language_replace: bytes | None = None
    referer: str = ORIGIN_ONLY  # keep | strip | origin-only | same-origin-only
    cookie: str = KEEP  # keep | strip
    client_hints: str = HINTS_HIGH_ENTROPY  # keep | strip-high-entropy | strip-all


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens - PROTECTED


def scan(headers: Headers) -> tuple[list[bytes], list[bytes], frozenset[bytes], bool]:
    """One pass over a head for what framing and sanitizing need: the Transfer-Encoding values,
    the Content-Length values, the tokens Connection lists (framing names excepted), and
    whether it asks for a WebSocket upgrade (the same answer as is_websocket_upgrade)."""
    encodings: list[bytes] = []
    lengths: list[bytes] = []
    connection: list[bytes] = []
    upgrade = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"transfer-encoding":
            encodings.append(value)
        elif lname == b"content-length":
            lengths.append(value)
        elif lname == b"connection":
            connection.append(value)
        elif lname == b"upgrade" and b"websocket" in value.lower().split(b",")[0]:
            upgrade = True
    if not connection:
        return encodings, lengths, frozenset(), False
    tokens = {t.strip().lower() for v in connection for t in v.split(b",") if t.strip()}
    listed = frozenset(tokens - PROTECTED)
    return encodings, lengths, listed, upgrade and b"upgrade" in listed


def is_websocket_upgrade(headers: Headers) -> bool:
    """True for a request or 101 response that asks to switch to WebSocket."""
    upgrade = any(
        n.lower() == b"upgrade" and b"websocket" in v.lower().split(b",")[0] for n, v in headers
    )
    return upgrade and b"upgrade" in _connection_tokens(headers)


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme.lower()}://{host}{suffix}"


def _referer(value: bytes, policy: str, target_origin: str) -> bytes | None:
    if policy == KEEP:
        return value
    if policy == STRIP:
        return None
    origin = _origin(value.decode("latin-1"))
    if origin is None:
        return None
    if policy == SAME_ORIGIN_ONLY:
        return value if origin == target_origin else None
    return (origin + "/").encode("latin-1")  # origin-only


def _hint_dropped(lname: bytes, policy: str) -> bool:
    if policy == KEEP:
        return False
    if lname.startswith(b"sec-ch-") or lname in LEGACY_HINTS:
        return policy == HINTS_ALL or lname not in LOW_ENTROPY_HINTS
    return False


def sanitize_request(
    headers: Headers, policy: HeaderPolicy, *, target_origin: str, host: bytes,
    websocket: bool | None = None, listed: frozenset[bytes] | None = None,
) -> Headers:
    """Headers to send upstream for a request to `target_origin` whose authority is `host`.

    The Host header is set to `host` (RFC 9112: a proxy uses the request-target's authority).
    `websocket` and `listed` (Connection tokens): from a `scan` the parser already made.
    """
    if websocket is None or listed is None:
        _, _, listed, websocket = scan(headers)
    out: Headers = []
    have_host = False
    for name, value in headers:
        lname = name.lower()
        if lname in IDENTIFYING or (lname in listed and lname not in HOP_BY_HOP):
            continue
        if lname in HOP_BY_HOP:
            if websocket and lname == b"upgrade":
                out.append((name, value))
            elif websocket and lname == b"connection":
                out.append((name, b"Upgrade"))
            continue
        if lname == b"host":
            if not have_host:
                out.append((name, host))
                have_host = True
            continue
        if lname == b"user-agent":
            if policy.user_agent_replace is not None:
                value = policy.user_agent_replace
            elif policy.user_agent == STRIP:
                continue
        elif lname == b"accept-language" and policy.accept_language_replace is not None:
            value = policy.accept_language_replace
        elif lname == b"referer":
            kept = _referer(value, policy.referer, target_origin)
            if kept is None:
                continue
            value = kept
        elif lname == b"cookie" and policy.cookie == STRIP:
            continue
        elif _hint_dropped(lname, policy.client_hints):
            continue
        out.append((name, value))
    if not have_host:
        out.insert(0, (b"Host", host))
    return out


def sanitize_response(headers: Headers, *, websocket: bool = False,
                      listed: frozenset[bytes] | None = None) -> Headers:
    """Headers to pass back to the client: hop-by-hop ones removed (framing is re-done later).
    `listed`: the Connection tokens, when a `scan` already found them."""
    if listed is None:
        listed = frozenset(_connection_tokens(headers))
    out: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in listed:
            if websocket and lname in (b"upgrade", b"connection"):
                out.append((name, value))
            continue
        out.append((name, value))
    return out


def proxy_credentials(headers: Headers) -> tuple[str, str] | None:
    """The username and password of a `Proxy-Authorization: Basic` header."""
    for name, value in headers:
        if name.lower() == b"proxy-authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"basic":
                return None
            try:
                decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
            return user, password
    return None
