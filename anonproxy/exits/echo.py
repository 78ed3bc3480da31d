"""An exit measured: echo services ("what is my IP") fetched through it, their answers read
(policy/verify.py) and the address's country looked up, for a verdict against what the exit
declares.

`check_exit` is shared by `anonproxy leaktest` (which fetches as `anonproxy fetch --exit`
does) and the running proxy's enforcement (runtime/server.py, with `get_through` here: one GET
over the exit, as the proxy forwards a request). What an exit declares comes from the keys
every kind's status() has (`country`: one code, or a Tor exit's list joined by ", "), so no
kind is named here.

Invariants: an echo request only ever travels through the exit under test, by name (never
directly, never resolved here), with the profile's header policy applied and nothing of our
own added; no measurement raises: each failure is a sentence in the verdict; the answer read
is bounded (policy/verify.py's MAX_BODY) and so is the time (connect_timeout to open, then
response_timeout for the whole answer).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from anonproxy.policy.verify import (
    DEFAULT_ECHO,
    MAX_BODY,
    TOR_ECHO,
    EchoError,
    Measurement,
    Verdict,
    judge,
    parse_echo,
)
from anonproxy.wire.address import Address, AddressError, parse_authority
from anonproxy.wire.errors import ProxyError
from anonproxy.wire.headers import sanitize_request
from anonproxy.wire.http1 import ResponseParser
from anonproxy.wire.messages import END, Body, ResponseHead
from anonproxy.wire.render import render_request_head

if TYPE_CHECKING:
    from anonproxy.exits.context import Context

# (ctx, exit name, url) -> the answer's body; raises EchoFailed (or ProxyError, OSError)
Getter = Callable[["Context", str, str], Awaitable[bytes]]


class EchoFailed(Exception):
    """An echo request failed (one sentence)."""


def declared(ctx: Context, name: str) -> tuple[str, ...]:
    """The countries exit `name` declares (its status()'s `country`), () when none."""
    country = ctx.plans[name].status(ctx.dialer.env, None).get("country")
    return tuple(c.strip().upper() for c in (country or "").split(",") if c.strip())


def echo_urls(ctx: Context, name: str) -> tuple[str, ...]:
    """The profile's [verify] echo URLs; without them the defaults (Tor's own check service
    for an exit through tor)."""
    given = ctx.profile.verify.echo
    if given:
        return tuple(given)
    return TOR_ECHO if ctx.plans[name].tor_spec is not None else DEFAULT_ECHO


def target(url: str) -> tuple[str, Address, bytes]:
    """(scheme, destination, origin-form path) of an http(s) echo URL."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        default = {"http": 80, "https": 443}.get(scheme)
        if default is None or not parts.hostname:
            raise EchoFailed(f"{url}: give an http:// or https:// URL")
        dest = parse_authority(parts.netloc.rsplit("@", 1)[-1], default)
    except (AddressError, ValueError) as error:  # (urlsplit's too: "Invalid IPv6 URL")
        raise EchoFailed(f"{url}: {error}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, dest, path.encode()


async def check_exit(ctx: Context, name: str, urls: tuple[str, ...],
                     get: Getter) -> Verdict:
    """Fetch each of `urls` through exit `name` and judge what they saw."""
    measured = []
    for url in urls:
        try:
            echo = parse_echo(await get(ctx, name, url))
        except (EchoFailed, EchoError) as error:
            measured.append(Measurement(url, error=str(error)))
            continue
        except ProxyError as error:
            measured.append(Measurement(url, error=error.message))
            continue
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            measured.append(Measurement(url, error=str(error) or type(error).__name__))
            continue
        country = ctx.country_of(Address(echo.address, 0).ip)
        measured.append(Measurement(url, echo, country))
    return judge(name, declared(ctx, name), measured)


async def check_enforced(ctx: Context, name: str) -> Verdict:
    """The running proxy's check of exit `name`: its echo URLs, fetched by get_through."""
    return await check_exit(ctx, name, echo_urls(ctx, name), get_through)


async def get_through(ctx: Context, name: str, url: str) -> bytes:
    """One GET of `url` through exit `name` (even one verification refuses: this is the
    check), TLS for https; the body of a 200 answer."""
    scheme, dest, path = target(url)
    ctx.refuse_unsafe(dest)
    limits = ctx.limits
    opened = await ctx.dialer.open(name, dest, unverified=True)
    reader, writer = opened.stream
    try:
        async with asyncio.timeout(limits.response_timeout):
            if scheme == "https":
                await writer.start_tls(ssl.create_default_context(), server_hostname=dest.host)
            authority = (dest.host if dest.port == {"http": 80, "https": 443}[scheme]
                         else f"{dest.host}:{dest.port}").encode()
            headers = sanitize_request([(b"Host", authority)], ctx.policy,
                                       target_origin=f"{scheme}://{authority.decode()}",
                                       host=authority)
            replace = ctx.policy.user_agent_replace
            if replace is not None:
                headers.append((b"User-Agent", replace))
            writer.write(render_request_head(b"GET", path, headers))
            return await _answer(reader)
    except TimeoutError:
        raise EchoFailed(f"{url}: no answer within {limits.response_timeout:g} s "
                         "(limits.response_timeout)") from None
    except ssl.SSLError as error:
        raise EchoFailed(f"{url}: TLS failed: {error}") from None
    finally:
        writer.close()


async def _answer(reader: asyncio.StreamReader) -> bytes:
    parser = ResponseParser(b"GET")
    status, body = 0, b""
    while True:
        data = await reader.read(1 << 16)
        events = parser.feed(data) if data else parser.feed_eof()
        for event in events:
            if isinstance(event, ResponseHead) and event.status >= 200:
                status = event.status
            elif isinstance(event, Body):
                body += event.data
                if len(body) > MAX_BODY:
                    raise EchoFailed(f"the answer is longer than {MAX_BODY} bytes")
            elif event is END and status:
                if status != 200:
                    raise EchoFailed(f"the echo service answered HTTP {status}")
                return body
