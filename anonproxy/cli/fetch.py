"""`anonproxy fetch URL`: one request, in-process, through the same profile, rules, header
policy and exits as the proxy — a curl-like client for scripts.

It speaks HTTP/1.1 itself (llhttp via http1.py) over a stream that Context.open gives it, with
TLS on top for https:// (certificates verified with the system's trust store). Because it is
the client, the header policy applies inside TLS too. Each redirect (-L) is routed anew.

Invariants: nothing identifies the tool or the user — the request carries Host, the framing a
body needs and what the user gave (-H, the profile's User-Agent), nothing else: no Accept, no
Connection (the response's own framing ends the exchange, then we close), no User-Agent unless
the profile or the command line gives one, no cookies kept between runs or hops. Credentials
given with -H (Authorization, Cookie, Proxy-Authorization) go to the URL's own origin only (scheme,
host and port, as curl does); with --location-trusted to every origin a redirect leads to, but
never over http once the request began over https (there curl would send them; we do not).
Failures map to distinct exit codes; the body streams to its destination and is never held whole
in memory. No step waits longer than the profile allows the proxy: connect_timeout for the exit
and TLS, response_timeout for the answer, idle_timeout between pieces of the body.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

from anonproxy.exits.context import Context
from anonproxy.wire.address import Address, AddressError, check_host
from anonproxy.wire.errors import (
    ExitDown,
    ExitFailed,
    Forbidden,
    ProxyError,
    StageTimeout,
)
from anonproxy.wire.headers import sanitize_request
from anonproxy.wire.http1 import (
    END,
    Body,
    ResponseHead,
    ResponseParser,
    render_request_head,
)

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
class _Target:
    scheme: str
    dest: Address
    path: bytes
    authority: bytes


def _target(url: str) -> _Target:
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
    return _Target(scheme, dest, path.encode("utf-8"), authority.encode("idna"))


def _say(request: FetchRequest, line: str) -> None:
    if request.verbose:
        print(f"* {line}", file=sys.stderr)


# Request headers that carry the user's identity at a site (curl's list for -L).
CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


def sends_credentials(first: _Target, target: _Target, trusted: bool) -> bool:
    """Whether the user's credentials go with a request to `target` in a chain of redirects
    that began at `first`: to the same origin (scheme, host, port) only, or to any with
    `trusted` — but never over http when the chain began over https."""
    if first.scheme == "https" and target.scheme == "http":
        return False
    return trusted or (target.scheme, target.dest) == (first.scheme, first.dest)


def _headers_for(request: FetchRequest, first: _Target, target: _Target) -> list[tuple[str, str]]:
    """The -H headers to send to `target`: without credentials where they may not go."""
    if sends_credentials(first, target, request.trusted):
        return request.headers
    kept = [(n, v) for n, v in request.headers if n.strip().lower() not in CREDENTIALS]
    if len(kept) < len(request.headers):
        _say(request, f"not sending Authorization/Cookie to {target.scheme}://"
                      f"{target.authority.decode()} (another origin, or http after https)")
    return kept


async def fetch(ctx: Context, request: FetchRequest, out: BinaryIO, progress=None) -> int:
    """Fetch `request.url` into `out`. Returns the final HTTP status; raises FetchFailed."""
    url, method, body = request.url, request.method.upper(), request.body
    first = _target(url)
    for _ in range(MAX_REDIRECTS + 1):
        target = _target(url)
        headers = _headers_for(request, first, target)
        status, location = await _one(ctx, request, target, method, body, headers, out, progress)
        if not (request.follow and status in REDIRECTS and location):
            return status
        url = urljoin(url, location)
        if status == 303 or (status in (301, 302) and method == "POST"):
            method, body = ("GET" if method != "HEAD" else "HEAD"), None
        _say(request, f"following the redirect to {urlsplit(url).hostname} (routed again)")
    raise FetchFailed(NETWORK, f"more than {MAX_REDIRECTS} redirects")


async def _one(ctx: Context, request: FetchRequest, target: _Target, method: str, body,
               headers: list[tuple[str, str]], out: BinaryIO, progress) -> tuple[int, str | None]:
    dest = target.dest
    try:
        if request.exit is not None:  # forced: the rules' choice is skipped, the safety is not
            if request.exit not in ctx.plans:
                raise FetchFailed(USAGE, f"--exit {request.exit}: no such exit in the profile "
                                         f"(defined: {', '.join(sorted(ctx.plans))})")
            ctx.refuse_unsafe(dest)
            exit_name = request.exit
        else:
            decision = await ctx.route(dest)
            exit_name = decision.exit
            rule = f"rule {decision.rule.number}: {decision.rule.text}" if decision.rule else \
                "no rule matched: the default exit"
            _say(request, f"{dest}: {rule}")
        opened = await ctx.open(exit_name, dest)
    except Forbidden as error:
        raise FetchFailed(BLOCKED, error.message) from None
    except (ExitDown, ExitFailed, StageTimeout) as error:
        hop = isinstance(error, ExitDown) or getattr(error, "hop_failed", False)
        raise FetchFailed(EXIT_DOWN if hop else NETWORK, error.message) from None
    _say(request, f"{dest} through exit {'>'.join(opened.path)}: "
                  f"{opened.plan.describe()}")
    reader, writer = opened.stream
    try:
        if target.scheme == "https":
            limit = ctx.limits.connect_timeout
            try:
                async with asyncio.timeout(limit):
                    await writer.start_tls(ssl.create_default_context(),
                                           server_hostname=dest.host)
            except TimeoutError:
                raise FetchFailed(NETWORK, f"TLS with {dest.host} did not complete within "
                                           f"{limit:g} s (limits.connect_timeout)") from None
            except (ssl.SSLError, OSError) as error:
                raise FetchFailed(NETWORK, f"TLS with {dest.host} failed: {error}") from None
        return await _exchange(ctx, request, target, method, body, headers, reader, writer, out,
                               progress)
    except (OSError, asyncio.IncompleteReadError) as error:
        raise FetchFailed(NETWORK, f"{dest}: {error or type(error).__name__}") from None
    except ProxyError as error:
        raise FetchFailed(NETWORK, error.message) from None
    finally:
        writer.close()


def _request_head(ctx: Context, given: list[tuple[str, str]], target: _Target, method: str,
                  length: int | None) -> bytes:
    """Host, what the user gave, and Content-Length for a body: nothing of our own."""
    headers = [(b"Host", target.authority)]  # (a Host given with -H is replaced by sanitizing)
    headers += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in given]
    if length is not None:
        headers.append((b"Content-Length", str(length).encode()))
    origin = f"{target.scheme}://{target.authority.decode()}"
    clean = sanitize_request(headers, ctx.policy, target_origin=origin, host=target.authority)
    replace = ctx.policy.user_agent_replace
    if replace is not None and b"user-agent" not in {n.lower() for n, _ in clean}:
        clean.append((b"User-Agent", replace))
    return render_request_head(method.encode(), target.path, clean)


async def _exchange(ctx: Context, request: FetchRequest, target: _Target, method: str, body,
                    headers: list[tuple[str, str]], reader, writer, out: BinaryIO,
                    progress) -> tuple[int, str | None]:
    """One request and its response, which ends where its framing says (the caller closes)."""
    limits = ctx.limits
    writer.write(_request_head(ctx, headers, target, method, _body_length(body)))
    await _within(limits.idle_timeout, "took the request body", "idle", target,
                  _send_body(writer, body))
    parser = ResponseParser(method.encode())
    final: ResponseHead | None = None
    location, keep_body = None, False
    while True:
        if final is None:  # the server's answer: as the proxy waits for one
            data = await _within(limits.response_timeout, "answered", "response", target,
                                 reader.read(1 << 16))
        else:  # the body: as the proxy waits on an idle connection
            data = await _within(limits.idle_timeout, "sent more of the body", "idle", target,
                                 reader.read(1 << 16))
        for event in parser.feed(data) if data else parser.feed_eof():
            if isinstance(event, ResponseHead) and event.status >= 200:  # (not an interim one)
                final, location = event, _final_head(request, event, out, progress)
                # the body of a redirect we follow is not what the user asked for
                keep_body = not (request.follow and event.status in REDIRECTS and location)
            elif isinstance(event, Body) and keep_body:
                out.write(event.data)
                if progress is not None:
                    progress.advance(len(event.data))
            elif event is END and final is not None:
                out.flush()
                return final.status, location


async def _within(seconds: float, what: str, limit: str, target: _Target, step):
    """Await `step` for at most `seconds` (the profile's `limits.<limit>_timeout`)."""
    try:
        async with asyncio.timeout(seconds):
            return await step
    except TimeoutError:
        raise FetchFailed(NETWORK, f"{target.dest} never {what} within {seconds:g} s "
                                   f"(limits.{limit}_timeout)") from None


def _body_length(body: bytes | BinaryIO | None) -> int | None:
    """The request body's size (a file's from its end), None without one."""
    if body is None or isinstance(body, bytes):
        return None if body is None else len(body)
    body.seek(0, 2)
    length = body.tell()
    body.seek(0)
    return length


async def _send_body(writer, body: bytes | BinaryIO | None) -> None:
    """The request body as given: bytes at once, a file in pieces as the upstream takes them."""
    if isinstance(body, bytes):
        writer.write(body)
    elif body is not None:
        while data := body.read(1 << 16):
            writer.write(data)
            await writer.drain()
    await writer.drain()


def _final_head(request: FetchRequest, head: ResponseHead, out: BinaryIO,
                progress) -> str | None:
    """Act on the final response head: fail on an error status if asked (-f), write the head
    if asked (-i), start the progress bar; returns its Location, if any."""
    _say(request, f"HTTP {head.status} {head.reason.decode('latin-1')}")
    if request.fail and head.status >= 400:
        raise FetchFailed(HTTP_ERROR, f"the server answered {head.status}")
    if request.include_head:
        lines = b"HTTP/%s %d %s\r\n" % (head.version, head.status, head.reason)
        lines += b"".join(n + b": " + v + b"\r\n" for n, v in head.headers)
        out.write(lines + b"\r\n")
    if progress is not None:
        size = next((int(v) for n, v in head.headers
                     if n.lower() == b"content-length" and v.strip().isdigit()), None)
        progress.start(size)
    return next((v.decode("latin-1") for n, v in head.headers if n.lower() == b"location"), None)
