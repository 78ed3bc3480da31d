"""Trust for the proxy's own TLS to sites under inspection: which CAs verify a site's chain,
and a verification failure in one sentence.

`ca_bundle = "system"` is the OS store (what ssl.create_default_context loads), or certifi's
bundle when the OS has no CA certificates at all (a bare container); a path is that PEM bundle
and nothing else.

Invariants: every context verifies the chain and the host name (CERT_REQUIRED, check_hostname);
the ClientHello is Python's and OpenSSL's default one plus ALPN http/1.1, with no option of ours
that would make it rarer (a site sees it instead of the browser's); a bundle that cannot be read
or holds no certificate is an error naming the path, never an empty trust store.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

SYSTEM = "system"

_contexts: dict[tuple[str, int, int, int], ssl.SSLContext] = {}


class TrustError(Exception):
    """The trust for sites cannot be set up: the message names the bundle and why."""


def upstream_context(ca_bundle: str) -> ssl.SSLContext:
    """The client context for TLS to sites, verified against `ca_bundle` ("system" or a path
    to a PEM bundle). Kept per value; a bundle file that changed is read again. TrustError
    when it cannot be used."""
    key = (ca_bundle, 0, 0, 0)
    path = ""
    if ca_bundle != SYSTEM:
        path = os.path.expanduser(ca_bundle)
        try:
            info = os.stat(path)
        except OSError as error:
            raise TrustError(f"ca_bundle {ca_bundle}: cannot read it "
                             f"({error.strerror or error})") from None
        key = (ca_bundle, info.st_ino, info.st_mtime_ns, info.st_size)
    context = _contexts.get(key)
    if context is None:
        context = _system_context() if ca_bundle == SYSTEM else _bundle_context(ca_bundle, path)
        _settle(context)
        if len(_contexts) >= 16:  # a few values at most in practice; old versions of a file go
            _contexts.clear()
        _contexts[key] = context
    return context


def _settle(context: ssl.SSLContext) -> None:
    """What every upstream context shares, beyond create_default_context's defaults."""
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.set_alpn_protocols(["http/1.1"])
    # X509_STRICT (Python 3.13's default) is left off, as on 3.11 and 3.12: it refuses real
    # sites' certificates that every browser accepts (RFC 5280 details of older CAs, such as a
    # missing Authority Key Identifier), and the browser the user would otherwise use is the
    # measure of what a site may present. The chain, expiry and host name are verified anyway.
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT


def _system_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    if context.cert_store_stats()["x509_ca"] == 0 and not _system_capath_has_certs():
        try:
            import certifi
        except ImportError:
            raise TrustError(
                "ca_bundle system: this system has no CA certificates (install the "
                "ca-certificates package or certifi), or set ca_bundle to a PEM bundle"
            ) from None
        context.load_verify_locations(cafile=certifi.where())
    return context


def _system_capath_has_certs() -> bool:
    """Whether OpenSSL's certificate directory (/etc/ssl/certs through /usr/lib/ssl/certs on
    Debian, or $SSL_CERT_DIR) holds anything: it is read lazily, during verification, so the
    store's statistics do not count it."""
    capath = ssl.get_default_verify_paths().capath
    try:
        return bool(capath) and any(Path(capath).iterdir())
    except OSError:
        return False


def _bundle_context(ca_bundle: str, path: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=path)
    except ssl.SSLError:  # (an OSError too: first)
        raise TrustError(f"ca_bundle {ca_bundle}: holds no PEM certificate") from None
    except OSError as error:  # FileNotFoundError, PermissionError, IsADirectoryError
        raise TrustError(f"ca_bundle {ca_bundle}: cannot read it ({error.strerror or error})"
                         ) from None
    if context.cert_store_stats()["x509"] == 0:
        raise TrustError(f"ca_bundle {ca_bundle}: holds no PEM certificate")
    return context


def describe_verify_error(exc: ssl.SSLCertVerificationError) -> str:
    """A site's certificate refused, in one sentence: OpenSSL's reason ("certificate has
    expired", "Hostname mismatch, certificate is not valid for 'x'", "self-signed
    certificate", ...), without a traceback."""
    reason = (exc.verify_message or exc.reason or "").strip().rstrip(".")
    if not reason:
        reason = "verification failed"
    hint = _HINTS.get(exc.verify_code, "")
    return f"the site's certificate was refused: {reason}{hint}"


# OpenSSL's X509_V_ERR codes whose words do not say what they mean for the user
_UNTRUSTED = " (no CA that ca_bundle trusts issued it)"
_HINTS = {
    2: _UNTRUSTED,  # unable to get issuer certificate
    18: " (it signs itself, and ca_bundle does not hold it)",  # self-signed certificate
    19: _UNTRUSTED,  # self-signed certificate in certificate chain
    20: _UNTRUSTED,  # unable to get local issuer certificate
    21: _UNTRUSTED,  # unable to verify the first certificate
}
