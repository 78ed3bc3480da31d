"""Profiles as files: finding them by name, loading and checking them.

`load_profile(ref)` takes a profile name (a file in the user's profile folder, or a shipped
profile: package data in anonproxy/profiles) or a path, and returns a LoadedProfile or raises
ProfileError whose message names the file, the key path, the offending value and a hint: a user
never sees a traceback for a bad profile.

Invariants enforced here: every exit a profile names exists; pools do not refer to each other
in a cycle; listening beyond loopback needs a client allow-list and/or credentials. That last
check is `listen_problems`, the one function every way an address reaches the listener goes
through: the profile's `listen` (here), `serve --listen` and `--workers` (launch.py), a
reload or profile switch and every ProxyServer start, `exec` included (server.py). No
environment variable sets the listen address.
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
from anonproxy.config.models import (
    BLOCK,
    Admin,
    InvalidProfile,
    Profile,
    validate_profile,
)
from anonproxy.policy.blocklists import Blocker
from anonproxy.policy.geo import GeoDB, GeoError
from anonproxy.wire.address import Address, is_loopback_host, is_unspecified_host


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
    """Problems no single key shows: names that point nowhere, pool cycles, open listeners."""
    return [*_name_problems(profile), *_cycle_problems(profile), *_setting_problems(profile)]


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
    problems += [f'listen = "{profile.listen}": {p}'
                 for p in listen_problems(profile.listen_address, profile.allow, profile.auth)]
    if profile.workers > 1 and profile.uses_managed_tor:
        problems.append(f"workers = {profile.workers}: a managed tor exit would start one tor "
                        'per worker; use a tor you run (tor = { control = "HOST:PORT" }) or '
                        "workers = 1")
    if profile.admin is not None:
        problems += [f'admin.listen = "{profile.admin.listen}": {p}'
                     for p in admin_problems(profile.admin, profile.listen_address)]
    if profile.auth is not None and profile.selectable:
        problems.append("auth: proxy usernames already select profiles (selectable); use one "
                        "or the other")
    return problems


def listen_problems(address: Address, allow: list, auth: object | None) -> list[str]:
    """What is wrong with listening on `address` given the profile's client allow-list and
    credentials (`auth`: the profile's, or those `exec` made): beyond loopback (a wildcard
    such as 0.0.0.0 or ::, or an interface's address) the proxy would be open to the network
    unless it has `allow` and/or `auth`."""
    if is_loopback_host(address.host) or allow or auth is not None:
        return []
    where = "every interface" if is_unspecified_host(address.host) else address.host
    return [(f"listening on {where} exposes the proxy beyond this machine (an open proxy); "
             'add allow = ["CIDR", ...] naming the clients that may connect, and/or '
             'auth = { username = "...", password = "..." } to the profile')]


def admin_problems(admin: Admin, listen: Address) -> list[str]:
    """What is wrong with a dashboard address next to the proxy's `listen` (the profile check
    and `serve --admin` both ask)."""
    where, problems = admin.address, []
    if not is_loopback_host(where.host) and admin.password is None:
        problems.append('a dashboard beyond loopback can steer the proxy; add password = "..." '
                        '(at least 8 characters) or listen on 127.0.0.1')
    if where.port != 0 and (where.host, where.port) == (listen.host, listen.port):
        problems.append("the same address as listen")
    return problems


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
        return given if given == "system" else str(self.path.parent / given)


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
    if bundle != "system" and not (path.parent / bundle).is_file():
        raise ProfileError(f'{path}: inspect.ca_bundle = "{bundle}": no such file (give a PEM '
                           'bundle\'s path, relative to the profile, or "system")')
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
