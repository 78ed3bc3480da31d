"""Block lists as tables: list text in, verdict and rule out (policy/blocklists.py over the
engine adapter, policy/filter_engine.py), the reading of list files (config/blocklists.py), and
real EasyList and EasyPrivacy verdicts when Debian's uBlock Origin package is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from anonproxy.config.blocklists import (
    ListError,
    detect_format,
    load_blocker,
    parse_list,
    read_list,
)
from anonproxy.config.profiles import ProfileError, load_profile
from anonproxy.policy.blocklists import (
    ADBLOCK,
    HOSTS,
    UNKNOWN_PAGE,
    Blocker,
    Hit,
    Request,
    http_request,
    page_of,
    request_type_of,
    tunnel_requests,
)
from anonproxy.policy.filter_engine import option_problem
from anonproxy.wire.address import Address

EASYLIST_DIR = Path("/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist")

ADS = """\
[Adblock Plus 2.0]
! Title: ads
||ads.example^
||tracker.example^$third-party
/banner/*$image
||scripts.example^$script
||scam.example^$document
||cdn.example^$domain=news.example
example.org##.ad-box
news.example#@#.sponsored
||ads.example/ok/forced/$important
@@||ads.example/ok/
"""
EXCEPTIONS = """\
! exceptions of another list win too
@@||tracker.example/consent.js
"""
HOSTS_TEXT = """\
# a hosts file
127.0.0.1 localhost
::1 ip6-localhost
0.0.0.0 0.0.0.0
0.0.0.0 hosts-ad.example other-ad.example  # two names
0.0.0.0 trailing-dot.example.
bare-name.example
not-an-ip wrong.example
0.0.0.0 bad_name!
"""


def blocker(*lists: tuple[str, str]) -> Blocker:
    return Blocker([parse_list(name, text) for name, text in lists])


def req(url: str, kind: str = "other", page: str = UNKNOWN_PAGE,
        third_party: bool | None = True) -> Request:
    host = url.split("//", 1)[1].split("/", 1)[0].split(":", 1)[0]
    return Request(url, host, kind, page, third_party)


VERDICTS = [
    # url, kind, page host, third party, (list, rule) or None
    ("http://ads.example/x.js", "script", UNKNOWN_PAGE, True, ("ads.txt", "||ads.example^")),
    ("http://sub.ads.example/x", "image", UNKNOWN_PAGE, True, ("ads.txt", "||ads.example^")),
    ("http://ads.example/ok/1.js", "script", UNKNOWN_PAGE, True, None),  # the exception wins
    ("http://ads.example/ok/forced/1", "other", UNKNOWN_PAGE, True,  # ...unless $important
     ("ads.txt", "||ads.example/ok/forced/$important")),
    ("http://notads.example/", "other", UNKNOWN_PAGE, True, None),  # || anchors at a label
    ("http://tracker.example/t.gif", "image", "www.site.example", None,
     ("ads.txt", "||tracker.example^$third-party")),
    ("http://tracker.example/t.gif", "image", "www.tracker.example", None, None),  # first party
    ("http://tracker.example/consent.js", "script", UNKNOWN_PAGE, True, None),  # other list's @@
    ("http://img.example/banner/1.png", "image", UNKNOWN_PAGE, True, ("ads.txt", "/banner/*$image")),
    ("http://img.example/banner/1.png", "script", UNKNOWN_PAGE, True, None),  # type option
    ("http://scripts.example/a.js", "script", UNKNOWN_PAGE, True, ("ads.txt", "||scripts.example^$script")),
    ("http://scripts.example/a.png", "image", UNKNOWN_PAGE, True, None),
    ("http://scam.example/", "document", "scam.example", False, ("ads.txt", "||scam.example^$document")),
    ("http://cdn.example/lib.js", "script", "www.news.example", None, ("ads.txt", "||cdn.example^$domain=news.example")),
    ("http://cdn.example/lib.js", "script", "www.other.example", None, None),
    ("http://cdn.example/lib.js", "script", UNKNOWN_PAGE, True, None),  # no page: no domain= rule
    ("http://hosts-ad.example/", "other", UNKNOWN_PAGE, True, ("hosts.txt", "hosts-ad.example")),
    ("http://deep.other-ad.example/p", "script", UNKNOWN_PAGE, True, ("hosts.txt", "other-ad.example")),
    ("http://trailing-dot.example/", "other", UNKNOWN_PAGE, True, ("hosts.txt", "trailing-dot.example")),
    ("http://bare-name.example/", "other", UNKNOWN_PAGE, True, ("hosts.txt", "bare-name.example")),
    ("http://localhost/", "other", UNKNOWN_PAGE, True, None),  # hosts entries for this machine
    ("http://wrong.example/", "other", UNKNOWN_PAGE, True, None),  # a line not understood
]


@pytest.mark.parametrize(("url", "kind", "page", "third_party", "expected"), VERDICTS)
def test_block_list_verdicts(url, kind, page, third_party, expected):
    lists = blocker(("ads.txt", ADS), ("exceptions.txt", EXCEPTIONS), ("hosts.txt", HOSTS_TEXT))
    verdict = lists.check(Request(url, url.split("//")[1].split("/")[0], kind, page, third_party))
    assert verdict.block == (Hit(*expected) if expected else None)


def test_an_exception_that_wins_is_named():
    lists = blocker(("ads.txt", ADS), ("exceptions.txt", EXCEPTIONS))
    verdict = lists.check(req("http://ads.example/ok/1.js", "script"))
    assert verdict.block is None and verdict.allowed_by == Hit("ads.txt", "@@||ads.example/ok/")
    verdict = lists.check(req("http://tracker.example/consent.js", "script"))
    assert verdict.allowed_by == Hit("exceptions.txt", "@@||tracker.example/consent.js")


def test_a_rule_in_two_lists_is_named_after_the_first():
    lists = blocker(("one.txt", "||both.example^\n"), ("two.txt", "||both.example^\n||two.example^\n"))
    assert lists.check(req("http://both.example/")).block == Hit("one.txt", "||both.example^")
    assert lists.check(req("http://two.example/")).block == Hit("two.txt", "||two.example^")


TUNNELS = [
    # host, port, (list, rule) or None: a tunnel is blocked when the host's root would be
    ("ads.example", 443, ("ads.txt", "||ads.example^")),
    ("tracker.example", 443, ("ads.txt", "||tracker.example^$third-party")),
    ("scam.example", 443, ("ads.txt", "||scam.example^$document")),  # a whole-site rule
    ("scripts.example", 443, None),  # only its scripts are blocked: the host is not
    ("cdn.example", 443, None),  # only on some pages
    ("hosts-ad.example", 8443, ("hosts.txt", "hosts-ad.example")),
    ("fine.example", 80, None),
]


@pytest.mark.parametrize(("host", "port", "expected"), TUNNELS)
def test_tunnels_are_matched_by_host(host, port, expected):
    lists = blocker(("ads.txt", ADS), ("hosts.txt", HOSTS_TEXT))
    verdict = lists.check_tunnel(Address(host, port))
    assert verdict.block == (Hit(*expected) if expected else None)


def test_tunnel_questions_name_the_root_from_an_unknown_page():
    plain, page = tunnel_requests(Address("a.example", 80))
    assert plain == Request("http://a.example/", "a.example", "other", UNKNOWN_PAGE, True)
    assert page.request_type == "document"
    assert tunnel_requests(Address("a.example", 443))[0].url == "https://a.example/"
    assert tunnel_requests(Address("::1", 8443))[0].url == "https://[::1]:8443/"


KINDS = [
    # headers, path, request type
    ([(b"Sec-Fetch-Dest", b"script"), (b"Accept", b"text/html")], b"/x", "script"),
    ([(b"sec-fetch-dest", b"iframe")], b"/x", "subdocument"),
    ([(b"Sec-Fetch-Dest", b"empty")], b"/api", "xmlhttprequest"),
    ([(b"Sec-Fetch-Dest", b"style")], b"/x", "stylesheet"),
    ([(b"Sec-Fetch-Dest", b"video")], b"/x", "media"),
    ([(b"Sec-Fetch-Dest", b"made-up")], b"/a.js", "script"),  # unknown: the next clue
    ([(b"Accept", b"text/html,application/xhtml+xml,*/*;q=0.8")], b"/", "document"),
    ([(b"Accept", b"image/avif,image/webp,*/*")], b"/p", "image"),
    ([(b"Accept", b"text/css,*/*;q=0.1")], b"/p", "stylesheet"),
    ([(b"Accept", b"*/*")], b"/lib/app.JS?v=2", "script"),
    ([(b"Accept", b"*/*")], b"/pixel.gif", "image"),
    ([(b"Accept", b"*/*")], b"/fonts/a.woff2", "font"),
    ([(b"Accept", b"*/*")], b"/data", "other"),
    ([], b"/x.unknown", "other"),
    ([(b"Upgrade", b"websocket"), (b"Sec-Fetch-Dest", b"empty")], b"/ws", "websocket"),
]


