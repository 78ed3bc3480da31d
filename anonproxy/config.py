"""Profiles: the TOML file a user writes, validated into a frozen model (pydantic).

`load_profile(ref)` takes a profile name (a file in the shipped `rules/` or the user's profile
folder) or a path, and returns a Profile or raises ProfileError whose message names the file,
the key path, the offending value and a hint: a user never sees a traceback for a bad profile.

Invariants enforced here: every exit a profile names exists; listening beyond loopback needs an
explicit client allow-list; no field is accepted that the proxy would silently ignore.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .address import Address, AddressError, is_loopback_host, parse_authority
from .headers import HeaderPolicy

# Installed, the shipped profiles are package data beside this file; in a source checkout (or an
# editable install) they are the repository's rules/ folder.
SHIPPED_DIR = Path(__file__).resolve().parent / "rules"
if not SHIPPED_DIR.is_dir():
    SHIPPED_DIR = Path(__file__).resolve().parent.parent / "rules"


def user_profile_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "anonproxy"


class ProfileError(Exception):
    """A profile that cannot be used; `str()` is the complete message for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Replace(_Strict):
    replace: Annotated[str, Field(min_length=1, max_length=1024)]

    @field_validator("replace")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or not value.isascii():
            raise ValueError("must be printable ASCII without control characters")
        return value


def _choice_or_replace(*choices: str):
    """A header policy: one of `choices`, or { replace = "value" }; one clear error otherwise."""
    words = " | ".join(choices)

    def check(value: Any) -> str | Replace:
        if isinstance(value, str) and value in choices:
            return value
        if isinstance(value, dict) and set(value) == {"replace"}:
            try:
                return Replace.model_validate(value)
            except ValidationError as error:
                reason = error.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"replace value {reason}") from None
        raise ValueError(f'use {words} or {{ replace = "..." }}')

    schema = {"anyOf": [{"enum": list(choices)}, Replace.model_json_schema()]}
    return Annotated[str | Replace, PlainValidator(check), WithJsonSchema(schema)]


def _parsed(parse, what: str, json_format: str):
    """A field given as a string and kept parsed (IP address or network), with a plain error."""

    def check(value: Any):
        try:
            return parse(value)
        except (TypeError, ValueError):
            raise ValueError(f"not {what}") from None

    return Annotated[Any, PlainValidator(check), PlainSerializer(str),
                     WithJsonSchema({"type": "string", "format": json_format})]


IPAddress = _parsed(ipaddress.ip_address, "an IP address", "ip-address")
IPNetwork = _parsed(lambda v: ipaddress.ip_network(v, strict=False), "an IP network (CIDR)", "cidr")


class Headers(_Strict):
    user_agent: _choice_or_replace("keep", "strip") = "keep"
    accept_language: _choice_or_replace("keep") = "keep"
    referer: Literal["keep", "strip", "origin-only", "same-origin-only"] = "origin-only"
    cookie: Literal["keep", "strip"] = "keep"
    client_hints: Literal["keep", "strip-high-entropy", "strip-all"] = "strip-high-entropy"

    def policy(self) -> HeaderPolicy:
        ua, al = self.user_agent, self.accept_language
        return HeaderPolicy(
            user_agent=ua if isinstance(ua, str) else "keep",
            user_agent_replace=ua.replace.encode("ascii") if isinstance(ua, Replace) else None,
            accept_language=al if isinstance(al, str) else "keep",
            accept_language_replace=al.replace.encode("ascii") if isinstance(al, Replace) else None,
            referer=self.referer,
            cookie=self.cookie,
            client_hints=self.client_hints,
        )


PositiveSeconds = Annotated[float, Field(gt=0, le=86400)]


class Limits(_Strict):
    max_header_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 65536
    max_headers: Annotated[int, Field(ge=8, le=1000)] = 100
    header_timeout: PositiveSeconds = 10.0
    idle_timeout: PositiveSeconds = 300.0
    connect_timeout: PositiveSeconds = 10.0
    response_timeout: PositiveSeconds = 60.0
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 2048
    drain_timeout: Annotated[float, Field(ge=0, le=3600)] = 10.0


class Exit(_Strict):
    """An exit. For now: direct, leaving from this machine, optionally from a chosen address."""

    source: IPAddress | None = None


class Profile(_Strict):
    listen: str = "127.0.0.1:8118"
    allow: list[IPNetwork] = []
    default: str = "direct"
    exits: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], Exit] = {
        "direct": Exit()
    }
    headers: Headers = Headers()
    limits: Limits = Limits()

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        try:
            parse_authority(value, listening=True)
        except AddressError as error:
            raise ValueError(f"{error}; write it as HOST:PORT, e.g. 127.0.0.1:8118") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Profile":
        if self.default not in self.exits:
            raise ValueError(
                f"default exit '{self.default}' is not defined; "
                f"defined exits: {', '.join(sorted(self.exits)) or 'none'}"
            )
        host = self.listen_address.host
        if not is_loopback_host(host) and not self.allow:
            raise ValueError(
                f"listening on {host} exposes the proxy beyond this machine; "
                "add allow = [\"CIDR\", ...] naming the clients that may connect"
            )
        return self

    @property
    def listen_address(self) -> Address:
        return parse_authority(self.listen, listening=True)


@dataclass(frozen=True, slots=True)
class LoadedProfile:
    name: str
    path: Path
    profile: Profile


def resolve_ref(ref: str) -> Path:
    """A profile name -> its file (user folder first, then shipped); a path -> itself."""
    if "/" in ref or ref.endswith(".toml") or os.sep in ref:
        return Path(ref)
    for folder in (user_profile_dir(), SHIPPED_DIR):
        candidate = folder / f"{ref}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in (user_profile_dir(), SHIPPED_DIR) for p in d.glob("*.toml")})
    raise ProfileError(f"no profile named '{ref}' (known: {', '.join(known) or 'none'})")


def load_profile(ref: str) -> LoadedProfile:
    path = resolve_ref(ref)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"{path}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{path}: not valid TOML: {error}") from None
    return LoadedProfile(path.stem, path, parse_profile(data, str(path)))


def parse_profile(data: dict[str, Any], source: str) -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        raise ProfileError("\n".join(_describe(e, source) for e in error.errors())) from None


def _describe(error: Any, source: str) -> str:
    loc = error["loc"]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    key = key or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"{source}: {key}: unknown key (check its spelling against the README's profile reference)"
    if error["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    shown = _short(value) if loc else ""
    return f"{source}: {key}{' = ' + shown if shown else ''}: {message}"


def _short(value: Any) -> str:
    if isinstance(value, dict | list):
        return ""
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."
