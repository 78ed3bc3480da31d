"""The filter engine: Adblock Plus / uBlock Origin network rules matched by adblock-rust, through
the `adblock` package. The one module that imports it, so that another engine can take its
place without a change elsewhere (blocklists.py asks only what is here).

Chosen over the alternatives by their design (not measured here): adblock-rust is the engine
Brave ships, about 4 µs a URL here against EasyList and EasyPrivacy (docs/benchmarks.md);
`adblockparser` is pure Python and compiles each rule to a regular expression, so it is known
to be orders of magnitude slower on lists of this size; `braveblock` wraps the same Rust engine,
so it would match the same rules the same way. The `adblock` package pins adblock-rust 0.5.6
(its last release is from 2022): options that version does not know (`popup`, `removeparam`,
`method`, `rewrite`, ...) make the engine drop the rule, and `check` says so.

Invariants: the engine is built unoptimized and in debug mode, so a match reports the exact text
of the rule that matched (the optimizer merges rules and reports the merged text; unoptimized
checks cost the same here: docs/benchmarks.md). Exceptions (`@@`) win over blocking rules
unless the blocking rule says `$important`, as the engine decides. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import adblock

# the request types the engine knows (Sec-Fetch-Dest and Accept are mapped onto these)
REQUEST_TYPES = frozenset({"document", "subdocument", "script", "stylesheet", "image", "font",
                           "media", "object", "xmlhttprequest", "websocket", "ping", "other"})

# the options adblock-rust 0.5.6 parses (src/filters/network.rs, parse_filter_options); a rule
# with any other option is dropped by the engine
KNOWN_OPTIONS = frozenset({
    "domain", "badfilter", "important", "match-case", "third-party", "3p", "first-party", "1p",
    "collapse", "bug", "tag", "redirect", "redirect-rule", "csp", "generichide", "ghide",
    "document", "doc", "image", "media", "object", "object-subrequest", "other", "ping",
    "beacon", "script", "stylesheet", "css", "subdocument", "frame", "xmlhttprequest", "xhr",
    "websocket", "font",
})


class Engine:
    """Network rules, compiled once, asked per request. Not thread-safe to build; checks only
    read."""

    __slots__ = ("_engine",)

    def __init__(self, rules: Iterable[str]) -> None:
        filters = adblock.FilterSet(debug=True)  # debug: matches report the rule's text
        filters.add_filters(list(rules), rule_types="networkonly")
        self._engine = adblock.Engine(filters, optimize=False)

    def check(self, url: str, host: str, page_host: str, request_type: str,
              third_party: bool | None) -> tuple[str | None, str | None]:
        """(the blocking rule, the exception that let the request through): the first is None
        unless the request is blocked; the second is set when an exception rule won. `page_host`
        is the page's host ("" if unknown); `third_party` None: decided from the two hosts'
        registrable domains."""
        result = self._engine.check_network_urls_with_hostnames(
            url, host, page_host, request_type, third_party)
        if result.matched:
            return result.filter or "(a rule of the list)", None
        return None, result.exception

    def takes(self, rule: str) -> bool:
        """Whether the engine holds `rule` (False for one it could not parse, or cancelled by a
        `$badfilter`)."""
        return bool(self._engine.filter_exists(rule))


def option_problem(rule: str) -> str | None:
    """Why the engine would not take `rule`, when an option it does not know explains it."""
    body = rule.removeprefix("@@")
    if "$" not in body or (body.startswith("/") and body.endswith("/")):
        return None
    for option in body.rsplit("$", 1)[1].split(","):
        name = option.lstrip("~").split("=", 1)[0].strip().lower()
        if name and name not in KNOWN_OPTIONS:
            return f"option '{name}' is not supported by the engine"
    return None
