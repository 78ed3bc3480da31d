"""HTTPS inspection: a CONNECT or SOCKS5 stream to a host the profile's `[inspect]` opens is
ended here with a certificate the local CA signs, and each request inside gets what a
plain-HTTP request gets (header policy, block lists by full URL, the relay of exchange.py) on
the proxy's own TLS connection to the site, which verifies the site's certificate.

Flow: the caller routed the destination and opened the exit's stream (so a refusal or a dead
exit is answered as for any tunnel), then said yes to the client -> the client's handshake (a
leaf for the destination's name, ALPN http/1.1) and the site's (hostname and chain checked
against `ca_bundle`, ALPN http/1.1) run side by side -> requests, one at a time: each must be
for the destination (wire/origin_form.py: else 421), passes the block lists by its https URL,
is sanitized and sent on the site connection, which is kept for the next request while both
sides allow it and reopened through the same exit when it is gone.

Invariants: the site receives no request unless its certificate verified; when it did not,
the client's first request is answered 502 naming the reason (inside TLS) and the connection
closes; a TLS failure of the site after its handshake (TLS 1.3 tells a demanded client
certificate only then) is a reset: a 502 naming it before an answer, a cut after one; a client
that does not start TLS is cut off (never relayed unopened); the site connection serves this
client connection only (never another client's: an identity per connection stays as it was for
a tunnel); nothing here is spliced (TLS on both sides).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from typing import cast

from anonproxy import logs
from anonproxy.exits.base import Opened
from anonproxy.exits.context import Context
from anonproxy.inbound import cached
from anonproxy.inbound.client import ClientConn
from anonproxy.policy.blocklists import http_request
from anonproxy.transport.client_side import ClientGone, ClientSide, Trace
from anonproxy.transport.exchange import StaleUpstream, exchange
from anonproxy.transport.upstream import Stream, UpstreamPool
from anonproxy.wire.address import Address
from anonproxy.wire.errors import (
    BadUpstreamResponse,
    ProxyError,
    SiteUntrusted,
    http_error_response,
)
from anonproxy.wire.headers import sanitize_request
from anonproxy.wire.messages import RequestHead
from anonproxy.wire.origin_form import inner_path
from anonproxy.wire.render import render_request_head

# The streams of opened connections' TLS (both sides): a TLS close waits for the peer's answer
# after its connection's task has ended, so a stopping proxy drops those still waiting. (Held
# weakly: a transport's protocol holds its writer while it lives; uvloop's transports cannot
# be weakly referenced themselves.)
_TLS: weakref.WeakSet[asyncio.StreamWriter] = weakref.WeakSet()


def abort_closing() -> None:
    """Drop every TLS connection of an opened host that is still open or closing (the proxy is
    stopping and its connection tasks have ended)."""
    for writer in list(_TLS):
        writer.transport.abort()
    _TLS.clear()


TLS_CLOSE_WAIT = 2.0  # seconds a client has to answer our close_notify before it is dropped


class NotTls(Exception):
    """The client did not start TLS on an opened connection (or its handshake failed)."""


class _Site:
    """The proxy's side of one opened connection: the site's TLS connection, kept between
    requests in a pool of one, and why the site is not trusted (if it is not)."""

    def __init__(self, ctx: Context, dest: Address, exit_path: str,
                 isolation: str | None) -> None:
        self.ctx, self.dest, self.exit_path, self.isolation = ctx, dest, exit_path, isolation
        self.key = (exit_path, dest.host, dest.port)
        self.pool = UpstreamPool(per_key=1, total=1, ttl=ctx.limits.idle_timeout)
        self.untrusted: str | None = None
        self.fresh: Stream | None = None  # the connection opened with the client's, unused

    async def secure(self, stream: Stream) -> Stream | None:
        """TLS on `stream` to the site, verified; None (and `untrusted` set) when it fails."""
        reader, writer = stream
        try:
            await writer.start_tls(self.ctx.site_tls(), server_hostname=self.dest.host,
                                   ssl_handshake_timeout=self.ctx.limits.connect_timeout)
        except ssl.SSLCertVerificationError as error:
            from anonproxy.tls.trust import describe_verify_error

            self.untrusted = (f"the certificate of {self.dest} failed verification: "
                              f"{describe_verify_error(error)}")
        except (ssl.SSLError, OSError, TimeoutError) as error:
            self.untrusted = f"TLS with {self.dest} failed: {_tls_reason(error)}"
        if self.untrusted is not None:
            writer.close()
            return None
        _TLS.add(writer)
        _alerts_as_resets(reader, self.dest)
        return reader, writer

    async def reopen(self) -> Stream:
        """A new TLS connection to the site through the same exit (the old one is gone)."""
        opened = await self.ctx.open(self.exit_path.split(">", 1)[0], self.dest,
                                     prefer=tuple(self.exit_path.split(">")),
                                     isolation=self.isolation)
        stream = await self.secure(opened.stream)
        if stream is None:
            raise SiteUntrusted(self.untrusted or "TLS with the site failed")
        return stream

    def close(self) -> None:
        """Drop what is left of the site's connections at once: waiting for a site to answer
        TLS's close would keep each for up to half a minute after its client left."""
        if self.fresh is not None:
            self.fresh[1].transport.abort()
        while (kept := self.pool.take(self.key)) is not None:
            kept[1].transport.abort()
        self.pool.close()


