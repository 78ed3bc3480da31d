"""Certificates: the local CA and the leaves it signs, made with `cryptography` (the one module
of ours that imports it; its errors are translated here into ValueError with a sentence).

EC P-256 everywhere: a fresh key and a signature cost about 0.1 ms, where RSA-2048 costs
40-80 ms per key. The CA can sign leaves only (path length 0). A leaf carries what strict
verifiers ask for (OpenSSL's X509_STRICT, Python 3.13's default): SAN with the name, EKU
serverAuth, KeyUsage digitalSignature, BasicConstraints ca=False, SKI, and an AKI equal to the
CA's SKI.

Invariants: no function here writes a key anywhere or puts one in a message; keys travel as
PEM bytes (PKCS#8, unencrypted: they live in a 0600 file or in memory only).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = datetime.timedelta(days=3650)
# A leaf lives only in the memory of a running proxy and is made again whenever it is needed,
# so it can be short-lived: a leaf (and its key) copied out of a client's cache or a memory
# dump is worth a few days at most, and short lives stay far inside what clients accept for
# certificates (Apple refuses TLS leaves valid over 825 days even under a user-added root).
# Authority re-issues a cached leaf well before this runs out.
LEAF_LIFETIME = datetime.timedelta(days=4)
# Backdated, so that a client whose clock runs a little behind accepts a leaf made just now.
BACKDATE = datetime.timedelta(hours=1)
CN_MAX = 64  # ub-common-name (RFC 5280): the SAN carries the full name


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_authority(common_name: str) -> tuple[bytes, bytes]:
    """A new CA: (certificate PEM, private key PEM). `common_name` should tell CAs apart (the
    user, the machine, the date): browsers list CAs by it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "anonproxy"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name[:CN_MAX])])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _private_pem(key)


def new_leaf_key() -> bytes:
    """A new private key for leaves (PEM); one per running authority is enough."""
    return _private_pem(ec.generate_private_key(ec.SECP256R1()))


def _load_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a readable unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC private key")
    return key


def _load_cert(cert_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ValueError("not a readable PEM certificate") from None


@dataclass(frozen=True)
class AuthorityInfo:
    """What a CA certificate says of itself (for checks and messages)."""

    subject: str
    not_after: datetime.datetime
    is_ca: bool
    matches_key: bool


def authority_info(cert_pem: bytes, key_pem: bytes) -> AuthorityInfo:
    """Read a CA certificate and check it belongs to `key_pem`. ValueError (one sentence,
    never the key) when either cannot be read."""
    cert = _load_cert(cert_pem)
    key = _load_key(key_pem)
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    same = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return AuthorityInfo(cert.subject.rfc4514_string(), cert.not_valid_after_utc, is_ca, same)


def subject_of(cert_pem: bytes) -> str:
    """A certificate's subject (RFC 4514), for messages. ValueError when it cannot be read."""
    return _load_cert(cert_pem).subject.rfc4514_string()


def _san(hostname: str) -> tuple[x509.GeneralName, str]:
    """The SAN entry for a host (an IP address when it is one) and its name for the CN."""
    name = hostname.strip().rstrip(".").lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name:
        raise ValueError(f"{hostname!r} is not a host name")
    try:
        return x509.IPAddress(ipaddress.ip_address(name)), name
    except ValueError:
        pass
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{hostname!r} is not a host name") from None
    return x509.DNSName(ascii_name), ascii_name


@dataclass(frozen=True)
class Issuer:
    """A CA and a leaf key, read once, signing leaves for hosts."""

    ca_cert: x509.Certificate = field(repr=False)
    ca_key: ec.EllipticCurvePrivateKey = field(repr=False)
    leaf_key: ec.EllipticCurvePrivateKey = field(repr=False)
    aki: x509.AuthorityKeyIdentifier = field(repr=False)
    leaf_ski: x509.SubjectKeyIdentifier = field(repr=False)

    def issue(self, hostname: str) -> bytes:
        """A leaf certificate (PEM) for `hostname`, signed by the CA, valid from an hour ago
        for LEAF_LIFETIME. ValueError when `hostname` is not a host name."""
        san, name = _san(hostname)
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                            name[:CN_MAX])]))
                .issuer_name(self.ca_cert.subject)
                .public_key(self.leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + LEAF_LIFETIME)
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(self.aki, critical=False)
                .add_extension(self.leaf_ski, critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)


def issuer(ca_cert_pem: bytes, ca_key_pem: bytes, leaf_key_pem: bytes) -> Issuer:
    """Read a CA and a leaf key once, to sign many leaves. ValueError (one sentence, never a
    key) when one cannot be read."""
    ca_cert = _load_cert(ca_cert_pem)
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:  # a CA made elsewhere: derive it as RFC 5280 suggests
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    leaf_key = _load_key(leaf_key_pem)
    return Issuer(ca_cert, _load_key(ca_key_pem), leaf_key, aki,
                  x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()))


def issue_leaf(ca_cert_pem: bytes, ca_key_pem: bytes, leaf_key: bytes, hostname: str) -> bytes:
    """A leaf certificate (PEM) for `hostname` with `leaf_key` (PEM), signed by the CA.
    To sign many, read them once with issuer()."""
    return issuer(ca_cert_pem, ca_key_pem, leaf_key).issue(hostname)
