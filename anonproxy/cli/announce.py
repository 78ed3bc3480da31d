"""What a running `anonproxy serve` tells `anonproxy fetch`, so that fetch can go through it
instead of loading the profile itself (fetch_lean.py): the file `serve-HOST-PORT.fetch` beside
the serve's pid file in the runtime directory.

It says where to connect, which profile file the proxy runs and that file's stamp when it was
read (device, inode, size, modification and change times), whether the proxy demands
credentials, the header policy the client must apply inside TLS, and the timeouts fetch keeps;
and which process wrote it (pid and start time).

Invariants:
- Written with admin/control.write_private (0600, atomically, in the 0700 runtime directory)
  and removed when serve stops. Read only from a directory that is ours and closed to others,
  from a regular file of ours that no one else can read or write, never through a symbolic
  link; anything else is not believed.
- Believed only while the process that wrote it runs (same pid, and on Linux the same start
  time, so a reused pid is not taken for it) and while the profile file is the one it read
  (same resolved path, same stamp): an edited profile that was not reloaded, or a reloaded
  one, is not what fetch would run, so fetch then runs the profile itself.
- No credentials are ever written here: a proxy that demands them says so (`auth=yes`) and
  fetch does not use it.
- Cheap: this module imports os and stat only, because fetch reads it before anything else.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from anonproxy.config.profiles import LoadedProfile
    from anonproxy.wire.address import Address

FORMAT = "anonproxy-fetch 1"
SUFFIX = ".fetch"
LIMITS = ("connect_timeout", "response_timeout", "idle_timeout")


def runtime_directory() -> str:
    """The runtime directory (admin/control.runtime_dir, without importing it)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "anonproxy")


def _shipped_directory() -> str:
    """The shipped profiles: the anonproxy/profiles package beside this one, as
    config/profiles.py finds them (on disk: a wheel, an editable install or a checkout)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "profiles")


def _user_directory() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "anonproxy")


def profile_file(ref: str) -> str | None:
    """The resolved path of the file `load_profile(ref)` reads (a name: the user's folder,
    then the shipped profiles; a path: itself), or None when there is none."""
    if "/" in ref or ref.endswith(".toml") or os.sep in ref:
        path = ref
    else:
        found = [c for c in (os.path.join(d, f"{ref}.toml")
                             for d in (_user_directory(), _shipped_directory()))
                 if os.path.isfile(c)]
        if not found:
            return None
        path = found[0]
    return os.path.realpath(path)


def profile_stamp(path: str) -> str | None:
    """What changes whenever the file does: device, inode, size, mtime and ctime."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def stamp_of(ref: str) -> tuple[str, str] | None:
    """The profile file `ref` names and its stamp, taken before serve reads it (so that an
    edit made meanwhile makes the two disagree, never agree on what was not read)."""
    path = profile_file(ref)
    stamp = profile_stamp(path) if path is not None else None
    return (path, stamp) if path is not None and stamp is not None else None


def write(pidfile: Path, loaded: LoadedProfile, listen: Address,
          stamped: tuple[str, str] | None) -> Path | None:
    """Announce a serve of `loaded` on `listen` beside its pid file; the file to remove when
    it stops, or None when nothing was written (one left by a killed serve is removed)."""
    from anonproxy.admin.control import RuntimeDirError, write_private

    path = pidfile.with_suffix(SUFFIX)
    text = announcement(loaded, listen, stamped)
    try:
        if text is None:
            path.unlink(missing_ok=True)
            return None
        write_private(path, text)
    except (OSError, RuntimeDirError):
        return None
    return path


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), "-" where /proc has none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return "-"


def announcement(loaded: LoadedProfile, listen: Address, stamped: tuple[str, str] | None) -> \
        str | None:
    """The file's text for a serve of `loaded` listening on `listen`, whose profile file was
    `stamped` (path, stamp) before it was read; None when that is not the file `loaded` came
    from (nothing is then announced)."""
    from anonproxy.wire.address import is_unspecified_host

    if stamped is None or os.path.realpath(loaded.path) != stamped[0]:
        return None
    host = listen.host
    if is_unspecified_host(host):  # a wildcard listener is reached on loopback
        host = "::1" if ":" in host else "127.0.0.1"
    from dataclasses import fields

    profile = loaded.profile
    policy = profile.headers.policy()
    lines = [
        FORMAT,
        f"pid={os.getpid()}",
        f"started={_started(os.getpid())}",
        f"connect={f'[{host}]' if ':' in host else host}:{listen.port}",
        f"listen={profile.listen_address.authority()}",  # (what the full fetch refuses as ours)
        f"profile={os.fsencode(stamped[0]).hex()}",
        f"stamp={stamped[1]}",
        f"auth={'no' if profile.auth is None else 'yes'}",
        *(f"policy.{field.name}={_value(getattr(policy, field.name))}"
          for field in fields(policy)),
        *(f"{key}={getattr(profile.limits, key)!r}" for key in LIMITS),
    ]
    return "\n".join(lines) + "\n"


