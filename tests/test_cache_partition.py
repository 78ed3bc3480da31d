"""policy/cache_partition.py as tables: the top-level site a request reveals, and the partition
a response is stored under (profile, exit, client key, identity epoch, top-level site). Two
requests share a partition only when every part is equal. Pure: the end-to-end side is
tests/test_cache.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonproxy.policy.cache_partition import UNKNOWN, partition, top_level_site

NAVIGATE = [(b"Sec-Fetch-Mode", b"navigate"), (b"Sec-Fetch-Dest", b"document")]


def test_an_unknown_page_is_a_partition_of_its_own():
    assert UNKNOWN == "-"
    assert top_level_site("cdn.test", []) == "-"


@pytest.mark.parametrize(("dest", "headers", "site"), [
    # a navigation: the destination's own site
    ("www.a.example", NAVIGATE, "a.example"),
    ("www.a.example", [(b"sec-fetch-mode", b"navigate")], "a.example"),  # no Dest: a document
    ("www.a.example.", [(b"SEC-FETCH-MODE", b" navigate ")], "a.example"),
    ("www.a.example", [*NAVIGATE, (b"Referer", b"https://b.example/")], "a.example"),
    ("www.a.example", [(b"Sec-Fetch-Site", b"none"), (b"Referer", b"https://b.example/")],
     "a.example"),  # typed in, a bookmark
    ("192.0.2.1", NAVIGATE, "192.0.2.1"),
    # an iframe or a fetch navigates without being the top level: its page says
    ("frame.c.example", [(b"Sec-Fetch-Mode", b"navigate"), (b"Sec-Fetch-Dest", b"iframe"),
                         (b"Referer", b"https://www.b.example/page")], "b.example"),
    ("frame.c.example", [(b"Sec-Fetch-Mode", b"navigate"), (b"Sec-Fetch-Dest", b"iframe")], "-"),
    ("cdn.test", [(b"Sec-Fetch-Mode", b"no-cors"), (b"Sec-Fetch-Dest", b"document")], "-"),
    ("cdn.test", [(b"Sec-Fetch-Site", b"cross-site")], "-"),
    # otherwise the Referer's site, else the Origin's
    ("cdn.test", [(b"Referer", b"https://www.b.example/page?q=1")], "b.example"),
    ("cdn.test", [(b"referer", b"  https://b.example.  ")], "b.example"),
    ("cdn.test", [(b"Referer", b"https://WWW.B.Example/")], "b.example"),
    ("cdn.test", [(b"Origin", b"https://shop.b.example")], "b.example"),
    ("cdn.test", [(b"Referer", b"https://b.example/"), (b"Origin", b"https://c.example")],
     "b.example"),
    ("cdn.test", [(b"Referer", b"https://b.example/"), (b"Referer", b"https://c.example/")],
     "b.example"),  # the first one
    ("cdn.test", [(b"Referer", b"https://[2001:db8::1]:8443/p")], "2001:db8::1"),
    ("cdn.test", [(b"Referer", b"http://192.0.2.9/")], "192.0.2.9"),
    ("cdn.test", [(b"Referer", b"https://[bad/"), (b"Origin", b"https://c.example")],
     "c.example"),
    ("cdn.test", [(b"Referer", b"/relative"), (b"Origin", b"https://c.example")], "c.example"),
    ("cdn.test", [(b"Origin", b"null")], "-"),  # an opaque origin reveals nothing
    ("cdn.test", [(b"Referer", b""), (b"Origin", b"null")], "-"),
    ("cdn.test", [(b"Referer", b"https://[bad/")], "-"),
])
def test_the_top_level_site_a_request_reveals(dest, headers, site):
    assert top_level_site(dest, headers) == site


def test_the_partition_is_every_part():
    got = partition("work", "tor", "alice", 3, "cdn.test", [(b"Referer", b"https://b.example/")])
    assert got == ("work", "tor", "alice", "3", "b.example")
    assert partition("work", "tor", None, 0, "cdn.test", []) == ("work", "tor", "", "0", "-")


_PART = st.text(alphabet="abX-", max_size=3)
_SITES = st.sampled_from([[], [(b"Referer", b"https://a.example/")],
                          [(b"Referer", b"https://b.example/")], NAVIGATE])


@settings(max_examples=300, deadline=None)
@given(a=st.tuples(_PART, _PART, st.one_of(st.none(), _PART.filter(bool)), st.integers(0, 2),
                   _SITES),
       b=st.tuples(_PART, _PART, st.one_of(st.none(), _PART.filter(bool)), st.integers(0, 2),
                   _SITES))
def test_two_requests_share_a_partition_only_when_every_part_is_equal(a, b):
    def key(parts):
        profile, exit_name, client, epoch, headers = parts
        return partition(profile, exit_name, client, epoch, "c.example", headers)

    def site(headers):
        return top_level_site("c.example", headers)

    same = a[:4] == b[:4] and site(a[4]) == site(b[4])
    assert (key(a) == key(b)) is same


def _site_by_urlsplit(url: str) -> str | None:
    """The site of a whole Referer or Origin as urlsplit reads it (what _site_of_url keeps by
    its scheme and authority only)."""
    from urllib.parse import urlsplit

    from anonproxy.policy.sites import site_of

    url = url.strip()
    if not url or url == "null":
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return site_of(host.rstrip(".")) if host else None


_URL_PARTS = st.sampled_from(["https://", "http://", "//", "www.", "b.example", "co.uk", ".",
                              ":", "/", "?", "#", "@", "[", "]", "::1", "192.0.2.1", "%41",
                              " ", "\t", "null", "p", "x:y@"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_URL_PARTS, max_size=10).map("".join))
def test_a_referers_site_is_urlsplits_reading_of_the_whole_url(url):
    from anonproxy.policy.cache_partition import _site_of_url

    assert _site_of_url(url.encode("latin-1")) == _site_by_urlsplit(url)
    assert _site_of_url(url.encode("latin-1")) == _site_by_urlsplit(url)  # (kept: the same)


def test_the_fields_read_are_the_first_of_each_in_any_case():
    headers = [(b"REFERER", b"https://b.example/"), (b"sec-fetch-MODE", b"navigate"),
               (b"Referer", b"https://c.example/"), (b"Sec-Fetch-Dest", b"image")]
    assert top_level_site("cdn.test", headers) == "b.example"
    assert top_level_site("cdn.test", headers[:3]) == "cdn.test"
