"""Block lists: whether a request is blocked, and by which list and rule (pure: no I/O).

A plain-HTTP request is matched by its full URL, with what its headers say of it: the request
type from `Sec-Fetch-Dest`, else `Accept`, else the path's extension; the page from `Referer`,
else `Origin`, else `Sec-Fetch-Site` (same-origin: the request's own host). A tunnel (CONNECT,
SOCKS5) shows only a host: it is blocked when a request for the host's root from an unknown
page of another site would be (rules without options, `$third-party` and `$document` rules
match; rules limited to other types, or to pages by `domain=`, cannot be told apart and do
not). A request that names no page is taken as one from an unknown page of another site.

Invariants: exception rules (`@@`) win, in whatever list they are (the lists share one engine,
filter_engine.py, the only module that knows it); a verdict names the list (as the profile names
it) and the rule's text as written there — a hosts entry as its host name; a list of hosts
blocks each host and its subdomains, as `||host^` does.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from anonproxy.policy.filter_engine import Engine, option_problem
from anonproxy.wire.address import Address

ADBLOCK, HOSTS = "adblock", "hosts"  # list formats


@dataclass(frozen=True, slots=True, eq=False)
class FilterList:
    """One list as read: its network rules in engine syntax (a hosts entry as `||host^`), each
    with its line number, and what was left out."""

    name: str  # as the profile names it
    format: str  # ADBLOCK | HOSTS
    rules: tuple[str, ...]
    lines: array[int]  # the line number of each rule
    cosmetic: int = 0  # element hiding and scriptlet rules: a proxy cannot apply them
    skipped: int = 0  # hosts entries for this machine (localhost, broadcasthost, 0.0.0.0, ...)
    bad: tuple[tuple[int, str, str], ...] = ()  # (line, text, why) not made into a rule


class Hit(NamedTuple):
    list: str  # the list's name, as the profile gives it
    rule: str  # as written in the list (a hosts entry: its host name)


class Verdict(NamedTuple):
    block: Hit | None  # the rule that blocks the request, if one does
    allowed_by: Hit | None = None  # the exception that let it through, if one matched


class Request(NamedTuple):
    """What the engine is asked about one request (a tuple: built for every request)."""

    url: str
    host: str
    request_type: str  # a filter_engine.REQUEST_TYPES word
    page_host: str = ""  # UNKNOWN_PAGE when unknown
    third_party: bool | None = None  # None: from the two hosts' registrable domains


NOT_BLOCKED = Verdict(None)
KNOWN = 4096  # verdicts remembered (then forgotten all at once, as route() does)
# The page of a request that names none: a host no `domain=` option names (the engine would
# otherwise apply every rule limited to some pages, exceptions included), across sites.
UNKNOWN_PAGE = "unknown-page.invalid"

# Sec-Fetch-Dest -> request type (https://fetch.spec.whatwg.org/#concept-request-destination)
DESTINATIONS = {
    "document": "document", "iframe": "subdocument", "frame": "subdocument",
    "fencedframe": "subdocument", "script": "script", "worker": "script",
    "sharedworker": "script", "serviceworker": "script", "audioworklet": "script",
    "paintworklet": "script", "xslt": "script", "style": "stylesheet", "image": "image",
    "font": "font", "audio": "media", "video": "media", "track": "media", "object": "object",
    "embed": "object", "report": "ping", "empty": "xmlhttprequest", "manifest": "other",
}
# the first media type of Accept -> request type (what browsers send for each)
ACCEPTS = (("text/html", "document"), ("application/xhtml", "document"), ("image/", "image"),
           ("text/css", "stylesheet"), ("text/javascript", "script"),
           ("application/javascript", "script"), ("video/", "media"), ("audio/", "media"),
           ("font/", "font"))
# the path's extension -> request type, when the headers say nothing more than */*
EXTENSIONS = {
    "js": "script", "mjs": "script", "css": "stylesheet", "png": "image", "gif": "image",
    "jpg": "image", "jpeg": "image", "webp": "image", "avif": "image", "svg": "image",
    "ico": "image", "woff": "font", "woff2": "font", "ttf": "font", "otf": "font",
    "mp4": "media", "webm": "media", "mp3": "media", "m3u8": "media", "html": "document",
    "htm": "document",
}


_WANTED = frozenset({b"sec-fetch-dest", b"accept", b"upgrade", b"referer", b"origin",
                     b"sec-fetch-site"})


def _clues(headers: Sequence[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The headers the verdict reads, by lower-case name (the first of each), in one pass."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        low = name.lower()
        if low in _WANTED and low not in found:
            found[low] = value
    return found


def request_type_of(headers: Sequence[tuple[bytes, bytes]], path: bytes) -> str:
    """The request type of a plain-HTTP request: Sec-Fetch-Dest, else the first type Accept
    names, else the path's extension, else "other"."""
    return _request_type(_clues(headers), path)


def _request_type(clues: dict[bytes, bytes], path: bytes) -> str:
    if clues.get(b"upgrade", b"").strip().lower() == b"websocket":
        return "websocket"
    dest = clues.get(b"sec-fetch-dest")
    if dest is not None:
        request_type = DESTINATIONS.get(dest.decode("latin-1").strip().lower())
        if request_type is not None:
            return request_type
    accept = clues.get(b"accept")
    if accept:
        media = accept.decode("latin-1").lstrip().lower()
        for prefix, request_type in ACCEPTS:
            if media.startswith(prefix):
                return request_type
    name = path.split(b"?", 1)[0].rsplit(b"/", 1)[-1]
    if b"." in name:
        return EXTENSIONS.get(name.rsplit(b".", 1)[1].decode("latin-1").lower(), "other")
    return "other"


