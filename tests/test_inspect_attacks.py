"""HTTPS inspection under attack: what a web page, a hostile site or network, or a demanding
client can do to an opened connection, with real sockets against the real proxy and real TLS.

The sites are TLS origins on loopback under a test root CA (tests/pki.py), reached by names only
the exit knows (a microsocks whose private /etc/hosts maps them to 127.0.0.1): site.test (the
recording h11 origin), raw.test (scripted bytes, tests/rawserver.py, behind TLS), and sites
whose TLS is wrong in one way each (a certificate for another name, a self-signed one, TLS 1.0
only, a client certificate demanded). The clients are raw ssl sockets trusting the local CA.

What it shows: request smuggling shapes inside TLS are refused before anything reaches the site;
pipelined and HTTP/1.0 requests are answered in order; a request for another host (target or
Host) is 421; a site's broken answer is a 502 or a cut, never a truncated body taken for whole;
a client's TLS that is old, stalled, garbage or early is cut off with a log line; a site's TLS
that fails is a 502 inside TLS with no request sent and no traceback; many opened connections
leave no task or file descriptor behind; the CA key appears nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import time
import warnings

import pytest
from helpers import recv_all, recv_until, socks_connect, wait_until
from pki import PublicRoot, behind, https_origin, server_context
from rawserver import start_raw_server
from upstreams import named_exit

from anonproxy.tls.authority import KEY_NAME, Authority
from anonproxy.wire.address import Address
from anonproxy.wire.errors import BadRequest, Misdirected
from anonproxy.wire.origin_form import inner_path

BROKEN = ("wrongname.test", "selfsigned.test", "old.test", "mtls.test", "mtls12.test")
NAMES = ("site.test", "raw.test", "other.test", "stalled.test", *BROKEN)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    root = PublicRoot(folder)
    servers = {"site.test": https_origin(*root.issue("site.test")),
               "wrongname.test": https_origin(*root.issue("other.test"))}
    self_signed = PublicRoot(folder, "selfsigned.test", "selfsigned.pem")
    servers["selfsigned.test"] = https_origin(*self_signed.issue("selfsigned.test",
                                                                 signer=self_signed))
    old = server_context(*root.issue("old.test"))
    with warnings.catch_warnings():  # (that is the point: a site left on TLS 1.0)
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    servers["old.test"] = behind(old)
    for name, newest in (("mtls.test", ssl.TLSVersion.TLSv1_3),
                         ("mtls12.test", ssl.TLSVersion.TLSv1_2)):
        demanding = server_context(*root.issue(name))
        demanding.maximum_version = newest
        demanding.verify_mode = ssl.CERT_REQUIRED
        demanding.load_verify_locations(root.path)
        servers[name] = behind(demanding)
    raw = start_raw_server()
    raw._server.socket = server_context(*root.issue("raw.test")).wrap_socket(
        raw._server.socket, server_side=True)
    named = named_exit(folder, NAMES)
    yield root, {name: origin for name, (origin, _) in servers.items()}, raw, named
    named.stop()
    raw.close()
    for _, server in servers.values():
        server.shutdown()
        server.server_close()


def _profile(pki, top: str = "", limits: str = "") -> str:
    root, _, _, named = pki
    hosts = ", ".join(f'"{name}"' for name in NAMES if name != "other.test")
    return f"""{top}
