"""The proxy auto-config file that points a browser at this proxy, and when to serve it (pure).

SOCKS5 comes first so the browser hands names to the proxy (no DNS lookups of its own); the
HTTP proxy on the same port is the fallback. There is deliberately no DIRECT: if the proxy is
down, the browser fails instead of going around it.

Invariant: the file is served only to a request whose Host names the proxy's own address (its
listening address; for a loopback or wildcard listener also the loopback names, and for a
wildcard listener the local address the connection reached), and the address it names is always
ours, never the Host a client sent. A web page whose own name resolves to 127.0.0.1 (DNS
rebinding) therefore cannot read it, nor make it say what it likes.
"""

from __future__ import annotations

from anonproxy.wire.address import (
    Address,
    AddressError,
    is_loopback_host,
    is_unspecified_host,
    parse_authority,
)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def render_pac(proxy: Address) -> str:
    where = str(proxy)
    return (
        "// anonproxy: every request goes through the proxy; never DIRECT.\n"
        "function FindProxyForURL(url, host) {\n"
        f'  return "SOCKS5 {where}; PROXY {where}";\n'
        "}\n"
    )


def pac_address(host_header: str | None, listen: Address, local: Address | None) -> Address | None:
    """The address the PAC file names for a request with this Host header that reached us on
    the socket address `local`; None when the Host does not name the proxy itself."""
    if host_header is None:
        return None
    try:
        named = parse_authority(host_header.strip(), 80)
    except AddressError:
        return None
    if named.port != listen.port:
        return None
    ours = listen
    if is_unspecified_host(listen.host):
        if local is None:
            return None
        ours = Address(local.host, listen.port)  # the address the client really reached
    if named.host == ours.host:
        return ours
    if named.host in LOOPBACK_NAMES and is_loopback_host(ours.host):
        return ours
    return None
