"""The listener: one port, the protocol sniffed from the first byte, connection accounting,
and the drain at shutdown.

Invariants:
- A client outside the allow-list is closed before a byte of it is read.
- Owner only: unless the profile says `local_accounts = "any"` or requires credentials (`auth`,
  or `exec`'s per-run ones), a client that is a program of another local account is refused
  (403, or SOCKS5's "no acceptable method") before anything of its request is acted on: it
  would use the owner's exits and could learn from the cache what the owner fetched
  (inbound/peer_account.py asks the kernel whose socket the client's is).
- Past `max_connections`, new clients get a clean refusal (503 or a SOCKS failure reply), not a
  hang.
- One connection's failure never reaches another: every per-connection error ends in that
  connection's own handler.
- Draining: stop accepting, close idle keep-alive connections, let active ones finish for up
  to `drain_timeout`, then cut what is left.
- A tunnel that runs on after its connection's task ended (transport/relay.py's take_over) is
  a connection until it ends: counted toward the limit, drained and cut like a busy one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from anonproxy import logs
from anonproxy.exits.context import Context
from anonproxy.inbound.http_session import ClientConn, serve_http
from anonproxy.inbound.inspected import abort_closing
from anonproxy.inbound.peer_account import PeerAccounts
from anonproxy.inbound.socks_session import serve_socks5
from anonproxy.transport.deadline import Deadline
from anonproxy.transport.reads import read
from anonproxy.transport.streams import start_server
from anonproxy.wire import socks5
from anonproxy.wire.address import Address
from anonproxy.wire.errors import Forbidden, Overloaded, StageTimeout, http_error_response

SOCKS4 = 0x04
Waited = TypeVar("Waited", bound=asyncio.Future)  # a connection's task, or a tunnel's future
SOCKS4_REFUSAL = ("SOCKS4 refused: the client resolves names itself (a DNS leak); "
                  "use SOCKS5 with remote names (socks5h://)")
SOCKS4_REJECTED = bytes((0x00, 0x5B, 0, 0, 0, 0, 0, 0))  # SOCKS4's "request rejected"
NOT_OWNERS = ("this proxy serves only the programs of the account that runs it (its profile's "
              "local_accounts or auth would share it)")
# (log name, log status, answer) of a refused stranger by its first byte; HTTP: a 403
_STRANGER_REFUSALS: dict[int, tuple[str, object, bytes]] = {
    socks5.VERSION: ("socks5", "0xff", socks5.method_reply(socks5.NO_ACCEPTABLE)),
    SOCKS4: ("socks4", "0x5b", SOCKS4_REJECTED)}


def allowed(allow: list, peer) -> bool:
    """Whether a client at `peer` (a socket's peername) is in `allow` (empty: everyone)."""
    if not allow:
        return True
    try:
        address = ipaddress.ip_address(peer[0])
    except (TypeError, ValueError, IndexError):
        return False
    return any(address in net for net in allow)


async def drain(server: asyncio.base_events.Server | None,
                tasks: Mapping[Waited, ClientConn | str | None], timeout: float) -> None:
    """Stop accepting on `server`; of its connections' `tasks` (each with its HTTP client
    once known, None before; a tunnel that runs on without a task is there as its future),
    cancel those not yet serving (still sniffing, in a handshake), close the idle keep-alive
    ones (the pending read sees EOF), give the busy ones `timeout` to finish, then cut what
    is left (what `tasks` holds then: a connection may have become a tunnel meanwhile)."""
    if server is not None:
        server.close()
    for task, client in list(tasks.items()):
        if client is None:
            task.cancel()
        elif isinstance(client, ClientConn) and client.idle:
            client.writer.close()
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (waiting := [t for t in tasks if not t.done()]) and loop.time() < end:
        await asyncio.wait(waiting, timeout=end - loop.time())
    busy = [t for t in tasks if not t.done()]
    for task in busy:
        task.cancel()
    if busy:
        await asyncio.wait(busy, timeout=2)


def admit(writer: asyncio.StreamWriter, allow: list) -> bool:
    """A new client: cut off before a byte of it is read when `allow` leaves it out (False).
    (Its small writes go out at once: asyncio and uvloop turn Nagle's algorithm off on every
    TCP connection they accept, tests/test_access.py checks it, so no call here repeats it.)"""
    if allow and not allowed(allow, writer.get_extra_info("peername")):
        writer.transport.abort()
        return False
    return True


class Listener:
    """Accepts clients and hands each to the HTTP or SOCKS5 session; owned by ProxyServer,
    which says which contexts apply (`context_for`, `main`) and whether credentials are
    required, and updates `allow` on reload."""

    def __init__(self, context_for: Callable, main: Callable[[], Context],
                 auth_required: Callable[[], bool], stopping: asyncio.Event,
                 allow: list, accounts: str = "owner") -> None:
        self.context_for = context_for
        self._main = main
        self._auth_required = auth_required
        self._stopping = stopping
        self.allow = allow
        self.accounts = accounts  # the profile's local_accounts: "owner" or "any"
        self._peers: PeerAccounts | None = None  # asked about each client, once started
        self.accepted = 0  # connections accepted since start
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it accepts on, once started
        # None while the first bytes are awaited; the HTTP client, or "socks5", once known;
        # a tunnel that runs on after its connection's task (inbound/client.py) as its future
        self._tasks: dict[asyncio.Future, ClientConn | str | None] = {}

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def start(self, listen: Address, sock: socket.socket | None = None) -> Address:
        """Listen on `listen`, or accept on a socket made elsewhere; the address bound."""
        self._loop = asyncio.get_running_loop()
        self._peers = PeerAccounts()
        if not self._peers.available and self.accounts == "owner" and not self._auth_required():
            logs.log.warning("this system does not say which local account a connection comes "
                             "from (no sock_diag): any local account can use the proxy port; "
                             "give the profile auth to keep it to yourself")
        if sock is not None:
            self._server = await start_server(self._handle, sock=sock, backlog=1024)
            host, port = sock.getsockname()[:2]
            return Address(host, port)
        self._server = await start_server(
            self._handle, listen.host, listen.port, reuse_address=True, backlog=1024
        )
        # (Any: uvloop's sockets are a list, typeshed says a tuple, and compiled code checks)
        server: Any = self._server
        return Address(listen.host, server.sockets[0].getsockname()[1])

    async def drain(self, timeout: float) -> None:
        await drain(self._server, self._tasks, timeout)
        abort_closing()  # TLS connections still saying goodbye: their tasks have ended
        if self._peers is not None:
            self._peers.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task(self._loop)  # (the loop given: no system call to find it)
        assert task is not None
        if not admit(writer, self.allow):
            return
        self._tasks[task] = None
        self.accepted += 1
        started = time.monotonic()
        main = self._main()
        limits = main.limits
        tunnel: asyncio.Future[None] | None = None  # a tunnel that runs on after this task
        deadline = Deadline(task)  # the connection's one timer (ClientConn takes it on)
        try:
            deadline.arm(limits.header_timeout)
            try:
                first = await read(reader, 1 << 16)
            except asyncio.CancelledError:
                if not deadline.expired():
                    raise
                return
            finally:
                deadline.disarm()
            if not first:
                return
            if self._refused(writer, first, limits.max_connections, started):
                return
            if first[0] == socks5.VERSION:
                self._tasks[task] = "socks5"  # drained like a busy HTTP connection
                tunnel = await serve_socks5(reader, writer, self.context_for, main, first,
                                            started, auth_required=self._auth_required())
            elif first[0] == SOCKS4:
                # SOCKS4 resolves names on the client: refuse it ("request rejected"), and say
                # so in the log, where the owner looks when a program cannot connect
                writer.write(SOCKS4_REJECTED)
                logs.connection("socks4", "-", "-", "0x5b", 0, 0, time.monotonic() - started,
                                SOCKS4_REFUSAL)
            else:
                # registering the client lets shutdown tell idle keep-alive from busy
                await serve_http(reader, writer, self.context_for, main, first, started,
                                 self._stopping,
                                 on_client=lambda c: self._tasks.__setitem__(task, c),
                                 deadline=deadline)
        except (OSError, StageTimeout):
            pass
        except asyncio.CancelledError:
            pass  # shutdown cut this connection; the task simply ends
        except Exception:  # noqa: BLE001 -- a bug must not take the listener down: log it, close this one
            logs.log.exception("internal error on a connection")
        finally:
            deadline.close()
            client = self._tasks.pop(task, None)
            if isinstance(client, ClientConn):
                tunnel = client.tunnel
            if tunnel is not None and not tunnel.done():  # it runs on: counted and drained
                self._tasks[tunnel] = "tunnel"
                tunnel.add_done_callback(self._forget)
            else:
                try:
                    if not writer.is_closing():
                        writer.close()
                except OSError:
                    pass

    def _forget(self, tunnel: asyncio.Future) -> None:
        self._tasks.pop(tunnel, None)

    def _refused(self, writer: asyncio.StreamWriter, first: bytes, max_connections: int,
                 started: float) -> bool:
        """Refuse a client beyond the connection limit or while stopping, or one that is not
        the owner's program (when that is asked); True when it was refused."""
        if len(self._tasks) > max_connections or self._stopping.is_set():
            self._refuse(writer, first)
            return True
        if self.accounts == "owner" and self._peers and not self._auth_required():
            why = self._peers.stranger(writer.get_extra_info("peername"),
                                       writer.get_extra_info("sockname"))
            if why is not None:
                self._refuse_stranger(writer, first, why, started)
                return True
        return False

    def _refuse_stranger(self, writer: asyncio.StreamWriter, first: bytes, why: str,
                         started: float) -> None:
        """Refuse a client that is not the owner's program: 403 (SOCKS5: no acceptable
        method, SOCKS4 its rejection), and the log says whose it was."""
        proto, status, answer = _STRANGER_REFUSALS.get(first[0]) or (
            "http", 403, http_error_response(Forbidden(NOT_OWNERS)))
        writer.write(answer)
        logs.connection(proto, "-", "-", status, 0, 0, time.monotonic() - started,
                        f"{why}: {NOT_OWNERS}")

    def _refuse(self, writer: asyncio.StreamWriter, first: bytes) -> None:
        if first[0] == socks5.VERSION:
            writer.write(socks5.method_reply(socks5.NO_ACCEPTABLE))
        else:
            writer.write(http_error_response(Overloaded(
                "the proxy is at its connection limit; try again shortly"
            )))
