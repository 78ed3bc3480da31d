"""`anonproxy exec -- CMD`: run a program with an ephemeral proxy of its own.

The proxy listens on a random loopback port and demands per-run credentials, so only this
program (which gets them in its environment) can use it. The program's proxy variables point
at it: `http_proxy`/`https_proxy` (HTTP), `ALL_PROXY` as socks5h (names resolved by the proxy),
and `no_proxy` is cleared. stdin/stdout/stderr are the program's own; SIGINT, SIGTERM and
SIGHUP are passed on; the program's exit code is ours.

`--strict` (Linux): the program runs in a network namespace of its own whose only reachable
address is the proxy's listening socket (created inside that namespace and handed to us), so a
program that ignores proxy variables fails instead of leaking; confine.py keeps it from unix
sockets named by paths and hides anonproxy's own directories (tokens, pid files, tor's data,
keys) from it; and its proxy refuses this machine's own addresses (the main proxy, its
dashboard, tor's ports, any local service) unless a rule's cidrs name them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field

from anonproxy import logs
from anonproxy.config.profiles import LoadedProfile
from anonproxy.policy.sites import site_of
from anonproxy.wire.address import Address

TOR_WAIT = 300  # seconds a Tor profile may take to bootstrap before the program starts


class StrictUnavailable(Exception):
    """This system does not let us give the program a network namespace of its own."""


def require_linux() -> None:
    """Raise StrictUnavailable anywhere but Linux: --strict is made of Linux interfaces (user,
    network and mount namespaces, a seccomp filter, prctl, /proc), with nothing to fall back to
    that would still confine the program."""
    if sys.platform != "linux":
        raise StrictUnavailable("confining a program needs Linux (namespaces, seccomp), and "
                                f"this system is {sys.platform}")


@dataclass
class Summary:
    sites: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)
    blocked: Counter = field(default_factory=Counter)

    def observe(self, record: logs.Record) -> None:
        host = getattr(record.dest, "host", None)
        exit_name = record.exit
        if host is None:
            return
        if record.status == 403 and record.error and "blocked by" in record.error:
            self.blocked[site_of(host)] += 1
        else:
            self.sites[site_of(host)] += 1
            if exit_name != "-":
                self.exits[exit_name] += 1

    def lines(self) -> list[str]:
        def listing(counter: Counter) -> str:
            return ", ".join(f"{k} ({v})" for k, v in counter.most_common()) or "none"

        return [f"anonproxy: sites contacted: {listing(self.sites)}",
                f"anonproxy: exits used: {listing(self.exits)}",
                f"anonproxy: blocked: {listing(self.blocked)}"]


def environment(address: Address, user: str, password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    http = f"http://{user}:{password}@{address}"
    socks = f"socks5h://{user}:{password}@{address}"
    env.update({"http_proxy": http, "https_proxy": http, "HTTP_PROXY": http,
                "HTTPS_PROXY": http, "all_proxy": socks, "ALL_PROXY": socks})
    return env


async def run_wrapped(loaded: LoadedProfile, argv: list[str], *, summary: bool,
                      strict: bool) -> int:
    from anonproxy.cli.tor_wait import TorNotReady, wait_for_tors
    from anonproxy.exits.tor_datadir import keep_seconds
    from anonproxy.runtime.server import ProxyServer

    user, password = "run-" + secrets.token_hex(4), secrets.token_hex(16)
    jail = _Jail(hidden_directories()) if strict else None
    record = Summary()
    try:
        server = ProxyServer(loaded, Address("127.0.0.1", 0), credentials=(user, password),
                             loopback_allowed=not strict, tor_keep=keep_seconds())
        address = await server.start(sock=jail.listener if jail else None)
        if summary:
            logs.observers.append(record.observe)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(server.serve_until_signalled())
            try:
                await asyncio.sleep(0)  # (the tors' tasks start)
                await wait_for_tors(list(server.tors.values()), TOR_WAIT)  # the first request
            except TorNotReady as error:                                  # should work
                print(f"anonproxy: exec: {error}; the program was not started", file=sys.stderr)
                code = 4
            else:
                command = jail.wrap(argv) if jail else argv
                code = await _run(command, environment(address, user, password))
            finally:
                server.request_stop()
    finally:
        if jail is not None:
            jail.close()
        if summary:
            logs.observers.remove(record.observe)
    if summary:
        for line in record.lines():
            print(line, file=sys.stderr)
    return code


async def _run(command: list[str], env: dict[str, str]) -> int:
    """Run the program with our stdio; pass signals on; its exit code (128+N for signal N)."""
    try:
        child = await asyncio.create_subprocess_exec(*command, env=env)
    except OSError as error:
        print(f"anonproxy: exec {command[0]}: {error.strerror}", file=sys.stderr)
        return 127
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, child.send_signal, sig)
    code = await child.wait()
    return code if code >= 0 else 128 - code


def hidden_directories() -> list[str]:
    """Where anonproxy keeps state a confined program must not read: the runtime directory
    (here and wherever else `serve` may have been started: XDG_RUNTIME_DIR unset), tor's
    cache, the data directory (keys) and the user's profiles (hop and auth passwords)."""
    from anonproxy.admin.control import runtime_dir
    from anonproxy.config.profiles import user_profile_dir
    from anonproxy.exits.tor_datadir import cache_dir

    home = os.path.expanduser("~")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    found: list[str | os.PathLike[str]] = [
        runtime_dir(), os.path.join(home, ".cache", "anonproxy"), cache_dir(),
        os.path.join(data, "anonproxy"), os.path.join(home, ".local", "share", "anonproxy"),
        user_profile_dir()]
    if os.path.isdir(f"/run/user/{os.getuid()}"):
        found.append(f"/run/user/{os.getuid()}/anonproxy")
    return list(dict.fromkeys(os.path.abspath(d) for d in found))


