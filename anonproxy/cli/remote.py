"""Commands that steer a running proxy: `status`, `reload`, `newnym`, `dashboard`.

The proxy is named by its listen address (or its dashboard's, with --admin). `serve` leaves
beside its pid file the address of its dashboard, and the dashboard's API token, in the
runtime directory only its user can read (admin/control.py owns it). These commands go through
the dashboard API with that token when the proxy has one, and otherwise, for reload and
newnym, by signal to the pid in the pid file (SIGHUP: reload; SIGUSR1: new identity, for the
site left in a request file if any). `dashboard` asks the API for a one-time login URL and
opens it in the browser. A dashboard password is taken from ANONPROXY_ADMIN_PASSWORD.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from anonproxy.admin.control import (
    ControlError,
    RuntimeDirError,
    call,
    control_socket_for,
    login_url,
    newnym_request_file,
    read_private,
    runtime_dir,
    write_private,
)
from anonproxy.wire.address import Address, AddressError, check_host, parse_authority

EXIT_USAGE = 2


def pidfile_for(listen: Address) -> Path:
    return runtime_dir() / f"serve-{listen.host}-{listen.port}.pid"


def adminfile_for(listen: Address) -> Path:
    return pidfile_for(listen).with_suffix(".admin")


def admin_of(admin_text: str | None,
             listen_text: str) -> tuple[Address | Path | None, str | None]:
    """What to talk to: --admin, else the dashboard the proxy on --listen announced, else its
    control socket (a serve without a dashboard), None when there is neither; and the password
    from the environment. Raises AddressError."""
    password = os.environ.get("ANONPROXY_ADMIN_PASSWORD") or None
    if admin_text is not None:
        return parse_authority(admin_text), password
    listen = parse_authority(listen_text)
    announced = read_private(adminfile_for(listen))
    if announced:
        return parse_authority(announced), password
    socket = control_socket_for(listen)
    return (socket if socket.exists() else None), password


RECENT = 10  # recent connections `status` shows (the dashboard keeps up to 500)


def status(admin: Address | Path | None, password: str | None, listen_text: str) -> int:
    if admin is None:
        print(f"anonproxy: status: no proxy of yours is running on {listen_text} (it left no "
              "dashboard address or control socket); name its address with --listen",
              file=sys.stderr)
        return 1
    try:
        state = call(admin, "GET", "/api/status", password=password)
        exits = call(admin, "GET", "/api/exits", password=password)
        tors = call(admin, "GET", "/api/tor", password=password)
        rules = call(admin, "GET", "/api/rules", password=password)
        recent = call(admin, "GET", "/api/connections", password=password)
        listed = call(admin, "GET", "/api/blocklists", password=password)
        opened = call(admin, "GET", "/api/inspect", password=password)
        cached = call(admin, "GET", "/api/cache", password=password)
        reverse = call(admin, "GET", "/api/reverse", password=password)
    except ControlError as error:
        print(f"anonproxy: status: {error}", file=sys.stderr)
        return 1
    print(f"profile      {state['profile']} ({state['profile_path']})")
    board = "no dashboard" if isinstance(admin, Path) else f"dashboard http://{admin.authority(0)}/"
    print(f"listening    {state['listen']}    {board}")
    print(f"uptime       {_duration(state['uptime_s'])}")
    print(f"connections  {state['connections_now']} open, {state['connections_total']} since start")
    for item in exits:
        print(exit_line(item, state["traffic"].get(item["name"])))
    for line in [*_tor_lines(tors), *_rule_lines(rules), *_list_lines(listed),
                 *_inspect_lines(opened), *_cache_lines(cached),
                 *reverse_lines(reverse, time.time()), *_recent_lines(recent)]:
        print(line)
    return 0


def _tor_lines(tors: list) -> list[str]:
    lines = []
    for tor in tors:
        seen = tor["exit_countries"]
        countries = f", exits seen in {', '.join(seen)}" if seen else ""
        shared = f", shared with {tor['shared_with']}" if tor.get("shared_with") else ""
        lines.append(f"tor          {tor['label']}: {tor['state']} {tor['progress']}% "
                     f"({tor['summary'] or '-'}){shared}, {len(tor['circuits'])} circuits"
                     f"{countries}")
        if tor["state"] != "ready" and tor.get("last_said"):
            lines.append(f"             tor last said: {tor['last_said']}")
    return lines


def _rule_lines(rules: list) -> list[str]:
    lines = []
    for rule in rules:
        number = "default " if rule["number"] == 0 else f"rule {rule['number']:<3}"
        text = rule["text"] if rule["number"] else f"-> exit \"{rule['exit']}\""
        lines.append(f"{number}     {text}  ({rule['hits']} hits)")
    return lines


def _list_lines(listed: dict) -> list[str]:
    lines = [f"blocklist    {item['name']} ({item['format']}, {item['rules']} rules): "
             f"{item['blocks']} blocked" for item in listed["lists"]]
    for match in listed["latest"][:RECENT]:
        when = time.strftime("%H:%M:%S", time.localtime(match["time"]))
        lines.append(f"blocked      {when} {match['site']} by {match['list']}: {match['rule']}")
    return lines


def _inspect_lines(opened: dict) -> list[str]:
    if not opened["hosts"]:
        return []
    skip = f" (skip {', '.join(opened['skip'])})" if opened["skip"] else ""
    return [f"inspect      {', '.join(opened['hosts'])}{skip}; local CA {opened['ca']}",
            *(f"opened       {item['site']}: {item['requests']} requests"
              for item in opened["opened"][:RECENT])]


def _cache_lines(cached: dict) -> list[str]:
    if not cached["enabled"]:
        return []
    ratio = "-" if cached["hit_ratio"] is None else f"{cached['hit_ratio']:.0%}"
    return [(f"cache        {cached['entries']} entries, {cached['bytes']} of "
             f"{cached['max_bytes']} bytes; hit ratio {ratio} ({cached['hits']} hits, "
             f"{cached['misses']} misses, {cached['revalidations']} revalidated)")]


def reverse_lines(entries: list, now: float) -> list[str]:
    """Each reverse entry of /api/reverse in a line (its listen address, what it does, its
    strategy, its client connections, its .onion address once published), then one line per
    backend: up, or down for how long and why, and what it carried."""
    lines = []
    for entry in entries:
        marks = [word for word, on in (("TLS", entry["tls"]), ("auth", entry["auth"]),
                                       ("cache", entry["cache"] is not None),
                                       ("forwarded", entry["forwarded"])) if on]
        marked = f" ({', '.join(marks)})" if marks else ""
        hosts = f" for {', '.join(entry['hosts'])}" if entry["hosts"] else ""
        onion = f"; onion {entry['onion']}" if entry["onion"] else ""
        lines.append(f"reverse      {entry['listen']}{marked} {entry['strategy']}{hosts}, "
                     f"{_count(entry['connections'], 'connection')}{onion}")
        for backend in entry["backends"]:
            health = "up" if backend["up"] else (
                f"down {max(0, now - backend['since']):.0f} s ({backend['last_error']})")
            lines.append(f"backend        {backend['backend']} {health}, "
                         f"{_count(backend['requests'], 'request')}, "
                         f"{_count(backend['failures'], 'failure')}, "
                         f"{backend['in_flight']} in flight, {backend['up_bytes']} B up, "
                         f"{backend['down_bytes']} B down")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cache_clear(admin: Address | Path | None, password: str | None, listen_text: str) -> int:
    """`anonproxy cache clear`: empty a running proxy's cache (through its control API)."""
    if admin is None:
        print(f"anonproxy: cache clear: no proxy of yours is running on {listen_text}",
              file=sys.stderr)
        return 1
    code = _act(admin, password, "cache clear", "/api/cache/clear", {}, True)
    return 1 if code is None else code


