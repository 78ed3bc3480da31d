"""The local CA for HTTPS inspection (anonproxy/tls/certs.py, authority.py, cli/ca.py) with real
certificates and real TLS on loopback: the CA's files and their modes, refusal of a key others
can read or own, rotation, leaves verified strictly (OpenSSL's X509_STRICT, as Python 3.13 does
by default) in real handshakes for their name only, the `anonproxy ca` commands as subprocesses
(certutil reading back the NSS databases it wrote), and another local account kept out of the
CA key. The trust for sites is tests/test_trust.py."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import pwd
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from conftest import ROOT
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tlsserver import handshake, tls_server

from anonproxy.tls import certs
from anonproxy.tls.authority import CONTEXTS, Authority, AuthorityError, ca_dir

OTHER = "anonproxy-other"  # the second local account tests/test_owner.py uses too
NICKNAME = "anonproxy local CA"


@pytest.fixture
def ca_path(tmp_path) -> Path:
    return tmp_path / "data" / "anonproxy" / "ca"


@pytest.fixture
def authority(ca_path) -> Authority:
    return Authority.load_or_create(ca_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def key_lines(directory: Path) -> list[str]:
    """The base64 lines of the CA key: none of them may show up anywhere."""
    return [line for line in (directory / "ca.key").read_text().splitlines()
            if line and not line.startswith("-----")]


def strict_client(cafile: Path) -> ssl.SSLContext:
    client = ssl.create_default_context(cafile=str(cafile))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    client.set_alpn_protocols(["h2", "http/1.1"])  # as a browser offers
    return client


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonproxy", *args], capture_output=True,
                          text=True, timeout=120, env={**env, "PYTHONPATH": str(ROOT)},
                          stdin=subprocess.DEVNULL)


def test_the_ca_lives_in_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert ca_dir() == tmp_path / "xdg" / "anonproxy" / "ca"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ca_dir() == tmp_path / "home" / ".local" / "share" / "anonproxy" / "ca"


def test_the_ca_key_is_0600_in_a_0700_directory_whatever_the_umask(ca_path):
    old = os.umask(0)  # a umask that takes nothing away: the modes are the code's own
    try:
        authority = Authority.load_or_create(ca_path)
    finally:
        os.umask(old)
    assert mode(ca_path) == 0o700
    assert mode(ca_path / "ca.key") == 0o600
    assert mode(ca_path / "ca.pem") == 0o644  # public: the certificate users install
    assert authority.cert_path == ca_path / "ca.pem"
    assert authority.notes == ()
    assert sorted(p.name for p in ca_path.iterdir()) == [".lock", "ca.key", "ca.pem"]


def test_the_ca_is_made_once_and_read_after(ca_path):
    first = Authority.load_or_create(ca_path)
    again = Authority.load_or_create(ca_path)
    assert again.cert_pem == first.cert_pem == (ca_path / "ca.pem").read_bytes()


def test_ca_made_by_many_at_once_is_one_pair(ca_path):
    """Two commands (or workers) meeting an empty directory: the lock makes one CA, and every
    one of them uses that one."""
    barrier = threading.Barrier(8)
    made: list[bytes] = []

    def make() -> None:
        barrier.wait()
        made.append(Authority.load_or_create(ca_path).cert_pem)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(made) == 8 and set(made) == {(ca_path / "ca.pem").read_bytes()}


def test_a_wider_directory_of_ours_is_tightened_and_said(ca_path):
    ca_path.mkdir(parents=True, mode=0o755)
    ca_path.chmod(0o755)
    authority = Authority.load_or_create(ca_path)
    assert mode(ca_path) == 0o700
    assert len(authority.notes) == 1
    assert str(ca_path) in authority.notes[0] and "0755" in authority.notes[0]


def test_a_ca_key_readable_by_others_is_refused_not_repaired(authority, ca_path):
    secret = key_lines(ca_path)
    (ca_path / "ca.key").chmod(0o644)
    with pytest.raises(AuthorityError) as refused:
        Authority.load_or_create(ca_path)
    message = str(refused.value)
    assert str(ca_path / "ca.key") in message and "0644" in message and "rotate" in message
    assert mode(ca_path / "ca.key") == 0o644  # left as it is: only a new CA helps
    assert not any(line in message for line in secret)


def test_a_ca_key_that_is_a_symlink_is_refused(authority, ca_path, tmp_path):
    shutil.move(ca_path / "ca.key", tmp_path / "elsewhere.key")
    (ca_path / "ca.key").symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(AuthorityError, match=r"ca\.key: cannot open the CA key"):
        Authority.load_or_create(ca_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another account")
def test_a_ca_key_owned_by_someone_else_is_refused(authority, ca_path):
    nobody = pwd.getpwnam("nobody")
    os.chown(ca_path / "ca.key", nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(AuthorityError) as refused:
        Authority.load_or_create(ca_path)
    assert str(ca_path / "ca.key") in str(refused.value)
    assert f"belongs to uid {nobody.pw_uid}" in str(refused.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another account")
def test_a_ca_directory_owned_by_someone_else_is_refused(ca_path):
    ca_path.mkdir(parents=True, mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(ca_path, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(AuthorityError, match=f"{ca_path}: belongs to uid {nobody.pw_uid}"):
        Authority.load_or_create(ca_path)
    assert list(ca_path.iterdir()) == []  # nothing written there


def test_a_certificate_of_another_key_is_refused(authority, ca_path, tmp_path):
    other = Authority.load_or_create(tmp_path / "other")
    (ca_path / "ca.pem").write_bytes(other.cert_pem)
    with pytest.raises(AuthorityError, match=r"ca.pem: does not belong to .*ca.key"):
        Authority.load_or_create(ca_path)


def test_a_broken_key_file_is_named_without_its_content(authority, ca_path):
    (ca_path / "ca.key").write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWdhcmJhZ2U=\n")
    with pytest.raises(AuthorityError) as refused:
        Authority.load_or_create(ca_path)
    assert str(ca_path / "ca.key") in str(refused.value)
    assert "c2VjcmV0" not in str(refused.value)


def test_a_broken_certificate_file_is_named(authority, ca_path):
    (ca_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(AuthorityError, match=r"ca\.pem: not a readable PEM certificate"):
        Authority.load_or_create(ca_path)


def test_a_missing_certificate_makes_a_new_pair(authority, ca_path):
    (ca_path / "ca.pem").unlink()
    again = Authority.load_or_create(ca_path)
    assert again.cert_pem != authority.cert_pem
    assert again.server_context("x.example")  # the new key signs for the new certificate


def test_rotate_makes_a_new_ca_even_over_a_refused_key(authority, ca_path):
    (ca_path / "ca.key").chmod(0o644)
    rotated = Authority.rotate(ca_path)
    assert rotated.cert_pem != authority.cert_pem
    assert mode(ca_path / "ca.key") == 0o600
    assert Authority.load_or_create(ca_path).cert_pem == rotated.cert_pem


def test_the_ca_certificate_is_a_p256_ca_for_leaves_only(authority):
    cert = x509.load_pem_x509_certificate(authority.cert_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=3650) <= lifetime <= datetime.timedelta(days=3660)
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    # whose and where: two users' (or machines') CAs are told apart in a browser's list
    assert name.startswith(f"anonproxy local CA ({getpass.getuser()}@{socket.gethostname()})")
    assert cert.serial_number.bit_length() > 64  # random


def test_a_leaf_verifies_strictly_in_a_real_handshake_for_its_name_only(authority):
    with tls_server(authority.server_context("inspected.example")) as (port, seen):
        client = strict_client(authority.cert_path)
        greeting, alpn, _ = handshake(port, client, "inspected.example")
        assert greeting == b"hello" and alpn == "http/1.1"
        with pytest.raises(ssl.SSLCertVerificationError) as refused:
            handshake(port, client, "other.example")
        assert refused.value.verify_message == \
            "Hostname mismatch, certificate is not valid for 'other.example'."
        with pytest.raises(ssl.SSLCertVerificationError):  # and not for anyone else's CA
            handshake(port, strict_client(Authority.rotate(authority.directory.parent / "x")
                                          .cert_path), "inspected.example")
    assert seen[0] == "http/1.1"


def test_a_leaf_carries_what_strict_clients_ask_for(authority):
    ca = x509.load_pem_x509_certificate(authority.cert_pem)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    with tls_server(authority.server_context("Inspected.Example.")) as (port, _):
        _, _, der = handshake(port, strict_client(authority.cert_path), "inspected.example")
    leaf = x509.load_der_x509_certificate(der)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["inspected.example"]
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest == \
        x509.SubjectKeyIdentifier.from_public_key(leaf.public_key()).digest
    assert leaf.issuer == ca.subject
    assert leaf.serial_number.bit_length() > 64
    now = datetime.datetime.now(datetime.UTC)
    assert leaf.not_valid_before_utc <= now - datetime.timedelta(minutes=59)  # clock skew
    assert leaf.not_valid_after_utc - now <= datetime.timedelta(days=7)  # short-lived
    assert leaf.public_key().curve.name == "secp256r1"
    leaf.verify_directly_issued_by(ca)


def test_a_leaf_for_an_address_names_it_as_an_ip_address(authority):
    with tls_server(authority.server_context("127.0.0.1")) as (port, _):
        _, _, der = handshake(port, strict_client(authority.cert_path), "127.0.0.1")
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == []


def test_a_long_name_is_cut_in_the_cn_and_whole_in_the_san(authority):
    name = "a" * 60 + ".inspected.example"  # 78 characters: over the CN's 64
    with tls_server(authority.server_context(name)) as (port, _):
        _, _, der = handshake(port, strict_client(authority.cert_path), name)
    leaf = x509.load_der_x509_certificate(der)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name[:64]
    assert leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [name]


def test_server_contexts_are_kept_per_host_with_one_leaf_key(authority):
    first = authority.server_context("a.example")
    assert authority.server_context("A.example.") is first
    assert first.minimum_version == ssl.TLSVersion.TLSv1_2
    for i in range(CONTEXTS):
        authority.server_context(f"h{i}.example")
    assert authority.server_context("a.example") is not first  # the least recently used went
    keys = set()
    for name in ("a.example", "b.example"):
        with tls_server(authority.server_context(name)) as (port, _):
            _, _, der = handshake(port, strict_client(authority.cert_path), name)
        keys.add(x509.load_der_x509_certificate(der).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert len(keys) == 1


def test_a_cached_leaf_a_day_old_is_made_again(authority, monkeypatch):
    first = authority.server_context("a.example")
    import anonproxy.tls.authority as module

    real = module.time.time
    monkeypatch.setattr(module.time, "time", lambda: real() + module.REISSUE_AFTER + 1)
    assert authority.server_context("a.example") is not first


def test_a_name_that_is_no_host_is_a_value_error(authority):
    for bad in ("", "[]", "bad\udcffname"):
        with pytest.raises(ValueError):
            authority.server_context(bad)


def test_issue_leaf_signs_with_the_given_key():
    ca_pem, ca_key = certs.new_authority("test CA")
    leaf_key = certs.new_leaf_key()
    leaf = x509.load_pem_x509_certificate(certs.issue_leaf(ca_pem, ca_key, leaf_key, "x.test"))
    private = serialization.load_pem_private_key(leaf_key, None)
    assert leaf.public_key() == private.public_key()
    assert "Issuer(" in repr(certs.issuer(ca_pem, ca_key, leaf_key))
    assert ca_key.decode().splitlines()[1] not in repr(certs.issuer(ca_pem, ca_key, leaf_key))


# --- the command line -------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    """An environment with HOME and XDG_DATA_HOME of this test's own."""
    (tmp_path / "home").mkdir(mode=0o700)
    return {**os.environ, "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg")}