default = "block"
[exits.named]
via = ["{named.url}"]
[[rules]]
domains = ["*.test"]
exit = "named"
[inspect]
hosts = [{hosts}]
ca_bundle = "{root.path}"
{limits}
"""


@pytest.fixture
def proxy(start_proxy, pki):
    return start_proxy(_profile(pki))


@pytest.fixture
def site(pki):
    origin = pki[1]["site.test"]
    origin.received.clear()
    return origin


@pytest.fixture
def raw(pki):
    server = pki[2]
    server.requests.clear()
    return server


def _connect(proxy, name: str, port: int) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=10)
    sock.sendall(f"CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n".encode())
    assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200")
    return sock


def _opened(proxy, name: str, port: int, local_ca: str, *, sni: str | None = "",
            context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    """A TLS connection through a CONNECT to name:port; `sni` another name (None: none)."""
    sock = _connect(proxy, name, port)
    if context is None:
        context = ssl.create_default_context(cafile=local_ca)
    # a cut (no close_notify) is an error, never an end: as a browser tells them apart
    return context.wrap_socket(sock, server_hostname=name if sni == "" else sni,
                               suppress_ragged_eofs=False)


def _responses(tls: ssl.SSLSocket, count: int) -> list[bytes]:
    """`count` responses with Content-Length bodies, read off `tls` (heads and bodies)."""
    data, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            more = tls.recv(65536)
            assert more, (out, data)
            data += more
        head, data = data.split(b"\r\n\r\n", 1)
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        if head.startswith(b"HTTP/1.1 1"):
            out.append(head)
            continue
        while len(data) < length:
            more = tls.recv(65536)
            assert more, (out, head, data)
            data += more
        out.append(head + b"\r\n\r\n" + data[:length])
        data = data[length:]
    return out


def _no_traceback(proxy) -> None:
    log = proxy.log()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


# -- requests inside an opened connection


def _host(origin) -> bytes:
    return b"site.test:%d" % origin.port


SMUGGLING = {
    "content-length and transfer-encoding": (
        b"POST /upload HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "two content-lengths": (
        b"POST /upload HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "a coding other than chunked last": (
        b"POST /upload HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "two transfer-encodings": (
        b"POST /upload HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "obs-fold": (
        b"POST /upload HTTP/1.1\r\nHost: {h}\r\nContent-Length:\r\n 5\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "space before the colon": (
        b"POST /upload HTTP/1.1\r\nHost: {h}\r\nContent-Length : 5\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "a bad chunk size": (
        b"POST /upload HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5x\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "a negative content-length": (
        b"POST /upload HTTP/1.1\r\nHost: {h}\r\nContent-Length: -1\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "two hosts": b"GET /echo HTTP/1.1\r\nHost: {h}\r\nHost: raw.test\r\n\r\n",
    "a CONNECT inside": b"CONNECT raw.test:443 HTTP/1.1\r\nHost: raw.test:443\r\n\r\n",
}


@pytest.mark.parametrize("shape", SMUGGLING)
def test_smuggling_shapes_inside_tls_are_refused_before_the_site(proxy, site, local_ca, shape):
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(SMUGGLING[shape].replace(b"{h}", _host(site)))
        answer = recv_all(tls)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
    assert site.received == []
    assert f"https site.test:{site.port} exit=named status=400" in proxy.wait_log("status=400")
    _no_traceback(proxy)


def test_bare_lf_line_ends_reach_the_site_as_one_request_with_crlf(proxy, site, local_ca):
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"GET /echo HTTP/1.1\nHost: %s\nX-A: 1\n\n" % _host(site))
        answer = recv_until(tls, b"}")
    # llhttp takes LF alone as a line end (as every server does); what the site receives is
    # rendered anew with CRLF, so the site cannot read it otherwise
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 400")), answer[:200]
    assert len(site.received) <= 1
    if site.received:
        assert site.last.target == "/echo" and site.last.header("X-A") == "1"


def test_pipelined_requests_and_one_after_a_body_are_answered_in_order(proxy, site, local_ca):
    h = _host(site)
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"GET /echo?1 HTTP/1.1\r\nHost: %s\r\n\r\n"
                    b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 10\r\n\r\n0123456789"
                    b"GET /echo?3 HTTP/1.1\r\nHost: %s\r\n\r\n" % (h, h, h))
        first, second, third = _responses(tls, 3)
    assert b'"target": "/echo?1"' in first
    assert b'"length": 10' in second
    assert b'"target": "/echo?3"' in third
    assert [(r.target, r.body_length) for r in site.received] == [
        ("/echo?1", 0), ("/upload", 10), ("/echo?3", 0)]


def test_http_1_0_closes_unless_kept_alive(proxy, site, local_ca):
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"GET /echo HTTP/1.0\r\nHost: %s\r\n\r\n" % _host(site))
        answer = recv_all(tls)  # the proxy ends the connection after the answer
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"}")
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        request = b"GET /echo HTTP/1.0\r\nHost: %s\r\nConnection: keep-alive\r\n\r\n" % _host(site)
        tls.sendall(request)
        first = _responses(tls, 1)[0]
        assert b"keep-alive" in first.split(b"\r\n\r\n")[0].lower()
        tls.sendall(request)
        assert _responses(tls, 1)[0].startswith(b"HTTP/1.1 200")
    assert len(site.received) == 3


def test_http_1_0_without_host_means_the_connections_host(proxy, site, local_ca):
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
        answer = recv_all(tls)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert site.last.header("Host") == f"site.test:{site.port}"


def test_http_1_1_without_host_is_400(proxy, site, local_ca):
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"GET /echo HTTP/1.1\r\n\r\n")
        assert recv_all(tls).startswith(b"HTTP/1.1 400")
    assert site.received == []


def test_expect_100_continue_inside(proxy, site, local_ca):
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n"
                    b"Expect: 100-continue\r\n\r\n" % _host(site))
        assert recv_until(tls, b"\r\n\r\n").startswith(b"HTTP/1.1 100 ")
        tls.sendall(b"hello")
        answer = _responses(tls, 1)[0]
    assert answer.startswith(b"HTTP/1.1 200") and b'"length": 5' in answer


@pytest.mark.parametrize("target, status", [
    (b"https://site.test:{p}/echo", b"200"),
    (b"https://SITE.TEST.:{p}/echo", b"200"),
    (b"https://raw.test:{p}/echo", b"421"),
    (b"http://site.test:{p}/echo", b"421"),
    (b"https://site.test/echo", b"421"),  # port 443, not the connection's
    (b"https://site.test:{p}@raw.test:{p}/echo", b"421"),
])
def test_absolute_form_inside_names_the_connections_host_or_is_misdirected(
        proxy, site, local_ca, target, status):
    target = target.replace(b"{p}", b"%d" % site.port)
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                    % (target, _host(site)))
        answer = recv_all(tls)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    if status == b"200":
        assert site.last.target == "/echo"
    else:
        assert site.received == []


@pytest.mark.parametrize("host, status", [
    (b"SITE.TEST:{p}", b"200"),
    (b"site.test.:{p}", b"200"),
    (b"site.test", b"200"),  # no port: the connection's
    (b"site.test:443", b"421"),
    (b"[::1]:{p}", b"421"),
    (b"127.0.0.1:{p}", b"421"),  # the address the name has, but not the name
    (b"site.test.raw.test:{p}", b"421"),
    (b"user@site.test:{p}", b"400"),
    (b"site.test:{p}/x", b"400"),
    (b"", b"400"),
])
def test_host_spellings_inside(proxy, site, local_ca, host, status):
    host = host.replace(b"{p}", b"%d" % site.port)
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host)
        answer = recv_all(tls)
    assert answer.startswith(b"HTTP/1.1 " + status), (host, answer[:200])
    if status == b"200":
        assert site.last.header("Host") == f"site.test:{site.port}"  # the site's, as named
    else:
        assert site.received == []


DEST = Address("site.test", 443)


@pytest.mark.parametrize("target, host, expected", [
    (b"/a?b", b"site.test", b"/a?b"),
    (b"/a", b"site.test:443", b"/a"),
    (b"/a", b"Site.Test.", b"/a"),
    (b"/a", b"site.test.:443", b"/a"),
    (b"*", b"site.test", BadRequest),  # (asterisk-form is OPTIONS only)
    (b"https://site.test/a", b"site.test", b"/a"),
    (b"https://site.test:443/a", b"site.test", b"/a"),
    (b"https://site.test:8443/a", b"site.test", Misdirected),
    (b"https://raw.test/a", b"site.test", Misdirected),
    (b"wss://site.test/a", b"site.test", Misdirected),
    (b"/a", b"site.test:8443", Misdirected),
    (b"/a", b"raw.test", Misdirected),
    (b"/a", b"[::1]", Misdirected),
    (b"/a", b"site.test..", BadRequest),
    (b"/a", b"site.test:", BadRequest),
    (b"/a", b"site.test:443:443", BadRequest),
    (b"/a", b"site.test:99999", BadRequest),
    (b"/a", b"\xff", BadRequest),
])
def test_inner_path_table(target, host, expected):
    if isinstance(expected, bytes):
        assert inner_path(b"GET", target, [(b"Host", host)], DEST) == expected
    else:
        with pytest.raises(expected):
            inner_path(b"GET", target, [(b"Host", host)], DEST)


def test_inner_path_for_an_ipv6_destination():
    dest = Address("::1", 443)
    assert inner_path(b"GET", b"/a", [(b"Host", b"[::1]")], dest) == b"/a"
    assert inner_path(b"GET", b"/a", [(b"Host", b"[::1]:443")], dest) == b"/a"
    assert inner_path(b"OPTIONS", b"*", [(b"Host", b"[::1]")], dest) == b"*"
    with pytest.raises(Misdirected):
        inner_path(b"GET", b"/a", [(b"Host", b"[::2]")], dest)


# -- a site that answers badly


def _ask_raw(proxy, raw, local_ca, name: str, data: bytes, then: str = "close",
             body: bytes = b"") -> bytes:
    path = raw.script(name, data, then).encode()
    with _opened(proxy, "raw.test", raw.port, local_ca) as tls:
        extra = b"Content-Length: %d\r\n" % len(body) if body else b""
        tls.sendall(b"GET %s HTTP/1.1\r\nHost: raw.test:%d\r\n%s\r\n%s"
                    % (path, raw.port, extra, body))
        return recv_all(tls)


@pytest.mark.parametrize("name, data, reason", [
    ("garbage", b"\x16\x03\x01garbage\r\n\r\n", b"malformed response"),
    ("huge", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300000 + b"\r\n\r\n", b"larger than"),
    ("unasked101", (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                    b"Connection: Upgrade\r\n\r\nPRI * HTTP/2.0\r\n\r\n"),
     b"switched protocols unasked"),
    ("headless", b"", b"without a response"),
])
def test_a_sites_bad_answer_is_a_502_inside_tls(proxy, raw, local_ca, name, data, reason):
    answer = _ask_raw(proxy, raw, local_ca, name, data)
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:300]
    assert reason in answer, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1
    proxy.wait_log("status=502")
    _no_traceback(proxy)


def test_a_site_that_closes_mid_body_cuts_the_client_off(proxy, raw, local_ca):
    path = raw.script("cut", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    with _opened(proxy, "raw.test", raw.port, local_ca) as tls:
        tls.sendall(b"GET %s HTTP/1.1\r\nHost: raw.test:%d\r\n\r\n" % (path.encode(), raw.port))
        data = b""
        # a truncated body is never ended as a complete one: no close_notify, a reset
        with pytest.raises((ssl.SSLEOFError, ConnectionResetError)):
            while chunk := tls.recv(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"x" * 100)
    proxy.wait_log(f"https raw.test:{raw.port}")
    _no_traceback(proxy)


def test_a_site_that_answers_before_the_body_is_sent(proxy, raw, local_ca):
    path = raw.script("early", b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n"
                               b"Connection: close\r\n\r\nbig")
    with _opened(proxy, "raw.test", raw.port, local_ca) as tls:
        tls.sendall(b"POST %s HTTP/1.1\r\nHost: raw.test:%d\r\nContent-Length: 10000000\r\n\r\n"
                    % (path.encode(), raw.port) + b"y" * 1000)
        answer = recv_until(tls, b"big")
        assert answer.startswith(b"HTTP/1.1 413") and answer.endswith(b"big"), answer
    _no_traceback(proxy)


# -- the client's TLS


def test_sni_for_another_name_gets_the_connect_hosts_leaf_and_reaches_only_it(
        proxy, site, local_ca):
    # verified against the SNI name, the leaf (for CONNECT's name) is refused
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _opened(proxy, "site.test", site.port, local_ca, sni="raw.test")
    context = ssl.create_default_context(cafile=local_ca)
    context.check_hostname = False
    with _opened(proxy, "site.test", site.port, local_ca, sni="raw.test", context=context) as tls:
        cert = tls.getpeercert()
        assert cert["subjectAltName"] == (("DNS", "site.test"),)
        tls.sendall(b"GET /echo HTTP/1.1\r\nHost: raw.test:%d\r\n\r\n" % site.port)
        assert recv_all(tls).startswith(b"HTTP/1.1 421")
    with _opened(proxy, "site.test", site.port, local_ca, sni="raw.test", context=context) as tls:
        tls.sendall(b"GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % _host(site))
        assert recv_all(tls).startswith(b"HTTP/1.1 200")
    assert [r.target for r in site.received] == ["/echo"]


def test_no_sni_gets_the_connect_hosts_leaf(proxy, site, local_ca):
    context = ssl.create_default_context(cafile=local_ca)
    context.check_hostname = False
    with _opened(proxy, "site.test", site.port, local_ca, sni=None, context=context) as tls:
        assert tls.getpeercert()["subjectAltName"] == (("DNS", "site.test"),)
        tls.sendall(b"GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % _host(site))
        assert recv_all(tls).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_a_tls_1_0_or_1_1_client_is_refused(proxy, site, local_ca, version):
    context = ssl.create_default_context(cafile=local_ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        _opened(proxy, "site.test", site.port, local_ca, context=context)
    assert "client's TLS failed" in proxy.wait_log("client's TLS failed")
    assert site.received == []
    _no_traceback(proxy)


def test_alpn_h2_only_falls_back_to_http_1_1(proxy, site, local_ca):
    context = ssl.create_default_context(cafile=local_ca)
    context.set_alpn_protocols(["h2"])
    with _opened(proxy, "site.test", site.port, local_ca, context=context) as tls:
        assert tls.selected_alpn_protocol() is None  # no h2: a client may go on in HTTP/1.1
        tls.sendall(b"GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % _host(site))
        assert recv_all(tls).startswith(b"HTTP/1.1 200")


def test_the_h2_preface_inside_is_refused(proxy, site, local_ca):
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert recv_all(tls).startswith(b"HTTP/1.1 400")
    assert site.received == []


def _client_hello(name: str) -> bytes:
    """The first flight of a TLS client for `name` (a ClientHello)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_client_that_stalls_mid_handshake_is_cut_at_header_timeout(start_proxy, pki, site):
    proxy = start_proxy(_profile(pki, limits="[limits]\nheader_timeout = 1"))
    sock = _connect(proxy, "site.test", site.port)
    with sock:
        sock.sendall(_client_hello("site.test")[:20])
        t0 = time.monotonic()
        sock.settimeout(10)
        assert recv_all(sock) == b""
        assert time.monotonic() - t0 < 5
    assert "did not complete in time" in proxy.wait_log("did not complete in time")
    assert site.received == []
    _no_traceback(proxy)


