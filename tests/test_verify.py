"""policy/verify.py as tables: echo answers parsed, verdicts judged."""

from __future__ import annotations

from pathlib import Path

import pytest

from anonproxy.policy.verify import (
    DEFAULT_ECHO,
    TOR_ECHO,
    Echo,
    EchoError,
    Measurement,
    judge,
    parse_echo,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_echo_services_are_the_documented_ones():
    """Used only when a profile names none (never contacted by the tests)."""
    assert DEFAULT_ECHO == ("https://api.ipify.org/", "https://ifconfig.co/json")
    assert TOR_ECHO == ("https://check.torproject.org/api/ip",)
    doc = (ROOT / "docs" / "profiles.md").read_text()
    assert all(f"`{url}`" in doc for url in DEFAULT_ECHO + TOR_ECHO)


@pytest.mark.parametrize(("body", "address", "seen"), [
    (b"127.0.0.2\n", "127.0.0.2", ()),
    (b"  2001:db8::1 ", "2001:db8::1", ()),
    (b'{"ip": "127.0.0.3"}', "127.0.0.3", ()),
    (b'{"IP": "127.0.0.4"}', "127.0.0.4", ()),
    (b'{"query": "127.0.0.5", "status": "success"}', "127.0.0.5", ()),
    (b'{"origin": "127.0.0.6"}', "127.0.0.6", ()),
    (b'{"origin": "127.0.0.6, 10.0.0.1"}', "127.0.0.6", ("origin: 10.0.0.1",)),
    (b'{"ip": 5, "origin": "127.0.0.7"}', "127.0.0.7", ()),
    ((b'{"ip": "127.0.0.8", "headers": {"Host": "x", "X-Forwarded-For": "10.1.1.1", '
      b'"via": "1.1 p", "X_Real_IP": "10.2.2.2", "Accept": "*/*"}}'), "127.0.0.8",
     ("X-Forwarded-For: 10.1.1.1", "via: 1.1 p", "X_Real_IP: 10.2.2.2")),
    (b'{"ip": "127.0.0.9", "headers": ["Via"]}', "127.0.0.9", ()),
])
def test_parse_echo_reads_the_address(body, address, seen):
    assert parse_echo(body) == Echo(address, seen)


@pytest.mark.parametrize(("body", "is_tor"), [
    (b'{"IsTor": true, "IP": "127.0.0.2"}', True),
    (b'{"IsTor": false, "IP": "127.0.0.2"}', False),
    (b'{"IsTor": "yes", "IP": "127.0.0.2"}', None),
    (b'{"ip": "127.0.0.2"}', None),
])
def test_parse_echo_reads_what_tor_check_says(body, is_tor):
    assert parse_echo(body).is_tor is is_tor


@pytest.mark.parametrize(("told", "is_tor"), [
    ((None,), None), ((True,), True), ((False,), False), ((True, None), True),
    ((True, False), False),
])
def test_judge_says_tor_only_when_every_service_that_told_says_so(told, is_tor):
    measured = [Measurement("u", Echo("127.0.0.2", (), t), "DE") for t in told]
    assert judge("x", ("DE",), measured).is_tor is is_tor


@pytest.mark.parametrize(("body", "says"), [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"<html>hello</html>", "not an IP address"),
    (b"127.0.0.256", "not an IP address"),
    (b"\xff\xfe", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b'["127.0.0.1"]', "not a JSON object"),
    (b'{"address": "127.0.0.1"}', "none of the keys ip, IP, origin, query"),
    (b'{"ip": "somewhere"}', "not an IP address"),
    (b'{"origin": ""}', "not an IP address"),
    (b"1" * 70000, "longer than"),
])
def test_parse_echo_refuses_what_names_no_address(body, says):
    with pytest.raises(EchoError, match=says):
        parse_echo(body)


def _m(address, country, url="http://e/", seen=()):
    return Measurement(url, Echo(address, seen), country)


def _failed(error, url="http://e/"):
    return Measurement(url, error=error)


@pytest.mark.parametrize(("declared", "measured", "ok", "word", "country", "error"), [
    (("DE",), [_m("127.0.0.2", "DE")], True, "ok", "DE", None),
    (("DE",), [_m("127.0.0.2", "US")], False, "MISMATCH", "US",
     "leaves from US, declares DE"),
    (("DE", "NL"), [_m("127.0.0.2", "NL")], True, "ok", "NL", None),
    (("DE", "NL"), [_m("127.0.0.2", "NL"), _m("127.0.0.3", "DE")], True, "ok", "NL", None),
    (("DE", "NL"), [_m("127.0.0.2", "NL"), _m("127.0.0.3", "FR")], False, "MISMATCH", "FR",
     "leaves from FR, declares DE, NL"),
    (("DE",), [_m("127.0.0.2", None)], False, "FAILED", None,
     "the GeoIP database has no country for 127.0.0.2"),
    ((), [_m("127.0.0.2", None)], True, "ok", None, None),
    ((), [_m("127.0.0.2", "US")], True, "ok", "US", None),
    ((), [_m("127.0.0.2", "US"), _m("127.0.0.3", "DE")], False, "FAILED", "US",
     "the echo services saw different countries: US, DE"),
    ((), [_m("127.0.0.2", "US"), _m("127.0.0.3", None)], False, "FAILED", "US",
     "the echo services saw different countries: US, unknown"),
    (("DE",), [_failed("refused", "http://a/")], False, "FAILED", None, "http://a/: refused"),
    (("DE",), [_failed("refused", "http://a/"), _failed("timeout", "http://b/")], False,
     "FAILED", None, "http://a/: refused; http://b/: timeout"),
    (("DE",), [_failed("refused"), _m("127.0.0.2", "DE")], True, "ok", "DE", None),
    (("DE",), [], False, "FAILED", None, "no echo URL"),
])
def test_judge(declared, measured, ok, word, country, error):
    verdict = judge("x", declared, measured)
    assert (verdict.ok, verdict.word, verdict.country, verdict.error) == (ok, word, country, error)
    assert verdict.exit == "x" and verdict.declared == declared


def test_judge_reports_the_first_address_and_every_header_seen_once():
    verdict = judge("x", ("DE",), [_m("127.0.0.2", "DE", seen=("Via: a",)),
                                   _m("127.0.0.3", "DE", seen=("Via: a", "From: b"))])
    assert verdict.address == "127.0.0.2"
    assert verdict.seen == ("Via: a", "From: b")