def _recent_lines(recent: list) -> list[str]:
    lines = []
    for entry in recent[:RECENT]:
        when = time.strftime("%H:%M:%S", time.localtime(entry["time"]))
        problem = f"  ({entry['error']})" if entry["error"] else ""
        lines.append(f"recent       {when} {entry['proto']} {entry['site']} "
                     f"exit={entry['exit']} status={entry['status']}{problem}")
    return lines


def exit_line(item: dict[str, Any], traffic: dict[str, Any] | None) -> str:
    """One exit of /api/exits in a line, from the keys every kind has (exits/base.py,
    STATUS_KEYS): `status` knows no kinds."""
    line = f"exit {item['name']:<12} {item['kind']:<7}"
    if item.get("through"):
        line += " " + item["through"]
    if item.get("state") is not None:
        line += f": {item['state']}"
    if "health" in item:
        line += "  up" if item["health"]["up"] else f"  DOWN ({item['health']['last_error']})"
    verified = item.get("verified")
    if verified:
        when = time.strftime("%H:%M:%S", time.localtime(verified["checked"]))
        seen = f"{verified['country'] or 'unknown'} from {verified['address']}" \
            if verified["address"] else "nothing measured"
        line += (f"  verified {when}: {seen}, declared {', '.join(verified['declared'])}: "
                 f"{'REFUSED' if verified['refused'] else verified['verdict']}")
        if verified["error"]:
            line += f" ({verified['error']})"
    if traffic:
        line += (f"  {traffic['connections']} conns, {traffic['up']} B up, "
                 f"{traffic['down']} B down")
    return line


