"""wire/origin_form.py as tables: the path a request inside an opened HTTPS connection sends,
and the requests refused there (400 for what cannot be a request on it, 421 for a request
naming another host or port). Pure: no TLS, no sockets."""

from __future__ import annotations

import pytest

from anonproxy.wire.address import Address
from anonproxy.wire.errors import BadRequest, Misdirected
from anonproxy.wire.origin_form import inner_path

SITE = Address("site.test", 443)
ODD_PORT = Address("site.test", 8443)
V6 = Address("::1", 443)


def host(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Accept", b"*/*"), (b"Host", value)]


@pytest.mark.parametrize(("method", "target", "headers", "dest", "path"), [
    (b"GET", b"/", host(b"site.test"), SITE, b"/"),
    (b"GET", b"/a/b?token=secret&x=1", host(b"site.test"), SITE, b"/a/b?token=secret&x=1"),
    (b"GET", b"//other.test/p", host(b"site.test"), SITE, b"//other.test/p"),  # a path, as sent
    (b"OPTIONS", b"*", host(b"site.test"), SITE, b"*"),
    (b"GET", b"/", host(b"site.test:443"), SITE, b"/"),
    (b"GET", b"/", host(b"SITE.Test."), SITE, b"/"),
    (b"GET", b"/", [(b"HOST", b"site.test")], SITE, b"/"),  # the name in any case
    (b"GET", b"/", host(b"site.test"), ODD_PORT, b"/"),  # no port: the connection's
    (b"GET", b"/", host(b"site.test:8443"), ODD_PORT, b"/"),
    (b"GET", b"/", host(b"[::1]"), V6, b"/"),
    (b"GET", b"/", host(b"[::1]:443"), V6, b"/"),
    # absolute-form: the path of the target, its scheme and authority checked and taken off
    (b"GET", b"https://site.test/p?q=1", host(b"site.test"), SITE, b"/p?q=1"),
    (b"GET", b"https://site.test", host(b"site.test"), SITE, b"/"),
    (b"GET", b"HTTPS://Site.Test./p", host(b"site.test"), SITE, b"/p"),
    (b"GET", b"https://site.test:443/p", host(b"site.test"), SITE, b"/p"),
    (b"GET", b"https://site.test:8443/p", host(b"site.test"), ODD_PORT, b"/p"),
    (b"GET", b"https://[::1]/p", host(b"[::1]"), V6, b"/p"),
    (b"GET", b"https://[::1]:443/p", host(b"[::1]"), V6, b"/p"),
])
def test_the_path_sent_is_the_clients_target(method, target, headers, dest, path):
    assert inner_path(method, target, headers, dest) == path


@pytest.mark.parametrize(("method", "target", "headers", "dest"), [
    (b"CONNECT", b"site.test:443", host(b"site.test:443"), SITE),
    (b"GET", b"*", host(b"site.test"), SITE),  # asterisk-form is OPTIONS' only
    (b"GET", b"site.test:443", host(b"site.test"), SITE),  # authority-form outside CONNECT
    (b"GET", b"/", [(b"Accept", b"*/*")], SITE),  # no Host
    (b"GET", b"/", [(b"Host", b"site.test"), (b"Host", b"site.test")], SITE),  # two
    (b"GET", b"/", host(b"site.test:https"), SITE),
    (b"GET", b"/", host(b"site.t\xe9st"), SITE),  # not ASCII
    (b"GET", b"/", host(b"[::1"), V6),
])
def test_what_cannot_be_a_request_on_the_connection_is_400(method, target, headers, dest):
    with pytest.raises(BadRequest) as raised:
        inner_path(method, target, headers, dest)
    assert type(raised.value) is BadRequest and raised.value.status == 400


@pytest.mark.parametrize(("target", "headers", "path"), [
    (b"/p", [], b"/p"),  # for the connection's host, which the site receives as its Host
    (b"https://site.test/p", [(b"Accept", b"*/*")], b"/p"),
    (b"/p", host(b"site.test"), b"/p"),
])
def test_an_http_1_0_request_may_come_without_host(target, headers, path):
    assert inner_path(b"GET", target, headers, SITE, b"1.0") == path


@pytest.mark.parametrize(("target", "headers", "error"), [
    (b"/p", [], BadRequest),  # HTTP/1.1 asks for Host
    (b"/p", host(b"other.test"), Misdirected),
    (b"https://other.test/p", [], Misdirected),
    (b"/p", [(b"Host", b"site.test"), (b"Host", b"site.test")], BadRequest),
])
def test_an_http_1_0_request_without_host_only(target, headers, error):
    version = b"1.1" if headers == [] and error is BadRequest else b"1.0"
    with pytest.raises(error) as raised:
        inner_path(b"GET", target, headers, SITE, version)
    assert type(raised.value) is error


@pytest.mark.parametrize("target", [b"site.test:443", b"/", b"https://site.test/"])
def test_a_connect_inside_is_refused_whatever_its_target(target):
    with pytest.raises(BadRequest) as raised:
        inner_path(b"CONNECT", target, host(b"site.test"), SITE)
    assert raised.value.message == "CONNECT inside an opened HTTPS connection"
    assert type(raised.value) is BadRequest


@pytest.mark.parametrize(("target", "headers", "dest"), [
    (b"/", host(b"other.test"), SITE),
    (b"/", host(b"site.test:444"), SITE),
    (b"/", host(b"site.test:443"), ODD_PORT),
    (b"/", host(b"www.site.test"), SITE),
    (b"/", host(b"[::2]"), V6),
    (b"https://other.test/p", host(b"site.test"), SITE),
    (b"https://site.test:444/p", host(b"site.test"), SITE),
    (b"https://site.test/p", host(b"site.test"), ODD_PORT),  # no port in https: 443
    (b"http://site.test:443/p", host(b"site.test"), SITE),  # not https
    (b"ftp://site.test:443/p", host(b"site.test"), SITE),
    (b"https://site.test/p", host(b"other.test"), SITE),  # the target right, the Host not
    (b"https://[::2]/p", host(b"[::1]"), V6),
])
def test_a_request_naming_another_host_or_port_is_421(target, headers, dest):
    with pytest.raises(Misdirected) as raised:
        inner_path(b"GET", target, headers, dest)
    assert raised.value.status == 421


def test_the_421_names_the_authority_asked_for_never_the_path():
    with pytest.raises(Misdirected) as raised:
        inner_path(b"GET", b"https://other.test:8443/reset?token=s3cret", host(b"site.test"), SITE)
    assert raised.value.message == ("a request for https://other.test:8443 on a connection to "
                                    "site.test:443")
    with pytest.raises(Misdirected) as raised:
        inner_path(b"GET", b"/reset?token=s3cret", host(b"other.test"), SITE)
    assert raised.value.message == "a request for other.test:443 on a connection to site.test:443"


def test_the_authority_shown_is_cut_at_200_characters():
    name = b"a" * 300 + b".test"
    with pytest.raises(Misdirected) as raised:
        inner_path(b"GET", b"https://" + name + b"/p", host(b"site.test"), SITE)
    shown = raised.value.message.removeprefix("a request for ").split(" on a connection")[0]
    assert shown == ("https://" + name.decode())[:200]


def test_an_explicit_port_0_is_another_port():
    with pytest.raises(BadRequest):
        inner_path(b"GET", b"https://site.test:0/p", host(b"site.test"), SITE)
