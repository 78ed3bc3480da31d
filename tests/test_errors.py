"""How each error is told to the client, as a table (pure): anonproxy.wire.errors."""

from __future__ import annotations

import h11
import pytest

from anonproxy.wire import errors
from anonproxy.wire.errors import (
    AuthRequired,
    BadRequest,
    BadUpstreamResponse,
    ExitDown,
    ExitFailed,
    Forbidden,
    HeadersTooLarge,
    NoSuchProfile,
    NotFound,
    NotImplementedByProxy,
    Overloaded,
    ProxyError,
    RequestTimeout,
    StageTimeout,
    http_error_response,
)

# error -> (HTTP status and reason, SOCKS5 reply code of RFC 1928 section 6)
TABLE = [
    (ProxyError, 502, "Bad Gateway", 0x01),
    (BadRequest, 400, "Bad Request", 0x01),
    (NotFound, 404, "Not Found", 0x01),
    (RequestTimeout, 408, "Request Timeout", 0x06),
    (HeadersTooLarge, 431, "Request Header Fields Too Large", 0x01),
    (NotImplementedByProxy, 501, "Not Implemented", 0x07),
    (Forbidden, 403, "Forbidden", 0x02),
    (AuthRequired, 407, "Proxy Authentication Required", 0x02),
    (NoSuchProfile, 407, "Proxy Authentication Required", 0x02),
    (ExitFailed, 502, "Bad Gateway", 0x01),
    (ExitDown, 503, "Service Unavailable", 0x01),
    (BadUpstreamResponse, 502, "Bad Gateway", 0x01),
    (StageTimeout, 504, "Gateway Timeout", 0x06),
    (Overloaded, 503, "Service Unavailable", 0x01),
]


def test_socks_reply_codes_are_rfc_1928s():
    assert [errors.SOCKS_GENERAL_FAILURE, errors.SOCKS_NOT_ALLOWED,
            errors.SOCKS_NETWORK_UNREACHABLE, errors.SOCKS_HOST_UNREACHABLE,
            errors.SOCKS_CONNECTION_REFUSED, errors.SOCKS_TTL_EXPIRED,
            errors.SOCKS_COMMAND_NOT_SUPPORTED, errors.SOCKS_ADDRESS_TYPE_NOT_SUPPORTED] == [
        1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("kind, status, reason, reply", TABLE, ids=lambda v: getattr(v, "__name__", v))
def test_every_error_is_one_complete_closing_http_response_and_one_socks_code(
        kind, status, reason, reply):
    error = kind("the exit 'eu' refused the connection.")
    assert (error.status, error.reason, error.socks_reply) == (status, reason, reply)
    raw = http_error_response(error)
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    parser.receive_data(raw)
    response = parser.next_event()
    assert (response.status_code, response.reason) == (status, reason.encode())
    headers = dict(response.headers)
    assert headers[b"connection"] == b"close"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert (b"proxy-authenticate" in headers) is (status == 407)
    body = parser.next_event()
    assert body.data == b"the exit 'eu' refused the connection.\n"
    assert isinstance(parser.next_event(), h11.EndOfMessage)


def test_a_407_names_the_realm_to_authenticate_for():
    raw = http_error_response(AuthRequired("a profile name is needed"))
    assert b'\r\nProxy-Authenticate: Basic realm="anonproxy profile"\r\n' in raw


def test_a_web_page_reads_only_the_public_sentence():
    error = ExitFailed("the hop 10.0.0.7:1080 (user bob) refused", public="the exit 'eu' failed",
                       socks_reply=errors.SOCKS_CONNECTION_REFUSED, hop_failed=False)
    raw = http_error_response(error)
    assert raw.endswith(b"\r\n\r\nthe exit 'eu' failed.\n") and b"10.0.0.7" not in raw
    assert b"bob" not in raw
    assert error.message == "the hop 10.0.0.7:1080 (user bob) refused" == str(error)
    assert error.socks_reply == 5 and error.hop_failed is False
    assert ExitFailed("x").hop_failed is True and ExitFailed("x").public == "x"
    assert Forbidden("x", socks_reply=4).socks_reply == 4 and Forbidden("y").socks_reply == 2


def test_an_error_body_survives_characters_outside_ascii():
    raw = http_error_response(BadRequest("caf\u00e9 \udcff"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}\r\n".encode() in head + b"\r\n"
    assert body.startswith("caf\u00e9 ".encode())
