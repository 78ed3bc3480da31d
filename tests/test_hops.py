"""Client-side hop handshakes as transcripts (pure)."""

from __future__ import annotations

import pytest

from anonproxy.wire import hops
from anonproxy.wire.address import Address
from anonproxy.wire.hops import Hop, HopRefused, HopUrlError, parse_hop


@pytest.mark.parametrize("url, hop", [
    ("socks5://127.0.0.1:1080", Hop("socks5", Address("127.0.0.1", 1080))),
    ("socks5h://u:p%40ss@proxy.example:1080", Hop("socks5", Address("proxy.example", 1080), "u", "p@ss")),
    ("http://[::1]:3128", Hop("http", Address("::1", 3128))),
])
def test_parse(url, hop):
    assert parse_hop(url) == hop


@pytest.mark.parametrize("url, message", [
    ("socks4://127.0.0.1:1080", "SOCKS4"),
    ("socks4a://127.0.0.1:1080", "SOCKS4"),
    ("https://127.0.0.1:443", "not supported"),
    ("socks5://127.0.0.1", "host:port"),
    ("socks5://127.0.0.1:1080/path", "no path"),
])
def test_refused_urls(url, message):
    with pytest.raises(HopUrlError, match=message):
        parse_hop(url)


def test_socks5_sends_the_name_never_an_address():
    assert hops.socks5_connect(Address("example.com", 443)) == b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    assert hops.socks5_connect(Address("127.0.0.1", 80)) == b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"


def test_socks5_auth_transcript():
    hop = parse_hop("socks5://user:pw@127.0.0.1:1")
    assert hops.socks5_greeting(hop) == b"\x05\x01\x02"
    assert hops.socks5_auth(hop) == b"\x01\x04user\x02pw"
    assert hops.socks5_parse_method(b"\x05\x02") == (2, 2)
    with pytest.raises(HopRefused, match="username and password"):
        hops.socks5_parse_auth(b"\x01\x01")


@pytest.mark.parametrize("reply, code, about_target", [
    (b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00", 0x05, True),
    (b"\x05\x04\x00\x01\x00\x00\x00\x00\x00\x00", 0x04, True),
])
def test_socks5_refusals_carry_codes(reply, code, about_target):
    with pytest.raises(HopRefused) as error:
        hops.socks5_parse_reply(reply)
    assert error.value.socks_reply == code and error.value.about_target is about_target


def test_socks5_reply_lengths():
    assert hops.socks5_reply_length(b"\x05\x00\x00\x01\x00") == 10
    assert hops.socks5_reply_length(b"\x05\x00\x00\x04\x00") == 22
    assert hops.socks5_reply_length(b"\x05\x00\x00\x03\x05") == 12
    assert hops.socks5_parse_reply(b"\x05\x00\x00\x03\x01a\x00\x50") == (Address("a", 80), 8)


def test_http_connect_carries_only_authority_and_credentials():
    hop = parse_hop("http://u:p@127.0.0.1:3128")
    assert hops.http_connect(hop, Address("example.com", 443)) == (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
        b"Proxy-Authorization: Basic dTpw\r\n\r\n")
    assert b"User-Agent" not in hops.http_connect(parse_hop("http://127.0.0.1:1"), Address("::1", 80))
    assert hops.http_connect(parse_hop("http://127.0.0.1:1"), Address("::1", 80)).startswith(
        b"CONNECT [::1]:80 HTTP/1.1")


@pytest.mark.parametrize("status, message", [(407, "authentication"), (403, "refused"), (502, "could not reach")])
def test_http_connect_refusals(status, message):
    with pytest.raises(HopRefused, match=message):
        hops.http_connect_status(status, b"No")
    hops.http_connect_status(200, b"Connection established")


# --- tables the mutation run found unchecked ---------------------------------------------------

@pytest.mark.parametrize("code, text, reply", [
    (0x01, "general failure", 0x01), (0x02, "not allowed by its rules", 0x02),
    (0x03, "network unreachable", 0x03), (0x04, "host unreachable", 0x04),
    (0x05, "connection refused", 0x05), (0x06, "TTL expired", 0x01),
    (0x07, "command not supported", 0x01), (0x08, "address type not supported", 0x01),
    (0x42, "reply code 66", 0x01),
])
def test_every_socks5_refusal_is_named_and_mapped_for_our_own_client(code, text, reply):
    with pytest.raises(HopRefused) as refused:
        hops.socks5_parse_reply(bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0)))
    assert (refused.value.message, refused.value.socks_reply) == (text, reply)
    assert str(refused.value) == text and refused.value.about_target


@pytest.mark.parametrize("dest, target", [
    (Address("192.0.2.1", 80), b"\x01\xc0\x00\x02\x01"),
    (Address("2001:db8::1", 443), b"\x04" + bytes.fromhex("20010db8000000000000000000000001")),
    (Address("example.com", 8080), b"\x03\x0bexample.com"),
])
def test_socks5_connect_names_the_destination_in_its_own_address_type(dest, target):
    assert hops.socks5_connect(dest) == b"\x05\x01\x00" + target + dest.port.to_bytes(2, "big")


