"""Header sanitizing as tables (pure)."""

from __future__ import annotations

import base64

import pytest

from anonproxy.wire.headers import (
    IDENTIFYING_HEADERS,
    HeaderPolicy,
    is_identifying,
    proxy_credentials,
    sanitize_request,
    sanitize_response,
    scan,
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



# Written out here rather than read from IDENTIFYING_HEADERS, so that an entry dropped from the
# table fails a test instead of silently taking its own test case with it.
MUST_STRIP = [
    "Forwarded", "Via", "From", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
    "X-Forwarded-Port", "X-Forwarded-Server", "X-Forwarded", "Forwarded-For",
    "X-Original-Forwarded-For", "X-Real-IP", "Client-IP", "X-Client-IP", "True-Client-IP",
    "Akamai-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP", "X-Envoy-External-Address",
    "X-Azure-ClientIP", "X-Appengine-User-IP", "X-ProxyUser-Ip", "X-Cluster-Client-IP",
    "WL-Proxy-Client-IP", "Proxy-Client-IP", "X-Originating-IP", "X-Remote-Addr", "X-Remote-IP",
    "X-Authenticated-User", "X-UIDH", "X-MSISDN",
]


@pytest.mark.parametrize("name", MUST_STRIP)
def test_every_identifying_header_is_stripped_whatever_its_spelling(name):
    canonical = name.encode()
    for spelling in (canonical, canonical.upper(), canonical.lower().replace(b"-", b"_")):
        for policy in (HeaderPolicy(), KEEP_EVERYTHING):
            assert clean([(b"Host", HOST), (spelling, b"203.0.113.7")], policy) == [
                (b"Host", HOST)], spelling


KEEP_EVERYTHING = HeaderPolicy(user_agent="keep", referer="keep", cookie="keep",
                               client_hints="keep")

LEGACY_HINTS = [b"DPR", b"Device-Memory", b"Viewport-Width", b"Width", b"RTT", b"Downlink", b"ECT"]


@pytest.mark.parametrize("name", LEGACY_HINTS)
@pytest.mark.parametrize("policy, kept", [
    ("keep", True), ("strip-high-entropy", False), ("strip-all", False)])
def test_every_legacy_client_hint_is_stripped_unless_hints_are_kept(name, policy, kept):
    out = clean([(b"Host", HOST), (name, b"2")], HeaderPolicy(client_hints=policy))
    assert ((name, b"2") in out) is kept


@pytest.mark.parametrize("policy", ["strip-high-entropy", "strip-all"])
def test_headers_merely_like_client_hints_are_kept(policy):
    headers = [(b"Host", HOST), (b"Widths", b"1"), (b"X-DPR", b"1"), (b"Sec-Fetch-Mode", b"cors")]
    assert clean(headers, HeaderPolicy(client_hints=policy)) == headers


@pytest.mark.parametrize("listed", [b"transfer-encoding", b"Transfer-Encoding, close",
                                    b"content-length, transfer-encoding, host"])
def test_connection_cannot_strip_transfer_encoding_from_a_chunked_request(listed):
    headers = [(b"Host", HOST), (b"Connection", listed), (b"Transfer-Encoding", b"chunked")]
    assert clean(headers) == [(b"Host", HOST), (b"Transfer-Encoding", b"chunked")]
    encodings, lengths, tokens, websocket = scan(headers)
    assert encodings == [b"chunked"] and lengths == [] and not websocket
    assert not tokens & {b"transfer-encoding", b"content-length", b"host"}


@pytest.mark.parametrize("listed", [b"transfer-encoding", b"content-length, transfer-encoding"])
def test_connection_cannot_strip_framing_from_a_response(listed):
    headers = [(b"Connection", listed), (b"Transfer-Encoding", b"chunked"),
               (b"Content-Length", b"3")]
    assert sanitize_response(headers) == headers[1:]


def test_scan_reports_framing_values_in_order_and_the_listed_tokens():
    headers = [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"gzip"),
               (b"Connection", b"X-A,, x-b "), (b"connection", b"close"),
               (b"transfer-encoding", b"chunked"), (b"content-length", b"4")]
    assert scan(headers) == ([b"gzip", b"chunked"], [b"3", b"4"],
                             frozenset({b"x-a", b"x-b", b"close"}), False)
    assert scan([(b"Host", HOST)]) == ([], [], frozenset(), False)


