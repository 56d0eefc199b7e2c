"""The API's TLS certificate: the operator's (``--cert``/``--key``), or a self-signed one
made on the first start and kept under the state directory for every start after.

The self-signed certificate (ECDSA P-256, SHA-256, ten years) names ``localhost``,
127.0.0.1, ::1 and the address the server listens on (the machine's host name too when it
listens on every address). Clients trust it by its SHA-256 fingerprint, which the manager
prints at start (``clustercore login --fingerprint``) rather than by a CA.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from clustercore.certs import certificate

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
    return certificate(names[-1], names, server=True, days=365 * YEARS)


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
