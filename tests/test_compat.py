"""Compatibility with what real clients and servers send (issue 16): curl and Python requests
through the proxy, against a raw-bytes origin (tests/rawserver.py) for the edge cases.

Each lenient case is one curl and Chromium accept directly; the proxy carries it, normalized,
where the framing stays unambiguous, and still answers 502 where it does not.
"""

from __future__ import annotations

import pytest
import requests
from helpers import curl

# (name, the origin's response, the body a client gets)
LENIENT = [
    ("identical-content-length-twice",
     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    ("content-length-5-5", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", b"hello"),
    ("chunked-and-content-length",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     b"hello"),
    ("bare-lf-line-ends", b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 5\n\nhello", b"hello"),
    ("space-before-colon", b"HTTP/1.1 200 OK\r\nX-A : 1\r\nX-B\t: 2\r\nContent-Length: 5\r\n\r\nhello",
     b"hello"),
    ("head-over-64k", b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"a" * 20_000)
                                                        for i in range(5)) + b"Content-Length: 5\r\n\r\nhello",
     b"hello"),
]

STRICT = [
    ("differing-content-length",
     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("content-length-5-6", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    ("gzip-and-content-length",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"),
    ("head-over-256k", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300_000 + b"\r\nContent-Length: 5\r\n\r\nhello"),
]


@pytest.mark.parametrize("name, response, body", LENIENT, ids=[r[0] for r in LENIENT])
def test_curl_and_requests_get_what_curl_gets_directly(proxy, raw, name, response, body):
    path = raw.script(name, response, "keep")
    direct = curl("--max-time", "10", raw.url(path))
    assert direct.returncode == 0 and direct.stdout == body  # curl itself accepts it
    through = curl("--max-time", "10", "-i", "--proxy", proxy.url, raw.url(path))
    assert through.returncode == 0, through.stderr
    head, _, got = through.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and got == body
    assert b" :" not in head and b"\t:" not in head
    assert head.lower().count(b"content-length") + head.lower().count(b"transfer-encoding") == 1
    answer = requests.get(raw.url(path), proxies={"http": proxy.url}, timeout=10)
    assert answer.status_code == 200 and answer.content == body


@pytest.mark.parametrize("name, response", STRICT, ids=[r[0] for r in STRICT])
def test_ambiguous_framing_stays_a_502(proxy, raw, name, response):
    path = raw.script(name, response, "keep")
    through = curl("--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--proxy", proxy.url,
                   raw.url(path))
    assert through.stdout == b"502"
    answer = requests.get(raw.url(path), proxies={"http": proxy.url}, timeout=10)
    assert answer.status_code == 502


def test_the_response_head_limit_is_a_profile_setting(start_proxy, raw):
    from conftest import DIRECT
    proxy = start_proxy(DIRECT + "\n[limits]\nmax_response_header_bytes = 2048\n")
    path = raw.script("big", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 4000 + b"\r\nContent-Length: 2\r\n\r\nok",
                      "keep")
    answer = requests.get(raw.url(path), proxies={"http": proxy.url}, timeout=10)
    assert answer.status_code == 502
    assert "larger than 2048 bytes" in answer.text


# -- requests: methods are tokens (RFC 9110 9), raw non-ASCII target bytes are percent-encoded

@pytest.mark.parametrize("method", ["BAN", "VERSION-CONTROL", "MKWORKSPACE", "get", "PURGE", "PROPFIND"])
def test_any_token_method_is_forwarded_as_curl_sent_it(proxy, origin, method):
    done = curl("--max-time", "10", "-f", "-X", method, "--proxy", proxy.url, origin.url("/echo"))
    assert done.returncode == 0, done.stderr
    assert origin.received[-1].method == method and origin.received[-1].target == "/echo"


def test_an_unknown_method_with_a_body_is_framed_as_any_other(proxy, origin):
    answer = requests.request("BAN", origin.url("/upload"), data=b"x" * 100_000,
                              proxies={"http": proxy.url}, timeout=10)
    assert answer.status_code == 200 and answer.json()["length"] == 100_000
    assert origin.received[-1].method == "BAN" and origin.received[-1].body_length == 100_000


def test_raw_utf8_in_the_path_is_forwarded_percent_encoded(proxy, origin):
    done = curl("--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--proxy", proxy.url,
                origin.url("/echo") + "/é?q=ü")
    assert done.stdout == b"404", done.stderr  # the origin's answer: it has no such path
    assert origin.received[-1].target == "/echo/%C3%A9?q=%C3%BC"


def test_a_method_that_is_not_a_token_is_still_refused(proxy, origin):
    import socket
    for line in (b"GE(T", b"G\x80T", b"GET\x01"):
        with socket.create_connection(proxy.address) as sock:
            sock.sendall(line + b" " + origin.url("/echo").encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    assert not origin.received


def test_a_request_line_in_pieces_is_held_until_whole():
    from anonproxy.wire.http1 import RequestParser
    from anonproxy.wire.messages import RequestHead
    parser = RequestParser()
    raw = b"VERSION-CONTROL http://a/\xc3\xa9 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
    events = [e for i in range(len(raw)) for e in parser.feed(raw[i:i + 1])]
    head = events[0]
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.framing) == (b"VERSION-CONTROL", b"http://a/%C3%A9", "length")
    # the next request on the connection, in a read of its own, is a request of its own
    events = parser.feed(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
    assert events[0].method == b"GET"


def test_a_request_line_longer_than_the_head_limit_is_refused():
    from anonproxy.wire.errors import HeadersTooLarge
    from anonproxy.wire.http1 import RequestParser
    parser = RequestParser(max_head_bytes=1024)
    with pytest.raises(HeadersTooLarge):
        parser.feed(b"BAN http://a/" + b"\xc3\xa9" * 1000)


def test_llhttp_takes_every_method_the_request_line_rewriter_leaves_to_it():
    import httptools

    from anonproxy.wire.request_line import KNOWN
    for method in KNOWN:
        parser = httptools.HttpRequestParser(object())
        try:
            parser.feed_data(method + b" http://a/ HTTP/1.1\r\n\r\n")
        except httptools.HttpParserUpgrade:
            assert method == b"CONNECT"


# -- chunked trailers: passed when the client sent TE: trailers, dropped otherwise

TRAILED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n"
           b"5\r\nhello\r\n0\r\nGrpc-Status: 0\r\n\r\n")


@pytest.mark.parametrize("te, passed", [(b"TE: trailers\r\n", True), (b"", False)])
def test_trailers_pass_when_the_client_takes_them(proxy, raw, te, passed):
    import socket

    import h11
    path = raw.script("trailed", TRAILED, "keep")
    with socket.create_connection(proxy.address) as sock:
        sock.sendall(b"GET " + raw.url(path).encode() + b" HTTP/1.1\r\nHost: raw.test\r\n" + te + b"\r\n")
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.EndOfMessage):
                break
    assert list(event.headers) == ([(b"grpc-status", b"0")] if passed else [])


def test_a_request_line_dribbled_byte_by_byte_costs_linear_work():
    import time

    from anonproxy.wire.http1 import RequestParser
    parser = RequestParser()
    started = time.monotonic()
    for _ in range(60_000):
        parser.feed(b"a")
    assert time.monotonic() - started < 2


def test_a_response_head_dribbled_byte_by_byte_costs_linear_work():
    import time

    from anonproxy.wire.http1 import ResponseParser
    parser = ResponseParser(b"GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nX: ")
    started = time.monotonic()
    for _ in range(200_000):
        parser.feed(b"a")
    assert time.monotonic() - started < 3
