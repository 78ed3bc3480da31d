"""The client side of a proxy hop: SOCKS5 and HTTP CONNECT handshakes (pure).

A hop is parsed from a URL (`socks5://user:pass@host:port`, `http://host:port`). Requests are
rendered as bytes and replies parsed from the bytes received so far (`None`: need more), so the
I/O driver in exits/chain.py stays a thin loop and these functions test as transcripts.

Why not python-socks: its HTTP connector always sends its own User-Agent (an identifying header
the invariants forbid) and reads the CONNECT reply with a single read, losing bytes that follow
the head and failing on a reply split across packets.

Invariants: a destination name always travels to the hop as a name (SOCKS5 DOMAINNAME, CONNECT
by name), never resolved here; an HTTP hop is only ever asked to CONNECT (a plain-HTTP request
through it would let it add Via or X-Forwarded-For); the CONNECT request carries nothing but
the authority and, when configured, Proxy-Authorization.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from anonproxy.wire.address import Address, AddressError, check_host
from anonproxy.wire.errors import (
    SOCKS_CONNECTION_REFUSED,
    SOCKS_GENERAL_FAILURE,
    SOCKS_HOST_UNREACHABLE,
    SOCKS_NETWORK_UNREACHABLE,
    SOCKS_NOT_ALLOWED,
)

SCHEMES = ("socks5", "socks5h", "http")
SOCKS_REPLY_TEXT = {
    0x01: "general failure",
    0x02: "not allowed by its rules",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}


class HopUrlError(ValueError):
    """A hop URL that cannot be used; the message says why and what to write instead."""


class HopRefused(Exception):
    """The hop answered, and said no. `socks_reply` is what our own SOCKS client should get."""

    def __init__(self, message: str, socks_reply: int = SOCKS_GENERAL_FAILURE, *,
                 about_target: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.socks_reply = socks_reply
        self.about_target = about_target  # the hop works; what it was asked to reach does not


@dataclass(frozen=True, slots=True)
class Hop:
    kind: str  # "socks5" | "http"
    address: Address
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.address}"

    def masked_url(self) -> str:
        auth = f"{self.username}:***@" if self.username is not None else ""
        return f"{self.kind}://{auth}{self.address}"


def parse_hop(url: str) -> Hop:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise HopUrlError(f"not a proxy URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme in ("socks4", "socks4a"):
        raise HopUrlError(
            "SOCKS4 hops are refused: SOCKS4 resolves names locally (a DNS leak) and has no "
            "authentication; use socks5://"
        )
    if scheme not in SCHEMES:
        raise HopUrlError(f"scheme '{scheme}' is not supported; use socks5:// or http://")
    if not parts.hostname or port is None:
        raise HopUrlError("write it as scheme://[user:password@]host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise HopUrlError("a proxy URL has no path, query or fragment")
    try:
        host = check_host(parts.hostname)
    except AddressError as error:
        raise HopUrlError(str(error)) from None
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and (len(username.encode()) > 255
                                 or len((password or "").encode()) > 255):
        raise HopUrlError("username and password must each be at most 255 bytes")
    kind = "http" if scheme == "http" else "socks5"
    return Hop(kind, Address(host, port), username, password)


# --- SOCKS5 (RFC 1928, 1929) --------------------------------------------------------------

def socks5_greeting(hop: Hop) -> bytes:
    return b"\x05\x01\x02" if hop.username is not None else b"\x05\x01\x00"


def socks5_parse_method(buf: bytes) -> tuple[int, int] | None:
    if len(buf) < 2:
        return None
    if buf[0] != 0x05:
        raise HopRefused("it is not a SOCKS5 server")
    if buf[1] == 0xFF:
        raise HopRefused("it accepts none of our authentication methods (credentials needed?)",
                         SOCKS_NOT_ALLOWED)
    return buf[1], 2


def socks5_auth(hop: Hop) -> bytes:
    user = (hop.username or "").encode()
    password = (hop.password or "").encode()
    return bytes((0x01, len(user))) + user + bytes((len(password),)) + password


def socks5_parse_auth(buf: bytes) -> tuple[bool, int] | None:
    if len(buf) < 2:
        return None
    if buf[1] != 0x00:
        raise HopRefused("it rejected the username and password", SOCKS_NOT_ALLOWED)
    return True, 2


def socks5_resolve(name: str) -> bytes:
    """Tor's RESOLVE extension (command 0xF0): the exit resolves the name; BND.ADDR answers."""
    encoded = name.encode("idna")
    return b"\x05\xf0\x00\x03" + bytes((len(encoded),)) + encoded + b"\x00\x00"


