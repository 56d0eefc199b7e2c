"""Binding pods through the Kubernetes API, for the extender's bind verb.

With ``bindVerb`` set, kube-scheduler leaves the binding to the extender: it must create
the pod's ``Binding`` (``POST /api/v1/namespaces/NS/pods/NAME/binding``) as the default
binder would, or the pod stays Pending. :class:`KubeApiBinder` does that with a bearer
token (a ServiceAccount's, allowed to ``create`` ``pods/binding``) over TLS verified
against ``ca_file``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs
import httpx


@attrs.frozen
class BindRefused(Exception):
    """The API server answered a Binding with an error."""

    status: int
    message: str

    def __str__(self) -> str:
        return f"the API server answered {self.status}: {self.message}"


@attrs.define(eq=False)
class KubeApiBinder:
    server: str
    token: str = attrs.field(default="", repr=False)
    ca_file: Path | None = None
    timeout: float = 4.0
    _client: httpx.Client | None = attrs.field(default=None, init=False, repr=False)

    @classmethod
    def from_files(cls, server: str, token_file: Path | None, ca_file: Path | None) -> KubeApiBinder:
        token = token_file.read_text().strip() if token_file else ""
        return cls(server.rstrip("/"), token, ca_file)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            verify: ssl.SSLContext | bool = True
            if self.ca_file:
                verify = ssl.create_default_context(cafile=str(self.ca_file))
            self._client = httpx.Client(base_url=self.server, headers=headers, verify=verify, timeout=self.timeout)
        return self._client

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace, **({"uid": uid} if uid else {})},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        response = self.client.post(f"/api/v1/namespaces/{namespace}/pods/{name}/binding", json=body)
        if response.status_code not in (200, 201):
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text[:200]
            raise BindRefused(response.status_code, message)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
