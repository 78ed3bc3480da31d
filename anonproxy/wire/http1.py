"""HTTP/1.x message parsing and rendering over llhttp (httptools); no I/O.

This is the only module that imports httptools. Parsers are incremental: `feed(bytes)` returns
the events found so far (a head, body pieces, the end of a message, or the start of a tunnel).
Framing is decided by llhttp in its strict mode, never by hand: a request with both
Content-Length and Transfer-Encoding, a bad chunk size or a malformed line is a BadRequest.
Response heads reach llhttp through wire/response_head.py, which rewrites the lenient forms
browsers accept (bare LF, space before a colon, a repeated Content-Length, Content-Length beside
chunked) into strict ones and refuses the ambiguous ones; request lines through
wire/request_line.py (any token as a method, raw non-ASCII target bytes percent-encoded).

Invariants: header names keep their case and order; limits on head size and header count are
enforced while the head is still arriving; body bytes are handed on as they come (never
buffered whole).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

import httptools

from anonproxy.wire.errors import BadRequest, BadUpstreamResponse, HeadersTooLarge
from anonproxy.wire.headers import Headers, scan, scan_block
from anonproxy.wire.messages import (
    END,
    Body,
    Event,
    RequestHead,
    ResponseHead,
    Tunnel,
)
from anonproxy.wire.render import render_request_head
from anonproxy.wire.request_line import RequestLines
from anonproxy.wire.response_head import ResponseHeads


def _framing(encodings: list[bytes], lengths: list[bytes], error: type[Exception]) -> str:
    """How the body of a message with these (llhttp-validated) Transfer-Encoding and
    Content-Length values is delimited. More than one Transfer-Encoding line is refused: llhttp
    and a next hop could disagree on which one frames the body (a smuggling shape), and no
    honest client needs it."""
    if len(encodings) > 1:
        raise error("the message has more than one Transfer-Encoding header")
    if encodings:
        final = encodings[0].rsplit(b",", 1)[-1].strip().lower()
        return "chunked" if final == b"chunked" else "close"
    if not lengths:
        return "close"
    return "length" if lengths[0].strip() != b"0" else "none"


class _Collector:
    """Callbacks for llhttp; accumulates a head and queues events."""

    def __init__(self, max_head_bytes: int, max_headers: int, too_large: type[Exception]) -> None:
        self.too_large = too_large
        self.start(max_head_bytes, max_headers)

    def start(self, max_head_bytes: int, max_headers: int) -> None:
        """Everything of a message stream: empty (also what a recycled collector starts from)."""
        self.events: list[Event] = []
        self.url = b""
        self.reason = b""
        self.headers: Headers = []
        self.head_bytes = 0
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self.fed_quietly = 0
        self.begun = False  # llhttp is inside a message

    def guard(self, fed: int) -> None:
        """Bound what llhttp may buffer: it keeps a header or trailer line until the line ends,
        so bytes that produce no event (a head, a trailer, chunk framing) are counted, and more
        than a head's worth of them is refused."""
        if self.events:
            self.fed_quietly = 0
            return
        self.fed_quietly += fed
        if self.fed_quietly > self.max_head_bytes:
            raise self.too_large(
                f"the message head or trailer is larger than {self.max_head_bytes} bytes")

    def _count(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > self.max_head_bytes:
            raise self.too_large(f"the message head is larger than {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        self.url, self.reason, self.headers, self.head_bytes = b"", b"", [], 0
        self.begun = True

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_status(self, status: bytes) -> None:
        self._count(len(status))
        self.reason += status

    def on_body(self, body: bytes) -> None:
        self.events.append(Body(body))

    def on_message_complete(self) -> None:
        self.events.append(END)
        self.begun = False


class _RequestCollector(_Collector):
    parser: httptools.HttpRequestParser | None  # (None once the connection is done with)
    lines: RequestLines

    def on_header(self, name: bytes, value: bytes) -> None:
        # _count, inlined: this runs for every header line of every request
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_head_bytes:
            raise self.too_large(f"the message head is larger than {self.max_head_bytes} bytes")
        if len(self.headers) >= self.max_headers:
            raise self.too_large(f"the message has more than {self.max_headers} header fields")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        p = self.parser
        assert p is not None  # (never fed once closed)
        version = p.get_http_version()
        if version not in ("1.0", "1.1"):
            # llhttp also takes "HTTP/2.0", and a request line without a version as 0.9 (still
            # reading header lines after it): neither is an HTTP/1.x request to forward as one
            raise BadRequest(f"unsupported HTTP version {version}")
        encodings, lengths, listed, websocket = scan(self.headers)
        framing = _framing(encodings, lengths, BadRequest)
        if framing == "close":  # a request without length or chunking has no body (RFC 9112 6.3)
            framing = "none"
        method, self.lines.method = self.lines.method or p.get_method(), None
        self.events.append(
            RequestHead(
                method=method,
                target=self.url,
                version=version.encode("ascii"),
                headers=self.headers,
                keep_alive=p.should_keep_alive(),
                has_body=framing != "none",
                framing=framing,
                websocket=websocket,
                listed=listed,
            )
        )
        self.headers = []  # trailer fields (llhttp reports them as headers) stay out of the head


class RequestParser:
    """Parses the requests a client sends on one connection, pipelined or not."""

    def __init__(self, max_head_bytes: int = 65536, max_headers: int = 100) -> None:
        self._limits = (max_head_bytes, max_headers)
        self._lines = RequestLines(max_head_bytes)  # methods and targets llhttp would refuse
        self._new()

    def _new(self) -> None:
        if hasattr(self, "_collector"):
            self.close()  # (the parser before an upgrade we do not serve)
        self._collector = _RequestCollector(*self._limits, HeadersTooLarge)
        self._parser = httptools.HttpRequestParser(self._collector)
        self._collector.parser, self._collector.lines = self._parser, self._lines

    def close(self) -> None:
        """Done with: llhttp holds our callbacks and our collector held it. Let go, so both are
        freed by reference counting when the connection ends, not by a later collection."""
        self._collector.parser = None

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        while True:
            c = self._collector
            data = self._lines.feed(data, at_start=not c.begun)
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                rest = data[upgrade.args[0] :]
                events, c.events = c.events, []
                # llhttp reports the message complete at the head's end; the tunnel owns the rest
                if events and events[-1] is END:
                    events.pop()
                self._new()
                head = events.pop()
                assert isinstance(head, RequestHead)
                out += events
                if head.method == b"CONNECT" or head.websocket:
                    return [*out, head, Tunnel(rest)]
                # An upgrade we do not serve (h2c, TLS/1.0, ...): drop the offer and parse the
                # message, body included, as plain HTTP.
                plain = [(n, v) for n, v in head.headers if n.lower() != b"upgrade"]
                data = render_request_head(head.method, head.target, plain, head.version) + rest
                continue
            except httptools.HttpParserCallbackError as error:
                cause = error.__context__
                if isinstance(cause, BadRequest):
                    raise cause from None
                raise BadRequest("the request could not be parsed") from None
            except httptools.HttpParserError as error:
                raise BadRequest(f"malformed request: {_llhttp_reason(error)}") from None
            c.guard(len(data))
            out += c.events
            c.events = []
            return out


class _ResponseCollector(_Collector):
    """A response's callbacks: no per-field one (fields are read from the head's bytes,
    which ResponseHeads hands over in `heads`)."""

    parser: httptools.HttpResponseParser | None
    heads: deque[bytes]
    head_only: bool = False
    final_framing: str | None = None
    final_keep_alive = False  # llhttp waits for another message after the final one
    ended = False  # the final response is complete
    after_end = False  # bytes came after it: the connection is out of step

    def start(self, max_head_bytes: int, max_headers: int) -> None:
        super().start(max_head_bytes, max_headers)
        self.final_framing = None
        self.final_keep_alive = self.ended = self.after_end = False

    def on_message_begin(self) -> None:
        if self.ended:
            self.after_end = True
        super().on_message_begin()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.final_framing is not None:
            self.ended = True

    def on_headers_complete(self) -> None:
        p = self.parser
        if p is None:  # a message after the final one (see below): the upstream is out of step
            raise BadUpstreamResponse("the upstream sent more than one final response")
        status = p.get_status_code()
        # the head llhttp has just parsed, as it was handed to it (ResponseHeads strips the
        # empty lines llhttp skips before a head, so each begins with its status line)
        head = self.heads.popleft() if self.heads else b""
        if not head.startswith(b"HTTP/"):  # (a defence: the two never disagree)
            raise BadUpstreamResponse("the upstream response could not be parsed")
        block = head[head.index(b"\r\n"):-4]  # (CRLF-led lines: the head less its ends)
        # (a field line takes at least 4 bytes, "\r\nX:": a short block cannot have too many)
        if len(block) > 4 * self.max_headers and block.count(b"\n") > self.max_headers:
            raise self.too_large(f"the message has more than {self.max_headers} header fields")
        encodings, lengths, listed, end_to_end = scan_block(block)
        if not 100 <= status <= 599:
            raise BadUpstreamResponse(f"the upstream sent an invalid status code {status}")
        if 100 <= status < 200 and status != 101 and (
                encodings or any(v.strip() != b"0" for v in lengths)):
            # A 1xx response ends with its head (RFC 9110 15.2), but llhttp reads a body for
            # 1xx codes other than 100-103 when one is declared: those bytes would reach the
            # client as a response of their own, and answer its next request, maybe to another site
            raise BadUpstreamResponse("the upstream sent an interim (1xx) response with a body")
        if self.head_only or status in (204, 304) or 100 <= status < 200:
            framing = "none"
        else:
            framing = _framing(encodings, lengths, BadUpstreamResponse)
        keep_alive = p.should_keep_alive()
        self.events.append(
            ResponseHead(
                status=status,
                reason=_plain_reason(self.reason),
                version=head[5:8],  # (x.y of "HTTP/x.y ", as llhttp took it: one digit each)
                block=block,
                keep_alive=keep_alive,
                framing=framing,
                listed=listed,
                end_to_end=end_to_end,
            )
        )
        self.headers = []  # trailer fields (llhttp reports them as headers) stay out of the head
        if status >= 200:
            self.final_framing, self.final_keep_alive = framing, keep_alive
            # llhttp holds our callbacks and we held it: let go, so both are freed when the
            # exchange ends (by reference counting, not by a later collection)
            self.parser = None
        if self.head_only and status >= 200:
            raise _HeadDone


class _TrailersCollector(_ResponseCollector):
    """For a client that takes trailer fields: llhttp reports them one by one, as it reports
    a head's (which on_headers_complete drops: a head's fields are read from its bytes)."""

    def on_header(self, name: bytes, value: bytes) -> None:
        # A head's size was bounded before llhttp saw it (ResponseHeads), a trailer's by
        # `guard`: only the number of fields is counted here.
        if len(self.headers) >= self.max_headers:
            raise self.too_large(f"the message has more than {self.max_headers} header fields")
        self.headers.append((name, value))


class _HeadDone(Exception):
    """Raised from a callback to stop llhttp after the head of a response to HEAD."""


# Collectors and their llhttp parsers that ended a response cleanly (ResponseParser.recycle),
# for the next ResponseParsers; and what a recycled ResponseParser is left with
_SPARE: list[tuple[_ResponseCollector, httptools.HttpResponseParser]] = []
_NO_HEADS: deque[bytes] = deque()
_SPENT = _ResponseCollector(0, 0, BadUpstreamResponse)
_SPENT.ended = _SPENT.after_end = True  # (not reusable; fed, it raises: it has no parser)
_SPENT.parser = None


class ResponseParser:
    """Parses the responses to one request: any 1xx interim responses, then the final one."""

    def __init__(self, request_method: bytes, max_head_bytes: int = 262144,
                 max_headers: int = 200, *, trailers: bool = False) -> None:
        """`trailers`: the client takes trailer fields, so a chunked response's are kept
        (`trailers`)."""
        self._heads = ResponseHeads(max_head_bytes)  # lenient heads made strict, for llhttp
        parser: httptools.HttpResponseParser
        if _SPARE and not trailers:  # (see `recycle`)
            c, parser = _SPARE.pop()
            c.start(max_head_bytes, max_headers)
        else:
            c = (_TrailersCollector if trailers else _ResponseCollector)(
                max_head_bytes, max_headers, BadUpstreamResponse)
            parser = httptools.HttpResponseParser(c)
        self._collector = c
        self._parser: httptools.HttpResponseParser | None = parser
        c.heads = self._heads.emitted
        c.head_only = request_method == b"HEAD"
        c.parser = parser
        self._received = False  # llhttp has been given bytes

    def recycle(self) -> None:
        """Done with, after a final response that ended cleanly on a kept-alive connection:
        llhttp waits at the start of a next message, so it and its collector serve the next
        ResponseParser made, emptied (making them is ~5,000 instructions a response). Not
        after a response to HEAD (llhttp was stopped in error), nor one whose trailers were
        kept; this parser takes no more bytes."""
        c, parser = self._collector, self._parser
        self._collector, self._parser = _SPENT, None
        if (parser is not None and type(c) is _ResponseCollector and c.ended
                and c.final_keep_alive and not c.after_end and not c.head_only
                and len(_SPARE) < 64):
            c.start(0, 0)  # (nothing of this exchange stays in it)
            c.heads, c.parser = _NO_HEADS, None
            _SPARE.append((c, parser))

    def feed(self, data: bytes) -> list[Event]:
        c = self._collector
        raw, data = data, self._heads.feed(data)
        self._received = self._received or bool(data)
        fed = len(data)
        more: bytes | None = data
        while more is not None:
            more = self._parse(more, raw)
        c.guard(fed)
        events, c.events = c.events, []
        return events

    def _parse(self, data: bytes, raw: bytes) -> bytes | None:
        """Give llhttp `data` (from the upstream's read `raw`); None once done with it, else
        the bytes for a fresh llhttp: a head it refused, rewritten in its strict form, and
        what followed it (wire/response_head.py)."""
        c, parser = self._collector, self._parser
        if parser is None:  # (its llhttp may be another exchange's now: see `recycle`)
            raise RuntimeError("a recycled ResponseParser was fed")
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            c.events.append(Tunnel(data[upgrade.args[0] :]))
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, _HeadDone):
                c.events.append(END)
                c.ended = True
                # anything after the head of a response to HEAD puts the upstream out of step
                # (judged on the upstream's read: a blank line alone in it may hide more)
                c.after_end = not raw.endswith((b"\n\r\n", b"\n\n"))
            elif c.ended:
                c.after_end = True  # garbage after a complete response: keep the response
            elif isinstance(cause, BadUpstreamResponse):
                raise cause from None
            else:
                raise BadUpstreamResponse("the upstream response could not be parsed") from None
        except httptools.HttpParserError as error:
            if c.ended:
                c.after_end = True
                return None
            strict = self._heads.rewrite_refused()  # (raises where framing is ambiguous)
            if strict is None:
                raise BadUpstreamResponse(
                    f"the upstream sent a malformed response: {_llhttp_reason(error)}"
                ) from None
            self._parser = c.parser = httptools.HttpResponseParser(c)  # (stopped at the error)
            return strict
        return None

    @property
    def reusable(self) -> bool:
        """The final response ended cleanly and nothing followed it."""
        return self._collector.ended and not self._collector.after_end

    @property
    def trailers(self) -> Headers:
        """The trailer fields of the final response, once it ended (chunked only)."""
        return self._collector.headers if self._collector.ended else []

    def feed_eof(self) -> list[Event]:
        """The upstream closed: completes a close-delimited body, or is an error mid-message."""
        c = self._collector
        if self._heads.feed_eof():
            raise BadUpstreamResponse(
                "the upstream closed the connection in the middle of a response")
        if c.final_framing == "close" and not c.ended:
            c.ended = c.after_end = True  # complete, and the connection is gone
            return [END]
        if not self._received:
            raise BadUpstreamResponse("the upstream closed the connection without a response")
        raise BadUpstreamResponse("the upstream closed the connection in the middle of a response")


_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_PLAIN_REASONS: dict[bytes, bytes] = {}  # reasons already checked (most servers send a few)


def _plain_reason(reason: bytes) -> bytes:
    """A reason phrase is text for people (RFC 9112 4): one with control bytes is dropped
    rather than passed on to a client that may not expect them."""
    plain = _PLAIN_REASONS.get(reason)
    if plain is None:
        plain = b"" if _CONTROL.search(reason) else reason
        if len(_PLAIN_REASONS) >= 256:
            _PLAIN_REASONS.clear()
        _PLAIN_REASONS[reason] = plain
    return plain


def _llhttp_reason(error: Exception) -> str:
    return (str(error).strip() or type(error).__name__)[:120]


def parse_absolute_url(target: bytes) -> tuple[bytes, bytes, int | None, bytes]:
    """Split an absolute-form request-target into (scheme, host, port, origin-form path)."""
    try:
        # (Any: httptools' stubs call each part bytes, but a part the URL lacks is None, and
        # compiled code checks the types it is told: anonproxy/native.py)
        url: Any = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        raise BadRequest("the request target is not a valid URL") from None
    schema: bytes | None = url.schema
    host: bytes | None = url.host
    path: bytes | None = url.path
    query: bytes | None = url.query
    if not schema or not host:
        raise BadRequest("the request target must be an absolute http:// URL")
    return schema.lower(), host, url.port, (path or b"/") + (b"?" + query if query is not None
                                                              else b"")
