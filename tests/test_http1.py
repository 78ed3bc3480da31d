"""Request and response parsing over llhttp (pure), with hostile heads from hypothesis."""

from __future__ import annotations

import gc
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonproxy.wire.errors import BadRequest, BadUpstreamResponse, HeadersTooLarge
from anonproxy.wire.http1 import RequestParser, ResponseParser, parse_absolute_url
from anonproxy.wire.messages import END, Body, RequestHead, ResponseHead, Tunnel
from anonproxy.wire.render import chunk, render_request_head, render_response_head


def test_head_body_and_end_in_pieces():
    parser = RequestParser()
    raw = b"POST http://a.example/x?y=1 HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello"
    events = []
    for i in range(len(raw)):
        events += parser.feed(raw[i : i + 1])
    head = events[0]
    assert isinstance(head, RequestHead)
    assert head.target == b"http://a.example/x?y=1" and head.has_body
    assert head.headers == [(b"Host", b"a.example"), (b"Content-Length", b"5")]
    assert b"".join(e.data for e in events if isinstance(e, Body)) == b"hello"
    assert events[-1] is END



@pytest.mark.parametrize("status_line, version", [
    (b"HTTP/1.1 200 OK", b"1.1"), (b"HTTP/1.0 200 OK", b"1.0"), (b"HTTP/1.1 204", b"1.1")])
def test_a_response_heads_version_is_its_status_lines(status_line, version):
    """(read from the status line's bytes, as llhttp took them: `anonproxy fetch` prints it)"""
    head = ResponseParser(b"GET").feed(status_line + b"\r\nContent-Length: 0\r\n\r\n")[0]
    assert isinstance(head, ResponseHead) and head.version == version


def test_a_parsers_first_request_may_have_a_method_llhttp_does_not_know():
    """(wire/request_line.py holds the first line of a new parser too, not only later ones)"""
    head = RequestParser().feed(b"BAN http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")[0]
    assert isinstance(head, RequestHead) and head.method == b"BAN"

