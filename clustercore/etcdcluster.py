"""Real etcd members on loopback (Debian's ``etcd-server``) for tests, benchmarks and
labs, plain or secured as a production etcd should be.

``EtcdCluster(3, base_port)``: client ports ``base_port + 2i``, peer ports ``base_port +
2i + 1``, data under a temporary directory, always stopped; ``kill(i)`` is a SIGKILL of
member i. ``tls=True``: clients must speak TLS and present a certificate signed by the
cluster's own CA (``--client-cert-auth``; :class:`~clustercore.certs.LabCA` under the
data directory; peers stay plain on loopback; see :meth:`EtcdCluster.client` on common
names). ``auth=True``: etcd's authentication is
enabled with a ``root`` user whose password is ``root_password``; :meth:`access` is what a
client needs (the CA, a client certificate, the user and password).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clustercore.certs import LabCA


class EtcdCluster:
    def __init__(self, n: int = 3, base_port: int = 23790, *, tls: bool = False, auth: bool = False) -> None:
        self.n = n
        self.base_port = base_port
        self.tls, self.auth = tls, auth
        self._tmp = tempfile.TemporaryDirectory(prefix="clustercore-etcd-")
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * n
        self.ca: LabCA | None = None
        if tls:  # cryptography (the api extra) only for a secured cluster
            from clustercore.certs import LabCA

            self.ca = LabCA(Path(self._tmp.name) / "pki")
        self.root_password = uuid.uuid4().hex if auth else ""
        self._enabled = False

    def client_url(self, i: int) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.base_port + 2 * i}"

    @property
    def url(self) -> str:
        """The store URL of every member (``etcds://`` with TLS), for
        :class:`~clustercore.store.etcd.EtcdStore`."""
        return ("etcds://" if self.tls else "etcd://") + ",".join(
            f"127.0.0.1:{self.base_port + 2 * i}" for i in range(self.n))

    def client(self, name: str) -> tuple[Path, Path]:
        """A client certificate and key (files ``name``), signed by the cluster's CA, with
        no common name: etcd's JSON gateway, which the store speaks, refuses a client
        certificate that has one once authentication is on (etcd's ``embed/serve.go``: it
        could not pass the name on as the user), so the user comes with its password."""
        assert self.ca is not None, "a tls=True cluster"
        found = self.ca.directory / f"{name}.pem", self.ca.directory / f"{name}-key.pem"
        return found if found[0].exists() else self.ca.issue(name, client=True, common_name=False)

    def access(self, user: str | None = "root", client: str = "root") -> Any:
        """An :class:`~clustercore.store.etcd_access.EtcdAccess` for this cluster: its CA and
        the client certificate ``client`` (with TLS), ``user`` and its password (with auth)."""
        from clustercore.store.etcd_access import EtcdAccess

        cert, key = self.client(client) if self.tls else (None, None)
        password = self.root_password if self.auth and user is not None else None
        return EtcdAccess(str(self.ca.cert) if self.ca else None, str(cert) if cert else None,
                          str(key) if key else None, user if password else None, password)

    def _tls_args(self) -> list[str]:
        if self.ca is None:
            return []
        cert, key = self.ca.issue("etcd-server", ["127.0.0.1", "localhost"], server=True, client=True)
        return ["--cert-file", str(cert), "--key-file", str(key), "--trusted-ca-file", str(self.ca.cert),
                "--client-cert-auth"]

    def _context(self) -> ssl.SSLContext | None:
        if self.ca is None:
            return None
        context = ssl.create_default_context(cafile=str(self.ca.cert))
        context.load_cert_chain(*self.client("root"))
        return context

    def _post(self, i: int, path: str, body: bytes, token: str = "") -> bytes:
        request = urllib.request.Request(self.client_url(i) + path, data=body, method="POST",
                                         headers={"Authorization": token} if token else {})
        with urllib.request.urlopen(request, timeout=5, context=self._context()) as answer:
            data: bytes = answer.read()
            return data

    def _enable_auth(self) -> None:
        """A root user and role, then authentication on (once: it lives in etcd's data)."""
        password = self.root_password.encode()
        for path, body in (("/v3/auth/user/add", b'{"name": "root", "password": "' + password + b'"}'),
                           ("/v3/auth/role/add", b'{"name": "root"}'),
                           ("/v3/auth/user/grant", b'{"user": "root", "role": "root"}'),
                           ("/v3/auth/enable", b"{}")):
            self._post(0, path, body)
        self._enabled = True

    def add_user(self, name: str, password: str, grants: list[tuple[str, str, bool]]) -> None:
        """An etcd user of its own role ``name`` with ``grants``: (``READ``, ``WRITE`` or
        ``READWRITE``, key, whether the key is a prefix), as root (with auth)."""
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        token = json.loads(self._post(0, "/v3/auth/authenticate", json.dumps(
            {"name": "root", "password": self.root_password}).encode()))["token"]
        self._post(0, "/v3/auth/user/add", json.dumps({"name": name, "password": password}).encode(), token)
        self._post(0, "/v3/auth/role/add", json.dumps({"name": name}).encode(), token)
        for perm, key, prefix in grants:
            end = b64(key[:-1] + chr(ord(key[-1]) + 1)) if prefix else ""
            permission = {"permType": perm, "key": b64(key), **({"range_end": end} if end else {})}
            self._post(0, "/v3/auth/role/grant", json.dumps({"name": name, "perm": permission}).encode(), token)
        self._post(0, "/v3/auth/user/grant", json.dumps({"user": name, "role": name}).encode(), token)

    def start(self, i: int | None = None, timeout: float = 20.0) -> EtcdCluster:
        members = range(self.n) if i is None else [i]
        initial = ",".join(f"e{k}=http://127.0.0.1:{self.base_port + 2 * k + 1}" for k in range(self.n))
        tls = self._tls_args()
        for k in members:
            if self.processes[k] is not None:
                continue
            data = f"{self._tmp.name}/e{k}"
            state = "existing" if os.path.exists(data) else "new"
            self.processes[k] = subprocess.Popen(
                ["etcd", "--name", f"e{k}", "--data-dir", data,
                 "--listen-client-urls", self.client_url(k), "--advertise-client-urls", self.client_url(k),
                 "--listen-peer-urls", f"http://127.0.0.1:{self.base_port + 2 * k + 1}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.base_port + 2 * k + 1}",
                 "--initial-cluster", initial, "--initial-cluster-state", state,
                 "--initial-cluster-token", f"clustercore-{self.base_port}", "--log-level", "error", *tls],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        for k in members:
            while True:
                with contextlib.suppress(OSError):
                    request = urllib.request.Request(self.client_url(k) + "/health")
                    with urllib.request.urlopen(request, timeout=1, context=self._context()) as answer:
                        if b'"true"' in answer.read():
                            break
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"etcd member e{k} not healthy after {timeout} s")
                time.sleep(0.1)
        if self.auth and not self._enabled:
            self._enable_auth()
        return self

    def kill(self, i: int) -> None:
        process = self.processes[i]
        if process is not None:
            process.kill()
            process.wait()
            self.processes[i] = None

    def stop(self) -> None:
        for i in range(self.n):
            self.kill(i)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._tmp.cleanup()
