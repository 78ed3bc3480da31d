"""Files that hold a private key: written so no other account can read them even for an
instant, and read only when nobody else could have read or placed them.

Shared by the local CA's key (authority.py) and an onion service's key (reverse/onion.py).

Invariants: a file is written under a temporary name created with O_CREAT|O_EXCL|O_NOFOLLOW and
its final mode, synced, then renamed (or linked, never over a file) into place, so a reader sees
the whole file or none; a file is read through one descriptor opened with O_NOFOLLOW and checked
on that descriptor (a regular file, ours, no group or other bits), so a symbolic link, another
account's file or one others can read is refused, never used or repaired (it may have been
copied already); the key itself is never put in a message.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path


class PrivateFileError(Exception):
    """A key file that cannot be used safely; the message names the file and why."""


def write_atomically(path: Path, data: bytes, mode: int, replace: bool = True) -> None:
    """`data` into `path` with `mode` from its first byte on: a fresh temporary file (O_EXCL,
    created with `mode`), synced, renamed over `path`; with `replace` False linked there
    instead, so an existing `path` is kept (FileExistsError). OSError as the system gives it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # left by a crash of an earlier process with our pid
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits from 0644: a certificate is public
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        (os.replace if replace else os.link)(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # (gone already when renamed)


def read_private(path: Path, what: str, advice: Mapping[str, str]) -> bytes | None:
    """The file's bytes, or None when there is none. PrivateFileError when it is not a regular
    file of ours readable by us alone. `what` names the key in messages ("the CA key");
    `advice` adds what to do, by problem: "owner" (another account's file), "mode" (others
    could read it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise PrivateFileError(f"{path}: cannot open {what} ({error.strerror or error}); if it "
                               "is a symbolic link, replace it with the file") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PrivateFileError(f"{path}: not a regular file")
        if info.st_uid != os.geteuid():
            raise PrivateFileError(f"{path}: belongs to uid {info.st_uid}, not to you (uid "
                                   f"{os.geteuid()}); {advice.get('owner', '')}".rstrip("; "))
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise PrivateFileError(f"{path}: mode {mode:04o} lets other accounts read {what}, "
                                   f"so it may have been copied; {advice.get('mode', '')}"
                                   .rstrip("; "))
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
