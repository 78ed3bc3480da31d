"""What `anonproxy fetch` sends and how it reads the answer, without I/O: shared by the fetch
that runs the profile in-process (fetch.py, over the exits) and the lean one that goes through
a running `anonproxy serve` of the same profile (fetch_lean.py), so that both send the same
bytes and write the same output, and say the same sentence with the same exit code.

Invariants: nothing identifies the tool or the user — the request carries Host, the framing a
body needs and what the user gave (-H, the profile's User-Agent), nothing else: no Accept, no
Connection (the response's own framing ends the exchange, then the caller closes), no
User-Agent unless the profile or the command line gives one, no cookies kept between runs or
hops. Credentials given with -H (Authorization, Cookie, Proxy-Authorization) go to the URL's
own origin only (scheme, host and port, as curl does); with --location-trusted to every origin
a redirect leads to, but never over http once the request began over https. The body is
written to its destination as it arrives, never held whole in memory. Nothing here imports
asyncio: the lean fetch must start fast.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from anonproxy.wire.address import Address, AddressError, check_host
from anonproxy.wire.headers import sanitize_request
from anonproxy.wire.http1 import ResponseParser
from anonproxy.wire.messages import END, Body, ResponseHead
from anonproxy.wire.render import render_request_head

if TYPE_CHECKING:
    from typing import BinaryIO

    from anonproxy.cli.progress import Progress
    from anonproxy.wire.headers import HeaderPolicy

OK, USAGE, BLOCKED, EXIT_DOWN, NETWORK, HTTP_ERROR = 0, 2, 3, 4, 5, 22
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10


class FetchFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class FetchRequest:
    url: str
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | BinaryIO | None = None
    follow: bool = False
    include_head: bool = False
    fail: bool = False
    exit: str | None = None  # force this exit instead of the rules' choice
    verbose: bool = False
    trusted: bool = False  # --location-trusted: credentials follow redirects to other origins


@dataclass
class Target:
    scheme: str
    dest: Address
    path: bytes
    authority: bytes


def parse_target(url: str) -> Target:
    """The scheme, destination, request-target and Host of an http:// or https:// URL;
    FetchFailed (usage) for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise FetchFailed(USAGE, f"{url[:200]}: only http:// and https:// URLs can be fetched")
    try:
        host = check_host(parts.hostname)
        port = parts.port or (443 if scheme == "https" else 80)
    except (AddressError, ValueError) as error:
        raise FetchFailed(USAGE, f"bad URL: {error}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    dest = Address(host, port)
    authority = dest.authority(443 if scheme == "https" else 80)
    return Target(scheme, dest, path.encode("utf-8"), authority.encode("idna"))


def say(request: FetchRequest, line: str) -> None:
    """A line for -v (stderr)."""
    if request.verbose:
        print(f"* {line}", file=sys.stderr)


# Request headers that carry the user's identity at a site (curl's list for -L).
CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


def sends_credentials(first: Target, target: Target, trusted: bool) -> bool:
    """Whether the user's credentials go with a request to `target` in a chain of redirects
    that began at `first`: to the same origin (scheme, host, port) only, or to any with
    `trusted` — but never over http when the chain began over https."""
    if first.scheme == "https" and target.scheme == "http":
        return False
    return trusted or (target.scheme, target.dest) == (first.scheme, first.dest)


def headers_for(request: FetchRequest, first: Target, target: Target) -> list[tuple[str, str]]:
    """The -H headers to send to `target`: without credentials where they may not go."""
    if sends_credentials(first, target, request.trusted):
        return request.headers
    kept = [(n, v) for n, v in request.headers if n.strip().lower() not in CREDENTIALS]
    if len(kept) < len(request.headers):
        say(request, f"not sending Authorization/Cookie to {target.scheme}://"
                     f"{target.authority.decode()} (another origin, or http after https)")
    return kept


def redirect(request: FetchRequest, url: str, status: int, location: str | None, method: str,
             body: bytes | BinaryIO | None) -> tuple[str, str, bytes | BinaryIO | None] | None:
    """The next request of a chain (url, method, body) when the answer is a redirect to
    follow, else None: a 303, and a 301 or 302 to a POST, continue as GET without the body."""
    if not (request.follow and status in REDIRECTS and location):
        return None
    url = urljoin(url, location)
    if status == 303 or (status in (301, 302) and method == "POST"):
        method, body = ("GET" if method != "HEAD" else "HEAD"), None
    say(request, f"following the redirect to {urlsplit(url).hostname} (routed again)")
    return url, method, body


def request_head(policy: HeaderPolicy, given: list[tuple[str, str]], target: Target,
                 method: str, length: int | None) -> bytes:
    """Host, what the user gave, and Content-Length for a body: nothing of our own."""
    headers = [(b"Host", target.authority)]  # (a Host given with -H is replaced by sanitizing)
    headers += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in given]
    if length is not None:
        headers.append((b"Content-Length", str(length).encode()))
    origin = f"{target.scheme}://{target.authority.decode()}"
    clean = sanitize_request(headers, policy, target_origin=origin, host=target.authority)
    replace = policy.user_agent_replace
    if replace is not None and b"user-agent" not in {n.lower() for n, _ in clean}:
        clean.append((b"User-Agent", replace))
    return render_request_head(method.encode(), target.path, clean)


