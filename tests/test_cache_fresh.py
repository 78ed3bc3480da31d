"""cache/fresh.py as transcripts: the usual hit, answered without hishel, gives the answer
hishel's path gives (rfc.lookup, and IdleClient alone): the same entry, the same Age; and where
it cannot say (Vary, no-cache, a request's own Cache-Control, validators or Range, two variants,
fields a refresh replaced), it says nothing and rfc.lookup decides. Through inbound/cached.py's
look_up too, which tries it first: the same answers, and never across partitions."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from anonproxy.cache import rfc
from anonproxy.cache.fresh import Hit, usual_hit
from anonproxy.cache.store import MemoryCache
from anonproxy.inbound import cached
from anonproxy.wire.messages import RequestHead

NOW = 1_800_000_000.0
URL = "http://site.test/img.png"
HERE, THERE = ("p", "direct", "", "0", "a.example"), ("p", "direct", "", "0", "b.example")


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """A clock that stands still (hishel, rfc.py and fresh.py read time.time)."""
    monkeypatch.setattr(time, "time", lambda: NOW)


def date(seconds_ago: int) -> tuple[bytes, bytes]:
    return (b"Date", formatdate(NOW - seconds_ago, usegmt=True).encode())


def http_date(offset: int) -> bytes:
    return formatdate(NOW + offset, usegmt=True).encode()


def entry(*fields, request=(), method="GET") -> rfc.Stored:
    return rfc.Stored(method, URL, list(request), 200, b"OK", list(fields), b"body")


def _by_hishel(method: bytes, fields, entries):
    """What hishel's IdleClient alone answers: (entry id, Age) of a hit, or None."""
    from hishel import CacheOptions, FromCache, IdleClient, Request

    request = Request(method.decode().upper(), URL, rfc._headers(fields))
    state = IdleClient(options=CacheOptions(shared=True, supported_methods=["GET", "HEAD"],
                                            allow_stale=False)).next(
        request, [rfc._entry(e) for e in entries])
    return (state.entry.id, state.entry.response.headers["age"].encode()) if isinstance(
        state, FromCache) else None


MAX_AGE_60 = (b"Cache-Control", b"max-age=60")
# (stored responses, request method, request fields, whether the usual path answers it)
CASES = {
    "fresh": ([(MAX_AGE_60, date(5))], b"GET", [], True),
    "fresh, age 0": ([(MAX_AGE_60, date(0))], b"GET", [], True),
    "fresh, a second short of its lifetime": ([(MAX_AGE_60, date(59))], b"GET", [], True),
    "exactly its lifetime: stale": ([(MAX_AGE_60, date(60))], b"GET", [], False),
    "long stale": ([(MAX_AGE_60, date(500), (b"ETag", b'"v"'))], b"GET", [], False),
    "no Date: age 0": ([(MAX_AGE_60,)], b"GET", [], True),
    "a Date in the future: age 0": ([(MAX_AGE_60, date(-30))], b"GET", [], True),
    "an Age of its own, counted by hishel": ([(MAX_AGE_60, date(5), (b"Age", b"50"))], b"GET", [],
                                             True),
    "shared: s-maxage over max-age": ([((b"Cache-Control", b"s-maxage=30, max-age=5"),
                                        date(10))], b"GET", [], True),
    "Expires": ([((b"Expires", http_date(60)), date(0))], b"GET", [], True),
    "Expires past": ([((b"Expires", http_date(-60)), date(0))], b"GET", [], False),
    "heuristic, from Last-Modified": ([((b"Last-Modified", http_date(-100_000)), date(10))],
                                      b"GET", [], True),
    "max-age=0": ([((b"Cache-Control", b"max-age=0"), date(0), (b"ETag", b'"v"'))], b"GET", [],
                  False),
    "no lifetime": ([((b"ETag", b'"v"'), date(0))], b"GET", [], False),
    "no-cache in the response": ([((b"Cache-Control", b"no-cache, max-age=60"), date(5))],
                                 b"GET", [], False),
    "Vary": ([(MAX_AGE_60, date(5), (b"Vary", b"Accept"))], b"GET", [(b"Accept", b"x")], False),
    "Vary, another value": ([(MAX_AGE_60, date(5), (b"Vary", b"Accept"))], b"GET",
                            [(b"Accept", b"y")], False),
    "Vary *": ([(MAX_AGE_60, date(5), (b"Vary", b"*"))], b"GET", [], False),
    "two variants": ([(MAX_AGE_60, date(5)), (MAX_AGE_60, date(9))], b"GET", [], False),
    "the request's no-cache": ([(MAX_AGE_60, date(5))], b"GET",
                               [(b"Cache-Control", b"no-cache")], False),
    "the request's max-age=0": ([(MAX_AGE_60, date(5))], b"GET",
                                [(b"cache-control", b"max-age=0")], False),
    "the request's max-age, older": ([(MAX_AGE_60, date(5))], b"GET",
                                     [(b"Cache-Control", b"max-age=2")], False),
    "the request's max-age, younger": ([(MAX_AGE_60, date(5))], b"GET",
                                       [(b"CACHE-CONTROL", b"max-age=30")], False),
    "the request's Pragma only": ([(MAX_AGE_60, date(5))], b"GET", [(b"Pragma", b"no-cache")],
                                  True),
    "the client's own validator": ([(MAX_AGE_60, date(5))], b"GET",
                                   [(b"If-None-Match", b'"v"')], False),
    "a Range": ([(MAX_AGE_60, date(5))], b"GET", [(b"range", b"bytes=0-1")], False),
    **{f"the client's own {name.decode()}": ([(MAX_AGE_60, date(5))], b"GET",
                                             [(name, value)], False)
       for name, value in ((b"If-Modified-Since", http_date(-10)), (b"If-Match", b'"v"'),
                           (b"If-Unmodified-Since", http_date(-10)), (b"If-Range", b'"v"'))},
    "HEAD of a stored GET": ([(MAX_AGE_60, date(5))], b"HEAD", [], False),
    "other headers": ([(MAX_AGE_60, date(5))], b"GET",
                      [(b"Host", b"site.test"), (b"Accept", b"*/*"), (b"User-Agent", b"u")], True),
}


