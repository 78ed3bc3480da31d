"""Trust for the proxy's own TLS to sites under inspection (anonproxy/tls/trust.py), with real
TLS on loopback: origins whose certificates a test CA signed, verified against a bundle given by
path and refused by the system store; refusals in one sentence (hostname, expiry, self-signed);
bundles that cannot be used named with the reason; the certifi fallback of a system without CA
certificates."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tlsserver import handshake, tls_server

from anonproxy.tls import trust
from anonproxy.tls.authority import Authority
from anonproxy.tls.trust import TrustError, describe_verify_error, upstream_context


@pytest.fixture
def site_ca(tmp_path) -> Authority:
    """A test CA standing for a public one: it signs the loopback origins' certificates."""
    return Authority.load_or_create(tmp_path / "site-ca")


def test_a_site_is_verified_against_a_bundle_given_by_path(site_ca):
    client = upstream_context(str(site_ca.cert_path))
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert not client.verify_flags & ssl.VERIFY_X509_STRICT
    with tls_server(site_ca.server_context("127.0.0.1")) as (port, seen):
        greeting, alpn, _ = handshake(port, client, "127.0.0.1")
    assert greeting == b"hello" and alpn == "http/1.1" and seen == ["http/1.1"]


def test_the_system_store_refuses_a_site_it_does_not_know_in_one_sentence(site_ca):
    with tls_server(site_ca.server_context("127.0.0.1")) as (port, _), \
            pytest.raises(ssl.SSLCertVerificationError) as refused:
        handshake(port, upstream_context("system"), "127.0.0.1")
    said = describe_verify_error(refused.value)
    assert said == ("the site's certificate was refused: unable to get local issuer certificate "
                    "(no CA that ca_bundle trusts issued it)")


@pytest.mark.parametrize("case, expected", [
    ("mismatch", "Hostname mismatch, certificate is not valid for 'localhost'"),
    ("expired", "certificate has expired"),
    ("self-signed", "self-signed certificate (it signs itself, and ca_bundle does not hold it)"),
])
def test_a_refused_site_certificate_reads_as_a_sentence(site_ca, tmp_path, case, expected):
    if case == "mismatch":
        server, bundle, name = site_ca.server_context("127.0.0.1"), site_ca.cert_path, "localhost"
    else:
        server, bundle = _odd_server(tmp_path, site_ca, case)
        name = "127.0.0.1"
    with tls_server(server) as (port, _), \
            pytest.raises(ssl.SSLCertVerificationError) as refused:
        handshake(port, upstream_context(str(bundle)), name)
    said = describe_verify_error(refused.value)
    assert said == f"the site's certificate was refused: {expected}"
    assert "\n" not in said and "Traceback" not in said


def _odd_server(tmp_path: Path, site_ca: Authority, case: str) -> tuple[ssl.SSLContext, Path]:
    """A server context with an expired leaf of `site_ca`, or a self-signed one; and the
    bundle a client trusts (the CA's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = serialization.load_pem_private_key((site_ca.directory / "ca.key").read_bytes(),
                                                None)
    ca = x509.load_pem_x509_certificate(site_ca.cert_pem)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .add_extension(x509.SubjectAlternativeName(
                   [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False))
    if case == "expired":
        cert = (builder.issuer_name(ca.subject)
                .not_valid_before(now - datetime.timedelta(days=10))
                .not_valid_after(now - datetime.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    else:
        cert = (builder.issuer_name(subject).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    chain = tmp_path / f"{case}.pem"
    chain.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
                      + cert.public_bytes(serialization.Encoding.PEM))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain)
    return server, site_ca.cert_path


def test_an_unusable_bundle_is_named_with_its_reason(tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificates here\n")
    cases = [(tmp_path / "missing.pem", "No such file or directory"),
             (empty, "holds no PEM certificate"),
             (tmp_path, "cannot read it (Is a directory)")]
    for path, reason in cases:
        with pytest.raises(TrustError) as refused:
            upstream_context(str(path))
        assert str(refused.value).startswith(f"ca_bundle {path}: "), refused.value
        assert reason in str(refused.value), refused.value


def test_upstream_contexts_are_kept_per_value_and_a_changed_bundle_is_read_again(site_ca,
                                                                                 tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(site_ca.cert_pem)
    first = upstream_context(str(bundle))
    assert upstream_context(str(bundle)) is first
    assert upstream_context("system") is upstream_context("system")
    other = Authority.load_or_create(tmp_path / "other-ca")
    bundle.write_bytes(site_ca.cert_pem + other.cert_pem)
    changed = upstream_context(str(bundle))
    assert changed is not first and changed.cert_store_stats()["x509_ca"] == 2


def test_a_system_without_ca_certificates_falls_back_to_certifi(monkeypatch, tmp_path):
    certifi = pytest.importorskip("certifi")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(trust, "_contexts", {})
    fallback = upstream_context("system")
    expected = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    assert fallback.cert_store_stats()["x509_ca"] == expected > 0
    monkeypatch.setattr(trust, "_contexts", {})
    monkeypatch.setitem(sys.modules, "certifi", None)  # not installed
    with pytest.raises(TrustError, match="ca_bundle system: this system has no CA certificates"):
        upstream_context("system")
