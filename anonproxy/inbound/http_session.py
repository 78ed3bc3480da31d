"""One HTTP client connection: absolute-form requests, CONNECT tunnels and WebSocket upgrades.

Flow per request: parse the head (llhttp) -> refuse loops -> sanitize headers -> pick the exit ->
reuse or open an upstream connection -> send the head, stream the body (re-framed exactly as the
client framed it) while streaming the response back.

Invariants:
- A request is sent upstream only after its whole head parsed cleanly; a malformed one gets a
  400 and the connection closes.
- Bodies stream with backpressure both ways; nothing is buffered whole.
- Once a response head has gone to the client, a failure aborts the client connection (so a
  truncated body is never mistaken for a complete one).
- Upstream connections are reused only after a complete exchange that both sides allow to be
  kept alive; a request is retried once on a fresh connection only when a reused one was found
  closed before it answered and the request had no body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial

from anonproxy import logs
from anonproxy.exits.context import Context
from anonproxy.inbound import cached
from anonproxy.inbound.client import ClientConn
from anonproxy.inbound.inspected import NotTls, forward_secure, hold, serve_inspected
from anonproxy.inbound.pac import pac_address, render_pac
from anonproxy.policy.blocklists import http_request
from anonproxy.transport.client_side import ClientGone, ClientSide, Trace
from anonproxy.transport.deadline import Deadline
from anonproxy.transport.exchange import StaleUpstream, exchange
from anonproxy.transport.relay import take_over
from anonproxy.wire.address import (
    Address,
    AddressError,
    check_host,
    parse_authority,
    plain_ip,
)
from anonproxy.wire.errors import (
    BadRequest,
    BadUpstreamResponse,
    NotFound,
    NotImplementedByProxy,
    ProxyError,
)
from anonproxy.wire.headers import proxy_credentials, sanitize_request
from anonproxy.wire.http1 import parse_absolute_url
from anonproxy.wire.messages import RequestHead, Tunnel
from anonproxy.wire.render import render_request_head

CONNECTED = b"HTTP/1.1 200 Connection established\r\n\r\n"


async def serve_http(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    select: Callable[[tuple[str, str] | None], Context],
    ctx: Context,
    first: bytes,
    started: float,
    stopping: asyncio.Event,
    on_client: Callable[[ClientConn], None] = lambda client: None,
    deadline: Deadline | None = None,
) -> None:
    """Serve requests on one client connection until it closes. `select` checks a request's
    proxy credentials and gives its profile (the main one, `ctx` now, or one a username
    names), asked anew for every request so that a reload applies to the next request on a
    kept-alive connection. `deadline`: the connection task's timer, if the listener made it."""
    client = ClientConn(reader, writer, select, ctx, deadline)
    on_client(client)
    try:
        client.feed(first)
        head = await client.next_head(started)
        while head is not None:
            keep_alive = await _serve_one(client, head)
            if not keep_alive or stopping.is_set():
                break
            head = await client.next_head(None)
    except ProxyError as error:  # malformed or slow request head: answer once, then close
        logs.connection("http", "-", "-", error.status, 0, 0, 0.0, error.message)
        client.refuse(error)  # (after what was queued for it)
    except ClientGone:
        pass
    finally:
        client.close()