@pytest.mark.parametrize("garbage", [os.urandom(2000), b"\x16\x03\x01\x00\x05hello" * 10,
                                     b"\x00" * 100])
def test_garbage_instead_of_a_client_hello_is_cut_off(proxy, site, garbage):
    with _connect(proxy, "site.test", site.port) as sock:
        sock.sendall(garbage)
        try:
            assert b"HTTP" not in recv_all(sock)
        except ConnectionResetError:
            pass
    assert "client's TLS failed" in proxy.wait_log("client's TLS failed")
    assert site.received == []
    _no_traceback(proxy)


def test_a_client_hello_sent_with_the_connect_is_refused(proxy, site):
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(b"CONNECT site.test:%d HTTP/1.1\r\nHost: x\r\n\r\n" % site.port
                     + _client_hello("site.test"))
        answer = recv_all(sock)
    assert answer.startswith(b"HTTP/1.1 400") and b"after the proxy answered CONNECT" in answer
    assert site.received == []


def test_a_client_hello_sent_with_the_socks5_request_is_refused(proxy, site):
    name = b"site.test"
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(name)]) + name
                     + site.port.to_bytes(2, "big") + _client_hello("site.test"))
        answer = recv_all(sock)
    # no authentication, then the request refused (general failure), never granted
    assert answer[:4] == b"\x05\x00\x05\x01", answer
    assert site.received == []


