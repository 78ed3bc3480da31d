"""One plain-HTTP exchange as a state machine: upstream bytes in, client bytes and verdicts out.

Sans-IO, as h11 does it: `ResponseRelay` never reads or writes a socket. Its driver
(transport/exchange.py) reads the upstream, hands each read to `feed` (or its end to
`feed_eof`), writes what comes back to the client, and says when that write went out (`sent`).
The machine decides everything else:

- what the client gets: interim (1xx) heads for HTTP/1.1 clients only (dropped for 1.0), a 101
  only when the client asked for a WebSocket (else the upstream is at fault), then the final
  head with hop-by-hop fields removed and the body re-framed — chunked passed through to an
  HTTP/1.1 client (last chunk added, with the trailer fields if the client sent `TE: trailers`,
  else without), a chunked body to an HTTP/1.0 client and a close-delimited
  one sent raw until the connection closes (then `Connection: close`, the client not kept);
- when the response is done (`done`, `status`), or became a tunnel (`tunnel`: the bytes after
  the 101's head, for the WebSocket relay);
- whether the upstream connection may be reused (`reusable`): only after a complete response
  that both ends allow to be kept alive, not close-delimited, with nothing after it in the same
  read, and after the whole request body went up;
- whether the client connection may carry another request (`client_keep_alive`);
- what a failure means (`failure`): once a response head went out, ABORT (the client connection
  is reset, so a truncated body is never taken for a complete one); on a reused connection that
  sent nothing back, STALE (the caller may retry on a fresh one); else the error to answer with;
- which read timeout applies (`read_timeout`: the response timeout until the final head, then
  the idle timeout), and what silence past it means (`silence`).

It also frames the request body going up (`request_body`), since reuse depends on its end.

The rest of a Content-Length body may bypass the parser: once the head went out, `body_left`
says how many body bytes are still to come, and a driver that moves them itself (splice, socket
to socket) reports them (`body_moved`) and their end (`body_moved_all`). The machine counts them
as if fed, and the exchange ends as a fed one would: reusable only if nothing followed.

Framing itself is llhttp's (wire/http1.py), after wire/response_head.py made lenient heads
strict: a Content-Length beside a final chunked coding is dropped (the body goes on chunked),
a repeated identical one collapses; differing ones, or one beside another coding, are
BadUpstreamResponse, before any of it reaches the client. Bytes
after the final response in the same read are dropped and make the upstream not reusable; the
driver never feeds after `done` (a later feed is dropped the same way). A failure found in the
read that brought the final head is answered: nothing of that read went out.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

from anonproxy.wire.errors import BadUpstreamResponse, ProxyError, StageTimeout
from anonproxy.wire.headers import Headers, sanitize_response, sanitize_response_block
from anonproxy.wire.http1 import ResponseParser
from anonproxy.wire.messages import (
    Body,
    End,
    Event,
    RequestHead,
    ResponseHead,
    Tunnel,
)
from anonproxy.wire.render import (
    LAST_CHUNK,
    block_of,
    chunk,
    render_response_block,
    render_response_head,
)


class Failure(enum.Enum):
    """What a failure in the middle of an exchange comes to, besides an error to answer with."""

    ABORT = "abort"  # a response head reached the client: reset its connection, answer nothing
    STALE = "stale"  # a reused upstream connection was closed before it answered: retry once


ABORT = Failure.ABORT
STALE = Failure.STALE

_NOT_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"te", b"trailer", b"host",
                           b"connection", b"keep-alive", b"proxy-connection", b"upgrade",
                           b"content-encoding", b"content-type", b"content-range"))


class ResponseTap(Protocol):
    """Who else follows the final response (the cache): its head as the client gets it, its
    body as received (never framing), and its end. `cut` says the driver moved body bytes
    itself, past the tap: the body it saw is not the whole. While `keeping` (the body is to be
    stored), no body byte is moved past it."""

    @property
    def keeping(self) -> bool: ...

    def head(self, status: int, reason: bytes, headers: Headers) -> None: ...

    def body(self, data: bytes) -> None: ...

    def end(self) -> None: ...

    def cut(self) -> None: ...


class ResponseRelay:
    """The state of one request/response exchange, from the request head sent on."""

    __slots__ = (
        "_parser", "_http11", "_websocket", "where", "reused", "read_timeout", "_idle_timeout",
        "_chunked_up", "request_complete", "_client_keep_alive", "final", "to_client",
        "head_queued", "committed", "nothing_received", "done", "status", "tunnel",
        "_upstream_clean", "up_bytes", "down_bytes", "_trailers", "_length", "tap", "rewrite",
    )

    def __init__(self, request: RequestHead, where: str = "the upstream", *,
                 reused: bool = False, head_timeout: float = 60.0,
                 idle_timeout: float = 300.0, max_head_bytes: int = 262144) -> None:
        """`request`: the head sent upstream (its method, version, framing, keep-alive and
        WebSocket wish); `where`: the upstream as error messages name it; `reused`: the
        connection came from the pool; the timeouts: for the response head, then between
        reads of its body; `max_head_bytes`: the largest response head taken."""
        self._http11 = request.version == b"1.1"
        # trailer fields pass only to a client that said it takes them (RFC 9110 6.5, 10.1.4)
        self._trailers = self._http11 and _takes_trailers(request.headers)
        self._parser = ResponseParser(request.method, max_head_bytes, trailers=self._trailers)
        self._websocket = request.websocket
        self.where = where
        self.reused = reused
        self.read_timeout = head_timeout
        self._idle_timeout = idle_timeout
        self._chunked_up = request.framing == "chunked"
        self.request_complete = not request.has_body  # the request body all went up
        self._client_keep_alive = request.keep_alive
        self.final: ResponseHead | None = None  # the final (2xx-5xx) response head, once it came
        self.to_client = "length"  # how its body goes to the client (see _client_framing)
        self.head_queued = False  # a response head is in the output (maybe not yet written)
        self.committed = False  # ... and was written: failures now abort, never answer
        self.nothing_received = True
        self.done = False  # the final response is complete, or became a tunnel
        self.status = 0
        self.tunnel: bytes | None = None  # after a 101: the upstream's bytes past its head
        self._upstream_clean = False
        self.up_bytes = 0  # request body bytes handed upstream (before chunk framing)
        self.down_bytes = 0  # response body bytes received (before chunk framing)
        self._length: int | None = None  # the final response's Content-Length, once asked for
        self.tap: ResponseTap | None = None  # who else follows the final response
        # what the client's response heads lose or change besides hop-by-hop fields (a reverse
        # entry's backend-naming fields), applied to every head the client gets
        self.rewrite: Callable[[Headers], Headers] | None = None

    # -- the request body, going up

    def request_body(self, event: Event) -> bytes:
        """The bytes to send upstream for one event of the client's request body, framed as
        the client framed it (chunked stays chunked, the last chunk included)."""
        if isinstance(event, Body):
            self.up_bytes += len(event.data)
            return chunk(event.data) if self._chunked_up else event.data
        if isinstance(event, End):
            self.request_complete = True
            return LAST_CHUNK if self._chunked_up else b""
        return b""

    def request_cut(self) -> None:
        """The response ended before the request body was all read: the rest of it is still on
        the client connection, which therefore cannot carry another request."""
        self._client_keep_alive = False

    # -- the response, coming down

    def feed(self, data: bytes) -> bytes:
        """One read from the upstream (not empty) -> the bytes to write to the client.
        Raises ProxyError (BadUpstreamResponse) when the upstream breaks HTTP."""
        if self.done:
            self._upstream_clean = False  # bytes after the end: the connection is out of step
            return b""
        if data:
            self.nothing_received = False
        return self._relay(self._parser.feed(data))

    def feed_eof(self) -> bytes:
        """The upstream closed -> the bytes to write to the client (the end of a
        close-delimited body). Raises BadUpstreamResponse when the response is not complete."""
        if self.done:
            return b""
        return self._relay(self._parser.feed_eof())

    def sent(self) -> None:
        """What the last feed returned has been written to the client."""
        self.committed = self.head_queued

    def _relay(self, events: list[Event]) -> bytes:
        out: list[bytes] = []
        last = len(events) - 1
        for i, event in enumerate(events):
            if isinstance(event, Body):
                self.down_bytes += len(event.data)
                out.append(chunk(event.data) if self.to_client == "chunked" else event.data)
                if self.tap is not None:
                    self.tap.body(event.data)
            elif isinstance(event, ResponseHead):
                self._queue_head(event, out)
            elif isinstance(event, End) and self.final is not None:  # (not an interim's end)
                self._finish(out, clean=self._parser.reusable and i == last)
                break
            elif isinstance(event, Tunnel):
                self.tunnel = event.rest
                self.status = 101
                self.done = True
                break
        return b"".join(out)

    def _queue_head(self, event: ResponseHead, out: list[bytes]) -> None:
        """Queue a response head for the client: an interim one (HTTP/1.1 clients only), a
        101 the client asked for, or the final one (which sets the body's framing)."""
        if event.status == 101:
            if not self._websocket:
                raise BadUpstreamResponse("the upstream switched protocols unasked")
            # (not `final`: a Tunnel, not an End, ends it)
            headers = sanitize_response(event.headers, websocket=True, listed=event.listed)
            if self.rewrite is not None:
                headers = self.rewrite(headers)
        elif event.status < 200:
            if self._http11:
                headers = sanitize_response(event.headers, listed=event.listed)
                if self.rewrite is not None:
                    headers = self.rewrite(headers)
                out.append(render_response_head(event.status, event.reason, headers))
            return
        else:
            self.final = event
            self.read_timeout = self._idle_timeout  # now between body reads
            self.to_client = self._client_framing(event)
            out.append(self._final_head(event))
            self.head_queued = True
            return
        out.append(render_response_head(event.status, event.reason, headers))
        self.head_queued = True

    def _finish(self, out: list[bytes], clean: bool) -> None:
        """The final response ended; the upstream may be reused if both ends allow it and
        nothing more arrived (`clean`)."""
        final = self.final
        assert final is not None
        if self.to_client == "chunked":
            out.append(self._last_chunk())
        self._upstream_clean = final.keep_alive and final.framing != "close" and clean
        self.status = final.status
        self.done = True
        if self.tap is not None:
            self.tap.end()

    def _last_chunk(self) -> bytes:
        """The last chunk, with the upstream's trailer fields when the client takes them
        (framing and hop-by-hop fields never: they are not the trailer's to set)."""
        fields = [name + b": " + value + b"\r\n"
                  for name, value in (self._parser.trailers if self._trailers else ())
                  if name.lower() not in _NOT_TRAILERS]
        return b"0\r\n" + b"".join(fields) + b"\r\n" if fields else LAST_CHUNK

    def _final_head(self, response: ResponseHead) -> bytes:
        """The final response's head for the client, and whether its connection stays open.
        The usual head goes as the bytes it came in, its hop-by-hop lines cut out; one that
        the cache keeps or a reverse entry rewrites, field by field (the same fields either
        way: tests/test_response_block.py)."""
        old_client = not self._http11
        chunked_to_old = response.framing == "chunked" and old_client
        if response.framing == "close" or chunked_to_old:
            self._client_keep_alive = False  # the body will end where the connection does
        added: Headers = ([(b"Connection", b"close")] if not self._client_keep_alive else
                          [(b"Connection", b"keep-alive")] if old_client else [])
        block = None
        if self.tap is None and self.rewrite is None and not chunked_to_old:
            block = sanitize_response_block(response.end_to_end, response.listed)
        if block is None:
            headers = sanitize_response(response.headers, listed=response.listed)
            if self.rewrite is not None:
                headers = self.rewrite(headers)
            if chunked_to_old:
                headers = [(n, v) for n, v in headers if n.lower() != b"transfer-encoding"]
            headers += added
            if self.tap is not None:
                self.tap.head(response.status, response.reason, headers)
            return render_response_head(response.status, response.reason, headers)
        return render_response_block(response.status, response.reason, block + block_of(added))

    def _client_framing(self, response: ResponseHead) -> str:
        """How the body goes to the client: as framed upstream, or raw until close."""
        if response.framing == "chunked" and self._http11:
            return "chunked"
        if response.framing in ("chunked", "close"):
            return "close-raw"
        return response.framing

    # -- a Content-Length body moved by the driver itself

    @property
    def body_left(self) -> int:
        """The body bytes still to come of a Content-Length response whose head went out to
        a client that gets the body as it is (0 otherwise, and while a tap keeps the body):
        what a driver may move itself."""
        final = self.final
        if final is None or self.done or not self.committed or self.to_client != "length":
            return 0
        if self.tap is not None and self.tap.keeping:
            return 0
        if self._length is None:
            self._length = _content_length(final.headers)
        return max(self._length - self.down_bytes, 0)

    def body_moved(self, n: int) -> None:
        """The driver moved `n` more body bytes from the upstream to the client itself."""
        self.down_bytes += n
        if self.tap is not None:
            self.tap.cut()

    def body_moved_all(self, trailing: bool) -> None:
        """The driver moved all of `body_left`: the response is complete. `trailing`: the
        upstream sent something past it (or closed), so its connection is out of step."""
        self._finish([], clean=not trailing)

    # -- verdicts

    @property
    def reusable(self) -> bool:
        """The upstream connection may go back to the pool: the final response ended cleanly,
        both ends allow keep-alive, nothing followed, and the request body all went up."""
        return self._upstream_clean and self.request_complete and self.tunnel is None

    def recycle(self) -> None:
        """Done with, the connection kept (`reusable`): the response parser's llhttp serves
        a next exchange (ResponseParser.recycle); nothing is fed to this one any more."""
        self._parser.recycle()

    @property
    def client_keep_alive(self) -> bool:
        """The client connection may carry another request: not after a tunnel, nor after a
        refused upgrade (what the client sent after it was parsed as tunnel bytes)."""
        return self._client_keep_alive and self.tunnel is None and not self._websocket

    def failure(self, error: Exception) -> Failure | ProxyError:
        """What `error` (a ProxyError, or a ConnectionError when the upstream reset) raised
        during the exchange comes to: ABORT, STALE, or the error to answer the client with."""
        if self.committed:
            return ABORT
        if isinstance(error, ProxyError):
            if self.reused and self.nothing_received and isinstance(error, BadUpstreamResponse):
                return STALE
            return error
        if self.reused and self.nothing_received:
            return STALE
        return BadUpstreamResponse(f"{self.where} reset the connection")

    def silence(self) -> Exception:
        """What an upstream silent for `read_timeout` raises: before a head reached the
        client, a timeout to answer with; after, a reset (so the client connection aborts)."""
        if self.committed:
            return ConnectionResetError("upstream idle")
        return StageTimeout(f"{self.where} did not answer within {self.read_timeout:g} s")


def _takes_trailers(headers: Headers) -> bool:
    """The request says `TE: trailers` (a loop, not a generator: it runs for every request,
    and two letters are checked before any lower-casing)."""
    for name, value in headers:
        if len(name) == 2 and name.lower() == b"te" and b"trailers" in value.lower():
            return True
    return False


def _content_length(headers: Headers) -> int:
    """The Content-Length of a head llhttp framed by length (wire/response_head.py left one
    field with one value), or 0 when it is not plain digits (the body then stays llhttp's)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            digits = value.strip(b" \t")
            return int(digits) if digits.isdigit() and len(digits) < 20 else 0
    return 0