async def _serve_one(client: ClientConn, head: RequestHead) -> bool:
    """Handle one request; return whether the client connection may carry another."""
    t0 = time.monotonic()
    proto, trace = "http", Trace()
    dest: Address | str = "-"  # logged as "-" until known
    status: object = "-"
    problem = blocked = None
    try:
        ctx = client.ctx = client.select(proxy_credentials(head.headers))
        if head.method == b"CONNECT":
            proto = "connect"
            try:
                dest = parse_authority(head.target.decode("ascii"))
            except (AddressError, UnicodeDecodeError):
                # never echo the target: a mistaken URL here may carry a path or a token
                raise BadRequest("bad CONNECT target: expected host:port") from None
            trace.exit = (await ctx.route(dest)).exit
            status = await _tunnel(client, dest, trace, t0)
            return False
        if head.target.startswith(b"/"):
            status = await _answer_locally(client, head)
            return head.keep_alive
        dest, path, secure = _target(head)
        facts = (http_request(dest, path, head.headers, "https" if secure else "http")
                 if ctx.loaded.blocker else None)
        decision = ctx.known_route(dest, facts) or await ctx.look_up_route(dest)
        trace.exit = decision.exit
        if secure:  # https:// or wss:// in absolute form: the proxy's own verified TLS
            proto = "https"
            status, keep = await forward_secure(client, head, dest, path, trace)
        else:
            status, keep = await _forward(client, head, dest, path, trace)
        if not keep:  # the answer is whole and nothing follows: the client sees its end now,
            client.end()  # not after this request's bookkeeping
        return keep
    except ProxyError as error:
        status, problem = error.status, error.message
        blocked = client.refuse(error)
        return False
    except NotTls as error:  # an opened connection whose client did not speak TLS
        problem = f"opened for inspection, but the client's TLS failed: {error}"
        return False
    except ClientGone:
        problem = "client closed the connection"
        raise
    finally:
        if client.tunnel is None:  # (a tunnel that runs on writes its own line when it ends)
            logs.connection(proto, dest, trace.exit, status, trace.up, trace.down,
                            time.monotonic() - t0, problem, blocked)


def _target(head: RequestHead) -> tuple[Address, bytes, bool]:
    """An absolute-form request's destination, origin-form path, and whether it is https://
    (or wss://). NotImplementedByProxy for a scheme not proxied, BadRequest for a bad URL."""
    scheme, host, port, path = parse_absolute_url(head.target)
    secure = scheme == b"https" or (scheme == b"wss" and head.websocket)
    if not secure and scheme != b"http" and not (scheme == b"ws" and head.websocket):
        # (a ws:// upgrade is an http:// one by another name: carried as a WebSocket tunnel)
        raise NotImplementedByProxy(
            f"{scheme.decode('latin-1')}:// URLs are not proxied; http://, https:// and "
            "ws(s):// are"
        )
    return _destination(host, port or (443 if secure else 80)), path, secure


_DESTINATIONS: dict[tuple[bytes, int], Address] = {}  # checked hosts, so a name is checked once


def _destination(host: bytes, port: int) -> Address:
    """The checked destination of an absolute-form URL (BadRequest for a bad host)."""
    key = (host, port)
    dest = _DESTINATIONS.get(key)
    if dest is None:
        try:
            dest = Address(check_host(host.decode("ascii")), port)
        except (AddressError, UnicodeDecodeError) as error:
            raise BadRequest(str(error)) from None
        if len(_DESTINATIONS) >= 4096:
            _DESTINATIONS.clear()
        _DESTINATIONS[key] = dest
    return dest


_ORIGINS: dict[Address, tuple[bytes, str]] = {}  # (Host value, origin) of each destination


def _origin_of(dest: Address) -> tuple[bytes, str]:
    """A plain-HTTP destination's Host value and origin ("http://host[:port]"), made once."""
    found = _ORIGINS.get(dest)
    if found is None:
        authority = dest.authority(80)
        if len(_ORIGINS) >= 4096:
            _ORIGINS.clear()
        found = _ORIGINS[dest] = (authority.encode("ascii"), "http://" + authority)
    return found


async def _answer_locally(client: ClientConn, head: RequestHead) -> int:
    """A request to the proxy itself (origin-form): the PAC file, or a pointer to it."""
    if head.target.split(b"?", 1)[0] != b"/proxy.pac":
        raise BadRequest("this is a proxy: send requests in absolute form (configure it as your "
                         "proxy, or use /proxy.pac)")
    host = next((v.decode("latin-1") for n, v in head.headers if n.lower() == b"host"), None)
    sockname = client.writer.get_extra_info("sockname")
    local = Address(plain_ip(sockname[0]), sockname[1]) if sockname else None
    where = pac_address(host, client.ctx.listen, local)
    if where is None:  # a name that merely resolves here (DNS rebinding), or none at all
        raise NotFound("the PAC file is served only at the proxy's own address")
    body = render_pac(where).encode()
    await client.send(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ns-proxy-autoconfig\r\n"
        b"Cache-Control: no-store\r\nContent-Length: %d\r\n\r\n" % len(body)
        + (body if head.method != b"HEAD" else b"")
    )
    return 200


