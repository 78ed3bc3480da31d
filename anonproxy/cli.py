"""Command line (argparse): serve, check, route, schema, geoip, reload.

Invariants: a bad profile or argument ends with one message naming the file, key and value and
exit code 2, never a traceback; `serve` says loudly when traffic leaves with the user's own
address.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .address import Address, AddressError, check_host, parse_authority
from .profiles import LoadedProfile, ProfileError, load_profile
from .tor import TorUnavailable

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
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
                       help="override the profile's listen address (port 0: any free port)")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    check = commands.add_parser("check", help="validate a profile and summarise it")
    check.add_argument("profile", help=profile_help)

    route = commands.add_parser("route", help="explain which rule and exit a URL would take")
    route.add_argument("--profile", default="default", help=profile_help)
    route.add_argument("url", help="http://host/..., https://host/... or host:port")

    commands.add_parser("schema", help="print the profile format as JSON Schema")

    geoip = commands.add_parser("geoip", help="the GeoIP database: info, or look up an address")
    geoip.add_argument("action", choices=["info", "lookup"])
    geoip.add_argument("address", nargs="?", help="an IP address (for lookup)")
    geoip.add_argument("--db", default="bundled", help='"bundled" or a path to a country .mmdb')

    reload = commands.add_parser("reload", help="make a running proxy re-read its profile")
    newnym = commands.add_parser("newnym", help="new Tor identity: new circuits for new streams")
    newnym.add_argument("--site", help="only this site (registrable domain) gets new circuits")
    for command in (reload, newnym):
        command.add_argument("--listen", default="127.0.0.1:8118", metavar="HOST:PORT",
                             help="the running proxy's listen address (default 127.0.0.1:8118)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(load_profile(args.profile))
        if args.command == "serve":
            return _serve(args.profile, args.listen, args.verbose)
        if args.command == "route":
            return _route(load_profile(args.profile), args.url)
        if args.command == "schema":
            from .config import profile_schema

            print(json.dumps(profile_schema(), indent=2))
            return 0
        if args.command == "geoip":
            return _geoip(args.action, args.address, args.db)
        if args.command == "reload":
            return _signal_proxy(args.listen, signal.SIGHUP, "re-read its profile")
        if args.command == "newnym":
            return _newnym(args.listen, args.site)
    except ProfileError as error:
        print(f"anonproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TorUnavailable as error:
        print(f"anonproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


def _plans(loaded: LoadedProfile):
    from .exits import plan_from_config

    return {name: plan_from_config(name, e) for name, e in loaded.profile.exits.items()}


def _check(loaded: LoadedProfile) -> int:
    from .explain import summarize
    from .server import open_geo

    open_geo(loaded)  # a missing or broken database is a profile error too
    print("\n".join(summarize(loaded, _plans(loaded))))
    print("ok")
    return 0


def _route(loaded: LoadedProfile, url: str) -> int:
    from urllib.parse import urlsplit

    from .context import Context
    from .explain import explain_route
    from .server import open_geo

    try:
        if "://" in url:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            default = {"http": 80, "https": 443}.get(scheme)
            if default is None or not parts.hostname:
                raise AddressError("give an http:// or https:// URL, or host:port")
            dest = parse_authority(parts.netloc.rsplit("@", 1)[-1], default)
        else:
            scheme, dest = "tunnel", parse_authority(url)
    except (AddressError, ValueError) as error:
        print(f"anonproxy: route {url}: {error}", file=sys.stderr)
        return EXIT_USAGE
    ctx = Context(loaded, loaded.profile.listen_address, geo=open_geo(loaded))
    decision = asyncio.run(ctx.decide(dest))
    print("\n".join(explain_route(ctx.plans, decision, dest, scheme, ctx.policy,
                                  loaded.profile.resolve)))
    return 0


def _geoip(action: str, address: str | None, db: str) -> int:
    import ipaddress
    import time

    from .geo import GeoDB, GeoError

    try:
        geo = GeoDB.open(db)
    except GeoError as error:
        print(f"anonproxy: geoip --db {db}: {error}", file=sys.stderr)
        return EXIT_USAGE
    if geo is None:
        print("anonproxy: geoip --db none: no database", file=sys.stderr)
        return EXIT_USAGE
    if action == "info":
        info = geo.info()
        built = time.strftime("%Y-%m-%d", time.gmtime(int(info["built"])))
        print(f"path         {info['path']}\ntype         {info['type']}\n"
              f"description  {info['description']}\nbuilt        {built}\n"
              f"size         {int(info['size']) / 1e6:.1f} MB\nnodes        {info['nodes']}")
        return 0
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        print(f"anonproxy: geoip lookup: '{address or ''}' is not an IP address "
              "(names are never resolved here)", file=sys.stderr)
        return EXIT_USAGE
    print(f"{ip} {geo.country(ip) or 'unknown'}")
    return 0


def pidfile_for(listen: Address) -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anonproxy" / f"serve-{listen.host}-{listen.port}.pid"


def _signal_proxy(listen_text: str, sig: signal.Signals, what: str) -> int:
    try:
        listen = parse_authority(listen_text)
    except AddressError as error:
        print(f"anonproxy: --listen {listen_text}: {error}", file=sys.stderr)
        return EXIT_USAGE
    path = pidfile_for(listen)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, sig)
    except (OSError, ValueError):
        print(f"anonproxy: no running proxy on {listen} (no usable {path})", file=sys.stderr)
        return 1
    print(f"asked the proxy on {listen} (pid {pid}) to {what}; its log says how it went")
    return 0


def _newnym(listen_text: str, site: str | None) -> int:
    from .server import newnym_request_file
    from .sites import site_of

    if site:
        try:
            listen = parse_authority(listen_text)
            site = site_of(check_host(site))
        except AddressError as error:
            print(f"anonproxy: newnym: {error}", file=sys.stderr)
            return EXIT_USAGE
        path = newnym_request_file(listen)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(site + "\n")
    what = f"give {site} new circuits" if site else "make a new identity (all sites)"
    return _signal_proxy(listen_text, signal.SIGUSR1, what)


def _serve(profile_ref: str, listen_text: str | None, verbose: bool) -> int:
    from . import logs
    from .explain import summarize
    from .server import ProxyServer, run_loop

    loaded = load_profile(profile_ref)
    listen = None
    if listen_text:
        try:
            listen = parse_authority(listen_text, listening=True)
        except AddressError as error:
            print(f"anonproxy: --listen {listen_text}: {error}", file=sys.stderr)
            return EXIT_USAGE
    logs.setup(verbose)
    exit_code = 0

    async def main() -> None:
        nonlocal exit_code
        server = ProxyServer(loaded, listen, reload=lambda: load_profile(profile_ref))
        server.stop_on_signals()
        try:
            address = await server.start()
        except OSError as error:
            print(f"anonproxy: cannot listen on {server.listen}: {error.strerror}", file=sys.stderr)
            exit_code = 1
            return
        for line in summarize(loaded, server.ctx.plans):
            logs.log.info(line)
        server.warn_if_direct()
        pidfile = pidfile_for(address)
        try:
            pidfile.parent.mkdir(parents=True, exist_ok=True)
            pidfile.write_text(f"{os.getpid()}\n")
        except OSError:
            pidfile = None
        logs.log.info("listening on %s (HTTP, HTTPS via CONNECT, SOCKS5)", address)
        print(f"anonproxy listening on {address}", flush=True)
        try:
            await server.serve_until_signalled()
        finally:
            if pidfile is not None:
                pidfile.unlink(missing_ok=True)

    run_loop(main)
    return exit_code
