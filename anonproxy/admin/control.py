"""How the CLI reaches a running dashboard: the per-run token file and a small JSON client.

The token is written by `serve` to a file only its user can read, named after the admin
address; `anonproxy status`, `newnym` and `reload` read it there. The client talks to the
admin address directly, never through a proxy named in the environment (urllib would otherwise
send our own control requests through http_proxy).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..address import Address


class ControlError(Exception):
    """The dashboard could not be reached (`unreachable`), or refused; the message says which."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def runtime_dir() -> Path:
    """Where a running proxy leaves its pid, dashboard address and token for the CLI."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anonproxy"


def token_file(admin: Address) -> Path:
    return runtime_dir() / f"admin-{admin.host}-{admin.port}.token"


def write_token(admin: Address, token: str) -> Path | None:
    path = token_file(admin)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    except OSError:
        return None
    return path


def call(admin: Address, method: str, path: str, body: dict | None = None,
         password: str | None = None, timeout: float = 30.0) -> dict | list:
    """One API request; the decoded JSON answer, or ControlError with the dashboard's reason."""
    headers = {"Accept": "application/json"}
    data = None
    if method != "GET":
        try:
            headers["X-Anonproxy-Token"] = token_file(admin).read_text().strip()
        except OSError:
            raise ControlError(f"no token for the dashboard on {admin.authority(0)} "
                               f"({token_file(admin)}): is `anonproxy serve` running with "
                               "admin on that address?") from None
        data = json.dumps(body or {}).encode()
        headers["Content-Type"] = "application/json"
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"cli:{password}".encode()).decode()
    url = f"http://{admin.authority(0)}{path}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read()).get("error") or error.reason
        except (ValueError, AttributeError):
            reason = error.reason
        raise ControlError(f"the dashboard on {admin.authority(0)} said {error.code}: {reason}") \
            from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ControlError(f"no dashboard on {admin.authority(0)} ({reason})",
                           unreachable=True) from None