@pytest.mark.parametrize(("stored", "method", "fields", "usual"), CASES.values(), ids=CASES)
def test_the_usual_hit_answers_as_hishel_does(stored, method, fields, usual):
    entries = [entry(*f, request=fields) for f in stored]
    rfc.lookup(method, URL, [], entries)  # (an earlier plain request: what the entry keeps)
    by_rfc = rfc.lookup(method, URL, fields, entries)
    fast = usual_hit(method, URL, fields, entries)
    assert (fast is not None) is usual
    if fast is not None:
        assert isinstance(by_rfc, Hit) and fast.stored is by_rfc.stored and fast.age == by_rfc.age
        assert _by_hishel(method, fields, entries) == (fast.stored.id, fast.age)


def _head(method: bytes, fields) -> RequestHead:
    return RequestHead(method, URL.encode(), b"1.1", list(fields), True, False)


def _same(a, b) -> bool:
    if isinstance(a, Hit) or isinstance(b, Hit):
        return isinstance(a, Hit) and isinstance(b, Hit) and (a.stored, a.age) == (b.stored, b.age)
    forward = a.forward if isinstance(a, cached.CachePlan) else a
    return (forward.revalidating, forward.extra, forward.state is None) == (
        b.revalidating, b.extra, b.state is None)


@pytest.mark.parametrize(("stored", "method", "fields", "usual"), CASES.values(), ids=CASES)
def test_look_up_answers_as_rfc_lookup_the_first_time_and_after(stored, method, fields, usual):
    cache = MemoryCache(1 << 20, 1 << 20)
    entries = [entry(*f, request=fields) for f in stored]
    for one in entries:
        cache.put(HERE, one)
    head = _head(method, fields)
    for _ in range(2):  # (the first computes what the entry keeps; the second may use it)
        got = cached.look_up(cache, HERE, URL, head)
        assert _same(got, rfc.lookup(method, URL, fields, cache.get(HERE, URL)))
    assert cache.hits == (2 if isinstance(got, Hit) else 0)


def test_the_usual_hit_is_never_served_across_partitions():
    cache = MemoryCache(1 << 20, 1 << 20)
    cache.put(HERE, entry(MAX_AGE_60, date(5)))
    assert isinstance(cached.look_up(cache, HERE, URL, _head(b"GET", [])), Hit)
    assert isinstance(cached.look_up(cache, HERE, URL, _head(b"GET", [])), Hit)  # the usual path
    found = cached.look_up(cache, THERE, URL, _head(b"GET", []))
    assert isinstance(found, cached.CachePlan) and found.variants == []
    assert isinstance(cached.look_up(cache, HERE, URL + "?", _head(b"GET", [])),
                      cached.CachePlan)


def test_the_usual_hit_waits_for_fields_a_refresh_replaced():
    one = entry((b"Cache-Control", b"max-age=1"), date(5), (b"ETag", b'"v"'))
    assert not isinstance(rfc.lookup(b"GET", URL, [], [one]), Hit)
    one.fields = [MAX_AGE_60, date(0), (b"ETag", b'"v"')]  # what a 304 did to it
    assert usual_hit(b"GET", URL, [], [one]) is None  # (what it keeps is of the old fields)
    found = rfc.lookup(b"GET", URL, [], [one])
    assert isinstance(found, Hit) and found.age == b"0"
    fast = usual_hit(b"GET", URL, [], [one])
    assert fast is not None and fast.age == b"0"
    one.fields = [(b"Cache-Control", b"max-age=1"), date(5)]  # and back to stale
    assert usual_hit(b"GET", URL, [], [one]) is None
    assert not isinstance(rfc.lookup(b"GET", URL, [], [one]), Hit)


def test_the_age_follows_the_clock(monkeypatch):
    one = entry(MAX_AGE_60, date(0))
    assert rfc.lookup(b"GET", URL, [], [one]).age == b"0"
    for later, age in ((0.99, b"0"), (1.0, b"1"), (59.5, b"59")):
        monkeypatch.setattr(time, "time", lambda later=later: NOW + later)
        fast = usual_hit(b"GET", URL, [], [one])
        assert fast is not None and fast.age == age == _by_hishel(b"GET", [], [one])[1]
    monkeypatch.setattr(time, "time", lambda: NOW + 60)
    assert usual_hit(b"GET", URL, [], [one]) is None and _by_hishel(b"GET", [], [one]) is None
