"""Certificates made with the ``cryptography`` package: the API's self-signed one
(:mod:`clustercore.api.tls`) and a small certificate authority for labs and tests
(:class:`LabCA`: etcd over TLS with client certificates, libvirt over TLS).

Keys are ECDSA P-256, signatures SHA-256. A name that is an IP address goes into the
subject alternative names as one (``127.0.0.1`` is no DNS name).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Signer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def certificate(common_name: str, names: Sequence[str] = (), *, issuer: Signer | None = None, ca: bool = False,
                server: bool = False, client: bool = False, days: int = 3650) -> tuple[bytes, bytes]:
    """A new certificate and key, PEM: signed by ``issuer`` (else by itself), naming
    ``names`` in its subject alternative names, for a CA, a server and/or a client; an
    empty ``common_name`` leaves the subject without one."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([*([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])] if common_name else []),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clustercore")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    # key identifiers: strict verification (urllib3's) wants them on every certificate of a chain
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False)
    usages = [u for u, wanted in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client))
              if wanted]
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class LabCA:
    """A certificate authority in ``directory`` (``ca.pem``; its key ``ca-key.pem``) that
    issues server and client certificates there (``NAME.pem``, ``NAME-key.pem``, keys
    readable by their owner only)."""

    def __init__(self, directory: Path, name: str = "clustercore lab CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = certificate(name, ca=True)
        self.cert, self.key = self._write("ca", cert, key)
        self._signer: Signer = (x509.load_pem_x509_certificate(cert),
                                serialization.load_pem_private_key(key, None))  # type: ignore[assignment]

    def _write(self, name: str, cert: bytes, key: bytes) -> tuple[Path, Path]:
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        cert_path.write_bytes(cert)
        key_path.write_bytes(b"")
        os.chmod(key_path, 0o600)
        key_path.write_bytes(key)
        return cert_path, key_path

    def issue(self, name: str, names: Sequence[str] = (), *, server: bool = False, client: bool = False,
              common_name: bool = True) -> tuple[Path, Path]:
        """A certificate for ``name`` (its common name unless ``common_name`` is False),
        signed by this CA: (certificate file, key file)."""
        cert, key = certificate(name if common_name else "", names, issuer=self._signer, server=server,
                                client=client)
        return self._write(name, cert, key)
