"""Heartbeat credentials: a host's heartbeats count only with the credential issued to it.

At registration the cluster issues each host a random credential; the store keeps only its
SHA-256 digest under ``credentials/NAME`` (the host keeps the credential: ``clustercore
agent --credential-file``). A heartbeat whose report does not carry it (a second, mistaken
agent for the same host, or any other writer of the heartbeat key) is ignored, with one
``heartbeat-refused`` event per refused value: it neither keeps the host alive nor tells
of a reboot. A host without a credential key (registered before credentials existed)
is heard as before.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY = "credentials/"


def issue() -> str:
    """A new credential (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def accepts(stored: str | None, presented: str) -> bool:
    """Whether a heartbeat presenting ``presented`` is the host's own (``stored`` is the
    digest kept for the host, None when it has none)."""
    if stored is None:
        return True
    return hmac.compare_digest(stored, digest(presented))