def test_ca_path_prints_the_certificate_made_on_first_use(home, tmp_path):
    done = cli("ca", "path", env=home)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "xdg" / "anonproxy" / "ca" / "ca.pem"
    assert done.stdout == f"{path}\n" and done.stderr == ""
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    again = cli("ca", "path", env=home)
    assert again.stdout == done.stdout and path.read_bytes() == pem
    assert mode(path.parent / "ca.key") == 0o600 and mode(path.parent) == 0o700


def test_ca_path_refuses_a_key_others_can_read_in_one_sentence(home, tmp_path):
    assert cli("ca", "path", env=home).returncode == 0
    key = tmp_path / "xdg" / "anonproxy" / "ca" / "ca.key"
    key.chmod(0o640)
    done = cli("ca", "path", env=home)
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"anonproxy: ca path: {key}: mode 0640")
    assert not any(line in done.stderr for line in key_lines(key.parent))


def test_ca_with_no_such_action_is_a_usage_error(home):
    done = cli("ca", "nonsense", env=home)
    assert done.returncode == 2 and "invalid choice" in done.stderr
    assert "Traceback" not in done.stderr


def _nss_nicknames(database: Path) -> list[str]:
    listed = subprocess.run(["certutil", "-L", "-d", f"sql:{database}"], capture_output=True,
                            text=True, timeout=60, check=True).stdout
    return [line for line in listed.splitlines() if line.startswith(NICKNAME)]


