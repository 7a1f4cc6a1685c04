"""TLS for the API from certificate files, with certificates made in the test."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fakes import ADMIN, FakeControlPlane, serving
from raftdir.api.client import RaftdirClient, Unreachable
from raftdir.api.server import ssl_context_from_files


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def make_pki(tmp: Path) -> dict[str, tuple[str, str]]:
    """A CA (self-signed) and, signed by it, a server certificate for 127.0.0.1 and a
    client certificate."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raftdir test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": _write(tmp / "ca", ca, ca_key)}
    for name, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(ca_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_key.public_key()), critical=False))
        if name == "server":
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        out[name] = _write(tmp / name, builder.sign(ca_key, hashes.SHA256()), key)
    return out


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, tuple[str, str]]:
    return make_pki(tmp_path)


async def test_the_api_serves_https_from_certificate_files(pki):
    ca_file = pki["ca"][0]
    cp = FakeControlPlane()
    async with serving(cp, ssl_context=ssl_context_from_files(*pki["server"])) as api:
        assert api.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=ca_file)
        async with RaftdirClient([api.url], ssl=trust, admin_token=ADMIN) as c:
            assert (await c.health())["ok"] is True
            assert (await c.create_token(5, 1))["max_uses"] == 1
        # a client that does not trust the CA is refused
        async with RaftdirClient([api.url], retries=0) as c:
            with pytest.raises(Unreachable, match="(?i)certificate"):
                await c.health()
        # plain HTTP on the TLS port gets nowhere
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{api.port}/health") as resp:
                    await resp.read()


async def test_mutual_tls_and_forwarding_over_tls(pki):
    ca_file = pki["ca"][0]
    server_ctx = ssl_context_from_files(*pki["server"], ca=ca_file)
    client_ctx = ssl.create_default_context(cafile=ca_file)
    client_ctx.load_cert_chain(*pki["client"])
    leader_cp = FakeControlPlane(1)
    async with serving(leader_cp, ssl_context=server_ctx) as leader:
        follower_cp = FakeControlPlane(2, leader=False, leader_url=leader.url)
        async with serving(follower_cp, ssl_context=server_ctx,
                           forward_ssl=client_ctx) as follower:
            async with RaftdirClient([follower.url], ssl=client_ctx, admin_token=ADMIN) as c:
                await c.create_token(7, 2)  # forwarded, over TLS, with the client cert
                assert ("create_token", (7, 2)) in leader_cp.calls
                assert c.preferred == follower.url  # forwarded, not redirected
            no_cert = ssl.create_default_context(cafile=ca_file)
            async with RaftdirClient([follower.url], ssl=no_cert, retries=0) as c:
                with pytest.raises(Unreachable):
                    await c.health()