class _Jail:
    """Namespaces holding only a loopback interface and our listening socket, with anonproxy's
    own directories hidden; the program runs in them under confine.py's seccomp filter.

    A helper process (confine.py) enters new user, network and mount namespaces (unprivileged,
    where the system allows it), brings loopback up, mounts an empty tmpfs over each hidden
    directory, opens the proxy's listening socket there and passes it to us; the program is
    later started inside those same namespaces. Our proxy accepts on that socket but connects
    out from our own namespace."""

    def __init__(self, hidden: list[str]) -> None:
        require_linux()
        for directory in hidden:  # made now, so that nothing written there later is visible
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError:
                pass  # not ours to create: then `serve` cannot write there either
        ours, theirs = socket.socketpair()
        self._helper = subprocess.Popen(
            ["unshare", "--net", "--user", "--mount", "--map-root-user", *_CONFINE, "helper",
             str(theirs.fileno()), *hidden],
            pass_fds=(theirs.fileno(),), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        theirs.close()
        try:
            _, fds, _, _ = socket.recv_fds(ours, 16, 1)
        except OSError:
            fds = []
        ours.close()
        if not fds:
            error = self._helper.communicate(timeout=10)[1].decode(errors="replace").strip()
            raise StrictUnavailable(
                "this system does not allow a confined namespace for the program"
                + (f" ({error.splitlines()[-1].removeprefix('anonproxy: exec --strict: ')})"
                   if error else ""))
        self.listener = socket.socket(fileno=fds[0])

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` inside the helper's namespaces, confined, in our
        working directory, in a process namespace of its own (nsenter execs confine.py, which
        passes signals on to the program and exits with its exit code)."""
        return ["nsenter", f"--target={self._helper.pid}", "--user", "--net", "--mount",
                "--preserve-credentials", "--", *_CONFINE, "run", os.getcwd(), "--", *argv]

    def close(self) -> None:
        self.listener.close()
        self._helper.terminate()
        self._helper.wait()


# confine.py as a program (-P: nothing from the working directory shadows its imports)
_CONFINE = [sys.executable, "-P", "-m", "anonproxy.cli.confine"]
