"""cache/rfc.py as transcripts, and inbound/cached.py without sockets.

A request and what is stored -> a Hit (with its Age) or a Forward (with the validators to add);
a response head -> what the store does (store, refresh, drop). The clock is fixed, so ages are
exact. And: a hit replays the stored fields as the origin sent them (name case and order) with
only Age added; hishel's model of a stored response, kept on the entry between lookups, follows
its fields when a 304 refreshes them; a response that will not be stored is not followed past
its head (its body neither parsed nor kept), one that will is kept whole. The end-to-end side,
with a counting origin and real clients, is tests/test_cache.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonproxy.cache import rfc
from anonproxy.cache.store import MemoryCache
from anonproxy.inbound import cached
from anonproxy.wire.http1 import RequestParser
from anonproxy.wire.messages import RequestHead

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


NOW = 1_800_000_000.0
SITE_URL = "http://site.test/img.png"
MAX_AGE_60 = (b"Cache-Control", b"max-age=60")


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """A clock that stands still (hishel and stored_fields read time.time)."""
    monkeypatch.setattr(time, "time", lambda: NOW)


def date(seconds_ago: int) -> tuple[bytes, bytes]:
    return (b"Date", formatdate(NOW - seconds_ago, usegmt=True).encode())


def stored(*fields, request=(), method="GET", status=200, body=b"body") -> rfc.Stored:
    return rfc.Stored(method, SITE_URL, list(request), status, b"OK", list(fields), body)


def fresh(age: int = 5, *more, **how) -> rfc.Stored:
    return stored(MAX_AGE_60, date(age), *more, **how)


def stale(*validators) -> rfc.Stored:
    return stored((b"Cache-Control", b"max-age=10"), date(30), *validators)


def field(fields: rfc.Fields, name: bytes) -> bytes | None:
    return next((v for n, v in fields if n.lower() == name), None)


# --- lookup: what a request gets -------------------------------------------------------------

def test_nothing_stored_is_a_miss():
    found = rfc.lookup(b"GET", SITE_URL, [], [])
    assert isinstance(found, rfc.Forward) and found.state is not None
    assert found.extra == [] and not found.revalidating


def test_a_fresh_response_is_a_hit_with_its_age():
    entry = fresh(5, (b"ETag", b'"v1"'))
    found = rfc.lookup(b"GET", SITE_URL, [(b"Accept", b"*/*")], [entry])
    assert isinstance(found, rfc.Hit) and found.stored is entry and found.age == b"5"


def test_the_method_is_part_of_the_key():
    assert isinstance(rfc.lookup(b"HEAD", SITE_URL, [], [fresh(method="HEAD")]), rfc.Hit)
    assert isinstance(rfc.lookup(b"head", SITE_URL, [], [fresh(method="HEAD")]), rfc.Hit)
    assert isinstance(rfc.lookup(b"GET", SITE_URL, [], [fresh(method="HEAD")]), rfc.Forward)
    assert isinstance(rfc.lookup(b"HEAD", SITE_URL, [], [fresh()]), rfc.Forward)


@pytest.mark.parametrize(("validator", "conditional"), [
    ((b"ETag", b'"v1"'), (b"if-none-match", b'"v1"')),
    ((b"Last-Modified", formatdate(NOW - 100, usegmt=True).encode()),
     (b"if-modified-since", formatdate(NOW - 100, usegmt=True).encode())),
])
def test_a_stale_response_is_revalidated_with_its_validator(validator, conditional):
    entry = stale(validator)
    found = rfc.lookup(b"GET", SITE_URL, [(b"Accept", b"*/*"), (b"If-Schedule-Tag-Match", b'"t"')],
                       [entry])
    assert isinstance(found, rfc.Forward) and found.revalidating
    assert found.extra == [conditional]  # only the validator: nothing the client sent again


def test_a_stale_response_without_validators_is_revalidated_by_a_plain_request():
    found = rfc.lookup(b"GET", SITE_URL, [], [stale()])
    assert isinstance(found, rfc.Forward) and found.revalidating and found.extra == []


def test_of_two_stale_variants_the_newest_is_revalidated():
    older = stored((b"Cache-Control", b"max-age=0"), (b"ETag", b'"v1"'), date(20))
    newer = stored((b"Cache-Control", b"max-age=0"), (b"ETag", b'"v2"'), date(10))
    found = rfc.lookup(b"GET", SITE_URL, [], [older, newer])
    assert isinstance(found, rfc.Forward) and found.extra == [(b"if-none-match", b'"v2"')]


def test_vary_picks_the_variant_of_the_request():
    english = fresh(5, (b"Vary", b"Accept-Language"), request=[(b"Accept-Language", b"en")])
    german = fresh(5, (b"Vary", b"Accept-Language"), request=[(b"Accept-Language", b"de")])
    for lang, entry in ((b"en", english), (b"de", german)):
        found = rfc.lookup(b"GET", SITE_URL, [(b"accept-language", lang)], [english, german])
        assert isinstance(found, rfc.Hit) and found.stored is entry
    found = rfc.lookup(b"GET", SITE_URL, [(b"Accept-Language", b"fr")], [english, german])
    assert isinstance(found, rfc.Forward)
    found = rfc.lookup(b"GET", SITE_URL, [], [english])
    assert isinstance(found, rfc.Forward)


def test_vary_star_never_matches():
    entry = fresh(5, (b"Vary", b"*"))
    assert isinstance(rfc.lookup(b"GET", SITE_URL, [], [entry]), rfc.Forward)


@pytest.mark.parametrize("cache_control", [
    b"no-cache", b"max-age=0", b"max-age=2", b"MAX-AGE=4", b"no-transform, max-age=4",
    b"max-age=4, no-transform",
])
def test_a_request_that_refuses_the_stored_age_goes_to_the_origin(cache_control):
    entry = fresh(5, (b"ETag", b'"v1"'))
    found = rfc.lookup(b"GET", SITE_URL, [(b"Cache-Control", cache_control)], [entry])
    assert isinstance(found, rfc.Forward) and found.revalidating
    assert found.extra == [(b"if-none-match", b'"v1"')]


@pytest.mark.parametrize(("cache_control", "age"), [
    (b"max-age=5", 5),  # not older than asked
    (b"max-age=30", 5),
    (b"max-age=1", 0),
    (b"max-age=1", 1),
    (b"max-age=\"2\"", 5),  # not a number: as if not there
    (b"max-age=2=3", 5),
    (b"max-age=", 5),
    (b"no-transform", 5),
    (b"max-stale=0", 5),
])
def test_a_request_max_age_the_stored_age_meets_is_a_hit(cache_control, age):
    found = rfc.lookup(b"GET", SITE_URL, [(b"Cache-Control", cache_control)], [fresh(age)])
    assert isinstance(found, rfc.Hit) and found.age == str(age).encode()


def test_a_request_max_age_of_0_refuses_even_a_response_of_age_0():
    found = rfc.lookup(b"GET", SITE_URL, [(b"Cache-Control", b"max-age=0")], [fresh(0)])
    assert isinstance(found, rfc.Forward) and found.revalidating


@pytest.mark.parametrize("name", [b"If-None-Match", b"if-modified-since", b"If-Match",
                                  b"IF-UNMODIFIED-SINCE", b"If-Range", b"Range"])
def test_a_client_revalidating_its_own_copy_or_asking_a_range_is_left_alone(name):
    for entries in ([], [fresh()], [stale((b"ETag", b'"v1"'))]):
        found = rfc.lookup(b"GET", SITE_URL, [(b"Accept", b"*/*"), (name, b"x")], entries)
        assert isinstance(found, rfc.Forward)
        assert found.state is None and found.extra == [] and not found.revalidating
        assert rfc.outcome(found, 200, [MAX_AGE_60]) == rfc.Outcome()


# --- outcome: what the store does with the response -------------------------------------------

def miss(*request) -> rfc.Forward:
    found = rfc.lookup(b"GET", SITE_URL, list(request), [])
    assert isinstance(found, rfc.Forward)
    return found


def test_a_storable_response_is_stored():
    assert rfc.outcome(miss(), 200, [MAX_AGE_60]) == rfc.Outcome(store=True)
    head = rfc.lookup(b"HEAD", SITE_URL, [], [])
    assert isinstance(head, rfc.Forward) and rfc.outcome(head, 200, [MAX_AGE_60]).store


@pytest.mark.parametrize(("request_fields", "status", "fields"), [
    ((), 200, [(b"Cache-Control", b"no-store")]),
    ((), 200, [(b"Cache-Control", b"private, max-age=60")]),
    ((), 200, [MAX_AGE_60, (b"Set-Cookie", b"id=1")]),  # one browser's
    ((), 200, [(b"set-cookie", b"id=1"), MAX_AGE_60]),
    (((b"Authorization", b"Basic dTpw"),), 200, [MAX_AGE_60]),
    ((), 206, [MAX_AGE_60]),
    ((), 101, [MAX_AGE_60, (b"Upgrade", b"websocket")]),
    ((), 200, []),  # neither a lifetime nor a validator: it could only be fetched again
    ((), 200, [(b"Cache-Control", b"public")]),
    ((), 200, [(b"Cache-Control", b"public"), (b"Content-Type", b"text/html")]),
])
def test_what_must_not_be_stored_is_not(request_fields, status, fields):
    assert rfc.outcome(miss(*request_fields), status, fields) == rfc.Outcome()


@pytest.mark.parametrize("fields", [
    [(b"ETag", b'"v1"')],
    [(b"last-modified", formatdate(NOW - 3600, usegmt=True).encode())],
    [(b"Expires", formatdate(NOW + 60, usegmt=True).encode())],
    [(b"Cache-Control", b"s-maxage=60")],
    [(b"Cache-Control", b"public, MAX-AGE=60")],
    [(b"Cache-Control", b"public"), (b"Cache-Control", b"max-age=60")],  # two fields, one list
])
def test_a_response_with_a_lifetime_or_a_validator_is_stored(fields):
    assert rfc.outcome(miss(), 200, fields) == rfc.Outcome(store=True)


def test_authorization_with_public_may_be_stored():
    found = miss((b"Authorization", b"Basic dTpw"))
    assert rfc.outcome(found, 200, [(b"Cache-Control", b"public, max-age=60")]).store


def test_a_304_to_our_validators_refreshes_the_stored_response():
    entry = stale((b"ETag", b'"v1"'), (b"X-Kept", b"1"))
    found = rfc.lookup(b"GET", SITE_URL, [], [entry])
    assert isinstance(found, rfc.Forward)
    done = rfc.outcome(found, 304, [(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=30")])
    assert done.refresh == entry.id and not done.store and done.drop == []
    assert field(done.refreshed_fields, b"cache-control") == b"max-age=30"  # the 304's
    assert field(done.refreshed_fields, b"x-kept") == b"1"  # the stored response's own
    assert field(done.refreshed_fields, b"etag") == b'"v1"'


def test_a_200_to_our_validators_replaces_the_stored_response():
    entry = stale((b"ETag", b'"v1"'))
    found = rfc.lookup(b"GET", SITE_URL, [], [entry])
    assert isinstance(found, rfc.Forward)
    done = rfc.outcome(found, 200, [(b"ETag", b'"v2"'), MAX_AGE_60])
    assert done.store and done.refresh is None


def test_a_revalidation_of_two_variants_drops_the_one_not_answered():
    older = stored((b"Cache-Control", b"max-age=0"), (b"ETag", b'"v1"'), date(20))
    newer = stored((b"Cache-Control", b"max-age=0"), (b"ETag", b'"v2"'), date(10))
    found = rfc.lookup(b"GET", SITE_URL, [], [older, newer])
    assert isinstance(found, rfc.Forward)
    assert rfc.outcome(found, 304, [(b"ETag", b'"v1"')]) == rfc.Outcome(
        refresh=older.id, refreshed_fields=[(b"cache-control", b"max-age=0"),
                                            (b"etag", b'"v1"'), (b"date", date(20)[1])],
        drop=[newer.id])
    replaced = rfc.outcome(found, 200, [(b"ETag", b'"v3"'), MAX_AGE_60])
    assert replaced.store and replaced.drop == [newer.id]
    cookie = rfc.outcome(found, 200, [(b"ETag", b'"v3"'), MAX_AGE_60, (b"Set-Cookie", b"a=1")])
    assert not cookie.store and cookie.drop == [newer.id]


def test_the_outcome_defaults_store_nothing():
    assert rfc.Outcome() == rfc.Outcome(store=False, refresh=None, refreshed_fields=[], drop=[])


# --- what is stored ------------------------------------------------------------------------

def test_stored_fields_add_a_date_when_the_origin_sent_none():
    fields = [MAX_AGE_60]
    assert rfc.stored_fields(fields) == [MAX_AGE_60, (b"Date", b"Fri, 15 Jan 2027 08:00:00 GMT")]
    assert rfc.stored_fields(fields, now=0) == [MAX_AGE_60, (b"Date", b"Thu, 01 Jan 1970 00:00:00 GMT")]
    assert fields == [MAX_AGE_60]  # (a new list)


def test_stored_fields_keep_the_origins_date():
    fields = [(b"date", b"Mon, 02 Jan 2023 00:00:00 GMT"), MAX_AGE_60]
    kept = rfc.stored_fields(fields, now=NOW)
    assert kept == fields and kept is not fields


def test_a_response_without_date_ages_from_when_it_was_stored(monkeypatch):
    entry = stored(*rfc.stored_fields([MAX_AGE_60]))
    monkeypatch.setattr(time, "time", lambda: NOW + 7)
    found = rfc.lookup(b"GET", SITE_URL, [], [entry])
    assert isinstance(found, rfc.Hit) and found.age == b"7"


def test_the_size_counts_body_fields_request_fields_url_and_a_little_for_the_rest():
    empty = rfc.Stored("GET", "", [], 200, b"OK", [], b"")
    assert empty.size == 200  # the rest: ids, status, the objects themselves
    entry = rfc.Stored("GET", "http://a/", [(b"Accept", b"*/*")], 200, b"OK",
                       [(b"ETag", b'"1"'), MAX_AGE_60], b"x" * 1000)
    # each field as on the wire (name, ": ", value, CRLF), twice: ours and hishel's model
    assert entry.size == (200 + 1000 + 2 * ((4 + 3 + 4) + (13 + 10 + 4)) + 2 * (6 + 3 + 4)
                          + len("http://a/"))


def test_each_stored_response_has_its_own_id():
    assert isinstance(fresh().id, uuid.UUID) and fresh().id != fresh().id


@pytest.mark.parametrize("control", [b"no-store", b"private", b"public, no-store", b"Private"])
def test_no_store_and_private_are_never_worth_keeping_even_with_a_validator(control):
    """(decided before hishel is asked: the fast way for the usual uncacheable response)"""
    fields = [(b"Cache-Control", control), (b"ETag", b'"v1"'), (b"Last-Modified", b"x")]
    assert rfc._worth_keeping(fields) is False
    assert rfc._worth_keeping(fields[1:]) is True


def _by_hishel(method: bytes, fields: rfc.Fields, entries: list[rfc.Stored]):
    """What hishel's IdleClient alone answers (the fast path's rules are its rules)."""
    from hishel import CacheOptions, FromCache, IdleClient, Request

    request = Request(method.decode().upper(), SITE_URL, rfc._headers(fields))
    state = IdleClient(options=CacheOptions(shared=True, supported_methods=["GET", "HEAD"],
                                            allow_stale=False)).next(
        request, [rfc._entry(e) for e in entries])
    return (state.entry.id, state.entry.response.headers["age"]) if isinstance(
        state, FromCache) else None


@pytest.mark.parametrize(("entry_fields", "request_fields"), [
    ((MAX_AGE_60, date(5)), ()),  # fresh: the fast path answers
    ((MAX_AGE_60, date(59)), ()),
    ((MAX_AGE_60, date(60)), ()),  # exactly its lifetime: stale
    ((MAX_AGE_60, date(500)), ()),
    ((MAX_AGE_60,), ()),  # no Date: age 0
    (((b"Cache-Control", b"s-maxage=30, max-age=5"), date(10)), ()),  # shared: s-maxage
    (((b"Expires", formatdate(NOW + 60, usegmt=True).encode()), date(0)), ()),
    (((b"Last-Modified", formatdate(NOW - 100_000, usegmt=True).encode()), date(10)), ()),
    ((MAX_AGE_60, date(5), (b"Vary", b"Accept")), ((b"Accept", b"x"),)),  # Vary: hishel
    (((b"Cache-Control", b"no-cache, max-age=60"), date(5)), ()),  # no-cache: revalidate
    ((MAX_AGE_60, date(5)), ((b"Cache-Control", b"max-age=1"),)),  # the request asks
])
def test_the_fast_hit_answers_as_hishel_does(entry_fields, request_fields):
    entry = stored(*entry_fields)
    found = rfc.lookup(b"GET", SITE_URL, list(request_fields), [entry])
    expected = _by_hishel(b"GET", list(request_fields), [entry])
    fast = rfc._fresh_hit("GET", SITE_URL, list(request_fields), [entry])
    if fast is not None:  # (where the fast path answers, it answers as hishel would)
        assert expected == (entry.id, fast.age.decode())
    if expected is None or any(n == b"Cache-Control" for n, _ in request_fields):
        assert not isinstance(found, rfc.Hit) or any(
            n == b"Cache-Control" for n, _ in request_fields)
    else:
        assert isinstance(found, rfc.Hit) and found.age.decode() == expected[1]


def test_the_fast_hit_follows_a_refresh():
    entry = fresh(5)
    assert rfc._fresh_hit("GET", SITE_URL, [], [entry]) is not None
    entry.fields = [(b"Cache-Control", b"max-age=1"), date(5)]  # what a 304 did to it
    assert rfc._fresh_hit("GET", SITE_URL, [], [entry]) is None


def _worth_keeping_by_sets(fields: rfc.Fields) -> bool:
    """_worth_keeping's rules read the plain way (what its one pass must answer)."""
    names = {name.lower() for name, _ in fields}
    if b"set-cookie" in names:
        return False
    control = b",".join(v for n, v in fields if n.lower() == b"cache-control").lower()
    if {t.strip() for t in control.split(b",")} & {b"no-store", b"private"}:
        return False
    return bool(names & {b"etag", b"last-modified", b"expires"}
                or b"max-age" in control or b"s-maxage" in control)


_FIELD = st.tuples(
    st.sampled_from([b"Cache-Control", b"cache-control", b"ETag", b"LAST-MODIFIED", b"Expires",
                     b"Set-Cookie", b"Vary", b"Age", b"X-Max-Age"]),
    st.lists(st.sampled_from([b"max-age=60", b"s-maxage=5", b"no-store", b" private ",
                              b"Public", b"No-Store", b"no-cache", b"x", b""]),
             max_size=3).map(b",".join))


@settings(max_examples=500, deadline=None)
@given(st.lists(_FIELD, max_size=6))
def test_worth_keeping_in_one_pass_answers_as_the_rules_read_plainly(fields):
    assert rfc._worth_keeping(fields) is _worth_keeping_by_sets(fields)
