"""Profiles as files: finding them by name, loading and checking them.

`load_profile(ref)` takes a profile name (a file in the user's profile folder, or a shipped
profile: package data in anonproxy/profiles) or a path, and returns a LoadedProfile or raises
ProfileError whose message names the file, the key path, the offending value and a hint: a user
never sees a traceback for a bad profile.

Invariants enforced here: every exit a profile names exists; pools do not refer to each other
in a cycle; listening beyond loopback needs a client allow-list and/or credentials (the main
listen, and each [[reverse]] entry's: `listen_problems`, in listeners.py with the other
checks of listeners); no two listeners share an address, and no reverse backend is one of our
own listeners (a loop); every file a reverse entry names is there.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from anonproxy.config.blocklists import ListError, load_blocker
from anonproxy.config.listeners import admin_problems as admin_problems  # (re-exported)
from anonproxy.config.listeners import clashes, loop_problems
from anonproxy.config.listeners import listen_problems as listen_problems  # (re-exported)
from anonproxy.config.models import (
    BLOCK,
    InvalidProfile,
    Profile,
    validate_profile,
)
from anonproxy.config.reverse import Reverse
from anonproxy.policy.blocklists import Blocker
from anonproxy.policy.geo import GeoDB, GeoError


def _shipped_dir() -> Path:
    """The shipped profiles: package data (anonproxy/profiles) found through importlib.resources,
    so an installed wheel finds them wherever it runs. A wheel installs them as files beside the
    modules (as does a source checkout or an editable install): a folder on disk, whose files
    a LoadedProfile can name, reload and look beside."""
    shipped = resources.files("anonproxy.profiles")
    return shipped if isinstance(shipped, Path) else Path(str(shipped))


SHIPPED_DIR = _shipped_dir()


def user_profile_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "anonproxy"


class ProfileError(Exception):
    """A profile that cannot be used; `str()` is the complete message for the user."""


def _references(profile: Profile) -> list[str]:
    """Problems no single key shows: names that point nowhere, pool cycles, open listeners,
    reverse entries that clash with the rest."""
    return [*_name_problems(profile), *_cycle_problems(profile), *_setting_problems(profile),
            *_reverse_problems(profile)]


def _name_problems(profile: Profile) -> list[str]:
    """Every exit name the profile uses (default, rules, pool members, fallbacks) that no exit
    defines, and an exit that takes the reserved name `block`."""
    known = set(profile.exits)
    names = ", ".join(sorted(known)) or "none"
    uses = [("default", profile.default, True)]
    uses += [(f"rules[{i}].exit", rule.exit, True)
             for i, rule in enumerate(profile.rules, start=1)]
    for name, exit_ in profile.exits.items():
        uses += [(f"exits.{name}.pool[{j}]", m, False)
                 for j, m in enumerate(exit_.pool or [], start=1)]
        if exit_.fallback is not None:
            uses.append((f"exits.{name}.fallback", exit_.fallback, False))
    problems = []
    if BLOCK in known:
        problems.append(f'exits.{BLOCK}: "block" is reserved for rules that refuse a destination')
    for key, name, block_ok in uses:
        if name in known or (name == BLOCK and block_ok):
            continue
        hint = " ('block' is only for rules)" if name == BLOCK else ""
        problems.append(f'{key} = "{name}": no exit by that name{hint}; defined: {names}')
    return problems


def _cycle_problems(profile: Profile) -> list[str]:
    """The first cycle of pools and fallbacks that refer to each other, if any."""
    for name in profile.exits:
        cycle = _cycle(profile, name, [])
        if cycle and cycle[0] == name:
            return [f"exits.{name}: pools refer to each other in a cycle: {' -> '.join(cycle)}"]
    return []


def _setting_problems(profile: Profile) -> list[str]:
    """Settings that contradict each other or expose the proxy: resolving through a Tor the
    profile lacks, an open listener or dashboard, a managed tor per worker, auth beside
    selectable profiles."""
    problems: list[str] = []
    if profile.resolve == "tor" and not any(e.tor for e in profile.exits.values()):
        problems.append('resolve = "tor": this profile has no Tor exit to resolve through')
    if profile.forwarding:
        problems += [f'listen = "{profile.listen}": {p}'
                     for p in listen_problems(profile.listen_address, profile.allow, profile.auth)]
    if profile.workers > 1 and profile.uses_managed_tor:
        problems.append(f"workers = {profile.workers}: a managed tor exit would start one tor "
                        'per worker; use a tor you run (tor = { control = "HOST:PORT" }) or '
                        "workers = 1")
    if profile.admin is not None:
        main = profile.listen_address if profile.forwarding else None
        problems += [f'admin.listen = "{profile.admin.listen}": {p}'
                     for p in admin_problems(profile.admin, main)]
    if profile.auth is not None and profile.selectable:
        problems.append("auth: proxy usernames already select profiles (selectable); use one "
                        "or the other")
    return problems


def _reverse_problems(profile: Profile) -> list[str]:
    """What the [[reverse]] entries contradict: nothing to run, several workers, an entry open
    beyond loopback, a listen another listener has, a backend that is our own listener, an
    onion service through an exit that is not a Tor exit."""
    if not profile.reverse:
        return [] if profile.forwarding else [(
            'listen = "off": no [[reverse]] entry either, so nothing would run; give a listen '
            "address (HOST:PORT) or add a [[reverse]] entry")]
    problems = []
    if profile.workers > 1:
        problems.append(f"workers = {profile.workers}: reverse entries need workers = 1")
    fixed = [("listen", profile.listen_address)] if profile.forwarding else []
    if profile.admin is not None:
        fixed.append(("admin.listen", profile.admin.address))
    entries = [(f"reverse[{n}].listen", e.listen_address)
               for n, e in enumerate(profile.reverse, start=1)]
    for number, entry in enumerate(profile.reverse, start=1):
        key = f"reverse[{number}]"
        said = f'{key}.listen = "{entry.listen}"'
        problems += [f"{said}: {p}" for p in listen_problems(
            entry.listen_address, profile.allow, entry.auth, reverse=True)]
        # each pair once: against the forward proxy, the dashboard and the entries before it
        problems += [f"{said}: {p}"
                     for p in clashes(entry.listen_address, fixed + entries[:number - 1])]
        problems += loop_problems(key, entry, fixed + entries)
        problems += _onion_problems(profile, key, entry)
    return problems


def _onion_problems(profile: Profile, key: str, entry: Reverse) -> list[str]:
    """An onion service's `tor` must name one of the profile's Tor exits."""
    if entry.onion is None:
        return []
    name = entry.onion.tor
    tors = sorted(n for n, e in profile.exits.items() if e.tor is not None)
    if name in tors:
        return []
    why = "no exit by that name" if name not in profile.exits else "not a Tor exit"
    known = ", ".join(tors) or 'none (add one, e.g. [exits.tor] tor = { control = "managed" })'
    return [(f'{key}.onion.tor = "{name}": {why}; an onion service is published through a '
             f"Tor exit of the profile; Tor exits: {known}")]


def _cycle(profile: Profile, name: str, path: list[str]) -> list[str] | None:
    if name in path:
        return path[path.index(name):] + [name]
    exit_ = profile.exits.get(name)
    if exit_ is None:
        return None
    for nxt in [*(exit_.pool or []), *([exit_.fallback] if exit_.fallback else [])]:
        found = _cycle(profile, nxt, [*path, name])
        if found:
            return found
    return None


@dataclass(frozen=True, slots=True)
class LoadedProfile:
    name: str
    path: Path
    profile: Profile
    blocker: Blocker | None = None  # its block lists, compiled (config/blocklists.py)

    @property
    def ca_bundle(self) -> str:
        """`[inspect] ca_bundle`: "system", or the bundle's path (relative to the profile)."""
        given = self.profile.inspect.ca_bundle
        return given if given == "system" else str(self.resolve_path(given))

    def resolve_path(self, given: str) -> Path:
        """A file the profile names (ca_bundle, a reverse entry's tls files or onion key):
        relative to the profile's folder, or absolute."""
        return resolve_relative(self.path, given)