class _SiteTlsFailed(ConnectionResetError):
    """The site's TLS failed after its handshake (an alert: a client certificate it demands,
    which TLS 1.3 tells only once the handshake is over, or a bad record)."""


def _alerts_as_resets(reader: asyncio.StreamReader, dest: Address) -> None:
    """Have a TLS error from the site after its handshake reach the relay as the reset it is
    (an OSError the relay does not know would end the connection with no answer at all):
    before an answer the client gets a 502 naming it, after one a cut, and a kept connection
    found so is replaced, as for a reset."""
    set_exception = reader.set_exception

    def translated(exc: Exception) -> None:
        if isinstance(exc, ssl.SSLError):
            exc = _SiteTlsFailed(f"TLS with {dest} failed: {_tls_reason(exc)}")
        set_exception(exc)

    reader.set_exception = translated  # type: ignore[method-assign]


def _tls_failure(error: BadUpstreamResponse) -> BadUpstreamResponse:
    """The relay's error for a reset, with the site's TLS failure in its words when that is
    what it was."""
    cause = error.__cause__
    if isinstance(cause, BaseExceptionGroup):
        for exc in cause.exceptions:
            if isinstance(exc, _SiteTlsFailed):
                return BadUpstreamResponse(str(exc))
    return error


def hold(writer: asyncio.StreamWriter) -> None:
    """Stop reading the client before telling it the connection is established: its TLS
    handshake must reach the TLS layer, not the plain reader (StreamWriter.start_tls does not
    hand over what the reader already took)."""
    cast(asyncio.Transport, writer.transport).pause_reading()  # (a socket's: both ways)


async def serve_inspected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          ctx: Context, dest: Address, opened: Opened, trace: Trace,
                          isolation: str | None = None) -> None:
    """Open the connection the client was just told is established (CONNECT's 200 or SOCKS5's
    success; `hold` was called before), and serve the requests inside it until either side
    ends it. Raises NotTls when the client does not complete a TLS handshake; byte counts go
    to `trace`."""
    site = _Site(ctx, dest, ">".join(opened.path), isolation)
    if getattr(reader, "_buffer", b""):  # (asyncio keeps what a StreamReader holds there)
        opened.stream[1].close()
        raise NotTls("the client sent data before its TLS handshake could start")
    try:
        client_done, site_stream = await asyncio.gather(
            _accept_tls(writer, ctx, dest), site.secure(opened.stream), return_exceptions=True)
        if isinstance(client_done, BaseException):
            if isinstance(site_stream, tuple):
                site_stream[1].transport.abort()  # (as _Site.close: no wait for the site)
            # the half-made TLS layer would hold the socket until the client's FIN: drop it
            writer.transport.abort()
            raise NotTls(_tls_reason(client_done)) from None
        if isinstance(site_stream, tuple):
            site.fresh = site_stream
        await _serve_requests(ClientConn(reader, writer, lambda _: ctx, ctx), site, trace)
        await _end_tls(writer)
    finally:
        site.close()
        if not writer.is_closing():
            writer.transport.abort()


async def _accept_tls(writer: asyncio.StreamWriter, ctx: Context, dest: Address) -> None:
    assert ctx.authority is not None  # (Context.inspects says no without one)
    await writer.start_tls(ctx.authority.server_context(dest.host),
                           ssl_handshake_timeout=ctx.limits.header_timeout)
    _TLS.add(writer)


async def _end_tls(writer: asyncio.StreamWriter) -> None:
    """End TLS with the client as it should end (close_notify, so the end of a body read to
    the connection's end is told from a cut), waiting a moment for its answer, then drop it."""
    if writer.is_closing():
        return
    writer.close()
    try:
        async with asyncio.timeout(TLS_CLOSE_WAIT):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()


async def _serve_requests(client: ClientConn, site: _Site, trace: Trace) -> None:
    try:
        head = await client.next_head(time.monotonic())
        while head is not None:
            if not await _serve_one(client, site, head, trace):
                break
            head = await client.next_head(None)
    except ProxyError as error:  # a malformed or slow request head
        logs.connection("https", site.dest, site.exit_path, error.status, 0, 0, 0.0,
                        error.message)
        if not client.writer.is_closing():
            client.writer.write(http_error_response(error))
    except ClientGone:
        pass
    finally:
        client.close()


