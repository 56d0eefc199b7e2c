"""What the API tests share: a simulated cluster (fake flavor, fake clock) with three Up
hosts and one running workload, its app, a client, and a token per role."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import attrs
import httpx

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, Plugins, auth
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from clustercore.testing import FakeFlavor

with warnings.catch_warnings():  # starlette's note that its TestClient will move to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from clustercore.api import create_app

HOSTS = ("h1", "h2", "h3")
ROLES = ("viewer", "operator", "admin")
CONFIG = ClusterConfig(liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2,
                                               grace_per_workload=0),
                       fencing=FencePolicy(enabled=False), drain_parallel=2, call_timeout=5, call_wait=0.5)


def tick(c: Cluster, clock: FakeClock, n: int = 1, silent: Sequence[str] = ()) -> None:
    """``n`` passes, a second apart, every host but ``silent`` beating before each."""
    for _ in range(n):
        for name in c.hosts():
            if name not in silent:
                c.heartbeat(name, HostReport())
        clock.advance(1)
        c.step()


@attrs.define
class Env:
    cluster: Cluster
    clock: FakeClock
    client: TestClient
    tokens: dict[str, str]

    @property
    def store(self) -> Any:
        return self.cluster.store

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def as_role(self, role: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.call(method, path, self.tokens[role], **kwargs)

    def tick(self, n: int = 1, silent: Sequence[str] = ()) -> None:
        tick(self.cluster, self.clock, n, silent)


def env(workloads: Sequence[str] = ("w1",)) -> Env:
    """Three Up hosts with an IPMI fence device each, ``workloads`` running on h1, and an
    API token per role (named after the role)."""
    clock = FakeClock()
    c = Cluster(plugins=Plugins([FakeFlavor("fake")], entry_points=False), clock=clock, config=CONFIG,
                monotonic=clock.now)
    for name in HOSTS:
        c.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192},
                         "fence_devices": [{"agent": "ipmi", "address": f"bmc-{name}", "username": "root",
                                            "password": f"s3cret-{name}"}]})
    tick(c, clock, 3)
    for name in workloads:
        c.submit({"name": name, "flavor": "fake", "requests": {"cpu": 1, "memory": 64}, "pinned": ["h1"]})
        c.update_workload(name, lambda w: attrs.evolve(w, pinned=frozenset()))
    tokens = {role: auth.create_token(c.store, role, role, clock.now()) for role in ROLES}
    client = TestClient(create_app(c))
    return Env(c, clock, client, tokens)