def resolve_relative(profile_path: Path, given: str) -> Path:
    """`given` read relative to the folder of the profile at `profile_path` (or absolute)."""
    return profile_path.parent / given


def resolve_ref(ref: str) -> Path:
    """A profile name -> its file (user folder first, then shipped); a path -> itself."""
    if "/" in ref or ref.endswith(".toml") or os.sep in ref:
        return Path(ref)
    for folder in (user_profile_dir(), SHIPPED_DIR):
        candidate = folder / f"{ref}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in (user_profile_dir(), SHIPPED_DIR) for p in d.glob("*.toml")})
    raise ProfileError(f"no profile named '{ref}' (known: {', '.join(known) or 'none'})")


def known_profiles(beside: Path | None = None) -> dict[str, str]:
    """Profiles by name -> a reference load_profile takes: shipped ones, the user's (which win
    over shipped ones of the same name, as resolve_ref does), and the files in `beside`."""
    found = {p.stem: p.stem for d in (SHIPPED_DIR, user_profile_dir()) for p in d.glob("*.toml")}
    if beside is not None and beside not in (SHIPPED_DIR, user_profile_dir()):
        found.update({p.stem: str(p) for p in beside.glob("*.toml")})
    return found


def load_profile(ref: str, lists: bool = True) -> LoadedProfile:
    """The profile `ref` names, its block lists compiled (`lists=False`: not read, for
    `lists update`, which fetches them)."""
    path = resolve_ref(ref)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"{path}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{path}: not valid TOML: {error}") from None
    profile = parse_profile(data, str(path))
    bundle = profile.inspect.ca_bundle
    if bundle != "system" and not resolve_relative(path, bundle).is_file():
        raise ProfileError(f'{path}: inspect.ca_bundle = "{bundle}": no such file (give a PEM '
                           'bundle\'s path, relative to the profile, or "system")')
    missing = _reverse_file_problems(profile, path)
    if missing:
        raise ProfileError("\n".join(f"{path}: {p}" for p in missing))
    if not lists:
        return LoadedProfile(path.stem, path, profile)
    try:
        blocker = load_blocker(path, profile.blocklist_paths)
    except ListError as error:
        entry = profile.blocklists[error.number - 1] if error.number else None
        hint = (f"; it comes from {entry.url}: run anonproxy lists update --profile {ref}"
                if entry is not None and not isinstance(entry, str) and error.missing else "")
        raise ProfileError(f"{path}: {error}{hint}") from None
    return LoadedProfile(path.stem, path, profile, blocker)


