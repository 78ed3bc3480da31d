"""A profile's block lists as files: read, their format detected, each line sorted into a rule,
a comment, a cosmetic rule (skipped: a proxy sees requests, not pages) or a line that is not
understood (kept with its number and why, for `check`).

Formats: Adblock Plus / uBlock Origin filter lists, and hosts files (`0.0.0.0 host ...`, or one
host name a line), told apart by their lines: a list is a hosts file when most of its first
lines start with an IP address.

Invariants: a path is relative to the profile's folder; an unreadable or missing list is a
profile error naming the profile, the key (`blocklists[N]`), the value and what is wrong; a line
that is not understood is never an error (real lists carry rules for other engines). Lists read
and compiled once are reused while their files stay the same (path, size, mtime), so a reload
with unchanged lists costs nothing and a reload after a change picks the change up.
"""

from __future__ import annotations

import ipaddress
import os
import re
from array import array
from pathlib import Path

from anonproxy.policy.blocklists import ADBLOCK, HOSTS, Blocker, FilterList

COSMETIC = re.compile(r"#@?(?:\$\?|[?$%])?#|\$@?\$")
LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
HOST_NAME = re.compile(rf"^{LABEL}(?:\.{LABEL})*\.?$")
# names hosts files give this machine (uBlock Origin skips the same): never rules
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "local", "broadcasthost",
                         "0.0.0.0", "ip6-localhost", "ip6-loopback", "ip6-localnet",
                         "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters", "ip6-allhosts"})
SNIFF_LINES = 200  # lines looked at to tell the format


class ListError(Exception):
    """A list that cannot be used; `str()` is the sentence (the caller names the profile).
    `number`: which `blocklists` entry (from 1; 0 when not known), `missing`: no such file."""

    def __init__(self, message: str, number: int = 0, missing: bool = False) -> None:
        super().__init__(message)
        self.number, self.missing = number, missing


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def detect_format(lines: list[str]) -> str:
    """HOSTS when most of the first rule lines start with an IP address, else ADBLOCK."""
    seen = hosts = 0
    for raw in lines:
        line = raw.strip()
        if not line or line[0] in "!#[":
            continue
        seen += 1
        hosts += _is_address(line.split(None, 1)[0])
        if seen == SNIFF_LINES:
            break
    return HOSTS if seen and hosts * 2 > seen else ADBLOCK


def parse_list(name: str, text: str) -> FilterList:
    """The rules of one list's text (pure)."""
    lines = text.splitlines()
    if detect_format(lines) == HOSTS:
        return _parse_hosts(name, lines)
    rules: list[str] = []
    numbers = array("I")
    cosmetic = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line[0] in "![":
            continue
        if COSMETIC.search(line):
            cosmetic += 1
        elif line[0] != "#":  # a "# ..." line is a comment in uBlock Origin's lists
            rules.append(line)
            numbers.append(number)
    return FilterList(name, ADBLOCK, tuple(rules), numbers, cosmetic=cosmetic)


def _parse_hosts(name: str, lines: list[str]) -> FilterList:
    rules: list[str] = []
    numbers = array("I")
    skipped = 0
    bad: list[tuple[int, str, str]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line[0] in "![":
            continue
        fields = line.split()
        if len(fields) > 1 and not _is_address(fields[0]):
            bad.append((number, raw.strip(), "expected an IP address, then host names"))
            continue
        for field in fields[1:] if len(fields) > 1 else fields:
            host = field.lower()
            if host in LOCAL_NAMES or host.startswith("ip6-") or _is_address(host):
                skipped += 1
            elif not HOST_NAME.match(host) or "." not in host.strip("."):
                bad.append((number, raw.strip(), f"'{host}' is not a host name"))
            else:
                rules.append(f"||{host.rstrip('.')}^")
                numbers.append(number)
    return FilterList(name, HOSTS, tuple(rules), numbers, skipped=skipped, bad=tuple(bad))


def read_list(path: Path, name: str) -> FilterList:
    """One list file, parsed. ListError when it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ListError(f"no such file ({path})", missing=True) from None
    except IsADirectoryError:
        raise ListError(f"a directory, not a list ({path})") from None
    except OSError as error:
        raise ListError(f"cannot read {path}: {error.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ListError(f"not UTF-8 text ({path}, byte {error.start})") from None
    if "\x00" in text:
        raise ListError(f"not a text file ({path})")
    return parse_list(name, text)


_compiled: dict[tuple, Blocker] = {}  # what the files were -> their engine (a few kept)


def list_path(profile_path: Path | None, entry: str) -> Path:
    """Where a `blocklists` entry points: relative to the profile's folder."""
    path = Path(os.path.expanduser(entry))
    if not path.is_absolute() and profile_path is not None:
        path = profile_path.parent / path
    return path


def load_blocker(profile_path: Path | None, entries: list[str]) -> Blocker | None:
    """The profile's lists compiled into one Blocker (None without lists). ListError names the
    entry (`blocklists[N] = "..."`) that cannot be used."""
    if not entries:
        return None
    paths = [list_path(profile_path, entry) for entry in entries]
    key = tuple((entry, *_identity(path)) for entry, path in zip(entries, paths, strict=True))
    blocker = _compiled.get(key)
    if blocker is None:
        lists = []
        for number, (entry, path) in enumerate(zip(entries, paths, strict=True), start=1):
            try:
                lists.append(read_list(path, entry))
            except ListError as error:
                raise ListError(f'blocklists[{number}] = "{entry}": {error}', number,
                                error.missing) from None
        blocker = Blocker(lists)
        if len(_compiled) >= 4:
            _compiled.clear()
        _compiled[key] = blocker
    return blocker


def _identity(path: Path) -> tuple:
    """What tells a changed file from an unchanged one (a missing file: nothing, read later)."""
    try:
        st = path.stat()
    except OSError:
        return (str(path),)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
