"""One client connection to a reverse entry: requests in, each to a backend, responses back
with nothing in them that names a backend.

Flow per request: parse the head (llhttp) -> Host one of the entry's names (else 421) ->
credentials (else 401) -> the cache -> the backends in the entry's order: the request on a kept
connection or a new one, its response relayed with the backend-naming fields gone and
Location / Content-Location / Refresh that point at a backend turned to the Host the client
used (wire/backend_headers.py).

Invariants:
- What a client reads names no backend: errors say "the backend" or "no backend", never an
  address or port (the log, the owner's, names the backend).
- A request goes to another backend only when nothing of it can have been acted on: its
  connection failed to open (any method), or it is idempotent, bodiless, and its connection
  broke before any response came back. A reused connection found closed is retried once fresh.
- The client's own Forwarded, X-Forwarded-*, X-Real-IP and Via never reach a backend (a client
  must not choose what a backend trusts); the entry adds its own only with `forwarded = true`.
"""

from __future__ import annotations

import asyncio
import time

from anonproxy import logs
from anonproxy.exits.connect import os_error, tcp
from anonproxy.inbound import cached
from anonproxy.inbound.client import ClientConn
from anonproxy.policy.cache_partition import partition
from anonproxy.reverse.entry import ReverseEntry
from anonproxy.transport.client_side import ClientGone, ClientSide, Trace
from anonproxy.transport.exchange import StaleUpstream, exchange
from anonproxy.transport.upstream import Stream
from anonproxy.wire.address import AddressError, check_host
from anonproxy.wire.backend_headers import request_fields, response_fields
from anonproxy.wire.errors import (
    BadRequest,
    BadUpstreamResponse,
    ExitDown,
    Misdirected,
    NotImplementedByProxy,
    ProxyError,
    Unauthorized,
)
from anonproxy.wire.http1 import parse_absolute_url
from anonproxy.wire.messages import RequestHead
from anonproxy.wire.render import render_request_head

# RFC 9110 9.2.2: a repeat has the effect of one request (only those, bodiless, are retried)
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
BACKEND = "the backend"  # how errors a client reads name whichever backend failed


class _NextBackend(Exception):
    """This backend failed before the request could have been acted on: try the next one."""


async def serve_reverse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        entry: ReverseEntry, started: float, stopping: asyncio.Event,
                        on_client=lambda client: None) -> None:
    """Serve requests on one client connection of `entry` until it closes."""
    client = ClientConn(reader, writer, lambda _: entry.ctx, entry.ctx)
    on_client(client)
    try:
        head = await client.next_head(started)
        while head is not None:
            if not await _serve_one(client, head, entry) or stopping.is_set():
                break
            head = await client.next_head(None)
    except ProxyError as error:  # malformed or slow request head: answer once, then close
        logs.connection("reverse", "-", entry.label, error.status, 0, 0, 0.0, error.message)
        client.refuse(error)  # (after what was queued for it)
    except ClientGone:
        pass
    finally:
        client.close()


async def _serve_one(client: ClientConn, head: RequestHead, entry: ReverseEntry) -> bool:
    """Handle one request; return whether the client connection may carry another."""
    t0 = time.monotonic()
    trace = Trace()
    status: object = "-"
    problem = None
    try:
        host, path = _host_and_path(head)
        if entry.checks_hosts and not entry.answers_host(_name_of(host)):
            raise Misdirected("this address does not serve that host name")
        if not entry.authorized(head.headers):
            raise Unauthorized("this service needs a username and password")
        plan = _cache_plan(entry, head, host, path)
        status, keep = await cached.through_cache(
            client, head, plan,
            lambda sink, extra: _to_backends(entry, sink, head, host, path, trace, extra))
        return keep
    except ProxyError as error:
        status, problem = error.status, error.message
        client.refuse(error)
        return False
    except ClientGone:
        problem = "client closed the connection"
        raise
    finally:
        logs.connection("reverse", trace.exit, entry.label, status, trace.up, trace.down,
                        time.monotonic() - t0, problem)


def _host_and_path(head: RequestHead) -> tuple[bytes, bytes]:
    """The host the client asked for (as it wrote it, port included) and the target for the
    backend (origin-form)."""
    if head.method == b"CONNECT":
        raise NotImplementedByProxy("this address serves a web service; it opens no tunnels")
    target = head.target
    if not target.startswith(b"/") and target != b"*":  # absolute-form: its authority wins
        scheme, host, port, target = parse_absolute_url(target)
        if scheme not in (b"http", b"https"):
            raise BadRequest("the request target must be an http:// or https:// URL")
        return (host if port is None else host + b":%d" % port), target
    hosts = [value.strip() for name, value in head.headers if name.lower() == b"host"]
    if len(hosts) > 1:
        raise BadRequest("more than one Host header")
    if not hosts:
        if head.version == b"1.1":
            raise BadRequest("an HTTP/1.1 request needs a Host header")
        return b"", target
    return hosts[0], target


_NAMES: dict[bytes, str | None] = {}  # Host values seen -> their names, so each is checked once


def _name_of(host: bytes) -> str | None:
    """The name in a Host value (lower case, no port, no trailing dot); None when it is not a
    valid host."""
    try:
        return _NAMES[host]
    except KeyError:
        pass
    if len(_NAMES) >= 4096:
        _NAMES.clear()
    name = _NAMES[host] = _parse_name(host)
    return name


