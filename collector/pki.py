"""The deployment's private PKI: one CA, the certificates it issues and its revocation list.

Made with the ``cryptography`` package (no ``openssl`` command needed).  Keys are EC P-256: small,
fast to verify on a Pi-class node, and accepted by Mosquitto (OpenSSL), Python's ``ssl`` and every
browser.  What is issued:

* the **broker's** server certificate (``serverAuth``, subjectAltName = every host name and
  address the nodes and the collector use to reach it: TLS host-name checking stays on);
* the **dashboard's** server certificate (the same, for ``[web]``);
* one **client** certificate per MQTT user (``clientAuth``, CN = the user name): Mosquitto's
  listener requires one signed by this CA (``require_certificate true``), on top of the user's
  password, so a leaked password alone does not connect;
* the **CRL**: the serials of revoked client certificates (``collector remove-node``), checked by
  Mosquitto (``crlfile``).  It is re-signed on every change and valid for as long as the CA, so an
  unattended broker never meets an expired CRL (OpenSSL then refuses every client).

Private keys are written with mode 0600 (:func:`write_private`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "Issued", "serial_of", "spki_sha256", "write_private", "write_public"]

_DAY = dt.timedelta(days=1)
#: Certificates start one hour in the past: a node whose clock lags a little still accepts them.
_BACKDATE = dt.timedelta(hours=1)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a secret file created with ``mode`` (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_public(path: Path, data: bytes) -> None:
    """Write a file everyone may read (certificates, configs without secrets)."""
    write_private(path, data, 0o644)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes
    serial: int

    def save(self, cert: Path, key: Path, key_mode: int = 0o600) -> None:
        write_public(cert, self.cert_pem)
        write_private(key, self.key_pem, key_mode)


def spki_sha256(cert_pem: bytes) -> str:
    """Base64 SHA-256 of a certificate's public key (what Chromium's
    ``--ignore-certificate-errors-spki-list`` pins)."""
    spki = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def serial_of(cert_pem: bytes) -> int:
    """The serial number of a PEM certificate."""
    return int(x509.load_pem_x509_certificate(cert_pem).serial_number)


class CertificateAuthority:
    """A CA certificate and its key; issues certificates and CRLs (see the module docstring)."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert, self.key = cert, key

    @classmethod
    def create(cls, name: str, days: int = 3650) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailpulse")])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _BACKDATE).not_valid_after(now + days * _DAY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def save(self, cert_path: Path, key_path: Path) -> None:
        write_public(cert_path, self.cert_pem)
        write_private(key_path, self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    def _issue(self, common_name: str, usage: x509.ObjectIdentifier, hosts: Sequence[str], days: int) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        end = min(now + days * _DAY, self.not_after)
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
             .issuer_name(self.cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - _BACKDATE).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                            critical=False))
        if hosts:
            b = b.add_extension(_san(hosts), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM),
                      key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
                      int(cert.serial_number))

    def issue_server(self, hosts: Sequence[str], days: int = 825) -> Issued:
        """A server certificate valid for every name and address in ``hosts`` (the first is the CN)."""
        if not hosts:
            raise ValueError("a server certificate needs at least one host name or address")
        return self._issue(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, hosts, days)

    def issue_client(self, user: str, days: int = 3650) -> Issued:
        """A client certificate for the MQTT user ``user`` (its CN)."""
        return self._issue(user, ExtendedKeyUsageOID.CLIENT_AUTH, (), days)

    def crl(self, revoked: Iterable[int]) -> bytes:
        """The CRL listing ``revoked`` serials, valid until the CA expires (PEM)."""
        now = _now()
        b = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
             .last_update(now - _BACKDATE).next_update(self.not_after))
        for serial in sorted(set(revoked)):
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(now).build())
        return b.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
