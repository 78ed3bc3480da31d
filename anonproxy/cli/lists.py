"""`anonproxy lists update`: the profile's block lists that name a URL (`{ url = "...",
path = "..." }`), fetched into their files through the profile's own rules and exits.

Invariants: a list is fetched the way `anonproxy fetch` fetches (in-process, through the rule
and exit the profile gives the list's host, header policy included), never directly and never
by the running proxy, which only reads the files; requests are conditional (If-None-Match and
If-Modified-Since from what the last answer said, kept beside the list as PATH.source, 0600),
so an unchanged list costs a 304; a new list replaces the old file only once it arrived whole
and reads as a list with rules (written beside it, then renamed), so a failed update keeps the
old one. A running proxy picks the new files up on its next reload.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path

from anonproxy.config.blocklists import list_path, parse_list
from anonproxy.config.models import ListSource
from anonproxy.config.profiles import LoadedProfile

UPDATE_FAILED = 5  # as fetch's network errors


def update(loaded: LoadedProfile) -> int:
    """Fetch every list of the profile that names a URL; one line each. 0 when all are up to
    date, UPDATE_FAILED when one could not be fetched (its old file is kept)."""
    sources = [(i, e) for i, e in enumerate(loaded.profile.blocklists, start=1)
               if isinstance(e, ListSource)]
    if not sources:
        print(f"anonproxy: lists update: {loaded.path} has no block list with a url "
              '(blocklists = [{ url = "https://...", path = "list.txt" }])', file=sys.stderr)
        return 2
    return asyncio.run(_update_all(loaded, sources))


async def _update_all(loaded: LoadedProfile, sources: list[tuple[int, ListSource]]) -> int:
    from anonproxy.cli.remote import announced_services
    from anonproxy.cli.tor_wait import TorNotReady, tors_for
    from anonproxy.cli.wrap import TOR_WAIT
    from anonproxy.config.profiles import open_geo
    from anonproxy.exits.context import Context

    ctx = Context(loaded, loaded.profile.listen_address, geo=open_geo(loaded),
                  also_own=announced_services())
    failed = 0
    try:
        async with tors_for(ctx, TOR_WAIT):
            for number, source in sources:
                line, ok = await _update_one(ctx, loaded, number, source)
                print(line, file=sys.stdout if ok else sys.stderr)
                failed += not ok
    except TorNotReady as error:
        print(f"anonproxy: lists update: {error}", file=sys.stderr)
        return UPDATE_FAILED
    return UPDATE_FAILED if failed else 0


async def _update_one(ctx, loaded: LoadedProfile, number: int,
                      source: ListSource) -> tuple[str, bool]:
    """(what happened, in one line; whether the list is now up to date)."""
    from anonproxy.cli.fetch import FetchFailed, FetchRequest, fetch

    path = list_path(loaded.path, source.path)
    meta_path = path.with_name(path.name + ".source")
    known = _read_meta(meta_path) if path.is_file() else {}
    headers = []
    if known.get("url") == source.url:
        if known.get("etag"):
            headers.append(("If-None-Match", known["etag"]))
        if known.get("last_modified"):
            headers.append(("If-Modified-Since", known["last_modified"]))
    out = io.BytesIO()
    name = f'blocklists[{number}] "{source.path}"'
    try:
        status = await fetch(ctx, FetchRequest(source.url, headers=headers, follow=True,
                                               include_head=True, fail=True), out)
    except FetchFailed as error:
        return f"anonproxy: lists update: {name}: {error.message}; kept the old file", False
    head, body = _last_head(out.getvalue())
    if status == 304:
        return f"{name}: not modified since the last update ({source.url})", True
    fields = _fields(head)
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return f"anonproxy: lists update: {name}: not UTF-8 text; kept the old file", False
    parsed = parse_list(source.path, text)
    if not parsed.rules:
        return (f"anonproxy: lists update: {name}: {source.url} gave no rules (HTTP {status}); "
                "kept the old file"), False
    _write_atomically(path, body)
    _write_atomically(meta_path, json.dumps({
        "url": source.url, "etag": fields.get(b"etag", b"").decode("latin-1"),
        "last_modified": fields.get(b"last-modified", b"").decode("latin-1")}).encode())
    return (f"{name}: updated from {source.url}: {len(body)} bytes, "
            f"{len(parsed.rules)} rules ({parsed.format})"), True


def _last_head(data: bytes) -> tuple[bytes, bytes]:
    """The final response head and the body, past the heads of the redirects followed."""
    head, _, body = data.partition(b"\r\n\r\n")
    while body.startswith(b"HTTP/") and head.split(b" ", 2)[1:2] in (
            [b"301"], [b"302"], [b"303"], [b"307"], [b"308"]):
        head, _, body = body.partition(b"\r\n\r\n")
    return head, body


def _fields(head: bytes) -> dict[bytes, bytes]:
    found = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        found[name.strip().lower()] = value.strip()
    return found


def _read_meta(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_atomically(path: Path, data: bytes) -> None:
    """`data` into `path` whole or not at all: a file beside it (0600), then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
