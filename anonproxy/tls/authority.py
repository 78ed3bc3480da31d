"""The local CA on disk, and the server-side SSL contexts that present its leaves to clients.

The CA lives in `$XDG_DATA_HOME/anonproxy/ca/` (default `~/.local/share/anonproxy/ca/`):
`ca.pem`, the certificate (public, 0644), and `ca.key`, its private key.

Invariants: the directory is 0700 and ours (a wider one of ours is tightened and said so; one
of another account is refused); the key file is created 0600 under a temporary name with
O_CREAT|O_EXCL and renamed into place, so it is never readable by another account, not even for
an instant; a key file readable by others or not ours is refused, never used or repaired
(it may have been copied: only a new CA helps); the key is never logged, served or put in a
message, and reaches an SSL context only through an anonymous memory file (memfd), never a
file on disk. Two processes creating the CA at once hold a lock, so the pair always matches.
How a key file is written and read is private_file.py's, shared with onion service keys.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import socket
import ssl
import stat
import time
from collections import OrderedDict
from pathlib import Path

from anonproxy.tls import certs
from anonproxy.tls.private_file import PrivateFileError, read_private, write_atomically

CERT_NAME, KEY_NAME, LOCK_NAME = "ca.pem", "ca.key", ".lock"
CONTEXTS = 256  # server contexts kept, least recently used dropped first
# A cached context's leaf is made again once it is this old, long before LEAF_LIFETIME ends.
REISSUE_AFTER = 24 * 3600.0


class AuthorityError(Exception):
    """The CA cannot be used: the message names the file and what is wrong (never the key)."""


def ca_dir() -> Path:
    """Where the local CA lives: $XDG_DATA_HOME/anonproxy/ca (default ~/.local/share/...)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return Path(base) / "anonproxy" / "ca"


def default_name() -> str:
    """The CA's common name: whose, on which machine, since when, so that two users' (or one
    user's successive) CAs are told apart in a browser's list."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.geteuid()}"
    return f"anonproxy local CA ({user}@{socket.gethostname()}) {time.strftime('%Y-%m-%d')}"


def _prepare_dir(directory: Path) -> str | None:
    """Create `directory` 0700 or check it: ours, a directory. Returns a note when a wider mode
    was tightened; raises AuthorityError when it cannot be used."""
    try:
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        info = os.stat(directory)
    except OSError as error:
        raise AuthorityError(f"{directory}: cannot create the CA directory "
                             f"({error.strerror or error})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise AuthorityError(f"{directory}: not a directory; the CA cannot be kept there")
    if info.st_uid != os.geteuid():
        raise AuthorityError(f"{directory}: belongs to uid {info.st_uid}, not to you (uid "
                             f"{os.geteuid()}); anonproxy keeps its CA key only in a directory "
                             "of yours (set XDG_DATA_HOME to another place)")
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        os.chmod(directory, 0o700)
        return f"{directory} was mode {mode:04o}; made it 0700 so only you can open it"
    return None


KEY_ADVICE = {
    "owner": "anonproxy will not sign with a key someone else controls (run `anonproxy ca "
             "rotate` for a CA of your own)",
    "mode": "making it 0600 would not undo that: run `anonproxy ca rotate`, then remove the "
            "old CA from your browsers and install the new one",
}


def _read_key(path: Path) -> bytes | None:
    """The key file's bytes, or None when there is none; AuthorityError when it is not a
    regular file of ours readable by us alone (private_file.read_private)."""
    try:
        return read_private(path, "the CA key", KEY_ADVICE)
    except PrivateFileError as error:
        raise AuthorityError(str(error)) from None


class _Locked:
    """An exclusive lock on the CA directory while the pair is read or made."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self.fd = -1

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600)
        except OSError as error:
            raise AuthorityError(f"{self.path}: cannot lock the CA directory "
                                 f"({error.strerror or error})") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing releases the lock


def _create(directory: Path) -> tuple[bytes, bytes]:
    cert_pem, key_pem = certs.new_authority(default_name())
    try:  # the key first: a first use cut short between the two leaves a key without a
        # certificate, and the pair is made again on the next use
        write_atomically(directory / KEY_NAME, key_pem, 0o600)
        write_atomically(directory / CERT_NAME, cert_pem, 0o644)
    except OSError as error:
        raise AuthorityError(f"{directory}: cannot write the CA ({error.strerror or error})"
                             ) from None
    return cert_pem, key_pem


