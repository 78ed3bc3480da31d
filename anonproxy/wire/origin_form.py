"""A request inside an opened HTTPS connection: the path it asks for, and whether it is for the
host the connection was opened for.

Inside TLS a client sends origin-form targets (`GET /path`, RFC 9112 §3.2.1) with a Host header;
some send absolute-form (`https://host/path`), and `OPTIONS *` is asterisk-form. The proxy's
connection to the site is for one host and port: a request naming another (in its target or its
Host) is answered 421 Misdirected Request (RFC 9110 §15.5.20) instead of being sent to the wrong
site, and a CONNECT inside is refused (400). A Host without a port is taken for the
connection's port (clients that leave a non-default port out mean no other). An HTTP/1.0
request may come without Host (RFC 9112 §3.2 asks it of HTTP/1.1 only): it is for the
connection's host, which the site receives as its Host.

Invariant: the path returned is what the site receives, unchanged from the client's target
(less the scheme and authority of an absolute-form one).
"""

from __future__ import annotations

from collections.abc import Sequence

from anonproxy.wire.address import Address, AddressError, parse_authority
from anonproxy.wire.errors import BadRequest, Misdirected
from anonproxy.wire.http1 import parse_absolute_url


def inner_path(method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]],
               dest: Address, version: bytes = b"1.1") -> bytes:
    """The path to send to `dest` for this request (of HTTP `version`), or BadRequest /
    Misdirected."""
    if method == b"CONNECT":
        raise BadRequest("CONNECT inside an opened HTTPS connection")
    if target.startswith(b"/") or (target == b"*" and method == b"OPTIONS"):
        path = target
    else:
        scheme, host, port, path = parse_absolute_url(target)
        if scheme != b"https" or not _same(host, 443 if port is None else port, dest):
            raise Misdirected(f"a request for {_shown(target)} on a connection to {dest}")
    hosts = [value for name, value in headers if name.lower() == b"host"]
    if not hosts and version == b"1.0":
        return path
    if len(hosts) != 1:
        raise BadRequest("a request needs exactly one Host header")
    try:
        # a Host without a port names the connection's port: some clients leave a port out
        named = parse_authority(hosts[0].decode("ascii"), dest.port)
    except (AddressError, UnicodeDecodeError):
        raise BadRequest("the Host header is not a valid host[:port]") from None
    if not _same(named.host.encode(), named.port, dest):
        raise Misdirected(f"a request for {named} on a connection to {dest}")
    return path


def _same(host: bytes, port: int, dest: Address) -> bool:
    name = host.decode("latin-1").lower().rstrip(".").removeprefix("[").removesuffix("]")
    return port == dest.port and name == dest.host.rstrip(".")


def _shown(target: bytes) -> str:
    """The scheme and authority of a target, for an error (never its path: it may hold a
    token)."""
    text = target.decode("latin-1")
    scheme, _, rest = text.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"[:200]
