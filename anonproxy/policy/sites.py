"""The site a host belongs to: its registrable domain by the Public Suffix List.

The only module that imports publicsuffixlist (which ships the list: nothing is fetched). Used
to keep a site on one pool member (sticky) and, for Tor, to isolate circuits per site as Tor
Browser does. IP addresses and names without a registrable part are their own site.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@lru_cache(maxsize=4096)
def site_of(host: str) -> str:
    if ":" in host or host.replace(".", "").isdigit():
        return host
    return _psl().privatesuffix(host) or host