# -- the site's TLS


@pytest.mark.parametrize("name, reason", [
    ("wrongname.test", "Hostname mismatch, certificate is not valid for 'wrongname.test'"),
    ("selfsigned.test", ("the site's certificate was refused: self-signed certificate (it "
                         "signs itself, and ca_bundle does not hold it)")),
    ("old.test", "TLS with old.test:{p} failed: tlsv1 alert protocol version"),
    ("mtls12.test", "TLS with mtls12.test:{p} failed: sslv3 alert handshake failure"),
    # TLS 1.3: the demand is known only after the handshake, when the request is on its way
    # (the site refuses it unread); the site's close may reset the connection before its alert
    # is read, and the kernel drops the alert then
    ("mtls.test", ("TLS with mtls.test:{p} failed: tlsv13 alert certificate required|"
                   "mtls.test:{p} (exit 'named') reset the connection")),
])
def test_a_site_whose_tls_fails_gets_no_request_and_the_client_a_502(
        proxy, pki, local_ca, name, reason):
    origin = pki[1][name]
    origin.received.clear()
    reason = reason.replace("{p}", str(origin.port))
    with _opened(proxy, name, origin.port, local_ca) as tls:
        tls.sendall(b"GET /echo?token=secret HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
                    % (name.encode(), origin.port))
        answer = recv_all(tls)
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:300]
    said = [one for one in reason.split("|") if one.encode() in answer]
    assert said, answer[:300]
    assert origin.received == []
    log = proxy.wait_log(f"https {name}:{origin.port} exit=named status=502")
    assert f"https {name}:{origin.port} exit=named status=502" in log, log[-2000:]
    assert said[0] in log and "secret" not in log
    _no_traceback(proxy)


