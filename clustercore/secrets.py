"""Secrets at rest: fence device passwords are sealed before they reach the store.

A sealed secret is ``sealed:`` followed by a Fernet token (AES-128-CBC with an
HMAC-SHA256 over it: authenticated, from the ``cryptography`` package) under the
**cluster key**. The key comes from a key file (``CLUSTERCORE_SECRETS_KEY_FILE``: one key
per line, the first seals, every one opens) or ``CLUSTERCORE_SECRETS_KEY``; every manager
of a cluster reads the same one. :meth:`Secrets.rotate` re-seals under the first key, so a
rotation is: put the new key first in the file (the old one after it) on every manager,
run ``clustercore secrets rotate``, then drop the old key (managers that still hold only
the old one keep working until then: no downtime).

Hosts are sealed where they are written (:class:`~clustercore.reconcile.writer.Writer`)
and opened only where a fence agent is handed its device (:class:`~clustercore.fencing.
Fencer`): the store, the events, the API, logs and reprs only ever see the sealed text. A
cluster on the memory store with no key configured gets a key for the life of the process
(the store dies with it); any other store without a key refuses a password, saying how to
give a key. A password stored in clear by an earlier version opens as itself and is
sealed at the next write or rotation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from clustercore.errors import ClusterError, ValidationError
from clustercore.model import FenceDevice, Host

PREFIX = "sealed:"
KEY_ENV, KEY_FILE_ENV = "CLUSTERCORE_SECRETS_KEY", "CLUSTERCORE_SECRETS_KEY_FILE"


class SecretsError(ClusterError):
    """A sealed secret that no key given opens (or a key that is no Fernet key)."""


def new_key() -> str:
    """A new cluster key (32 random bytes, URL-safe base64)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@attrs.frozen
class Secrets:
    """The cluster keys (the first seals); none: secrets cannot be sealed here."""

    keys: tuple[str, ...] = attrs.field(default=(), repr=lambda keys: f"<{len(keys)} keys>")

    def _fernet(self) -> object:
        from cryptography.fernet import Fernet, MultiFernet

        try:
            return MultiFernet([Fernet(key.encode()) for key in self.keys])
        except ValueError as exc:
            raise SecretsError(f"a cluster key is no Fernet key (32 url-safe base64 bytes): {exc}") from None

    def seal(self, plain: str, field: str = "password") -> str:
        """``plain`` sealed (empty stays empty; one sealed already stays as it is)."""
        if not plain or plain.startswith(PREFIX):
            return plain
        if not self.keys:
            raise ValidationError("host", field, f"cannot be kept: no cluster key to seal it with (set {KEY_FILE_ENV} "
                                  f"or {KEY_ENV} on every manager; clustercore secrets new-key makes one)", "***")
        token: bytes = self._fernet().encrypt(plain.encode())  # type: ignore[attr-defined]
        return PREFIX + token.decode()

    def open(self, text: str) -> str:
        """What ``text`` seals (text in clear is itself). SecretsError when no key opens it."""
        if not text.startswith(PREFIX):
            return text
        from cryptography.fernet import InvalidToken

        if not self.keys:
            raise SecretsError(f"a sealed secret and no cluster key to open it ({KEY_FILE_ENV})")
        try:
            plain: bytes = self._fernet().decrypt(text[len(PREFIX):].encode())  # type: ignore[attr-defined]
        except InvalidToken:
            raise SecretsError("a sealed secret that none of the cluster keys opens (a key missing?)") from None
        return plain.decode()

    def rotate(self, text: str) -> str:
        """``text`` sealed under the first key (opened with whichever key sealed it)."""
        return self.seal(self.open(text)) if text else text

    def seal_host(self, host: Host) -> Host:
        devices = tuple(attrs.evolve(d, password=self.seal(d.password, f"fence_devices[{i}].password"))
                        for i, d in enumerate(host.fence_devices))
        return host if devices == host.fence_devices else attrs.evolve(host, fence_devices=devices)

    def rotate_host(self, host: Host) -> Host:
        return attrs.evolve(host, fence_devices=tuple(attrs.evolve(d, password=self.rotate(d.password))
                                                      for d in host.fence_devices))

    def open_device(self, device: FenceDevice) -> FenceDevice:
        return attrs.evolve(device, password=self.open(device.password)) if device.password else device

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Secrets:
        """The keys of ``CLUSTERCORE_SECRETS_KEY_FILE`` (lines; ``#`` comments) or of
        ``CLUSTERCORE_SECRETS_KEY``; none when neither is set."""
        env = os.environ if environ is None else environ
        path = env.get(KEY_FILE_ENV)
        if path:
            try:
                lines = Path(path).read_text().splitlines()
            except OSError as exc:
                raise ValidationError("secrets", KEY_FILE_ENV, f"cannot be read ({exc.strerror})", path) from None
            return cls(tuple(line.strip() for line in lines if line.strip() and not line.startswith("#")))
        key = env.get(KEY_ENV, "").strip()
        return cls((key,) if key else ())
