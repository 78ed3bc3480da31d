"""A managed tor's data directory: where it is, its torrc, the files tor writes there, and who
owns the tor running on it.

One tor per data directory, shared: tor itself locks its data directory, so a second tor on it
cannot start. Every anonproxy process (serve, fetch, exec) that needs a managed tor first looks
for one already running on the directory its tor settings map to, and uses it (through the
control port tor wrote to `control.port`, authenticated with the cookie tor wrote beside it).
Only when there is none does it start one, holding `owner.lock` (an flock) for as long as that
tor runs, so that two processes never start two tors on one directory:
- `serve` starts the tor itself; the tor dies with it (`__OwningControllerProcess`).
- `fetch` and `exec` hand the start to a keeper process (runtime/tor_keeper.py) that outlives
  them, so that the next invocation finds the tor bootstrapped; the keeper stops the tor after
  it has carried no traffic for a while.

Whoever starts the tor writes tor's own output to `tor.log`, so that a process waiting for it
can show its progress and, if it fails, quote tor's own last words.

Invariants: the directory is 0700 and ours; the torrc is the same whoever writes it (what
differs per starter, the owning process, goes on tor's command line); nothing here reads a
file another account could have placed (the directory is checked to be ours).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from anonproxy.exits.tor_control import TorUnavailable

CONTROL_PORT = "control.port"
COOKIE = "control.cookie"
LOG = "tor.log"
OWNER_LOCK = "owner.lock"
KEEP = 600.0  # seconds a tor started for fetch or exec stays after its last use


def keep_seconds() -> float:
    """How long a keeper keeps its tor after the last use: KEEP, or ANONPROXY_TOR_KEEP."""
    try:
        return max(float(os.environ.get("ANONPROXY_TOR_KEEP", KEEP)), 1.0)
    except ValueError:
        return KEEP


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "anonproxy"


def data_dir(countries: tuple[str, ...], torrc: str | None) -> Path:
    """The directory of the managed tor for these settings (one per distinct country list and
    extra torrc)."""
    key = hashlib.sha256(repr((countries, torrc)).encode()).hexdigest()[:12]
    return cache_dir() / f"tor-{key}"


def prepare(data: Path, countries: tuple[str, ...], torrc: str | None) -> Path:
    """Make the directory (0700, ours) and write its torrc; the torrc's path."""
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    if data.stat().st_uid != os.getuid():
        raise PermissionError(f"{data} belongs to another account")
    os.chmod(data, 0o700)
    lines = [
        f"DataDirectory {data}",
        "SocksPort 127.0.0.1:auto",
        "ControlPort 127.0.0.1:auto",
        f"ControlPortWriteToFile {data / CONTROL_PORT}",
        "CookieAuthentication 1",
        f"CookieAuthFile {data / COOKIE}",
        "Log notice stdout",
        "AvoidDiskWrites 1",
    ]
    if countries:
        lines += ["ExitNodes " + ",".join(f"{{{c.lower()}}}" for c in countries),
                  "StrictNodes 1"]
    if torrc:
        lines.append(f"%include {Path(torrc).expanduser().resolve()}")
    path = data / "torrc"
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def tor_binary() -> str:
    found = shutil.which("tor") or ("/usr/sbin/tor" if os.path.exists("/usr/sbin/tor") else None)
    if found is None:
        raise TorUnavailable(
            "this profile uses Tor, but no tor program is installed. Install it (Debian/Ubuntu: "
            "sudo apt-get install tor) or run `anonproxy serve --profile direct` to strip headers "
            "without hiding your address"
        )
    return found


def tor_command(binary: str, data: Path, owner_pid: int) -> list[str]:
    """The command line that starts the tor of `data`, dying with process `owner_pid`."""
    return [binary, "--defaults-torrc", os.devnull, "-f", str(data / "torrc"),
            "__OwningControllerProcess", str(owner_pid)]


def control_port(data: Path) -> tuple[str, int] | None:
    """The control port the tor of `data` wrote down (None: none written, or unreadable)."""
    try:
        text = (data / CONTROL_PORT).read_text().strip().removeprefix("PORT=")
    except OSError:
        return None
    host, _, port = text.rpartition(":")
    return (host, int(port)) if port.isdigit() and host else None


def answering(where: tuple[str, int]) -> bool:
    """Whether something accepts connections on `where` (a control port tor wrote down may be
    that of a tor killed since: asking stem to connect there would leak its socket)."""
    try:
        with socket.create_connection(where, timeout=2):
            return True
    except OSError:
        return False


class OwnerLock:
    """`owner.lock`: held by the process that started (or is starting) the tor of `data`."""

    def __init__(self, data: Path) -> None:
        self.path = data / OWNER_LOCK
        self._fd: int | None = None

    def take(self) -> bool:
        """Take the lock if nobody holds it (then this process is the owner)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (an owner is starting or running tor)."""
        if self._fd is not None:
            return False
        if self.take():
            self.release()
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # (closing drops the flock)
            self._fd = None


def mark_used(data: Path) -> None:
    """Say that a process uses the tor of `data` now (the keeper stops it when nobody has said
    so for its `keep` seconds)."""
    try:
        os.utime(data / OWNER_LOCK)
    except OSError:
        pass


def last_used(data: Path) -> float:
    try:
        return (data / OWNER_LOCK).stat().st_mtime
    except OSError:
        return 0.0


def log_since(data: Path, when: float) -> bool:
    """Whether `tor.log` was written at or after `when` (a starter has been at work)."""
    try:
        return (data / LOG).stat().st_mtime >= when - 1
    except OSError:
        return False


def log_tail(data: Path, lines: int = 3) -> str:
    """Tor's own last words in `tor.log`: its last warnings and errors (or its last lines), for
    an error message. Empty when there is no log."""
    try:
        text = (data / LOG).read_text(errors="replace")
    except OSError:
        return ""
    said = [line.split("] ", 1)[-1].strip() for line in text.splitlines() if line.strip()]
    loud = [line.split("] ", 1)[-1].strip() for line in text.splitlines()
            if "[warn]" in line or "[err]" in line]
    stuck = [line for line in loud if line.startswith("Problem bootstrapping")]
    return " / ".join((stuck or loud or said)[-lines:])  # (tor's own diagnosis first)


def spawn_keeper(data: Path, keep: float) -> None:
    """Start a keeper process (runtime/tor_keeper.py) that starts the tor of `data` and keeps
    it until it has carried no traffic for `keep` seconds. It outlives the caller: its own
    session, no terminal, nothing inherited but the environment."""
    subprocess.Popen(
        [sys.executable, "-m", "anonproxy.runtime.tor_keeper", str(data), f"{keep:g}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
