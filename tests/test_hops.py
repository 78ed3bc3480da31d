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
