"""What passes between a client and the backends of a reverse entry, header by header (pure).

A reverse entry hides the servers behind it, so a response reaches the client without the
fields that name a backend's software or host (BACKEND_IDENTIFYING, one table), and with every
absolute URL that names a backend's address (Location, Content-Location, the URL of Refresh,
the targets of Link) pointing at the address the client used instead. A request reaches a
backend without what a client could forge to steer what the backend trusts (client address,
scheme, host, path overrides), and with the entry's own Forwarded fields when it adds them.

Invariants:
- No field of BACKEND_IDENTIFYING reaches a client, in any case.
- A URL is rewritten only when its authority names a backend (host and port, the scheme's
  default port when it has none); relative URLs and other hosts pass unchanged.
- Every other field keeps its order, its name's case and its value byte for byte; a response
  with nothing to change comes back as the same tuples, in one pass.
- No Forwarded, X-Forwarded-*, X-Real-IP, Via (nor any name of headers.IDENTIFYING, in any
  spelling) from a client reaches a backend: the only ones it gets are those added here.
- Hop-by-hop fields are dropped on the way in (the WebSocket upgrade pair excepted); on the way
  out they are left to headers.sanitize_response, as for the forward proxy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from anonproxy.wire.address import Address, AddressError, check_host, parse_authority, plain_ip
from anonproxy.wire.headers import HOP_BY_HOP, IDENTIFYING, scan

Headers = list[tuple[bytes, bytes]]

# One table: response fields that name a backend's software or host, dropped from every
# response of a reverse entry (lower-case names).
BACKEND_IDENTIFYING = frozenset({
    b"server",               # RFC 9110 10.2.4: the origin server's software and version
    b"x-powered-by",         # PHP, Express, ASP.NET, Servlet containers: framework and version
    b"x-aspnet-version",     # ASP.NET: the runtime version
    b"x-aspnetmvc-version",  # ASP.NET MVC: the framework version
    b"x-backend-server",     # load balancers and CDNs: the name of the backend that answered
    b"via",                  # RFC 9110 7.6.3: each intermediary's name or address, software
    b"x-runtime",            # Rails, Rack: the request's run time, a fingerprint of the stack
    b"x-served-by",          # Fastly, Varnish setups, GitHub: the node (host) that answered
    b"x-generator",          # Drupal, Hugo and other generators: the software that made the page
    b"x-redirect-by",        # WordPress: the software that sent a redirect
    b"x-pingback",           # WordPress: the absolute URL of its xmlrpc.php, on the backend's host
    b"x-sourcefiles",        # IIS Express: the requested file's path on the backend, encoded
    b"x-powered-by-plesk",   # Plesk: the hosting panel
    b"x-varnish",            # Varnish: names the cache software (and its transaction ids)
    b"x-cache",              # Squid: "MISS from <host name>" names the cache's host
    b"x-cache-lookup",       # Squid: "HIT from <host name>:<port>"
    b"x-debug-token",        # Symfony profiler: a debug token, on in development set-ups
    b"x-debug-token-link",   # Symfony profiler: an absolute URL on the backend's own address
    b"alt-svc",              # RFC 7838: the backend's own alternative ports and protocols, which
                             # name its port and are not the entry's
})


@dataclass(frozen=True, slots=True)
class BackendNames:
    """Every authority that names one of an entry's backends: an address (host and port, the
    host normalised as wire.address does: lower case, IPv6 unbracketed, IPv4-mapped as IPv4),
    and the hosts alone for a cookie's Domain. "127.0.0.1:9001" names 127.0.0.1:9001; so does
    "127.0.0.1" bare in an http URL when the port is 80 (https: 443); "[::1]:9001" names ::1."""

    addresses: frozenset[Address]
    hosts: frozenset[str]

    @classmethod
    def of(cls, backends: Iterable[Address]) -> BackendNames:
        addresses = frozenset(Address(check_host(b.host), b.port) for b in backends)
        return cls(addresses, frozenset(a.host for a in addresses))

    def names(self, authority: bytes, default_ports: tuple[int, ...] = (80,)) -> bool:
        """Whether an authority (userinfo@host:port, IPv6 in brackets, any case) names a
        backend; a bare host is taken with each of `default_ports`."""
        authority = authority.rpartition(b"@")[2]
        try:
            text = authority.decode("ascii")
            return any(parse_authority(text, port) in self.addresses for port in default_ports)
        except (UnicodeDecodeError, AddressError):
            return False


# An absolute or scheme-relative http(s) URL: scheme, authority, the rest. As browsers read it
# (WHATWG URL), any run of / and \ may stand between an http(s) scheme and the authority.
_ABSOLUTE = re.compile(rb"\s*(?:(https?):[/\\]*|[/\\]{2,})([^/\\?#]*)(.*)",
                       re.IGNORECASE | re.DOTALL)
_DEFAULT_PORTS = {b"http": (80,), b"https": (443,), None: (80, 443)}


def _url(value: bytes, names: BackendNames, public_base: bytes) -> bytes:
    """A URL that names a backend, as public_base + its path, query and fragment; any other
    URL (relative, another host, another scheme) as it is."""
    m = _ABSOLUTE.fullmatch(value)
    if m is None:
        return value
    scheme, authority, rest = m.groups()
    ports = _DEFAULT_PORTS[scheme.lower() if scheme else None]
    if not names.names(authority, ports):
        return value
    return public_base.rstrip(b"/") + rest


# Refresh: a delay, then ; or , and the URL, after an optional "url=", in optional quotes
# (WHATWG HTML, "shared declarative refresh steps").
_REFRESH = re.compile(rb"(\s*(?:[0-9.]+\s*)?[;,]\s*(?:url\s*=\s*)?)(['\"]?)(.*)",
                      re.IGNORECASE | re.DOTALL)
_LINK_TARGET = re.compile(rb"<([^<>]*)>")  # [^<>]: linear, even on a run of "<"
_COOKIE_DOMAIN = re.compile(rb";\s*domain\s*=\s*\.?([^;\s]*)\s*(?=;|$)", re.IGNORECASE)


def _refresh(value: bytes, names: BackendNames, public_base: bytes) -> bytes:
    m = _REFRESH.fullmatch(value)
    if m is None:
        return value
    lead, quote, target = m.groups()
    end = target.find(quote) if quote else -1
    url = target[:end] if end >= 0 else target.rstrip()
    new = _url(url, names, public_base)
    return value if new is url else lead + quote + new + target[len(url):]


def _link(value: bytes, names: BackendNames, public_base: bytes) -> bytes:
    """RFC 8288: each <target> of a Link field."""
    def one(m: re.Match[bytes]) -> bytes:
        return b"<" + _url(m.group(1), names, public_base) + b">"

    new = _LINK_TARGET.sub(one, value)
    return value if new == value else new


def _set_cookie(value: bytes, names: BackendNames, public_base: bytes) -> bytes:
    """A Domain attribute naming a backend's host is left out (a host-only cookie of the host
    the client used); a browser would refuse the cookie anyway, after reading the name."""
    def one(m: re.Match[bytes]) -> bytes:
        host = m.group(1).decode("latin-1").lower().rstrip(".")
        return b"" if host.strip("[]") in names.hosts else m.group(0)

    new = _COOKIE_DOMAIN.sub(one, value)
    return value if new == value else new


def _drop(value: bytes, names: BackendNames, public_base: bytes) -> bytes:
    """The step of a BACKEND_IDENTIFYING field: never called, the field is left out."""
    raise AssertionError("a dropped field has no value")


# The response fields a backend may name itself in, each with its step; the others pass. One
# dict, so that the usual field costs one lower() and one lookup.
_RESPONSE_STEPS: dict[bytes, Callable[[bytes, BackendNames, bytes], bytes]] = {
    **dict.fromkeys(BACKEND_IDENTIFYING, _drop),
    b"location": _url,
    b"content-location": _url,
    b"refresh": _refresh,
    b"link": _link,
    b"set-cookie": _set_cookie,
}


def response_fields(headers: Headers, names: BackendNames, public_base: bytes) -> Headers:
    """A backend's response fields as the client gets them: BACKEND_IDENTIFYING dropped, URLs
    naming a backend rewritten to `public_base` (scheme and authority the client used, as
    b"https://app.example", no trailing slash) plus their path. One pass; a field left as it
    was is the same tuple."""
    out: Headers = []
    steps = _RESPONSE_STEPS
    for field in headers:
        step = steps.get(field[0].lower())
        if step is None:
            out.append(field)
        elif step is not _drop:
            value = field[1]
            new = step(value, names, public_base)
            out.append(field if new is value else (field[0], new))
    return out


# Request fields a backend may trust from its proxy beyond headers.IDENTIFYING (the client's
# address and identity): the scheme, host and path the client used. A client sets none of them.
BACKEND_TRUSTED = frozenset({
    b"x-forwarded-prefix",  # Spring, Traefik, Werkzeug ProxyFix: the path prefix
    b"x-forwarded-scheme",  # Rails (Rack): the scheme
    b"x-forwarded-ssl",     # Rails (Rack), AWS: "on" means https
    b"front-end-https",     # Microsoft OWA, Rack: "on" means https
    b"x-url-scheme",        # Rack: the scheme
    b"x-original-url",      # IIS URL Rewrite, Symfony, Zend: replaces the request path
    b"x-rewrite-url",       # IIS ISAPI Rewrite, Symfony, Zend: replaces the request path
    b"proxy",               # httpoxy (CVE-2016-5385): CGI turns it into HTTP_PROXY
})
_NOT_FROM_CLIENTS = IDENTIFYING | BACKEND_TRUSTED

_TCHAR = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_TEXT = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def _forwarded_value(text: bytes) -> bytes:
    """RFC 7239 section 4: a token as it is, anything else a quoted-string."""
    if _TCHAR.fullmatch(text):
        return text
    return b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def forwarded_fields(peer: str, proto: str, host: bytes) -> Headers:
    """The fields a reverse entry with `forwarded = true` adds: Forwarded (RFC 7239; an IPv6
    peer as "[v6]" in quotes) and the X-Forwarded-For, -Proto and -Host most servers read.
    A host that is not field text (a control character) is left out of them."""
    address = plain_ip(peer) if ":" in peer else peer  # an IPv4-mapped or scoped IPv6 one
    node = f"[{address}]" if ":" in address else address
    parts = [b"for=" + _forwarded_value(node.encode("latin-1")),
             b"proto=" + _forwarded_value(proto.encode("latin-1"))]
    fields = [(b"X-Forwarded-For", address.encode("latin-1")),
              (b"X-Forwarded-Proto", proto.encode("latin-1"))]
    if host and _FIELD_TEXT.fullmatch(host):
        parts.append(b"host=" + _forwarded_value(host))
        fields.append((b"X-Forwarded-Host", host))
    return [(b"Forwarded", b";".join(parts)), *fields]


_UNDERSCORE = ord("_")  # an int: `in` on bytes is several times faster with it than with b"_"


def _forged(lname: bytes) -> bool:
    """Whether a client's field is one only a proxy may set: headers.IDENTIFYING,
    BACKEND_TRUSTED or Proxy-*, with `_` taken as `-` (CGI and PHP read X_Forwarded_For as
    X-Forwarded-For)."""
    key = lname.replace(b"_", b"-") if _UNDERSCORE in lname else lname
    return key in _NOT_FROM_CLIENTS or key.startswith(b"proxy-")


def request_fields(headers: Headers, *, peer: str | None, proto: str, host: bytes,
                   strip_auth: bool, websocket: bool | None = None,
                   listed: frozenset[bytes] | None = None) -> Headers:
    """A client's request fields as a backend gets them.

    Dropped: hop-by-hop fields and the names Connection lists (but Upgrade, and Connection as
    just "Upgrade", on a WebSocket handshake), Proxy-*, headers.IDENTIFYING and
    BACKEND_TRUSTED in any case and with `_` for `-`, a second Host, and Authorization when
    `strip_auth` (the entry's own Basic credentials). Host stays as the client sent it (`host`
    is added first when it sent none). With `peer` (the entry's `forwarded = true`),
    forwarded_fields(peer, proto, host) are appended. `websocket` and `listed`: from the
    parser's `scan`, when it made one.
    """
    if websocket is None or listed is None:
        _, _, listed, websocket = scan(headers)
    out: Headers = []
    have_host = False
    for field in headers:
        lname = field[0].lower()
        if lname in HOP_BY_HOP:
            if websocket and lname == b"upgrade":
                out.append(field)
            elif websocket and lname == b"connection":
                out.append((field[0], b"Upgrade"))
            continue
        if _forged(lname) or lname in listed or (strip_auth and lname == b"authorization"):
            continue
        if lname == b"host":
            if have_host:
                continue
            have_host = True
        out.append(field)
    if not have_host:
        out.insert(0, (b"Host", host))
    if peer is not None:
        out += forwarded_fields(peer, proto, host)
    return out
