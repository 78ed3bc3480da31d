"""The lean fetch's part on the wire (fetch_lean.py decides when it is taken): one fetch
through a running proxy — CONNECT to the destination, TLS inside the tunnel for https://, the
request and its answer (fetch_http.py's, as the full fetch sends and reads them), and a CONNECT
of its own for each redirect it follows, which the proxy routes again.

Invariants:
- Until the proxy answers the first CONNECT with 200, nothing has reached the destination but
  a connection: any doubt until then (no proxy there, no answer, a refusal other than 403 or
  504) is HandOver, and the full fetch takes the command. After that every failure is a
  FetchFailed with the full fetch's sentence and exit code, or MaxTime.
- Each step is bounded as the full fetch bounds it (the profile's connect_timeout for TLS,
  response_timeout for the answer, idle_timeout for the request body and between pieces of
  the answer) and all of them by --max-time.
- A redirect to what the full fetch refuses as ours (the profile's listen address, what
  running serves announced) is refused here, in its words; the proxy refuses its own
  services itself.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from anonproxy.cli.fetch_http import (
    BLOCKED,
    EXIT_DOWN,
    MAX_REDIRECTS,
    NETWORK,
    FetchFailed,
    ResponseReader,
    body_length,
    headers_for,
    parse_target,
    redirect,
    request_head,
)
from anonproxy.wire.errors import ProxyError

if TYPE_CHECKING:
    from typing import BinaryIO

    from anonproxy.cli.announce import Announced
    from anonproxy.cli.fetch_http import FetchRequest, Target
    from anonproxy.wire.headers import HeaderPolicy

HEAD_LIMIT = 65536  # the proxy's answer to CONNECT


class HandOver(Exception):
    """Nothing reached the destination yet: the full fetch takes the command."""


class MaxTime(Exception):
    """--max-time ran out."""


class Clock:
    """--max-time as a deadline over the steps, each also bounded by its own limit."""

    def __init__(self, max_time: float | None) -> None:
        self._now = time.monotonic
        self._deadline = None if max_time is None else self._now() + max_time

    def limit(self, seconds: float) -> tuple[float, bool]:
        """The time a step allowed `seconds` may take, and whether --max-time is the bound."""
        if self._deadline is None:
            return seconds, False
        left = self._deadline - self._now()
        if left <= 0:
            raise MaxTime
        return (left, True) if left < seconds else (seconds, False)


class ProxiedFetch:
    """One fetch through the proxy: the request, and each redirect it follows (-L)."""

    def __init__(self, request: FetchRequest, first: Target, proxy: Announced,
                 policy: HeaderPolicy, out: BinaryIO, own: list[tuple[str, int, str]],
                 clock: Clock) -> None:
        self.request, self.first, self.proxy, self.policy = request, first, proxy, policy
        self.out, self.own, self.clock = out, own, clock
        self.limits = proxy.limits

    def run(self) -> None:
        request = self.request
        url, method, body = request.url, request.method.upper(), request.body
        target = self.first
        for hop in range(MAX_REDIRECTS + 1):
            if hop:
                target = parse_target(url)
                self._refuse_own(target)
            headers = headers_for(request, self.first, target)
            conn, early = self._tunnel(target, first=hop == 0)
            try:
                if target.scheme == "https":
                    conn = self._tls(conn, target, early)
                    early = b""
                status, location = self._exchange(
                    conn, target, method, body, headers, early,
                    ResponseReader(request, method, self.out))
            finally:
                conn.close()
            following = redirect(request, url, status, location, method, body)
            if following is None:
                return
            url, method, body = following
        raise FetchFailed(NETWORK, f"more than {MAX_REDIRECTS} redirects")

    def _refuse_own(self, target: Target) -> None:
        """A redirect to what the full fetch refuses as ours (the profile's listen address,
        what running serves announced) is refused in its words; the proxy refuses only its
        own services. A name on such a port is refused too: the full fetch sees where a name
        led once connected, which this side cannot see, and must not resolve it itself."""
        from anonproxy.policy.own_services import KINDS
        from anonproxy.wire.address import Address, AddressError, check_host, targets_listener

        dest = target.dest
        named = dest.ip is None
        for host, port, kind in self.own:
            try:
                own = Address(check_host(host), port)
            except AddressError:
                continue
            if targets_listener(dest, own) or (named and port == dest.port):
                raise FetchFailed(BLOCKED, f"refusing to forward to {KINDS[kind][0]} {dest}")

    def _tunnel(self, target: Target, first: bool) -> tuple[socket.socket, bytes]:
        """A connection through the proxy to the target (CONNECT), and what came after the
        proxy's answer. Before the first request, any doubt hands over (HandOver)."""
        proxy, dest = self.proxy, target.dest
        wait, by_max = self.clock.limit(self.limits["connect_timeout"]
                                        + self.limits["response_timeout"])
        try:
            conn = socket.create_connection((proxy.host, proxy.port), timeout=wait)
        except OSError as error:
            if first:
                raise HandOver from None
            raise FetchFailed(NETWORK, f"{dest}: the proxy on {proxy.host}:{proxy.port} is "
                                       f"gone ({error})") from None
        try:
            authority = dest.authority().encode("ascii")
            conn.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (authority, authority))
            status, head, rest = _answer(conn)
        except TimeoutError:
            conn.close()
            if by_max:
                raise MaxTime from None
            if first:
                raise HandOver from None
            raise FetchFailed(NETWORK, f"{dest}: the proxy never answered within {wait:g} s") \
                from None
        except (OSError, ValueError):
            conn.close()
            if first:
                raise HandOver from None
            raise FetchFailed(NETWORK, f"{dest}: the proxy on {proxy.host}:{proxy.port} "
                                       "closed the connection") from None
        if status == 200:
            return conn, rest
        sentence = _sentence(conn, head, rest)
        conn.close()
        if status == 403:
            raise FetchFailed(BLOCKED, sentence)
        if status == 504:
            raise FetchFailed(NETWORK, sentence)
        if first:
            raise HandOver
        raise FetchFailed(EXIT_DOWN if status in (502, 503) else NETWORK, sentence)

    def _tls(self, conn: socket.socket, target: Target, early: bytes) -> socket.socket:
        """TLS with the destination inside the tunnel, verified as the full fetch does it."""
        import ssl

        host, limit = target.dest.host, self.limits["connect_timeout"]
        wait, by_max = self.clock.limit(limit)
        conn.settimeout(wait)
        try:
            if early:
                raise ssl.SSLError(f"{len(early)} bytes came before the handshake")
            return ssl.create_default_context().wrap_socket(conn, server_hostname=host)
        except TimeoutError:
            if by_max:
                raise MaxTime from None
            raise FetchFailed(NETWORK, f"TLS with {host} did not complete within {limit:g} s "
                                       "(limits.connect_timeout)") from None
        except OSError as error:  # (ssl.SSLError included)
            raise FetchFailed(NETWORK, f"TLS with {host} failed: {error}") from None

    def _exchange(self, conn: socket.socket, target: Target, method: str,
                  body: bytes | BinaryIO | None, headers: list[tuple[str, str]], early: bytes,
                  response: ResponseReader) -> tuple[int, str | None]:
        """One request and its answer, which ends where its framing says."""
        try:
            self._send(conn, target, request_head(self.policy, headers, target, method,
                                                  body_length(body)), body)
            done = response.feed(early) if early else None
            while done is None:
                if response.final is None:  # the server's answer: as the proxy waits for one
                    data = self._receive(conn, target, "answered", "response")
                else:  # the body: as the proxy waits on an idle connection
                    data = self._receive(conn, target, "sent more of the body", "idle")
                done = response.feed(data)
            return done
        except ProxyError as error:
            raise FetchFailed(NETWORK, error.message) from None
        except OSError as error:
            raise FetchFailed(NETWORK, f"{target.dest}: {error or type(error).__name__}") \
                from None

    def _send(self, conn: socket.socket, target: Target, head: bytes,
              body: bytes | BinaryIO | None) -> None:
        """The head, then the body as given, all within limits.idle_timeout."""
        limit = self.limits["idle_timeout"]
        until = time.monotonic() + limit
        pieces = iter((head, body)) if isinstance(body, bytes) or body is None else \
            _pieces(head, body)
        for piece in pieces:
            if not piece:
                continue
            wait, by_max = self.clock.limit(until - time.monotonic())
            if wait <= 0:
                raise _late(target, "took the request body", "idle", limit)
            conn.settimeout(wait)
            try:
                conn.sendall(piece)
            except TimeoutError:
                if by_max:
                    raise MaxTime from None
                raise _late(target, "took the request body", "idle", limit) from None

    def _receive(self, conn: socket.socket, target: Target, what: str, limit: str) -> bytes:
        seconds = self.limits[f"{limit}_timeout"]
        wait, by_max = self.clock.limit(seconds)
        conn.settimeout(wait)
        try:
            return conn.recv(1 << 16)
        except TimeoutError:
            if by_max:
                raise MaxTime from None
            raise _late(target, what, limit, seconds) from None


