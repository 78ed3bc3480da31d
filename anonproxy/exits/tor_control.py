"""Tor's control port, through stem: the only module that imports stem.

stem is synchronous: every method here blocks, and callers run it in a worker thread
(asyncio.to_thread). The stream listener runs on stem's own thread and touches only the
controller.

Invariants: a control port that cannot be used is a TorUnavailable naming it, never stem's own
exception; the exit relay of every stream that succeeds is checked against the requested
countries (tor's own GeoIP), and a circuit outside them is closed and reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anonproxy import logs

if TYPE_CHECKING:
    from stem.control import Controller


class TorUnavailable(Exception):
    """Tor cannot be used (not installed, failed to start, cannot be reached)."""


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

    def close(self) -> None:
        try:
            self._controller.close()
        except Exception:  # noqa: BLE001
            pass
