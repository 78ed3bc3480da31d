"""Tor's control port, through stem: the only module that imports stem.

stem is synchronous: every method here blocks, and callers run it in a worker thread
(asyncio.to_thread). The stream listener runs on stem's own thread and touches only the
controller.

Onion services (ADD_ONION / DEL_ONION) are sent as commands of our own through `msg()`: stem
1.8.2's create_ephemeral_hidden_service takes one ClientAuthV3 key, and a service may have many.

Invariants: a control port that cannot be used is a TorUnavailable naming it, and an onion
service tor refuses or does not publish in time an OnionError saying why, never stem's own
exception; nothing from a caller reaches a control command unless it has the shape tor expects
(no spaces, no line breaks); a service we added and could not see published is removed again;
the exit relay of every stream that succeeds is checked against the requested
countries (tor's own GeoIP), and a circuit outside them is closed and reported.
"""

from __future__ import annotations

import base64
import binascii
import queue
import re
import time
from typing import TYPE_CHECKING, Any

from anonproxy import logs

if TYPE_CHECKING:
    from stem.control import Controller


class TorUnavailable(Exception):
    """Tor cannot be used (not installed, failed to start, cannot be reached)."""


class OnionError(Exception):
    """An onion service tor refused, or did not publish in time; the message says which."""


ONION_KEY = re.compile(r"ED25519-V3:[A-Za-z0-9+/]+={0,2}")
ONION_TARGET = re.compile(r"[A-Za-z0-9.\-]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}")
CLIENT_KEY = re.compile(r"[A-Za-z2-7]{52}")  # an x25519 public key, base32 without padding


def _checked_onion_request(ports: dict[int, str], key: str | None, clients: list[str],
                           max_streams: int | None) -> str:
    """The ADD_ONION command for these values; OnionError for a value tor would not take (or
    one that would smuggle a second command in)."""
    if not ports:
        raise OnionError("an onion service needs at least one port")
    if key is not None:
        try:
            blob = base64.b64decode(key.partition(":")[2], validate=True)
        except binascii.Error:
            blob = b""
        if not ONION_KEY.fullmatch(key) or len(blob) != 64:
            raise OnionError("the onion service key is not an ED25519-V3 key "
                             "(ED25519-V3:<base64 of 64 bytes>)")
    flags = ["DiscardPK"] if key is not None else []
    if clients:
        flags.append("V3Auth")
    if max_streams is not None:
        flags.append("MaxStreamsCloseCircuit")
    words = ["ADD_ONION", key or "NEW:ED25519-V3"]
    if flags:
        words.append("Flags=" + ",".join(flags))
    if max_streams is not None:
        if not 0 <= max_streams <= 65535:
            raise OnionError(f"max_streams {max_streams} is outside 0-65535")
        words.append(f"MaxStreams={max_streams}")
    for port, target in ports.items():
        if not 1 <= port <= 65535 or not ONION_TARGET.fullmatch(target):
            raise OnionError(f"onion service port {port} -> {target!r} is not a port and a "
                             "host:port target")
        words.append(f"Port={port},{target}")
    for client in clients:
        if not CLIENT_KEY.fullmatch(client):
            raise OnionError(f"client key {client!r} is not an x25519 public key in base32 "
                             "(52 characters A-Z, 2-7)")
        words.append(f"ClientAuthV3={client}")
    return " ".join(words)


def _await_upload(events: queue.Queue, service_id: str, timeout: float) -> None:
    """(thread) Until one directory confirms our descriptor (HS_DESC UPLOADED after an UPLOAD
    of ours to it); OnionError when every directory we uploaded to failed, or after `timeout`
    seconds.
    (tor names the service in UPLOAD; UPLOADED may carry UNKNOWN instead, so directories are
    matched, as stem does.)"""
    uploaded_to: set[str] = set()
    failures: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            event = events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            said = f" (failed at {', '.join(failures.values())})" if failures else ""
            raise OnionError(f"tor did not publish the onion service {service_id} within "
                             f"{timeout:g} s" + said) from None
        directory = event.directory_fingerprint
        if event.action == "UPLOAD" and event.address == service_id:
            uploaded_to.add(directory)
        elif event.action == "UPLOADED" and directory in uploaded_to:
            return
        elif event.action == "FAILED" and directory in uploaded_to:
            failures[directory] = f"{directory} ({event.reason or 'no reason given'})"
            if failures.keys() >= uploaded_to:
                raise OnionError(f"no directory took the descriptor of {service_id}: "
                                 + ", ".join(failures.values()))