@pytest.mark.parametrize(("headers", "path", "kind"), KINDS)
def test_the_request_type_comes_from_fetch_metadata_accept_or_extension(headers, path, kind):
    assert request_type_of(headers, path) == kind


# every destination Fetch defines, and every extension the table knows, with the engine's type
EVERY_DESTINATION = {
    "document": "document", "iframe": "subdocument", "frame": "subdocument",
    "fencedframe": "subdocument", "script": "script", "worker": "script",
    "sharedworker": "script", "serviceworker": "script", "audioworklet": "script",
    "paintworklet": "script", "xslt": "script", "style": "stylesheet", "image": "image",
    "font": "font", "audio": "media", "video": "media", "track": "media", "object": "object",
    "embed": "object", "report": "ping", "empty": "xmlhttprequest", "manifest": "other",
}
EVERY_EXTENSION = {
    "js": "script", "mjs": "script", "css": "stylesheet", "png": "image", "gif": "image",
    "jpg": "image", "jpeg": "image", "webp": "image", "avif": "image", "svg": "image",
    "ico": "image", "woff": "font", "woff2": "font", "ttf": "font", "otf": "font",
    "mp4": "media", "webm": "media", "mp3": "media", "m3u8": "media", "html": "document",
    "htm": "document",
}


@pytest.mark.parametrize(("dest", "expected"), sorted(EVERY_DESTINATION.items()))
def test_every_fetch_destination_has_its_request_type(dest, expected):
    assert request_type_of([(b"Sec-Fetch-Dest", dest.encode())], b"/") == expected


