"""Upstream response heads rewritten into the strict form llhttp parses, when it refuses them.

Browsers and curl accept response heads that llhttp's strict mode refuses; some of them are
harmless and the proxy carries them, normalized, as RFC 9112 asks of an intermediary:

- bare LF line endings become CRLF (RFC 9112 §2.2 lets a recipient accept them);
- whitespace between a field name and its colon is removed (§5.1: a proxy MUST remove it);
- Content-Length repeated with one value (`5` twice, or `5, 5`) collapses to one field
  (RFC 9110 §8.6);
- Content-Length beside a Transfer-Encoding whose final coding is chunked is dropped: chunked
  frames the body (RFC 9112 §6.3), and the client gets it chunked, without the length.

Strict where ambiguity enables smuggling: differing Content-Length values, or Content-Length
beside a Transfer-Encoding that does not end in chunked, are BadUpstreamResponse; everything
else llhttp judges as before. Only heads are touched: once the final head (or a 101's) went by,
bytes pass unchanged, so bodies and chunk framing stay llhttp's alone.

llhttp judges each head first, as it came: every form above is one it refuses (tests/
test_http1.py holds that), and a head it takes is one `normalize` would return unchanged, so
the usual head costs no scan of ours. Only a head llhttp refused is rewritten, and handed with
what followed it to a fresh llhttp (wire/http1.py), which judges the rewritten form.

Invariants: a head is buffered whole (never more than `max_head_bytes`) before it is handed on;
interim (1xx) heads are handed on one by one until the final one; empty lines before a head
are dropped (llhttp skips them too), so each head handed on begins with its status line, and
each is also kept in `emitted`, in order, for the parser that reads its fields from its bytes
(wire/http1.py).
"""

from __future__ import annotations

import re
from collections import deque

from anonproxy.wire.errors import BadUpstreamResponse

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEAD_END = re.compile(rb"\n\r?\n")


class ResponseHeads:
    """The response heads of one exchange, handed on whole as they arrive (a refused one
    rewritten: `rewrite_refused`); bodies pass as they are."""

    __slots__ = ("_buffer", "_passing", "_max", "emitted", "_fed", "_passed_at")

    def __init__(self, max_head_bytes: int) -> None:
        self._buffer = b""
        self._passing = False  # the final head went by: bytes pass unchanged
        self._max = max_head_bytes
        # each head handed to llhttp, as handed, until its parser takes it (in order: llhttp
        # reports the heads it parses in the order they came)
        self.emitted: deque[bytes] = deque()
        # the last feed's bytes, and where the body bytes it handed on after its heads begin
        self._fed = b""
        self._passed_at = 0

    def feed(self, data: bytes) -> bytes:
        """Bytes from the upstream -> the bytes for llhttp (heads held back until complete).
        The usual read, a head and what follows it, is handed on as it came (no copy)."""
        if self._passing:
            self._fed = b""
            return data
        start = max(0, len(self._buffer) - 2)  # (where a head end may begin: no rescans)
        buffer = self._buffer + data  # (`data` itself when nothing was held)
        at = 0  # where the bytes not yet handed on begin
        heads: list[bytes] = []
        skipped = False  # empty lines were dropped: what is handed on is not a stretch of buffer
        while not self._passing:
            if at < len(buffer) and buffer[at] in (13, 10):
                # empty lines before a head: llhttp skips them, and so do we, so that each
                # head handed on begins with its status line
                while at < len(buffer) and buffer[at] in (13, 10):
                    at += 1
                skipped = True
                if at == len(buffer):
                    break
            end = _HEAD_END.search(buffer, max(start, at))
            start = 0
            if end is None:
                if len(buffer) - at > self._max:
                    raise BadUpstreamResponse(
                        f"the message head is larger than {self._max} bytes")
                break
            if end.end() - at > self._max:  # (a whole head may come in one read)
                raise BadUpstreamResponse(f"the message head is larger than {self._max} bytes")
            head = buffer[at:end.end()]
            heads.append(head)
            self.emitted.append(head)
            self._passing = _final(head)
            at = end.end()
        self._fed = buffer
        if self._passing:
            self._buffer, self._passed_at = b"", at
            return buffer if not skipped else b"".join(heads) + buffer[at:]
        self._buffer, self._passed_at = buffer[at:], len(buffer)  # (held: not handed on)
        return buffer[:at] if not skipped else b"".join(heads)

    def rewrite_refused(self) -> bytes | None:
        """llhttp refused what the last feed handed on: when that was in a head (the first
        one llhttp has not finished), the bytes for a fresh llhttp: that head in its strict
        form, and everything after it. None when the refusal stands: it was not in a head, or
        rewriting changes nothing. Raises BadUpstreamResponse where the framing is ambiguous."""
        if not self.emitted:
            return None
        refused = self.emitted[0]
        strict, _ = normalize(refused)
        if strict == refused:
            return None
        self.emitted[0] = strict
        return b"".join(self.emitted) + self._fed[self._passed_at:]

    def feed_eof(self) -> bytes:
        """The upstream closed: what was held back (part of a head), for llhttp to judge."""
        rest, self._buffer = self._buffer, b""
        return rest


