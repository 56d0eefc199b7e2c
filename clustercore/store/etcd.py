"""The store over etcd v3 (its JSON gateway, through etcd3gw's HTTP session), for several
managers sharing one cluster state.

Everything is under ``prefix`` (default ``/clustercore/``): keys are relative to it, so two
clusters can share one etcd. Revisions are etcd's own (cluster-wide: another writer in the
same etcd moves them too, and a fresh etcd starts at 1, not 0). Compare-and-swap is an
etcd transaction comparing ``mod_revision`` (0 for an absent key); a failed transaction
also reads the compared keys, so :class:`~clustercore.errors.Conflict` names the actual
revision. A watch is one streaming request per watch, read by a thread; resuming from
compacted history raises :class:`~clustercore.errors.Compacted`. Leases are etcd leases
(whole seconds, on etcd's clock).

    store = EtcdStore("etcd://127.0.0.1:2379,127.0.0.1:2381")
    secure = EtcdStore("etcds://10.0.0.1:2379", access=EtcdAccess(ca="ca.pem", cert="m1.pem", key="m1-key.pem",
                                                                   user="manager", password="..."))

Over TLS with authentication (:mod:`clustercore.store.etcd_access`): a token from
``/v3/auth/authenticate`` rides on every request and is renewed once when etcd says it is
no longer valid; the answers that mean a wrong CA, a refused client certificate, a wrong
password or a plain request to a TLS etcd each raise a StoreError saying so.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import math
import queue
import socket
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from clustercore.errors import (
    Compacted,
    Conflict,
    KeyNotFound,
    LeaseNotFound,
    StoreAccessError,
    StoreError,
    ValidationError,
)
from clustercore.store.base import Check, Delete, EventType, KeyValue, Put, StoreEvent
from clustercore.store.etcd_access import PLAIN_SCHEMES, TLS_SCHEMES, EtcdAccess, explain, is_access, refused

DEFAULT_PORT = 2379  # etcd's client port


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _range_end(prefix: str) -> str:
    """etcd's end of the range of keys starting with ``prefix`` (the prefix + 1)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return _b64(b"\0")
    raw[-1] += 1
    return _b64(bytes(raw))


def parse_url(url: str) -> list[str]:
    """``etcd://h1:p1,h2:p2`` (or ``http://...``) to the endpoints' base URLs, over TLS for
    ``etcds://`` (``https://``, ``etcd+https://``); an endpoint without a port gets etcd's
    client port, ``DEFAULT_PORT`` (``etcd://h`` is ``http://h:2379``). A malformed
    endpoint, user information in the URL (a password there would be in every process
    listing) or another scheme raise ValidationError naming it."""
    scheme = "https" if url.startswith(TLS_SCHEMES) else "http"
    if "://" in url and not url.startswith(TLS_SCHEMES + PLAIN_SCHEMES):
        raise ValidationError("etcd URL", "scheme", "must be etcd://, etcds:// (TLS), http:// or https://",
                              url.split("://", 1)[0])
    rest = url.split("://", 1)[1] if "://" in url else url
    if "@" in rest:
        raise ValidationError("etcd URL", "user", "no user or password in the URL: give a user and a password "
                              "file (--etcd-user, --etcd-password-file)", "...@")
    endpoints = []
    for i, raw in enumerate(rest.split(",")):
        endpoint = raw.strip().rstrip("/")
        if not endpoint:
            continue
        parts = urlsplit(f"//{endpoint}")
        try:
            port = parts.port
        except ValueError:  # not a number, or out of range
            port = 0
        if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username or port == 0:
            raise ValidationError("etcd URL", f"endpoint {i + 1}", "must be host or host:port (port 1-65535)",
                                  endpoint)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        endpoints.append(f"{scheme}://{host}:{port or DEFAULT_PORT}")
    return endpoints


