"""One SOCKS5 client connection: handshake (pure parsing in socks5.py), connect, relay.

A client's own SOCKS5 credentials, when the proxy does not use them (`auth` uses both, a
`selectable` profile's name is the username), join the Tor isolation key as tor's
IsolateSOCKSAuth would join them, so Tor Browser or torsocks keep their separation through us.

A destination a block list blocks gets reply 0x02 (not allowed by ruleset), before any rule is
asked (Context.route).

Invariants: the destination is connected only after a complete, valid request; every refusal
sends the matching reply code before closing; a hostname goes to the exit as a name; a client's
credentials are never logged or passed on: only a keyed digest of them leaves this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from functools import partial

from anonproxy import logs
from anonproxy.exits.context import Context
from anonproxy.inbound.inspected import NotTls, hold, serve_inspected
from anonproxy.transport.client_side import Trace
from anonproxy.transport.relay import take_over
from anonproxy.wire import socks5
from anonproxy.wire.errors import (
    SOCKS_GENERAL_FAILURE,
    AuthRequired,
    Blocked,
    ProxyError,
    StageTimeout,
)

_KEY = secrets.token_bytes(32)  # this process's: the digest says nothing about the credentials


def own_isolation(credentials: socks5.Credentials, selected: Context, main: Context,
                  auth_required: bool) -> str | None:
    """The client's own isolation key from the credentials it sent, or None: not when they are
    the proxy's own (`auth`); only the password when the username picked a selectable profile."""
    if auth_required:
        return None
    username = credentials.username
    if selected is not main and selected.loaded.name == username:
        username = ""
    if not (username or credentials.password):
        return None
    fields = [username.encode(), credentials.password.encode()]
    message = b"".join(len(f).to_bytes(2, "big") + f for f in fields)
    return hmac.new(_KEY, message, hashlib.sha256).hexdigest()


class _Handshake:
    def __init__(self, reader: asyncio.StreamReader, first: bytes, deadline: float) -> None:
        self.reader, self.buf, self.deadline = reader, first, deadline

    async def take(self, parse):
        """Read until `parse` recognises a message; return it and keep what follows."""
        while True:
            parsed = parse(self.buf)
            if parsed is not None:
                message, used = parsed
                self.buf = self.buf[used:]
                return message
            if len(self.buf) > 1024:
                raise socks5.SocksError("handshake message too long", SOCKS_GENERAL_FAILURE)
            try:
                async with asyncio.timeout_at(self.deadline):
                    data = await self.reader.read(4096)
            except TimeoutError:
                raise StageTimeout("the SOCKS5 handshake did not complete in time") from None
            if not data:
                raise ConnectionResetError("client closed during the SOCKS5 handshake")
            self.buf += data


async def serve_socks5(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    select: Callable[[tuple[str, str] | None], Context],
    ctx: Context,
    first: bytes,
    started: float,
    *,
    auth_required: bool = False,
) -> asyncio.Future[None] | None:
    """Serve one SOCKS5 client. `select` checks its credentials and gives its profile (the main
    one, `ctx`, or one its username names). A tunnel (not an opened connection) runs on after
    this returns: what it returns then is the tunnel's future (transport/relay.py's take_over),
    else None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.limits.header_timeout - (time.monotonic() - started)
    hs = _Handshake(reader, first, deadline)
    t0 = time.monotonic()
    status: int | str  # the SOCKS reply code sent, or why none was
    dest, exit_label, status, up, down, problem = "-", "-", "-", 0, 0, None
    main, isolation, blocked = ctx, None, None
    tunnel: asyncio.Future[None] | None = None
    try:
        methods = await hs.take(socks5.parse_greeting)
        method = socks5.choose_method(methods, auth_required=auth_required)
        writer.write(socks5.method_reply(method))
        if method == socks5.NO_ACCEPTABLE:
            status, problem = "refused", "no acceptable authentication method"
            return None
        if method == socks5.USERPASS:
            credentials = await hs.take(socks5.parse_userpass)
            try:
                ctx = select((credentials.username, credentials.password))
            except AuthRequired as error:
                writer.write(socks5.userpass_reply(False))
                status, problem = "refused", error.message
                return None
            writer.write(socks5.userpass_reply(True))
            isolation = own_isolation(credentials, ctx, main, auth_required)
        request = await hs.take(socks5.parse_request)
        dest = request.dest
        exit_label = (await ctx.route(dest, isolation)).exit
        inspect = ctx.inspects(dest)
        if inspect and hs.buf:  # (what TLS would need was already read as plain bytes)
            raise socks5.SocksError("data before the SOCKS5 reply on a connection to open",
                                    SOCKS_GENERAL_FAILURE)
        opened = await ctx.open(exit_label, dest, isolation=isolation)
        exit_label = ">".join(opened.path)
        up_writer = opened.stream[1]
        try:
            if inspect:
                hold(writer)
            writer.write(socks5.reply(socks5.SUCCEEDED))
            status = 0
            if inspect:
                trace = Trace()
                try:
                    await serve_inspected(reader, writer, ctx, dest, opened, trace, isolation)
                except NotTls as error:
                    problem = f"opened for inspection, but the client's TLS failed: {error}"
                up, down = trace.up, trace.down
            else:  # the tunnel runs on without this task, and writes the line when it ends
                tunnel = take_over((reader, writer), opened.stream, idle=ctx.limits.idle_timeout,
                                   early_ab=hs.buf, since=t0,
                                   ended=partial(logs.connection, "socks5", dest, exit_label, 0))
        finally:
            if tunnel is None:
                up_writer.close()
    except socks5.SocksError as error:
        status, problem = error.reply if error.reply is not None else "closed", error.message
        if error.reply is not None:
            writer.write(socks5.reply(error.reply))
    except ProxyError as error:
        status, problem = error.socks_reply, error.message
        if isinstance(error, Blocked):
            blocked = (error.list_name, error.rule)
        writer.write(socks5.reply(error.socks_reply))
    except OSError:
        problem = "client closed the connection"
    finally:
        if tunnel is None:
            logs.connection("socks5", dest, exit_label, status, up, down,
                            time.monotonic() - t0, problem, blocked)
    return tunnel
