"""A TLS server on loopback for any server context (a thread accepting connections), and the
client side of one handshake: what tests of certificates and trust need (test_ca, test_trust)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def tls_server(context: ssl.SSLContext) -> Iterator[tuple[int, list]]:
    """A TLS server on 127.0.0.1 with `context`: (port, what each connection ended with: the
    ALPN protocol it agreed on, or the error), sending b"hello" after each handshake."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list = []

    def run() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # shut down
            with conn:
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        seen.append(tls.selected_alpn_protocol())
                        tls.sendall(b"hello")
                except OSError as error:  # (ssl.SSLError included)
                    seen.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        listener.close()
        thread.join(10)


def handshake(port: int, client: ssl.SSLContext, name: str) -> tuple[bytes, str | None, bytes]:
    """Connect, verify, read the greeting: (greeting, ALPN, the server's certificate DER)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client.wrap_socket(raw, server_hostname=name) as tls:
        return tls.recv(5), tls.selected_alpn_protocol(), tls.getpeercert(binary_form=True)


