"""The profile format: what a user may write in a profile, as frozen pydantic models.

With fields.py (the field types) and reverse.py (the [[reverse]] entries), the only modules
that import pydantic. Every key is checked here on its own (types, ranges, hop URLs, domain
patterns); checks across keys and the loading of files are in profiles.py.

Invariant: no field is accepted that the proxy would silently ignore (unknown keys are errors).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    PlainValidator,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from anonproxy.config.fields import (
    STRICT,
    Country,
    DomainPattern,
    ExitName,
    HopUrl,
    IPAddress,
    IPNetwork,
    PositiveSeconds,
    listen_address,
    plugins_back,
    plugins_off,
)
from anonproxy.config.fields import Auth as Auth  # (re-exported: a section of the format)
from anonproxy.config.reverse import Reverse
from anonproxy.policy.rules import BLOCK as BLOCK  # (re-exported: the profile format names it)
from anonproxy.policy.rules import domain_pattern_problem
from anonproxy.wire.address import Address, AddressError, parse_authority
from anonproxy.wire.headers import HeaderPolicy

# No pydantic plugins while the sections are built (fields.py says why).
_plugins_setting = plugins_off()


class _Strict(BaseModel):
    model_config = STRICT


class Replace(_Strict):
    replace: Annotated[str, Field(min_length=1, max_length=1024)]

    @field_validator("replace")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or not value.isascii():
            raise ValueError("must be printable ASCII without control characters")
        return value


def _choice_or_replace(*choices: str) -> tuple[PlainValidator, WithJsonSchema]:
    """A header policy's validator and schema: one of `choices`, or { replace = "value" }; one
    clear error otherwise. Used as Annotated[str | Replace, *these] (see the aliases below)."""
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
    return PlainValidator(check), WithJsonSchema(schema)


KeepStripOrReplace = Annotated[str | Replace, *_choice_or_replace("keep", "strip")]
KeepOrReplace = Annotated[str | Replace, *_choice_or_replace("keep")]


class Headers(_Strict):
    user_agent: KeepStripOrReplace = "keep"
    accept_language: KeepOrReplace = "keep"
    referer: Literal["keep", "strip", "origin-only", "same-origin-only"] = "origin-only"
    cookie: Literal["keep", "strip"] = "keep"
    client_hints: Literal["keep", "strip-high-entropy", "strip-all"] = "strip-high-entropy"

    def policy(self) -> HeaderPolicy:
        ua, al = self.user_agent, self.accept_language
        return HeaderPolicy(
            user_agent=ua if isinstance(ua, str) else "keep",
            user_agent_replace=ua.replace.encode("ascii") if isinstance(ua, Replace) else None,
            accept_language_replace=al.replace.encode("ascii") if isinstance(al, Replace) else None,
            referer=self.referer,
            cookie=self.cookie,
            client_hints=self.client_hints,
        )


class Health(_Strict):
    """Probing of pool members: through the member's hops, every `interval` seconds."""

    interval: Annotated[float, Field(ge=1, le=86400)] = 30.0
    timeout: PositiveSeconds = 5.0
    rise: Annotated[int, Field(ge=1, le=100)] = 2  # successes before a down member is up again
    fall: Annotated[int, Field(ge=1, le=100)] = 2  # failures before an up member is down


class Verify(_Strict):
    """Verified exits (`leaktest`, and with `enforce` the running proxy): echo services that
    answer with the address a request came from, fetched through each exit."""

    echo: list[Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=4096)]] = []
    interval: Annotated[float, Field(ge=10, le=86400)] = 600.0
    enforce: StrictBool = False  # "yes" or 1 is a mistake, not true


class Limits(_Strict):
    max_header_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 65536
    max_response_header_bytes: Annotated[int, Field(ge=1024, le=1 << 24)] = 262144
    max_headers: Annotated[int, Field(ge=8, le=1000)] = 100
    header_timeout: PositiveSeconds = 10.0
    idle_timeout: PositiveSeconds = 300.0
    connect_timeout: PositiveSeconds = 10.0
    response_timeout: PositiveSeconds = 60.0
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 2048
    drain_timeout: Annotated[float, Field(ge=0, le=3600)] = 10.0