def _parse_name(host: bytes) -> str | None:
    text = host.decode("latin-1")
    if text.startswith("["):
        text = text[:text.find("]") + 1]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return check_host(text.rstrip(".")) if text else None
    except AddressError:
        return None


def _cache_plan(entry: ReverseEntry, head: RequestHead, host: bytes, path: bytes):
    """The cache's part in the request, when the entry caches (GET and HEAD only)."""
    cache = entry.cache
    if cache is None or head.method not in (b"GET", b"HEAD") or head.websocket:
        return None
    scheme = "https" if entry.tls is not None else "http"
    url = f"{scheme}://{host.decode('latin-1').lower()}{path.decode('latin-1')}"
    where = partition(entry.label, "backends", None, 0, _name_of(host) or "-", head.headers)
    return cached.look_up(cache, where, url, head)


async def _to_backends(entry: ReverseEntry, client: ClientSide, head: RequestHead, host: bytes,
                       path: bytes, trace: Trace, extra: list) -> tuple[int, bool]:
    """The request to the entry's backends in order, until one answers."""
    settings = entry.settings
    peer = None
    if settings.forwarded:
        peername = client.writer.get_extra_info("peername")
        peer = peername[0] if peername else "unknown"
    proto = "https" if entry.tls is not None else "http"
    host = host or entry.listen.authority().encode()  # (HTTP/1.0 without Host: ours)
    fields = request_fields(head.headers, peer=peer, proto=proto, host=host,
                            strip_auth=settings.auth is not None, websocket=head.websocket,
                            listed=head.listed)
    request = render_request_head(head.method, path, [*fields, *extra])
    public = proto.encode() + b"://" + host
    names = entry.names

    def rewrite(headers):
        return response_fields(headers, names, public)

    retry = head.method in IDEMPOTENT and not head.has_body and not head.websocket
    tried = entry.order()
    if not tried:
        raise ExitDown("no backend is available", public="the service is unavailable")
    for name in tried:
        try:
            return await _one_backend(entry, client, head, request, name, trace, rewrite, retry)
        except _NextBackend:
            continue
    raise BadUpstreamResponse(f"no backend answered (tried {', '.join(tried)})",
                              public="no backend answered")


async def _one_backend(entry: ReverseEntry, client: ClientSide, head: RequestHead,
                       request: bytes, name: str, trace: Trace, rewrite,
                       retry: bool) -> tuple[int, bool]:
    """The request on one backend: a kept connection (then a fresh one if that was found
    closed), else a new one. Raises _NextBackend when the next backend may take it."""
    address = entry.backends[name]
    key = ("backend", address.host, address.port)
    traffic = entry.traffic[name]
    trace.exit = name
    pool = entry.pool
    reusable = not head.has_body and not head.websocket
    entry.in_flight[name] += 1
    sent = False  # whether the request went to this backend (what its traffic counts)
    try:
        stream = pool.take(key) if reusable else None
        if stream is not None:
            sent = True
            try:
                return await _exchange(client, head, stream, request, key, trace, rewrite,
                                       reused=True, pool=pool)
            except StaleUpstream:
                pass  # closed while it was kept: once more on a fresh connection
        stream = await _connect(entry, name)
        sent = True
        try:
            return await _exchange(client, head, stream, request, key, trace, rewrite,
                                   reused=False, pool=pool if reusable else None)
        except (BadUpstreamResponse, StaleUpstream) as error:
            traffic.failures += 1
            entry.health.record(name, False, getattr(error, "message", "closed early"))
            if retry:
                raise _NextBackend() from None
            if isinstance(error, StaleUpstream):
                raise BadUpstreamResponse(f"backend {name} closed the connection without a "
                                          "response", public=f"{BACKEND} closed the connection "
                                          "without a response") from None
            raise
    finally:
        entry.in_flight[name] -= 1
        if sent:
            traffic.requests += 1
            traffic.up += trace.up
            traffic.down += trace.down


async def _exchange(client: ClientSide, head: RequestHead, stream: Stream, request: bytes,
                    key: tuple[str, str, int], trace: Trace, rewrite, *, reused: bool,
                    pool) -> tuple[int, bool]:
    try:
        return await exchange(client, head, stream, request, key, trace, reused=reused,
                              pool=pool, where=BACKEND, rewrite=rewrite)
    except ProxyError as error:  # (its words name no backend: `where`; the log gets which)
        error.message = f"backend {key[1]}:{key[2]}: {error.message}"
        raise


async def _connect(entry: ReverseEntry, name: str) -> Stream:
    """A new connection to a backend; a failure counts against its health and sends the
    request on to the next backend (nothing of it was sent)."""
    address = entry.backends[name]
    try:
        async with asyncio.timeout(entry.ctx.limits.connect_timeout):
            stream = await tcp(address.host, address.port)
    except TimeoutError:
        words = f"no connection within {entry.ctx.limits.connect_timeout:g} s"
    except OSError as error:
        words = os_error(error)[0]
    else:
        entry.health.record(name, True)
        return stream
    entry.traffic[name].failures += 1
    entry.health.record(name, False, words)
    logs.log.warning("backend %s of %s: %s", name, entry.label, words)
    raise _NextBackend()