# -- resources


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_opened_connections_leave_no_task_or_fdbehind(proxy, site, local_ca):
    context = ssl.create_default_context(cafile=local_ca)

    def tasks() -> int:
        return proxy.in_loop(lambda: len(asyncio.all_tasks()))

    def one() -> ssl.SSLSocket:
        tls = _opened(proxy, "site.test", site.port, local_ca, context=context)
        tls.sendall(b"GET /echo HTTP/1.1\r\nHost: %s\r\n\r\n" % _host(site))
        assert _responses(tls, 1)[0].startswith(b"HTTP/1.1 200")
        return tls

    base = tasks()
    one().close()  # (the leaf made, the origin's threads started)
    wait_until(lambda: "status=200" in proxy.log())
    assert wait_until(lambda: tasks() <= base)  # its connection's task has ended
    fds, running = _fds(), tasks()
    held = [one() for _ in range(200)]
    assert tasks() >= running + 200  # all open at once
    for tls in held[:100]:
        tls.close()  # abruptly: no close_notify
    for tls in held[100:]:
        tls.unwrap().close()  # politely
    wait_until(lambda: tasks() <= running and _fds() <= fds, timeout=30)
    assert len(site.received) == 201
    _no_traceback(proxy)


def test_the_leaf_cache_is_bounded(tmp_path):
    from anonproxy.tls.authority import CONTEXTS

    authority = Authority.load_or_create(tmp_path / "ca")
    for i in range(CONTEXTS + 50):
        authority.server_context(f"h{i}.site.test")
    assert len(authority._contexts) == CONTEXTS
    assert "h0.site.test" not in authority._contexts  # the least recently used went first