def _late(target: Target, what: str, limit: str, seconds: float) -> Exception:
    """The failure of a step that took longer than the profile's `limits.<limit>_timeout`."""
    return FetchFailed(NETWORK, f"{target.dest} never {what} within {seconds:g} s "
                                f"(limits.{limit}_timeout)")


def _pieces(head: bytes, body: BinaryIO):
    yield head
    while data := body.read(1 << 16):
        yield data


def _answer(conn: socket.socket) -> tuple[int, bytes, bytes]:
    """The status of the proxy's answer to CONNECT, its head, and the bytes after it. Raises
    ValueError for something that is not an HTTP answer, OSError, TimeoutError."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(HEAD_LIMIT)
        if not more or len(data) > HEAD_LIMIT:
            raise ValueError("no answer")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    version, status = head.split(b" ", 2)[:2]
    if not version.startswith(b"HTTP/1."):
        raise ValueError("not HTTP")
    return int(status), head, rest


def _sentence(conn: socket.socket, head: bytes, rest: bytes) -> str:
    """The one sentence of the proxy's error answer (Content-Length long; it then closes)."""
    length = next((int(v) for n, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                   if n.strip().lower() == b"content-length" and v.strip().isdigit()), HEAD_LIMIT)
    conn.settimeout(5)
    try:
        while len(rest) < min(length, HEAD_LIMIT) and (more := conn.recv(HEAD_LIMIT)):
            rest += more
    except OSError:
        pass
    text = rest[:length].decode("utf-8", "replace").strip()
    return text.removesuffix(".") or "the proxy refused the request"
