"""The cache around one request (plain HTTP, or inside an opened HTTPS connection): look it up
in its partition; answer a hit from memory (the origin is not contacted); otherwise forward it,
with validators when a stored response needs revalidating, while a Capture watches what the
client is sent and keeps a storable response.

A Capture stands in for the client connection (transport/client_side.py's ClientSide): every
write goes to the client unchanged, and the relay tells it the final response as it parses it
(wire/response_relay.py's ResponseTap: the head as the client gets it, the body, the end), so
nothing is parsed twice. Once the final head came, rfc.py says what it means for the store;
only a response to be stored is followed further, its body kept until `max_object_bytes` (any
other streams on, not copied); while it is kept the relay moves none of it by splice (past
`max_object_bytes` it may again), since a body moved past the relay could not be stored.
When the request was sent with our validators, the response head is held until its status is
known: a 304 is the cache's to use (the client, who asked without
validators, gets the stored response refreshed), anything else goes through.

Invariants: nothing the client receives differs from what it would without the cache, but a
hit or a refreshed entry; a response is stored only when it ended complete and rfc.py says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from anonproxy.cache.fresh import Hit, usual_hit
from anonproxy.cache.store import MemoryCache, Partition
from anonproxy.exits.context import Context
from anonproxy.inbound.client import ClientConn
from anonproxy.policy.cache_partition import partition
from anonproxy.transport.client_side import ClientSide
from anonproxy.wire.address import Address
from anonproxy.wire.messages import RequestHead
from anonproxy.wire.response_relay import ResponseTap

if TYPE_CHECKING:  # (imported where used: hishel is loaded only when a profile caches)
    from anonproxy.cache import rfc
    from anonproxy.cache.rfc import Fields

# fields of a stored response that are about its original connection and framing, not it
_NOT_REPLAYED = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                           b"trailer", b"proxy-connection", b"age"})


class Capture:
    """A client connection whose responses the cache follows too (see the module): the
    exchange writes to it as to the client, and its relay reports the final response to it
    (wire/response_relay.py's ResponseTap), already parsed."""

    def __init__(self, client: ClientSide, limit: int, hold: bool,
                 keeps: Callable[[int, Fields], bool]) -> None:
        self.client = client
        self.tap: ResponseTap | None = self  # (the relay's ResponseTap)
        self._limit = limit
        self._keeps = keeps  # given the final head: whether its body is wanted
        self._following = True  # the body is wanted, and all of it went by so far
        self.status: int | None = None
        self.reason = b""
        self.fields: Fields = []
        self.kept = bytearray()  # the body, while it is wanted
        self.complete = False
        self.held: bytearray | None = bytearray() if hold else None
        self.swallowed = False  # a 304 to the cache's own validators: the client gets none of it

    def __getattr__(self, name: str) -> Any:  # reader, writer, pending, deadline, limits, ...
        return getattr(self.client, name)

    @property
    def keeping(self) -> bool:
        """The body is wanted and all of it went by so far: nothing may bypass us (a body
        spliced past the relay could not be stored)."""
        return self._following and self.status is not None

    # the relay's reports (ResponseTap), each before the bytes it concerns are written
    def head(self, status: int, reason: bytes, headers: Fields) -> None:
        self.status, self.reason, self.fields = status, reason, headers
        self._following = self._keeps(status, headers)

    def body(self, data: bytes) -> None:
        if self._following:
            self.kept += data
            if len(self.kept) > self._limit:
                self._following, self.kept = False, bytearray()  # too large: not kept

    def end(self) -> None:
        self.complete = self._following

    def cut(self) -> None:
        self._following, self.kept = False, bytearray()  # moved past us: not whole

    # the client side, as the exchange uses it
    def write(self, data: bytes) -> bool:
        if self.swallowed:
            return True
        if self.held is not None:
            if self.status is None:
                self.held += data
                return True  # (no final head yet)
            if self.status == 304:
                self.swallowed, self.held = True, None
                return True
            data, self.held = bytes(self.held) + data, None
        return self.client.write(data)

    def ended(self) -> None:
        if not self.swallowed:  # (else the stored response is yet to come)
            self.client.ended()

    async def drained(self) -> None:
        if not self.swallowed:
            await self.client.drained()


@dataclass
class CachePlan:
    """One request's way through the cache: its partition and URL, what is stored for it, and
    what rfc.py said."""

    cache: MemoryCache
    partition: Partition
    url: str
    method: bytes
    fields: rfc.Fields
    variants: list[rfc.Stored]
    forward: rfc.Forward
    capture: Capture | None = field(default=None)
    outcome: rfc.Outcome | None = field(default=None)

    def client(self, client: ClientSide) -> ClientSide:
        """What the exchange writes to: the client, through a Capture when there is anything
        to learn from the response."""
        if self.forward.state is None:
            return client
        self.capture = Capture(client, self.cache.max_object_bytes,
                               hold=self.forward.revalidating, keeps=self._keeps)
        return self.capture  # (a ClientSide by delegation: __getattr__)

    def _keeps(self, status: int, fields: Fields) -> bool:
        """The final response head came: what it means for the store; whether its body is
        wanted (only when it is to be stored)."""
        from anonproxy.cache import rfc

        self.outcome = rfc.outcome(self.forward, status, fields)
        return self.outcome.store

    def finish(self) -> rfc.Stored | None:
        """After the exchange: store what may be stored; the entry the client must be answered
        from (a 304 to our validators), if any."""
        from anonproxy.cache import rfc

        capture, outcome = self.capture, self.outcome
        if capture is None or capture.status is None or outcome is None:
            return None
        self.cache.drop(outcome.drop)
        if outcome.refresh is not None:
            self.cache.revalidations += 1
            kept = next((s for s in self.variants if s.id == outcome.refresh), None)
            refreshed = self.cache.refresh(self.partition, self.url, outcome.refresh,
                                           outcome.refreshed_fields)
            return refreshed or kept
        if outcome.store and capture.complete:
            self.cache.put(self.partition, rfc.Stored(
                self.method.decode("latin-1").upper(), self.url, self.fields, capture.status,
                capture.reason, rfc.stored_fields(capture.fields), bytes(capture.kept)))
        return None


def plan(ctx: Context, head: RequestHead, dest: Address, path: bytes, scheme: str,
         exit_name: str, isolation: str | None) -> CachePlan | Hit | None:
    """The cache's part in a request: None (no cache, or not a method it serves), a Hit, or
    the plan to follow while forwarding."""
    cache = ctx.cache
    if cache is None or head.method not in (b"GET", b"HEAD") or head.websocket:
        return None
    if not ctx.shares_upstreams(exit_name.split(">", 1)[0]):
        return None  # an exit that makes every connection a new identity: nothing to share
    default = 443 if scheme == "https" else 80
    url = f"{scheme}://{dest.authority(default)}{path.decode('latin-1')}"
    where = partition(ctx.loaded.name, exit_name, isolation, ctx.identity_epoch, dest.host,
                      head.headers)
    return look_up(cache, where, url, head)


def look_up(cache: MemoryCache, where: Partition, url: str,
            head: RequestHead) -> CachePlan | Hit:
    """A GET or HEAD in its partition: a Hit, or the plan to follow while forwarding it. The
    usual hit is answered from what the entry keeps (cache/fresh.py), without hishel."""
    hit = usual_hit(head.method, url, head.headers, cache.peek(where, url))
    if hit is None:
        from anonproxy.cache import rfc

        variants = cache.get(where, url)
        found = rfc.lookup(head.method, url, head.headers, variants)
        if not isinstance(found, Hit):
            cache.misses += 1
            return CachePlan(cache, where, url, head.method, list(head.headers), variants, found)
        hit = found
    cache.hits += 1
    cache.used(hit.stored)
    return hit


def replay(head: RequestHead, stored: rfc.Stored, age: bytes) -> bytes:
    """The answer to `head` from a stored response: its fields as stored, with this Age."""
    made = stored.head
    if made is None or made[0] is not stored.fields:  # (a refresh replaces the fields)
        lines = [b"HTTP/1.1 %d %s" % (stored.status, stored.reason or b"OK")]
        lines += [n + b": " + v for n, v in stored.fields if n.lower() not in _NOT_REPLAYED]
        length = b"\r\nContent-Length: %d\r\n" % len(stored.body)
        made = stored.head = (stored.fields, b"\r\n".join(lines) + b"\r\nAge: ",
                              length + b"\r\n", length + b"Connection: close\r\n\r\n")
    return b"".join((made[1], age, made[2] if head.keep_alive else made[3],
                     b"" if head.method == b"HEAD" else stored.body))


async def answer(client: ClientConn | ClientSide, head: RequestHead, stored: rfc.Stored,
                 age: bytes) -> tuple[int, bool]:
    """Answer `head` from a stored response: its fields as stored, with this Age."""
    if not client.write(replay(head, stored, age)):
        await client.drained()
    return stored.status, head.keep_alive


async def through_cache(
    client: ClientConn, head: RequestHead, found: CachePlan | Hit | None,
    send: Callable[[ClientSide, rfc.Fields], Awaitable[tuple[int, bool]]],
) -> tuple[int, bool]:
    """Answer from the cache, or `send(client, extra fields)` the request through it."""
    if found is None:
        return await send(client, [])
    if isinstance(found, Hit):  # (written here: no coroutine of its own)
        if not client.write(replay(head, found.stored, found.age)):
            await client.drained()
        return found.stored.status, head.keep_alive
    status, keep = await send(found.client(client), found.forward.extra)
    refreshed = found.finish()
    if refreshed is not None:  # our validators got a 304: the stored response, refreshed
        age = next((v for n, v in refreshed.fields if n.lower() == b"age"), b"0")
        return await answer(client, head, refreshed, age)
    return status, keep