class Control:
    """One authenticated control connection."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    @classmethod
    def open(cls, host: str, port: int, password: str | None) -> Control:
        """Connect and authenticate (a password, or the cookie tor names in PROTOCOLINFO)."""
        import stem
        import stem.connection
        from stem.control import Controller

        try:
            controller = Controller.from_port(address=host, port=port)
        except stem.SocketError as error:
            raise TorUnavailable(f"cannot use the control port {host}:{port}: {error}") from None
        try:
            controller.authenticate(password=password)
        except (stem.SocketError, stem.connection.AuthenticationFailure) as error:
            controller.close()
            raise TorUnavailable(f"cannot use the control port {host}:{port}: {error}") from None
        return cls(controller)

    def socks(self) -> tuple[str, int] | None:
        """Tor's first SOCKS listener."""
        from stem.control import Listener

        listeners = self._controller.get_listeners(Listener.SOCKS)
        return listeners[0] if listeners else None

    def watch_exits(self, countries: tuple[str, ...], label: str) -> None:
        """Close every circuit whose exit relay is outside `countries` (lower case) as soon as
        a stream succeeds on it."""
        from stem.control import EventType

        controller = self._controller

        def on_stream(event: Any) -> None:  # (stem thread)
            if event.status != "SUCCEEDED" or not event.circ_id:
                return
            try:
                circuit = controller.get_circuit(event.circ_id)
                fingerprint = circuit.path[-1][0]
                address = controller.get_network_status(fingerprint).address
                country = controller.get_info(f"ip-to-country/{address}").lower()
            except Exception:  # noqa: BLE001 - the circuit may be gone already; nothing to check
                return
            if country not in countries:
                logs.log.error("tor (%s): a stream left through %s (%s) outside the requested "
                               "countries; closing that circuit", label, address, country)
                try:
                    controller.close_circuit(event.circ_id)
                except Exception:  # noqa: BLE001
                    pass

        controller.add_event_listener(on_stream, EventType.STREAM)

    def get_info(self, key: str) -> str | None:
        """One GETINFO answer, or None (unknown key, or the connection went away)."""
        try:
            found: str | None = self._controller.get_info(key, None)
        except Exception:  # noqa: BLE001 - the control connection went away meanwhile
            return None
        return found

    def alive(self) -> bool:
        return bool(self._controller.is_alive())

    def newnym(self) -> float:
        """Ask for new circuits for new streams: 0, or the seconds tor wants us to wait (it
        allows one NEWNYM per 10 s)."""
        from stem import Signal

        if not self._controller.is_newnym_available():
            return float(self._controller.get_newnym_wait())
        self._controller.signal(Signal.NEWNYM)
        return 0.0

    def circuits(self) -> list[dict]:
        """Built circuits that can carry streams out (general purpose, not one-hop directory
        or internal ones), with their exit relay and its country (tor's GeoIP)."""
        controller = self._controller
        found = []
        for circuit in controller.get_circuits([]):
            if (circuit.status != "BUILT" or circuit.purpose != "GENERAL" or not circuit.path
                    or {"ONEHOP_TUNNEL", "IS_INTERNAL"} & set(circuit.build_flags or ())):
                continue
            fingerprint, nickname = circuit.path[-1]
            address = country = None
            try:
                address = controller.get_network_status(fingerprint).address
                country = controller.get_info(f"ip-to-country/{address}", "").lower()
                country = country if country not in ("", "??") else None
            except Exception:  # noqa: BLE001 - a relay missing from our consensus view
                pass
            found.append({"id": circuit.id, "hops": len(circuit.path), "exit": nickname,
                          "exit_address": address, "exit_country": country,
                          "isolation": bool(circuit.socks_username)})
        return found

    def add_onion(self, ports: dict[int, str], key: str | None, clients: list[str],
                  max_streams: int | None, timeout: float) -> tuple[str, str | None]:
        """Add an onion service (ED25519-V3) tied to this control connection, and wait until a
        directory has its descriptor. `ports`: virtual port -> "host:port" target; `key`: the
        service's "ED25519-V3:..." key, or None for a new one; `clients`: x25519 public keys
        (base32) allowed in, none: anyone; `max_streams`: per rendezvous circuit, the circuit
        closed past it. Returns the service id (no ".onion") and the new key when `key` was
        None. OnionError when tor refuses or does not publish within `timeout` seconds."""
        import stem
        import stem.response
        from stem.control import EventType

        request = _checked_onion_request(ports, key, clients, max_streams)
        events: queue.Queue = queue.Queue()
        listener = events.put  # (stem's thread) every HS_DESC event, matched in _await_upload
        controller = self._controller
        try:
            controller.add_event_listener(listener, EventType.HS_DESC)
            try:
                reply = controller.msg(request)
                if not reply.is_ok():
                    code, _, said = reply.content()[0]
                    raise OnionError(f"tor refused the onion service: {said} ({code})")
                stem.response.convert("ADD_ONION", reply)
                service_id: str = reply.service_id
                new_key = (f"{reply.private_key_type}:{reply.private_key}"
                           if key is None and reply.private_key else None)
                if key is None and new_key is None:
                    self._del_onion_quietly(service_id)
                    raise OnionError("tor made the onion service but returned no key for it")
                try:
                    _await_upload(events, service_id, timeout)
                except OnionError:
                    self._del_onion_quietly(service_id)
                    raise
            finally:
                controller.remove_event_listener(listener)
        except stem.ControllerError as error:  # the connection went away, or a garbled reply
            raise OnionError(f"cannot add the onion service through tor's control port: "
                             f"{error or type(error).__name__}") from None
        return service_id, new_key

    def remove_onion(self, service_id: str) -> bool:
        """Withdraw an onion service added through this connection: True, or False when tor
        had none by that id. OnionError when the control connection cannot be used."""
        import stem

        if not re.fullmatch(r"[a-z2-7]{56}", service_id):
            raise OnionError(f"{service_id!r} is not an onion service id")
        try:
            reply = self._controller.msg(f"DEL_ONION {service_id}")
        except stem.ControllerError as error:
            raise OnionError(f"cannot remove the onion service {service_id}: "
                             f"{error or type(error).__name__}") from None
        if reply.is_ok():
            return True
        code, _, said = reply.content()[0]
        if code == "552":
            return False
        raise OnionError(f"tor refused to remove the onion service {service_id}: {said} ({code})")

    def _del_onion_quietly(self, service_id: str) -> None:
        try:
            self._controller.msg(f"DEL_ONION {service_id}")
        except Exception:  # noqa: BLE001 - best effort: the connection may be gone already
            pass

    def close(self) -> None:
        try:
            self._controller.close()
        except Exception:  # noqa: BLE001
            pass
