"""The cache partition of a request: who fetched it, through what, for which top-level site.

A response stored for one identity and served to another tells the second that the first was
there, and the timing of a hit does the same (the cache-probing attacks browsers answered by
partitioning their caches by top-level site). So an entry is keyed by: the profile serving the
request, the exit it was routed to, the client's own isolation key (SOCKS credentials that keep
Tor circuits apart), the identity epoch (a new identity starts empty), and the top-level site
the request was made for, as far as the request reveals it:

- a navigation (`Sec-Fetch-Mode: navigate` of a document, or `Sec-Fetch-Site: none`): the
  destination's own site;
- otherwise the site of `Referer`, else of `Origin`;
- otherwise an unknown page: a partition of its own ("-"), shared only by requests that
  reveal nothing either.

Invariant: pure; two requests share a partition only when every part above is equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from anonproxy.policy.sites import site_of

UNKNOWN = "-"


def _field(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _site_of_url(url: str | None) -> str | None:
    if not url or url == "null":
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return site_of(host.rstrip(".")) if host else None


def top_level_site(dest_host: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The site a request was made for (see the module's rules)."""
    fetch_site = _field(headers, b"sec-fetch-site")
    navigates = (_field(headers, b"sec-fetch-mode") == "navigate"
                 and _field(headers, b"sec-fetch-dest") in (None, "document"))
    if navigates or fetch_site == "none":
        return site_of(dest_host.rstrip("."))
    return (_site_of_url(_field(headers, b"referer")) or _site_of_url(_field(headers, b"origin"))
            or UNKNOWN)


def partition(profile: str, exit_name: str, client_key: str | None, epoch: int,
              dest_host: str, headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, ...]:
    """The partition a request's response is stored in and looked up from."""
    return (profile, exit_name, client_key or "", str(epoch), top_level_site(dest_host, headers))
