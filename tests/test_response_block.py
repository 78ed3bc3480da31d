"""A response head kept as bytes (wire/messages.py's `block`) says what llhttp's field-by-field
report says: the same fields, the same framing answers, the same client head.

The relay sends the usual head as the bytes it came in, its hop-by-hop lines cut out
(wire/headers.py's sanitize_response_block); a head the cache keeps goes field by field. Both
ways are run here on the same generated responses, and what the client receives must carry the
same status, fields and body (the bytes differ only in the spaces after a colon, which the
fields way writes as one)."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonproxy.wire import http1
from anonproxy.wire.errors import BadUpstreamResponse
from anonproxy.wire.headers import (
    HOP_BY_HOP,
    Headers,
    sanitize_response,
    sanitize_response_block,
    scan,
    scan_block,
)
from anonproxy.wire.http1 import RequestParser, ResponseParser
from anonproxy.wire.messages import END, Body, ResponseHead, fields
from anonproxy.wire.render import block_of
from anonproxy.wire.response_relay import ResponseRelay

NAMES = [b"Content-Type", b"X-Trace", b"ETag", b"Set-Cookie", b"Server", b"Date", b"Vary",
         b"Cache-Control", b"X-Content-Length", b"Content-Length-X", b"Teapot", b"Te-X",
         *sorted(HOP_BY_HOP)]
VALUES = st.binary(max_size=12).map(lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127))


def _case(name: bytes, flips: list[bool]) -> bytes:
    return bytes(c ^ 32 if flip and 97 <= c | 32 <= 122 else c
                 for c, flip in zip(name, flips + [False] * len(name), strict=False))


@st.composite
def heads(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A response head llhttp takes (the generator keeps to its strict grammar) and a body."""
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 404, 500]))
    lines = [b"HTTP/1.1 %d %s" % (status, draw(st.sampled_from([b"OK", b"", b"Not  Found"])))]
    for _ in range(draw(st.integers(0, 8))):
        name = _case(draw(st.sampled_from(NAMES)), draw(st.lists(st.booleans(), max_size=20)))
        if name.lower() in (b"content-length", b"transfer-encoding", b"upgrade"):
            continue
        value = draw(VALUES).strip(b" \t")
        if name.lower() == b"connection":
            value = draw(st.sampled_from([b"close", b"keep-alive", b"Keep-Alive, X-Trace",
                                          b"te", b"upgrade", b"close, teapot"]))
        ows = draw(st.sampled_from([b"", b" ", b"\t ", b"  "]))
        trail = draw(st.sampled_from([b"", b" ", b"\t"])) if value else b""
        lines.append(name + b":" + ows + value + trail)
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if framing == "length":
        lines.insert(draw(st.integers(1, len(lines))), b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n", body


class _Fields:
    """llhttp's own report, field by field: what the block must agree with."""

    def __init__(self) -> None:
        self.headers: Headers = []
        self.heads: list[Headers] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.heads.append(self.headers)
        self.headers = []


@settings(max_examples=300, deadline=None)
@given(heads())
def test_a_kept_head_splits_into_the_fields_llhttp_reports(response):
    head, body = response
    reference = _Fields()
    httptools.HttpResponseParser(reference).feed_data(head)
    event = ResponseParser(b"GET").feed(head + body)[0]
    assert isinstance(event, ResponseHead)
    assert event.headers == reference.heads[0] == fields(event.block)
    encodings, lengths, listed, _ = scan(reference.heads[0])
    assert scan_block(event.block)[:3] == (encodings, lengths, listed)


@settings(max_examples=300, deadline=None)
@given(heads())
def test_hop_by_hop_lines_cut_from_the_bytes_leave_the_fields_sanitizing_leaves(response):
    head, _ = response
    event = ResponseParser(b"GET").feed(head)[0]
    assert isinstance(event, ResponseHead)
    cut = sanitize_response_block(event.end_to_end, event.listed)
    expected = sanitize_response(event.headers, listed=event.listed)
    if cut is None:  # a Connection token beyond the hop-by-hop names: the fields way only
        assert not event.listed <= HOP_BY_HOP
    else:
        assert fields(cut) == expected


class _Watcher:
    """A tap that keeps nothing: its presence alone sends heads the fields way."""

    keeping = False

    def head(self, status: int, reason: bytes, headers: Headers) -> None:
        pass

    def body(self, data: bytes) -> None:
        pass

    def end(self) -> None:
        pass

    def cut(self) -> None:
        pass


def _relayed(request: bytes, response: bytes, tap: bool,
             pieces: int = 1) -> list[tuple[bytes, Headers] | bytes]:
    """What the client gets, `response` fed in `pieces` reads: each head as its status line
    and fields, then the body."""
    head = RequestParser().feed(request)[0]
    relay = ResponseRelay(head)
    relay.tap = _Watcher() if tap else None
    size = -(-len(response) // pieces)
    out = b"".join(relay.feed(response[i:i + size]) for i in range(0, len(response), size)
                   if not relay.done)
    out += relay.feed_eof() if not relay.done else b""
    got: list[tuple[bytes, Headers] | bytes] = []
    while out.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in out:
        client_head, _, out = out.partition(b"\r\n\r\n")
        status_line, _, block = client_head.partition(b"\r\n")
        got.append((status_line, fields(b"\r\n" + block if block else b"")))
        if not status_line.startswith(b"HTTP/1.1 1"):
            break
    return [*got, out]


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\nX-Trace: 1\r\n\r\n"
INTERIM = [b"", CONTINUE, EARLY_HINTS + CONTINUE]  # nothing, one, or two interim heads first


@settings(max_examples=300, deadline=None)
@given(heads(), st.sampled_from([b"1.1", b"1.0"]), st.booleans(), st.sampled_from(INTERIM),
       st.sampled_from([b"GET", b"HEAD"]), st.integers(1, 4))
def test_the_client_gets_the_same_head_either_way(response, version, close, interim, method,
                                                  pieces):
    head, body = response
    request = (method + b" http://o.test/ HTTP/" + version + b"\r\nHost: o.test\r\n"
               + (b"Connection: close\r\n" if close else b"") + b"\r\n")
    upstream = interim + head + (body if method == b"GET" else b"")
    raw = _relayed(request, upstream, tap=False, pieces=pieces)
    assert raw == _relayed(request, upstream, tap=True, pieces=pieces)


def test_empty_lines_before_a_head_are_skipped_as_llhttp_skips_them():
    response = b"\r\n\n\r\nHTTP/1.1 200 OK\r\nX-Trace: 1\r\nContent-Length: 2\r\n\r\nok"
    events = ResponseParser(b"GET").feed(response)
    assert isinstance(events[0], ResponseHead) and events[0].framing == "length"
    assert events[0].headers == [(b"X-Trace", b"1"), (b"Content-Length", b"2")]
    assert events[1] == Body(b"ok")


def test_fields_written_as_a_block_split_back_into_the_same_fields():
    headers = [(b"X-A", b"1"), (b"x-b", b""), (b"Set-Cookie", b"a=b; Path=/")]
    assert block_of(headers) == b"\r\nX-A: 1\r\nx-b: \r\nSet-Cookie: a=b; Path=/"
    assert fields(block_of(headers)) == headers
    assert block_of([]) == b"" and fields(b"") == []


CHUNKED_WITH_TRAILERS = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: 1\r\n\r\n"
                         b"2\r\nok\r\n0\r\nX-Sum: 7\r\nX-Other: 8\r\n\r\n")


def test_trailer_fields_are_kept_only_for_a_client_that_takes_them():
    kept = ResponseParser(b"GET", trailers=True)
    events = kept.feed(CHUNKED_WITH_TRAILERS)
    assert events[0].headers == [(b"Transfer-Encoding", b"chunked"), (b"X-Head", b"1")]
    assert kept.trailers == [(b"X-Sum", b"7"), (b"X-Other", b"8")]
    dropped = ResponseParser(b"GET")
    dropped.feed(CHUNKED_WITH_TRAILERS)
    assert dropped.trailers == []


def test_trailer_fields_beyond_the_limit_are_refused():
    parser = ResponseParser(b"GET", max_headers=3, trailers=True)
    trailer = b"".join(b"X-%d: 1\r\n" % i for i in range(4))
    with pytest.raises(BadUpstreamResponse, match="more than 3 header fields"):
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + trailer
                    + b"\r\n")
    assert len(ResponseParser(b"GET", max_headers=4, trailers=True).feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + trailer + b"\r\n")) == 2


