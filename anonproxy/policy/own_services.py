"""The proxy's own services are never destinations: when a destination is refused for being
one of them, before connecting, after a direct connect, or through a hop (pure).

`owns` is what the running proxy serves, each address with its kind (a key of KINDS): its
listener, its dashboard, its tors' SOCKS and control ports, and for `fetch` and `route` what
running proxies of this user announced (Context.own_services gathers them).

Invariants:
- Before connecting, any local spelling of one of them (loopback literals, `localhost`,
  0.0.0.0, ::ffff:127.0.0.1) is refused, whatever the exit.
- After a direct connect, the peer address decides (a name may resolve to one of them).
- Through a chain whose last hop runs on this machine, the hop resolves the name itself, and
  its reply cannot prove where it connected — a hop with a fixed outgoing address reaches
  127.0.0.1 from that address, and tor and many others answer 0.0.0.0 — so a destination on a
  port one of them listens on is refused outright. A loopback bound address (SOCKS5 BND.ADDR)
  does prove a loopback connection, so it is refused on such a port whatever the hop.
"""

from __future__ import annotations

from collections.abc import Iterable

from anonproxy.wire.address import Address, is_loopback_host, reaches, targets_listener

# kind -> how a refusal names it before connecting, and after
KINDS = {
    "listener": ("the proxy's own address", "the proxy itself"),
    "dashboard": ("the proxy's own address (its dashboard)", "the proxy's dashboard"),
    "tor control": ("a tor control port", "a tor control port of this proxy"),
    "tor socks": ("a tor SOCKS port", "a tor SOCKS port of this proxy"),
    "other": ("another running anonproxy", "another running anonproxy"),
}

Owns = Iterable[tuple[Address, str]]


def before_connect(dest: Address, owns: Owns) -> str | None:
    """Why `dest`, as named, is one of our services (None: it is not, by its name)."""
    for own, kind in owns:
        if targets_listener(dest, own):
            return f"refusing to forward to {KINDS[kind][0]} {dest}"
    return None


def after_connect(dest: Address, peer: tuple[str, int], local_host: str, owns: Owns) -> str | None:
    """Why a direct connection to `dest` that reached `peer` (from our `local_host`) must be
    dropped: it reached one of our services."""
    for own, kind in owns:
        if reaches(peer, local_host, own):
            return f"refusing to connect to {KINDS[kind][1]} ({dest} led there)"
    return None


def through_hop(dest: Address, hop_local: bool, bound: Address | None, owns: Owns) -> str | None:
    """Why a tunnel to `dest` through a chain must not be used: its last hop runs on this
    machine (`hop_local`), or says it connected from a loopback address (`bound`), and `dest`
    is on a port one of our services listens on."""
    if not hop_local and not (bound is not None and is_loopback_host(bound.host)):
        return None
    for own, kind in owns:
        if own.port == dest.port:
            seen = "the hop runs on this machine" if hop_local else \
                "the hop says it connected from a loopback address"
            return (f"refusing {dest}: {KINDS[kind][1]} listens on port {dest.port}, and "
                    f"{seen}")
    return None