class EtcdWatch:
    def __init__(self, store: EtcdStore, prefix: str, start_revision: int | None) -> None:
        self.prefix = prefix
        self._store = store
        self._events: queue.Queue[list[StoreEvent] | BaseException] = queue.Queue()
        self.cancelled = False
        request: dict[str, Any] = {"key": _b64(store.prefix + prefix), "range_end": _range_end(store.prefix + prefix)}
        if start_revision is not None:
            request["start_revision"] = str(start_revision)
        if store.access.user and "Authorization" not in store._session.headers:
            store._authenticate()
        self._response = store._session_post("/watch", {"create_request": request}, stream=True, timeout=None)
        self._lines = self._response.iter_lines(chunk_size=None)  # type: ignore[call-overload]  # whatever arrived
        result = self._next_result()  # "created"
        if start_revision is not None and store._compacted(start_revision):
            # etcd then cancels the watch, naming the oldest revision it still has
            while not (result.get("canceled") or result.get("compact_revision")):
                result = self._next_result()
            self.cancelled = True
            self._response.close()
            raise Compacted(start_revision, int(result.get("compact_revision", 0)))
        self._thread = threading.Thread(target=self._read, name=f"etcd-watch {prefix}", daemon=True)
        self._thread.start()

    def _next_result(self) -> dict[str, Any]:
        for line in self._lines:
            if line.strip():
                chunk = json.loads(line)
                if "error" in chunk:
                    raise StoreError(f"etcd watch: {chunk['error'].get('message', chunk['error'])}")
                result: dict[str, Any] = chunk["result"]
                return result
        raise StoreError("etcd watch: the stream ended")

    def _read(self) -> None:
        strip = len(self._store.prefix)
        try:
            while not self.cancelled:
                result = self._next_result()
                if result.get("canceled") or result.get("compact_revision"):
                    self._events.put(Compacted(0, int(result.get("compact_revision", 0))))
                    return
                events = []
                for raw in result.get("events", ()):
                    kv = raw["kv"]
                    kind = EventType.DELETE if raw.get("type") == "DELETE" else EventType.PUT
                    events.append(StoreEvent(kind, KeyValue(
                        _unb64(kv["key"]).decode()[strip:], _unb64(kv.get("value")),
                        int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)),
                        int(kv.get("version", 0)), int(kv.get("lease", 0)))))
                if events:
                    self._events.put(events)
        except BaseException as exc:  # the stream closed (cancel) or broke
            if not self.cancelled:
                self._events.put(exc if isinstance(exc, StoreError) else StoreError(f"etcd watch broke: {exc}"))
        finally:
            with contextlib.suppress(Exception):
                self._response.close()

    def get(self, timeout: float | None = 0.0) -> builtins.list[StoreEvent]:
        if self.cancelled:
            return []
        out: builtins.list[StoreEvent] = []
        try:
            item = self._events.get(timeout=timeout) if timeout != 0 else self._events.get_nowait()
        except queue.Empty:
            return out
        while True:
            if isinstance(item, BaseException):
                raise item
            out.extend(item)
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return [] if self.cancelled else out

    def cancel(self) -> None:
        """Stop the stream: shut the socket down under the reading thread (closing the
        response from here would wait for that thread's read)."""
        if self.cancelled:
            return
        self.cancelled = True
        with contextlib.suppress(Exception):
            dup = socket.fromfd(self._response.raw.fileno(), socket.AF_INET, socket.SOCK_STREAM)
            dup.shutdown(socket.SHUT_RDWR)
            dup.close()

    def __repr__(self) -> str:
        return f"EtcdWatch(prefix={self.prefix!r})"


