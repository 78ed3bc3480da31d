"""The serve command: the profile with --listen, --admin and --workers applied, the proxy and
its dashboard started, the pid and dashboard files written for status/reload/newnym, and a
one-time login URL for the dashboard printed.

Invariants: --listen is checked as the profile's `listen` key is (profiles.listen_problems)
before anything is bound or forked; the runtime directory is checked (ours, 0700) before
anything is written there, and one that belongs to someone else stops serve.

Exit codes: 0 after a clean stop, 1 when an address cannot be bound, 2 for a bad argument.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from pathlib import Path

from anonproxy.cli import announce
from anonproxy.config.models import Admin
from anonproxy.config.profiles import admin_problems, listen_problems, load_profile
from anonproxy.wire.address import Address, AddressError, parse_authority

EXIT_USAGE = 2


def serve(profile_ref: str, listen_text: str | None, admin_text: str | None,
          workers: int | None, verbose: bool) -> int:
    stamped = announce.stamp_of(profile_ref)  # the profile file before it is read
    loaded = load_profile(profile_ref)
    workers, workers_source = _workers(loaded, workers)
    problem = _workers_problem(loaded, workers)
    if problem is not None:
        print(f"anonproxy: {workers_source}: {problem}", file=sys.stderr)
        return EXIT_USAGE

    from anonproxy import logs
    from anonproxy.admin.control import (
        RuntimeDirError,
        prepare_runtime_dir,
        write_private,
    )
    from anonproxy.cli.explain import summarize
    from anonproxy.cli.remote import adminfile_for, pidfile_for
    from anonproxy.runtime.server import ProxyServer

    try:
        listen, admin = _overrides(loaded, listen_text, admin_text)
    except AddressError as error:
        print(f"anonproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup(verbose)
    try:
        note = prepare_runtime_dir()
    except RuntimeDirError as error:
        print(f"anonproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        note = (f"cannot create the runtime directory ({error.strerror}); status, reload, "
                "newnym and dashboard will not find this proxy")
    if note:
        logs.log.warning("%s", note)
    exit_code = 0
    sock, children = None, []
    if workers != 1:
        from anonproxy.runtime.workers import WorkersUnavailable

        try:
            sock, children, admin = _start_workers(loaded, profile_ref, listen, workers, admin)
        except WorkersUnavailable as error:
            print(f"anonproxy: {workers_source}: {error}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as error:
            where = listen or loaded.profile.listen_address
            print(f"anonproxy: cannot listen on {where}: {error.strerror}", file=sys.stderr)
            return 1

    async def main() -> None:
        nonlocal exit_code
        server = ProxyServer(loaded, listen, profile_ref=profile_ref, admin=admin)
        server.children = children
        server.stop_on_signals()
        try:
            address = await server.start(sock=sock)
        except OSError as error:
            print(f"anonproxy: cannot listen on {server.listen}: {error.strerror}", file=sys.stderr)
            exit_code = 1
            return
        try:
            dashboard = await server.start_admin()
        except OSError as error:
            print(f"anonproxy: cannot start the dashboard on {server.admin_address}: "
                  f"{error.strerror} (use --admin HOST:PORT, or --admin off)", file=sys.stderr)
            await server.stop()
            exit_code = 1
            return
        for line in summarize(loaded, server.ctx.plans, bound=(address, dashboard)):
            logs.log.info(line)
        server.contexts.warn_if_direct()
        pidfile: Path | None  # None: not written, nothing to remove
        pidfile, adminfile = pidfile_for(address), adminfile_for(address)
        try:
            write_private(pidfile, f"{os.getpid()}\n")
            if dashboard is not None:
                write_private(adminfile, f"{dashboard.authority(0)}\n")
            else:  # one left by a proxy that was killed on this address must not mislead
                adminfile.unlink(missing_ok=True)
        except (OSError, RuntimeDirError):
            pidfile = None
        announced = _say_listening(server, loaded, address, dashboard, stamped)
        settle_memory()
        try:
            await server.serve_until_signalled()
        finally:
            if pidfile is not None:
                pidfile.unlink(missing_ok=True)
                adminfile.unlink(missing_ok=True)
            if announced is not None:
                announced.unlink(missing_ok=True)

    run_loop(main)
    return exit_code


def _workers(loaded, option: int | None) -> tuple[int, str]:
    """How many processes serve the port, and what asked for that number (the option, or the
    profile's file and key), which an error about the workers names."""
    if option is not None:
        return option, f"--workers {option}"
    return loaded.profile.workers, f"{loaded.path}: workers = {loaded.profile.workers}"


def _say_listening(server, loaded, address: Address, dashboard: Address | None,
                   stamped) -> Path | None:
    """What serve says once it listens (the log, and stdout's lines that scripts wait for);
    the file announcing it to fetch, if written."""
    from anonproxy import logs, native
    from anonproxy.admin.login import LOGIN_TTL
    from anonproxy.cli.remote import pidfile_for

    announced = None
    if loaded.profile.forwarding:  # (listen = "off": reverse entries alone)
        announced = announce.write(pidfile_for(address), loaded, address, stamped)
        logs.log.info("listening on %s (HTTP, HTTPS via CONNECT, SOCKS5)%s; hot path %s",
                      address,
                      f", {len(server.children) + 1} workers" if server.children else "",
                      native.describe())
    login = server.login_url()
    if login is not None and dashboard is not None:  # a login URL only with a dashboard
        logs.log.info("dashboard on http://%s/; log in (this link works once, for %.0f "
                      "minutes; `anonproxy dashboard` makes new ones) with %s",
                      dashboard.authority(0), LOGIN_TTL / 60, login)
    if loaded.profile.forwarding:
        print(f"anonproxy listening on {address}", flush=True)
    for entry in server.reverses.entries:
        print(f"anonproxy reverse entry on {entry.listen}"
              f"{' (TLS)' if entry.tls is not None else ''}", flush=True)
    if login is not None:
        print(f"anonproxy dashboard: {login}", flush=True)
    return announced


def _workers_problem(loaded, workers: int) -> str | None:
    """Why `workers` processes cannot serve this profile, before anything is imported,
    written, bound or forked; None when they can."""
    if workers == 1:
        return None
    if loaded.profile.reverse:  # (the profile's own `workers` key is checked with it)
        return (f"{loaded.path} has [[reverse]] entries, which need workers = 1 (each worker "
                "would publish its onion and probe alone)")
    from anonproxy.runtime.workers import WorkersUnavailable, require_linux

    try:
        require_linux()
    except WorkersUnavailable as error:
        return str(error)
    return None


def _overrides(loaded, listen_text: str | None, admin_text: str | None):
    """(listen, admin): the profile's, with --listen and --admin applied, each checked as the
    profile's own key is; an AddressError names the option."""
    listen = None
    admin = loaded.profile.admin
    option = ""
    try:
        if listen_text:
            option = f"--listen {listen_text}"
            listen = parse_authority(listen_text, listening=True)
            problems = listen_problems(listen, loaded.profile.allow, loaded.profile.auth)
            if problems:
                raise AddressError(f"{'; '.join(problems)} ({loaded.path} has neither)")
        if admin_text:
            option = f"--admin {admin_text}"
            admin = _admin_override(admin_text, admin, listen or loaded.profile.listen_address)
    except AddressError as error:
        raise AddressError(f"{option}: {error}") from None
    return listen, admin


def _admin_override(text: str, configured, listen: Address):
    """--admin: off, or HOST:PORT (keeping the profile's password), checked as the profile's
    own admin key is."""
    if text == "off":
        return None
    parse_authority(text, listening=True)
    admin = Admin(listen=text, password=configured.password if configured is not None else None)
    problems = admin_problems(admin, listen)
    if problems:
        raise AddressError("; ".join(problems))
    return admin


def _start_workers(loaded, profile_ref: str, listen, workers: int, admin):
    """The first worker's SO_REUSEPORT socket, the other workers, forked now (before any
    event loop) each with a socket of its own on the same address, and the dashboard's
    settings with its port fixed: every worker refuses the dashboard as a destination, so
    each must know its address before the fork (port 0 is chosen here, see _pin_admin)."""
    from anonproxy.runtime.server import ProxyServer
    from anonproxy.runtime.workers import (
        WorkersUnavailable,
        fork_workers,
        reuseport_socket,
    )

    if not 1 <= workers <= 64:
        raise WorkersUnavailable("workers must be between 1 and 64")
    if loaded.profile.uses_managed_tor:
        raise WorkersUnavailable("a managed tor exit would start one tor per worker; use a tor "
                                 'you run (tor = { control = "HOST:PORT" }) or one worker')
    wanted = listen or loaded.profile.listen_address
    admin, _held = _pin_admin(admin)
    sock = reuseport_socket(wanted)
    bound = Address(wanted.host, sock.getsockname()[1])

    def run(worker_sock, ready) -> int:
        sock.close()
        if _held is not None:
            _held.close()

        async def worker() -> None:
            # the dashboard's address only, so that it is refused; the first process serves it
            server = ProxyServer(loaded, bound, profile_ref=profile_ref, admin=admin)
            server.stop_on_signals()
            await server.start(sock=worker_sock)
            ready()
            settle_memory()
            await server.serve_until_signalled()

        run_loop(worker)
        return 0

    return sock, fork_workers(workers - 1, bound, run), admin


_HELD: list = []  # sockets holding a dashboard port chosen before the fork, for our lifetime


def _pin_admin(admin):
    """The dashboard settings with port 0 (any free port) replaced by a port chosen now, held
    by a bound socket that is not listening (SO_REUSEADDR on both sides lets the dashboard bind
    it later; a process that takes the port in between makes the dashboard fail to start, and
    serve says so); and that socket (None when the port was fixed already)."""
    import socket

    if admin is None or admin.address.port != 0:
        return admin, None
    host = admin.address.host
    held = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind((host, 0))
    except OSError:
        held.close()
        raise
    _HELD.append(held)
    chosen = Address(host, held.getsockname()[1])
    return admin.model_copy(update={"listen": chosen.authority()}), held


def settle_memory() -> None:
    """Once serving: what the proxy loaded to start (modules, profile, block lists; objects
    that live as long as it does) leaves the collector's scans (gc.freeze), and the young
    generation is collected every 10,000 allocations instead of 700 (a request allocates a few
    hundred short-lived objects, nearly none in reference cycles)."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def run_loop(main) -> None:
    """Run `main()` on uvloop when it is installed, plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
