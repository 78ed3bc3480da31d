"""The field types of the profile format: values written as strings and kept parsed (IP
addresses and networks, hop URLs), country codes, exit names, listening addresses, durations.

Each is a pydantic Annotated type with one plain error message; models.py builds the sections
from them. No model class is built here (pydantic looks for plugins when one is, and models.py
switches that lookup off first).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainSerializer, PlainValidator, WithJsonSchema

from anonproxy.policy.countries import country_problem
from anonproxy.policy.rules import domain_pattern_problem
from anonproxy.wire.address import AddressError, parse_authority
from anonproxy.wire.hops import Hop, HopUrlError, parse_hop


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
