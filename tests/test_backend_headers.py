"""What passes between a client and the backends of a reverse entry, as tables (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonproxy.wire.address import Address
from anonproxy.wire.backend_headers import (
    BACKEND_IDENTIFYING,
    BACKEND_TRUSTED,
    BackendNames,
    forwarded_fields,
    request_fields,
    response_fields,
)
from anonproxy.wire.headers import IDENTIFYING

NAMES = BackendNames.of([Address("127.0.0.1", 9001), Address("::1", 9002),
                         Address("10.0.0.5", 80), Address("backend.internal", 8080)])
PUBLIC = b"https://app.example"


def to_client(*headers):
    return response_fields(list(headers), NAMES, PUBLIC)


# --- responses: what names a backend's software or host is dropped ---

@pytest.mark.parametrize("name", [b"server", b"x-powered-by", b"x-aspnet-version",
                                  b"x-aspnetmvc-version", b"x-backend-server", b"via",
                                  b"x-runtime"])
def test_the_table_holds_every_field_the_issue_names(name):
    assert name in BACKEND_IDENTIFYING


@pytest.mark.parametrize("name", sorted(BACKEND_IDENTIFYING))
def test_a_backend_identifying_field_never_reaches_the_client_in_any_case(name):
    for spelling in (name, name.upper(), name.title()):
        assert to_client((b"Content-Type", b"text/html"), (spelling, b"nginx/1.25 on web-3"),
                         (b"Content-Length", b"5")) == [(b"Content-Type", b"text/html"),
                                                        (b"Content-Length", b"5")]


def test_a_response_with_nothing_to_change_comes_back_as_the_same_fields():
    headers = [(b"Date", b"Tue, 01 Dec 2026 15:00:00 GMT"), (b"content-type", b"text/plain"),
               (b"X-Custom", b"http://127.0.0.1:9001/not-a-url-field"), (b"Location", b"/next")]
    out = response_fields(headers, NAMES, PUBLIC)
    assert out == headers
    assert all(a is b for a, b in zip(out, headers, strict=True))


# --- responses: a URL naming a backend points at the address the client used ---

# Location value from the backend -> what the client gets
LOCATIONS = [
    (b"http://127.0.0.1:9001/x", b"https://app.example/x"),
    (b"http://127.0.0.1:9001/x?q=1#top", b"https://app.example/x?q=1#top"),
    (b"HTTP://127.0.0.1:9001/x", b"https://app.example/x"),
    (b"https://127.0.0.1:9001/x", b"https://app.example/x"),
    (b"http://127.0.0.1:9001", b"https://app.example"),
    (b"http://127.0.0.1:9001?q", b"https://app.example?q"),
    (b"//127.0.0.1:9001/x", b"https://app.example/x"),
    (b"http://user:secret@127.0.0.1:9001/x", b"https://app.example/x"),
    (b"http:\\\\127.0.0.1:9001\\x", b"https://app.example\\x"),  # what browsers read as a URL
    (b"http://[::1]:9002/ws", b"https://app.example/ws"),
    (b"http://[0:0::1]:9002/ws", b"https://app.example/ws"),  # the same address written long
    (b"http://10.0.0.5/x", b"https://app.example/x"),  # port 80: bare
    (b"http://10.0.0.5:80/x", b"https://app.example/x"),
    (b"//10.0.0.5/x", b"https://app.example/x"),
    (b"http://BACKEND.internal:8080/a", b"https://app.example/a"),
    # not a backend's: as they are
    (b"https://10.0.0.5/x", b"https://10.0.0.5/x"),  # 443, not 80
    (b"http://127.0.0.1:9002/x", b"http://127.0.0.1:9002/x"),
    (b"http://127.0.0.1/x", b"http://127.0.0.1/x"),
    (b"http://app.example/x", b"http://app.example/x"),
    (b"https://elsewhere.example/127.0.0.1:9001", b"https://elsewhere.example/127.0.0.1:9001"),
    (b"/x", b"/x"),
    (b"x/127.0.0.1:9001", b"x/127.0.0.1:9001"),
    (b"?next=http://127.0.0.1:9001/", b"?next=http://127.0.0.1:9001/"),
    (b"ftp://127.0.0.1:9001/x", b"ftp://127.0.0.1:9001/x"),
    (b"http://127.0.0.1:99999/x", b"http://127.0.0.1:99999/x"),
    (b"http://\xff:9001/x", b"http://\xff:9001/x"),
    (b"", b""),
]


@pytest.mark.parametrize(("sent", "received"), LOCATIONS)
def test_location_naming_a_backend_is_rewritten_to_the_public_base(sent, received):
    assert to_client((b"Location", sent)) == [(b"Location", received)]
    assert to_client((b"content-location", sent)) == [(b"content-location", received)]


def test_a_public_base_with_a_trailing_slash_gives_no_double_slash():
    assert response_fields([(b"Location", b"http://127.0.0.1:9001/x")], NAMES,
                           b"http://app.example:8443/") == [(b"Location",
                                                             b"http://app.example:8443/x")]


# Refresh value from the backend -> what the client gets
REFRESHES = [
    (b"5; url=http://127.0.0.1:9001/x", b"5; url=https://app.example/x"),
    (b"5;URL=http://127.0.0.1:9001/x", b"5;URL=https://app.example/x"),
    (b"0; Url = 'http://127.0.0.1:9001/x'", b"0; Url = 'https://app.example/x'"),
    (b'3,url="//10.0.0.5/y" ', b'3,url="https://app.example/y" '),
    (b"1; http://127.0.0.1:9001/x", b"1; https://app.example/x"),
    (b"1.5; url=http://127.0.0.1:9001/x ", b"1.5; url=https://app.example/x "),
    (b"2; url='http://127.0.0.1:9001/x", b"2; url='https://app.example/x"),  # unclosed quote
    (b"5; url=/x", b"5; url=/x"),
    (b"5; url=http://other.example/x", b"5; url=http://other.example/x"),
    (b"5", b"5"),
    (b"soon", b"soon"),
]


@pytest.mark.parametrize(("sent", "received"), REFRESHES)
def test_the_url_of_refresh_naming_a_backend_is_rewritten(sent, received):
    assert to_client((b"Refresh", sent)) == [(b"Refresh", received)]


def test_link_targets_naming_a_backend_are_rewritten():
    sent = b'<http://127.0.0.1:9001/wp-json/>; rel="https://api.w.org/", </s.css>; rel=preload'
    assert to_client((b"Link", sent)) == [
        (b"Link", b'<https://app.example/wp-json/>; rel="https://api.w.org/", </s.css>; rel=preload')]


# Set-Cookie from the backend -> what the client gets
COOKIES = [
    (b"id=1; Path=/; Domain=127.0.0.1; HttpOnly", b"id=1; Path=/; HttpOnly"),
    (b"id=1; domain=.Backend.Internal", b"id=1"),
    (b"id=1; Domain=app.example; Secure", b"id=1; Domain=app.example; Secure"),
    (b"id=1; Path=/127.0.0.1", b"id=1; Path=/127.0.0.1"),
]


@pytest.mark.parametrize(("sent", "received"), COOKIES)
def test_a_cookie_domain_naming_a_backend_is_left_out(sent, received):
    assert to_client((b"Set-Cookie", sent)) == [(b"Set-Cookie", received)]


def test_backend_names_know_each_authority_in_any_case():
    assert NAMES.names(b"127.0.0.1:9001")
    assert NAMES.names(b"10.0.0.5") and NAMES.names(b"10.0.0.5:80")
    assert NAMES.names(b"[::1]:9002") and NAMES.names(b"Backend.Internal:8080")
    assert not NAMES.names(b"127.0.0.1") and not NAMES.names(b"::1:9002")
    assert not NAMES.names(b"10.0.0.5", (443,))


header_names = st.sampled_from(sorted(BACKEND_IDENTIFYING) + [
    b"content-type", b"date", b"etag", b"x-request-id", b"vary", b"cache-control"])
spellings = header_names.flatmap(lambda n: st.sampled_from([n, n.upper(), n.title()]))


@given(st.lists(st.tuples(spellings, st.binary(max_size=20)), max_size=12))
def test_what_is_left_is_every_other_field_in_order(headers):
    out = response_fields(headers, NAMES, PUBLIC)
    assert out == [h for h in headers if h[0].lower() not in BACKEND_IDENTIFYING]


@given(st.sampled_from([b"http://127.0.0.1:9001", b"//[::1]:9002", b"http://10.0.0.5"]),
       st.text("abc/?#=&%.-_~", max_size=30).map(str.encode))
def test_a_location_on_a_backend_keeps_its_path_and_loses_its_authority(authority, rest):
    rest = b"/" + rest
    assert to_client((b"Location", authority + rest)) == [(b"Location", PUBLIC + rest)]


# --- requests: what a backend gets ---

def to_backend(*headers, peer=None, proto="https", host=b"app.example", strip_auth=False):
    return request_fields(list(headers), peer=peer, proto=proto, host=host,
                          strip_auth=strip_auth)


SPOOFS = [b"Forwarded", b"X-Forwarded-For", b"x-forwarded-host", b"X-FORWARDED-PROTO",
          b"X-Real-IP", b"Via", b"X_Forwarded_For", b"x_real_ip", b"X-Forwarded-Port",
          b"True-Client-IP", b"CF-Connecting-IP", b"X-Original-URL", b"X-Rewrite-URL",
          b"X-Forwarded-Prefix", b"X-Forwarded-Ssl", b"Front-End-Https", b"Proxy",
          b"Proxy-Authorization", b"Proxy-Connection", b"Proxy-Anything", b"Proxy_Custom"]


@pytest.mark.parametrize("name", SPOOFS)
@pytest.mark.parametrize("peer", [None, "203.0.113.9"])
def test_a_client_cannot_set_what_the_backend_trusts(name, peer):
    out = to_backend((b"Host", b"app.example"), (name, b"127.0.0.1"), peer=peer)
    assert (name, b"127.0.0.1") not in out
    assert all(v != b"127.0.0.1" for _, v in out)


def test_without_forwarded_the_backend_learns_nothing_of_the_client():
    assert to_backend((b"Host", b"app.example"), (b"Accept", b"*/*"),
                      (b"X-Forwarded-For", b"1.2.3.4")) == [(b"Host", b"app.example"),
                                                          (b"Accept", b"*/*")]


# peer, proto, host -> the fields added
FORWARDED = [
    ("203.0.113.9", "https", b"app.example",
     [(b"Forwarded", b"for=203.0.113.9;proto=https;host=app.example"),
      (b"X-Forwarded-For", b"203.0.113.9"), (b"X-Forwarded-Proto", b"https"),
      (b"X-Forwarded-Host", b"app.example")]),
    ("2001:db8::7", "http", b"app.example:8443",
     [(b"Forwarded", b'for="[2001:db8::7]";proto=http;host="app.example:8443"'),
      (b"X-Forwarded-For", b"2001:db8::7"), (b"X-Forwarded-Proto", b"http"),
      (b"X-Forwarded-Host", b"app.example:8443")]),
    ("::ffff:192.0.2.1", "https", b'a"b\\c',
     [(b"Forwarded", b'for=192.0.2.1;proto=https;host="a\\"b\\\\c"'),
      (b"X-Forwarded-For", b"192.0.2.1"), (b"X-Forwarded-Proto", b"https"),
      (b"X-Forwarded-Host", b'a"b\\c')]),
    ("192.0.2.1", "https", b"bad\r\nX-Admin: 1",
     [(b"Forwarded", b"for=192.0.2.1;proto=https"), (b"X-Forwarded-For", b"192.0.2.1"),
      (b"X-Forwarded-Proto", b"https")]),
]


@pytest.mark.parametrize(("peer", "proto", "host", "added"), FORWARDED)
def test_forwarded_on_appends_the_entrys_own_fields(peer, proto, host, added):
    assert forwarded_fields(peer, proto, host) == added
    out = to_backend((b"Host", host), (b"Forwarded", b"for=10.9.9.9"), peer=peer, proto=proto,
                     host=host)
    assert out == [(b"Host", host), *added]


def test_authorization_is_the_entrys_own_when_it_checks_basic_auth():
    sent = [(b"Host", b"app.example"), (b"Authorization", b"Basic dTpwYXNzd29yZA==")]
    assert to_backend(*sent, strip_auth=True) == [(b"Host", b"app.example")]
    assert to_backend(*sent, strip_auth=False) == sent


def test_hop_by_hop_and_listed_fields_are_dropped():
    assert to_backend((b"Host", b"app.example"), (b"Connection", b"keep-alive, X-Trace"),
                      (b"Keep-Alive", b"timeout=5"), (b"X-Trace", b"1"), (b"TE", b"trailers"),
                      (b"Content-Length", b"2")) == [(b"Host", b"app.example"),
                                                      (b"Content-Length", b"2")]


def test_a_websocket_handshake_keeps_its_upgrade_pair():
    sent = [(b"Host", b"app.example"), (b"Upgrade", b"websocket"),
            (b"Connection", b"keep-alive, Upgrade"), (b"Sec-WebSocket-Key", b"k"),
            (b"Sec-WebSocket-Version", b"13")]
    assert to_backend(*sent) == [(b"Host", b"app.example"), (b"Upgrade", b"websocket"),
                                 (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Key", b"k"),
                                 (b"Sec-WebSocket-Version", b"13")]


def test_another_upgrade_does_not_pass():
    assert to_backend((b"Host", b"app.example"), (b"Upgrade", b"h2c"),
                      (b"Connection", b"Upgrade, HTTP2-Settings"),
                      (b"HTTP2-Settings", b"AAA")) == [(b"Host", b"app.example")]


def test_host_stays_as_the_client_sent_it_and_only_once():
    assert to_backend((b"host", b"App.Example:8443"), (b"Accept", b"*/*"),
                      (b"Host", b"evil.example")) == [(b"host", b"App.Example:8443"),
                                                      (b"Accept", b"*/*")]
    assert to_backend((b"Accept", b"*/*"), host=b"app.example") == [
        (b"Host", b"app.example"), (b"Accept", b"*/*")]


def test_the_parsers_scan_may_be_passed_on():
    sent = [(b"Host", b"a"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
    assert request_fields(sent, peer=None, proto="http", host=b"a", strip_auth=False,
                          websocket=False, listed=frozenset({b"upgrade"})) == [(b"Host", b"a")]


forged = st.sampled_from(sorted(IDENTIFYING | BACKEND_TRUSTED)).flatmap(
    lambda n: st.sampled_from([n, n.upper(), n.replace(b"-", b"_")]))
request_names = st.one_of(forged, st.sampled_from([b"Accept", b"Cookie", b"User-Agent"]))


@given(st.lists(st.tuples(request_names, st.binary(max_size=12)), max_size=10),
       st.sampled_from([None, "198.51.100.4", "2001:db8::1"]))
def test_the_only_forwarding_fields_a_backend_gets_are_the_entrys(headers, peer):
    out = to_backend((b"Host", b"app.example"), *headers, peer=peer)
    theirs = [f for f in out if f[0].lower().replace(b"_", b"-") in IDENTIFYING | BACKEND_TRUSTED]
    assert theirs == ([] if peer is None else forwarded_fields(peer, "https", b"app.example"))


@pytest.mark.parametrize(("name", "value"), [
    (b"Link", b"<" * 100_000), (b"Refresh", b" " * 100_000 + b"x"),
    (b"Set-Cookie", b"a=b" + b"; domain=x y" * 10_000), (b"Location", b"/" * 100_000 + b"x"),
])
def test_a_pathological_value_takes_one_pass_not_a_square(name, value):
    assert to_client((name, value)) == [(name, value)]
