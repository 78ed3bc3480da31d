"""RFC 9111 for a shared cache, by hishel 2's sans-IO state machine: the one module that imports
hishel. What may be stored, what a stored response may answer, with which Age, and when it must
be revalidated (and how) are hishel's decisions; this module turns our parsed messages into its
models and its states into three answers: `Hit`, `Forward` (a miss, or a revalidation with the
conditional header fields to add), and after the response, `Outcome`. What its rules say of a
stored response's freshness is computed once per stored fields and kept on the entry, where
fresh.py answers the usual hit from it without hishel (a Hit answered there is this module's).

Beyond RFC 9111, as a privacy proxy must (docs/cache.md): a response that sets a cookie is
never stored (it belongs to one browser), nor one to a request that carried its own
validators or a Range (the browser is revalidating its own copy: it gets the origin's answer).

Invariant: nothing here does I/O or keeps state between calls; the store is store.py's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formatdate

from hishel import (
    CacheMiss,
    CacheOptions,
    Entry,
    FromCache,
    Headers,
    IdleClient,
    InvalidateEntries,
    NeedRevalidation,
    NeedToBeUpdated,
    Request,
    Response,
    StoreAndUse,
)

# (hishel's own reuse rules, used by the fast path for the usual hit: its 2.x spec module)
from hishel._core._headers import parse_cache_control
from hishel._core._spec import get_freshness_lifetime
from hishel._utils import parse_date

from anonproxy.cache.fresh import Hit, usual_hit

Fields = list[tuple[bytes, bytes]]

OPTIONS = CacheOptions(shared=True, supported_methods=["GET", "HEAD"], allow_stale=False)
_VALIDATORS = frozenset({b"etag", b"last-modified", b"expires"})  # (Expires: a lifetime)
_NEVER_KEPT = frozenset({b"no-store", b"private"})
# request fields that mean the client revalidates its own copy or wants a part: passed through
_CLIENT_OWNED = (b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since",
                 b"if-range", b"range")


@dataclass
class Stored:
    """One stored response and the request it answered (its Vary fields are matched)."""

    method: str
    url: str
    request_fields: Fields
    status: int
    reason: bytes
    fields: Fields  # the response head's fields, as the client received them
    body: bytes
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    # hishel's model of it, made once per `fields` (a refresh replaces the list): every lookup
    # hands it to hishel, which never changes what it is given
    entry: tuple[Fields, Entry] | None = field(default=None, init=False, repr=False,
                                                compare=False)
    # what hishel's lookup computes of it on every call but depends only on `fields`: its Date
    # (seconds), its freshness lifetime, and whether nothing but age decides its reuse (no
    # Vary, no no-cache); made once per `fields`, as `entry` (fresh.py answers from it)
    fresh: tuple[Fields, int | None, int | None, bool] | None = field(
        default=None, init=False, repr=False, compare=False)
    # the response head a hit replays, rendered once per `fields` (as `entry`): up to its Age,
    # then what follows the Age (its length, the end of the head), kept alive or closing
    head: tuple[Fields, bytes, bytes, bytes] | None = field(default=None, init=False,
                                                            repr=False, compare=False)

    @property
    def size(self) -> int:
        """Bytes this entry holds (body, fields twice: ours and hishel's model of them, and a
        little for the rest)."""
        return (len(self.body) + 2 * sum(len(n) + len(v) + 4 for n, v in self.fields)
                + 2 * sum(len(n) + len(v) + 4 for n, v in self.request_fields)
                + len(self.url) + 200)


@dataclass(slots=True)
class _FirstMiss:
    """A miss with nothing stored for the URL: hishel's CacheMiss, made only if the response
    turns out worth keeping (most misses are not: no-store, a cookie, nothing allowing reuse),
    so a miss does not build hishel's models of a request that will never be stored."""

    method: str
    url: str
    fields: Fields

    def next(self, response: Response) -> object:
        request = Request(self.method, self.url, _headers(self.fields))
        return CacheMiss(request=request, options=OPTIONS).next(response)


@dataclass
class Forward:
    """Send the request on, with `extra` fields added (validators when revalidating); then
    call `outcome` with the response head."""

    state: CacheMiss | _FirstMiss | NeedRevalidation | None  # None: the cache stays out of it
    extra: Fields = field(default_factory=list)

    @property
    def revalidating(self) -> bool:
        return isinstance(self.state, NeedRevalidation)


@dataclass
class Outcome:
    """What the response head means for the store: `store` it (with its body, when complete);
    or answer from the stored entry `refresh` (a 304 to our revalidation), whose fields become
    `refreshed_fields`; and entries to drop."""

    store: bool = False
    refresh: uuid.UUID | None = None
    refreshed_fields: Fields = field(default_factory=list)
    drop: list[uuid.UUID] = field(default_factory=list)


def _headers(fields: Fields) -> Headers:
    found: dict[str, list[str]] = {}
    for name, value in fields:
        found.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return Headers(found)


def _fields(headers: Headers) -> Fields:
    return [(name.encode("latin-1"), value.encode("latin-1"))
            for name in headers for value in (headers.get_list(name) or [])]


def _entry(stored: Stored) -> Entry:
    made = stored.entry
    if made is None or made[0] is not stored.fields:
        made = stored.fields, Entry(
            id=stored.id, request=Request(stored.method, stored.url,
                                          _headers(stored.request_fields)),
            response=Response(stored.status, _headers(stored.fields)))
        stored.entry = made
    return made[1]


