"""How a process reaches a secured etcd: TLS (the CA that signed etcd's certificate, this
process's client certificate and key) and etcd's user/password authentication.

:class:`EtcdAccess` is read from options or the environment (``CLUSTERCORE_ETCD_CA``,
``_CERT``, ``_KEY``, ``_USER``, ``_PASSWORD_FILE``; the password itself only from a file
or ``CLUSTERCORE_ETCD_PASSWORD``, never from a command line, which every local user can
read). TLS goes with an ``etcds://`` (or ``https://``, ``etcd+https://``) URL and only
with one: TLS options with a plain URL are refused, as a plain URL to an etcd that speaks
TLS is, so a store is never quietly unencrypted. :func:`explain` turns what failed in
the TLS handshake or the authentication into one line that says which it was.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import requests

from clustercore.errors import StoreAccessError, ValidationError

TLS_SCHEMES = ("etcds://", "https://", "etcd+https://")
PLAIN_SCHEMES = ("etcd://", "http://")
ENV = {"ca": "CLUSTERCORE_ETCD_CA", "cert": "CLUSTERCORE_ETCD_CERT", "key": "CLUSTERCORE_ETCD_KEY",
       "user": "CLUSTERCORE_ETCD_USER", "password_file": "CLUSTERCORE_ETCD_PASSWORD_FILE"}
PASSWORD_ENV = "CLUSTERCORE_ETCD_PASSWORD"


@attrs.frozen
class EtcdAccess:
    """``ca``: the CA file etcd's certificate must verify against (None: the system's);
    ``cert``/``key``: this process's client certificate and key files; ``user`` and
    ``password``: etcd authentication (the password is never shown in a repr)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=lambda value: "***" if value else "None")

    @property
    def tls_files(self) -> bool:
        return any((self.ca, self.cert, self.key))

    def check(self, tls: bool) -> EtcdAccess:
        """ValidationError naming the option: TLS files without a TLS URL, a certificate
        without its key (or the reverse), a file that is not there, a user without a
        password or a password without a user."""
        if self.tls_files and not tls:
            raise ValidationError("etcd access", "url", "a CA or client certificate needs an etcds:// URL "
                                  "(the connection would not be encrypted)", "etcd://")
        if bool(self.cert) != bool(self.key):
            raise ValidationError("etcd access", "cert" if self.key else "key",
                                  "a client certificate and its key go together", self.cert or self.key)
        for field in ("ca", "cert", "key"):
            path = getattr(self, field)
            if path and not Path(path).is_file():
                raise ValidationError("etcd access", field, "no such file", path)
        if bool(self.user) != (self.password is not None):
            raise ValidationError("etcd access", "password" if self.user else "user",
                                  "a user needs a password (file) and a password a user", self.user or "")
        return self

    def tls(self) -> dict[str, Any]:
        """TLS arguments of each request: the CA to verify etcd against, the client
        certificate (per request: requests lets ``REQUESTS_CA_BUNDLE`` override a session's
        own CA)."""
        return {"verify": self.ca or True, "cert": (self.cert, self.key) if self.cert and self.key else None}

    @classmethod
    def from_options(cls, ca: str | None = None, cert: str | None = None, key: str | None = None,
                     user: str | None = None, password_file: str | None = None,
                     environ: Mapping[str, str] | None = None) -> EtcdAccess:
        """Options first, then the environment (see the module docstring)."""
        env = os.environ if environ is None else environ
        ca, cert, key, user, password_file = (value or env.get(ENV[name]) or None for name, value in
                                              (("ca", ca), ("cert", cert), ("key", key), ("user", user),
                                               ("password_file", password_file)))
        password = env.get(PASSWORD_ENV)
        if password_file:
            try:
                password = Path(password_file).read_text().rstrip("\n")
            except OSError as exc:
                raise ValidationError("etcd access", "password_file", f"cannot be read ({exc.strerror})",
                                      password_file) from exc
        return cls(ca, cert, key, user, password)


def is_access(exc: requests.RequestException, endpoint: str) -> bool:
    """Whether a transport failure is TLS refusing this process (or a plain request to a
    TLS etcd), not an etcd that is down."""
    return isinstance(exc, requests.exceptions.SSLError) or (
        endpoint.startswith("http://") and "RemoteDisconnected" in str(exc))


def explain(exc: requests.RequestException, access: EtcdAccess, endpoint: str) -> str:
    """One line on why a request to ``endpoint`` failed at the transport."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return (f"{endpoint}: TLS: etcd's certificate does not verify against "
                    f"{'the CA ' + access.ca if access.ca else 'the system CAs (give the CA file)'}")
        if any(alert in text.lower() for alert in ("bad certificate", "unknown ca", "certificate required",
                                                   "certificate unknown", "handshake failure",
                                                   "eof occurred in violation of protocol")):  # closed mid-handshake
            whom = f"the client certificate {access.cert}" if access.cert else "us: it needs a client certificate"
            return f"{endpoint}: TLS: etcd refused {whom}"
        if "WRONG_VERSION_NUMBER" in text:
            return f"{endpoint}: TLS: etcd there does not speak TLS (use an etcd:// URL)"
        return f"{endpoint}: TLS: {text[-200:]}"
    if endpoint.startswith("http://") and "RemoteDisconnected" in text:
        return f"{endpoint}: closed the connection unanswered: an etcd that speaks TLS refuses plain requests so " \
               "(use an etcds:// URL with its CA)"
    return f"{endpoint}: {type(exc).__name__}"


def refused(status: int, message: str, endpoint: str, access: EtcdAccess) -> StoreAccessError | None:
    """What an answer that is no etcd answer means, or None: a plain request to an etcd
    that speaks TLS, or a failed authentication."""
    if status == 400 and "HTTP request to an HTTPS server" in message:
        return StoreAccessError(f"{endpoint}: etcd there speaks TLS: use an etcds:// URL (with its CA)")
    if "authentication failed" in message:
        return StoreAccessError(f"etcd authentication as {access.user!r} failed: invalid user or password")
    if "user name is empty" in message:
        return StoreAccessError("etcd requires authentication: give a user and a password file")
    if "permission denied" in message:
        return StoreAccessError(f"etcd refused {'user ' + repr(access.user) if access.user else 'this client'}: "
                          "permission denied (its role does not cover the cluster's prefix)")
    return None
