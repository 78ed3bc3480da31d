"""Opening a stream to a destination through an exit: direct, or a chain of proxy hops.

Every failure is translated here into a ProxyError naming the exit, the hop and the stage: the
owner's log gets the whole sentence ("exit 'uk' failed at hop 2 (socks5 127.0.0.3:1080):
connection refused"), an HTTP client the same without hop addresses or a direct exit's source
address ("exit 'uk' failed at hop 2 (socks5): connection refused") as a 502/504, a SOCKS5 client
a reply code. Pools are chosen in context.py; this module opens one concrete exit.

Invariants:
- Through hops, the destination travels as a name (SOCKS5 DOMAINNAME, CONNECT host:port): no
  local DNS lookup of a destination ever happens for an exit other than direct.
- A connection whose peer turns out to be one of the proxy's own services is closed before a
  byte is sent (no loops, even through a name that resolves to ourselves); through hops, the
  caller's `refuse` sees whether the last hop runs on this machine before anything is asked of
  it, and the SOCKS5 hop's bound address after.
- A source address is honoured or the connection fails, never silently dropped.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass

from anonproxy.exits.tor_process import TorSpec
from anonproxy.wire import hops
from anonproxy.wire.address import (
    Address,
    is_loopback_host,
    is_unspecified_host,
    plain_ip,
)
from anonproxy.wire.errors import (
    SOCKS_CONNECTION_REFUSED,
    SOCKS_HOST_UNREACHABLE,
    SOCKS_NETWORK_UNREACHABLE,
    ExitFailed,
    Forbidden,
    StageTimeout,
)
from anonproxy.wire.hops import Hop, HopRefused
from anonproxy.wire.http1 import ResponseHead, ResponseParser

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class Direct:
    name: str
    source: str | None = None

    def describe(self) -> str:
        return f"exit '{self.name}' (direct{', from ' + self.source if self.source else ''})"


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    hops: tuple[Hop, ...]
    country: str | None = None

    def describe(self) -> str:
        return f"exit '{self.name}' ({' -> '.join(str(h) for h in self.hops)})"


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    members: tuple[str, ...]
    strategy: str = "failover"
    fallback: str | None = None

    def describe(self) -> str:
        return f"exit '{self.name}' (pool of {', '.join(self.members)}, {self.strategy})"


@dataclass(frozen=True, slots=True)
class TorExit:
    name: str
    spec: TorSpec
    isolation: str = "site"  # site | profile | connection

    def describe(self) -> str:
        return f"exit '{self.name}' (tor, {self.spec.label()})"


Plan = Direct | Chain | Pool | TorExit


def plan_from_config(name: str, exit_) -> Plan:
    if exit_.tor is not None:
        t = exit_.tor
        spec = TorSpec(t.control, t.socks, t.password, tuple(t.countries), t.torrc)
        return TorExit(name, spec, t.isolation)
    if exit_.pool is not None:
        return Pool(name, tuple(exit_.pool), exit_.strategy, exit_.fallback)
    if exit_.via is not None:
        return Chain(name, tuple(exit_.via), exit_.country.upper() if exit_.country else None)
    return Direct(name, str(exit_.source) if exit_.source is not None else None)


async def _tcp(host: str, port: int, *, source: str | None = None, limit: int = 1 << 16) -> Stream:
    kwargs: dict = {"limit": limit}
    if source is not None:
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        kwargs.update(local_addr=(source, 0), family=family)
    return await asyncio.open_connection(host, port, **kwargs)


def _os_error(error: OSError, source: str | None = None) -> tuple[str, int]:
    """What went wrong, in words that name no address (asyncio's own texts list the addresses
    it tried), and the SOCKS5 reply code for it."""
    code = error.errno
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the name ({error.strerror})", SOCKS_HOST_UNREACHABLE
    if code == errno.ECONNREFUSED or "refused" in str(error).lower():
        return "connection refused", SOCKS_CONNECTION_REFUSED
    if code == errno.EADDRNOTAVAIL and source:
        return "its source address is not available on this machine", SOCKS_NETWORK_UNREACHABLE
    if code in (errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return "network unreachable", SOCKS_NETWORK_UNREACHABLE
    if code == errno.EHOSTUNREACH:
        return "host unreachable", SOCKS_HOST_UNREACHABLE
    return (error.strerror or "the connection failed").lower(), SOCKS_HOST_UNREACHABLE


def _raw(error: OSError) -> str:
    """The OS's own text when _os_error had no words for it (it may name addresses): owner only."""
    return f" ({error})" if error.strerror is None and str(error) else ""