def _freshness(stored: Stored) -> tuple[int | None, int | None, bool]:
    """(Date, freshness lifetime, plain) of a stored response, as hishel's IdleClient computes
    them (its own functions), kept until its fields change."""
    made = stored.fresh
    if made is None or made[0] is not stored.fields:
        response = _entry(stored).response
        control = parse_cache_control(response.headers.get("cache-control"))
        plain = "vary" not in response.headers and control.no_cache is not True
        made = (stored.fields, parse_date(response.headers.get("date", "")),
                get_freshness_lifetime(response, is_cache_shared=True), plain)
        stored.fresh = made
    return made[1], made[2], made[3]


def _fresh_hit(method: str, url: str, fields: Fields, stored: Sequence[Stored]) -> Hit | None:
    """The usual hit, answered without hishel's state machine but by its rules (IdleClient):
    one stored response for the URL, same method, no Vary and no no-cache in it, no
    Cache-Control in the request, younger than its freshness lifetime; its Age as hishel's
    get_age counts it (fresh.py, with what _freshness computed). None: ask hishel."""
    if len(stored) != 1:
        return None
    _freshness(stored[0])  # (kept on the entry, where fresh.py reads it)
    return usual_hit(method.encode("latin-1"), url, fields, stored)


def lookup(method: bytes, url: str, fields: Fields, stored: Sequence[Stored]) -> Hit | Forward:
    """What to do with a request, given what is stored for its URL (in its partition)."""
    if any(name.lower() in _CLIENT_OWNED for name, _ in fields):
        return Forward(None)
    upper = method.decode("latin-1").upper()
    if stored and (hit := _fresh_hit(upper, url, fields, stored)) is not None:
        return hit
    if not stored:  # (what IdleClient answers a GET or HEAD with nothing stored, at once)
        return Forward(_FirstMiss(upper, url, fields))
    request = Request(upper, url, _headers(fields))
    by_id = {s.id: s for s in stored}
    entries = [_entry(s) for s in stored]
    state = IdleClient(options=OPTIONS).next(request, entries)
    if isinstance(state, FromCache):
        age = (state.entry.response.headers.get("age") or "0").encode("latin-1")
        if not _older_than_asked(request, age):
            return Hit(by_id[state.entry.id], age)
        # the request's max-age refuses it: revalidate, as hishel does for no-cache
        request.headers["cache-control"] = "no-cache"
        state = IdleClient(options=OPTIONS).next(request, entries)
    if isinstance(state, NeedRevalidation):
        sent = {name.lower() for name, _ in fields}
        extra = [(name, value) for name, value in _fields(state.request.headers)
                 if name not in sent and name.startswith(b"if-")]
        return Forward(state, extra)
    assert isinstance(state, CacheMiss)  # (FromCache only for a response max-age refused)
    return Forward(state)


def _older_than_asked(request: Request, age: bytes) -> bool:
    """Whether the request's `Cache-Control: max-age=N` refuses a stored response `age`
    seconds old (RFC 9111 §5.2.1.1; hishel applies only the request's no-cache)."""
    asked = request.headers.get("cache-control") or ""
    limit = next((part.split("=", 1)[1].strip() for part in asked.lower().split(",")
                  if part.strip().startswith("max-age=")), None)
    if limit is None or not limit.isdigit():
        return False
    return int(age) > int(limit) or int(limit) == 0


def outcome(forward: Forward, status: int, fields: Fields) -> Outcome:
    """The store's part in a response to a forwarded request (its head)."""
    if forward.state is None or status == 101:
        return Outcome()
    if isinstance(forward.state, _FirstMiss | CacheMiss) and not _worth_keeping(fields):
        return Outcome()  # (a miss of a GET or HEAD invalidates nothing: no need to ask)
    response = Response(status, _headers(fields))
    state: object = forward.state.next(response)
    drop: list[uuid.UUID] = []
    while isinstance(state, InvalidateEntries):
        drop += state.entry_ids
        state = state.next()
    if isinstance(state, NeedToBeUpdated):
        entry = state.updating_entries[-1]
        return Outcome(refresh=entry.id, refreshed_fields=_fields(entry.response.headers),
                       drop=drop)
    if isinstance(state, StoreAndUse) and _worth_keeping(fields):
        return Outcome(store=True, drop=drop)
    return Outcome(drop=drop)  # CouldNotBeStored (or, by hishel's design, nothing else)


def _worth_keeping(fields: Fields) -> bool:
    """Never a response that sets a cookie (one browser's) or says no-store or private; and
    only one that can answer a later request: fresh for a while, or with a validator to
    revalidate it by (a response with neither would be fetched again in full every time:
    storing it only costs memory). One pass over the fields."""
    controls: list[bytes] = []
    validator = False
    for name, value in fields:
        lowered = name.lower()
        if lowered == b"cache-control":
            controls.append(value)
        elif lowered in _VALIDATORS:
            validator = True
        elif lowered == b"set-cookie":
            return False
    control = b",".join(controls).lower()
    if control and not _NEVER_KEPT.isdisjoint(t.strip() for t in control.split(b",")):
        return False  # (never stored by a shared cache: hishel would say so, slower)
    return validator or b"max-age" in control or b"s-maxage" in control


def stored_fields(fields: Fields, now: float | None = None) -> Fields:
    """A response's fields as stored: a Date added when the origin sent none (its age is
    counted from when we received it, RFC 9110 §6.6.1)."""
    if any(name.lower() == b"date" for name, _ in fields):
        return list(fields)
    stamp = formatdate(time.time() if now is None else now, usegmt=True).encode("ascii")
    return [*fields, (b"Date", stamp)]