@pytest.mark.parametrize(("extension", "expected"), sorted(EVERY_EXTENSION.items()))
def test_every_known_extension_has_its_request_type(extension, expected):
    assert request_type_of([(b"Accept", b"*/*")], f"/a/file.{extension}?v=1".encode()) == expected


@pytest.mark.parametrize(("accept", "expected"), [
    ("video/webm,video/ogg,*/*", "media"), ("audio/mpeg,*/*", "media"),
    ("font/woff2,*/*", "font"), ("application/javascript, */*", "script"),
    ("text/javascript", "script"), ("application/xhtml+xml", "document"),
])
def test_accept_names_the_request_type(accept, expected):
    assert request_type_of([(b"Accept", accept.encode())], b"/x") == expected


@pytest.mark.parametrize(("referer", "page"), [
    (b"http://a.example#top", "a.example"), (b"http://a.example?q=1", "a.example"),
    (b"http://user:pw@A.Example:8080/p", "a.example"), (b"http://[2001:db8::1]:80/", "2001:db8::1"),
    (b"https://a.example:443", "a.example"), (b"/relative/only", UNKNOWN_PAGE), (b"", UNKNOWN_PAGE),
])
def test_the_page_host_is_read_from_the_referer_url(referer, page):
    assert page_of([(b"Referer", referer)], "x.example", "script")[0] == page