def test_connect_becomes_a_tunnel_with_the_bytes_after_the_head():
    events = RequestParser().feed(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03\x01")
    assert isinstance(events[0], RequestHead) and events[1] == Tunnel(b"\x16\x03\x01")


def test_an_upgrade_we_do_not_serve_is_parsed_as_plain_http():
    raw = (b"POST http://a/ HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
           b"Content-Length: 3\r\n\r\nabcGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
    events = RequestParser().feed(raw)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RequestHead", "Body", "End", "RequestHead", "End"]
    assert all(n.lower() != b"upgrade" for n, _ in events[0].headers)


@pytest.mark.parametrize("raw", [
    b"GET http://a/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
    b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET http://a/ HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\n folded\r\n\r\n",
    b"GET http://a/ HTTP/9.9\r\n\r\n",
])
def test_smuggling_shapes_are_rejected(raw):
    with pytest.raises(BadRequest):
        RequestParser().feed(raw)


def test_limits_on_head_size_and_header_count():
    with pytest.raises(HeadersTooLarge):
        RequestParser(max_head_bytes=1024).feed(b"GET http://a/ HTTP/1.1\r\nX: " + b"a" * 2000)
    many = b"".join(b"X%d: 1\r\n" % i for i in range(20))
    with pytest.raises(HeadersTooLarge):
        RequestParser(max_headers=10).feed(b"GET http://a/ HTTP/1.1\r\n" + many + b"\r\n")


def test_response_to_head_has_no_body_even_with_a_length():
    events = ResponseParser(b"HEAD").feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert isinstance(events[0], ResponseHead) and events[0].framing == "none" and events[1] is END


def test_interim_then_final_response():
    events = ResponseParser(b"POST").feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    assert [e.status for e in events if isinstance(e, ResponseHead)] == [100, 201]
    assert events[-1] is END


def test_close_delimited_response_ends_at_eof():
    parser = ResponseParser(b"GET")
    events = parser.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert events[0].framing == "close" and events[1] == Body(b"abc")
    assert parser.feed_eof() == [END]


def test_eof_mid_response_is_an_error():
    parser = ResponseParser(b"GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(BadUpstreamResponse):
        parser.feed_eof()


@pytest.mark.parametrize("target, expected", [
    (b"http://a.example/p?q=1", (b"http", b"a.example", None, b"/p?q=1")),
    (b"http://a.example:8080", (b"http", b"a.example", 8080, b"/")),
    (b"HTTP://user:pw@a.example/x", (b"http", b"a.example", None, b"/x")),
    (b"http://[::1]:81/", (b"http", b"::1", 81, b"/")),
])
def test_absolute_urls(target, expected):
    assert parse_absolute_url(target) == expected


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.sampled_from([
    b"GET http://a/ HTTP/1.1\r\n", b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
    b"CONNECT a:1 HTTP/1.1\r\n", b"",
]))
def test_hostile_request_heads_raise_only_bad_request(pieces, prefix):
    parser = RequestParser(max_head_bytes=2048, max_headers=20)
    try:
        for piece in [prefix, *pieces]:
            parser.feed(piece)
    except BadRequest:
        pass


def test_a_second_transfer_encoding_line_is_refused_both_ways():
    with pytest.raises(BadRequest, match="more than one Transfer-Encoding"):
        RequestParser().feed(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    with pytest.raises(BadUpstreamResponse, match="more than one Transfer-Encoding"):
        ResponseParser(b"GET").feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n")


def test_a_trailer_that_never_ends_is_bounded():
    parser = RequestParser(max_head_bytes=4096)
    parser.feed(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: ")
    with pytest.raises(HeadersTooLarge):
        for _ in range(10):
            parser.feed(b"a" * 1000)


def test_many_pipelined_upgrade_offers_do_not_recurse():
    raw = b"GET http://a/ HTTP/1.1\r\nUpgrade: a\r\nConnection: upgrade\r\n\r\n" * 1200
    events = RequestParser().feed(raw)
    assert sum(isinstance(e, RequestHead) for e in events) == 1200


def test_bytes_after_a_response_make_the_connection_unreusable():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    parser = ResponseParser(b"GET")
    parser.feed(ok)
    assert parser.reusable
    parser = ResponseParser(b"GET")
    parser.feed(ok + b"HTTP/1.1 200 OK\r\n")
    assert not parser.reusable
    parser = ResponseParser(b"GET")
    events = parser.feed(ok + b"\x00garbage")
    assert events[-1] is END and not parser.reusable
    parser = ResponseParser(b"HEAD")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert not parser.reusable



@pytest.mark.parametrize("raw", [
    b"GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET http://a/\r\nHost: a\r\n\r\n",  # no version: llhttp reads it as 0.9, headers and all
    b"GET http://a/ HTTP/0.9\r\n\r\n",
    b"CONNECT \r\n\r\n",
])
def test_only_http_1_x_requests_are_parsed(raw):  # found by scripts/fuzz
    with pytest.raises(BadRequest):
        RequestParser().feed(raw)


def test_request_trailer_fields_stay_out_of_the_head():  # found by scripts/fuzz
    events = RequestParser().feed(b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                  b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert events[0].headers == [(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")]


@pytest.mark.parametrize("trailer", [b"Set-Cookie: a=b", b"Transfer-Encoding: chunked"])
def test_response_trailer_fields_stay_out_of_the_head(trailer):  # found by scripts/fuzz
    events = ResponseParser(b"GET").feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         b"0\r\n" + trailer + b"\r\n\r\n")
    assert events[0].headers == [(b"Transfer-Encoding", b"chunked")]


@pytest.mark.parametrize("interim", [
    b"HTTP/1.1 150 X\r\nContent-Length: 2\r\n\r\nok",  # llhttp reads a body for it
    b"HTTP/1.1 199 X\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 000 X\r\n\r\n",
    b"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok",
])
def test_interim_responses_with_a_body_and_status_codes_below_100_are_refused(interim):  # scripts/fuzz
    with pytest.raises(BadUpstreamResponse):
        ResponseParser(b"GET").feed(interim + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("reason", [b"O\x00K", b"O\x01K", b"O\x7fK", b"O\x1bK"])
def test_a_reason_phrase_with_control_bytes_is_dropped(reason):
    head = ResponseParser(b"GET").feed(b"HTTP/1.1 200 " + reason + b"\r\nContent-Length: 0\r\n\r\n")
    assert head and head[0].reason == b""


def test_a_reason_phrase_of_text_is_kept():
    head = ResponseParser(b"GET").feed(b"HTTP/1.1 200 Very\tOK \xe9\r\nContent-Length: 0\r\n\r\n")
    assert head[0].reason == b"Very\tOK \xe9"


@pytest.mark.parametrize("status, extra", [
    (b"204 No Content", b""), (b"204 No Content", b"Content-Length: 5\r\n"),
    (b"304 Not Modified", b"Content-Length: 100\r\n"), (b"304 Not Modified", b""),
    (b"204 No Content", b"Transfer-Encoding: chunked\r\n"),
])
def test_204_and_304_end_with_their_head_whatever_they_declare(status, extra):
    parser = ResponseParser(b"GET")
    events = parser.feed(b"HTTP/1.1 " + status + b"\r\n" + extra + b"\r\n")
    assert isinstance(events[0], ResponseHead) and events[0].framing == "none"
    assert events[1:] == [END] and parser.reusable


def test_bytes_after_a_204_put_the_connection_out_of_step():
    parser = ResponseParser(b"GET")
    events = parser.feed(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")
    assert events[0].framing == "none" and END in events and Body(b"hello") not in events
    assert not parser.reusable


def test_a_response_to_head_is_reusable_only_when_nothing_follows_its_head():
    clean, dirty = ResponseParser(b"HEAD"), ResponseParser(b"HEAD")
    assert clean.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")[-1] is END
    assert clean.reusable
    assert dirty.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")[-1] is END
    assert not dirty.reusable


def test_a_long_reason_phrase_counts_against_the_head_limit():
    parser = ResponseParser(b"GET", max_head_bytes=1024)
    with pytest.raises(BadUpstreamResponse, match="larger than 1024"):
        parser.feed(b"HTTP/1.1 200 " + b"O" * 2000 + b"\r\n\r\n")


def test_a_head_of_many_fields_that_arrives_whole_in_one_read_is_bounded_too():
    """The fields of a response head are not reported by llhttp one by one: the head's bytes
    are bounded before llhttp sees them, also when the whole head is in one read."""
    parser = ResponseParser(b"GET", max_head_bytes=1024)
    with pytest.raises(BadUpstreamResponse, match="larger than 1024"):
        parser.feed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 2000 + b"\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("reads", [
    [b"\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
    [b"\r\n", b"\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"],
])
def test_empty_lines_before_a_response_head_are_skipped_and_nothing_else(reads):
    parser = ResponseParser(b"GET")
    events = [event for data in reads for event in parser.feed(data)]
    assert [type(e).__name__ for e in events] == ["ResponseHead", "End"]
    assert events[0].status == 204
    garbled = ResponseParser(b"GET")  # what follows the empty lines is not skipped with them
    with pytest.raises(BadUpstreamResponse):
        garbled.feed(b"\r\nXHTTP/1.1 204 No Content\r\n\r\n")


def test_the_head_limit_is_per_message_on_a_kept_alive_connection():
    parser = RequestParser(max_head_bytes=1024)
    one = b"GET http://a.example/ HTTP/1.1\r\nX: " + b"a" * 600 + b"\r\n\r\n"
    heads = [e for e in parser.feed(one + one) if isinstance(e, RequestHead)]
    heads += [e for e in parser.feed(one) if isinstance(e, RequestHead)]
    assert len(heads) == 3 and all(h.target == b"http://a.example/" for h in heads)


def test_an_endless_status_line_is_refused_before_it_ends():
    parser = ResponseParser(b"GET", max_head_bytes=1024)
    with pytest.raises(BadUpstreamResponse, match="larger than 1024"):
        for _ in range(10):
            parser.feed(b"HTTP/1.1 200 " + b"O" * 200)


@pytest.mark.parametrize("sent, words", [
    (b"", "without a response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", "in the middle of a response"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "in the middle of a response"),
])
def test_an_upstream_that_closes_early_is_told_apart_from_one_that_never_answered(sent, words):
    parser = ResponseParser(b"GET")
    parser.feed(sent)
    with pytest.raises(BadUpstreamResponse, match=words):
        parser.feed_eof()


@pytest.mark.parametrize("target", [b"/relative", b"a.example:80", b"//a.example/x"])
def test_a_request_target_without_scheme_and_host_is_refused(target):
    with pytest.raises(BadRequest):
        parse_absolute_url(target)


def test_rendered_heads_are_exactly_the_wire_format():
    assert render_request_head(b"GET", b"/x", [(b"Host", b"a"), (b"X", b"1")]) == (
        b"GET /x HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n")
    assert render_request_head(b"GET", b"/", [], b"1.0") == b"GET / HTTP/1.0\r\n\r\n"
    assert render_response_head(204, b"No Content", [(b"A", b"b")]) == (
        b"HTTP/1.1 204 No Content\r\nA: b\r\n\r\n")
    assert chunk(b"hello") == b"5\r\nhello\r\n" and chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


@pytest.mark.parametrize("head, framing", [
    (b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked"),
    (b"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n", "length"),
    (b"POST http://a/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "none"),
    (b"GET http://a/ HTTP/1.0\r\n\r\n", "none"),  # no length, no chunking: no body (RFC 9112 6.3)
])
def test_a_request_is_framed_by_what_its_head_declares(head, framing):
    assert RequestParser().feed(head)[0].framing == framing


def test_interim_responses_carry_no_body():
    events = ResponseParser(b"GET").feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert events[0].status == 100 and events[0].framing == "none"


def test_a_long_target_or_many_small_headers_count_against_the_head_limit():
    with pytest.raises(HeadersTooLarge):
        RequestParser(max_head_bytes=1024).feed(b"GET http://a/" + b"x" * 1100 + b" HTTP/1.1\r\n\r\n")
    # each header counts its name, value, ": " and CRLF: 24 bytes here; the target 9
    header = [b"X%02d: %s\r\n" % (i, b"v" * 17) for i in range(43)]
    RequestParser(max_head_bytes=1024).feed(
        b"GET http://a/ HTTP/1.1\r\n" + b"".join(header[:42]) + b"\r\n")  # 1017 bytes
    with pytest.raises(HeadersTooLarge):  # 1041 bytes
        RequestParser(max_head_bytes=1024).feed(
            b"GET http://a/ HTTP/1.1\r\n" + b"".join(header) + b"\r\n")


def test_a_malformed_response_says_what_llhttp_disliked():
    with pytest.raises(BadUpstreamResponse, match=r"malformed response: \S"):
        ResponseParser(b"GET").feed(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n")


@pytest.mark.parametrize("head, strict", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: a\r\n\r\n", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", True),
    (b"HTTP/1.0 200\r\nServer: x\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\nContent-Length: 5\n\n", False),  # bare LF
    (b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", False),  # space before the colon
    (b"HTTP/1.1 200 OK\r\nContent-Length\t: 5\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nX: a, b\r\nContent-Length: 5\r\n\r\n", True),  # a comma elsewhere
    (b"HTTP/1.1 200 OK\r\nX: a :b\r\nContent-Length: 5\r\n\r\n", True),  # a colon in a value
])
def test_llhttp_takes_a_strict_head_as_it_came_and_a_lenient_one_rewritten(head, strict):
    """A head llhttp takes reaches it (and the client) as it came; a lenient one reaches it
    rewritten, in one read or byte by byte (a fresh llhttp judges the rewritten form)."""
    for reads in ([head], [bytes([b]) for b in head]):
        parser = ResponseParser(b"GET")
        events = [event for read in reads for event in parser.feed(read)]
        response = events[0]
        assert isinstance(response, ResponseHead)
        assert (response.block == head[head.find(b"\r\n"):-4]) is strict


# Field lines of every lenient shape normalize knows, and plain ones, in any order and with
# any line ending: what llhttp takes, normalize leaves as it is (so llhttp judges first).
_LINES = st.sampled_from([
    b"Content-Length: 5", b"Content-Length : 5", b"Content-Length\t: 5", b"Content-Length: 5, 5",
    b"Content-Length: 6", b"content-length:5", b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip", b"Transfer-Encoding: gzip, chunked", b"X: a :b", b"X : y",
    b"Server: x", b"X: a, b", b"Connection: keep-alive", b" folded", b"Bad Header", b": none",
    b"X: a\rb", b"",
])
_STATUS_LINES = st.sampled_from([
    b"HTTP/1.1 200 OK", b"HTTP/1.0 200", b"HTTP/1.1 100 Continue", b"HTTP/1.1 101 Switching",
    b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 199 X", b"HTTP/1.1 600 X", b"HTTP/2 200",
    b"HTTP/1.1  200 OK", b"HTTP/1.1 1000 X", b"HTTP/1.1 20 X", b"evil", b"HTTP/1.1 100\r",
])


@settings(max_examples=500, deadline=None)
@given(status=_STATUS_LINES, lines=st.lists(_LINES, max_size=5),
       ends=st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=7, max_size=7))
def test_a_head_llhttp_takes_is_one_normalize_leaves_as_it_is(status, lines, ends):
    import httptools

    from anonproxy.wire.response_head import _final, normalize

    head = b"".join(line + end for line, end in zip([status, *lines, b""], ends[:len(lines) + 2],
                                                    strict=True))
    end = re.search(rb"\n\r?\n", head)
    if end is None or end.end() != len(head):
        return  # (not one whole head, as ResponseHeads cuts them)
    taken = False

    class Judge:
        def on_headers_complete(self) -> None:
            nonlocal taken
            taken = True

    try:
        httptools.HttpResponseParser(Judge()).feed_data(head)
    except httptools.HttpParserUpgrade:
        taken = True
    except httptools.HttpParserError:
        pass
    try:
        strict, final = normalize(head)
    except BadUpstreamResponse:
        assert not taken
        return
    if taken:
        assert strict == head
    assert _final(head) is final


@pytest.mark.parametrize("head, out", [
    (b"HTTP/1.1 200 OK\nbad line\n\n", b"HTTP/1.1 200 OK\r\nbad line\r\n\r\n"),
    (b"HTTP/1.1 200 OK\n: no name\nX : y\n\n", b"HTTP/1.1 200 OK\r\n: no name\r\nX: y\r\n\r\n"),
    (b"\n\n", b"\n\n"),
])
def test_lines_that_are_no_field_are_left_for_llhttp_to_refuse(head, out):
    from anonproxy.wire.response_head import normalize

    assert normalize(head) == (out, True)


def test_parsers_done_with_are_freed_at_once_not_by_a_later_collection():
    """llhttp holds the collector's callbacks and the collector held llhttp: a cycle, which
    only the cyclic collector could free (thousands of them between its passes). With the
    collector off, what a collection then finds unreachable is what reference counting left."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # (what a collection finds is kept in gc.garbage)
    try:
        responses = ResponseParser(b"GET")
        assert responses.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")[-1] is END
        del responses
        requests = RequestParser()
        requests.feed(b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
        requests.close()
        del requests
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if "Collector" in type(o).__name__]
        assert not left, f"freed only by a collection: {left}"
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
