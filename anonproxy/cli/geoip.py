"""`anonproxy geoip info|lookup`: the country database, and an address's country in it.

Names are never resolved here: a lookup takes an address.
"""

from __future__ import annotations

import ipaddress
import sys
import time

from anonproxy.policy.geo import GeoDB, GeoError

EXIT_USAGE = 2


def geoip(action: str, address: str | None, db: str) -> int:
    """Show the database `db` (info), or the country of `address` (lookup)."""
    try:
        geo = GeoDB.open(db)
    except GeoError as error:
        print(f"anonproxy: geoip --db {db}: {error}", file=sys.stderr)
        return EXIT_USAGE
    if geo is None:
        print("anonproxy: geoip --db none: no database", file=sys.stderr)
        return EXIT_USAGE
    if action == "info":
        info = geo.info()
        built = time.strftime("%Y-%m-%d", time.gmtime(info["built"]))
        print(f"path         {info['path']}\ntype         {info['type']}\n"
              f"description  {info['description']}\nbuilt        {built}\n"
              f"size         {info['size'] / 1e6:.1f} MB\nnodes        {info['nodes']}")
        return 0
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        print(f"anonproxy: geoip lookup: '{address or ''}' is not an IP address "
              "(names are never resolved here)", file=sys.stderr)
        return EXIT_USAGE
    print(f"{ip} {geo.country(ip) or 'unknown'}")
    return 0
