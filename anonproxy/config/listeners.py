"""The profile's listeners checked against the network and each other: listening beyond
loopback, a dashboard beside the proxy, two listeners on one socket, a reverse backend that
is one of our own listeners.

`listen_problems` is the one function every way an address reaches a listener goes through:
the profile's `listen` and each [[reverse]] entry's (profiles.py), `serve --listen` and
`--workers` (launch.py), a reload or profile switch and every ProxyServer start, `exec`
included (server.py). No environment variable sets a listen address.

Invariants: beyond loopback, a listener needs the profile's `allow` and/or credentials; no
backend is a listener of ours (the proxy never forwards to itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anonproxy.wire.address import (
    Address,
    is_loopback_host,
    is_unspecified_host,
    targets_listener,
)

if TYPE_CHECKING:
    from anonproxy.config.models import Admin
    from anonproxy.config.reverse import Reverse


def listen_problems(address: Address, allow: list, auth: object | None, *,
                    reverse: bool = False) -> list[str]:
    """What is wrong with listening on `address` given the profile's client allow-list and
    credentials (`auth`: the profile's, or those `exec` made; for a `reverse` entry, its
    own): beyond loopback (a wildcard such as 0.0.0.0 or ::, or an interface's address) the
    proxy or the entry's backends would be open to the network unless it has `allow` and/or
    `auth`."""
    if is_loopback_host(address.host) or allow or auth is not None:
        return []
    where = "every interface" if is_unspecified_host(address.host) else address.host
    if reverse:
        return [(f"listening on {where} exposes this entry's backends beyond this machine; "
                 'add allow = ["CIDR", ...] to the profile naming the clients that may '
                 'connect, and/or auth = { username = "...", password = "..." } to the entry '
                 "(for an onion service alone, listen on 127.0.0.1)")]
    return [(f"listening on {where} exposes the proxy beyond this machine (an open proxy); "
             'add allow = ["CIDR", ...] naming the clients that may connect, and/or '
             'auth = { username = "...", password = "..." } to the profile')]


def admin_problems(admin: Admin, listen: Address | None) -> list[str]:
    """What is wrong with a dashboard address next to the proxy's `listen` (None: no forward
    proxy; the profile check and `serve --admin` both ask)."""
    where, problems = admin.address, []
    if not is_loopback_host(where.host) and admin.password is None:
        problems.append('a dashboard beyond loopback can steer the proxy; add password = "..." '
                        '(at least 8 characters) or listen on 127.0.0.1')
    if (listen is not None and where.port != 0
            and (where.host, where.port) == (listen.host, listen.port)):
        problems.append("the same address as listen")
    return problems


def loop_problems(key: str, entry: Reverse, own: list[tuple[str, Address]]) -> list[str]:
    """The entry's backends that are one of our own listeners (`own`, by key): a loop."""
    problems = []
    for j, (text, backend) in enumerate(zip(entry.backends, entry.backend_addresses,
                                            strict=True), start=1):
        ours = [k for k, a in own if targets_listener(backend, a)]
        if ours:
            problems.append(f'{key}.backends[{j}] = "{text}": that is this profile\'s own '
                            f"{ours[0]} (a loop); a backend is another server")
    return problems


def clashes(address: Address, others: list[tuple[str, Address]]) -> list[str]:
    """The listeners among `others` that would take `address`'s socket: the same port (not 0)
    on the same host, or on a wildcard that covers it (0.0.0.0: IPv4; ::, every address)."""
    found = []
    for key, other in others:
        if other.port != address.port or other.port == 0:
            continue
        if other.host == address.host:
            found.append(f"the same address as {key}")
        elif any(is_unspecified_host(x.host) and (":" in x.host or ":" not in y.host)
                 for x, y in ((address, other), (other, address))):
            found.append(f"the same port as {key} ({other}), and one of them listens on every "
                         "interface")
    return found
