"""Certificates for tests: a throw-away CA and the certificates it signs.

Owns: ``TestCA``, a self-signed CA (EC P-256, valid for a day) written as PEM files into a
directory, and ``TestCA.issue``: a certificate for a server (its IP addresses and DNS names
as subjectAltName, extended key usage serverAuth), a client (clientAuth) or both, with its
unencrypted key. Used by raftdir's own TLS tests (loopback and the multi-host run); usable
in a host's tests. Not for production: keys are unencrypted and short-lived.

Plain functions on the caller's thread; file I/O only in the constructor and ``issue``.
Imports ``cryptography`` only (a dependency of raftdir already).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCA"]

_LIFETIME = datetime.timedelta(days=1)
_SKEW = datetime.timedelta(minutes=5)


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
           ) -> tuple[str, str]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


class TestCA:
    """A CA in ``directory`` (``ca.crt``, ``ca.key``). ``cert`` is the CA file clients
    trust (``--tls-ca``)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: str | Path, name: str = "raftdir test CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.timezone.utc)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        public = self._key.public_key()
        ca = (self._builder(self._name, public)
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                           crl_sign=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False,
                                           decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                             critical=False)
              .sign(self._key, hashes.SHA256()))
        self.cert, self.key = _write(self.directory / "ca", ca, self._key)

    def _builder(self, subject: x509.Name, public: object) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self._name)
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(self._now - _SKEW).not_valid_after(self._now + _LIFETIME))

    def issue(self, name: str, *, ips: Iterable[str] = (), dns: Iterable[str] = (),
              server: bool = True, client: bool = False) -> tuple[str, str]:
        """Sign a certificate for ``name`` (its common name and file stem); returns the
        paths of ``NAME.crt`` and ``NAME.key``. ``ips`` / ``dns``: its subjectAltName
        (what a client checks the address it dialled against). ``server`` / ``client``:
        its extended key usages."""
        key = ec.generate_private_key(ec.SECP256R1())
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        if not usages:
            raise ValueError("a certificate needs server=True or client=True")
        builder = (self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
                                 key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self._key.public_key()), critical=False))
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a))
                                         for a in ips]
        names += [x509.DNSName(d) for d in dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names),
                                            critical=False)
        return _write(self.directory / name, builder.sign(self._key, hashes.SHA256()), key)
