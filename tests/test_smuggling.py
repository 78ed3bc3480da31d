"""Request smuggling end to end, both ways, through the real proxy.

Requests: a table of raw request bytes, each sent in one write over a raw socket to the running
proxy and aimed at the recording origin. A request whose framing is ambiguous or malformed must
get 400 (431 when a limit is what it breaks) or a bare close, the connection must end there, and
the origin must have seen nothing of it: no request, no connection of its own. A second table holds
legal requests that carry another request inside their body: the origin must see exactly the
outer requests, never the hidden one.

Responses: a raw-socket origin (tests/rawserver.py) answers with defective responses. The client
must get a 502, or a response a strict parser (h11) frames without error, or a truncation it
can see (the connection closed before the framed end). Never bytes the upstream sent after the
response: the next request on the same client connection gets its own answer, and the upstream
connection that carried the defect is never reused.
"""

from __future__ import annotations

import socket

import h11
import pytest
from conftest import DIRECT, launch_in_process
from helpers import recv_all, recv_until
from origin import start_origin
from rawserver import start_raw_server

REFUSED_STATUSES = (b"HTTP/1.1 400 ", b"HTTP/1.1 431 ")


@pytest.fixture(scope="module")
def shared_proxy(tmp_path_factory):
    """One proxy for every row; stopped cleanly at the end, with nothing left behind."""
    proxy = launch_in_process(tmp_path_factory.mktemp("smuggling"), DIRECT)
    yield proxy
    assert proxy.stop() == 0
    assert not proxy.problems, "\n".join(proxy.problems)


@pytest.fixture
def proxy(shared_proxy):
    assert shared_proxy.alive(), shared_proxy.log()[-2000:]
    return shared_proxy


@pytest.fixture(scope="module")
def shared_origin():
    origin, server = start_origin()
    yield origin
    server.shutdown()
    server.server_close()


@pytest.fixture
def origin(shared_origin):
    shared_origin.received.clear()
    shared_origin.connections.clear()
    return shared_origin


@pytest.fixture
def raw():
    server = start_raw_server()
    yield server
    server.close()


def request(url: str, *lines: str | bytes, method: str = "POST", body: bytes = b"") -> bytes:
    head = [f"{method} {url} HTTP/1.1".encode(), b"Host: origin.test"]
    head += [line.encode() if isinstance(line, str) else line for line in lines]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


HIDDEN = "GET {origin}/smuggled HTTP/1.1\r\nHost: origin.test\r\n\r\n"

