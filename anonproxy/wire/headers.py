"""Header sanitizing by policy (pure).

Invariants:
- Nothing is ever added upstream except a Host header when the request had none (HTTP/1.0).
- Hop-by-hop headers (and every name the Connection header lists) never cross the proxy; the
  WebSocket upgrade pair is the one exception, and only on a WebSocket handshake.
- Headers that carry a client address or identity (X-Forwarded-For, Forwarded, Via, From, ...:
  the IDENTIFYING_HEADERS table) are always dropped, whatever the policy, in any case and with
  `_` in place of `-` (X_Forwarded_For).
- What is kept keeps its order, its name's case and its value byte for byte.
- Framing headers (Content-Length, Transfer-Encoding) are left to the HTTP layer, which re-frames
  the body exactly as they say.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final
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

@dataclass(frozen=True, slots=True)
class Identifying:
    """A request header that carries the client's address or identity, and who sets or trusts
    it (why it is on the list)."""

    name: str
    source: str


# One table: every entry is dropped from every request, whatever the profile says.
IDENTIFYING_HEADERS: tuple[Identifying, ...] = (
    Identifying("Forwarded", "RFC 7239"),
    Identifying("Via", "RFC 9110 section 7.6.3"),
    Identifying("From", "RFC 9110 section 10.1.2 (the user's e-mail address)"),
    Identifying("X-Forwarded-For", "Squid, then every proxy and load balancer"),
    Identifying("X-Forwarded-Host", "Apache mod_proxy, nginx, AWS ELB"),
    Identifying("X-Forwarded-Proto", "AWS ELB, Heroku, nginx"),
    Identifying("X-Forwarded-Port", "AWS ELB"),
    Identifying("X-Forwarded-Server", "Apache mod_proxy"),
    Identifying("X-Forwarded", "client-IP libraries (request-ip)"),
    Identifying("Forwarded-For", "client-IP libraries (request-ip)"),
    Identifying("X-Original-Forwarded-For",
                "Kubernetes ingress-nginx (the X-Forwarded-For it got)"),
    Identifying("X-Real-IP", "nginx realip module"),
    Identifying("Client-IP", "older proxies; PHP applications read HTTP_CLIENT_IP"),
    Identifying("X-Client-IP", "Azure App Service; client-IP libraries (request-ip)"),
    Identifying("True-Client-IP", "Akamai, Cloudflare Enterprise"),
    Identifying("Akamai-Client-IP", "named beside Akamai's True-Client-IP in client-IP lists"),
    Identifying("CF-Connecting-IP", "Cloudflare"),
    Identifying("Fastly-Client-IP", "Fastly"),
    Identifying("X-Envoy-External-Address", "Envoy"),
    Identifying("X-Azure-ClientIP", "Azure Front Door"),
    Identifying("X-Appengine-User-IP", "Google App Engine"),
    Identifying("X-ProxyUser-Ip", "Google (requests its proxies make for a user)"),
    Identifying("X-Cluster-Client-IP", "Rackspace and Riverbed (Zeus) load balancers"),
    Identifying("WL-Proxy-Client-IP", "Oracle WebLogic proxy plug-in"),
    Identifying("Proxy-Client-IP", "Oracle WebLogic and Apache proxy plug-ins"),
    Identifying("X-Originating-IP", "Microsoft Outlook.com and Exchange"),
    Identifying("X-Remote-Addr", "applications that take it for REMOTE_ADDR"),
    Identifying("X-Remote-IP", "applications that take it for REMOTE_ADDR"),
    Identifying("X-Authenticated-User", "Blue Coat ProxySG, Cisco WSA (the user a corporate "
                                        "proxy authenticated)"),
    Identifying("X-UIDH", "Verizon Wireless (a per-subscriber tracking ID)"),
    Identifying("X-MSISDN", "mobile carriers (the subscriber's phone number)"),
)

# The table's names as compared: case-folded (what the table says).
IDENTIFYING = frozenset(h.name.lower().encode("ascii") for h in IDENTIFYING_HEADERS)


def _separator_variants(name: bytes) -> set[bytes]:
    """`name` with each `-` as `-` or `_` (many servers, CGI and PHP among them, read
    X_Forwarded_For as X-Forwarded-For)."""
    variants = {b""}
    for part in name.split(b"-"):
        variants = {v + sep + part for v in variants for sep in ((b"-", b"_") if v else (b"",))}
    return variants


# Every spelling sanitize_request drops, computed once so the per-header test is one set lookup
# of the lower-cased name (equal to mapping `_` to `-` first, without the per-header copy).
_IDENTIFYING_SPELLINGS = frozenset(v for n in IDENTIFYING for v in _separator_variants(n))


def is_identifying(name: bytes) -> bool:
    """Whether a header name is on the table, compared case-folded with `_` taken as `-`."""
    return name.lower() in _IDENTIFYING_SPELLINGS


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
    whether it asks for a WebSocket upgrade (Upgrade: websocket, Connection listing upgrade)."""
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