async def _serve_one(client: ClientConn, site: _Site, head: RequestHead, outer: Trace) -> bool:
    """One request inside; whether the connection may carry another."""
    t0, trace = time.monotonic(), Trace()
    trace.exit = site.exit_path
    ctx, dest = site.ctx, site.dest
    status: object = "-"
    problem = blocked = None
    try:
        path = inner_path(head.method, head.target, head.headers, dest, head.version)
        if site.untrusted is not None:
            raise SiteUntrusted(site.untrusted)
        if ctx.loaded.blocker is not None:
            ctx.refuse_listed(dest, http_request(dest, path, head.headers, scheme="https"))
        found = cached.plan(ctx, head, dest, path, "https", site.exit_path, site.isolation)
        status, keep = await cached.through_cache(
            client, head, found, lambda sink, extra: _exchange(
                sink, site, head, _request(ctx, head, dest, path, extra), trace))
        return keep
    except ProxyError as error:
        if isinstance(error, BadUpstreamResponse):
            error = _tls_failure(error)
        status, problem = error.status, error.message
        blocked = client.refuse(error)
        return False
    except ClientGone:
        problem = "client closed the connection"
        raise
    finally:
        outer.up += trace.up
        outer.down += trace.down
        logs.connection("https", dest, trace.exit, status, trace.up, trace.down,
                        time.monotonic() - t0, problem, blocked)


def _request(ctx: Context, head: RequestHead, dest: Address, path: bytes,
             extra: list | None = None) -> bytes:
    """The request head the site receives: sanitized as for plain HTTP, Host the site's;
    `extra` fields added (the cache's validators)."""
    authority = dest.authority(443).encode("ascii")
    headers = sanitize_request(
        head.headers, ctx.policy, target_origin="https://" + authority.decode(), host=authority,
        websocket=head.websocket, listed=head.listed)
    return render_request_head(head.method, path, [*headers, *(extra or ())])


async def forward_secure(client: ClientConn, head: RequestHead, dest: Address, path: bytes,
                         trace: Trace) -> tuple[int, bool]:
    """An https:// or wss:// request in absolute form (routed, `trace.exit` set): sent on a
    TLS connection of the proxy's own to the site, verified against `[inspect] ca_bundle`,
    opened for this request alone; a site that fails verification gets no request (502)."""
    ctx = client.ctx
    opened = await ctx.open(trace.exit, dest)
    trace.exit = ">".join(opened.path)
    site = _Site(ctx, dest, trace.exit, None)
    try:
        stream = await site.secure(opened.stream)
        if stream is None:
            raise SiteUntrusted(site.untrusted or "TLS with the site failed")
        return await exchange(client, head, stream, _request(ctx, head, dest, path),
                              site.key, trace, reused=False, pool=None)
    except BadUpstreamResponse as error:
        raise _tls_failure(error) from None
    except StaleUpstream:
        raise BadUpstreamResponse(
            f"{dest} (exit '{trace.exit}') closed the connection without a response") from None
    finally:
        site.close()


async def _exchange(client: ClientSide, site: _Site, head: RequestHead, request: bytes,
                    trace: Trace) -> tuple[int, bool]:
    """The request on the site connection opened with the client's, else on the kept one (a
    bodiless request; retried once on a new one when the kept one closed before answering, as
    for plain HTTP), else on a new one."""
    stream, site.fresh = site.fresh, None
    if stream is None and not head.has_body and not head.websocket:
        kept = site.pool.take(site.key)
        if kept is not None:
            try:
                return await exchange(client, head, kept, request, site.key, trace,
                                      reused=True, pool=site.pool)
            except StaleUpstream:
                pass
    if stream is None:
        stream = await site.reopen()
    try:
        return await exchange(client, head, stream, request, site.key, trace, reused=False,
                              pool=site.pool)
    except StaleUpstream:
        raise BadUpstreamResponse(
            f"{site.dest} (exit '{site.exit_path}') closed the connection without a response"
        ) from None


def _tls_reason(error: BaseException) -> str:
    """A TLS failure in a few words (OpenSSL's reason when it gives one)."""
    if isinstance(error, TimeoutError) or (
            # (asyncio's and uvloop's ssl_handshake_timeout: "SSL handshake is taking longer
            # than N seconds: aborting the connection")
            isinstance(error, ConnectionAbortedError) and "taking longer" in str(error)):
        return "the TLS handshake did not complete in time"
    if isinstance(error, ssl.SSLError) and error.reason:
        return error.reason.lower().replace("_", " ")
    if isinstance(error, ConnectionError):
        return "the connection closed during the TLS handshake"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
