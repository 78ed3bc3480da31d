"""`anonproxy ca path|install|rotate`: the local CA that HTTPS inspection signs leaves with.

`path` prints the certificate's path (making the CA on first use); `install` adds the
certificate to the user's NSS databases (Chromium's ~/.pki/nssdb, each Firefox profile) with
certutil and says how to trust it system-wide, which it never does itself; `rotate` makes a new
CA and says what to do about the old one.

Invariants: the CA key is never printed, whatever happens; every failure is one sentence and
exit code 1, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from anonproxy.tls.authority import Authority, AuthorityError

EXIT_FAILED = 1
NICKNAME = "anonproxy local CA"
TRUST = "C,,"  # a CA trusted to issue server certificates (not mail, not code signing)
SYSTEM_FILE = "/usr/local/share/ca-certificates/anonproxy.crt"
# Where Firefox keeps its profiles: Debian's package, the snap and the flatpak.
FIREFOX_ROOTS = (".mozilla/firefox", "snap/firefox/common/.mozilla/firefox",
                 ".var/app/org.mozilla.firefox/.mozilla/firefox")


class InstallError(Exception):
    """certutil failed for a database: the message names it and what certutil said."""


def ca(action: str) -> int:
    """Run `anonproxy ca ACTION`; the exit code."""
    try:
        if action == "rotate":
            authority = Authority.rotate()
        else:
            if action == "install" and shutil.which("certutil") is None:
                print("anonproxy: ca install: certutil is missing: install libnss3-tools "
                      "(apt install libnss3-tools) and run it again", file=sys.stderr)
                return EXIT_FAILED
            authority = Authority.load_or_create()
    except AuthorityError as error:
        print(f"anonproxy: ca {action}: {error}", file=sys.stderr)
        return EXIT_FAILED
    for note in authority.notes:
        print(f"anonproxy: {note}", file=sys.stderr)
    if action == "path":
        print(authority.cert_path)
        return 0
    if action == "rotate":
        print(f"made a new CA: {authority.cert_path}\n  {authority.subject}\n"
              "The old CA signs nothing any more: remove it from your browsers (listed as "
              f"'{NICKNAME}' or under anonproxy) and, if you copied it there, {SYSTEM_FILE}; "
              "then run `anonproxy ca install` again to trust the new one.")
        return 0
    return _install(authority)


def _install(authority: Authority) -> int:
    home = Path(os.path.expanduser("~"))
    print(f"CA certificate {authority.cert_path}\n  {authority.subject}")
    try:
        chromium = home / ".pki" / "nssdb"
        created = _ensure_database(chromium)
        _add(chromium, authority.cert_path)
        print(f"added to Chromium's NSS database {chromium}"
              + (" (created it)" if created else ""))
        profiles = sorted(p.parent for root in FIREFOX_ROOTS
                          for p in (home / root).glob("*/cert9.db"))
        for profile in profiles:
            _add(profile, authority.cert_path)
            print(f"added to the Firefox profile {profile}")
    except InstallError as error:
        print(f"anonproxy: ca install: {error}", file=sys.stderr)
        return EXIT_FAILED
    if not profiles:
        print("no Firefox profile found (~/.mozilla/firefox/*/cert9.db): start Firefox once, "
              "then run this again")
    print("Restart the browsers to be sure they read it.\n"
          "To trust it system-wide as well (curl, Python and other programs; Debian), as root:\n"
          f"  cp {authority.cert_path} {SYSTEM_FILE}\n"
          "  update-ca-certificates\n"
          "anonproxy does not do that itself: every program of every user would then trust "
          "this CA.")
    return 0


def _certutil(database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["certutil", "-d", f"sql:{database}", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)


def _ensure_database(database: Path) -> bool:
    """Create an empty NSS database (no password) in `database` if it has none; whether it
    did."""
    if (database / "cert9.db").exists():
        return False
    try:
        database.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise InstallError(f"{database}: cannot create it ({error.strerror or error})"
                           ) from None
    done = _certutil(database, "-N", "--empty-password")
    if done.returncode != 0:
        raise InstallError(f"{database}: certutil -N failed: {_said(done)}")
    return True


def _add(database: Path, cert: Path) -> None:
    """Add the certificate as NICKNAME, replacing any earlier one of that name (a rotated CA
    included)."""
    for _ in range(10):  # each -D removes one certificate of the nickname
        if _certutil(database, "-D", "-n", NICKNAME).returncode != 0:
            break
    done = _certutil(database, "-A", "-n", NICKNAME, "-t", TRUST, "-i", str(cert))
    if done.returncode != 0:
        raise InstallError(f"{database}: certutil -A failed: {_said(done)}")


def _said(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"
