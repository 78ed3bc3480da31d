"""Verified exits: what an echo service's answer says of where a request left from, and the
verdict on an exit from what was measured against what it declares.

An echo service ("what is my IP") answers with the address it saw: as plain text (the address
alone), or as JSON whose `ip`, `IP`, `origin` or `query` key holds it (httpbin's `origin` may
list several, comma-separated: the first is taken and the others count as seen identifying
addresses). A JSON `headers` object, where the service echoes the request's headers, shows
whether anything identifying reached it (the names of wire/headers.py's table). Tor's check
service says `IsTor`: whether the address is a Tor exit relay's.

Pure: no I/O; the caller fetches the bodies (through the exit) and looks the countries up.
Invariants: an exit is `ok` only when at least one echo answered and every measured country
is one it declares (or it declares none); an address the GeoIP database does not know fails
an exit that declares a country (unknown is not a match); a body that names no address is an
error, never an empty match.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from anonproxy.wire.headers import is_identifying

ADDRESS_KEYS = ("ip", "IP", "origin", "query")
# Used only when the profile's [verify] names no `echo`: plain text and JSON answers; for an
# exit through tor, Tor's own check service (it also says whether the address is Tor's).
DEFAULT_ECHO = ("https://api.ipify.org/", "https://ifconfig.co/json")
TOR_ECHO = ("https://check.torproject.org/api/ip",)
MAX_BODY = 1 << 16  # an echo answer longer than this is not an echo answer


class EchoError(ValueError):
    """The echo service's answer names no address (one sentence)."""


@dataclass(frozen=True, slots=True)
class Echo:
    """What one echo answer says: the address it saw, and identifying headers it was sent
    (name: value), including further addresses in a comma-separated `origin`."""

    address: str
    seen: tuple[str, ...] = ()
    is_tor: bool | None = None  # what Tor's check service says; None: not told


@dataclass(frozen=True, slots=True)
class Measurement:
    """One echo URL fetched through an exit: the echo and the country of its address, or the
    error that stopped it."""

    url: str
    echo: Echo | None = None
    country: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    exit: str
    address: str | None
    country: str | None
    declared: tuple[str, ...]
    ok: bool
    error: str | None
    seen: tuple[str, ...] = ()
    is_tor: bool | None = None

    @property
    def word(self) -> str:
        """ok, MISMATCH (a measured country the exit does not declare) or FAILED."""
        if self.ok:
            return "ok"
        return "MISMATCH" if self.country is not None and self.declared and \
            self.country not in self.declared else "FAILED"


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise EchoError(f"{text.strip()[:60]!r} is not an IP address") from None


def parse_echo(body: bytes) -> Echo:
    """The address an echo answer names, and what identifying it says it was sent. Raises
    EchoError when it names none."""
    if len(body) > MAX_BODY:
        raise EchoError(f"the answer is longer than {MAX_BODY} bytes: not an echo of an address")
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise EchoError("the answer is not UTF-8 text") from None
    if not text:
        raise EchoError("the answer is empty")
    if not text.startswith(("{", "[")):
        return Echo(_ip(text))
    try:
        data = json.loads(text)
    except ValueError:
        raise EchoError("the answer starts as JSON but is not JSON") from None
    if not isinstance(data, dict):
        raise EchoError("the answer is not a JSON object")
    value = next((data[k] for k in ADDRESS_KEYS if isinstance(data.get(k), str)), None)
    if value is None:
        raise EchoError(f"the JSON answer has none of the keys {', '.join(ADDRESS_KEYS)}")
    first, *more = [part for part in value.split(",") if part.strip()] or [""]
    seen = [f"origin: {_ip(part)}" for part in more]
    headers = data.get("headers")
    if isinstance(headers, dict):
        seen += [f"{name}: {value}" for name, value in headers.items()
                 if isinstance(name, str) and is_identifying(name.encode("latin-1", "replace"))]
    is_tor = data.get("IsTor")
    return Echo(_ip(first), tuple(seen), is_tor if isinstance(is_tor, bool) else None)


def judge(exit_name: str, declared: tuple[str, ...],
          measurements: list[Measurement]) -> Verdict:
    """The verdict on an exit: the first measured address and its country, compared with the
    countries it declares (empty: it declares none, and any country is consistent)."""
    done = [m for m in measurements if m.echo is not None]
    if not done:
        errors = "; ".join(f"{m.url}: {m.error}" for m in measurements) or "no echo URL"
        return Verdict(exit_name, None, None, declared, False, errors)
    first = done[0]
    assert first.echo is not None
    seen, is_tor = _what_they_saw(done)
    country, problem = _inconsistency(declared, done)
    if problem is not None:
        return Verdict(exit_name, first.echo.address, country, declared, False, problem, seen,
                       is_tor)
    return Verdict(exit_name, first.echo.address, first.country, declared, True, None, seen,
                   is_tor)


def _what_they_saw(done: list[Measurement]) -> tuple[tuple[str, ...], bool | None]:
    """The identifying headers the echo services reported, and whether they all recognised
    Tor (None: none of them said)."""
    seen = tuple(dict.fromkeys(s for m in done if m.echo for s in m.echo.seen))
    told = [m.echo.is_tor for m in done if m.echo and m.echo.is_tor is not None]
    return seen, (all(told) if told else None)


def _inconsistency(declared: tuple[str, ...],
                   done: list[Measurement]) -> tuple[str | None, str | None]:
    """(the country to report, why the measurements are inconsistent), or (None, None)."""
    countries = list(dict.fromkeys(m.country for m in done))
    if not declared:
        if len(countries) > 1:
            return done[0].country, ("the echo services saw different countries: "
                                     + ", ".join(c or "unknown" for c in countries))
        return None, None
    unknown = next((m for m in done if m.country is None), None)
    if unknown is not None:
        address = unknown.echo.address if unknown.echo else "?"
        return None, f"the GeoIP database has no country for {address}"
    wrong = [c for c in countries if c not in declared]
    if wrong:
        return wrong[0], f"leaves from {wrong[0]}, declares {', '.join(declared)}"
    return None, None
