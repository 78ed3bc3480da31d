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
from functools import lru_cache
from urllib.parse import urlsplit

from anonproxy.policy.sites import site_of

UNKNOWN = "-"
# the fields the top-level site is read from (a request's first of each counts)
_READ = frozenset({b"sec-fetch-site", b"sec-fetch-mode", b"sec-fetch-dest", b"referer",
                   b"origin"})


def _fields(headers: Sequence[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The first value of each field in _READ, by lower-case name (one pass over the head)."""
    found: dict[bytes, bytes] = {}
    for key, value in headers:
        name = key.lower()
        if name in _READ and name not in found:
            found[name] = value
    return found


def _site_of_url(url: bytes | None) -> str | None:
    """The registrable domain of a Referer or Origin, from its scheme and authority (a site's
    pages repeat those: their site is kept; a path or credentials never are)."""
    text = url.decode("latin-1").strip() if url else ""
    if not text or text == "null":
        return None
    scheme = text.find("://")
    if scheme <= 0 or not (text[:scheme].isascii() and text[:scheme].isalpha()):
        return _site_of_authority(text)  # (no scheme and authority to cut at: rare, not kept)
    start, end = scheme + 3, len(text)
    for stop in "/?#":  # where urlsplit ends the authority
        at = text.find(stop, start)
        if at != -1 and at < end:
            end = at
    authority = text[:end]
    if "@" in authority:  # (credentials in it: read, never kept)
        return _site_of_authority(authority)
    return _site_of_authority_kept(authority)


def _site_of_authority(text: str) -> str | None:
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    return site_of(host.rstrip(".")) if host else None


_site_of_authority_kept = lru_cache(maxsize=1024)(_site_of_authority)


def top_level_site(dest_host: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The site a request was made for (see the module's rules)."""
    found = _fields(headers) if headers else {}
    if not found:
        return UNKNOWN
    dest = found.get(b"sec-fetch-dest")
    navigates = (_value(found.get(b"sec-fetch-mode")) == "navigate"
                 and (dest is None or _value(dest) == "document"))
    if navigates or _value(found.get(b"sec-fetch-site")) == "none":
        return site_of(dest_host.rstrip("."))
    return (_site_of_url(found.get(b"referer")) or _site_of_url(found.get(b"origin"))
            or UNKNOWN)


def _value(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("latin-1").strip()


def partition(profile: str, exit_name: str, client_key: str | None, epoch: int,
              dest_host: str, headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, ...]:
    """The partition a request's response is stored in and looked up from."""
    return (profile, exit_name, client_key or "", str(epoch), top_level_site(dest_host, headers))
