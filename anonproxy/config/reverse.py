"""The `[[reverse]]` entries of the profile format: a listening address that hands requests to
local back-end servers (balanced, health-checked, optionally behind TLS, Basic auth, the cache,
and as an onion service), as frozen pydantic models.

Every key is checked here on its own; what needs other keys or files (distinct listens, a
backend that is our own listener, onion.tor naming a Tor exit, the tls files, workers = 1) is
checked in profiles.py.

Invariants: a backend is plain `http://HOST:PORT` and nothing else (no path, query, user info
or special-use name: the proxy connects to it directly, so a .onion or .local name would reach
a resolver); Host names and onion client keys are kept normalised (lower-case names, upper-case
base32), so comparing them is comparing strings; no list holds the same value twice.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    WithJsonSchema,
    field_validator,
)

from anonproxy.config.fields import (
    STRICT,
    Auth,
    ExitName,
    listen_address,
    plugins_back,
    plugins_off,
)
from anonproxy.wire.address import (
    Address,
    AddressError,
    check_host,
    parse_authority,
    special_use_refusal,
)

_PRIVATE = "a backend on this machine or a private network"


def parse_backend(text: str) -> Address:
    """`http://HOST:PORT` (a trailing "/" allowed) -> its address, or ValueError saying why."""
    if not _printable(text):
        raise ValueError("a backend is printable ASCII without spaces: http://HOST:PORT")
    scheme, sep, rest = text.partition("://")
    if scheme.lower() == "https" and sep:
        raise ValueError(f"only http:// backends are supported ({_PRIVATE}); the entry's "
                         "tls = { cert, key } is TLS towards clients")
    if scheme.lower() != "http" or not sep:
        raise ValueError(f"write a backend as http://HOST:PORT ({_PRIVATE})")
    rest = rest.removesuffix("/")
    if "@" in rest:
        raise ValueError("a backend takes no user info (user:password@)")
    if any(c in rest for c in "/?#"):
        raise ValueError("a backend is http://HOST:PORT only: no path, query or fragment")
    try:
        address = parse_authority(rest)
    except AddressError as error:
        raise ValueError(f"{error}; write it as http://HOST:PORT") from None
    refusal = special_use_refusal(address.host)
    if refusal is not None:
        raise ValueError(refusal)
    return address


def _check_backend(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("write a backend as a string: http://HOST:PORT")
    return f"http://{parse_backend(value).authority()}"


Backend = Annotated[str, PlainValidator(_check_backend), PlainSerializer(str),
                    WithJsonSchema({"type": "string", "pattern": "^http://"})]


def _printable(text: str) -> bool:
    """Printable ASCII without spaces (wire.address's name pattern lets a final newline by)."""
    return all("!" <= c <= "~" for c in text)


def _check_host_name(value: str) -> str:
    if not _printable(value):
        raise ValueError("a host name is printable ASCII without spaces")
    if "*" in value:
        raise ValueError("no wildcards: list each name this entry answers")
    try:
        return check_host(value)  # (an IPv6 address with or without brackets)
    except AddressError as error:
        if ":" in value and (not value.startswith("[") or "]:" in value):
            raise ValueError("no port: a Host is matched by its name alone") from None
        raise ValueError(str(error)) from None


HostName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_check_host_name)]

_CLIENT_KEY = re.compile(r"[A-Z2-7]{52}")


def _check_client_key(value: str) -> str:
    key = value.upper()
    if not _CLIENT_KEY.fullmatch(key):
        raise ValueError("not an x25519 public key in base32 (52 characters A-Z and 2-7, as in "
                         "tor's descriptor:x25519:KEY)")
    return key


ClientKey = Annotated[str, AfterValidator(_check_client_key)]
FilePath = Annotated[str, Field(min_length=1, max_length=4096)]  # relative to the profile


def _unique(values: list[str]) -> None:
    """ValueError naming the first value given twice (values as normalised)."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value} is listed twice")
        seen.add(value)


_setting = plugins_off()


class _Strict(BaseModel):
    model_config = STRICT


class ReverseTls(_Strict):
    """TLS towards clients: the certificate chain and its key, PEM files beside the profile."""

    cert: FilePath
    key: FilePath


class ReverseHealth(_Strict):
    """An HTTP probe of each backend (GET `path`, a 2xx or 3xx is up); absent: a TCP connect.
    The timing is the profile's [health] interval, timeout, fall and rise."""

    path: Annotated[str, Field(max_length=2048)]

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('a path starts with "/", e.g. "/healthz"')
        if not _printable(value) or "#" in value:
            raise ValueError("a path is printable ASCII without spaces or #")
        return value


class Onion(_Strict):
    """The entry published as an onion service through a Tor exit of the profile; `key` is the
    service's ED25519-V3 key file (relative to the profile), written (0600) on the first run so
    the .onion address stays the same."""

    key: FilePath
    tor: ExitName
    clients: list[ClientKey] = []  # client authorization: only these may reach the service
    max_streams: Annotated[int, Field(ge=1, le=65535)] | None = None  # per circuit

    @field_validator("clients")
    @classmethod
    def _distinct(cls, keys: list[str]) -> list[str]:
        _unique(keys)
        return keys


class Reverse(_Strict):
    """One reverse entry: clients connect to `listen`, requests go to one of `backends`."""

    listen: str
    backends: Annotated[list[Backend], Field(min_length=1, max_length=64)]
    strategy: Literal["round-robin", "least-connections", "failover"] = "round-robin"
    hosts: Annotated[list[HostName], Field(min_length=1)] | None = None  # absent: any Host
    tls: ReverseTls | None = None
    auth: Auth | None = None  # HTTP Basic (Authorization): 401 without it
    health: ReverseHealth | None = None
    cache: StrictBool = False  # through the profile's [cache] settings
    forwarded: StrictBool = False  # tell the backends the client's address
    onion: Onion | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return listen_address(value)

    @field_validator("backends")
    @classmethod
    def _distinct_backends(cls, backends: list[str]) -> list[str]:
        _unique(backends)
        return backends

    @field_validator("hosts")
    @classmethod
    def _distinct_hosts(cls, hosts: list[str] | None) -> list[str] | None:
        _unique(hosts or [])
        return hosts

    @property
    def listen_address(self) -> Address:
        return parse_authority(self.listen, listening=True)

    @property
    def backend_addresses(self) -> list[Address]:
        """The backends as addresses, in the written order."""
        return [parse_backend(b) for b in self.backends]


plugins_back(_setting)