def _reverse_file_problems(profile: Profile, path: Path) -> list[str]:
    """The files the reverse entries name that are not there: the tls certificate and key
    (only that they are files: the TLS layer reads and checks them as the entry starts), and
    the folder of an onion key (the key file itself is written there on the first run)."""
    problems = []
    for number, entry in enumerate(profile.reverse, start=1):
        key = f"reverse[{number}]"
        if entry.tls is not None:
            for name, given in (("cert", entry.tls.cert), ("key", entry.tls.key)):
                where = resolve_relative(path, given).absolute()
                if not where.is_file():
                    problems.append(f'{key}.tls.{name} = "{given}": no such file: {where} '
                                    "(a path relative to the profile's folder)")
        if entry.onion is not None:
            where = resolve_relative(path, entry.onion.key).absolute()
            if where.is_dir():
                problems.append(f'{key}.onion.key = "{entry.onion.key}": {where} is a folder; '
                                "name the key file (written there on the first run)")
            elif not where.parent.is_dir():
                problems.append(f'{key}.onion.key = "{entry.onion.key}": no folder '
                                f"{where.parent} to write the key file in (relative to the "
                                "profile's folder)")
    return problems


def parse_profile(data: dict[str, Any], source: str) -> Profile:
    try:
        profile = validate_profile(data)
    except InvalidProfile as error:
        raise ProfileError("\n".join(_describe(e, source) for e in error.errors)) from None
    problems = _references(profile)
    if problems:
        raise ProfileError("\n".join(f"{source}: {p}" for p in problems))
    return profile


def _describe(error: Any, source: str) -> str:
    loc = error["loc"]
    # positions count from 1, as `check`, `route` and the logs number rules and hops
    key = "".join(f"[{p + 1}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    key = key or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return (f"{source}: {key}: unknown key (check its spelling against the README's "
                "profile reference)")
    if error["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    shown = _short(value) if loc else ""
    return f"{source}: {key}{' = ' + shown if shown else ''}: {message}"


def _short(value: Any) -> str:
    if isinstance(value, dict | list):
        return ""
    # strings as JSON: quoted, with control characters escaped so the error stays one line
    text = repr(value) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def open_geo(loaded: LoadedProfile, needed_by: str | None = None) -> GeoDB | None:
    """The GeoIP database, opened only when a rule asks for countries, `[verify] enforce`
    checks where exits leave, or a command (`needed_by`, such as leaktest) needs it."""
    profile = loaded.profile
    if any(rule.countries for rule in profile.rules):
        needed_by = "rules match on countries"
    elif needed_by is None and profile.verify.enforce:
        needed_by = "[verify] enforce checks the exits' countries"
    if needed_by is None:
        return None
    try:
        geo = GeoDB.open(profile.geoip)
    except GeoError as error:
        raise ProfileError(f'{loaded.path}: geoip = "{profile.geoip}": {error}') from None
    if geo is None:
        raise ProfileError(f'{loaded.path}: geoip = "none", but {needed_by}')
    return geo