# The names scan_block looks for, by first letter, each with its colon: llhttp has refused
# whitespace before a colon, and wire/response_head.py removed it where it rewrote a head
_NAMES = sorted(HOP_BY_HOP | {b"content-length", b"transfer-encoding"})
_SCANNED: Final = {first: tuple(name + b":" for name in _NAMES if name[0] == first)
                   for first in {name[0] for name in _NAMES}}
_HOP_LINES: Final = frozenset(name + b":" for name in HOP_BY_HOP)
# 1 at each byte a scanned name may begin with, in either case: other lines are passed over
# without being lowered or compared
_FIRST: Final = bytes(int(c in _SCANNED or c + 32 in _SCANNED) for c in range(256))
_LONGEST: Final = max(len(name) for name in _NAMES) + 1


def scan_block(block: bytes) -> tuple[list[bytes], list[bytes], frozenset[bytes], bytes]:
    """`scan`'s framing answers and Connection tokens for a head kept as bytes (CRLF-led
    field lines, which llhttp has judged: wire/messages.py), and the block less its
    hop-by-hop lines (what `sanitize_response_block` hands on). The block is split into
    lines; a line whose first byte may begin a scanned name has its start lower-cased and
    compared; what is kept or cut is sliced from `block` itself.
    (Two regular expressions did this, compiled: ~28,000 instructions per response.)"""
    encodings: list[bytes] = []
    lengths: list[bytes] = []
    connection: list[bytes] = []
    kept: list[bytes] = []  # the stretches of `block` between hop-by-hop lines, once one came
    since = 0  # where the stretch not yet in `kept` begins
    at = 0  # where the line at hand begins in `block` (its CRLF)
    lines = block.split(b"\r\n")  # (the first is b"": the block begins with CRLF)
    for i in range(1, len(lines)):
        line = lines[i]
        end = at + 2 + len(line)
        if line and _FIRST[line[0]]:
            name = _scanned_name(line[:_LONGEST].lower())
            if name in _HOP_LINES:
                if name == b"connection:":
                    connection.append(_value(block, at + 2 + len(name), end))
                kept.append(block[since:at])
                since = end
            elif name == b"content-length:":
                lengths.append(_value(block, at + 2 + len(name), end))
            elif name == b"transfer-encoding:":
                encodings.append(_value(block, at + 2 + len(name), end))
        at = end
    end_to_end = b"".join(kept) + block[since:] if kept else block
    if not connection:
        return encodings, lengths, frozenset(), end_to_end
    if len(connection) == 1:
        listed = _LISTED.get(connection[0])  # ("keep-alive" or "close", nearly always)
        if listed is not None:
            return encodings, lengths, listed, end_to_end
    tokens = {t.strip().lower() for v in connection for t in v.split(b",") if t.strip()}
    return encodings, lengths, frozenset(tokens - PROTECTED), end_to_end


def _scanned_name(lower: bytes) -> bytes:
    """The name (with its colon) of those scan_block looks for that a lower-cased field line
    begins with, or b"" (for any other line)."""
    for name in _SCANNED.get(lower[0], ()):
        if lower.startswith(name):
            return name
    return b""


def _value(block: bytes, start: int, end: int) -> bytes:
    """A field's value, block[start:end], without leading whitespace (as llhttp gives it)."""
    while start < end and block[start] in (32, 9):
        start += 1
    return block[start:end]


# The tokens of the usual Connection values, made once
_LISTED: Final = {value: frozenset({value.lower()}) for value in (
    b"keep-alive", b"Keep-Alive", b"close", b"Close")}


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


def _user_agent(value: bytes, policy: HeaderPolicy, target_origin: str) -> bytes | None:
    if policy.user_agent_replace is not None:
        return policy.user_agent_replace
    return None if policy.user_agent == STRIP else value


