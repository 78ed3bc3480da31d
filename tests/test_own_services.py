"""The proxy's own services are never destinations, as tables (pure):
anonproxy.policy.own_services."""

from __future__ import annotations

import pytest

from anonproxy.policy.own_services import after_connect, before_connect, through_hop
from anonproxy.wire.address import Address

OWNS = [(Address("127.0.0.1", 8118), "listener"), (Address("localhost", 8119), "dashboard"),
        (Address("127.0.0.1", 9051), "tor control"), (Address("127.0.0.1", 9050), "tor socks"),
        (Address("0.0.0.0", 8200), "other")]


@pytest.mark.parametrize("dest, words", [
    (Address("127.0.0.1", 8118), "refusing to forward to the proxy's own address 127.0.0.1:8118"),
    (Address("localhost", 8119), "the proxy's own address (its dashboard)"),
    (Address("127.0.0.1", 9051), "a tor control port"),
    (Address("::1", 9050), "a tor SOCKS port"),
    (Address("0.0.0.0", 8200), "another running anonproxy"),
])
def test_every_kind_of_own_service_is_refused_by_name_before_connecting(dest, words):
    refusal = before_connect(dest, OWNS)
    assert refusal is not None and words in refusal


@pytest.mark.parametrize("dest", [Address("127.0.0.1", 8117), Address("example.com", 8118),
                                  Address("192.0.2.1", 9050)])
def test_other_destinations_pass_before_connecting(dest):
    assert before_connect(dest, OWNS) is None


@pytest.mark.parametrize("peer, local, words", [
    (("127.0.0.1", 8118), "127.0.0.1", "refusing to connect to the proxy itself (name.example:80 led there)"),
    (("127.0.0.3", 8119), "127.0.0.1", "the proxy's dashboard"),
    (("127.0.0.1", 9051), "127.0.0.1", "a tor control port of this proxy"),
    (("127.0.0.1", 9050), "127.0.0.1", "a tor SOCKS port of this proxy"),
    (("192.0.2.7", 8200), "192.0.2.7", "another running anonproxy"),
])
def test_a_name_that_led_to_one_of_our_services_is_dropped_after_connecting(peer, local, words):
    refusal = after_connect(Address("name.example", 80), peer, local, OWNS)
    assert refusal is not None and words in refusal


def test_a_connection_elsewhere_is_kept():
    assert after_connect(Address("n.example", 80), ("192.0.2.9", 8118), "192.0.2.7", OWNS) is None


@pytest.mark.parametrize("hop_local, bound, port, refused", [
    (True, None, 8118, "the hop runs on this machine"),
    (False, Address("127.0.0.1", 4000), 9050, "the hop says it connected from a loopback address"),
    (False, Address("192.0.2.1", 4000), 8118, None),
    (False, None, 8118, None),
    (True, None, 443, None),
])
def test_a_local_hop_may_not_reach_a_port_one_of_our_services_listens_on(
        hop_local, bound, port, refused):
    refusal = through_hop(Address("far.example", port), hop_local, bound, OWNS)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal and f"listens on port {port}" in refusal