def _hop(plan: Chain, stage: int, *, public: bool) -> str:
    """`hop 2 (socks5 127.0.0.3:1080)` for the owner, `hop 2 (socks5)` for a client."""
    hop = plan.hops[stage - 1]
    return f"hop {stage} ({hop.kind if public else hop})"


async def open_direct(
    plan: Direct, dest: Address, *, timeout: float,
    refuse: Callable[[Address, tuple[str, int], str], str | None],
) -> Stream:
    """Connect directly; `refuse` sees what was really reached and may veto it (a reason)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _tcp(dest.host, dest.port, source=plan.source)
    except TimeoutError:
        raise StageTimeout(
            f"{plan.describe()} timed out connecting to {dest} after {timeout:g} s",
            public=f"exit '{plan.name}' timed out connecting to {dest} after {timeout:g} s",
        ) from None
    except OSError as error:
        what, reply = _os_error(error, plan.source)
        raise ExitFailed(f"{plan.describe()} could not connect to {dest}: {what}{_raw(error)}",
                         socks_reply=reply, hop_failed=False,
                         public=f"exit '{plan.name}' could not connect to {dest}: {what}") from None
    peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
    reason = refuse(dest, peer[:2], local[0]) if peer and local else None
    if reason is not None:
        writer.transport.abort()
        raise Forbidden(reason)
    return reader, writer


async def open_chain(
    plan: Chain, dest: Address, *, timeout: float,
    refuse: Callable[[Address, bool, Address | None], str | None] | None = None,
) -> Stream:
    """Connect to the first hop, ask each hop for the next, the last one for `dest`.

    `refuse(dest, hop_local, bound)` may veto (a reason): first with whether the last hop runs
    on this machine (the first hop's peer is a local address and every later hop is named by
    a loopback address), before anything is asked; then with the last hop's bound address."""
    targets = [h.address for h in plan.hops[1:]] + [dest]
    stage = 1
    try:
        async with asyncio.timeout(timeout):
            first = plan.hops[0].address
            reader, writer = await _tcp(first.host, first.port)
            try:
                reason = refuse(dest, _last_hop_local(plan, writer), None) if refuse else None
                if reason is None:
                    bound = None
                    # stage is read by the timeout handler below: the hop that ran out of time
                    for stage, (hop, target) in enumerate(  # noqa: B007
                            zip(plan.hops, targets, strict=True), start=1):
                        bound = await _handshake(reader, writer, hop, target)
                    reason = refuse(dest, False, bound) if refuse else None
                if reason is not None:
                    raise Forbidden(reason)
            except BaseException:
                writer.transport.abort()
                raise
    except TimeoutError:
        raise StageTimeout(
            f"exit '{plan.name}' timed out at {_hop(plan, stage, public=False)} "
            f"after {timeout:g} s",
            public=f"exit '{plan.name}' timed out at {_hop(plan, stage, public=True)} "
                   f"after {timeout:g} s",
        ) from None
    except HopRefused as error:
        last = stage == len(plan.hops)
        goal = "the destination" if last else f"hop {stage + 1}"
        raise ExitFailed(
            f"exit '{plan.name}' failed at {_hop(plan, stage, public=False)} asking for "
            f"{goal} {targets[stage - 1]}: {error.message}",
            socks_reply=error.socks_reply,
            hop_failed=not (error.about_target and last),
            public=f"exit '{plan.name}' failed at {_hop(plan, stage, public=True)} asking for "
                   f"{goal}{f' {dest}' if last else ''}: {error.message}",
        ) from None
    except (OSError, asyncio.IncompleteReadError) as error:
        if isinstance(error, OSError):
            what, reply = _os_error(error)
            raw = _raw(error)
        else:
            what, reply = "it closed the connection during the handshake", SOCKS_HOST_UNREACHABLE
            raw = ""
        raise ExitFailed(
            f"exit '{plan.name}' failed at {_hop(plan, stage, public=False)}: {what}{raw}",
            socks_reply=reply,
            public=f"exit '{plan.name}' failed at {_hop(plan, stage, public=True)}: {what}",
        ) from None
    return reader, writer