PAGES = [
    # headers, host, type -> (page host, third party)
    ([(b"Referer", b"http://www.news.example/a?b")], "ads.example", "script", ("www.news.example", None)),
    ([(b"Origin", b"https://app.example")], "api.example", "xmlhttprequest", ("app.example", None)),
    ([(b"Origin", b"null")], "api.example", "xmlhttprequest", (UNKNOWN_PAGE, True)),
    ([(b"Referer", b"not a url")], "a.example", "script", (UNKNOWN_PAGE, True)),
    ([(b"Sec-Fetch-Site", b"same-origin")], "a.example", "script", ("a.example", False)),
    ([(b"Sec-Fetch-Site", b"cross-site")], "a.example", "script", (UNKNOWN_PAGE, True)),
    ([(b"Sec-Fetch-Site", b"none")], "a.example", "document", ("a.example", False)),
    ([], "a.example", "document", ("a.example", False)),  # a navigation is its own page
    ([], "a.example", "script", (UNKNOWN_PAGE, True)),  # no clue: another site's page
]


@pytest.mark.parametrize(("headers", "host", "kind", "expected"), PAGES)
def test_the_page_comes_from_referer_origin_or_fetch_metadata(headers, host, kind, expected):
    assert page_of(headers, host, kind) == expected


def test_a_plain_http_request_is_asked_by_its_full_url():
    asked = http_request(Address("a.example", 8080), b"/ads/x.js?q=1",
                         [(b"Referer", b"http://page.example/")])
    assert asked == Request("http://a.example:8080/ads/x.js?q=1", "a.example", "script",
                            "page.example", None)
    assert http_request(Address("a.example", 80), b"/", []).url == "http://a.example/"


def test_parsing_sorts_lines_and_keeps_their_numbers():
    parsed = parse_list("ads.txt", ADS)
    assert parsed.format == ADBLOCK
    assert parsed.rules[0] == "||ads.example^" and parsed.lines[0] == 3
    assert parsed.cosmetic == 2 and "example.org##.ad-box" not in parsed.rules
    assert len(parsed.rules) == 8 and list(parsed.lines)[-2:] == [11, 12]
    hosts = parse_list("hosts.txt", HOSTS_TEXT)
    assert hosts.format == HOSTS
    assert hosts.rules == ("||hosts-ad.example^", "||other-ad.example^",
                           "||trailing-dot.example^", "||bare-name.example^")
    assert list(hosts.lines) == [5, 5, 6, 7]
    assert hosts.skipped == 3  # localhost, ip6-localhost, 0.0.0.0
    assert hosts.bad == ((8, "not-an-ip wrong.example", "expected an IP address, then host names"),
                         (9, "0.0.0.0 bad_name!", "'bad_name!' is not a host name"))


@pytest.mark.parametrize(("text", "fmt"), [
    ("0.0.0.0 a.example\n0.0.0.0 b.example\n||c.example^\n", HOSTS),
    ("# comment\n127.0.0.1 a.example\n", HOSTS),
    ("||a.example^\n0.0.0.0 b.example\n", ADBLOCK),
    ("[Adblock Plus 2.0]\n! only comments\n", ADBLOCK),
    ("", ADBLOCK),
])
def test_the_format_is_detected_from_the_lines(text, fmt):
    assert detect_format(text.splitlines()) == fmt


def test_rules_the_engine_does_not_take_are_reported_with_line_and_why():
    text = ("! mine\n||ok.example^\n||pop.example^$popup\n||typo.example^$scirpt\n"
            "||gone.example^$script\n||gone.example^$script,badfilter\n")
    lists = blocker(("mine.txt", text))
    assert lists.not_taken(lists.lists[0]) == [
        (3, "||pop.example^$popup", "option 'popup' is not supported by the engine"),
        (4, "||typo.example^$scirpt", "option 'scirpt' is not supported by the engine"),
    ]  # a $badfilter rule and the rule it cancels are not mistakes
    assert lists.check(req("http://gone.example/a.js", "script")).block is None
    assert lists.check(req("http://ok.example/")).block == Hit("mine.txt", "||ok.example^")


def test_a_badfilter_is_found_in_the_options_after_the_last_dollar():
    from anonproxy.policy.blocklists import _has_badfilter, _without_badfilter

    assert _has_badfilter("/ads$/$script,badfilter")
    assert not _has_badfilter("/a$badfilter/$script")
    assert _without_badfilter("/ads$/$script,badfilter") == "/ads$/$script"
    assert _without_badfilter("||a.example^$badfilter") == "||a.example^"


