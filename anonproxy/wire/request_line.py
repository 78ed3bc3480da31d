"""Request lines llhttp refuses but HTTP allows, rewritten before it sees them.

llhttp knows a fixed list of methods and refuses any other, and refuses bytes above 0x7f in a
request target; curl sends both (`curl -X BAN`, `curl 'http://host/é'`). Methods are tokens
(RFC 9110 §9): any token is forwarded as the client wrote it, case included. Raw non-ASCII bytes
in a target are percent-encoded (`é` -> `%C3%A9`), as browsers send them: every origin decodes
the two forms alike, and a next hop with a strict parser takes the encoded one.

How: a request line at the start of a read is held until it is whole (never more than the head
limit), then an unknown method is handed to llhttp as GET (which frames a request body exactly
as any other method but CONNECT) and given back in the parsed head, and the target is encoded.
Only request lines are touched; headers, bodies and framing stay llhttp's strict judgement. A
line that does not have the shape `token SP target SP HTTP/x.y` goes to llhttp unchanged, to be
refused as before.
"""

from __future__ import annotations

import re

from anonproxy.wire.errors import HeadersTooLarge

# methods llhttp takes in HTTP requests (each checked: tests/test_compat.py)
KNOWN = frozenset(b"""DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND
    PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY
    SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY""".split())

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TARGET = rb"[\x21-\x7e\x80-\xff]"
_LINE = re.compile(b"(" + _TOKEN + b"+) (" + _TARGET + rb"+) (HTTP/\d\.\d\r?\n)")
# what a request line may look like while it is still arriving
_PREFIX = re.compile(_TOKEN + b"*(?: " + _TARGET + rb"*(?: [HTP/0-9.]*\r?)?)?")
_RAW = re.compile(rb"[\x80-\xff]")
_JUNK = re.compile(rb"[\x00-\x0c\x0e-\x1f\x7f]")  # never in a request line (\r at its end is)


class RequestLines:
    """Holds and rewrites the request line at the start of a read; see the module's note."""

    __slots__ = ("_held", "_max", "method")

    def __init__(self, max_head_bytes: int) -> None:
        self._held = b""
        self._max = max_head_bytes
        self.method: bytes | None = None  # the client's method, when llhttp was handed another

    def feed(self, data: bytes, at_start: bool) -> bytes:
        """Bytes from the client -> the bytes for llhttp. `at_start`: llhttp waits for a new
        request (nothing of one is in it). Holds a request line until it is whole."""
        if not at_start and not self._held:
            return data
        held, self._held = self._held, b""
        data = (held + data).lstrip(b"\r\n")  # (llhttp skips empty lines between requests)
        end = data.find(b"\n", len(held))
        if end < 0:
            # a line arriving in pieces is checked piece by piece, never rescanned (no quadratic
            # work for a client dribbling bytes); its whole shape once it is complete
            if not (_PREFIX.fullmatch(data) if not held else not _JUNK.search(data, len(held))):
                return data  # not a request line: llhttp says what is wrong with it
            if len(data) > self._max:
                raise HeadersTooLarge(f"the message head is larger than {self._max} bytes")
            self._held = data
            return b""
        space = data.find(b" ", 0, end)
        if space > 0 and data[:space] in KNOWN and data[space:end].isascii():
            self.method = None
            return data  # the usual line: nothing to rewrite, and no copy made
        line = _LINE.fullmatch(data, 0, end + 1)
        if line is None:
            return data
        method, target, version = line.groups()
        self.method = None
        if method not in KNOWN:
            self.method, method = method, b"GET"
        if not target.isascii():
            target = _RAW.sub(lambda m: b"%%%02X" % m[0][0], target)
        return method + b" " + target + b" " + version + data[end + 1:]