def normalize(head: bytes) -> tuple[bytes, bool]:
    """One complete response head -> (its strict form, whether it is the final head or a 101).
    Raises BadUpstreamResponse where its framing is ambiguous."""
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return head, True  # not a head: llhttp says what is wrong with it
    final = _final_line(lines[0])
    lines[1:] = _fields(lines[1:])
    return b"\r\n".join(lines) + b"\r\n\r\n", final


def _final(head: bytes) -> bool:
    """Whether `head` (one whole head) is a final response's or a 101's, not an interim one's;
    as `normalize` says of it."""
    if head.startswith(b"HTTP/1.") and head[8:9] == b" " and (
            head[12:13] == b" " or head[12:14] == b"\r\n"):  # the usual status line
        status = head[9:12]
        if status.isdigit():
            return not (status[:1] == b"1" and status != b"101")
    line = head[:head.find(b"\n")]
    return _final_line(line[:-1] if line.endswith(b"\r") else line)


def _final_line(status_line: bytes) -> bool:
    parts = status_line.split(b" ", 2)
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return not 100 <= code < 200 or code == 101


def _fields(lines: list[bytes]) -> list[bytes]:
    """Header lines with the space before colons removed and the framing fields reconciled."""
    out: list[bytes] = []
    lengths: list[int] = []  # positions in `out` of Content-Length lines
    values: set[bytes] = set()
    encodings: list[bytes] = []
    for line in lines:
        colon = line.find(b":")
        name = line[:colon].rstrip(b" \t") if colon > 0 else b""
        if not _TOKEN.fullmatch(name):
            out.append(line)  # no field, or a malformed one: llhttp refuses it
            continue
        value = line[colon + 1:]
        lname = name.lower()
        if lname == b"content-length":
            lengths.append(len(out))
            values.update(v.strip(b" \t") for v in value.split(b","))
        elif lname == b"transfer-encoding":
            encodings.append(value)
        out.append(name + b":" + value)
    if not lengths:
        return out
    if encodings:
        final = encodings[-1].rsplit(b",", 1)[-1].strip(b" \t").lower()
        if final != b"chunked":
            raise BadUpstreamResponse(
                "the upstream sent Content-Length with a Transfer-Encoding that does not end "
                "in chunked")
        drop = set(lengths)  # chunked frames the body; the length goes
    elif len(values) > 1:
        raise BadUpstreamResponse("the upstream sent differing Content-Length values")
    elif len(lengths) == 1 and b"," not in out[lengths[0]]:
        return out
    else:
        out[lengths[0]] = b"Content-Length: " + values.pop()
        drop = set(lengths[1:])
    return [line for i, line in enumerate(out) if i not in drop]
