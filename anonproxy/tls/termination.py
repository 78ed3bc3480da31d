"""The TLS a reverse entry presents to its clients: its certificate and key, loaded into one
server context per entry, and loaded again on reload.

Invariants: a certificate or key that does not load is one sentence naming the file, never a
traceback; a reload whose files fail keeps the context serving as it was (the new files are
tried in a context of their own first); the context speaks TLS 1.2 and 1.3 only and offers
HTTP/1.1 by ALPN.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsFilesError(Exception):
    """A reverse entry's certificate or key cannot be used."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context presenting `cert` (PEM, the chain after the leaf) with `key`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    _load(context, cert, key)
    return context


def reload_context(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Load `cert` and `key` again into a running context (new handshakes get them); on any
    failure raise TlsFilesError and leave `context` as it was."""
    server_context(cert, key)  # tried apart first: a failure must not half-load the live one
    _load(context, cert, key)


def _load(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as error:
        raise TlsFilesError(f"{error.filename}: no such file") from None
    except PermissionError as error:
        raise TlsFilesError(f"{error.filename}: not readable by this user") from None
    except ssl.SSLError as error:
        reason = (error.reason or str(error)).lower().replace("_", " ")
        if "key values mismatch" in reason:
            words = "the key does not belong to the certificate"
        elif "pem lib" in reason or "no start line" in reason:
            words = "not a PEM certificate and key"
        else:
            words = reason
        raise TlsFilesError(f"{cert} with key {key}: {words}") from None
    except OSError as error:
        raise TlsFilesError(f"{cert} with key {key}: {error.strerror or error}") from None
