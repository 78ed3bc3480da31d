"""A reverse entry published as an onion service through a managed tor: its key file, the
publication, re-publication after the tor restarts, withdrawal.

The key file holds one line, "ED25519-V3:<base64>", the service's private key as tor gives it.
Absent, tor makes a new key; once the service is published the key is written there (0600,
tls/private_file.py's rules), so the .onion address stays the same across restarts. A folder
made for it is 0700.

Invariants: the key is never logged or put in a message; a key file others could read, another
account's, a link or one that holds no key is refused with a sentence naming it, never used or
replaced (a new key would change the address); a new key is written only after tor published
the service with it, and never over an existing file (O_EXCL); the service is tied to our
control connection, so it ends with it (a tor that restarted has none: `keep` publishes again);
the .onion address goes to the log once published.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from anonproxy import logs
from anonproxy.exits.tor_control import Control, OnionError
from anonproxy.exits.tor_process import Tor
from anonproxy.tls.private_file import PrivateFileError, read_private, write_atomically
from anonproxy.wire.address import Address

KEY_TYPE = "ED25519-V3"
KEY_ADVICE = {
    "owner": "anonproxy will not publish an onion service with a key someone else controls",
    "mode": "making it 0600 would not undo that: remove it for a new key (and a new .onion "
            "address), or keep it 0600 from the start",
}
RETRY = (5.0, 60.0)  # seconds before publishing again after tor refused: first, at most


class OnionKeyError(Exception):
    """The onion key file cannot be used; the message names it and why (never the key)."""


@dataclass(frozen=True, slots=True)
class OnionSettings:
    """An entry's onion settings, as plain values: the key file, the x25519 public keys
    (base32) of the clients allowed in (none: anyone), the stream limit per rendezvous
    circuit, and how long to wait for publication."""

    key_file: Path
    clients: tuple[str, ...] = ()
    max_streams: int | None = None
    timeout: float = 120.0


def _check_folder(path: Path) -> None:
    """The key's folder must be the owner's and writable by nobody else: whoever may write
    there may delete the key (a new key, a new address) or put their own in its place."""
    try:
        folder = path.parent.stat()
    except FileNotFoundError:
        return  # (made 0700 when the key is written)
    if folder.st_uid != os.getuid() or (folder.st_mode & 0o022 and not folder.st_mode & 0o1000):
        raise OnionKeyError(f"{path.parent}: the folder of the onion service key is writable by "
                            "others or not yours, so the key could be replaced; keep it in a "
                            "folder of your own (0700)")
    if folder.st_mode & 0o022:  # sticky (/tmp): our file stays, but its name may be taken first
        raise OnionKeyError(f"{path.parent}: a shared folder (such as /tmp) cannot keep an onion "
                            "service key for long; keep it in a folder of your own (0700)")


def read_key(path: Path) -> str | None:
    """The key in `path` ("ED25519-V3:<base64>"), or None when there is no such file."""
    _check_folder(path)
    try:
        data = read_private(path, "the onion service key", KEY_ADVICE)
    except PrivateFileError as error:
        raise OnionKeyError(str(error)) from None
    if data is None:
        return None
    text = data.decode("ascii", "replace").strip()
    kind, _, blob = text.partition(":")
    try:
        valid = kind == KEY_TYPE and len(base64.b64decode(blob, validate=True)) == 64
    except binascii.Error:
        valid = False
    if not valid:
        raise OnionKeyError(f"{path}: not an onion service key (expected one line "
                            f"{KEY_TYPE}:<base64 of 64 bytes>, as anonproxy writes it); move it "
                            "away for a new key, which gives a new .onion address")
    return text


def write_key(path: Path, key: str) -> None:
    """Write a new key to `path` (0600; its folder made 0700 when missing), never over an
    existing file."""
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, parents=True)
        write_atomically(path, (key + "\n").encode("ascii"), 0o600, replace=False)
    except FileExistsError:
        raise OnionKeyError(f"{path}: appeared while the service was being published; kept "
                            "as it is (the new key was not written)") from None
    except OSError as error:
        raise OnionKeyError(f"{path}: cannot write the onion service key "
                            f"({error.strerror or error})") from None


class OnionService:
    """One entry's onion service: published through one tor's control connection at a time."""

    def __init__(self, settings: OnionSettings, label: str = "") -> None:
        self.settings = settings
        self.label = label or str(settings.key_file)  # names the entry in the log
        self.address: str | None = None  # "xxxx.onion", once known
        self.published = False
        self.error: str | None = None
        self._service_id: str | None = None
        self._control: Control | None = None

    def status(self) -> dict:
        return {"address": self.address, "published": self.published,
                "clients": len(self.settings.clients), "error": self.error}

    async def publish(self, control: Control, target: Address, virtual_port: int) -> str:
        """Publish the service through `control` (virtual port -> `target`) and wait until a
        directory has it; returns the address "xxxx.onion". OnionKeyError for the key file,
        OnionError when tor refused or did not publish in time (both also in `error`)."""
        settings = self.settings
        try:
            key = await asyncio.to_thread(read_key, settings.key_file)
            adding = asyncio.ensure_future(asyncio.to_thread(
                control.add_onion, {virtual_port: target.authority()}, key,
                list(settings.clients), settings.max_streams, settings.timeout))
            try:
                service_id, new_key = await asyncio.shield(adding)
            except asyncio.CancelledError:  # the thread carries on: remove what it adds
                adding.add_done_callback(lambda done: self._remove_added(control, done))
                raise
            if new_key is not None:
                try:
                    await asyncio.to_thread(write_key, settings.key_file, new_key)
                except OnionKeyError:
                    await asyncio.to_thread(self._remove, control, service_id)
                    raise
        except (OnionKeyError, OnionError) as error:
            self.published, self.error = False, str(error)
            raise
        self._control, self._service_id = control, service_id
        self.address, self.published, self.error = f"{service_id}.onion", True, None
        logs.log.info("onion service %s published for %s (port %d -> %s)%s", self.address,
                      self.label, virtual_port, target.authority(),
                      " with a new key in " + str(settings.key_file) if new_key else "")
        return self.address

    async def withdraw(self) -> None:
        """Remove the service from the tor that publishes it (nothing when none does)."""
        control, service_id = self._control, self._service_id
        self._control = self._service_id = None
        was_published, self.published = self.published, False
        if control is None or service_id is None or not was_published:
            return
        await asyncio.to_thread(self._remove, control, service_id)
        logs.log.info("onion service %s of %s withdrawn", self.address, self.label)

    def _remove_added(self, control: Control, done: asyncio.Future) -> None:
        """Remove a service added after its publication was cancelled (a new key is dropped
        with it: it was never written)."""
        if not done.cancelled() and done.exception() is None:
            service_id = done.result()[0]
            asyncio.get_running_loop().run_in_executor(None, self._remove, control, service_id)

    def _remove(self, control: Control, service_id: str) -> None:
        """(thread) DEL_ONION, a failure logged: a tor that went away took the service along."""
        try:
            control.remove_onion(service_id)
        except OnionError as error:
            logs.log.warning("onion service of %s: %s", self.label, error)

    async def keep(self, tor: Tor, target: Address, virtual_port: int,
                   poll: float = 1.0) -> None:
        """Keep the service published through `tor` until cancelled (then withdrawn): publish
        once tor is ready, and again whenever tor comes back with a new control connection
        (a restarted tor has forgotten it). tor refusing is retried with backoff; a key file
        that cannot be used stops here (its error stays in `error`)."""
        delay = RETRY[0]
        try:
            while True:
                control = tor.controller
                if not tor.ready or control is None:
                    self.published = False
                    await asyncio.sleep(poll)
                    continue
                try:
                    await self.publish(control, target, virtual_port)
                except OnionKeyError as error:
                    logs.log.error("onion service of %s: %s", self.label, error)
                    return
                except OnionError as error:
                    logs.log.error("onion service of %s: %s; trying again in %.0f s",
                                   self.label, error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY[1])
                    continue
                delay = RETRY[0]
                await _until_gone(tor, control, poll)
                self.published, self._control, self._service_id = False, None, None
                logs.log.warning("onion service %s of %s: tor (%s) went away; publishing "
                                 "again once it is back", self.address, self.label,
                                 tor.spec.label())
        finally:
            await asyncio.shield(self.withdraw())


async def _until_gone(tor: Tor, control: Control, poll: float) -> None:
    """Return once `tor` is not ready or has another control connection than `control`."""
    while True:
        if not tor.ready or tor.controller is not control:
            return
        await asyncio.sleep(poll)
