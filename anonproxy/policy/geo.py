"""Country of an IP address from a MaxMind-format (.mmdb) database (geoip2).

This is the only module that imports geoip2. It never resolves a name: it is a table read for
an address the caller already has.

`geoip = "bundled"` opens the database shipped with the package (built from the IPFire Location
data that Tor distributes; CC BY-SA 4.0); a path opens any country .mmdb (GeoLite2, DB-IP Lite,
...); `geoip = "none"` turns lookups off (country rules then never match).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypedDict

from anonproxy.policy.countries import iso_code


def _bundled() -> Path:
    """The bundled database: package data (anonproxy/data) found through importlib.resources, a
    file on disk wherever the package is installed (geoip2 maps it by its path)."""
    bundled = resources.files("anonproxy").joinpath("data", "country.mmdb")
    return bundled if isinstance(bundled, Path) else Path(str(bundled))


BUNDLED = _bundled()


class GeoInfo(TypedDict):
    """What `anonproxy geoip info` shows of a database (from its metadata and its file)."""

    path: str
    type: str
    description: str
    built: int  # the Unix time it was built
    size: int  # bytes
    ip_version: int
    nodes: int


class GeoError(Exception):
    """The database named in the profile cannot be used."""


@dataclass
class GeoDB:
    path: Path
    _reader: object

    @classmethod
    def open(cls, spec: str) -> GeoDB | None:
        if spec == "none":
            return None
        path = BUNDLED if spec == "bundled" else Path(os.path.expanduser(spec))
        try:
            import geoip2.database
            import maxminddb

            reader = geoip2.database.Reader(str(path), mode=maxminddb.MODE_MMAP)
        except FileNotFoundError:
            if spec == "bundled":
                raise GeoError(f"the bundled GeoIP database is missing ({path}); "
                               "run scripts/build-geoip or name a .mmdb file") from None
            raise GeoError(f"no such file: {path}") from None
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as error:
            raise GeoError(f"{path} is not a MaxMind database: {error}") from None
        return cls(path, reader)

    def country(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        import geoip2.errors

        try:
            record = self._reader.country(ip)  # type: ignore[attr-defined]
        except (geoip2.errors.AddressNotFoundError, ValueError):
            return None
        return iso_code(record.country.iso_code)  # ("UK" in some data is GB)

    def info(self) -> GeoInfo:
        meta = self._reader.metadata()  # type: ignore[attr-defined]
        return {
            "path": str(self.path),
            "type": meta.database_type,
            "description": meta.description.get("en", ""),
            "built": meta.build_epoch,
            "size": self.path.stat().st_size,
            "ip_version": meta.ip_version,
            "nodes": meta.node_count,
        }