def body_length(body: bytes | BinaryIO | None) -> int | None:
    """The request body's size (a file's from its end), None without one."""
    if body is None or isinstance(body, bytes):
        return None if body is None else len(body)
    body.seek(0, 2)
    length = body.tell()
    body.seek(0)
    return length


class ResponseReader:
    """The answer to one request, fed as it arrives: interim (1xx) heads pass, the final head
    is acted on (-f, -i, the progress bar), the body goes to `out` — but not the body of a
    redirect that will be followed, which is not what the user asked for."""

    def __init__(self, request: FetchRequest, method: str, out: BinaryIO,
                 progress: Progress | None = None) -> None:
        self._parser = ResponseParser(method.encode())
        self._request, self._out, self._progress = request, out, progress
        self.final: ResponseHead | None = None  # the final head, once it came
        self._location: str | None = None
        self._keep_body = False

    def feed(self, data: bytes) -> tuple[int, str | None] | None:
        """Bytes from the server (b"": it closed). Returns (status, Location) once the answer
        is complete, else None; raises FetchFailed (-f) or ProxyError (a malformed answer)."""
        for event in self._parser.feed(data) if data else self._parser.feed_eof():
            if isinstance(event, ResponseHead) and event.status >= 200:  # (not an interim one)
                self.final, self._location = event, self._final_head(event)
                self._keep_body = not (self._request.follow and event.status in REDIRECTS
                                       and self._location)
            elif isinstance(event, Body) and self._keep_body:
                self._out.write(event.data)
                if self._progress is not None:
                    self._progress.advance(len(event.data))
            elif event is END and self.final is not None:
                self._out.flush()
                return self.final.status, self._location
        return None

    def _final_head(self, head: ResponseHead) -> str | None:
        """Act on the final response head: fail on an error status if asked (-f), write the
        head if asked (-i), start the progress bar; returns its Location, if any."""
        request = self._request
        say(request, f"HTTP {head.status} {head.reason.decode('latin-1')}")
        if request.fail and head.status >= 400:
            raise FetchFailed(HTTP_ERROR, f"the server answered {head.status}")
        if request.include_head:
            lines = b"HTTP/%s %d %s\r\n" % (head.version, head.status, head.reason)
            lines += b"".join(n + b": " + v + b"\r\n" for n, v in head.headers)
            self._out.write(lines + b"\r\n")
        if self._progress is not None:
            size = next((int(v) for n, v in head.headers
                         if n.lower() == b"content-length" and v.strip().isdigit()), None)
            self._progress.start(size)
        return next((v.decode("latin-1") for n, v in head.headers
                     if n.lower() == b"location"), None)
