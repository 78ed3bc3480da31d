"""Command line (argparse): serve, check, route, schema, geoip, ca, fetch, leaktest, exec, pac,
and the commands that steer a running proxy (status, reload, newnym, dashboard: remote.py).

Invariants: a bad profile or argument ends with one message naming the file, key and value and
exit code 2, never a traceback; `serve` says loudly when traffic leaves with the user's own
address.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from anonproxy import __version__
from anonproxy.cli import fetch_lean

if TYPE_CHECKING:  # (imported where used: a lean fetch must not pay for them)
    import argparse

    from anonproxy.config.profiles import LoadedProfile

EXIT_USAGE = 2
EXIT_REFUSED = 3  # as fetch's: the destination is refused
EXIT_BUG = 70  # EX_SOFTWARE: an unexpected error (said in one sentence)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away


def _host_port(text: str) -> str:
    """An option's HOST:PORT, checked as it is parsed (argparse then names the option)."""
    import argparse

    from anonproxy.wire.address import AddressError, parse_authority

    try:
        parse_authority(text)
    except AddressError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return text


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="anonproxy",
        description="A local privacy proxy: HTTP, HTTPS (CONNECT) and SOCKS5 on one port.",
    )
    parser.add_argument("--version", action="version", version=f"anonproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    profile_help = "profile name (shipped or in ~/.config/anonproxy) or path to a .toml"

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--profile", default="default", help=profile_help)
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="override the profile's listen address (port 0: any free port); "
                            "beyond loopback only if the profile has allow and/or auth")
    serve.add_argument("--admin", metavar="HOST:PORT|off",
                       help="the dashboard's address (default: the profile's admin key)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="processes sharing the port (default: the profile's workers, 1)")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    check = commands.add_parser("check", help="validate a profile and summarise it")
    check.add_argument("profile", help=profile_help)

    route = commands.add_parser("route", help="explain which rule and exit a URL would take")
    route.add_argument("--profile", default="default", help=profile_help)
    route.add_argument("url", help="http://host/..., https://host/... or host:port")

    lists = commands.add_parser("lists", help="fetch the profile's block lists that name a URL")
    lists.add_argument("action", choices=["update"])
    lists.add_argument("--profile", default="default", help=profile_help)

    commands.add_parser("schema", help="print the profile format as JSON Schema")

    geoip = commands.add_parser("geoip", help="the GeoIP database: info, or look up an address")
    geoip.add_argument("action", choices=["info", "lookup"])
    geoip.add_argument("address", nargs="?", help="an IP address (for lookup)")
    geoip.add_argument("--db", default="bundled", help='"bundled" or a path to a country .mmdb')

    ca = commands.add_parser(
        "ca", help="the local CA for HTTPS inspection: its path, install it, make a new one",
        description="path: print the CA certificate's path (made on first use in "
                    "$XDG_DATA_HOME/anonproxy/ca). install: add it to Chromium's and Firefox's "
                    "NSS databases with certutil (libnss3-tools). rotate: make a new CA.",
        epilog="exit status: 0 done, 1 the CA or a browser database could not be used, 2 usage")
    ca.add_argument("action", choices=["path", "install", "rotate"])

    fetch = commands.add_parser(
        "fetch", help="fetch a URL through the profile's exits (curl-like)",
        description="One request, in-process, through the profile's rules, header policy and "
                    "exits (no running proxy needed), curl-like. The body goes to stdout (or "
                    "-o FILE); messages go to stderr.",
        epilog="exit status: 0 done, 2 usage, 3 blocked by a rule or refused, 4 the exit is "
               "down (a hop failed, a pool is empty, tor is not ready), 5 network error "
               "(destination refused or unreachable, TLS, timeout, --max-time), 22 HTTP status "
               ">= 400 with -f")
    fetch.add_argument("url", help="http://... or https://... (verified against the system's "
                                   "trust store)")
    fetch.add_argument("--profile", default="default", help=profile_help)
    fetch.add_argument("-X", "--request", dest="method", help="method (default GET, POST with -d)")
    fetch.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    fetch.add_argument("-d", "--data", "--data-binary", dest="data",
                       help="request body; @FILE reads a file")
    fetch.add_argument("-o", "--output", help="write the body to FILE (default: stdout)")
    fetch.add_argument("-i", "--include", action="store_true", help="include the response head")
    fetch.add_argument("-L", "--location", action="store_true",
                       help="follow redirects, routing each hop again; Authorization and Cookie "
                            "given with -H go to the URL's own origin only")
    fetch.add_argument("--location-trusted", action="store_true",
                       help="like -L, and Authorization and Cookie follow to other origins too, "
                            "but never over http after https (stricter than curl)")
    fetch.add_argument("-f", "--fail", action="store_true", help="exit 22 on HTTP status >= 400")
    fetch.add_argument("--max-time", type=_seconds, metavar="S",
                       help="seconds for the whole transfer (and the wait for tor)")
    fetch.add_argument("--exit", help="use this exit instead of the rules' choice")
    fetch.add_argument("-v", "--verbose", action="store_true",
                       help="say which rule, exit and hops each request takes")

    leak = commands.add_parser(
        "leaktest", help="where each exit really leaves: echo services fetched through it",
        description="Fetch echo services (what is my IP) through each exit of the profile, as "
                    "fetch --exit does, and compare the country of the address they saw with "
                    "the country the exit declares. A pool's members are tested for it.",
        epilog="exit status: 0 every tested exit is consistent, 1 one is not (MISMATCH or "
               "FAILED), 2 usage")
    leak.add_argument("--profile", default="default", help=profile_help)
    leak.add_argument("--exit", action="append", default=[], metavar="NAME",
                      help="test this exit only (repeatable; a pool: its members)")
    leak.add_argument("--echo", action="append", default=[], metavar="URL",
                      help="an echo service answering with the caller's address, as plain "
                           "text or JSON (repeatable; default: the profile's [verify] echo)")
    leak.add_argument("--json", action="store_true", dest="as_json",
                      help="print a JSON list: exit, address, country, declared, ok, error")

    run = commands.add_parser("exec", help="run a program with an ephemeral proxy of its own")
    run.add_argument("--profile", default="default", help=profile_help)
    run.add_argument("--summary", action="store_true",
                     help="afterwards, list the sites contacted, exits used and what was blocked")
    run.add_argument("--strict", action="store_true",
                     help="confine the program (Linux): its proxy is its only network and "
                          "local services need a rule; no unix sockets; anonproxy's files hidden")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")

    pac = commands.add_parser(
        "pac", help="print a PAC file that sends a browser through the proxy",
        description="Print the PAC file a browser can use (SOCKS5 first, then HTTP, never "
                    "DIRECT). The running proxy also serves it at http://HOST:PORT/proxy.pac.")
    pac.add_argument("--listen", default="127.0.0.1:8118", metavar="HOST:PORT", type=_host_port,
                     help="the proxy's listen address the file names (default 127.0.0.1:8118)")

    status = commands.add_parser("status", help="a running proxy's profile, exits and traffic")
    reload = commands.add_parser("reload", help="make a running proxy re-read its profile")
    newnym = commands.add_parser("newnym", help="new Tor identity: new circuits for new streams")
    newnym.add_argument("--site", help="only this site (registrable domain) gets new circuits")
    dashboard = commands.add_parser(
        "dashboard", help="open a running proxy's dashboard, logged in (a one-time link)",
        description="Ask the running proxy's dashboard (with the token only you can read in "
                    "the runtime directory) for a one-time login link, and open it in the "
                    "browser.")
    dashboard.add_argument("--print", action="store_true", dest="print_only",
                           help="print the link instead of opening a browser")
    cache = commands.add_parser("cache", help="a running proxy's response cache: clear it")
    cache.add_argument("action", choices=["clear"])
    for command in (status, reload, newnym, dashboard, cache):
        command.add_argument("--listen", default="127.0.0.1:8118", metavar="HOST:PORT",
                             type=_host_port,
                             help="the running proxy's listen address (default 127.0.0.1:8118)")
        command.add_argument("--admin", metavar="HOST:PORT", type=_host_port,
                             help="its dashboard's address (default: the one it announced)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; whatever happens, the user gets one sentence, never a traceback
    (ANONPROXY_DEBUG=1 shows it for an unexpected error). A fetch that a running serve of
    its profile can carry goes through it, before anything else is imported (fetch_lean)."""
    try:
        lean = fetch_lean.run(sys.argv[1:] if argv is None else argv)
        if lean is not None:
            return lean
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`anonproxy schema | head`): nothing more to say, to anyone;
        # stdout is pointed at /dev/null so that the interpreter's own flush at exit is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        print("anonproxy: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # the last line of defence: no traceback
        if os.environ.get("ANONPROXY_DEBUG"):
            raise
        print(f"anonproxy: unexpected error ({type(error).__name__}: {error}); this is a bug, "
              "please report it (ANONPROXY_DEBUG=1 shows where it happened)", file=sys.stderr)
        return EXIT_BUG


def _main(argv: list[str] | None) -> int:
    import json

    from anonproxy.config.profiles import ProfileError, load_profile
    from anonproxy.exits.tor_process import TorUnavailable
    from anonproxy.wire.address import AddressError, parse_authority

    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(load_profile(args.profile))
        if args.command == "serve":
            from anonproxy.cli.serve import serve

            return serve(args.profile, args.listen, args.admin, args.workers, args.verbose)
        if args.command == "route":
            return _route(load_profile(args.profile), args.url)
        if args.command == "lists":
            from anonproxy.cli.lists import update

            return update(load_profile(args.profile, lists=False))
        if args.command == "schema":
            from anonproxy.config.models import profile_schema

            print(json.dumps(profile_schema(), indent=2))
            return 0
        if args.command == "geoip":
            from anonproxy.cli.geoip import geoip

            return geoip(args.action, args.address, args.db)
        if args.command == "ca":
            from anonproxy.cli.ca import ca

            return ca(args.action)
        if args.command in ("status", "reload", "newnym", "dashboard", "cache"):
            from anonproxy.cli import remote

            admin, password = remote.admin_of(args.admin, args.listen)
            if args.command == "cache":
                return remote.cache_clear(admin, password, args.listen)
            if args.command == "dashboard":
                return remote.dashboard(admin, password, args.listen, args.print_only)
            if args.command == "status":
                return remote.status(admin, password, args.listen)
            if args.command == "reload":
                return remote.reload(admin, password, args.listen, args.admin is not None)
            return remote.newnym(admin, password, args.listen, args.site,
                                 args.admin is not None)
        if args.command == "fetch":
            from anonproxy.cli.fetch import fetch_command

            return fetch_command(args)
        if args.command == "exec":
            return _exec(args)
        if args.command == "leaktest":
            from anonproxy.cli.leaktest import leaktest

            return leaktest(load_profile(args.profile), args.exit, args.echo, args.as_json)
        if args.command == "pac":
            from anonproxy.inbound.pac import render_pac

            print(render_pac(parse_authority(args.listen)), end="")
            return 0
    except ProfileError as error:
        print(f"anonproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TorUnavailable as error:
        print(f"anonproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    except AddressError as error:
        print(f"anonproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


def _check(loaded: LoadedProfile) -> int:
    from anonproxy.cli.explain import summarize
    from anonproxy.config.profiles import open_geo
    from anonproxy.exits.context import Context

    # a missing or broken GeoIP database is a profile error too
    ctx = Context(loaded, loaded.profile.listen_address, geo=open_geo(loaded))
    print("\n".join(summarize(loaded, ctx.plans, lists=True)))
    print("ok")
    return 0


def _route(loaded: LoadedProfile, url: str) -> int:
    import asyncio
    from urllib.parse import urlsplit

    from anonproxy.cli.explain import explain_blocklists, explain_route
    from anonproxy.cli.remote import announced_services
    from anonproxy.config.profiles import open_geo
    from anonproxy.exits.context import Context
    from anonproxy.wire.address import AddressError, parse_authority
    from anonproxy.wire.errors import Forbidden

    path = b"/"
    try:
        if "://" in url:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            default = {"http": 80, "https": 443}.get(scheme)
            if default is None or not parts.hostname:
                raise AddressError("give an http:// or https:// URL, or host:port")
            dest = parse_authority(parts.netloc.rsplit("@", 1)[-1], default)
            path = (parts.path or "/").encode() + (b"?" + parts.query.encode() if parts.query
                                                   else b"")
        else:
            scheme, dest = "tunnel", parse_authority(url)
    except (AddressError, ValueError) as error:
        print(f"anonproxy: route {url}: {error}", file=sys.stderr)
        return EXIT_USAGE
    listed, blocked = explain_blocklists(loaded.blocker, dest, scheme, path)  # before rules
    if blocked:
        print("\n".join([f"destination  {dest}", *listed]))
        return 0
    admin = loaded.profile.admin
    ctx = Context(loaded, loaded.profile.listen_address, geo=open_geo(loaded),
                  admin=admin.address if admin is not None else None,
                  also_own=announced_services())
    try:  # refused as the proxy would: special-use names, loops, link-local addresses
        decision = asyncio.run(ctx.decide(dest))
        ctx.refuse_unsafe(dest, decision.rule)
    except Forbidden as error:
        print(f"anonproxy: route {url}: {error.message}", file=sys.stderr)
        return EXIT_REFUSED
    explained = explain_route(ctx.plans, decision, dest, scheme, ctx.policy,
                              loaded.profile.resolve)
    explained[1:1] = listed
    print("\n".join(explained))
    return 0


def _exec(args) -> int:
    import asyncio

    from anonproxy import logs
    from anonproxy.cli.wrap import StrictUnavailable, require_linux, run_wrapped
    from anonproxy.config.profiles import load_profile

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("anonproxy: exec: give a command after --", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.strict:
            require_linux()  # before the profile is read or anything started
        loaded = load_profile(args.profile)
        logs.setup(False)
        logs.log.setLevel("WARNING")
        return asyncio.run(run_wrapped(loaded, argv, summary=args.summary, strict=args.strict))
    except StrictUnavailable as error:
        print(f"anonproxy: exec --strict: {error}", file=sys.stderr)
        return EXIT_USAGE



