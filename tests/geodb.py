"""Small GeoIP databases for tests, written with mmdb-writer (MaxMind format, like GeoLite2)."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def write_country_db(path: Path, countries: dict[str, str]) -> Path:
    """`countries`: CIDR -> ISO country code."""
    writer = MMDBWriter(ip_version=6, database_type="anonproxy-test-Country",
                        ipv4_compatible=True, description={"en": "test countries"})
    for cidr, code in countries.items():
        writer.insert_network(IPSet([cidr]), {"country": {"iso_code": code}})
    writer.to_db_file(str(path))
    return path
