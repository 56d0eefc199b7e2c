"""The API's TLS certificate: the operator's (``--cert``/``--key``), or a self-signed one
made on the first start and kept under the state directory for every start after.

The self-signed certificate (ECDSA P-256, SHA-256, ten years) names ``localhost``,
127.0.0.1, ::1 and the address the server listens on (the machine's host name too when it
listens on every address). Clients trust it by its SHA-256 fingerprint, which the manager
prints at start (``clustercore login --fingerprint``) rather than by a CA.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT = "api-cert.pem"
KEY = "api-key.pem"
YEARS = 10


def names_for(host: str) -> list[str]:
    """The names a certificate for a server listening on ``host`` should carry."""
    names = ["localhost", "127.0.0.1", "::1"]
    if host in ("", "0.0.0.0", "::"):
        names.append(socket.gethostname())
    elif host not in names:
        names.append(host)
    return names


def self_signed(names: list[str]) -> tuple[bytes, bytes]:
    """A new self-signed certificate naming ``names`` (IP addresses as such): (cert, key) PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1][:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clustercore")])
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365 * YEARS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def ensure_certificate(state_dir: Path, host: str) -> tuple[Path, Path]:
    """The certificate and key under ``state_dir``, made (key readable by its owner only)
    the first time."""
    cert, key = state_dir / CERT, state_dir / KEY
    if cert.exists() and key.exists():
        return cert, key
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_pem, key_pem = self_signed(names_for(host))
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    cert.write_bytes(cert_pem)
    return cert, key


def fingerprint(cert: Path) -> str:
    """SHA-256 of the certificate (DER), upper-case hex pairs joined by colons."""
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
