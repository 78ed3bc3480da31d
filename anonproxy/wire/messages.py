"""The parsed HTTP/1 messages, as the parsers (wire/http1.py) hand them on: heads, body
pieces, the end of a message, the start of a tunnel. No parsing of bytes beyond splitting a
response head's field lines, which llhttp has already judged.

A response head keeps its field lines as the bytes they came in (`block`), and those less the
hop-by-hop lines (`end_to_end`): a relay that only drops hop-by-hop fields sends those bytes
(wire/headers.py's sanitize_response_block) and never splits them; `headers` splits them on
first use, and gives what llhttp reported field by field (name as sent; value without leading
whitespace, trailing whitespace kept: llhttp's strict mode refuses folded lines, bare CR and
control bytes, so a line is `name:value`).

The dataclasses have no `slots=True`: compiled (anonproxy/native.py), a plain dataclass is a
native class, and a slotted one is not (about 1 µs per request). The ones made per message
write their own `__init__` (`init=False`): compiled, it is C; the one the dataclass decorator
generates is Python run at each construction, its keyword arguments gathered in a dict.

Invariants: a head's fields keep their case and order; `block` is b"" or CRLF-led lines
(b"\r\nName: value" each), never the status line or the blank line that ends the head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


@dataclass(init=False)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes  # b"1.1" or b"1.0"
    headers: Headers
    keep_alive: bool
    has_body: bool
    # from the parser's one pass over the headers, so later stages need not scan them again
    framing: str = "none"  # "none" | "length" | "chunked"
    websocket: bool = False  # asks for a WebSocket upgrade
    listed: frozenset[bytes] = frozenset()  # tokens the Connection header lists

    def __init__(self, method: bytes, target: bytes, version: bytes, headers: Headers,
                 keep_alive: bool, has_body: bool, framing: str = "none",
                 websocket: bool = False, listed: frozenset[bytes] = frozenset()) -> None:
        self.method, self.target, self.version, self.headers = method, target, version, headers
        self.keep_alive, self.has_body, self.framing = keep_alive, has_body, framing
        self.websocket, self.listed = websocket, listed


@dataclass(init=False)
class ResponseHead:
    status: int
    reason: bytes
    version: bytes
    block: bytes  # the field lines as received, each led by CRLF (see the module docstring)
    keep_alive: bool
    framing: str  # "none" | "length" | "chunked" | "close"
    # `block` less its hop-by-hop lines (wire/headers.py's scan_block): no default, since an
    # empty one would send the client a head without fields
    end_to_end: bytes = field(repr=False, compare=False)
    listed: frozenset[bytes] = frozenset()  # tokens the Connection header lists
    _headers: Headers | None = field(default=None, repr=False, compare=False)

    def __init__(self, status: int, reason: bytes, version: bytes, block: bytes,
                 keep_alive: bool, framing: str, end_to_end: bytes,
                 listed: frozenset[bytes] = frozenset()) -> None:
        self.status, self.reason, self.version, self.block = status, reason, version, block
        self.keep_alive, self.framing, self.listed = keep_alive, framing, listed
        self.end_to_end = end_to_end
        self._headers = None

    @property
    def headers(self) -> Headers:
        """The fields as (name, value) pairs, split from `block` once."""
        if self._headers is None:
            self._headers = fields(self.block)
        return self._headers


def fields(block: bytes) -> Headers:
    """CRLF-led field lines -> (name, value) pairs, as llhttp reports them."""
    return [(name, value.lstrip(b" \t"))
            for name, _, value in (line.partition(b":") for line in block.split(b"\r\n")[1:])]


@dataclass(init=False)
class Body:
    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


class End:
    """The current message is complete."""
    __slots__ = ()


END = End()


@dataclass
class Tunnel:
    """The head was a CONNECT or protocol upgrade: what follows is raw bytes from `rest` on."""

    rest: bytes


Event = RequestHead | ResponseHead | Body | End | Tunnel