def socks5_connect(dest: Address) -> bytes:
    ip = dest.ip
    if ip is None:
        name = dest.host.encode("idna")
        target = b"\x03" + bytes((len(name),)) + name
    elif ip.version == 4:
        target = b"\x01" + ip.packed
    else:
        target = b"\x04" + ip.packed
    return b"\x05\x01\x00" + target + dest.port.to_bytes(2, "big")


def socks5_reply_length(head: bytes) -> int:
    """The whole reply's length, known from its first five bytes."""
    atyp = head[3]
    if atyp == 0x01:
        return 10
    if atyp == 0x04:
        return 22
    if atyp == 0x03:
        return 7 + head[4]
    raise HopRefused("it sent a malformed SOCKS5 reply")


def socks5_parse_reply(buf: bytes) -> tuple[Address, int] | None:
    """The CONNECT reply -> (bound address, bytes used); a refusal raises HopRefused."""
    if len(buf) < 5:
        return None
    if buf[0] != 0x05:
        raise HopRefused("it sent a malformed SOCKS5 reply")
    if buf[1] != 0x00:
        code = buf[1]
        mapped = {0x03: SOCKS_NETWORK_UNREACHABLE, 0x04: SOCKS_HOST_UNREACHABLE,
                  0x05: SOCKS_CONNECTION_REFUSED,
                  0x02: SOCKS_NOT_ALLOWED}.get(code, SOCKS_GENERAL_FAILURE)
        raise HopRefused(SOCKS_REPLY_TEXT.get(code, f"reply code {code}"), mapped,
                         about_target=True)
    atyp = buf[3]
    if atyp == 0x01:
        end = 4 + 4
    elif atyp == 0x04:
        end = 4 + 16
    elif atyp == 0x03:
        end = 5 + buf[4]
    else:
        raise HopRefused("it sent a malformed SOCKS5 reply")
    if len(buf) < end + 2:
        return None
    if atyp == 0x01:
        host = str(ipaddress.IPv4Address(buf[4:8]))
    elif atyp == 0x04:
        host = str(ipaddress.IPv6Address(buf[4:20]))
    else:
        host = buf[5:end].decode("ascii", "replace")
    return Address(host, int.from_bytes(buf[end : end + 2], "big")), end + 2


# --- HTTP CONNECT ------------------------------------------------------------------------

def http_connect(hop: Hop, dest: Address) -> bytes:
    authority = str(dest).encode("idna")
    lines = [b"CONNECT " + authority + b" HTTP/1.1", b"Host: " + authority]
    if hop.username is not None:
        token = base64.b64encode(f"{hop.username}:{hop.password or ''}".encode()).decode()
        lines.append(b"Proxy-Authorization: Basic " + token.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def http_probe(hop: Hop) -> bytes:
    """A request that an HTTP proxy answers itself, after checking our credentials, without
    connecting anywhere: `OPTIONS *` (RFC 9110, 9.3.7), addressed to the hop."""
    authority = str(hop.address).encode("idna")
    lines = [b"OPTIONS * HTTP/1.1", b"Host: " + authority]
    if hop.username is not None:
        token = base64.b64encode(f"{hop.username}:{hop.password or ''}".encode()).decode()
        lines.append(b"Proxy-Authorization: Basic " + token.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def http_probe_status(status: int, reason: bytes) -> None:
    """Raise HopRefused when the answer to http_probe says the hop refuses us (407 without or
    with wrong credentials; some proxies, tinyproxy among them, answer 401 to wrong ones).
    Any other answer shows a hop that is up and takes our credentials."""
    text = reason.decode("latin-1", "replace").strip()
    if status in (401, 407):
        raise HopRefused(f"it refuses our credentials ({status} {text})", SOCKS_NOT_ALLOWED)


def http_connect_status(status: int, reason: bytes) -> None:
    """Raise HopRefused unless the parsed CONNECT reply status says the tunnel is open."""
    if 200 <= status < 300:
        return
    text = reason.decode("latin-1", "replace").strip()
    if status == 407:
        raise HopRefused(f"it wants proxy authentication (407 {text})", SOCKS_NOT_ALLOWED)
    if status == 401:  # what tinyproxy answers to wrong credentials
        raise HopRefused(f"it refuses our credentials (401 {text})", SOCKS_NOT_ALLOWED)
    if status in (403, 405):
        raise HopRefused(f"it refused the tunnel ({status} {text})", SOCKS_NOT_ALLOWED,
                         about_target=True)
    if status in (502, 503, 504):
        raise HopRefused(f"it could not reach the next step ({status} {text})",
                         SOCKS_HOST_UNREACHABLE, about_target=True)
    raise HopRefused(f"it answered {status} {text}")
