"""A test PKI for HTTPS origins on loopback: a root CA standing in for the public ones (the file
a profile's `[inspect] ca_bundle` or a client trusts), and certificates it issues, valid or not,
for names such as site.test; and recording origins (tests/origin.py) serving them over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from origin import Origin, start_origin

HOUR = datetime.timedelta(hours=1)


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class PublicRoot:
    """A root CA in `folder`: its file (root.pem) is what a client or ca_bundle trusts."""

    def __init__(self, folder: Path, common_name: str = "anonproxy tests public root",
                 file_name: str = "root.pem") -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(_name(common_name)).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - HOUR).not_valid_after(now + 24 * HOUR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        self.path = folder / file_name
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, expired: bool = False, signer=None) -> tuple[Path, Path]:
        """A server certificate for `name` (a DNS name or an IP), its files (cert, key).
        `expired`: valid until an hour ago; `signer`: another PublicRoot (one not trusted)."""
        signer = signer or self
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            alt = x509.DNSName(name)
        start, end = (now - 3 * HOUR, now - HOUR) if expired else (now - HOUR, now + 24 * HOUR)
        cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(signer.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer.key.public_key()), critical=False)
            .sign(signer.key, hashes.SHA256()))
        stem = f"{name}{'-expired' if expired else ''}-{id(signer):x}"
        cert_file, key_file = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        return cert_file, key_file


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A site's TLS with this certificate, ALPN http/1.1 (a test may make it odder)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


def behind(context: ssl.SSLContext, host: str = "127.0.0.1"):
    """A recording origin (tests/origin.py) behind TLS with `context`: (origin, server); stop
    with server.shutdown() and server.server_close()."""
    origin, server = start_origin(host)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return origin, server


def https_origin(cert_file: Path, key_file: Path, host: str = "127.0.0.1"):
    """A recording origin behind TLS with this certificate (see `behind`)."""
    return behind(server_context(cert_file, key_file), host)


def https_url(origin: Origin, name: str, path: str) -> str:
    return f"https://{name}:{origin.port}{path}"
