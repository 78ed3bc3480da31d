"""The inbound SOCKS5 handshake (RFC 1928, RFC 1929) as pure parsing and rendering.

Each `parse_*` function takes the bytes received so far and returns `None` when more are needed,
or the parsed message and how many bytes it used. Malformed input raises SocksError carrying the
reply code to send (or None when the only right answer is to close).

Invariants: hostnames are checked before anyone sees them; replies never reveal the proxy's own
outbound address (BND.ADDR is 0.0.0.0:0, as Tor does).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from anonproxy.wire.address import Address, AddressError, check_host
from anonproxy.wire.errors import (
    SOCKS_ADDRESS_TYPE_NOT_SUPPORTED,
    SOCKS_COMMAND_NOT_SUPPORTED,
    SOCKS_GENERAL_FAILURE,
)

VERSION = 0x05
NO_AUTH, USERPASS, NO_ACCEPTABLE = 0x00, 0x02, 0xFF
CMD_CONNECT, CMD_BIND, CMD_UDP_ASSOCIATE = 0x01, 0x02, 0x03
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 0x01, 0x03, 0x04
SUCCEEDED = 0x00


class SocksError(Exception):
    """A handshake failure: reply with `reply` (when not None), then close."""

    def __init__(self, message: str, reply: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    dest: Address


def parse_greeting(buf: bytes) -> tuple[list[int], int] | None:
    """VER NMETHODS METHODS... -> (methods, used)."""
    if len(buf) < 2:
        return None
    if buf[0] != VERSION:
        raise SocksError(f"not a SOCKS5 greeting (version byte {buf[0]})")
    count = buf[1]
    if count == 0:
        raise SocksError("the SOCKS5 greeting offers no authentication method")
    if len(buf) < 2 + count:
        return None
    return list(buf[2 : 2 + count]), 2 + count


def choose_method(methods: list[int], auth_required: bool) -> int:
    """Username/password when offered (its credentials may carry an isolation key), else none."""
    if USERPASS in methods:
        return USERPASS
    if NO_AUTH in methods and not auth_required:
        return NO_AUTH
    return NO_ACCEPTABLE


def method_reply(method: int) -> bytes:
    return bytes((VERSION, method))


def parse_userpass(buf: bytes) -> tuple[Credentials, int] | None:
    """RFC 1929: VER=1 ULEN UNAME PLEN PASSWD -> (credentials, used)."""
    if len(buf) < 2:
        return None
    if buf[0] != 0x01:
        raise SocksError(f"bad username/password sub-negotiation version {buf[0]}")
    ulen = buf[1]
    if len(buf) < 3 + ulen:
        return None
    plen = buf[2 + ulen]
    end = 3 + ulen + plen
    if len(buf) < end:
        return None
    user = buf[2 : 2 + ulen].decode("utf-8", "replace")
    password = buf[3 + ulen : end].decode("utf-8", "replace")
    return Credentials(user, password), end


def userpass_reply(ok: bool) -> bytes:
    return bytes((0x01, 0x00 if ok else 0x01))


def parse_request(buf: bytes) -> tuple[ConnectRequest, int] | None:
    """VER CMD RSV ATYP DST.ADDR DST.PORT -> (request, used); only CONNECT is served."""
    if len(buf) < 5:
        return None
    if buf[0] != VERSION:
        raise SocksError(f"bad SOCKS5 request version {buf[0]}", SOCKS_GENERAL_FAILURE)
    cmd, atyp = buf[1], buf[3]
    if atyp == ATYP_IPV4:
        end = 4 + 4
    elif atyp == ATYP_IPV6:
        end = 4 + 16
    elif atyp == ATYP_DOMAIN:
        end = 5 + buf[4]
    else:
        raise SocksError(f"unknown address type {atyp}", SOCKS_ADDRESS_TYPE_NOT_SUPPORTED)
    if len(buf) < end + 2:
        return None
    if cmd != CMD_CONNECT:
        name = {CMD_BIND: "BIND", CMD_UDP_ASSOCIATE: "UDP ASSOCIATE"}.get(cmd, f"command {cmd}")
        raise SocksError(f"{name} is not supported", SOCKS_COMMAND_NOT_SUPPORTED)
    port = int.from_bytes(buf[end : end + 2], "big")
    if atyp == ATYP_IPV4:
        host = str(ipaddress.IPv4Address(buf[4:8]))
    elif atyp == ATYP_IPV6:
        # normalised as every other address is: an IPv4-mapped one (::ffff:a.b.c.d) becomes the
        # IPv4 it reaches, so CIDR rules and the loopback and link-local checks see it
        host = check_host(str(ipaddress.IPv6Address(buf[4:20])))
    else:
        raw = buf[5:end]
        if not raw:
            raise SocksError("empty hostname", SOCKS_GENERAL_FAILURE)
        try:
            host = check_host(raw.decode("ascii"))
        except (UnicodeDecodeError, AddressError):
            raise SocksError("invalid hostname", SOCKS_GENERAL_FAILURE) from None
    if port == 0:
        raise SocksError("destination port 0", SOCKS_GENERAL_FAILURE)
    return ConnectRequest(Address(host, port)), end + 2


def reply(code: int) -> bytes:
    """A reply with BND.ADDR 0.0.0.0:0: the client learns nothing about our outbound side."""
    return bytes((VERSION, code, 0x00, ATYP_IPV4, 0, 0, 0, 0, 0, 0))