def _value(value: str | bytes | None) -> str:
    """A header policy value as one line: a word, bytes in hex, or nothing."""
    if value is None:
        return "-"
    return f"b:{value.hex()}" if isinstance(value, bytes) else f"s:{value}"


def _parsed(value: str) -> str | bytes | None:
    """A header policy value as _value wrote it; ValueError for anything else."""
    tag, _, text = value.partition(":")
    if value == "-":
        return None
    if tag == "b":
        return bytes.fromhex(text)
    if tag == "s":
        return text
    raise ValueError(f"not a policy value: {value[:40]}")


class Announced:
    """A running serve of the profile fetch was asked for: where to connect, the profile's own
    listen address (which the full fetch refuses as a destination, whatever the serve's), the
    header policy fetch applies inside TLS (HeaderPolicy's fields, by name) and the timeouts
    it keeps."""

    __slots__ = ("host", "limits", "listen", "policy", "port")

    def __init__(self, host: str, port: int, listen: tuple[str, int], policy: dict[str, Any],
                 limits: dict[str, float]) -> None:
        self.host, self.port, self.listen = host, port, listen
        self.policy, self.limits = policy, limits


def find(ref: str) -> Announced | None:
    """A live serve of the profile `ref` names, unchanged since that serve read it and not
    demanding credentials; None when there is none (or anything about it is doubtful)."""
    path = profile_file(ref)
    stamp = profile_stamp(path) if path is not None else None
    directory = _our_directory()
    if path is None or stamp is None or directory is None:
        return None
    try:
        names = sorted(n for n in os.listdir(directory)
                       if n.startswith("serve-") and n.endswith(SUFFIX))
    except OSError:
        return None
    for name in names:
        fields = _fields(os.path.join(directory, name))
        if fields is None or fields.get("auth") != "no" or fields.get("stamp") != stamp \
                or fields.get("profile") != os.fsencode(path).hex() or not _alive(fields):
            continue
        found = _announced(fields)
        if found is not None:
            return found
    return None


def _our_directory() -> str | None:
    """The runtime directory if it is a directory of ours closed to others."""
    directory = runtime_directory()
    try:
        info = os.lstat(directory)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() \
            or stat.S_IMODE(info.st_mode) & 0o077:
        return None
    return directory


def _fields(path: str) -> dict[str, str] | None:
    """An announcement's keys and values, or None unless it is a regular file of ours that
    only we can read and write, in the format we write."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() \
                or stat.S_IMODE(info.st_mode) & 0o077:
            return None
        text = os.read(fd, 8192).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    lines = text.splitlines()
    if not lines or lines[0] != FORMAT:
        return None
    return dict(line.partition("=")[::2] for line in lines[1:])


def _alive(fields: dict[str, str]) -> bool:
    """Whether the process that wrote the announcement still runs (and is ours)."""
    try:
        pid = int(fields.get("pid", ""))
        os.kill(pid, 0)
    except (ValueError, OSError, OverflowError):
        return False
    started = fields.get("started", "-")
    return started == "-" or _started(pid) == started


def _announced(fields: dict[str, str]) -> Announced | None:
    """The announcement's values, checked; None when one of them is not as written."""
    try:
        host, _, port = fields["connect"].rpartition(":")
        listen_host, _, listen_port = fields["listen"].rpartition(":")
        policy: dict[str, Any] = {}
        for key, value in fields.items():
            if key.startswith("policy."):
                policy[key.removeprefix("policy.")] = _parsed(value)
        limits = {key: float(fields[key]) for key in LIMITS}
        return Announced(host.strip("[]"), int(port),
                         (listen_host.strip("[]"), int(listen_port)), policy, limits)
    except (KeyError, ValueError):
        return None


def services() -> list[tuple[str, int]]:
    """What running serves of this user announced (their listeners, from the pid files of live
    processes, and the dashboards beside them), as (host, port): as remote.announced_services
    finds them for the full fetch, which refuses them as destinations."""
    directory = _our_directory()
    found: list[tuple[str, int]] = []
    if directory is None:
        return found
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        if not (name.startswith("serve-") and name.endswith(".pid")):
            continue
        stem = os.path.join(directory, name.removesuffix(".pid"))
        try:
            with open(stem + ".pid") as file:
                os.kill(int(file.read().strip()), 0)  # still running
            host, _, port = name.removeprefix("serve-").removesuffix(".pid").rpartition("-")
            found.append((host, int(port)))
        except (OSError, ValueError, OverflowError):  # gone, not ours, or not a name we wrote
            continue
        try:
            with open(stem + ".admin") as file:
                host, _, port = file.read().strip().rpartition(":")
            found.append((host.strip("[]"), int(port)))
        except (OSError, ValueError):
            pass
    return found
