"""Country codes (pure): the ISO 3166-1 table, the suggestion for a common slip, and what a
GeoIP database's non-ISO spellings are read as."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from anonproxy.policy.countries import ALIASES, CODES, country_problem, iso_code
from anonproxy.policy.geo import GeoDB

ISO_CODES = Path("/usr/share/iso-codes/json/iso_3166-1.json")  # Debian's iso-codes


def test_the_table_is_iso_3166_1_and_kosovo():
    listed = {c["alpha_2"] for c in json.loads(ISO_CODES.read_text())["3166-1"]}
    assert len(listed) == 249
    assert listed | {"XK"} == CODES


@pytest.mark.parametrize("code", ["DE", "de", "Gb", "us", "XK", "ax", "zw"])
def test_iso_codes_in_any_case_are_accepted(code):
    assert country_problem(code) is None


@pytest.mark.parametrize("code, words", [
    ("UK", 'write "GB"'), ("uk", 'write "GB"'), ("EL", 'write "GR"'),
    ("EU", "not an ISO 3166-1 alpha-2"), ("XX", "not an ISO 3166-1 alpha-2"),
    ("??", "not an ISO 3166-1 alpha-2"), ("AP", "not an ISO 3166-1 alpha-2"),
])
def test_other_codes_are_refused_with_the_iso_code_where_known(code, words):
    problem = country_problem(code)
    assert problem is not None and words in problem and f"'{code}'" in problem


def test_aliases_point_into_the_table():
    assert all(alias not in CODES and iso in CODES for alias, iso in ALIASES.items())


@pytest.mark.parametrize("raw, read", [("UK", "GB"), ("uk", "GB"), ("GB", "GB"), ("de", "DE"),
                                       ("EL", "GR"), ("EU", "EU"), (None, None)])
def test_a_databases_code_is_read_as_the_iso_code(raw, read):
    assert iso_code(raw) == read


def test_the_bundled_databases_uk_networks_are_gb():
    """The bundled data maps 62.157.249.16/30 to "UK": a rule for GB must match it."""
    geo = GeoDB.open("bundled")
    assert geo is not None
    assert geo.country(ipaddress.ip_address("62.157.249.17")) == "GB"
