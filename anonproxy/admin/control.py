"""The runtime directory and how the CLI reaches a running dashboard.

The runtime directory ($XDG_RUNTIME_DIR/anonproxy, or ~/.cache/anonproxy) holds what `serve`
leaves for `status`, `reload`, `newnym` and `dashboard`: the pid and dashboard-address files,
the dashboard's per-run API token, and `newnym --site` request files. This module owns those
paths and every write to them.

Invariants:
- The directory is 0700 and every file in it 0600, owned by us. Files are created with those
  modes given to mkdir/open (never wider, whatever the umask), written under a temporary name
  and renamed into place, so there is no moment when another account could open them.
- A directory that exists with group/other bits and is ours is tightened to 0700 (the caller
  logs it); one that is not ours, or not a directory, is refused (RuntimeDirError) and nothing
  is written there.
- The client talks to the admin address directly, never through a proxy named in the
  environment (urllib would send our own control requests through http_proxy), and sends the
  API token on every request, reads included. A serve without a dashboard answers the same API
  on a unix socket in this directory (`serve-HOST-PORT.sock`, 0600), so status, reload and
  newnym work for every running serve.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from anonproxy.wire.address import Address, is_unspecified_host


class ControlError(Exception):
    """The dashboard could not be reached (`unreachable`), or refused; the message says which."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class RuntimeDirError(Exception):
    """The runtime directory cannot be used safely; the message says why and what to do."""


def runtime_dir() -> Path:
    """Where a running proxy leaves its pid, dashboard address and token for the CLI."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anonproxy"


def prepare_runtime_dir() -> str | None:
    """Create the runtime directory (0700) or check the existing one. Returns a note for the
    log when it had to be tightened; raises RuntimeDirError when it belongs to someone else
    or is not a directory, OSError when it cannot be created."""
    path = runtime_dir()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
        created = True
    except FileExistsError:
        created = False
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"{path} is not a directory; anonproxy keeps its token there, so "
                              "it will not start until that is fixed")
    if info.st_uid != os.geteuid():
        raise RuntimeDirError(f"{path} belongs to uid {info.st_uid}, not to you (uid "
                              f"{os.geteuid()}); anonproxy will not put its token there (set "
                              "XDG_RUNTIME_DIR to a directory of your own)")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
        if not created:
            _tighten_files(path)
            return (f"{path} was mode {stat.S_IMODE(info.st_mode):04o}; made it 0700 (and "
                    "its files 0600) so only you can read them")
    return None


def _tighten_files(path: Path) -> None:
    """Files an older version left readable by others in a directory we just tightened."""
    for entry in os.scandir(path):
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() \
                and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(entry.path, 0o600, follow_symlinks=False)


def _checked_dir() -> Path | None:
    """The runtime directory if it exists and is ours (for reading), else None."""
    path = runtime_dir()
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        return None
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` in the runtime directory, mode 0600, atomically (a temporary
    name, then rename). Raises OSError or RuntimeDirError."""
    prepare_runtime_dir()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # left by a crash of an earlier process with our pid
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    try:
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def read_private(path: Path) -> str | None:
    """A runtime file's text, stripped, or None when it is missing or the directory is not
    ours (a file someone else planted is never believed)."""
    if _checked_dir() is None:
        return None
    try:
        return path.read_text().strip()
    except OSError:
        return None


def token_file(admin: Address | Path) -> Path:
    """Where the API token of a dashboard (its address) or of a control socket lives."""
    if isinstance(admin, Path):
        return admin.with_suffix(".token")
    return runtime_dir() / f"admin-{admin.host}-{admin.port}.token"


def control_socket_for(listen: Address) -> Path:
    """The unix socket on which `serve` (listening on `listen`) answers the dashboard's API
    when it has no dashboard: status, reload and newnym need no TCP port."""
    return runtime_dir() / f"serve-{listen.host}-{listen.port}.sock"


def write_token(admin: Address | Path, token: str) -> Path | None:
    path = token_file(admin)
    try:
        write_private(path, token + "\n")
    except (OSError, RuntimeDirError):
        return None
    return path


def browsable(admin: Address) -> str:
    """host:port a browser on this machine can open for the dashboard (a wildcard address
    becomes loopback)."""
    if is_unspecified_host(admin.host):
        admin = Address("::1" if ":" in admin.host else "127.0.0.1", admin.port)
    return admin.authority(0)


def login_url(admin: Address, login_token: str) -> str:
    return f"http://{browsable(admin)}/login?token={login_token}"


def call(admin: Address | Path, method: str, path: str, body: dict[str, Any] | None = None,
         password: str | None = None, timeout: float = 30.0) -> Any:
    """One API request to a dashboard (its address) or a control socket (its path); the
    decoded JSON answer, or ControlError with the reason. The answer is Any: its shape is the
    endpoint's (an object or a list, as admin/app.py writes it), which the caller reads as
    that endpoint documents."""
    where = f"the control socket {admin}" if isinstance(admin, Path) \
        else f"the dashboard on {admin.authority(0)}"
    token = read_private(token_file(admin))
    if not token:
        raise ControlError(f"no dashboard on {admin.authority(0)} that you started (no token "
                           f"in {token_file(admin)}): is `anonproxy serve` running as you with "
                           "admin on that address?" if isinstance(admin, Address) else
                           f"no token for {where}: is `anonproxy serve` still running?",
                           unreachable=True)
    headers = {"Accept": "application/json", "X-Anonproxy-Token": token}
    data = None
    if method != "GET":
        data = json.dumps(body or {}).encode()
        headers["Content-Type"] = "application/json"
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"cli:{password}".encode()).decode()
    # (http.client, not urllib: it never goes through a proxy named in the environment)
    connection: http.client.HTTPConnection
    if isinstance(admin, Path):
        connection = _UnixConnection(admin, timeout)
        headers["Host"] = "localhost"
    else:
        connection = http.client.HTTPConnection(admin.host, admin.port, timeout=timeout)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    except OSError as error:
        gone = f"no dashboard on {admin.authority(0)}" if isinstance(admin, Address) \
            else f"no answer on {where}"
        raise ControlError(f"{gone} ({error.strerror or error})", unreachable=True) from None
    finally:
        connection.close()
    if response.status >= 400:
        try:
            reason = json.loads(answer).get("error") or response.reason
        except (ValueError, AttributeError):
            reason = response.reason
        raise ControlError(f"{where} said {response.status}: {reason}")
    return json.loads(answer)


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the control socket of a serve without a dashboard)."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def newnym_request_file(listen: Address, pid: int | None = None) -> Path:
    """Where `anonproxy newnym --site` leaves the site (and the first worker, for the others)."""
    return runtime_dir() / (f"newnym-{listen.host}-{listen.port}" + (f".{pid}" if pid else ""))


def take_newnym_request(listen: Address) -> str | None:
    """The site left for this process (read once), or None for everything."""
    for path in (newnym_request_file(listen, os.getpid()), newnym_request_file(listen)):
        text = read_private(path)
        if text is None:
            continue
        path.unlink(missing_ok=True)
        return text or None
    return None
