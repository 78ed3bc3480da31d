"""The SOCKS5 handshake as transcripts (pure), plus hostile input from hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonproxy.wire import socks5
from anonproxy.wire.address import Address
from anonproxy.wire.socks5 import ConnectRequest, Credentials, SocksError


@pytest.mark.parametrize("data, expected", [
    (b"", None),
    (b"\x05", None),
    (b"\x05\x02\x00", None),
    (b"\x05\x02\x00\x02", ([0, 2], 4)),
    (b"\x05\x01\x00GET", ([0], 3)),
])
def test_greeting(data, expected):
    assert socks5.parse_greeting(data) == expected


@pytest.mark.parametrize("data", [b"\x04\x01", b"GET / HTTP/1.1", b"\x05\x00"])
def test_bad_greetings_close(data):
    with pytest.raises(SocksError) as error:
        socks5.parse_greeting(data)
    assert error.value.reply is None


@pytest.mark.parametrize("methods, required, chosen", [
    ([0], False, 0), ([0, 2], False, 2), ([2], False, 2), ([0], True, 0xFF), ([1, 3], False, 0xFF),
])
def test_method_choice(methods, required, chosen):
    assert socks5.choose_method(methods, required) == chosen


def test_userpass():
    assert socks5.parse_userpass(b"\x01\x04user\x06secret") == (Credentials("user", "secret"), 13)
    assert socks5.parse_userpass(b"\x01\x04user\x06sec") is None
    assert socks5.parse_userpass(b"\x01\x00\x00") == (Credentials("", ""), 3)


@pytest.mark.parametrize("data, expected", [
    (b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50", (ConnectRequest(Address("127.0.0.1", 80)), 10)),
    (b"\x05\x01\x00\x03\x0bExample.COM\x01\xbb", (ConnectRequest(Address("example.com", 443)), 18)),
    (b"\x05\x01\x00\x04" + b"\x00" * 15 + b"\x01\x00\x16", (ConnectRequest(Address("::1", 22)), 22)),
    (b"\x05\x01\x00\x03\x0bexample.com\x01", None),
    # found by scripts/fuzz: an IPv4-mapped IPv6 address is the IPv4 address it reaches, so CIDR
    # rules and the loopback and link-local (metadata) checks cannot be dodged by writing it so
    (b"\x05\x01\x00\x04" + b"\x00" * 10 + b"\xff\xff\xa9\xfe\xa9\xfe\x00\x50",
     (ConnectRequest(Address("169.254.169.254", 80)), 22)),
    (b"\x05\x01\x00\x04" + b"\x00" * 10 + b"\xff\xff\x7f\x00\x00\x01\x00\x50",
     (ConnectRequest(Address("127.0.0.1", 80)), 22)),
])
def test_connect_requests(data, expected):
    assert socks5.parse_request(data) == expected


@pytest.mark.parametrize("data, reply", [
    (b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", 0x07),
    (b"\x05\x03\x00\x01\x7f\x00\x00\x01\x00\x50", 0x07),
    (b"\x05\x01\x00\x05\x7f\x00\x00\x01\x00\x50", 0x08),
    (b"\x05\x01\x00\x03\x00\x00\x50", 0x01),
    (b"\x05\x01\x00\x03\x03a b\x00\x50", 0x01),
    (b"\x05\x01\x00\x03\x03a\x00b\x00\x50", 0x01),
    (b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00", 0x01),
    (b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50", 0x01),
])
def test_refused_requests_carry_their_reply_code(data, reply):
    with pytest.raises(SocksError) as error:
        socks5.parse_request(data)
    assert error.value.reply == reply


def test_reply_reveals_no_address():
    assert socks5.reply(0) == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_bytes_never_escape_as_anything_but_socks_errors(data):
    for parse in (socks5.parse_greeting, socks5.parse_userpass, socks5.parse_request):
        try:
            result = parse(data)
        except SocksError as error:
            assert error.message
            continue
        assert result is None or result[1] <= len(data)


def test_the_server_speaks_rfc_1928s_bytes():
    assert socks5.method_reply(socks5.USERPASS) == b"\x05\x02"
    assert socks5.method_reply(socks5.NO_ACCEPTABLE) == b"\x05\xff"
    assert socks5.reply(socks5.SUCCEEDED) == b"\x05\x00\x00\x01" + bytes(6)
    assert socks5.userpass_reply(True) == b"\x01\x00" and socks5.userpass_reply(False) == b"\x01\x01"


def test_an_empty_hostname_is_refused_with_a_general_failure():
    with pytest.raises(SocksError, match="empty hostname") as refused:
        socks5.parse_request(b"\x05\x01\x00\x03\x00\x00\x50")
    assert refused.value.reply == 0x01
