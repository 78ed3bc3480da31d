"""The lean `anonproxy fetch`: when `anonproxy serve` runs the same profile (announce.py),
fetch goes through that proxy — CONNECT, then TLS for https://, and the request inside — instead
of loading the profile, its models and its exits itself, so that it starts in a fraction of the
time for scripts that call it in a loop. The proxy makes the same decisions from the same
profile: the rules, the exit, and what to refuse (its 403 is exit code 3 here).

What it sends and writes is fetch_http.py's, as for the full fetch (fetch.py): the same request
bytes (Host, what -H gives as the header policy leaves it, Content-Length for a body, the
profile's User-Agent; nothing of our own), the same output, the same sentences and exit codes.
This module decides whether it is taken; fetch_tunnel.py does the rest on the wire.

Invariants:
- Taken only for what it does exactly as the full fetch: the URL, --profile, -X, -H, -d, -o,
  -i, -L, --location-trusted, -f and --max-time, in the forms argparse reads the same way
  (anything else — --exit, -v, an abbreviation, a value that starts with "-", a progress bar
  on a terminal — is the full fetch's), and only through a live serve that announced the very
  profile file fetch would read, unchanged, without credentials; a destination on a port that
  a running serve announced is left to the full fetch too, which decides what it reaches.
- Until the proxy answers the first CONNECT with 200, nothing has reached the destination but
  a connection, so any doubt until then (no proxy there, no answer, a refusal other than 403
  or 504) hands the command to the full fetch, which then does and says what it does. After
  that it is ours to finish: every failure is one sentence and an exit code, no traceback.
- Plain http:// goes through CONNECT too, not as a request to the proxy: the proxy's answers
  (its errors) are then never taken for the origin's, and the origin's answer arrives as the
  origin sent it (for -i) — as the full fetch speaks to the origin over the exit's stream.
- Module level imports sys only: main() asks run() first, for every command.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import BinaryIO

    from anonproxy.cli.announce import Announced

FLAGS = {"-i": "include", "--include": "include", "-f": "fail", "--fail": "fail",
         "-L": "follow", "--location": "follow", "--location-trusted": "trusted"}
VALUED = {"--profile": "profile", "-X": "method", "--request": "method", "-H": "header",
          "--header": "header", "-d": "data", "--data": "data", "--data-binary": "data",
          "-o": "output", "--output": "output", "--max-time": "max_time"}

class _Options:
    """The fetch options the lean path takes, as argparse would read them."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.profile = "default"
        self.method: str | None = None
        self.header: list[str] = []
        self.data: str | None = None
        self.output: str | None = None
        self.max_time: float | None = None
        self.include = self.fail = self.follow = self.trusted = False

    def set(self, key: str, value: str) -> bool:
        """Take an option's value; False when argparse would refuse it."""
        if key == "header":
            self.header.append(value)
        elif key == "max_time":
            try:
                seconds = float(value)
            except ValueError:
                return False
            if not (seconds > 0 and seconds != float("inf")):
                return False
            self.max_time = seconds
        else:
            setattr(self, key, value)
        return True


def options(args: list[str]) -> _Options | None:
    """The arguments after `fetch`, or None when they hold anything the lean path does not
    take (or argparse would read differently, or refuse)."""
    found = _Options()
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in FLAGS:
            setattr(found, FLAGS[arg], True)
            continue
        name, equals, value = arg.partition("=")
        if arg.startswith("--") and equals and name in VALUED:
            pass  # --name=value
        elif arg in VALUED and i < len(args) and not args[i].startswith("-"):
            name, value = arg, args[i]
            i += 1
        elif arg[:2] in VALUED and len(arg) > 2 and arg[2] != "=" and not arg.startswith("--"):
            name, value = arg[:2], arg[2:]  # -HName: value
        elif arg.startswith("-") or found.url is not None:
            return None  # another option, a missing value, or a second URL
        else:
            found.url = arg
            continue
        if not found.set(VALUED[name], value):
            return None
    return found if found.url is not None else None


def run(argv: list[str]) -> int | None:
    """`anonproxy ARGV` through a running serve when it is a fetch the lean path takes and
    such a serve runs its profile: the exit code; None to run the command the full way."""
    if not argv or argv[0] != "fetch":
        return None
    given = options(argv[1:])
    if given is None or (given.output is not None and sys.stderr.isatty()):
        return None  # (a file on a terminal: the full fetch shows a progress bar)
    from anonproxy.cli.announce import find

    proxy = find(given.profile)
    if proxy is None:
        return None
    return _fetch(given, proxy)


def _fetch(given: _Options, proxy: Announced) -> int | None:
    """The fetch `given` asks for, through `proxy`: its exit code, or None to hand over."""
    prepared = _prepare(given, proxy)
    return None if prepared is None else _transfer(given, proxy, *prepared)


def _prepare(given: _Options, proxy: Announced):
    """(request, first target, our own services) for the fetch, or None when the full fetch
    should say or decide something instead."""
    from anonproxy.cli.announce import services
    from anonproxy.cli.fetch_http import FetchFailed, FetchRequest, parse_target
    from anonproxy.wire.headers import HeaderPolicy

    if set(proxy.policy) != set(HeaderPolicy.__dataclass_fields__):
        return None  # (a serve of another version: its policy is not all this one knows)
    headers = []
    for header in given.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            return None  # (the full fetch says how to write it)
        headers.append((name.strip(), value.strip()))
    assert given.url is not None
    try:
        first = parse_target(given.url)
    except FetchFailed:
        return None  # (a bad URL: the full fetch says so)
    # what the full fetch refuses as ours: the profile's listen address, running serves'
    own = [(*proxy.listen, "listener"), *((host, port, "other") for host, port in services())]
    if any(port == first.dest.port for _, port, _ in own):
        return None  # the full fetch decides whether that is one of them
    body: bytes | BinaryIO | None = None
    if given.data is not None:
        try:
            body = open(given.data[1:], "rb") if given.data.startswith("@") \
                else given.data.encode()  # noqa: SIM115 - (a file: closed by _transfer)
        except OSError:
            return None
    request = FetchRequest(given.url, given.method or ("POST" if body is not None else "GET"),
                           headers, body, given.follow or given.trusted, given.include,
                           given.fail, trusted=given.trusted)
    return request, first, own


def _transfer(given: _Options, proxy: Announced, request, first, own) -> int | None:
    """Run the prepared fetch through `proxy`: its exit code, or None to hand over."""
    from anonproxy.cli.fetch_http import NETWORK, OK, FetchFailed
    from anonproxy.cli.fetch_tunnel import Clock, HandOver, MaxTime, ProxiedFetch
    from anonproxy.wire.headers import HeaderPolicy

    body = request.body
    out = None
    try:
        out = open(given.output, "wb") if given.output else sys.stdout.buffer  # noqa: SIM115
        ProxiedFetch(request, first, proxy, HeaderPolicy(**proxy.policy), out, own,
                     Clock(given.max_time)).run()
        return OK  # (-f on a status >= 400 raised FetchFailed)
    except HandOver:
        return None
    except FetchFailed as error:
        print(f"anonproxy: fetch: {error.message}", file=sys.stderr)
        return error.code
    except MaxTime:
        print(f"anonproxy: fetch: --max-time {given.max_time:g} s reached", file=sys.stderr)
        return NETWORK
    except OSError:
        if out is None:  # -o could not be opened: the full fetch says so its way
            return None
        raise
    finally:
        if given.output and out is not None:
            out.close()
        if body is not None and not isinstance(body, bytes):
            body.close()
