"""cache/rfc.py and inbound/cached.py without sockets: a hit replays the stored fields as the
origin sent them (name case and order) with only Age added; hishel's model of a stored
response, kept on the entry between lookups, follows its fields when a 304 refreshes them; a
response that will not be stored is not followed past its head (its body neither parsed nor
kept), one that will is kept whole."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

from anonproxy.cache import rfc
from anonproxy.cache.store import MemoryCache
from anonproxy.inbound import cached
from anonproxy.wire.http1 import RequestHead, RequestParser

URL = "http://127.0.0.1:8080/a"
REQUEST = [(b"Host", b"127.0.0.1:8080")]


def _stored(cache_control: bytes, **extra: bytes) -> rfc.Stored:
    fields = [(b"Server", b"origin"), (b"Link", b"</a.css>; rel=preload"),
              (b"Cache-Control", cache_control), (b"Link", b"</b.js>; rel=preload"),
              (b"ETag", b'"v1"'), *((name.encode(), value) for name, value in extra.items())]
    return rfc.Stored("GET", URL, REQUEST, 200, b"OK", rfc.stored_fields(fields), b"x" * 10)


class _Client:
    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> bool:
        self.sent += data
        return True

    async def drained(self) -> None:
        pass


def test_a_hit_replays_the_stored_fields_with_age_only() -> None:
    stored = _stored(b"max-age=60")
    found = rfc.lookup(b"GET", URL, REQUEST, [stored])
    assert isinstance(found, rfc.Hit) and found.stored is stored and int(found.age) >= 0
    head = next(e for e in RequestParser().feed(
        b"GET http://127.0.0.1:8080/a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
        if isinstance(e, RequestHead))
    client = _Client()
    asyncio.run(cached.through_cache(client, head, found, None))  # type: ignore[arg-type]
    lines = client.sent.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert lines[:6] == [b"HTTP/1.1 200 OK", b"Server: origin", b"Link: </a.css>; rel=preload",
                         b"Cache-Control: max-age=60", b"Link: </b.js>; rel=preload",
                         b'ETag: "v1"']
    assert lines[-2:] == [b"Age: " + found.age, b"Content-Length: 10"]
    assert client.sent.endswith(b"\r\n\r\n" + b"x" * 10)


def test_the_model_kept_between_lookups_follows_refreshed_fields() -> None:
    stored = _stored(b"max-age=0")
    first = rfc.lookup(b"GET", URL, REQUEST, [stored])
    assert isinstance(first, rfc.Forward) and first.revalidating  # stale: revalidate
    assert rfc.lookup(b"GET", URL, REQUEST, [stored]).revalidating  # the kept model, again
    fresh = [(b"Date", formatdate(usegmt=True).encode()), (b"Cache-Control", b"max-age=60"),
             (b"ETag", b'"v1"')]
    result = rfc.outcome(first, 304, fresh)
    assert result.refresh == stored.id
    stored.fields = result.refreshed_fields  # as store.py's refresh does
    assert isinstance(rfc.lookup(b"GET", URL, REQUEST, [stored]), rfc.Hit)


def test_the_kept_model_is_counted_in_the_entry_size() -> None:
    small, large = _stored(b"max-age=60"), _stored(b"max-age=60", Extra=b"y" * 1000)
    assert large.size - small.size >= 2 * 1000


def _forwarded(cache: MemoryCache, cache_control: bytes, size: int) -> cached.CachePlan:
    """A response relayed as the exchange relays one: the relay (wire/response_relay.py)
    fed the upstream's bytes, reporting to the plan's Capture, whose writes reach the client."""
    from anonproxy.wire.http1 import RequestHead
    from anonproxy.wire.response_relay import ResponseRelay

    found = rfc.lookup(b"GET", URL, REQUEST, [])
    assert isinstance(found, rfc.Forward)
    plan = cached.CachePlan(cache, ("p",), URL, b"GET", list(REQUEST), [], found)
    client = _Client()
    sink = plan.client(client)  # type: ignore[arg-type]
    machine = ResponseRelay(RequestHead(b"GET", b"/", b"1.1", list(REQUEST), True, False))
    machine.tap = sink.tap
    head = b"HTTP/1.1 200 OK\r\nCache-Control: %s\r\nContent-Length: %d\r\n\r\n" % (
        cache_control, size)
    sent = [machine.feed(head)]
    sent += [machine.feed(b"x" * 1000) for _ in range(size // 1000)]
    for data in sent:
        sink.write(data)
    assert machine.done
    assert client.sent == b"".join(sent)  # the client gets every byte either way
    return plan


def test_a_response_not_to_be_stored_is_not_followed_past_its_head() -> None:
    cache = MemoryCache(1 << 20, 1 << 20)
    plan = _forwarded(cache, b"no-store", 100_000)
    assert plan.capture is not None and plan.capture.status == 200
    assert plan.capture.kept == b"" and not plan.capture.complete
    assert plan.finish() is None and len(cache) == 0


def test_a_response_to_be_stored_is_kept_whole() -> None:
    cache = MemoryCache(1 << 20, 1 << 20)
    plan = _forwarded(cache, b"max-age=60", 100_000)
    assert plan.finish() is None and len(cache) == 1
    assert cache.get(("p",), URL)[0].body == b"x" * 100_000