# -- the CA key


def test_the_ca_key_appears_in_no_log_error_or_document(start_proxy, pki, local_ca, capsys):
    from test_admin import Admin
    from upstreams import free_port

    from anonproxy.cli.remote import status

    port = free_port("127.0.0.1")
    proxy = start_proxy(_profile(pki, f'admin = "127.0.0.1:{port}"'))
    site = pki[1]["site.test"]
    for name in ("site.test", "wrongname.test", "old.test"):  # a success and failures
        origin = pki[1][name]
        with _opened(proxy, name, origin.port, local_ca) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                        % (name.encode(), origin.port))
            recv_all(tls)
    with _connect(proxy, "site.test", site.port) as sock:  # a client's TLS that fails
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        recv_all(sock)
    proxy.wait_log("client's TLS failed")
    admin = Admin(port)
    documents = [admin.get(path).text for path in ("/api/state", "/api/inspect", "/")]
    assert status(Address("127.0.0.1", port), None, proxy.url) == 0
    printed = capsys.readouterr()
    key_pem = (Authority.load_or_create().directory / KEY_NAME).read_bytes()
    body = b"".join(key_pem.split(b"\n")[1:-2])
    secret = base64.b64decode(body)
    pieces = [line.decode() for line in key_pem.split(b"\n")[1:-2]] + [
        secret.hex(), secret[-32:].hex(), base64.b64encode(secret[-32:]).decode()[:20]]
    for text in [proxy.log(), printed.out, printed.err, *documents]:
        assert "PRIVATE KEY" not in text
        for piece in pieces:
            assert piece not in text
    assert "ca.key" not in "".join(documents)


