"""What every endpoint works with: the cluster behind the API, and who is calling.

:class:`Api` holds the Cluster the API writes through (on a manager, its
:attr:`~clustercore.manager.Manager.operator`: straight to the store, so a follower takes
writes too), the Cluster whose scheduler explains (the manager's own, its topology warm),
the read cache, the metrics and the heartbeats hosts send through the API.

:class:`Guard` is the one dependency that admits a call: an API token of at least a role,
a join token, or a host's heartbeat credential, all as ``Authorization: Bearer``. For a
call that changes something it reads the body first (so an oversized one is refused with
413 before anything runs) and, once the endpoint has succeeded, records the audit event
naming the caller (``audit``; a failed call writes nothing). Heartbeats are not audited:
they are a host's liveness, every few seconds, not an operator's act.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

import attrs
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from clustercore import auth
from clustercore.agent import HostAgent
from clustercore.auth import Forbidden, Role, Unauthorized
from clustercore.cluster import Cluster
from clustercore.errors import StoreError
from clustercore.events import Event
from clustercore.leadership import GuardedStore
from clustercore.manager import Manager
from clustercore.metrics import Metrics
from clustercore.model import HostReport
from clustercore.store.base import Store

from .cache import ReadCache

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
SUBJECTS = {"hosts": "host", "workloads": "workload", "operations": "operation", "tokens": "token",
            "explain": "workload", "heartbeats": "host"}

bearer = HTTPBearer(auto_error=False, description="An API token (cc_...), a join token (ccj_..., POST /join "
                                                  "only) or a host's heartbeat credential (POST /heartbeats only)")


@attrs.frozen
class Caller:
    """Who is calling: ``name`` is what audit events name (the token's name)."""

    name: str
    role: Role | None = None
    token_id: str = ""
    kind: str = "token"  # token, join or host
    secret: str = attrs.field(default="", repr=False)


class Api:
    """The cluster behind the API (a :class:`Manager`, or a lone :class:`Cluster`)."""

    def __init__(self, target: Manager | Cluster, metrics: Metrics | None = None, tokens: Store | None = None) -> None:
        if isinstance(target, Manager):
            self.manager: Manager | None = target
            self.cluster = target.operator
            self.reader = target.cluster
            store = target.store
        else:
            self.manager = None
            self.cluster = self.reader = target
            store = target.store.inner if isinstance(target.store, GuardedStore) else target.store
        self.store: Store = store
        self.tokens: Store = tokens if tokens is not None else store  # where API tokens live
        self.cache = ReadCache(store)
        if metrics is None:
            metrics = Metrics(store)
            if self.manager is not None:
                metrics.attach(self.manager)
        self.metrics = metrics
        self._beats: dict[str, tuple[HostAgent, threading.Lock]] = {}
        self._beats_lock = threading.Lock()

    def now(self) -> float:
        return self.cluster.clock.now()

    def audit(self, caller: Caller, request: Request) -> None:
        """Record who did what (after the call succeeded)."""
        subject = getattr(request.state, "subject", None) or derive_subject(request)
        path = request.scope.get("raw_path", b"").decode("ascii", "replace") or request.url.path
        role = f" ({caller.role})" if caller.role is not None else ""
        what = f"{request.method} {path} by {caller.name}{role}"
        self.cluster.events.record(Event(self.now(), subject, "audit", what))

    def heartbeat(self, host: str, report: HostReport, credential: str) -> None:
        """Write ``host``'s heartbeat as its agent would, on a store lease this server keeps
        (4 heartbeat intervals, renewed at half): when the host stops beating, the key
        vanishes whichever manager it beat through."""
        with self._beats_lock:
            entry = self._beats.get(host)
            if entry is None:
                interval = self.cluster.config.liveness.heartbeat_interval
                entry = self._beats[host] = (HostAgent(self.store, host, interval), threading.Lock())
        agent, lock = entry
        with lock:
            agent.credential = credential
            agent.report = lambda: report
            if not agent.beat():
                raise StoreError(f"the heartbeat of {host} was not written (the store is away)")

    def close(self) -> None:
        self.cache.close()
        self.metrics.close()


def derive_subject(request: Request) -> str:
    """``host/NAME`` for ``/hosts/NAME/...`` and so on; ``cluster`` otherwise."""
    parts = request.url.path.split("/api/v1/", 1)[-1].split("/")
    kind = SUBJECTS.get(parts[0])
    params = request.path_params
    name = next((str(v) for v in params.values()), None)
    return f"{kind}/{name}" if kind and name else "cluster"


def get_api(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


class Guard:
    """Admits a call: ``role`` is the least API token role it needs; ``kind`` "join" or
    "host" admits a join token or the host's heartbeat credential instead."""

    def __init__(self, role: Role | None = None, kind: str = "token") -> None:
        self.role, self.kind = role, kind

    @property
    def label(self) -> str:
        """What the OpenAPI document and the docs call it."""
        if self.role is not None:
            return self.role.value
        return {"join": "join-token", "host": "host-credential"}[self.kind]

    async def __call__(self, request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                       ) -> AsyncIterator[Caller]:
        if request.method not in SAFE:
            await request.body()  # over the limit: 413 here, before anything runs
        api = get_api(request)
        if credentials is None:
            raise Unauthorized("no bearer token (Authorization: Bearer ...)")
        secret = credentials.credentials
        if self.kind == "join":
            caller = Caller(f"join token {secret.split('_')[1] if secret.count('_') >= 2 else '?'}", kind="join",
                            secret=secret)
        elif self.kind == "host":
            host = str(request.path_params.get("host", ""))
            await run_in_threadpool(auth.check_host_credential, api.store, host, secret)
            caller = Caller(f"host/{host}", kind="host", secret=secret)
        else:
            token = await run_in_threadpool(auth.verify_token, api.tokens, secret)
            assert self.role is not None
            if not token.role.allows(self.role):
                raise Forbidden(token.name, token.role, self.role)
            caller = Caller(token.name, token.role, token.id)
        request.state.caller = caller
        yield caller
        if request.method not in SAFE and caller.kind != "host":
            await run_in_threadpool(api.audit, caller, request)


def guard(role: Role | None = None, kind: str = "token") -> Any:
    """The dependency admitting ``role`` (or ``kind``), its exit run before the answer is sent."""
    return Depends(Guard(role, kind), scope="function")


ApiDep = Annotated[Api, Depends(get_api)]
Viewer = Annotated[Caller, guard(Role.VIEWER)]
Operator = Annotated[Caller, guard(Role.OPERATOR)]
Admin = Annotated[Caller, guard(Role.ADMIN)]
Joiner = Annotated[Caller, guard(kind="join")]
HostCaller = Annotated[Caller, guard(kind="host")]


def route_guard(dependant: Any) -> Guard | None:
    """The Guard among an endpoint's dependencies (what admits it), None for open routes."""
    for dep in getattr(dependant, "dependencies", ()):
        if isinstance(dep.call, Guard):
            return dep.call
        found = route_guard(dep)
        if found is not None:
            return found
    return None
