"""The chain exit: a chain of SOCKS5 and HTTP CONNECT proxy hops, first hop first.

The profile's `[exits.NAME]` table has `via = [hop URLs]` (and may declare a `country`). We
speak SOCKS5 and CONNECT to the hops ourselves, on top of the pure wire/hops.py, reading
exactly each reply so later bytes stay queued. The Tor exit (tor.py) opens its streams as a
one-hop chain through its tor's SOCKS port.

Every failure is translated here into a ProxyError naming the exit, the hop and the stage: the
owner's log gets the whole sentence ("exit 'uk' failed at hop 2 (socks5 127.0.0.3:1080):
connection refused"), a client the same without hop addresses ("exit 'uk' failed at hop 2
(socks5): connection refused") as a 502/504, a SOCKS5 client a reply code.

Invariants:
- The destination travels as a name (SOCKS5 DOMAINNAME, CONNECT host:port): no local DNS
  lookup of a destination ever happens through a chain.
- Through a hop on this machine, the router's `refuse_via_hop` sees whether the last hop runs
  here before anything is asked of it, and the SOCKS5 hop's bound address after (no loops).
- A probe reaches the last hop through the others and greets it: no destination is contacted.
- What `status` shows of a hop masks its username and password.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from anonproxy.exits.base import Env, Opened, Plan, hop_failed
from anonproxy.exits.connect import Stream, os_error, raw_detail, tcp
from anonproxy.wire import hops
from anonproxy.wire.address import Address, is_loopback_host, is_unspecified_host, plain_ip
from anonproxy.wire.errors import (
    SOCKS_HOST_UNREACHABLE,
    ExitDown,
    ExitFailed,
    Forbidden,
    StageTimeout,
)
from anonproxy.wire.hops import Hop, HopRefused
from anonproxy.wire.http1 import ResponseParser
from anonproxy.wire.messages import ResponseHead

if TYPE_CHECKING:
    from anonproxy.config.models import Exit as ExitConfig
    from anonproxy.exits.tor_process import TorSpec
    from anonproxy.policy.geo import GeoDB


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    hops: tuple[Hop, ...]
    country: str | None = None  # declared (upper case)

    kind: ClassVar[str] = "chain"
    members: ClassVar[tuple[str, ...]] = ()
    exposes_address: ClassVar[bool] = False
    reaches_onion: ClassVar[bool] = False
    shares_upstreams: ClassVar[bool] = True
    identity: ClassVar[str | None] = None
    tor_spec: ClassVar[TorSpec | None] = None
    probes: ClassVar[bool] = True

    def describe(self) -> str:
        return f"exit '{self.name}' ({' -> '.join(str(h) for h in self.hops)})"

    def summary_lines(self, plans: Mapping[str, Plan], indent: str = "") -> list[str]:
        chain = " -> ".join(h.masked_url() for h in self.hops)
        country = f" (declared country {self.country})" if self.country else ""
        plural = "s" if len(self.hops) > 1 else ""
        return [f"{indent}{self.name}: {len(self.hops)} hop{plural}: {chain}{country}"]

    def resolution(self, dest: Address, plans: Mapping[str, Plan]) -> str:
        return (f"{dest.host} is sent by name to the last hop ({self.hops[-1]}), which resolves "
                "it: no local DNS lookup")

    def pick(self, dest: Address, env: Env) -> str | None:
        return None

    async def open(self, dest: Address, env: Env, path: tuple[str, ...],
                   prefer: tuple[str, ...] = (), isolation: str | None = None) -> Opened:
        """Through the hops; the outcome counts toward the exit's health."""
        started = time.monotonic()
        try:
            stream = await open_chain(self, dest, timeout=env.connect_timeout,
                                      refuse=env.refuse_via_hop)
        except (ExitFailed, StageTimeout) as error:
            if hop_failed(error):
                env.health.record(self.name, False, error.message)
            raise
        env.health.record(self.name, True, latency_ms=(time.monotonic() - started) * 1000)
        return Opened(stream, path, self)

    async def probe(self, timeout: float) -> None:
        await probe_chain(self, timeout=timeout)

    async def resolve_remotely(self, host: str, env: Env, isolation: str | None) -> str | None:
        raise ExitDown(f"exit '{self.name}' resolves no names remotely")

    def status(self, env: Env, geo: GeoDB | None) -> dict[str, Any]:
        shown = [masked(hop) for hop in self.hops]
        last = self.hops[-1].address.ip
        verified = geo.country(last) if geo is not None and last is not None else None
        health = env.health.states.get(self.name)
        return {"kind": self.kind, "hops": shown, "through": " -> ".join(shown), "state": None,
                "up": health.up if health is not None else None, "country": self.country,
                "verified_country": verified,
                "country_matches": None if not self.country or not verified
                else self.country == verified}