def reload(admin: Address | Path | None, password: str | None, listen_text: str,
           explicit: bool = False) -> int:
    """`explicit`: the dashboard was named with --admin (no falling back to signals)."""
    if admin is not None:
        code = _act(admin, password, "reload", "/api/reload", {}, explicit)
        if code is not None:
            return code
    return _signal(listen_text, signal.SIGHUP, "re-read its profile")


def newnym(admin: Address | Path | None, password: str | None, listen_text: str,
           site: str | None, explicit: bool = False) -> int:
    if site:
        from anonproxy.policy.sites import site_of

        try:
            site = site_of(check_host(site))
        except AddressError as error:
            print(f"anonproxy: newnym: {error}", file=sys.stderr)
            return EXIT_USAGE
    if admin is not None:
        code = _act(admin, password, "newnym", "/api/newnym", {"site": site}, explicit)
        if code is not None:
            return code
    if site:
        try:
            path = newnym_request_file(parse_authority(listen_text))
        except AddressError as error:
            print(f"anonproxy: newnym: --listen {listen_text}: {error}", file=sys.stderr)
            return EXIT_USAGE
        try:
            write_private(path, site + "\n")
        except (OSError, RuntimeDirError) as error:
            print(f"anonproxy: newnym: cannot leave the site in {path}: {error}", file=sys.stderr)
            return 1
    what = f"give {site} new circuits" if site else "make a new identity (all sites)"
    return _signal(listen_text, signal.SIGUSR1, what)


def _act(admin: Address | Path, password: str | None, command: str, path: str, body: dict[str, Any],
         explicit: bool) -> int | None:
    """One action through the dashboard API: its message, or its error and exit code 1. None
    when the dashboard a proxy announced does not answer (one killed without cleaning up):
    the caller falls back to signals."""
    try:
        answer = call(admin, "POST", path, body, password=password)
    except ControlError as error:
        if error.unreachable and not explicit:
            return None
        print(f"anonproxy: {command}: {error}", file=sys.stderr)
        return 1
    print(answer["message"])
    return 0


def _signal(listen_text: str, sig: signal.Signals, what: str) -> int:
    try:
        listen = parse_authority(listen_text)
    except AddressError as error:
        print(f"anonproxy: --listen {listen_text}: {error}", file=sys.stderr)
        return EXIT_USAGE
    path = pidfile_for(listen)
    try:
        pid = int(read_private(path) or "")
        os.kill(pid, sig)
    except (OSError, ValueError):
        print(f"anonproxy: no running proxy on {listen} (no usable {path}), and no dashboard "
              "to ask", file=sys.stderr)
        return 1
    print(f"asked the proxy on {listen} (pid {pid}) to {what}; its log says how it went")
    return 0


def _duration(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else \
        f"{seconds / 86400:.1f} days"


def announced_services() -> tuple[Address, ...]:
    """The listen and dashboard addresses that running `serve` processes of this user left in
    the runtime directory (pid files of live processes, and the dashboard file beside each):
    `fetch` and `route`, which run without that server, refuse them as destinations too."""
    found: list[Address] = []
    try:
        pidfiles = sorted(runtime_dir().glob("serve-*.pid"))
    except OSError:
        return ()
    for path in pidfiles:
        host, _, port = path.stem.removeprefix("serve-").rpartition("-")
        try:
            os.kill(int(path.read_text().strip()), 0)  # still running
            listen = Address(check_host(host), int(port))
        except (OSError, ValueError):  # gone, not ours, or not a name we wrote
            continue
        found.append(listen)
        try:
            found.append(parse_authority(adminfile_for(listen).read_text().strip()))
        except (OSError, ValueError):
            pass
    return tuple(found)


def dashboard(admin: Address | Path | None, password: str | None, listen_text: str,
              print_only: bool) -> int:
    """Ask the running dashboard for a one-time login URL and open it (or print it)."""
    if not isinstance(admin, Address):
        print(f"anonproxy: dashboard: the proxy on {listen_text} has no dashboard (or is not "
              "running); give its profile admin = \"127.0.0.1:8119\", or name one with --admin",
              file=sys.stderr)
        return 1
    try:
        answer = call(admin, "POST", "/api/login-token", {}, password=password)
    except ControlError as error:
        print(f"anonproxy: dashboard: {error}", file=sys.stderr)
        return 1
    url = login_url(admin, answer["token"])
    if not print_only:
        import webbrowser

        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
        if opened:
            print(f"opened the dashboard on http://{admin.authority(0)}/ in your browser "
                  f"(the login link works once, for {answer['expires_in']} s)")
            return 0
    print(url)
    return 0
