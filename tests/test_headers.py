"""Header sanitizing as tables (pure)."""

from __future__ import annotations

import pytest

from anonproxy.wire.headers import (
    IDENTIFYING_HEADERS,
    HeaderPolicy,
    is_identifying,
    sanitize_request,
    sanitize_response,
)

ORIGIN, HOST = "http://site.example", b"site.example"


def clean(headers, policy=HeaderPolicy()):
    return sanitize_request(headers, policy, target_origin=ORIGIN, host=HOST)


@pytest.mark.parametrize("name", [
    b"X-Forwarded-For", b"x-forwarded-host", b"X-Forwarded-Proto", b"X-Forwarded-Port",
    b"Forwarded", b"VIA", b"X-Real-IP", b"Client-IP", b"True-Client-IP", b"CF-Connecting-IP",
    b"X-Client-IP", b"X-Originating-IP", b"X-Cluster-Client-IP", b"From", b"X-ProxyUser-Ip",
    b"Proxy-Authorization", b"Proxy-Connection", b"Keep-Alive", b"TE", b"Trailer",
    b"Connection", b"Upgrade",
])
def test_identifying_and_hop_by_hop_headers_are_dropped(name):
    assert clean([(b"Host", HOST), (name, b"v")]) == [(b"Host", HOST)]


# The names issue 13 added, each a real-world carrier of the client's address or identity.
ADDED = [
    "X-Original-Forwarded-For", "X-Forwarded", "Forwarded-For", "WL-Proxy-Client-IP",
    "Proxy-Client-IP", "Fastly-Client-IP", "X-Envoy-External-Address", "Akamai-Client-IP",
    "X-Azure-ClientIP", "X-Appengine-User-IP", "X-Remote-Addr", "X-Remote-IP", "X-Client-IP",
    "X-Cluster-Client-IP", "X-UIDH", "X-MSISDN", "X-Authenticated-User",
]


@pytest.mark.parametrize("name", ADDED)
def test_identifying_table_names_the_added_headers(name):
    assert name in {h.name for h in IDENTIFYING_HEADERS}


def test_identifying_table_gives_a_source_for_each_entry_once():
    names = [h.name.lower() for h in IDENTIFYING_HEADERS]
    assert len(names) == len(set(names))
    assert all(h.source.strip() for h in IDENTIFYING_HEADERS)


@pytest.mark.parametrize("entry", IDENTIFYING_HEADERS, ids=lambda h: h.name)
def test_underscore_variants_of_identifying_headers_are_stripped(entry):
    canonical = entry.name.encode()
    for name in (canonical, canonical.lower(), canonical.upper(),
                 canonical.replace(b"-", b"_"), canonical.lower().replace(b"-", b"_"),
                 canonical.replace(b"-", b"_", 1)):
        assert is_identifying(name), name
        assert clean([(b"Host", HOST), (name, b"203.0.113.7")]) == [(b"Host", HOST)], name


@pytest.mark.parametrize("name", [b"X-Forwarded-Fo", b"X-Forwarded-For-Me", b"XForwardedFor",
                                  b"X--Forwarded-For", b"X.Forwarded.For", b"Accept", b"X_Mine"])
def test_names_merely_like_identifying_ones_are_kept(name):
    assert not is_identifying(name)
    assert clean([(b"Host", HOST), (name, b"v")]) == [(b"Host", HOST), (name, b"v")]


def test_names_listed_in_connection_are_dropped_but_never_framing():
    headers = [(b"Host", HOST), (b"Connection", b"X-Secret, Content-Length, close"),
               (b"X-Secret", b"1"), (b"Content-Length", b"3")]
    assert clean(headers) == [(b"Host", HOST), (b"Content-Length", b"3")]


def test_order_case_and_values_are_preserved():
    headers = [(b"aCCEPT", b"*/*"), (b"Host", b"wrong"), (b"X-Thing", b"  spaced  "),
               (b"Transfer-Encoding", b"chunked")]
    assert clean(headers) == [(b"aCCEPT", b"*/*"), (b"Host", HOST), (b"X-Thing", b"  spaced  "),
                              (b"Transfer-Encoding", b"chunked")]


def test_missing_host_is_supplied_and_duplicates_collapse():
    assert clean([(b"Accept", b"*/*")]) == [(b"Host", HOST), (b"Accept", b"*/*")]
    assert clean([(b"Host", b"a"), (b"Host", b"b")]) == [(b"Host", HOST)]


def test_websocket_handshake_keeps_its_upgrade_pair():
    headers = [(b"Host", HOST), (b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"websocket")]
    assert clean(headers) == [(b"Host", HOST), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]


@pytest.mark.parametrize("policy, value, expected", [
    ("keep", b"http://other.example/a?b", b"http://other.example/a?b"),
    ("strip", b"http://site.example/a", None),
    ("origin-only", b"http://other.example:8080/a?b", b"http://other.example:8080/"),
    ("origin-only", b"https://other.example:443/x", b"https://other.example/"),
    ("origin-only", b"not a url", None),
    ("same-origin-only", b"http://site.example/a?b", b"http://site.example/a?b"),
    ("same-origin-only", b"http://site.example:80/a", b"http://site.example:80/a"),
    ("same-origin-only", b"http://other.example/a", None),
])
def test_referer_policy(policy, value, expected):
    out = dict(clean([(b"Host", HOST), (b"Referer", value)], HeaderPolicy(referer=policy)))
    assert out.get(b"Referer") == expected


@pytest.mark.parametrize("policy, kept", [
    ("keep", {b"Sec-CH-UA", b"Sec-CH-UA-Mobile", b"Sec-CH-UA-Full-Version-List", b"Device-Memory"}),
    ("strip-high-entropy", {b"Sec-CH-UA", b"Sec-CH-UA-Mobile"}),
    ("strip-all", set()),
])
def test_client_hints_policy(policy, kept):
    headers = [(n, b"v") for n in (b"Sec-CH-UA", b"Sec-CH-UA-Mobile",
                                   b"Sec-CH-UA-Full-Version-List", b"Device-Memory")]
    out = clean(headers, HeaderPolicy(client_hints=policy))
    assert {n for n, _ in out} - {b"Host"} == kept


def test_user_agent_accept_language_and_cookie_policies():
    headers = [(b"User-Agent", b"mine"), (b"Accept-Language", b"de-CH"), (b"Cookie", b"a=1")]
    assert {n for n, _ in clean(headers, HeaderPolicy(user_agent="strip", cookie="strip"))} == {
        b"Host", b"Accept-Language"}
    out = dict(clean(headers, HeaderPolicy(user_agent_replace=b"UA/1",
                                           accept_language_replace=b"en-US")))
    assert out[b"User-Agent"] == b"UA/1" and out[b"Accept-Language"] == b"en-US"


def test_response_hop_by_hop_headers_are_dropped():
    headers = [(b"Content-Type", b"text/html"), (b"Connection", b"close, X-Hop"), (b"X-Hop", b"1"),
               (b"Keep-Alive", b"timeout=5"), (b"Proxy-Authenticate", b"Basic"),
               (b"Transfer-Encoding", b"chunked"), (b"Server", b"origin")]
    assert sanitize_response(headers) == [(b"Content-Type", b"text/html"),
                                          (b"Transfer-Encoding", b"chunked"), (b"Server", b"origin")]