async def _tunnel(client: ClientConn, dest: Address, trace: Trace, t0: float) -> int:
    """Open `dest` and answer CONNECT; an opened (inspected) connection is served in this task,
    a plain tunnel runs on without it (client.tunnel) and writes its log line when it ends."""
    rest_event = await client.next_event()
    rest = rest_event.rest if isinstance(rest_event, Tunnel) else b""
    inspect = client.ctx.inspects(dest)
    if inspect and rest:  # (what TLS would need was already read as plain bytes)
        raise BadRequest("send the TLS handshake after the proxy answered CONNECT")
    opened = await client.ctx.open(trace.exit, dest)
    trace.exit = ">".join(opened.path)
    up_writer = opened.stream[1]
    try:
        if inspect:
            hold(client.writer)
        await client.send(CONNECTED)
        if inspect:
            await serve_inspected(client.reader, client.writer, client.ctx, dest, opened, trace)
            return 200
        line = partial(logs.connection, "connect", dest, trace.exit, 200)  # (up, down, seconds)
        client.become_tunnel(take_over((client.reader, client.writer), opened.stream,
                                       idle=client.ctx.limits.idle_timeout, early_ab=rest,
                                       since=t0, ended=line))
        return 200
    finally:
        if client.tunnel is None:
            up_writer.close()


async def _forward(
    client: ClientConn, head: RequestHead, dest: Address, path: bytes, trace: Trace
) -> tuple[int, bool]:
    ctx = client.ctx
    # exit names, each pool resolved to a member (an exit through no other is its own path)
    through = ctx.straight.get(trace.exit) or ctx.choose_path(trace.exit, dest)
    found = (cached.plan(ctx, head, dest, path, "http", ">".join(through), None)
             if ctx.cache is not None else None)
    if found is None:  # (no cache, or not its request: straight on)
        return await _send(ctx, client, head, dest, path, trace, through, [])
    return await cached.through_cache(
        client, head, found,
        lambda sink, extra: _send(ctx, sink, head, dest, path, trace, through, extra))


async def _send(ctx: Context, client: ClientSide, head: RequestHead, dest: Address, path: bytes,
                trace: Trace, through: tuple[str, ...], extra: list) -> tuple[int, bool]:
    """The request to `dest` on a kept upstream connection or a new one, `extra` fields added
    (the cache's validators)."""
    authority, origin = _origin_of(dest)
    headers = sanitize_request(
        head.headers, ctx.policy, target_origin=origin, host=authority,
        websocket=head.websocket, listed=head.listed,
    )
    request = render_request_head(head.method, path, [*headers, *extra])
    websocket = head.websocket
    shared = ctx.sharing.get(trace.exit)  # (shares_upstreams' table: no Python call)
    if shared is None:  # (an exit added after the context was made)
        shared = ctx.shares_upstreams(trace.exit)
    pool = ctx.pool if shared else None
    if pool is not None and not head.has_body and not websocket:
        key = (">".join(through), dest.host, dest.port)
        stream = pool.take(key)
        if stream is not None:
            try:
                exit_name, trace.exit = trace.exit, key[0]
                return await exchange(client, head, stream, request, key, trace, reused=True,
                                      pool=pool)
            except StaleUpstream:
                trace.exit = exit_name
    opened = await ctx.open(trace.exit, dest, prefer=through)
    trace.exit = ">".join(opened.path)
    key = (trace.exit, dest.host, dest.port)
    try:
        return await exchange(client, head, opened.stream, request, key, trace, reused=False,
                              pool=pool)
    except StaleUpstream:
        raise BadUpstreamResponse(
            f"{dest} (exit '{key[0]}') closed the connection without a response"
        ) from None