@pytest.mark.parametrize(("rule", "problem"), [
    ("||a^$popup", "option 'popup' is not supported by the engine"),
    ("@@||a^$~third-party,removeparam=x", "option 'removeparam' is not supported by the engine"),
    ("||a^$script,third-party", None),
    ("/ads\\d$/", None),  # a regular expression ending in $
    ("||a^", None),
])
def test_option_problems_name_the_option(rule, problem):
    assert option_problem(rule) == problem


def test_list_files_are_read_relative_to_the_profile_and_reused_while_unchanged(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "a.txt").write_text("||a.example^\n")
    profile = tmp_path / "p.toml"
    first = load_blocker(profile, ["lists/a.txt"])
    assert first is not None and load_blocker(profile, ["lists/a.txt"]) is first
    (tmp_path / "lists" / "a.txt").write_text("||b.example^\n||c.example^\n")
    second = load_blocker(profile, ["lists/a.txt"])
    assert second is not first
    assert second.check(req("http://b.example/")).block == Hit("lists/a.txt", "||b.example^")
    assert load_blocker(profile, []) is None


@pytest.mark.parametrize(("content", "error"), [
    (None, "no such file"),
    (b"\xff\xfe||a^", "not UTF-8 text"),
    (b"||a^\x00", "not a text file"),
])
def test_an_unusable_list_is_a_profile_error_naming_key_value_and_why(tmp_path, content, error):
    if content is not None:
        (tmp_path / "bad.txt").write_bytes(content)
    profile = tmp_path / "p.toml"
    profile.write_text('blocklists = ["bad.txt"]\n[exits.direct]\n')
    with pytest.raises(ProfileError) as raised:
        load_profile(str(profile))
    assert str(raised.value).startswith(f'{profile}: blocklists[1] = "bad.txt": {error}')
    with pytest.raises(ListError):
        read_list(tmp_path / "bad.txt", "bad.txt")


def test_a_directory_is_not_a_list(tmp_path):
    with pytest.raises(ListError, match="a directory, not a list"):
        read_list(tmp_path, "dir")


def test_the_profile_key_takes_names_only(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('blocklists = [""]\n[exits.direct]\n')
    with pytest.raises(ProfileError, match=r"blocklists\[1\]"):
        load_profile(str(profile))


@pytest.fixture(scope="module")
def easylists():
    if not (EASYLIST_DIR / "easylist.txt").is_file():
        pytest.skip("webext-ublock-origin-chromium is not installed (scripts/test installs it)")
    return load_blocker(EASYLIST_DIR / "profile.toml", ["easylist.txt", "easyprivacy.txt"])


REAL = [
    # url (a plain-HTTP request from a news page), type, the list expected to block it
    ("http://ad.doubleclick.net/ddm/adj/x.js", "script", "easylist.txt"),
    ("http://pagead2.googlesyndication.com/pagead/js/adsbygoogle.js", "script", "easylist.txt"),
    ("http://static.ads-twitter.com/uwt.js", "script", "easylist.txt"),
    ("http://www.google-analytics.com/analytics.js", "script", "easyprivacy.txt"),
    ("http://www.googletagmanager.com/gtag/js?id=G-1", "script", "easyprivacy.txt"),
    ("http://www.news.example/index.html", "document", None),
    ("http://cdn.news.example/app.js", "script", None),
]


@pytest.mark.parametrize(("url", "kind", "listed"), REAL)
def test_easylist_and_easyprivacy_block_real_ad_and_tracker_urls(easylists, url, kind, listed):
    verdict = easylists.check(Request(url, url.split("/")[2], kind, "www.news.example", None))
    assert (verdict.block.list if verdict.block else None) == listed, verdict


def test_easylist_hosts_are_blocked_as_tunnels(easylists):
    assert easylists.check_tunnel(Address("ad.doubleclick.net", 443)).block == Hit(
        "easylist.txt", "||ad.doubleclick.net^")
    assert easylists.check_tunnel(Address("www.google-analytics.com", 443)).block is not None
    assert easylists.check_tunnel(Address("www.wikipedia.org", 443)).block is None