def page_of(headers: Sequence[tuple[bytes, bytes]], host: str,
            request_type: str) -> tuple[str, bool | None]:
    """(the page's host, whether the request is third-party): from Referer, else Origin, else
    Sec-Fetch-Site; a document with neither is its own page. Unknown: a page of another site
    (UNKNOWN_PAGE, True)."""
    return _page(_clues(headers), host, request_type)


def _page(clues: dict[bytes, bytes], host: str, request_type: str) -> tuple[str, bool | None]:
    for name in (b"referer", b"origin"):
        page = _url_host(clues.get(name))
        if page:
            return page, None
    site = clues.get(b"sec-fetch-site", b"").strip().lower()
    if site in (b"same-origin", b"same-site"):
        return host, False
    if request_type == "document" and site in (b"", b"none"):
        return host, False
    return UNKNOWN_PAGE, True


def _url_host(url: bytes | None) -> str | None:
    """The host of an absolute URL (scheme://[user@]host[:port]/...), lower case; None when
    there is none."""
    if not url:
        return None
    _, sep, rest = url.partition(b"://")
    if not sep:
        return None
    authority = rest.split(b"/", 1)[0].split(b"?", 1)[0].split(b"#", 1)[0].rsplit(b"@", 1)[-1]
    if authority.startswith(b"["):
        host = authority[1:].split(b"]", 1)[0]
    else:
        host = authority.split(b":", 1)[0]
    return host.decode("latin-1").lower() or None


def http_request(dest: Address, path: bytes, headers: Sequence[tuple[bytes, bytes]],
                 scheme: str = "http") -> Request:
    """The question a request to `dest` for `path` asks, from its headers: plain HTTP, or
    (`scheme` "https") one inside an opened HTTPS connection."""
    clues = _clues(headers)
    request_type = _request_type(clues, path)
    page, third_party = _page(clues, dest.host, request_type)
    default = 443 if scheme == "https" else 80
    url = f"{scheme}://{dest.authority(default)}{path.decode('latin-1')}"
    return Request(url, dest.host, request_type, page, third_party)


def tunnel_requests(dest: Address) -> tuple[Request, Request]:
    """The questions a tunnel to `dest` asks: its host's root from an unknown page of another
    site, as a subresource ("other": generic patterns apply) and as a page ("document": the
    `$document` rules that block whole sites apply)."""
    scheme, default = ("http", 80) if dest.port == 80 else ("https", 443)
    url = f"{scheme}://{dest.authority(default)}/"
    return (Request(url, dest.host, "other", UNKNOWN_PAGE, True),
            Request(url, dest.host, "document", UNKNOWN_PAGE, True))


class Blocker:
    """The profile's lists in one engine, so that an exception in any list wins over a block in
    any other; and which list holds each rule, to name it."""

    __slots__ = ("_engine", "_known", "_owner", "lists")

    def __init__(self, lists: Sequence[FilterList]) -> None:
        self.lists = tuple(lists)
        self._engine = Engine(rule for filter_list in self.lists for rule in filter_list.rules)
        # rule text -> the first list holding it (with one list, there is nothing to look up)
        self._owner: dict[str, int] = {}
        self._known: dict[Request, Verdict] = {}  # verdicts of recent questions (bounded)
        if len(self.lists) > 1:
            for index in range(len(self.lists) - 1, -1, -1):
                self._owner.update(dict.fromkeys(self.lists[index].rules, index))

    def check(self, request: Request) -> Verdict:
        """The verdict on `request`; the same question asked again (a page's resources on
        every visit, polling) is answered from the last KNOWN verdicts."""
        verdict = self._known.get(request)
        if verdict is not None:
            return verdict
        rule, exception = self._engine.check(request.url, request.host, request.page_host,
                                             request.request_type, request.third_party)
        if rule is not None:
            verdict = Verdict(self._hit(rule))
        elif exception is not None:
            verdict = Verdict(None, self._hit(exception))
        else:
            verdict = NOT_BLOCKED
        if len(self._known) >= KNOWN:
            self._known.clear()
        self._known[request] = verdict
        return verdict

    def check_tunnel(self, dest: Address) -> Verdict:
        """A tunnel to `dest` (tunnel_requests): blocked if either question is."""
        first, second = tunnel_requests(dest)
        verdict = self.check(first)
        if verdict.block is None:
            as_page = self.check(second)
            if as_page.block is not None:
                return as_page
        return verdict

    def _hit(self, rule: str) -> Hit:
        listed = self.lists[self._owner.get(rule, 0)]
        if listed.format == HOSTS and rule.startswith("||") and rule.endswith("^"):
            rule = rule[2:-1]
        return Hit(listed.name, rule)

    def not_taken(self, filter_list: FilterList) -> list[tuple[int, str, str]]:
        """The rules of `filter_list` the engine did not take, with why: (line, text, reason);
        a rule a `$badfilter` cancels, and the `$badfilter` rules themselves, are not among
        them."""
        cancelled = {_without_badfilter(rule) for fl in self.lists for rule in fl.rules
                     if _has_badfilter(rule)}
        found = []
        for line, rule in zip(filter_list.lines, filter_list.rules, strict=True):
            if _has_badfilter(rule) or rule in cancelled or self._engine.takes(rule):
                continue
            found.append((line, rule, option_problem(rule) or "not understood by the engine"))
        return found


def _has_badfilter(rule: str) -> bool:
    return "$" in rule and "badfilter" in rule.rsplit("$", 1)[1].split(",")


def _without_badfilter(rule: str) -> str:
    head, options = rule.rsplit("$", 1)
    kept = [option for option in options.split(",") if option != "badfilter"]
    return f"{head}${','.join(kept)}" if kept else head