def _nss_pem(database: Path) -> str:
    return subprocess.run(["certutil", "-L", "-d", f"sql:{database}", "-n", NICKNAME, "-a"],
                          capture_output=True, text=True, timeout=60, check=True).stdout


def _pem_der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


needs_certutil = pytest.mark.skipif(shutil.which("certutil") is None,
                                    reason="certutil is missing (Debian: libnss3-tools)")


@needs_certutil
def test_ca_install_puts_the_ca_into_chromium_and_firefox_databases(home, tmp_path):
    profile = Path(home["HOME"]) / ".mozilla" / "firefox" / "abcd1234.default-esr"
    profile.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{profile}", "--empty-password"], check=True,
                   capture_output=True, timeout=60)
    done = cli("ca", "install", env=home)
    assert done.returncode == 0, done.stderr
    chromium = Path(home["HOME"]) / ".pki" / "nssdb"
    assert f"added to Chromium's NSS database {chromium} (created it)" in done.stdout
    assert f"added to the Firefox profile {profile}" in done.stdout
    assert "/usr/local/share/ca-certificates/anonproxy.crt" in done.stdout
    assert "update-ca-certificates" in done.stdout
    cert = (tmp_path / "xdg" / "anonproxy" / "ca" / "ca.pem").read_text()
    for database in (chromium, profile):
        listed = _nss_nicknames(database)
        assert len(listed) == 1 and listed[0].split()[-1] == "C,,", listed
        assert _pem_der(_nss_pem(database)) == _pem_der(cert)
    secret = key_lines(tmp_path / "xdg" / "anonproxy" / "ca")
    assert not any(line in done.stdout + done.stderr for line in secret)

    again = cli("ca", "install", env=home)  # again: replaced, not added twice
    assert again.returncode == 0, again.stderr
    assert "(created it)" not in again.stdout
    assert len(_nss_nicknames(chromium)) == 1

    rotated = cli("ca", "rotate", env=home)
    assert rotated.returncode == 0, rotated.stderr
    assert "remove it from your browsers" in rotated.stdout
    assert "anonproxy ca install" in rotated.stdout
    new = (tmp_path / "xdg" / "anonproxy" / "ca" / "ca.pem").read_text()
    assert new != cert
    assert cli("ca", "install", env=home).returncode == 0
    for database in (chromium, profile):
        assert len(_nss_nicknames(database)) == 1
        assert _pem_der(_nss_pem(database)) == _pem_der(new)
    secret = key_lines(tmp_path / "xdg" / "anonproxy" / "ca")
    assert not any(line in rotated.stdout + rotated.stderr for line in secret)


