"""Destinations and listen addresses as tables (pure): anonproxy.wire.address."""

from __future__ import annotations

import pytest

from anonproxy.wire.address import (
    Address,
    AddressError,
    check_host,
    check_port,
    is_loopback_host,
    parse_authority,
    plain_ip,
    reaches,
    special_use,
    special_use_refusal,
    targets_listener,
)


@pytest.mark.parametrize("spelling, address", [
    ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"), ("0x7F000001", "127.0.0.1"), ("127.0.1", "127.0.0.1"),
    ("169.254.169.254", "169.254.169.254"),
    ("[::ffff:127.0.0.1]", "127.0.0.1"), ("::ffff:7f00:1", "127.0.0.1"), ("[::1]", "::1"),
    ("[2001:DB8::1]", "2001:db8::1"), ("Example.COM.", "example.com"), ("a_b.example", "a_b.example"),
])
def test_every_spelling_of_an_address_is_normalised_to_the_address_it_reaches(spelling, address):
    assert check_host(spelling) == address


@pytest.mark.parametrize("host, problem", [
    ("[::1", "not a valid host name"), ("[nope]", "not a valid IPv6 address"),
    ("256.0.0.1", "not a valid IPv4 address"), ("0x1ffffffff", "not a valid IPv4 address"),
    ("127.0.0.1.", "not a valid IPv4 address"),  # refused, never taken for a name
    ("exa mple.com", "not a valid host name"), ("-x.example", "not a valid host name"),
    ("a" * 254, "not a valid host name"), ("", "not a valid host name"),
])
def test_unusable_hosts_are_refused_in_one_sentence(host, problem):
    with pytest.raises(AddressError, match=problem):
        check_host(host)


@pytest.mark.parametrize("text, default, listening, expected", [
    ("example.com:80", None, False, Address("example.com", 80)),
    ("[::1]:8118", None, False, Address("::1", 8118)),
    ("[::1]", 443, False, Address("::1", 443)),
    ("example.com", 443, False, Address("example.com", 443)),
    ("127.0.0.1:0", None, True, Address("127.0.0.1", 0)),
    ("h:65535", None, False, Address("h", 65535)),
])
def test_authorities_parse(text, default, listening, expected):
    assert parse_authority(text, default, listening=listening) == expected


@pytest.mark.parametrize("text, default, listening, problem", [
    ("example.com", None, False, "the port is missing"),
    ("[::1]x", None, False, "expected host:port"),
    ("[::1:80", None, False, "bracket is not closed"),
    ("::1:80", None, False, "put IPv6 addresses in brackets"),
    ("h:0", None, False, "outside 1-65535"),
    ("h:65536", None, True, "outside 0-65535"),
    ("h:+80", None, False, "outside 1-65535"),
    ("h:x", None, False, "not a number"),
])
def test_malformed_authorities_are_refused(text, default, listening, problem):
    with pytest.raises(AddressError, match=problem):
        parse_authority(text, default, listening=listening)


def test_ports_are_numbers_in_range():
    assert check_port(1) == 1 and check_port("65535") == 65535
    assert check_port(0, allow_zero=True) == 0
    for bad in (0, 65536, -1, "1.5", None):
        with pytest.raises(AddressError):
            check_port(bad)


@pytest.mark.parametrize("address, default, text", [
    (Address("::1", 80), 80, "[::1]"), (Address("::1", 81), 80, "[::1]:81"),
    (Address("h", 443), None, "h:443"), (Address("h", 443), 443, "h"),
])
def test_authority_brackets_ipv6_and_leaves_out_the_default_port(address, default, text):
    assert address.authority(default) == text
    assert str(address) == address.authority()


def test_an_address_knows_whether_it_is_an_ip():
    assert str(Address("::1", 1).ip) == "::1" and Address("h.example", 1).ip is None


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("a.localhost", True), ("127.0.0.2", True), ("::1", True),
    ("localhost.example", False), ("mylocalhost", False), ("10.0.0.1", False), ("::", False),
])
def test_loopback_names_and_addresses(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("dest, listen, loop", [
    (Address("127.0.0.1", 8118), Address("127.0.0.1", 8118), True),
    (Address("127.0.0.1", 8119), Address("127.0.0.1", 8118), False),
    (Address("localhost", 8118), Address("127.0.0.1", 8118), True),
    (Address("0.0.0.0", 8118), Address("::1", 8118), True),
    (Address("127.0.0.2", 8118), Address("0.0.0.0", 8118), True),
    (Address("::", 8118), Address("::", 8118), True),
    # a listener on a non-loopback address: only that address reaches it by name
    (Address("192.0.2.7", 8118), Address("192.0.2.7", 8118), True),
    (Address("127.0.0.1", 8118), Address("192.0.2.7", 8118), False),
    (Address("192.0.2.8", 8118), Address("192.0.2.7", 8118), False),
    (Address("192.0.2.7", 8118), Address("127.0.0.1", 8118), False),
])
def test_the_self_loop_check_knows_which_destinations_reach_the_listener(dest, listen, loop):
    assert targets_listener(dest, listen) is loop


@pytest.mark.parametrize("peer, local, own, reached", [
    (("127.0.0.1", 8118), "127.0.0.1", Address("127.0.0.1", 8118), True),
    (("::ffff:127.0.0.1", 8118), "127.0.0.1", Address("127.0.0.1", 8118), True),
    (("127.0.0.1", 8119), "127.0.0.1", Address("127.0.0.1", 8118), False),
    (("192.0.2.7", 8118), "192.0.2.7", Address("0.0.0.0", 8118), True),
    (("127.0.0.5", 8118), "192.0.2.7", Address("0.0.0.0", 8118), True),
    (("192.0.2.9", 8118), "192.0.2.7", Address("0.0.0.0", 8118), False),
    (("127.0.0.2", 8118), "127.0.0.1", Address("localhost", 8118), True),
    (("127.0.0.2", 8118), "127.0.0.1", Address("127.0.0.1", 8118), False),
    (("192.0.2.7", 8118), "192.0.2.1", Address("localhost", 8118), False),
    (("127.0.0.1", 8118), "127.0.0.1", Address("192.0.2.7", 8118), False),
])
def test_a_connected_peer_is_recognised_as_our_own_socket(peer, local, own, reached):
    assert reaches(peer, local, own) is reached


def test_plain_ip_unwraps_mapped_addresses_and_scopes():
    assert plain_ip("::ffff:10.0.0.1") == "10.0.0.1"
    assert plain_ip("fe80::1%eth0") == "fe80::1"
    assert plain_ip("not-an-ip") == "not-an-ip"


@pytest.mark.parametrize("label", ["onion", "exit", "i2p", "local", "invalid", "alt"])
def test_every_special_use_name_is_refused_before_any_lookup(label):
    host = f"name.{label}"
    assert special_use(host) == label
    assert special_use(label) == label
    refusal = special_use_refusal(host, tor_exit=label != "onion")
    assert refusal is not None and refusal.startswith(host)
    assert "alone names no host" in special_use_refusal(label, tor_exit=True)


def test_only_a_tor_exit_may_carry_an_onion_name():
    assert special_use_refusal("x.onion", tor_exit=True) is None
    assert "this profile has none" in special_use_refusal("x.onion")
    for host in ("onion.example", "example.com", "127.0.0.1", "::1"):
        assert special_use(host) is None and special_use_refusal(host) is None


@pytest.mark.parametrize("host", ["app.example\n", "1.2.3.4\n", "a.b\n\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_host(host):
    """`$` would match before a final newline: a name with one must not pass the check."""
    with pytest.raises(AddressError):
        check_host(host)
