"""Command line: `anonproxy serve`, `anonproxy check` (argparse).

Invariants: a bad profile or argument ends with one message naming the file, key and value and
exit code 2, never a traceback; `serve` says loudly when traffic leaves with the user's own
address.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .address import AddressError, parse_authority
from .config import LoadedProfile, ProfileError, load_profile

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anonproxy",
        description="A local privacy proxy: HTTP, HTTPS (CONNECT) and SOCKS5 on one port.",
    )
    parser.add_argument("--version", action="version", version=f"anonproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--profile", default="default",
                       help="profile name (shipped or in ~/.config/anonproxy) or path to a .toml")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="override the profile's listen address (port 0: any free port)")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    check = commands.add_parser("check", help="validate a profile and summarise it")
    check.add_argument("profile", help="profile name or path")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(load_profile(args.profile))
        if args.command == "serve":
            return _serve(load_profile(args.profile), args.listen, args.verbose)
    except ProfileError as error:
        print(f"anonproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


def _summary(loaded: LoadedProfile) -> list[str]:
    p = loaded.profile
    lines = [f"profile {loaded.name} ({loaded.path})", f"  listen   {p.listen}"]
    for name, exit_ in p.exits.items():
        where = f"direct from {exit_.source}" if exit_.source else "direct"
        marker = "  (default)" if name == p.default else ""
        lines.append(f"  exit     {name}: {where}{marker}")
    h = p.headers
    lines.append(
        f"  headers  user_agent={_policy(h.user_agent)} accept_language={_policy(h.accept_language)}"
        f" referer={h.referer} cookie={h.cookie} client_hints={h.client_hints}"
    )
    return lines


def _policy(value) -> str:
    return value if isinstance(value, str) else "replace"


def _check(loaded: LoadedProfile) -> int:
    print("\n".join(_summary(loaded)))
    print("ok")
    return 0


def _serve(loaded: LoadedProfile, listen_text: str | None, verbose: bool) -> int:
    from . import logs
    from .server import ProxyServer, run_loop

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
        server = ProxyServer(loaded, listen)
        server.stop_on_signals()
        try:
            address = await server.start()
        except OSError as error:
            print(f"anonproxy: cannot listen on {server.listen}: {error.strerror}", file=sys.stderr)
            exit_code = 1
            return
        for line in _summary(loaded):
            logs.log.info(line)
        if loaded.profile.default in loaded.profile.exits:
            logs.log.warning(
                "the default exit '%s' is DIRECT: sites see this machine's address. Headers "
                "are stripped, but your address is not hidden.", loaded.profile.default
            )
        logs.log.info("listening on %s (HTTP, HTTPS via CONNECT, SOCKS5)", address)
        print(f"anonproxy listening on {address}", flush=True)
        await server.serve_until_signalled()

    run_loop(main)
    return exit_code