def _accept_language(value: bytes, policy: HeaderPolicy, target_origin: str) -> bytes | None:
    return value if policy.accept_language_replace is None else policy.accept_language_replace


def _referer_step(value: bytes, policy: HeaderPolicy, target_origin: str) -> bytes | None:
    return _referer(value, policy.referer, target_origin)


def _cookie(value: bytes, policy: HeaderPolicy, target_origin: str) -> bytes | None:
    return None if policy.cookie == STRIP else value


# The headers a profile has a say in, each with its step: the value to send, or None to drop it.
# (Client hints are a family of names, not a table entry: _hint_dropped.)
POLICY_STEPS = {
    b"user-agent": _user_agent,
    b"accept-language": _accept_language,
    b"referer": _referer_step,
    b"cookie": _cookie,
}


def _upgrade_pair(lname: bytes, value: bytes) -> bytes | None:
    """On a WebSocket handshake, the one hop-by-hop pair that crosses: Upgrade as it was, and
    Connection as just `Upgrade` (its other tokens were dropped with what they list)."""
    if lname == b"upgrade":
        return value
    return b"Upgrade" if lname == b"connection" else None


def sanitize_request(
    headers: Headers, policy: HeaderPolicy, *, target_origin: str, host: bytes,
    websocket: bool | None = None, listed: frozenset[bytes] | None = None,
) -> Headers:
    """Headers to send upstream for a request to `target_origin` whose authority is `host`.

    The Host header is set to `host` (RFC 9112: a proxy uses the request-target's authority).
    `websocket` and `listed` (Connection tokens): from a `scan` the parser already made.
    One pass, in order: identifying and listed names go; hop-by-hop ones go (but the upgrade
    pair of a WebSocket handshake); the first Host becomes `host`, later ones go; the headers
    in POLICY_STEPS take their step's value; client hints go as the policy says.
    """
    if websocket is None or listed is None:
        _, _, listed, websocket = scan(headers)
    out: Headers = []
    have_host = False
    for name, value in headers:
        lname = name.lower()
        if lname in _IDENTIFYING_SPELLINGS or (lname in listed and lname not in HOP_BY_HOP):
            continue
        if lname in HOP_BY_HOP:
            sent = _upgrade_pair(lname, value) if websocket else None
        elif lname == b"host":
            if have_host:
                continue
            sent, have_host = host, True
        elif (step := POLICY_STEPS.get(lname)) is not None:
            sent = step(value, policy, target_origin)
        elif _hint_dropped(lname, policy.client_hints):
            continue
        else:
            sent = value
        if sent is not None:
            out.append((name, sent))
    if not have_host:
        out.insert(0, (b"Host", host))
    return out


def sanitize_response(headers: Headers, *, websocket: bool = False,
                      listed: frozenset[bytes] | None = None) -> Headers:
    """Headers to pass back to the client: hop-by-hop ones removed (framing is re-done later).
    `listed`: the Connection tokens, when a `scan` already found them. (A new list: callers
    append to it. This runs for every response head: one comprehension, one lower() a field.)"""
    if listed is None:
        listed = frozenset(_connection_tokens(headers))
    drop = HOP_BY_HOP | listed if listed else HOP_BY_HOP
    if websocket:  # the upgrade pair stays: the client asked for it
        drop = drop - _UPGRADE_PAIR
    return [field for field in headers if field[0].lower() not in drop]


_UPGRADE_PAIR = frozenset({b"upgrade", b"connection"})


def sanitize_response_block(end_to_end: bytes, listed: frozenset[bytes]) -> bytes | None:
    """`sanitize_response` for a head kept as bytes: its block less the hop-by-hop lines
    (`end_to_end`, from scan_block), the others as they came. None when Connection lists a
    field beyond the hop-by-hop ones (rare): then the fields are dropped one by one."""
    if listed and not listed <= HOP_BY_HOP:
        return None
    return end_to_end


def proxy_credentials(headers: Headers) -> tuple[str, str] | None:
    """The username and password of a `Proxy-Authorization: Basic` header."""
    return basic_credentials(headers, b"proxy-authorization")


def basic_credentials(headers: Headers, field: bytes) -> tuple[str, str] | None:
    """The username and password of the first `field` (lower case) when it is `Basic`."""
    for name, value in headers:
        if name.lower() == field:
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