def plan(name: str, exit_: ExitConfig) -> Chain:
    """An `[exits.NAME]` table with `via` (config/models.py, Exit)."""
    assert exit_.via is not None
    return Chain(name, tuple(exit_.via), exit_.country.upper() if exit_.country else None)


def masked(hop: Hop) -> str:
    """A hop as kind://host:port, with `***:***@` where it has credentials (a username is often
    an account or customer id at a paid proxy)."""
    return f"{hop.kind}://{'***:***@' if hop.username is not None else ''}{hop.address}"


def _hop(plan: Chain, stage: int, *, public: bool) -> str:
    """`hop 2 (socks5 127.0.0.3:1080)` for the owner, `hop 2 (socks5)` for a client."""
    hop = plan.hops[stage - 1]
    return f"hop {stage} ({hop.kind if public else hop})"


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
            reader, writer = await tcp(first.host, first.port)
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
            what, reply = os_error(error)
            raw = raw_detail(error)
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
    """Reach the last hop through the others and greet it (no destination is contacted): a
    SOCKS5 hop authenticates us, an HTTP hop answers OPTIONS * with our credentials."""
    last = plan.hops[-1]
    try:
        if len(plan.hops) > 1:
            short = Chain(plan.name, plan.hops[:-1])
            reader, writer = await open_chain(short, last.address, timeout=timeout)
        else:
            async with asyncio.timeout(timeout):
                reader, writer = await tcp(last.address.host, last.address.port)
    except TimeoutError:
        raise StageTimeout(f"exit '{plan.name}': {last} did not accept in {timeout:g} s") from None
    except OSError as error:
        raise ExitFailed(f"exit '{plan.name}': {last}: {os_error(error)[0]}") from None
    try:
        async with asyncio.timeout(timeout):
            if last.kind == "socks5":
                await socks5_authenticate(reader, writer, last)
            else:
                await _http_probe(reader, writer, last)
    except TimeoutError:
        raise StageTimeout(f"exit '{plan.name}': {last} did not answer in {timeout:g} s") from None
    except HopRefused as error:
        raise ExitFailed(f"exit '{plan.name}': {last}: {error.message}") from None
    except (OSError, asyncio.IncompleteReadError):
        raise ExitFailed(f"exit '{plan.name}': {last} closed the connection") from None
    finally:
        writer.transport.abort()


async def socks5_authenticate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
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
        await socks5_authenticate(reader, writer, hop)
        writer.write(hops.socks5_connect(target))
        return await _socks5_reply(reader)
    writer.write(hops.http_connect(hop, target))
    head = await _answer_head(reader, b"CONNECT", "reply to CONNECT")
    hops.http_connect_status(head.status, head.reason)
    return None


async def _http_probe(reader: asyncio.StreamReader, writer, hop: Hop) -> None:
    """Ask an HTTP hop something it answers itself (hops.http_probe), so that a hop refusing
    our credentials counts as down, not up."""
    writer.write(hops.http_probe(hop))
    head = await _answer_head(reader, b"OPTIONS", "answer")
    hops.http_probe_status(head.status, head.reason)


async def _answer_head(reader: asyncio.StreamReader, method: bytes, what: str) -> ResponseHead:
    """An HTTP hop's answer head to `method`, read exactly (later bytes stay queued)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HopRefused(f"its {what} has an over-long head") from None
    events = ResponseParser(method).feed(head)
    if not events or not isinstance(events[0], ResponseHead):
        raise HopRefused(f"it sent a malformed {what}")
    return events[0]


async def resolve_through_socks(hop: Hop, name: str, *, timeout: float) -> str | None:
    """The address `name` resolves to at a Tor SOCKS port (RESOLVE), or None."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await tcp(hop.address.host, hop.address.port)
            try:
                await socks5_authenticate(reader, writer, hop)
                writer.write(hops.socks5_resolve(name))
                return (await _socks5_reply(reader)).host
            finally:
                writer.transport.abort()
    except (TimeoutError, OSError, HopRefused, asyncio.IncompleteReadError):
        return None