def test_a_head_with_more_fields_than_the_limit_is_refused():
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(4)) + b"\r\n"
    with pytest.raises(BadUpstreamResponse, match="more than 3 header fields"):
        ResponseParser(b"GET", max_headers=3).feed(head)
    assert isinstance(ResponseParser(b"GET", max_headers=4).feed(head)[0], ResponseHead)
    shortest = b"HTTP/1.1 200 OK\r\n" + b"X:\r\n" * 4 + b"\r\n"  # (4 bytes a field line)
    with pytest.raises(BadUpstreamResponse, match="more than 3 header fields"):
        ResponseParser(b"GET", max_headers=3).feed(shortest)
    assert isinstance(ResponseParser(b"GET", max_headers=4).feed(shortest)[0], ResponseHead)


def _parsed(parser: ResponseParser, response: bytes, pieces: int) -> list:
    """The events of `response` fed to `parser` in `pieces` reads (then its end, if the
    response needs it), or the error that ended them."""
    size = -(-len(response) // pieces) or 1
    events: list = []
    try:
        for i in range(0, len(response), size):
            events += parser.feed(response[i:i + size])
        if not parser.reusable:
            events += parser.feed_eof()
    except BadUpstreamResponse as error:
        events.append(("error", str(error)))
    return events


@settings(max_examples=300, deadline=None)
@given(heads(), heads(), st.sampled_from([b"GET", b"HEAD"]), st.integers(1, 3))
def test_a_recycled_parser_reads_the_next_response_as_a_new_one_does(first, second, method,
                                                                     pieces):
    """ResponseParser.recycle: after a response that ended cleanly on a kept connection, its
    llhttp and collector read another exchange's response exactly as new ones would."""
    http1._SPARE.clear()
    before = ResponseParser(b"GET")
    _parsed(before, b"".join(first), 1)
    before.recycle()
    recycled = len(http1._SPARE)
    again = ResponseParser(method)  # (takes what was recycled)
    assert len(http1._SPARE) == 0
    got = _parsed(again, b"".join(second), pieces)
    http1._SPARE.clear()
    assert got == _parsed(ResponseParser(method), b"".join(second), pieces)
    assert recycled == _recycles(first)


def _recycles(response: tuple[bytes, bytes]) -> int:
    """Whether a GET's parser that read `response` is recycled: it ended by its framing and
    llhttp keeps the connection (no `Connection: close`, not read to the connection's end)."""
    parser = ResponseParser(b"GET")
    events = parser.feed(b"".join(response))
    head = events[0]
    return int(parser.reusable and isinstance(head, ResponseHead) and head.keep_alive)


def test_a_recycled_parser_is_fed_no_more_and_is_not_reused_after_head_or_a_close():
    http1._SPARE.clear()
    kept = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    parser = ResponseParser(b"GET")
    assert parser.feed(kept)[-1] is END
    parser.recycle()
    assert len(http1._SPARE) == 1
    with pytest.raises(RuntimeError, match="recycled"):
        parser.feed(kept)
    assert not parser.reusable
    for method, response in [(b"HEAD", kept),
                             (b"GET", (b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                                       b"Content-Length: 2\r\n\r\nok")),
                             (b"GET", kept + b"HTTP/1.1 200 OK\r\n")]:  # (bytes after it)
        http1._SPARE.clear()
        parser = ResponseParser(method)
        parser.feed(response)
        parser.recycle()
        assert http1._SPARE == []