def test_ca_install_without_certutil_says_what_to_install(home, tmp_path):
    (tmp_path / "bin").mkdir()
    done = cli("ca", "install", env={**home, "PATH": str(tmp_path / "bin")})
    assert done.returncode == 1
    assert "install libnss3-tools" in done.stderr and "Traceback" not in done.stderr


# --- another local account --------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_user() -> tuple[int, int]:
    """A second real local account (uid, gid), as tests/test_owner.py makes it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create and become a second local user")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is missing, so no second local user can be made")
    try:
        entry = pwd.getpwnam(OTHER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", OTHER], check=True,
                       capture_output=True)
        entry = pwd.getpwnam(OTHER)
    return entry.pw_uid, entry.pw_gid


def test_another_account_cannot_read_the_ca_key(other_user):
    """The CA directory's parents are world-traversable here, so what keeps the other account
    out is the CA directory's and the key's own modes."""
    base = Path(tempfile.mkdtemp(prefix="anonproxy-ca-", dir="/tmp"))
    try:
        base.chmod(0o755)
        directory = base / "anonproxy" / "ca"
        (base / "anonproxy").mkdir(mode=0o755)
        (base / "anonproxy").chmod(0o755)
        Authority.load_or_create(directory)
        uid, gid = other_user
        for argv in (["/bin/cat", str(directory / "ca.key")], ["/bin/ls", str(directory)]):
            done = subprocess.run(argv, user=uid, group=gid, extra_groups=[], cwd="/",
                                  env={"PATH": "/usr/bin:/bin", "LANG": "C"},
                                  capture_output=True, timeout=30)
            assert done.returncode != 0 and b"Permission denied" in done.stderr, argv
            assert b"PRIVATE KEY" not in done.stdout
        directory.chmod(0o755)  # even with the directory open, the key file is not
        done = subprocess.run(["/bin/cat", str(directory / "ca.key")], user=uid, group=gid,
                              extra_groups=[], cwd="/", env={"PATH": "/usr/bin:/bin"},
                              capture_output=True, timeout=30)
        assert done.returncode != 0 and b"PRIVATE KEY" not in done.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)