@pytest.mark.parametrize("reply, bound", [
    (b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90", Address("127.0.0.1", 8080)),
    (b"\x05\x00\x00\x04" + bytes(15) + b"\x01\x00\x50", Address("::1", 80)),
    (b"\x05\x00\x00\x03\x04host\x00\x16", Address("host", 22)),
])
def test_a_socks5_reply_gives_the_bound_address_at_exactly_its_length(reply, bound):
    for cut in range(len(reply)):
        assert hops.socks5_parse_reply(reply[:cut]) is None
    assert hops.socks5_parse_reply(reply + b"extra") == (bound, len(reply))
    assert hops.socks5_reply_length(reply[:5]) == len(reply)


def test_tor_resolve_asks_for_the_name_with_command_f0():
    assert hops.socks5_resolve("example.com") == b"\x05\xf0\x00\x03\x0bexample.com\x00\x00"


@pytest.mark.parametrize("status, words, reply, about_target", [
    (407, "wants proxy authentication (407 Auth)", 0x02, False),
    (403, "refused the tunnel (403 Auth)", 0x02, True),
    (405, "refused the tunnel (405 Auth)", 0x02, True),
    (502, "could not reach the next step (502 Auth)", 0x04, True),
    (504, "could not reach the next step (504 Auth)", 0x04, True),
    (500, "it answered 500 Auth", 0x01, False),
    (301, "it answered 301 Auth", 0x01, False),
])
def test_an_http_hops_refusal_says_what_it_answered(status, words, reply, about_target):
    with pytest.raises(HopRefused) as refused:
        hops.http_connect_status(status, b" Auth ")
    assert words in refused.value.message
    assert (refused.value.socks_reply, refused.value.about_target) == (reply, about_target)


def test_an_http_hop_opens_the_tunnel_on_any_2xx():
    for status in (200, 204, 299):
        assert hops.http_connect_status(status, b"OK") is None


def test_a_hop_is_named_without_its_credentials():
    hop = parse_hop("socks5://alice:s3cret@127.0.0.1:1080")
    assert hop.masked_url() == "socks5://alice:***@127.0.0.1:1080" and "s3cret" not in str(hop)
    assert str(hop) == "socks5 127.0.0.1:1080"
    assert parse_hop("http://[::1]:3128/").masked_url() == "http://[::1]:3128"


@pytest.mark.parametrize("url", ["socks5://h:1080/path", "http://h:3128/?q", "socks5://h:1080#f",
                                 "socks5://" + "u" * 256 + ":p@h:1080",
                                 "socks5://u:" + "p" * 256 + "@h:1080"])
def test_hop_urls_with_a_path_or_overlong_credentials_are_refused(url):
    with pytest.raises(HopUrlError):
        parse_hop(url)


def test_credentials_of_exactly_255_bytes_are_accepted():
    hop = parse_hop("socks5://" + "u" * 255 + ":" + "p" * 255 + "@h:1080")
    assert hops.socks5_auth(hop) == b"\x01\xff" + b"u" * 255 + b"\xff" + b"p" * 255


def test_the_socks5_client_handshake_is_rfc_1928_and_1929_bytes():
    anonymous, named = parse_hop("socks5://h:1080"), parse_hop("socks5://bob@h:1080")
    assert hops.socks5_greeting(anonymous) == b"\x05\x01\x00"
    assert hops.socks5_greeting(named) == b"\x05\x01\x02"
    assert hops.socks5_auth(named) == b"\x01\x03bob\x00"
    for short in (b"", b"\x05"):
        assert hops.socks5_parse_method(short) is None
    assert hops.socks5_parse_method(b"\x05\x02") == (2, 2)
    for short in (b"", b"\x01"):
        assert hops.socks5_parse_auth(short) is None
    assert hops.socks5_parse_auth(b"\x01\x00") == (True, 2)
    with pytest.raises(HopRefused, match="rejected the username and password"):
        hops.socks5_parse_auth(b"\x01\x01")


def test_http_probe_asks_the_hop_itself_with_our_credentials():
    hop = parse_hop("http://alice:s3cret@127.0.0.4:3128")
    assert hops.http_probe(hop) == (b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.4:3128\r\n"
                                    b"Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n")
    assert hops.http_probe(parse_hop("http://127.0.0.4:3128")) == (
        b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.4:3128\r\n\r\n")


@pytest.mark.parametrize("status", [401, 407])
def test_http_probe_refused_credentials_mean_down(status):
    with pytest.raises(HopRefused) as refused:
        hops.http_probe_status(status, b" Unauthorized ")
    assert refused.value.message == f"it refuses our credentials ({status} Unauthorized)"
    assert refused.value.socks_reply == 0x02


@pytest.mark.parametrize("status", [200, 204, 400, 403, 404, 405, 501, 502])
def test_http_probe_any_other_answer_means_up(status):
    assert hops.http_probe_status(status, b"Whatever") is None
