"""Which local account a TCP client connection comes from (Linux: sock_diag), so that the proxy
port serves its owner's programs only.

Another local account can connect to any loopback port. Through ours it would use the owner's
exits (their addresses and circuits, its traffic linked with the owner's) and could ask the
cache whether the owner fetched a URL (a hit says so: the owner's history). The kernel knows
which account opened the client's socket: one sock_diag query (NETLINK_SOCK_DIAG,
SOCK_DIAG_BY_FAMILY) for the connection's exact addresses answers with its uid, as `ss -e`
shows it, in a few microseconds and without privileges.

`PeerAccounts.account` looks the client's socket up by its own address (our peer) and ours:
found, it is a socket of this machine (of this network namespace) and the answer is its
account; not found, the client is elsewhere (a remote one: the allow-list and `auth` decide for
those), or gone.

Invariants: an answer comes only from the kernel's record of that very connection (both
addresses and ports match); REMOTE only when the kernel has no such socket here; UNKNOWN when
it did not answer, which `stranger` takes as "not the owner" for a loopback client. Where it
cannot be asked at all (not Linux, netlink refused: `available` is False) `stranger` refuses
nobody. One netlink socket per listener (a loop's), asked synchronously and closed with it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from typing import Final

NETLINK_SOCK_DIAG: Final = 4
SOCK_DIAG_BY_FAMILY: Final = 20
NLM_F_REQUEST: Final = 0x1
NLMSG_ERROR: Final = 2
INET_DIAG_NOCOOKIE: Final = 0xFFFFFFFF
ALL_STATES: Final = 0xFFFFFFFF

REMOTE: Final = -1  # no socket of this machine has those addresses: the client is elsewhere
UNKNOWN: Final = -2  # the kernel did not answer this question

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBxI")  # inet_diag_req_v2: family, protocol, extensions, states
_SOCKID = struct.Struct(">HH16s16s")  # inet_diag_sockid: ports and addresses (network order)
_TAIL = struct.Struct("=III")  # ... then interface and cookie (host order; no cookie: all ones)
# inet_diag_msg: family, state, timer, retransmits, the sockid, expires, queues, uid, inode
_UID_AT: Final = _HEADER.size + 4 + _SOCKID.size + _TAIL.size + 12
_ANSWER_SIZE = 1 << 12
_LENGTH: Final = _HEADER.size + _REQUEST.size + _SOCKID.size + _TAIL.size
_ASKING: Final[dict[int, bytes]] = {  # the request's start, per address family
    family: _REQUEST.pack(family, socket.IPPROTO_TCP, 0, ALL_STATES)
    for family in (socket.AF_INET, socket.AF_INET6)}
_NO_INTERFACE_OR_COOKIE: Final = _TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
_V4_REST: Final = bytes(12)  # an IPv4 address fills the first 4 of the 16 bytes


class PeerAccounts:
    """A sock_diag socket of one listener, asked about each of its clients; closed with it."""

    __slots__ = ("_sock", "_sequence", "_owner")

    def __init__(self) -> None:
        try:
            self._sock: socket.socket | None = socket.socket(
                socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        except (AttributeError, OSError):  # not Linux, or netlink refused
            self._sock = None
        self._sequence = 0
        self._owner = os.geteuid()  # what a socket the proxy opens records

    @property
    def available(self) -> bool:
        """Whether the kernel can be asked here."""
        return self._sock is not None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def account(self, peer: tuple, ours: tuple) -> int:
        """The uid of the account whose socket is the client end of the TCP connection between
        `peer` (the client's address, as getpeername gives it) and `ours` (getsockname);
        REMOTE when no socket here has those addresses, UNKNOWN when the kernel did not say."""
        sock = self._sock
        if sock is None:
            return UNKNOWN
        try:
            family, source = _packed(peer[0])
            other_family, destination = _packed(ours[0])
            ports = peer[1], ours[1]
        except (OSError, IndexError, TypeError):
            return UNKNOWN
        if other_family != family:
            return UNKNOWN
        self._sequence = sequence = (self._sequence + 1) & 0xFFFFFFFF
        message = b"".join((
            _HEADER.pack(_LENGTH, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, sequence, 0),
            _ASKING[family], _SOCKID.pack(*ports, source, destination), _NO_INTERFACE_OR_COOKIE))
        try:
            sock.send(message)
            while True:  # (an answer to an earlier, abandoned question is skipped)
                answer = sock.recv(_ANSWER_SIZE, socket.MSG_DONTWAIT)
                if len(answer) >= _HEADER.size and _HEADER.unpack_from(answer)[3] == sequence:
                    break
        except OSError:
            return UNKNOWN
        kind = _HEADER.unpack_from(answer)[1]
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", answer, _HEADER.size)[0] if len(answer) >= 20 else 0
            return REMOTE if code == errno.ENOENT else UNKNOWN
        if kind != SOCK_DIAG_BY_FAMILY or len(answer) < _UID_AT + 8:
            return UNKNOWN
        uid, inode = struct.unpack_from("=II", answer, _UID_AT)
        # no inode: a socket its program closed (the kernel keeps a small one that records no
        # account, uid 0): whoever it was is gone
        return uid if inode else UNKNOWN

    def stranger(self, peer: object, ours: object) -> str | None:
        """Why the client at `peer` (connected to our `ours`) may not use the proxy as its
        owner's program, or None: it is the owner's, or not of this machine (allow and auth
        decide), or the kernel cannot be asked here (`available` is False; the listener says
        so at start)."""
        if not isinstance(peer, tuple) or not isinstance(ours, tuple) or self._sock is None:
            return None  # (not TCP/IP, or nothing to ask)
        account = self.account(peer, ours)
        if account == self._owner:
            return None
        if account >= 0:
            return f"a program of another local account (uid {account})"
        if not is_loopback(peer[0]):
            return None  # remote (REMOTE), or a remote one the kernel did not answer about
        return ("a loopback client the kernel names no account for" if account == UNKNOWN
                else "a loopback client with no socket on this machine")


def _packed(host: str) -> tuple[int, bytes]:
    """(family, 16 bytes as inet_diag_sockid holds an address) of a socket's host (OSError
    for what is no address)."""
    if ":" in host:  # (IPv6, a scope after "%")
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    return socket.AF_INET, socket.inet_pton(socket.AF_INET, host) + _V4_REST


def is_loopback(host: str) -> bool:
    """Whether a socket's host is a loopback address (IPv4-mapped ones included)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