class EtcdStore:
    """``access``: TLS files and etcd credentials (:mod:`clustercore.store.etcd_access`)."""

    def __init__(self, url: str = "etcd://127.0.0.1:2379", prefix: str = "/clustercore/", timeout: float = 5.0,
                 access: EtcdAccess | None = None) -> None:
        self.endpoints = parse_url(url)
        if not self.endpoints:
            raise StoreError(f"no etcd endpoint in {url!r}")
        self.access = (access or EtcdAccess()).check(self.endpoints[0].startswith("https://"))
        self.prefix = prefix
        self.timeout = timeout
        self._session = requests.Session()
        self._tls = self.access.tls()
        self._token_lock = threading.Lock()
        self._current = 0  # index of the endpoint that answered last
        self._watches: list[EtcdWatch] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EtcdStore({','.join(self.endpoints)}, prefix={self.prefix!r})"

    # ------------------------------------------------------------------ transport

    def _session_post(self, path: str, body: dict[str, Any], stream: bool = False,
                      timeout: float | None = -1.0) -> requests.Response:
        """POST to the first endpoint that answers, starting with the last good one."""
        errors = []
        n, refusals = len(self.endpoints), 0
        for i in range(n):
            index = (self._current + i) % n
            try:
                response = self._session.post(f"{self.endpoints[index]}/v3{path}", json=body, stream=stream,
                                              timeout=self.timeout if timeout == -1.0 else timeout, **self._tls)
            except requests.RequestException as exc:
                errors.append(explain(exc, self.access, self.endpoints[index]))
                refusals += is_access(exc, self.endpoints[index])
                continue
            self._current = index
            return response
        if refusals == n:  # every member refused us: configuration, not an outage
            raise StoreAccessError(f"etcd refused this client: {'; '.join(errors)}")
        raise StoreError(f"no etcd endpoint answered: {'; '.join(errors)}")

    def _authenticate(self, stale: str | None = None) -> None:
        """A token for the user (unless another thread replaced ``stale`` meanwhile)."""
        with self._token_lock:
            if self._session.headers.get("Authorization") not in (None, stale):
                return
            self._session.headers.pop("Authorization", None)
            data = self._call("/auth/authenticate", {"name": self.access.user, "password": self.access.password},
                              authenticate=False)
            self._session.headers["Authorization"] = str(data["token"])

    def _call(self, path: str, body: dict[str, Any], authenticate: bool = True) -> dict[str, Any]:
        token = self._session.headers.get("Authorization")
        if authenticate and self.access.user and token is None:
            self._authenticate()
        response = self._session_post(path, body)
        try:
            data: dict[str, Any] = response.json() if response.content else {}
        except ValueError:  # not etcd's JSON: a plain request to a TLS etcd
            data = {}
        if response.status_code != 200:
            message = str(data.get("message") or data.get("error") or response.text)
            if authenticate and self.access.user and "invalid auth token" in message:  # expired: once more
                self._authenticate(stale=token if isinstance(token, str) else None)
                return self._call(path, body, authenticate=False)
            problem = refused(response.status_code, message, response.url.split("/v3")[0], self.access)
            if problem is not None:
                raise problem
            if "lease not found" in message:
                raise LeaseNotFound(int(body.get("lease") or body.get("ID") or 0))
            if "compacted" in message:
                raise Compacted(int(body.get("revision", 0)), 0)
            raise StoreError(f"etcd {path}: {message}")
        return data

    def _kv(self, raw: dict[str, Any]) -> KeyValue:
        return KeyValue(_unb64(raw["key"]).decode()[len(self.prefix):], _unb64(raw.get("value")),
                        int(raw.get("create_revision", 0)), int(raw.get("mod_revision", 0)),
                        int(raw.get("version", 0)), int(raw.get("lease", 0)))

    # ------------------------------------------------------------------ reads

    @property
    def revision(self) -> int:
        data = self._call("/kv/range", {"key": _b64(self.prefix), "count_only": True})
        return int(data["header"]["revision"])

    def get(self, key: str) -> KeyValue | None:
        data = self._call("/kv/range", {"key": _b64(self.prefix + key)})
        kvs = data.get("kvs") or []
        return self._kv(kvs[0]) if kvs else None

    def list(self, prefix: str) -> builtins.list[KeyValue]:
        full = self.prefix + prefix
        data = self._call("/kv/range", {"key": _b64(full), "range_end": _range_end(full)})
        return [self._kv(kv) for kv in data.get("kvs") or []]

    # ------------------------------------------------------------------ writes

    def put(self, key: str, value: bytes, *, expect: int | None = None, lease: int = 0) -> int:
        return self.txn([] if expect is None else [Check(key, expect)], [Put(key, value, lease)])

    def delete(self, key: str, *, expect: int | None = None) -> int:
        if expect is None:
            data = self._call("/kv/deleterange", {"key": _b64(self.prefix + key)})
            if int(data.get("deleted", 0)) == 0:
                raise KeyNotFound(key)
            return int(data["header"]["revision"])
        if expect == 0:
            current = self.get(key)
            raise Conflict(key, 0, current.mod_revision if current else 0)
        return self.txn([Check(key, expect)], [Delete(key)])

    def txn(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        compare = [{"key": _b64(self.prefix + c.key), "target": "MOD", "result": "EQUAL",
                    "mod_revision": str(c.revision)} for c in checks]
        success = []
        for op in ops:
            if isinstance(op, Put):
                put: dict[str, Any] = {"key": _b64(self.prefix + op.key), "value": _b64(op.value)}
                if op.lease:
                    put["lease"] = str(op.lease)
                success.append({"request_put": put})
            else:
                success.append({"request_delete_range": {"key": _b64(self.prefix + op.key)}})
        failure = [{"request_range": {"key": _b64(self.prefix + c.key)}} for c in checks]
        try:
            data = self._call("/kv/txn", {"compare": compare, "success": success, "failure": failure})
        except LeaseNotFound:
            raise LeaseNotFound(next((op.lease for op in ops if isinstance(op, Put) and op.lease), 0)) from None
        if not data.get("succeeded"):
            for check, response in zip(checks, data.get("responses") or [], strict=False):
                kvs = response.get("response_range", {}).get("kvs") or []
                actual = int(kvs[0].get("mod_revision", 0)) if kvs else 0
                if actual != check.revision:
                    raise Conflict(check.key, check.revision, actual)
            raise Conflict(checks[0].key if checks else "", checks[0].revision if checks else 0, -1)
        return int(data["header"]["revision"])

    # ------------------------------------------------------------------ watches

    def watch(self, prefix: str, start_revision: int | None = None) -> EtcdWatch:
        watch = EtcdWatch(self, prefix, start_revision)
        with self._lock:
            self._watches = [w for w in self._watches if not w.cancelled] + [watch]
        return watch

    def _compacted(self, revision: int) -> bool:
        try:
            self._call("/kv/range", {"key": _b64(self.prefix), "revision": str(revision), "count_only": True})
        except Compacted:
            return True
        except StoreError as exc:
            if "future revision" in str(exc):  # a watch from the next revision: nothing to miss
                return False
            raise
        return False

    def compact(self, revision: int) -> None:
        """Discard history before ``revision`` (etcd's compaction; watches from earlier fail)."""
        self._call("/kv/compaction", {"revision": str(revision), "physical": True})

    # ------------------------------------------------------------------ leases

    def grant(self, ttl: float) -> int:
        data = self._call("/lease/grant", {"TTL": str(max(1, math.ceil(ttl)))})
        return int(data["ID"])

    def keepalive(self, lease: int) -> None:
        data = self._call("/lease/keepalive", {"ID": str(lease)})
        if int(data.get("result", {}).get("TTL", 0)) <= 0:
            raise LeaseNotFound(lease)

    def revoke(self, lease: int) -> None:
        with contextlib.suppress(LeaseNotFound):
            self._call("/kv/lease/revoke", {"ID": str(lease)})

    def close(self) -> None:
        with self._lock:
            for watch in self._watches:
                watch.cancel()
            self._watches.clear()
        self._session.close()