# (name, header lines, body); the URL is the recording origin's /echo
REFUSED = [
    ("cl-and-te", ["Content-Length: 4", "Transfer-Encoding: chunked"], b"0\r\n\r\n"),
    ("te-and-cl", ["Transfer-Encoding: chunked", "Content-Length: 4"], b"0\r\n\r\n"),
    ("duplicate-cl-differing", ["Content-Length: 4", "Content-Length: 5"], b"abcde"),
    ("cl-list-differing", ["Content-Length: 4, 5"], b"abcde"),
    ("cl-plus-sign", ["Content-Length: +4"], b"abcd"),
    ("cl-negative", ["Content-Length: -1"], b"abcd"),
    ("cl-hex", ["Content-Length: 0x4"], b"abcd"),
    ("cl-space-inside", ["Content-Length: 4 4"], b"abcd"),
    ("te-chunked-then-identity", ["Transfer-Encoding: chunked, identity"], b"0\r\n\r\n"),
    ("te-identity", ["Transfer-Encoding: identity"], b"abcd"),
    ("te-gzip-not-final-chunked", ["Transfer-Encoding: gzip"], b"abcd"),
    ("te-space-before-colon", ["Transfer-Encoding : chunked"], b"0\r\n\r\n"),
    ("te-tab-before-colon", ["Transfer-Encoding\t: chunked"], b"0\r\n\r\n"),
    ("te-xchunked", ["Transfer-Encoding: xchunked"], b"0\r\n\r\n"),
    ("te-chunkedx", ["Transfer-Encoding: chunkedx"], b"0\r\n\r\n"),
    ("te-second-line", ["Transfer-Encoding: chunked", "Transfer-Encoding: identity"], b"0\r\n\r\n"),
    ("te-second-line-same", ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
     b"0\r\n\r\n"),
    ("te-obs-fold", ["Transfer-Encoding:", " chunked"], b"0\r\n\r\n"),
    ("te-leading-tab-line", ["X: a", "\tTransfer-Encoding: chunked"], b"0\r\n\r\n"),
    ("obs-fold", ["X-Folded: a", " b"], b""),
    ("bare-cr-in-line", [b"X: a\rTransfer-Encoding: chunked"], b"0\r\n\r\n"),
    ("bare-cr-line-end", [b"X: a\r", b"Content-Length: 0"], b""),
    ("bare-lf-line-end", [b"X: a\nTransfer-Encoding: chunked"], b"0\r\n\r\n"),
    ("chunk-size-not-hex", ["Transfer-Encoding: chunked"], b"zz\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-negative", ["Transfer-Encoding: chunked"], b"-1\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-0x", ["Transfer-Encoding: chunked"], b"0x3\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-overflow", ["Transfer-Encoding: chunked"],
     b"10000000000000003\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-leading-space", ["Transfer-Encoding: chunked"], b" 3\r\nabc\r\n0\r\n\r\n"),
    ("chunk-data-longer-than-size", ["Transfer-Encoding: chunked"], b"3\r\nabcdef\r\n0\r\n\r\n"),
    ("chunk-bare-lf", ["Transfer-Encoding: chunked"], b"3\nabc\n0\n\n"),
    ("nul-in-name", [b"X\x00Y: 1"], b""),
    ("nul-in-value", [b"X: a\x00b"], b""),
    ("control-in-name", [b"X\x01Y: 1"], b""),
    ("control-in-value", [b"X: a\x01b"], b""),
    ("del-in-value", [b"X: a\x7fb"], b""),
    ("space-in-name", ["X Y: 1"], b""),
    ("empty-name", [": 1"], b""),
    ("long-request-line", [], b""),  # the URL is made 70000 bytes long below
    ("long-header-value", ["X: " + "a" * 70000], b""),
    ("too-many-headers", [f"X-{i}: 1" for i in range(150)], b""),
    ("cl-te-hidden-request", ["Content-Length: 60", "Transfer-Encoding: chunked"],
     b"0\r\n\r\n" + HIDDEN.encode()),
    ("te-cl-hidden-request", ["Transfer-Encoding: chunked", "Content-Length: 3"],
     b"40\r\n" + HIDDEN.encode() + b"\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("name, lines, body", REFUSED, ids=[row[0] for row in REFUSED])
def test_smuggling_vector_is_refused_and_reaches_nothing(proxy, origin, name, lines, body):
    url = origin.url("/echo")
    if name == "long-request-line":
        url += "?" + "a" * 70000
    body = body.replace(b"{origin}", f"http://{origin.host}:{origin.port}".encode())
    with proxy.connect() as sock:
        sock.sendall(request(url, *lines, body=body))
        try:
            answer = recv_all(sock)  # the connection must end after the refusal
        except ConnectionResetError:
            answer = b""  # (closed with unread bytes: also an end)
    assert answer == b"" or answer.startswith(REFUSED_STATUSES), answer[:200]
    # the proxy still serves: a control request gets through, and is all the origin ever saw
    with proxy.connect() as sock:
        sock.sendall(request(origin.url("/echo?control"), "Content-Length: 0", "Connection: close"))
        assert recv_all(sock).startswith(b"HTTP/1.1 200 ")
    assert [r.target for r in origin.received] == ["/echo?control"]
    assert len(origin.connections) <= 1  # (0 when the control reused a kept upstream connection)


# (name, raw bytes after the head's URL is filled in, targets the origin must see)
CARRIED = [
    ("request-in-cl-body", request("{url}", "Content-Length: {n}", body=HIDDEN.encode()),
     ["/echo"]),
    ("request-in-chunked-body", request("{url}", "Transfer-Encoding: chunked",
                                        body=b"{x}\r\n" + HIDDEN.encode() + b"\r\n0\r\n\r\n"),
     ["/echo"]),
    ("request-in-get-body", request("{url}", "Content-Length: {n}", method="GET",
                                    body=HIDDEN.encode()), ["/echo"]),
    # a second request pipelined in origin-form: the proxy answers it itself (400)
    ("origin-form-pipelined-after-empty-post", request("{url}", "Content-Length: 0",
                                             body=b"GET /smuggled HTTP/1.1\r\nHost: origin.test\r\n\r\n"),
     ["/echo"]),
]


@pytest.mark.parametrize("name, raw_request, seen", CARRIED, ids=[row[0] for row in CARRIED])
def test_a_request_hidden_in_a_body_never_reaches_the_origin_as_a_request(proxy, origin, name,
                                                                             raw_request, seen):
    hidden = HIDDEN.format(origin=f"http://{origin.host}:{origin.port}").encode()
    data = (raw_request.replace(b"{url}", origin.url("/echo").encode())
            .replace(HIDDEN.encode(), hidden)
            .replace(b"{n}", str(len(hidden)).encode())
            .replace(b"{x}", b"%x" % len(hidden)))
    with proxy.connect() as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = recv_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert [r.target for r in origin.received] == seen
    if name.endswith("-body"):
        assert origin.received[0].body_length == len(hidden)  # the request went up as a body
    assert all("smuggled" not in r.target for r in origin.received)


# --- defective responses --------------------------------------------------------------------

EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"

# (name, method, response bytes, what the raw server does next, what the client must get:
#  "502" | "truncated" (the connection ended before the framed end) | the complete body)
BROKEN = [
    # Content-Length beside a final chunked coding: chunked frames the body, the length is
    # dropped (RFC 9112 6.3; issue 16), what follows the last chunk is never a response
    ("cl-and-te", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + EVIL, "keep", b""),
    ("te-and-cl", "GET", (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n"
     b"0\r\n\r\n") + EVIL, "keep", b""),
    ("cl-and-te-not-chunked", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: gzip\r\n\r\n"
     + EVIL, "keep", "502"),
    ("cl-and-te-chunked-not-final", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n"
     b"Transfer-Encoding: chunked, gzip\r\n\r\n" + EVIL, "keep", "502"),
    ("two-differing-cl-in-one-line", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 6\r\n\r\nokevil",
     "keep", "502"),
    ("two-identical-cl", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
     + EVIL, "keep", b"ok"),
    ("two-differing-cl", "GET", (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 6\r\n\r\n"
     b"okevil"), "keep", "502"),
    ("two-te-lines", "GET", (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n2\r\nok\r\n0\r\n\r\n") + EVIL, "keep", "502"),
    ("bad-chunk-size", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nevil\r\n0\r\n\r\n",
     "keep", "502"),
    ("chunk-size-overflow", "GET", (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"10000000000000004\r\nevil\r\n0\r\n\r\n"), "keep", "502"),
    ("nul-in-header", "GET", b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok", "keep", "502"),
    ("nul-in-name", "GET", b"HTTP/1.1 200 OK\r\nX\x00: a\r\nContent-Length: 2\r\n\r\nok", "keep", "502"),
    ("bare-cr-in-head", "GET", b"HTTP/1.1 200 OK\r\nX: a\rContent-Length: 0\r\nContent-Length: 2\r\n\r\nok"
     + EVIL, "keep", "502"),
    # bare LF and space before a colon: normalized (RFC 9112 2.2, 5.1; issue 16)
    ("bare-lf-line-ends", "GET", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok" + EVIL, "keep", b"ok"),
    ("obs-fold", "GET", b"HTTP/1.1 200 OK\r\nX: a\r\n Content-Length: 0\r\nContent-Length: 2\r\n\r\nok" + EVIL,
     "keep", "502"),
    ("space-before-colon", "GET", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n" + EVIL, "keep", b""),
    # the response head limit is 256 KiB by default (a larger head: tests/test_compat.py)
    ("oversized-head", "GET", b"HTTP/1.1 200 OK\r\nX: " + b"a" * 270000 + b"\r\nContent-Length: 2\r\n\r\nok",
     "keep", "502"),
    ("not-http", "GET", b"evil\r\n\r\n", "keep", "502"),
    ("longer-than-cl", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokevil", "keep", b"ok"),
    ("response-then-another", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + EVIL, "keep", b"ok"),
    ("chunked-then-another", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
     + EVIL, "keep", b"ok"),
    ("204-with-a-body", "GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nevil" + EVIL, "keep", b""),
    ("304-with-a-body", "GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nevil", "keep", b""),
    ("head-answered-with-a-body", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil" + EVIL, "keep", b""),
    ("close-mid-length", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", "close", "truncated"),
    ("close-mid-chunk", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nok", "close",
     "truncated"),
    ("close-before-last-chunk", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
     "close", "truncated"),
    ("reset-mid-length", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", "reset", "truncated"),
    ("close-without-answer", "GET", b"", "close", "502"),
]


def h11_exchange(sock: socket.socket, conn: h11.Connection, method: str, url: str):
    """One request as a strict client: "502", "truncated", "closed" or (status, body). A response
    h11 cannot frame fails the test here."""
    # one send: the proxy may reset the connection (a truncated answer) before a second one
    sock.sendall(conn.send(h11.Request(method=method, target=url, headers=[("Host", "raw.test")]))
                 + (conn.send(h11.EndOfMessage()) or b""))
    status, body, eof = None, b"", False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            assert eof, "the proxy sent a response a strict client cannot frame"
            return "truncated"
        if event is h11.NEED_DATA:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            eof = not data
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return "502" if status == 502 else (status, body)
        elif isinstance(event, h11.ConnectionClosed):
            return "closed"


@pytest.mark.parametrize("name, method, response, then, expected", BROKEN, ids=[r[0] for r in BROKEN])
def test_a_defective_upstream_response_is_never_passed_on_in_a_form_the_client_could_misframe(
        proxy, raw, name, method, response, then, expected):
    path = raw.script(name, response, then)
    with proxy.connect() as sock:
        conn = h11.Connection(h11.CLIENT)
        got = h11_exchange(sock, conn, method, raw.url(path))
        if isinstance(expected, bytes):
            assert got[1] == expected and got[0] in (200, 204, 304)
        elif expected == "truncated":
            assert got in ("truncated", "502")  # 502 when the defect came before the head went out
        else:
            assert got == expected
        # the same client connection, if it stays open, gets the next answer, not leftovers
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            assert h11_exchange(sock, conn, "GET", raw.url("/good")) in ((200, b"good"), "closed")
    # and the upstream connection that carried the defect was never used again
    with proxy.connect() as sock:
        assert h11_exchange(sock, h11.Connection(h11.CLIENT), "GET", raw.url("/good")) == (200, b"good")
    first = raw.requests[0].conn
    assert [r.conn for r in raw.requests[1:]].count(first) == 0, raw.requests

# --- found by scripts/fuzz -----------------------------------------------------------------


@pytest.mark.parametrize("line", [b"GET %s HTTP/2.0", b"GET %s", b"GET %s HTTP/0.9"],
                         ids=["http-2.0", "no-version", "http-0.9"])
def test_a_request_line_that_is_not_http_1_x_is_refused_and_reaches_nothing(proxy, origin, line):
    with proxy.connect() as sock:
        sock.sendall(line % origin.url("/echo").encode() + b"\r\nHost: x\r\n\r\n")
        answer = recv_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert not origin.received


@pytest.mark.parametrize("status", [b"104 X", b"150 X", b"199 X"])
def test_an_interim_response_with_a_body_cannot_smuggle_a_final_response(proxy, origin, status):
    raw = start_raw_server()
    try:
        path = raw.script("interim", b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(EVIL)
                          + EVIL + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "keep")
        with proxy.connect() as sock:
            conn = h11.Connection(h11.CLIENT)
            first = h11_exchange(sock, conn, "GET", raw.url(path))
            second = None
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()  # the next request, to another site, same connection
                second = h11_exchange(sock, conn, "GET", origin.url("/status/204"))
        assert (first, second) in (("502", None), ((200, b"ok"), (204, b""))), (first, second)
    finally:
        raw.close()


@pytest.mark.parametrize("trailer", [b"Set-Cookie: injected=1", b"Transfer-Encoding: chunked"])
def test_response_trailer_fields_never_become_header_fields(proxy, trailer):
    raw = start_raw_server()
    try:
        path = raw.script("trailer", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
                          + trailer + b"\r\n\r\n", "keep")
        with proxy.connect() as sock:
            sock.sendall(f"GET {raw.url(path)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = recv_until(sock, b"\r\n\r\n").split(b"\r\n\r\n")[0]
        assert head.count(trailer) == (1 if trailer.startswith(b"Transfer-Encoding") else 0), head
    finally:
        raw.close()


def test_request_trailer_fields_never_reach_the_origin_as_header_fields(proxy, origin):
    with proxy.connect() as sock:
        sock.sendall(f"POST {origin.url('/echo')} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     f"Connection: close\r\n\r\n2\r\nok\r\n0\r\nX-Trailer-Smuggled: 1\r\n\r\n".encode())
        recv_all(sock)
    assert origin.last.header("X-Trailer-Smuggled") is None, origin.last.headers


@pytest.mark.parametrize("status", [b"000", b"050", b"099"])
def test_a_status_code_below_100_is_a_502(proxy, status):
    raw = start_raw_server()
    try:
        path = raw.script("low", b"HTTP/1.1 " + status + b" X\r\nContent-Length: %d\r\n\r\n" % len(EVIL)
                          + EVIL + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "keep")
        with proxy.connect() as sock:
            assert h11_exchange(sock, h11.Connection(h11.CLIENT), "GET", raw.url(path)) == "502"
    finally:
        raw.close()