def _checked_pair(directory: Path, cert_pem: bytes, key_pem: bytes) -> None:
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    try:
        certs.subject_of(cert_pem)
    except ValueError as error:
        raise AuthorityError(f"{cert_path}: {error}; run `anonproxy ca rotate` for a new CA"
                             ) from None
    try:
        info = certs.authority_info(cert_pem, key_pem)
    except ValueError as error:  # the certificate was read above: the key is at fault
        raise AuthorityError(f"{key_path}: {error}; run `anonproxy ca rotate` for a new CA"
                             ) from None
    if not info.is_ca:
        raise AuthorityError(f"{cert_path}: not a CA certificate (BasicConstraints ca=False); "
                             "run `anonproxy ca rotate` for a new CA")
    if not info.matches_key:
        raise AuthorityError(f"{cert_path}: does not belong to {key_path} (another key); run "
                             "`anonproxy ca rotate` for a new CA")
    if info.not_after.timestamp() <= time.time():
        raise AuthorityError(f"{cert_path}: expired on {info.not_after:%Y-%m-%d}; run "
                             "`anonproxy ca rotate` for a new CA")


class Authority:
    """The local CA, read (or made) once, and the server contexts it signs leaves for: one
    leaf key per instance, a context per host kept in an LRU of CONTEXTS."""

    def __init__(self, directory: Path, cert_pem: bytes, key_pem: bytes,
                 notes: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.cert_pem = cert_pem
        self.notes = notes  # what was fixed on the way (a directory tightened), for the user
        self._leaf_key_pem = certs.new_leaf_key()
        self._issuer = certs.issuer(cert_pem, key_pem, self._leaf_key_pem)
        self._contexts: OrderedDict[str, tuple[ssl.SSLContext, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"Authority({str(self.cert_path)!r})"

    @classmethod
    def load_or_create(cls, directory: Path | None = None) -> Authority:
        """The CA in `directory` (default ca_dir()), made on first use. AuthorityError when
        the directory or the files cannot be used safely."""
        directory = ca_dir() if directory is None else directory
        note = _prepare_dir(directory)
        with _Locked(directory):
            key_pem = _read_key(directory / KEY_NAME)
            try:
                cert_pem = (directory / CERT_NAME).read_bytes()
            except FileNotFoundError:
                cert_pem = None
            except OSError as error:
                raise AuthorityError(f"{directory / CERT_NAME}: cannot read the CA certificate "
                                     f"({error.strerror or error})") from None
            if key_pem is None or cert_pem is None:
                cert_pem, key_pem = _create(directory)
            _checked_pair(directory, cert_pem, key_pem)
        return cls(directory, cert_pem, key_pem, (note,) if note else ())

    @classmethod
    def rotate(cls, directory: Path | None = None) -> Authority:
        """A new CA in `directory` (default ca_dir()), replacing the old files whatever they
        held (a key refused by load_or_create included)."""
        directory = ca_dir() if directory is None else directory
        note = _prepare_dir(directory)
        with _Locked(directory):
            cert_pem, key_pem = _create(directory)
        return cls(directory, cert_pem, key_pem, (note,) if note else ())

    @property
    def subject(self) -> str:
        """The CA's name, as browsers list it."""
        return certs.subject_of(self.cert_pem)

    @property
    def cert_path(self) -> Path:
        """The CA certificate (PEM), the file a browser or system is told to trust."""
        return self.directory / CERT_NAME

    def server_context(self, hostname: str) -> ssl.SSLContext:
        """A server context presenting a leaf for `hostname` signed by the CA: TLS 1.2 or
        later, ALPN http/1.1. Kept per host (LRU); a leaf a day old is made again. ValueError
        when `hostname` is not a host name."""
        key = hostname.strip().rstrip(".").lower()
        cached = self._contexts.get(key)
        now = time.time()
        if cached is not None and now - cached[1] < REISSUE_AFTER:
            self._contexts.move_to_end(key)
            return cached[0]
        context = self._new_context(key)
        self._contexts[key] = (context, now)
        self._contexts.move_to_end(key)
        while len(self._contexts) > CONTEXTS:
            self._contexts.popitem(last=False)
        return context

    def _new_context(self, hostname: str) -> ssl.SSLContext:
        # The leaf alone, without the CA: a client verifies against the CA it trusts, never one
        # a server sends (RFC 8446 4.4.2 lets the root be left out), so sending it would only
        # add half a kilobyte to every handshake.
        leaf_pem = self._issuer.issue(hostname)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        # load_cert_chain reads files only: the key goes through an anonymous memory file
        # (never on disk, gone when closed), reopened by its /proc path.
        fd = os.memfd_create("anonproxy-leaf", os.MFD_CLOEXEC)
        try:
            os.write(fd, self._leaf_key_pem + leaf_pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return context