def _last_hop_local(plan: Chain, writer: asyncio.StreamWriter) -> bool:
    """Whether the chain's last hop runs on this machine: the first hop's peer is loopback or
    our own address, and every later hop is named by a loopback (or wildcard) address."""
    peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
    if not peer or not local:
        return False
    host = plain_ip(peer[0])
    if not (is_loopback_host(host) or host == plain_ip(local[0])):
        return False
    return all(is_loopback_host(h.address.host) or is_unspecified_host(h.address.host)
               for h in plan.hops[1:])


async def probe_chain(plan: Chain, *, timeout: float) -> None:
    """Reach the last hop through the others and greet it (no destination is contacted)."""
    last = plan.hops[-1]
    try:
        if len(plan.hops) > 1:
            short = Chain(plan.name, plan.hops[:-1])
            reader, writer = await open_chain(short, last.address, timeout=timeout)
        else:
            async with asyncio.timeout(timeout):
                reader, writer = await _tcp(last.address.host, last.address.port)
    except TimeoutError:
        raise StageTimeout(f"exit '{plan.name}': {last} did not accept in {timeout:g} s") from None
    except OSError as error:
        raise ExitFailed(f"exit '{plan.name}': {last}: {_os_error(error)[0]}") from None
    try:
        if last.kind == "socks5":
            async with asyncio.timeout(timeout):
                await _socks5_authenticate(reader, writer, last)
    except TimeoutError:
        raise StageTimeout(f"exit '{plan.name}': {last} did not answer in {timeout:g} s") from None
    except HopRefused as error:
        raise ExitFailed(f"exit '{plan.name}': {last}: {error.message}") from None
    except (OSError, asyncio.IncompleteReadError):
        raise ExitFailed(f"exit '{plan.name}': {last} closed the connection") from None
    finally:
        writer.transport.abort()


async def _socks5_authenticate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               hop: Hop) -> None:
    writer.write(hops.socks5_greeting(hop))
    parsed = hops.socks5_parse_method(await reader.readexactly(2))
    assert parsed is not None  # (None only for fewer than two bytes)
    method = parsed[0]
    if method == 0x02:
        if hop.username is None:
            raise HopRefused("it demands a username and password", 0x02)
        writer.write(hops.socks5_auth(hop))
        hops.socks5_parse_auth(await reader.readexactly(2))
    elif method != 0x00:
        raise HopRefused(f"it chose an authentication method we did not offer ({method})")


async def _socks5_reply(reader: asyncio.StreamReader) -> Address:
    """Read exactly one SOCKS5 reply (its length shows in its first five bytes); a refusal
    raises HopRefused. Returns the bound address."""
    reply = await reader.readexactly(5)
    if hops.socks5_parse_reply(reply) is None:
        reply += await reader.readexactly(hops.socks5_reply_length(reply) - 5)
    parsed = hops.socks5_parse_reply(reply)
    assert parsed is not None
    return parsed[0]


async def _handshake(reader: asyncio.StreamReader, writer, hop: Hop,
                     target: Address) -> Address | None:
    """Ask `hop` for a tunnel to `target`, reading exactly the reply (later bytes stay queued).
    The address a SOCKS5 hop says it connected from (None from an HTTP hop)."""
    if hop.kind == "socks5":
        await _socks5_authenticate(reader, writer, hop)
        writer.write(hops.socks5_connect(target))
        return await _socks5_reply(reader)
    writer.write(hops.http_connect(hop, target))
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HopRefused("its reply to CONNECT has an over-long head") from None
    events = ResponseParser(b"CONNECT").feed(head)
    if not events or not isinstance(events[0], ResponseHead):
        raise HopRefused("it sent a malformed reply to CONNECT")
    hops.http_connect_status(events[0].status, events[0].reason)
    return None


async def resolve_through_socks(hop: Hop, name: str, *, timeout: float) -> str | None:
    """The address `name` resolves to at a Tor SOCKS port (RESOLVE), or None."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _tcp(hop.address.host, hop.address.port)
            try:
                await _socks5_authenticate(reader, writer, hop)
                writer.write(hops.socks5_resolve(name))
                return (await _socks5_reply(reader)).host
            finally:
                writer.transport.abort()
    except (TimeoutError, OSError, HopRefused, asyncio.IncompleteReadError):
        return None