@pytest.mark.parametrize("upgrade, connection, websocket", [
    (b"websocket", b"Upgrade", True),
    (b"WebSocket", b"keep-alive, upgrade", True),
    (b"websocket, h2c", b"Upgrade", True),
    (b"h2c, websocket", b"Upgrade", False),  # the first protocol offered is the one asked for
    (b"websocket", b"keep-alive", False),  # Upgrade not listed in Connection: not a handshake
    (b"h2c", b"Upgrade", False),
])
def test_only_a_websocket_handshake_keeps_its_upgrade_pair(upgrade, connection, websocket):
    headers = [(b"Host", HOST), (b"Upgrade", upgrade), (b"Connection", connection)]
    assert scan(headers)[3] is websocket
    out = clean(headers)
    if websocket:
        assert out == [(b"Host", HOST), (b"Upgrade", upgrade), (b"Connection", b"Upgrade")]
    else:
        assert out == [(b"Host", HOST)]
    response = [(b"Upgrade", upgrade), (b"Connection", connection), (b"X", b"1")]
    assert sanitize_response(response, websocket=websocket) == (
        response if websocket else [(b"X", b"1")])


def test_scan_ignores_upgrade_without_a_connection_header():
    assert scan([(b"Upgrade", b"websocket")]) == ([], [], frozenset(), False)


@pytest.mark.parametrize("policy, value", [
    ("strip", b"http://site.example/a"),
    ("origin-only", b"not a url"),
    ("origin-only", b"http://[::1/"),
    ("same-origin-only", b"http://other.example/a"),
    ("same-origin-only", b"/relative"),
])
def test_a_dropped_referer_leaves_no_header_behind(policy, value):
    headers = [(b"Host", HOST), (b"Referer", value), (b"Accept", b"*/*")]
    assert clean(headers, HeaderPolicy(referer=policy)) == [(b"Host", HOST), (b"Accept", b"*/*")]


@pytest.mark.parametrize("value, origin", [
    (b"HTTP://Other.Example/a", b"http://other.example/"),
    (b"http://[2001:db8::1]:8080/a", b"http://[2001:db8::1]:8080/"),
    (b"https://other.example:80/a", b"https://other.example:80/"),
    (b"http://other.example:80/a", b"http://other.example/"),
    (b"ftp://other.example:21/a", b"ftp://other.example:21/"),
])
def test_origin_only_referer_keeps_scheme_host_and_a_non_default_port(value, origin):
    out = clean([(b"Host", HOST), (b"Referer", value)], HeaderPolicy(referer="origin-only"))
    assert out == [(b"Host", HOST), (b"Referer", origin)]


def test_cookie_and_user_agent_are_kept_unless_the_policy_says_otherwise():
    headers = [(b"User-Agent", b"mine"), (b"Cookie", b"a=1"), (b"Accept-Language", b"de")]
    assert clean(headers, KEEP_EVERYTHING) == [(b"Host", HOST), *headers]
    assert clean(headers, HeaderPolicy(user_agent="strip", user_agent_replace=b"UA/1")) == [
        (b"Host", HOST), (b"User-Agent", b"UA/1"), (b"Cookie", b"a=1"), (b"Accept-Language", b"de")]


@pytest.mark.parametrize("value, expected", [
    (b"Basic " + base64.b64encode(b"alice:s3cret"), ("alice", "s3cret")),
    (b"basic " + base64.b64encode(b"alice:a:b"), ("alice", "a:b")),
    (b"BASIC  " + base64.b64encode(b"profile-x:") + b" ", ("profile-x", "")),
    (b"Basic " + base64.b64encode("jos\u00e9:\u00fc".encode()), ("jos\u00e9", "\u00fc")),
    (b"Bearer " + base64.b64encode(b"alice:s3cret"), None),
    (b"Basic not*base64", None),
    (b"Basic " + base64.b64encode(b"\xff\xfe:x"), None),
])
def test_proxy_credentials_come_only_from_a_well_formed_basic_header(value, expected):
    assert proxy_credentials([(b"Host", HOST), (b"proxy-authorization", value)]) == expected
    assert proxy_credentials([(b"Host", HOST)]) is None
