"""The field types of the profile format: values written as strings and kept parsed (IP
addresses and networks, hop URLs), country codes, exit names, listening addresses, durations;
`STRICT`, the configuration of every section (unknown keys are errors, values frozen), and
`Auth` (credentials), which both the top level and a [[reverse]] entry take.

Each field type is a pydantic Annotated type with one plain error message; models.py and
reverse.py build the sections from them.

No pydantic plugins: they would see every profile validated, credentials included, and
finding them means reading the entry points of every installed package (about 100 ms of each
command's start here). pydantic looks when a model class is built, so each module that builds
model classes switches the lookup off around them (`plugins_off`, `plugins_back`) and puts the
environment back afterwards (the programs `wrap` runs inherit it).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

from anonproxy.policy.countries import country_problem
from anonproxy.policy.rules import domain_pattern_problem
from anonproxy.wire.address import AddressError, parse_authority
from anonproxy.wire.hops import Hop, HopUrlError, parse_hop

_PLUGINS = "PYDANTIC_DISABLE_PLUGINS"


def plugins_off() -> str | None:
    """Switch pydantic's plugin lookup off (before model classes are built); returns the
    setting it replaced, for `plugins_back`."""
    setting = os.environ.get(_PLUGINS)
    os.environ[_PLUGINS] = "__all__"
    return setting


def plugins_back(setting: str | None) -> None:
    """Put the environment back as `plugins_off` found it."""
    if setting is None:
        os.environ.pop(_PLUGINS, None)
    else:
        os.environ[_PLUGINS] = setting


_setting = plugins_off()


# Each model module's base class takes it (a base of its own, so that ruff sees the sections
# are pydantic models, whose defaults are copied per instance).
STRICT = ConfigDict(extra="forbid", frozen=True)


class Auth(BaseModel):
    """Credentials every client must give: HTTP Basic (Proxy-Authorization, or Authorization
    for a reverse entry) or SOCKS5 username/password."""

    model_config = STRICT

    username: Annotated[str, Field(min_length=1, max_length=255)]
    password: Annotated[str, Field(min_length=8, max_length=255)]


plugins_back(_setting)


def _parsed(parse: Callable[[str], object], what: str,
            json_format: str) -> tuple[PlainValidator, PlainSerializer, WithJsonSchema]:
    """A field given as a string and kept parsed (IP address or network), with a plain error:
    its validator, serializer and schema, used as Annotated[the parsed type, *these]."""

    def check(value: Any) -> object:
        if not isinstance(value, str):  # ipaddress would take 5 or true as an address
            raise ValueError(f"not {what} (write it as a string)")
        try:
            return parse(value)
        except (TypeError, ValueError):
            raise ValueError(f"not {what}") from None

    return (PlainValidator(check), PlainSerializer(str),
            WithJsonSchema({"type": "string", "format": json_format}))


IPAddress = Annotated[ipaddress.IPv4Address | ipaddress.IPv6Address,
                      *_parsed(ipaddress.ip_address, "an IP address", "ip-address")]
IPNetwork = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network,
                      *_parsed(lambda v: ipaddress.ip_network(v, strict=False),
                               "an IP network (CIDR)", "cidr")]


PositiveSeconds = Annotated[float, Field(gt=0, le=86400)]


def _check_hop(value: Any) -> Hop:
    if not isinstance(value, str):
        raise ValueError("a hop is a URL string such as socks5://127.0.0.1:1080")
    try:
        return parse_hop(value)
    except HopUrlError as error:
        raise ValueError(str(error)) from None


HopUrl = Annotated[Any, PlainValidator(_check_hop), PlainSerializer(lambda h: h.masked_url()),
                   WithJsonSchema({"type": "string", "pattern": "^(socks5h?|http)://"})]


def _check_country(code: str) -> str:
    problem = country_problem(code)
    if problem is not None:
        raise ValueError(problem)
    return code


Country = Annotated[str, Field(pattern=r"^[A-Za-z]{2}$"), AfterValidator(_check_country)]
ExitName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


def listen_address(value: str) -> str:
    try:
        parse_authority(value, listening=True)
    except AddressError as error:
        raise ValueError(f"{error}; write it as HOST:PORT, e.g. 127.0.0.1:8118") from None
    return value




def _check_domain_pattern(pattern: str) -> str:
    problem = domain_pattern_problem(pattern)
    if problem:
        raise ValueError(problem)
    return pattern


DomainPattern = Annotated[str, AfterValidator(_check_domain_pattern)]