def test_inner_path_without_host():
    assert inner_path(b"GET", b"/a", [], DEST, b"1.0") == b"/a"
    with pytest.raises(Misdirected):
        inner_path(b"GET", b"https://raw.test/a", [], DEST, b"1.0")
    with pytest.raises(BadRequest, match="exactly one Host"):
        inner_path(b"GET", b"/a", [], DEST, b"1.1")
    with pytest.raises(BadRequest, match="exactly one Host"):
        inner_path(b"GET", b"/a", [(b"Host", b"site.test")] * 2, DEST, b"1.0")


def test_absolute_form_https_to_a_site_demanding_a_client_certificate_is_a_502(proxy, pki):
    origin = pki[1]["mtls.test"]
    origin.received.clear()
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(b"GET https://mtls.test:%d/echo HTTP/1.1\r\nHost: mtls.test:%d\r\n\r\n"
                     % (origin.port, origin.port))
        answer = recv_all(sock)
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:300]
    assert b"tlsv13 alert certificate required" in answer or b"reset the connection" in answer
    assert origin.received == []
    assert "status=502" in proxy.wait_log("status=502")
    _no_traceback(proxy)


def test_a_second_response_a_site_slips_in_never_answers_the_next_request(proxy, raw, local_ca):
    path = raw.script("two", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!", "keep")
    with _opened(proxy, "raw.test", raw.port, local_ca) as tls:
        tls.sendall(b"GET %s HTTP/1.1\r\nHost: raw.test:%d\r\n\r\n" % (path.encode(), raw.port))
        assert _responses(tls, 1)[0].endswith(b"\r\n\r\ngood")
        tls.sendall(b"GET /good HTTP/1.1\r\nHost: raw.test:%d\r\n\r\n" % raw.port)
        second = _responses(tls, 1)[0]
    assert second.endswith(b"\r\n\r\ngood") and b"evil" not in second
    # the site connection out of step was dropped, not kept for the next request
    assert [r.conn for r in raw.requests][-1] != [r.conn for r in raw.requests][-2]


def test_a_site_connection_serves_one_client_connection_only(proxy, raw, local_ca):
    first = _opened(proxy, "raw.test", raw.port, local_ca)
    second = _opened(proxy, "raw.test", raw.port, local_ca)
    with first, second:
        for tls in (first, second, first, second):
            tls.sendall(b"GET /good HTTP/1.1\r\nHost: raw.test:%d\r\n\r\n" % raw.port)
            assert _responses(tls, 1)[0].endswith(b"good")
    conns = [r.conn for r in raw.requests]
    assert conns[0] == conns[2] and conns[1] == conns[3] and conns[0] != conns[1]


def test_a_trickled_request_head_inside_is_408_at_header_timeout(start_proxy, pki, site,
                                                                local_ca):
    proxy = start_proxy(_profile(pki, limits="[limits]\nheader_timeout = 1"))
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"GET /echo HTTP/1.1\r\nHost: ")
        t0 = time.monotonic()
        assert recv_all(tls).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - t0 < 5
    assert site.received == []


