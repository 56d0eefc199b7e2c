"""The client's side of a pinned certificate: fetch the certificate a server presents (unchecked),
its SHA-256 fingerprint, and whether two fingerprints are one. ``clustercore login`` and
``clustercore agent --fingerprint`` pin a manager's self-signed certificate this way after
comparing its fingerprint with the one the manager printed. Standard library only.
"""

from __future__ import annotations

import hashlib
import ssl
import urllib.parse

from clustercore.errors import ClusterError


class PinError(ClusterError):
    """No certificate to pin: not an https URL, or the server did not present one."""


def server_certificate(url: str, timeout: float = 10.0) -> str:
    """The certificate (PEM) the server at ``url`` presents, unchecked: look at its
    fingerprint before trusting it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise PinError(f"{url}: not an https:// URL, there is no certificate to fetch")
    try:
        return ssl.get_server_certificate((parts.hostname, parts.port or 443), timeout=timeout)
    except (OSError, ValueError) as exc:
        raise PinError(f"{url}: cannot fetch its certificate: {exc}") from None


def fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint of a PEM certificate: hex pairs separated by colons (upper case)."""
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def same_fingerprint(a: str, b: str) -> bool:
    """Whether two fingerprints are one (case, colons and spaces ignored)."""
    a, b = ("".join(c for c in text.lower() if c not in ": ") for text in (a, b))
    return bool(a) and a == b
