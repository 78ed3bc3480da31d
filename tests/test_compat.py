"""Compatibility with what real clients and servers send (issue 16): curl and Python requests
through the proxy, against a raw-bytes origin (tests/rawserver.py) for the edge cases.

Each lenient case is one curl and Chromium accept directly; the proxy carries it, normalized,
where the framing stays unambiguous, and still answers 502 where it does not.
"""

from __future__ import annotations

import pytest
import requests
from helpers import curl

# (name, the origin's response, the body a client gets)
LENIENT = [
    ("identical-content-length-twice",
     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    ("content-length-5-5", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", b"hello"),
    ("chunked-and-content-length",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     b"hello"),
    ("bare-lf-line-ends", b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 5\n\nhello", b"hello"),
    ("space-before-colon", b"HTTP/1.1 200 OK\r\nX-A : 1\r\nX-B\t: 2\r\nContent-Length: 5\r\n\r\nhello",
     b"hello"),
    ("head-over-64k", b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"a" * 20_000)
                                                        for i in range(5)) + b"Content-Length: 5\r\n\r\nhello",
     b"hello"),
]

STRICT = [
    ("differing-content-length",
     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("content-length-5-6", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    ("gzip-and-content-length",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"),
    ("head-over-256k", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300_000 + b"\r\nContent-Length: 5\r\n\r\nhello"),
]


@pytest.mark.parametrize("name, response, body", LENIENT, ids=[r[0] for r in LENIENT])
def test_curl_and_requests_get_what_curl_gets_directly(proxy, raw, name, response, body):
    path = raw.script(name, response, "keep")
    direct = curl("--max-time", "10", raw.url(path))
    assert direct.returncode == 0 and direct.stdout == body  # curl itself accepts it
    through = curl("--max-time", "10", "-i", "--proxy", proxy.url, raw.url(path))
    assert through.returncode == 0, through.stderr
    head, _, got = through.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and got == body
    assert b" :" not in head and b"\t:" not in head
    assert head.lower().count(b"content-length") + head.lower().count(b"transfer-encoding") == 1
    answer = requests.get(raw.url(path), proxies={"http": proxy.url}, timeout=10)
    assert answer.status_code == 200 and answer.content == body


@pytest.mark.parametrize("name, response", STRICT, ids=[r[0] for r in STRICT])
def test_ambiguous_framing_stays_a_502(proxy, raw, name, response):
    path = raw.script(name, response, "keep")
    through = curl("--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--proxy", proxy.url,
                   raw.url(path))
    assert through.stdout == b"502"
    answer = requests.get(raw.url(path), proxies={"http": proxy.url}, timeout=10)
    assert answer.status_code == 502


def test_the_response_head_limit_is_a_profile_setting(start_proxy, raw):
    from conftest import DIRECT
    proxy = start_proxy(DIRECT + "\n[limits]\nmax_response_header_bytes = 2048\n")
    path = raw.script("big", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 4000 + b"\r\nContent-Length: 2\r\n\r\nok",
                      "keep")
    answer = requests.get(raw.url(path), proxies={"http": proxy.url}, timeout=10)
    assert answer.status_code == 502
    assert "larger than 2048 bytes" in answer.text
