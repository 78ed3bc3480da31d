"""Destinations and listen addresses: parsing and classification (pure).

Invariants: a parsed host is either a valid IP literal (IPv6 without brackets) or a DNS name made
of letters, digits, '-', '_' and '.', at most 253 characters; ports are 1..65535. Nothing here
resolves a name. Special-use names (`special_use`: .onion, .exit, .i2p, .local, .invalid, .alt)
are recognised from the name alone, so callers can decide them before any lookup.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

_NUMERIC = re.compile(r"^(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}\.?\Z",
                      re.IGNORECASE)
_HOSTNAME = re.compile(r"^(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?\Z")


class AddressError(ValueError):
    """An address that cannot be used; the message is one sentence for the user."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str  # lower-case DNS name or IP literal (IPv6 without brackets)
    port: int

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    # (written out, not left to the dataclass: its generated methods are Python, and an
    # Address is a dict key on the hot path, hashed a few times per request)
    def __hash__(self) -> int:
        return hash((self.host, self.port))

    def __eq__(self, other: object) -> bool:
        if type(other) is not Address:
            return NotImplemented
        return self.host == other.host and self.port == other.port

    def __str__(self) -> str:
        return self.authority()

    def authority(self, default_port: int | None = None) -> str:
        """host:port as a URL or Host header writes it: IPv6 in brackets, and the port left
        out when it is the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default_port else f"{host}:{self.port}"


def check_host(host: str) -> str:
    """Return `host` normalised (lower case, IPv6 unbracketed), or raise AddressError."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return _plain(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise AddressError("not a valid IPv6 address") from None
    try:
        return _plain(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _NUMERIC.match(host):
        # 127.1, 2130706433, 0x7f.1, 0177.0.0.1: resolvers read these as IPv4 addresses, so
        # they are that address here too, and the loop and metadata checks see it
        try:
            return str(ipaddress.IPv4Address(socket.inet_aton(host)))
        except OSError:
            raise AddressError("not a valid IPv4 address") from None
    if not _HOSTNAME.match(host):
        raise AddressError(f"'{host[:80]}' is not a valid host name")
    return host.lower().rstrip(".")


def _plain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An IP as text; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 it is, so
    loopback and self checks cannot be dodged by writing it the other way."""
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped if mapped is not None else ip)


def plain_ip(text: str) -> str:
    """A peer address from the socket layer, IPv4-mapped forms unwrapped."""
    try:
        return _plain(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return text


def check_port(port: object, *, allow_zero: bool = False) -> int:
    """A port number from a number or its digits (AddressError for anything else: callers
    pass what a file or a peer said)."""
    try:
        if not isinstance(port, (int, str)):
            raise ValueError
        value = int(port)
    except ValueError:
        raise AddressError("the port is not a number") from None
    low = 0 if allow_zero else 1
    if not low <= value <= 65535 or (isinstance(port, str) and not port.isdigit()):
        raise AddressError(f"the port is outside {low}-65535")
    return value


def parse_authority(
    text: str, default_port: int | None = None, *, listening: bool = False
) -> Address:
    """Parse 'host:port', '[v6]:port' (or a bare host when `default_port` is given).

    `listening`: port 0 (any free port) is allowed.
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise AddressError("an IPv6 bracket is not closed")
        host, rest = text[: close + 1], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise AddressError("expected host:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise AddressError("expected host:port (put IPv6 addresses in brackets)")
    else:
        host, port_text = text, None
    if port_text is None:
        if default_port is None:
            raise AddressError("expected host:port (the port is missing)")
        return Address(check_host(host), default_port)
    return Address(check_host(host), check_port(port_text, allow_zero=listening))


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_unspecified_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def targets_listener(dest: Address, listen: Address) -> bool:
    """True when connecting to `dest` would reach the proxy's own listening socket."""
    if dest.port != listen.port:
        return False
    if dest.host == listen.host:
        return True
    # A wildcard listener is reachable on every local address; a loopback one on the loopback
    # names. Other local interface addresses are caught by the exit when it connects.
    # (0.0.0.0 and :: as a destination reach this machine, like loopback)
    local = is_loopback_host(dest.host) or is_unspecified_host(dest.host)
    return local and (is_loopback_host(listen.host) or is_unspecified_host(listen.host))


# Top-level labels of names that must never reach a resolver (RFC 6761, 6762, 7686, 9476; and
# the .exit and .i2p pseudo-domains of Tor and I2P): what each one is, for the refusal.
SPECIAL_USE = {
    "onion": "is an onion service: only a Tor exit can reach it",
    "exit": "is a Tor '.exit' name (leave through a chosen relay): tor refuses those by default, "
            "and this proxy neither resolves them nor sends them on",
    "i2p": "is an I2P name: only an I2P router can reach it, and this proxy is not one (point the "
           "client at your I2P router instead)",
    "local": "is a multicast DNS name of the local network (.local): this proxy neither resolves "
             "it nor sends it on",
    "invalid": "is under .invalid, which by definition names nothing (RFC 6761): nothing was "
               "resolved or sent",
    "alt": "is under .alt, a namespace outside DNS (RFC 9476): this proxy neither resolves it "
           "nor sends it on",
}


def special_use(host: str) -> str | None:
    """The special-use top-level label of a normalised host ("onion", "exit", "i2p", "local",
    "invalid", "alt"), or None. A bare label ("onion") counts too."""
    label = host[host.rfind(".") + 1:]
    return label if label in SPECIAL_USE else None


def special_use_refusal(host: str, tor_exit: bool = False) -> str | None:
    """Why `host` may not be sent on, in one sentence, or None: names under a special-use label
    are refused, except a .onion name when a Tor exit will carry it (`tor_exit`)."""
    label = special_use(host)
    if label is None:
        return None
    if host == label:
        return f"'{host}' alone names no host: nothing was resolved or sent"
    if label == "onion":
        return None if tor_exit else f"{host} {SPECIAL_USE[label]}, and this profile has none"
    return f"{host} {SPECIAL_USE[label]}"


def reaches(peer: tuple[str, int], local_host: str, own: Address) -> bool:
    """Whether a connection whose remote end is `peer` (and whose own end is `local_host`)
    reached the socket listening on `own`: same port, and the same address, or any address of
    this machine for a wildcard listener, or any loopback address for one named `localhost`."""
    host, port = plain_ip(peer[0]), peer[1]
    if port != own.port:
        return False
    if host == own.host:
        return True
    if is_unspecified_host(own.host):
        return host == plain_ip(local_host) or is_loopback_host(host)
    return own.ip is None and is_loopback_host(own.host) and is_loopback_host(host)
