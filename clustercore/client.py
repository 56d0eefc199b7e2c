"""The client of a manager's HTTP API (``/api/v1/``): one typed method per endpoint.

::

    client = Client("https://10.0.0.5:8443", token="cc_...", ca="server.pem", check_hostname=False)
    client.hosts()                       # [{'name': 'node1', 'state': 'Up', ...}]
    op = client.start_maintenance("node1")
    client.wait(op["id"], progress=lambda op: print(op["progress"]))

Every answer is the server's JSON (dicts and lists); every failure is an :class:`ApiError`
carrying the HTTP status, the server's error kind, its message and the field it names
(status 0 when no answer came: unreachable, or TLS refused the server's certificate).

TLS: ``ca`` is a file of trusted certificates. A manager without ``--cert`` serves a
self-signed certificate; ``clustercore login`` checks its SHA-256 fingerprint (the one
the manager printed) and keeps it as the *pinned* certificate, trusted alone and for any
host name (``check_hostname=False``: only the holder of that certificate's key can present
it, whatever address the manager is reached at). With a certificate issued by a CA, give
that CA (or nothing, for the system's CAs) and the name is checked.

Needs the ``api`` extra (httpx): without it, importing this module raises ImportError
naming ``pip install 'clustercore[api]'``.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from clustercore.errors import ClusterError
from clustercore.pinning import fingerprint, same_fingerprint, server_certificate

API_EXTRA = "pip install 'clustercore[api]'"
try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(f"the API client needs the api extra ({exc}): {API_EXTRA}", name=exc.name) from exc

__all__ = ["ApiError", "Client", "fingerprint", "is_done", "same_fingerprint", "server_certificate", "sse_data"]
PREFIX = "/api/v1"
Json = dict[str, Any]
Progress = Callable[[Json], None]


class ApiError(ClusterError):
    """The API said no (``status`` >= 400), or did not answer (``status`` 0).

    ``kind`` is the server's error kind (``ValidationError``, ``UnknownHost``...), or
    ``unreachable`` / ``tls`` / ``protocol`` for failures on this side; ``field`` is the
    dotted field a validation error names (None otherwise)."""

    def __init__(self, status: int, kind: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.kind = kind
        self.message = message
        self.field = field
        named = f" (field {field!r})" if field and field not in message else ""
        super().__init__(f"{message}{named}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error a 4xx/5xx answer carries (``{"error", "message", "field"}``), or one
        made of its status line when the body is not that."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            field = body.get("field")
            return cls(response.status_code, str(body.get("error") or "error"), body["message"],
                       field if isinstance(field, str) else None)
        if isinstance(body, dict) and "detail" in body:  # a framework's own answer
            return cls(response.status_code, "error", f"{response.status_code}: {body['detail']}")
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return cls(response.status_code, "error", f"{response.status_code}: {text}")


def quote(name: str) -> str:
    """A name as one path segment (a ``/`` or ``..`` in it cannot reach another endpoint)."""
    return urllib.parse.quote(name, safe="")


class Client:
    """The API at ``url`` (``https://host:port``) with bearer ``token``.

    ``ca``: file of trusted certificates (None: the system's); ``check_hostname``: check
    the certificate names the host (off for a pinned self-signed certificate);
    ``timeout``: seconds for connecting and for each answer; ``transport``: an httpx
    transport instead of the network (tests)."""

    def __init__(self, url: str, token: str | None = None, ca: str | Path | None = None, timeout: float = 30.0,
                 *, check_hostname: bool = True, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        verify: ssl.SSLContext | bool = True
        if ca is not None:
            verify = ssl.create_default_context(cafile=str(ca))
            verify.check_hostname = check_hostname
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url + PREFIX, headers=headers, verify=verify, timeout=timeout,
                                 transport=transport, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def call(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """One request; the decoded JSON answer (None when empty), or ApiError."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, path, json=body, params=query,
                                         timeout=timeout if timeout is not None else self.timeout)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "protocol", f"{method} {path}: the answer is not JSON") from None

    def _transport_error(self, exc: httpx.HTTPError) -> ApiError:
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc.__context__, ssl.SSLError):
            return ApiError(0, "tls", f"{self.url}: the server's certificate is not trusted ({text}); "
                                      "pin it with clustercore login --fingerprint")
        if isinstance(exc, httpx.TimeoutException):
            return ApiError(0, "unreachable", f"{self.url}: no answer within {self.timeout:g} s")
        return ApiError(0, "unreachable", f"{self.url}: {text}")

    def _list(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> list[Json]:
        """A listing: the server's list, or the list under ``key`` of its object."""
        data = self.call("GET", path, params=params)
        items = data.get(key) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ApiError(200, "protocol", f"GET {path}: expected a list of {key}")
        return items

    # ------------------------------------------------------------------ who

    def whoami(self) -> Json:
        """The token's name and role."""
        result: Json = self.call("GET", "/whoami")
        return result

    # ------------------------------------------------------------------ hosts

    def hosts(self) -> list[Json]:
        return self._list("/hosts", "hosts")

    def host(self, name: str) -> Json:
        result: Json = self.call("GET", f"/hosts/{quote(name)}")
        return result

    def add_host(self, definition: Mapping[str, Any]) -> Json:
        """Register a host (its dict, fence devices included): ``{host, credential}``; the
        heartbeat credential is shown this once."""
        result: Json = self.call("POST", "/hosts", body=dict(definition))
        return result

    def update_host(self, name: str, changes: Mapping[str, Any]) -> Json:
        """Change a host in place (labels, capacity, address, fence devices, taints...)."""
        result: Json = self.call("PATCH", f"/hosts/{quote(name)}", body=dict(changes))
        return result

    def _host_action(self, name: str, action: str) -> Json:
        result: Json = self.call("POST", f"/hosts/{quote(name)}/{action}")
        return result

    def approve_host(self, name: str) -> Json:
        return self._host_action(name, "approve")

    def activate_host(self, name: str) -> Json:
        return self._host_action(name, "activate")

    def reinstall_host(self, name: str) -> Json:
        return self._host_action(name, "reinstall")

    def confirm_down(self, name: str) -> Json:
        return self._host_action(name, "confirm-down")

    def start_maintenance(self, name: str, stop_unmovable: bool = False) -> Json:
        """Drain a host into Maintenance: the operation."""
        result: Json = self.call("POST", f"/hosts/{quote(name)}/maintenance", body={"stop_unmovable": stop_unmovable})
        return result

    def cancel_maintenance(self, name: str) -> Json:
        result: Json = self.call("DELETE", f"/hosts/{quote(name)}/maintenance")
        return result

    def remove_host(self, name: str) -> None:
        self.call("DELETE", f"/hosts/{quote(name)}")

    # ------------------------------------------------------------------ workloads

    def workloads(self) -> list[Json]:
        return self._list("/workloads", "workloads")

    def workload(self, name: str) -> Json:
        result: Json = self.call("GET", f"/workloads/{quote(name)}")
        return result

    def create_workload(self, document: Mapping[str, Any]) -> Json:
        """Define a workload (a workload dict, or ``{"flavor": "vm", "vm": {...}, ...}``)
        and have it started: ``{workload, operation}``."""
        result: Json = self.call("POST", "/workloads", body=dict(document))
        return result

    def start_workload(self, name: str) -> Json:
        result: Json = self.call("POST", f"/workloads/{quote(name)}/start")
        return result

    def stop_workload(self, name: str, force: bool = False) -> Json:
        result: Json = self.call("POST", f"/workloads/{quote(name)}/stop", body={"force": force})
        return result

    def migrate_workload(self, name: str, target: str | None = None) -> Json:
        """Move a workload to ``target``, or where the scheduler says (None): the operation."""
        body = {"target": target} if target else {}
        result: Json = self.call("POST", f"/workloads/{quote(name)}/migrate", body=body)
        return result

    def delete_workload(self, name: str) -> Json:
        result: Json = self.call("DELETE", f"/workloads/{quote(name)}")
        return result

    def placements(self) -> list[Json]:
        return self._list("/placements", "placements")

    def explain(self, workload: str, host: str | None = None) -> list[Json]:
        """The scheduler's rows for ``workload`` (only ``host``'s when given): why (not) there."""
        return self._list(f"/explain/{quote(workload)}", "rows", {"host": host})

    def capacity(self) -> Json:
        result: Json = self.call("GET", "/capacity")
        return result

    def rebalance_plan(self) -> Json:
        result: Json = self.call("GET", "/rebalance")
        return result

    # ------------------------------------------------------------------ config

    def config(self) -> Json:
        result: Json = self.call("GET", "/config")
        return result

    def configure(self, changes: Mapping[str, Any]) -> Json:
        """Merge ``changes`` into the cluster config (validated): the config now."""
        result: Json = self.call("PATCH", "/config", body=dict(changes))
        return result

    # ------------------------------------------------------------------ events

    def events(self, subject: str | None = None, kind: str | None = None, since: float | None = None,
               limit: int | None = None) -> list[Json]:
        return self._list("/events", "events", {"subject": subject, "kind": kind, "since": since, "limit": limit})

    def stream_events(self, subject: str | None = None, kind: str | None = None,
                      since: float | None = None) -> Iterator[Json]:
        """Events as they happen (server-sent events), until the server ends the stream or
        the caller stops iterating. No read timeout: a quiet cluster may say nothing for long."""
        params = {k: v for k, v in {"subject": subject, "kind": kind, "since": since}.items() if v is not None}
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self.http.stream("GET", "/events/stream", params=params, timeout=timeout,
                                  headers={"Accept": "text/event-stream"}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError.from_response(response)
                yield from sse_data(response.iter_lines())
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    # ------------------------------------------------------------------ operations

    def operations(self) -> list[Json]:
        return self._list("/operations", "operations")

    def operation(self, op_id: str) -> Json:
        result: Json = self.call("GET", f"/operations/{quote(op_id)}")
        return result

    def cancel_operation(self, op_id: str) -> Json:
        result: Json = self.call("POST", f"/operations/{quote(op_id)}/cancel")
        return result

    def wait_operation(self, op_id: str, timeout: float) -> Json:
        """One long poll: the operation once done, or as it is after ``timeout`` seconds."""
        result: Json = self.call("GET", f"/operations/{quote(op_id)}/wait", params={"timeout": timeout},
                                 timeout=timeout + self.timeout)
        return result

    def wait(self, op_id: str, timeout: float | None = None, progress: Progress | None = None,
             poll: float = 1.0) -> Json:
        """The operation once done (Succeeded, Failed or Cancelled), or as it is when
        ``timeout`` seconds (None: no limit) have passed; ``progress(op)`` is called with
        every state seen, about every ``poll`` seconds while it runs."""
        deadline = None if timeout is None else time.monotonic() + timeout
        op = self.operation(op_id)
        while True:
            if progress is not None:
                progress(op)
            if is_done(op):
                return op
            left = poll if deadline is None else min(poll, deadline - time.monotonic())
            if left <= 0:
                return op
            op = self.wait_operation(op_id, left)

    # ------------------------------------------------------------------ tokens

    def tokens(self) -> list[Json]:
        return self._list("/tokens", "tokens")

    def create_token(self, name: str, role: str) -> Json:
        """A new API token: its id, name, role and ``secret`` (shown this once)."""
        result: Json = self.call("POST", "/tokens", body={"name": name, "role": role})
        return result

    def revoke_token(self, token_id: str) -> None:
        self.call("DELETE", f"/tokens/{quote(token_id)}")

    def create_join_token(self, host: str) -> Json:
        """A one-time join token for the host named ``host`` (its ``secret`` shown once)."""
        result: Json = self.call("POST", "/tokens/join", body={"host": host})
        return result

    # ------------------------------------------------------------------ hosts' own calls

    def join(self, definition: Mapping[str, Any]) -> Json:
        """Register this host with the join token this client holds: ``{host, credential}``."""
        result: Json = self.call("POST", "/join", body=dict(definition))
        return result

    def heartbeat(self, host: str, report: Mapping[str, Any]) -> None:
        """One heartbeat of ``host`` (a HostReport dict) with the credential this client holds."""
        self.call("POST", f"/heartbeats/{quote(host)}", body=dict(report))


def is_done(op: Mapping[str, Any]) -> bool:
    return op.get("state") in ("Succeeded", "Failed", "Cancelled")


def sse_data(lines: Iterator[str]) -> Iterator[Json]:
    """The JSON ``data:`` of each server-sent event in ``lines`` (comments, ids and other
    fields skipped; several ``data:`` lines of one event joined with newlines)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                try:
                    event = json.loads("\n".join(data))
                except ValueError:
                    raise ApiError(200, "protocol", "an event of the stream is not JSON") from None
                data.clear()
                if isinstance(event, dict):
                    yield event
            continue
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
