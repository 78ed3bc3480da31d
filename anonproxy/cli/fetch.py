"""`anonproxy fetch URL`: one request, in-process, through the same profile, rules, header
policy and exits as the proxy — a curl-like client for scripts.

It speaks HTTP/1.1 itself (llhttp via http1.py) over a stream that Context.open gives it, with
TLS on top for https:// (certificates verified with the system's trust store). Because it is
the client, the header policy applies inside TLS too. Each redirect (-L) is routed anew. What
it sends and how it reads the answer is fetch_http.py, shared with the lean fetch
(fetch_lean.py) that goes through a running `serve` of the same profile instead.

Invariants: those of fetch_http.py (nothing of our own is sent; credentials stay with their
origin; the body streams to its destination). Failures map to distinct exit codes. No step
waits longer than the profile allows the proxy: connect_timeout for the exit and TLS,
response_timeout for the answer, idle_timeout between pieces of the body.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from typing import BinaryIO

from anonproxy.cli.fetch_http import (
    BLOCKED,
    EXIT_DOWN,
    HTTP_ERROR,
    MAX_REDIRECTS,
    NETWORK,
    OK,
    REDIRECTS,
    USAGE,
    FetchFailed,
    FetchRequest,
    ResponseReader,
    Target,
    body_length,
    headers_for,
    parse_target,
    redirect,
    request_head,
    say,
    sends_credentials,
)
from anonproxy.exits.context import Context
from anonproxy.wire.errors import (
    ExitDown,
    ExitFailed,
    Forbidden,
    ProxyError,
    StageTimeout,
)

# (the names callers and tests import from here)
__all__ = ["BLOCKED", "EXIT_DOWN", "HTTP_ERROR", "MAX_REDIRECTS", "NETWORK", "OK", "REDIRECTS",
           "USAGE", "FetchFailed", "FetchRequest", "_target", "fetch", "sends_credentials"]
_target = parse_target


async def fetch(ctx: Context, request: FetchRequest, out: BinaryIO, progress=None) -> int:
    """Fetch `request.url` into `out`. Returns the final HTTP status; raises FetchFailed."""
    url, method, body = request.url, request.method.upper(), request.body
    first = parse_target(url)
    for _ in range(MAX_REDIRECTS + 1):
        target = parse_target(url)
        headers = headers_for(request, first, target)
        status, location = await _one(ctx, request, target, method, body, headers, out, progress)
        following = redirect(request, url, status, location, method, body)
        if following is None:
            return status
        url, method, body = following
    raise FetchFailed(NETWORK, f"more than {MAX_REDIRECTS} redirects")


async def _one(ctx: Context, request: FetchRequest, target: Target, method: str, body,
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
            say(request, f"{dest}: {rule}")
        opened = await ctx.open(exit_name, dest)
    except Forbidden as error:
        raise FetchFailed(BLOCKED, error.message) from None
    except (ExitDown, ExitFailed, StageTimeout) as error:
        hop = isinstance(error, ExitDown) or getattr(error, "hop_failed", False)
        raise FetchFailed(EXIT_DOWN if hop else NETWORK, error.message) from None
    say(request, f"{dest} through exit {'>'.join(opened.path)}: {opened.plan.describe()}")
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
        return await _exchange(ctx, target, method, body, headers, reader, writer,
                               ResponseReader(request, method, out, progress))
    except (OSError, asyncio.IncompleteReadError) as error:
        raise FetchFailed(NETWORK, f"{dest}: {error or type(error).__name__}") from None
    except ProxyError as error:
        raise FetchFailed(NETWORK, error.message) from None
    finally:
        writer.close()


async def _exchange(ctx: Context, target: Target, method: str, body,
                    headers: list[tuple[str, str]], reader, writer,
                    response: ResponseReader) -> tuple[int, str | None]:
    """One request and its response, which ends where its framing says (the caller closes)."""
    limits = ctx.limits
    writer.write(request_head(ctx.policy, headers, target, method, body_length(body)))
    await _within(limits.idle_timeout, "took the request body", "idle", target,
                  _send_body(writer, body))
    while True:
        if response.final is None:  # the server's answer: as the proxy waits for one
            data = await _within(limits.response_timeout, "answered", "response", target,
                                 reader.read(1 << 16))
        else:  # the body: as the proxy waits on an idle connection
            data = await _within(limits.idle_timeout, "sent more of the body", "idle", target,
                                 reader.read(1 << 16))
        done = response.feed(data)
        if done is not None:
            return done


async def _within(seconds: float, what: str, limit: str, target: Target, step):
    """Await `step` for at most `seconds` (the profile's `limits.<limit>_timeout`)."""
    try:
        async with asyncio.timeout(seconds):
            return await step
    except TimeoutError:
        raise FetchFailed(NETWORK, f"{target.dest} never {what} within {seconds:g} s "
                                   f"(limits.{limit}_timeout)") from None


async def _send_body(writer, body: bytes | BinaryIO | None) -> None:
    """The request body as given: bytes at once, a file in pieces as the upstream takes them."""
    if isinstance(body, bytes):
        writer.write(body)
    elif body is not None:
        while data := body.read(1 << 16):
            writer.write(data)
            await writer.drain()
    await writer.drain()


def fetch_command(args) -> int:
    """`anonproxy fetch` with the profile run here (argparse's `args`): the exit code."""
    from anonproxy import logs
    from anonproxy.cli.progress import Progress
    from anonproxy.cli.remote import announced_services
    from anonproxy.cli.tor_wait import TorNotReady, tors_for
    from anonproxy.cli.wrap import TOR_WAIT
    from anonproxy.config.profiles import load_profile, open_geo
    from anonproxy.exits.context import Context

    headers = []
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            print(f"anonproxy: fetch -H '{header}': write it as 'Name: value'", file=sys.stderr)
            return USAGE
        headers.append((name.strip(), value.strip()))
    body: BinaryIO | bytes | None = None
    if args.data is not None:
        if args.data.startswith("@"):
            try:
                body = open(args.data[1:], "rb")  # noqa: SIM115 - closed below
            except OSError as error:
                print(f"anonproxy: fetch -d {args.data}: {error.strerror}", file=sys.stderr)
                return USAGE
        else:
            body = args.data.encode()
    method = args.method or ("POST" if body is not None else "GET")
    loaded = load_profile(args.profile)
    logs.setup(False)
    # fetch says what went wrong itself, in one sentence (and, with -v, what happens)
    logs.log.setLevel("WARNING" if args.verbose else "CRITICAL")
    request = FetchRequest(args.url, method, headers, body, args.location or args.location_trusted,
                           args.include, args.fail, args.exit, args.verbose,
                           trusted=args.location_trusted)

    async def main() -> int:
        ctx = Context(loaded, loaded.profile.listen_address, geo=open_geo(loaded),
                      also_own=announced_services())
        try:
            async with tors_for(ctx, args.max_time or TOR_WAIT) as tors:
                for tor in tors:
                    if args.verbose and tor.shared_with:
                        print(f"* tor ({tor.spec.label()}): using the tor already running for "
                              f"these settings ({tor.shared_with})", file=sys.stderr)
                # a local file, opened once before the transfer: closed below
                out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115, ASYNC230
                progress = Progress.for_terminal(args.output) if args.output else None
                try:
                    async with asyncio.timeout(args.max_time):
                        await fetch(ctx, request, out, progress)
                finally:
                    if progress is not None:
                        progress.close()
                    if args.output:
                        out.close()
                return OK  # (--fail on status >= 400 already raised FetchFailed)
        except TorNotReady as error:
            print(f"anonproxy: fetch: {error}", file=sys.stderr)
            return EXIT_DOWN
        except FetchFailed as error:
            print(f"anonproxy: fetch: {error.message}", file=sys.stderr)
            return error.code
        except TimeoutError:  # (only --max-time sets one around the transfer)
            print(f"anonproxy: fetch: --max-time {args.max_time:g} s reached", file=sys.stderr)
            return NETWORK

    try:
        return asyncio.run(main())
    finally:
        if body is not None and not isinstance(body, bytes):  # the file opened for -d @path
            body.close()