class TorSettings(_Strict):
    """A Tor exit: a tor we start and own ("managed") or one the user runs (its control port)."""

    control: str = "managed"
    socks: str | None = None  # a system tor's SOCKS HOST:PORT (default: asked from tor)
    password: str | None = None  # a system tor's control password (default: cookie)
    countries: list[Country] = []  # exit only through relays in these countries (strict)
    isolation: Literal["site", "profile", "connection"] = "site"
    torrc: str | None = None  # managed: a file of extra torrc lines (bridges, a test network)

    @field_validator("control", "socks")
    @classmethod
    def _address(cls, value: str | None, info) -> str | None:
        if value is None or (info.field_name == "control" and value == "managed"):
            return value
        try:
            parse_authority(value)
        except AddressError as error:
            hint = '"managed" or ' if info.field_name == "control" else ""
            raise ValueError(f"{error}; write {hint}HOST:PORT") from None
        return value

    @field_validator("countries")
    @classmethod
    def _lower(cls, codes: list[str]) -> list[str]:
        return sorted({c.lower() for c in codes})

    @model_validator(mode="after")
    def _managed_only(self) -> TorSettings:
        if self.control != "managed" and (self.countries or self.torrc):
            raise ValueError("countries and torrc need control = \"managed\" (a system tor's "
                             "exit countries are its own configuration)")
        if self.control == "managed" and (self.socks or self.password):
            raise ValueError("socks and password are for a system tor (control = \"HOST:PORT\")")
        return self


class Exit(_Strict):
    """One exit. Its kind follows from its keys: `via` (a chain of proxy hops, first hop first),
    `pool` (other exits), `tor`, or none of these (direct, optionally from `source`)."""

    source: IPAddress | None = None
    tor: TorSettings | None = None
    via: Annotated[list[HopUrl], Field(min_length=1)] | None = None
    country: Country | None = None
    pool: Annotated[list[ExitName], Field(min_length=1)] | None = None
    strategy: Literal["failover", "round-robin", "sticky"] = "failover"
    fallback: ExitName | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Exit:
        kinds = [k for k in ("via", "pool", "tor") if getattr(self, k) is not None]
        if len(kinds) > 1:
            raise ValueError(f"an exit has one of via, pool or tor, not {' and '.join(kinds)}")
        if self.source is not None and kinds:
            raise ValueError("source applies to a direct exit only (no via, pool or tor)")
        if self.pool is None and ("strategy" in self.model_fields_set or self.fallback):
            raise ValueError("strategy and fallback apply to pools only")
        return self


class Rule(_Strict):
    """First match wins; every matcher given must hold."""

    domains: Annotated[list[str], Field(min_length=1)] | None = None
    cidrs: Annotated[list[IPNetwork], Field(min_length=1)] | None = None
    ports: Annotated[list[Annotated[int, Field(ge=1, le=65535)]], Field(min_length=1)] | None = None
    countries: Annotated[list[Country], Field(min_length=1)] | None = None
    exit: ExitName

    @field_validator("domains")
    @classmethod
    def _domains(cls, patterns: list[str] | None) -> list[str] | None:
        for pattern in patterns or ():
            problem = domain_pattern_problem(pattern)
            if problem:
                raise ValueError(f"'{pattern}': {problem}")
        return patterns

    @field_validator("countries")
    @classmethod
    def _upper(cls, codes: list[str] | None) -> list[str] | None:
        return None if codes is None else [c.upper() for c in codes]

    @model_validator(mode="after")
    def _some_matcher(self) -> Rule:
        if not (self.domains or self.cidrs or self.ports or self.countries):
            raise ValueError("a rule needs at least one of domains, cidrs, ports, countries")
        return self


class Admin(_Strict):
    """The local dashboard and control API: `admin = "127.0.0.1:8119"`, or a table with a
    password (needed when it listens beyond loopback)."""

    listen: str
    password: Annotated[str, Field(min_length=8, max_length=255)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"listen": value}
        if not isinstance(value, dict):
            raise ValueError(
                'write it as "HOST:PORT" or { listen = "HOST:PORT", password = "..." }')
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return listen_address(value)

    @property
    def address(self) -> Address:
        return parse_authority(self.listen, listening=True)


