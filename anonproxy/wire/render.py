"""HTTP/1.1 heads and chunks written out as bytes; no I/O, no parsing (wire/http1.py parses).

Invariants: a head is written exactly as given (names keep their case and order; nothing is
added or dropped here: sanitizing is wire/headers.py's); every line ends in CRLF.
"""

from __future__ import annotations

from anonproxy.wire.headers import Headers


def render_request_head(method: bytes, target: bytes, headers: Headers,
                        version: bytes = b"1.1") -> bytes:
    lines = [method + b" " + target + b" HTTP/" + version]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def render_response_head(status: int, reason: bytes, headers: Headers) -> bytes:
    return render_response_block(status, reason, block_of(headers))


def render_response_block(status: int, reason: bytes, block: bytes) -> bytes:
    """A response head from its field lines as bytes (CRLF-led, wire/messages.py's `block`)."""
    return b"HTTP/1.1 %d " % status + reason + block + b"\r\n\r\n"


def block_of(headers: Headers) -> bytes:
    """(name, value) pairs -> CRLF-led field lines (wire/messages.py's `block`, written here)."""
    return b"".join(b"\r\n" + name + b": " + value for name, value in headers)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"  # (with trailer fields: b"0\r\n", the fields, b"\r\n")