def test_a_huge_request_head_inside_is_431(proxy, site, local_ca):
    with _opened(proxy, "site.test", site.port, local_ca) as tls:
        tls.sendall(b"GET /echo HTTP/1.1\r\nHost: %s\r\nX-Big: %s\r\n\r\n"
                    % (_host(site), b"a" * 100000))
        assert recv_all(tls).startswith(b"HTTP/1.1 431")
    assert site.received == []


def test_connect_spelled_in_capitals_with_a_trailing_dot_is_opened_as_the_name(
        proxy, site, local_ca):
    sock = _connect(proxy, "SITE.Test.", site.port)
    context = ssl.create_default_context(cafile=local_ca)
    with context.wrap_socket(sock, server_hostname="site.test") as tls:
        tls.sendall(b"GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % _host(site))
        assert recv_all(tls).startswith(b"HTTP/1.1 200")
    assert site.last.header("Host") == f"site.test:{site.port}"


def test_a_body_to_the_sites_close_is_whole_even_without_its_close_notify(proxy, raw, local_ca):
    # (the scripted site closes its socket without TLS's close_notify, as many servers do)
    answer = _ask_raw(proxy, raw, local_ca, "closed", b"HTTP/1.1 200 OK\r\n\r\nuntil the close")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nuntil the close")
    assert b"Connection: close" in answer


def test_a_site_that_stalls_its_handshake_is_a_502_at_connect_timeout(start_proxy, pki,
                                                                      local_ca):
    proxy = start_proxy(_profile(pki, limits="[limits]\nconnect_timeout = 1"))
    with socket.create_server(("127.0.0.1", 0)) as silent:  # (connections wait in its backlog)
        port = silent.getsockname()[1]
        with _opened(proxy, "stalled.test", port, local_ca) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: stalled.test:%d\r\n\r\n" % port)
            answer = recv_all(tls)
    assert answer.startswith(b"HTTP/1.1 502 "), answer
    assert b"TLS with stalled.test:%d failed: the TLS handshake did not complete in time" % port \
        in answer
    _no_traceback(proxy)


def test_a_socks5_stream_to_a_site_whose_tls_fails_gets_a_502_inside(proxy, pki, local_ca):
    origin = pki[1]["wrongname.test"]
    origin.received.clear()
    name = b"wrongname.test"
    sock = socket.create_connection(proxy.address, timeout=10)
    assert socks_connect(sock, 3, bytes([len(name)]) + name, origin.port)[:2] == b"\x05\x00"
    context = ssl.create_default_context(cafile=local_ca)
    with context.wrap_socket(sock, server_hostname="wrongname.test",
                             suppress_ragged_eofs=False) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: wrongname.test:%d\r\n\r\n" % origin.port)
        answer = recv_all(tls)
    assert answer.startswith(b"HTTP/1.1 502 ") and b"Hostname mismatch" in answer
    assert origin.received == []
    _no_traceback(proxy)