class Inspect(_Strict):
    """HTTPS destinations opened at the proxy with the local CA (docs/inspection.md), so the
    header policy and block lists reach inside; `skip` wins over `hosts`; empty `hosts`: off."""

    hosts: list[DomainPattern] = []
    skip: list[DomainPattern] = []
    # trust for the sites' own certificates: "system" (the OS store) or a PEM bundle's path,
    # relative to the profile
    ca_bundle: Annotated[str, Field(min_length=1, max_length=4096)] = "system"


class Cache(_Strict):
    """The response cache (docs/cache.md): off by default; in memory, partitioned."""

    enabled: StrictBool = False
    max_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = 64 << 20
    max_object_bytes: Annotated[int, Field(ge=0, le=1 << 32)] = 8 << 20


class ListSource(_Strict):
    """A block list fetched from `url` into `path` by `anonproxy lists update` (never by the
    running proxy)."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=4096)]
    path: Annotated[str, Field(min_length=1, max_length=4096)]


ListPath = Annotated[str, Field(min_length=1, max_length=4096)]


class Profile(_Strict):
    listen: str = "127.0.0.1:8118"  # or "off": no forward proxy, the reverse entries alone
    admin: Admin | None = None  # the dashboard; off when absent
    workers: Annotated[int, Field(ge=1, le=64)] = 1  # processes sharing the port (SO_REUSEPORT)
    allow: list[IPNetwork] = []
    auth: Auth | None = None
    # "owner": a loopback client of another local account is refused (unless `auth` is set)
    local_accounts: Literal["owner", "any"] = "owner"
    default: ExitName = "direct"
    geoip: str = "bundled"
    resolve: Literal["never", "local", "tor"] = "never"
    exits: dict[ExitName, Exit] = {"direct": Exit()}
    rules: list[Rule] = []
    # Adblock Plus / uBlock Origin lists or hosts files, relative to the profile: before rules
    blocklists: list[ListPath | ListSource] = []
    selectable: list[Annotated[str, Field(min_length=1)]] = []  # profiles a proxy username may pick
    headers: Headers = Headers()
    limits: Limits = Limits()
    health: Health = Health()
    verify: Verify = Verify()  # `echo` empty: policy/verify.py's DEFAULT_ECHO
    inspect: Inspect = Inspect()  # off: no hosts
    cache: Cache = Cache()  # off
    reverse: list[Reverse] = []  # [[reverse]] entries (config/reverse.py)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value == "off":
            return value
        try:
            return listen_address(value)
        except ValueError as error:
            raise ValueError(f'{error} (or "off": the reverse entries alone)') from None

    @property
    def blocklist_paths(self) -> list[str]:
        """Where each block list is read from, as written (a fetched list: its `path`)."""
        return [e if isinstance(e, str) else e.path for e in self.blocklists]

    @property
    def uses_managed_tor(self) -> bool:
        return any(e.tor is not None and e.tor.control == "managed" for e in self.exits.values())

    @property
    def forwarding(self) -> bool:
        """Whether the forward proxy runs (`listen` is not "off")."""
        return self.listen != "off"

    @property
    def listen_address(self) -> Address:
        """The forward proxy's address; with `listen = "off"`, the first reverse entry's: the
        address that names this serve in its runtime files (announce, control socket, tor
        requests), so `status` and the others find it the same way."""
        if self.forwarding:
            return parse_authority(self.listen, listening=True)
        if not self.reverse:  # (refused when the profile is loaded: nothing would run)
            raise ValueError('listen = "off" and no [[reverse]] entry')
        return self.reverse[0].listen_address


plugins_back(_plugins_setting)


class InvalidProfile(Exception):
    """The keys of a profile that do not validate, as pydantic's plain dicts (loc, type, msg,
    input)."""

    def __init__(self, errors: list[ErrorDetails]) -> None:
        super().__init__(f"{len(errors)} invalid keys")
        self.errors = errors


def validate_profile(data: dict[str, Any]) -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        raise InvalidProfile(error.errors()) from None


def profile_schema() -> dict[str, Any]:
    return Profile.model_json_schema()
