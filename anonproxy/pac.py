"""The proxy auto-config file that points a browser at this proxy (pure).

SOCKS5 comes first so the browser hands names to the proxy (no DNS lookups of its own); the
HTTP proxy on the same port is the fallback. There is deliberately no DIRECT: if the proxy is
down, the browser fails instead of going around it.
"""

from __future__ import annotations

from .address import Address


def render_pac(proxy: Address) -> str:
    where = str(proxy)
    return (
        "// anonproxy: every request goes through the proxy; never DIRECT.\n"
        "function FindProxyForURL(url, host) {\n"
        f'  return "SOCKS5 {where}; PROXY {where}";\n'
        "}\n"
    )
