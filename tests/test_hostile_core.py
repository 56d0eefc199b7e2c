"""Hostile input to the core (issue 14): heartbeats from a second writer, identifiers with
newlines, unbounded numbers, typed objects that skip validation, a non-atomic submit, and
leadership leaks. Each attack is refused with a typed error, the store unchanged, nothing
started or run twice."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins
from clustercore.adapters.ganeti import answer_text
from clustercore.errors import NotLeader, NoValidHost, ValidationError, WorkloadExists
from clustercore.leadership import LEADER_KEY
from clustercore.lifecycle import LivenessPolicy
from clustercore.manager import Manager, status
from clustercore.model import FenceDevice, Host, PlacementState, Resources, Workload
from clustercore.store.memory import MemoryStore
from clustercore.testing import FakeFlavor

LIVENESS = LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2, grace_per_workload=0)


def joined(*names: str) -> tuple[Cluster, FakeClock, FakeFlavor]:
    clock = FakeClock()
    flavor = FakeFlavor("fake")
    c = Cluster(plugins=Plugins([flavor], entry_points=False), clock=clock, config=ClusterConfig(liveness=LIVENESS))
    for name in names:
        c.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192}})
    for _ in range(3):
        beat(c, clock, names)
    assert all(c.host(n).state is HostState.UP for n in names)
    return c, clock, flavor


def beat(c: Cluster, clock: FakeClock, names: tuple[str, ...], boot: str = "b1") -> None:
    for name in names:
        c.heartbeat(name, HostReport(boot_id=f"{name}-{boot}"))
    clock.advance(1)
    c.step()


def test_a_second_heartbeat_writer_without_the_credential_is_ignored() -> None:
    c, clock, flavor = joined("a", "b")
    c.submit({"name": "vm", "flavor": "fake", "ha": True, "requests": {"cpu": 1, "memory": 1}, "pinned": ["a"]})
    # Another writer of heartbeats/a (no credential), with another boot id, every second.
    for _ in range(10):
        c.store.put("heartbeats/a", b'{"boot_id": "forged", "kdump": false, "networks": [], "storage": []}')
        beat(c, clock, ("b",))
    assert [e.kind for e in c.query_events(subject="host/a")].count("heartbeat-refused") == 1
    assert c.placements()["vm"].state is PlacementState.RUNNING and flavor.driver.where("vm") == ["a"]
    assert c.host("a").state is not HostState.UP, "the forged beats did not keep the silent host alive"


def test_a_reboot_seen_in_heartbeats_alone_restarts_nothing_the_host_still_runs() -> None:
    c, clock, flavor = joined("a", "b")
    c.submit({"name": "vm", "flavor": "fake", "ha": True, "requests": {"cpu": 1, "memory": 1}, "pinned": ["a"]})
    # A mistaken second agent with the right credential and this machine's other boot id.
    beat(c, clock, ("a", "b"), boot="b2")
    beat(c, clock, ("a", "b"), boot="b2")
    assert flavor.driver.where("vm") == ["a"] and c.placements()["vm"].host == "a"
    assert c.placements()["vm"].state is PlacementState.RUNNING
    assert [e.kind for e in c.query_events(subject="workload/vm")][-1] == "reboot-unconfirmed"
    # A real reboot: the host no longer runs it, so it restarts, once.
    flavor.driver.running["a"].discard("vm")
    for _ in range(3):
        beat(c, clock, ("a", "b"), boot="b3")
    assert flavor.driver.where("vm") == [c.placements()["vm"].host]
    assert [e.kind for e in c.query_events(subject="workload/vm")].count("restarted") == 1


@pytest.mark.parametrize("host", [
    {"name": "h1\n", "capacity": {"cpu": 1, "memory": 1}},
    {"name": "a/b", "capacity": {"cpu": 1, "memory": 1}},
    {"name": "h", "capacity": {"cpu": 10**30, "memory": 1}},
    {"name": "h", "capacity": {"cpu": 1, "memory": 1}, "labels": {"rack": "r1\nx"}},
])
def test_malformed_hosts_are_refused_and_nothing_is_written(host: dict[str, Any]) -> None:
    c = Cluster(plugins=Plugins([FakeFlavor("fake")], entry_points=False), clock=FakeClock())
    with pytest.raises(ValidationError):
        c.register_host(host)
    assert c.store.list("hosts/") == [] and c.store.list("credentials/") == []


def test_typed_objects_are_validated_like_dicts() -> None:
    c, _, _ = joined("a")
    with pytest.raises(ValidationError, match="name"):
        c.register_host(Host("a/b", capacity=Resources(1, 1)))
    with pytest.raises(ValidationError, match="name"):
        c.submit(Workload("w\n", "fake"))
    assert c.workloads() == {} and set(c.hosts()) == {"a"}


def test_submit_is_atomic_and_a_taken_name_is_workload_exists() -> None:
    c, _, flavor = joined("a")
    revision = c.store.revision
    with pytest.raises(NoValidHost):
        c.submit({"name": "huge", "flavor": "fake", "requests": {"cpu": 1, "memory": 10**6}})
    assert c.workloads() == {} and c.placements() == {} and c.store.revision == revision
    c.submit({"name": "w", "flavor": "fake", "requests": {"cpu": 1, "memory": 1}})
    with pytest.raises(WorkloadExists):
        c.submit({"name": "w", "flavor": "fake", "requests": {"cpu": 1, "memory": 1}})
    assert flavor.driver.where("w") == ["a"]


def test_an_unguarded_cluster_does_not_reconcile_while_a_manager_leads() -> None:
    store = MemoryStore()
    m = Manager(store, "m1", plugins=Plugins([FakeFlavor("fake")], entry_points=False))
    assert m.step()
    operator = Cluster(store=store, plugins=Plugins([FakeFlavor("fake")], entry_points=False))
    operator.register_host({"name": "h", "capacity": {"cpu": 1, "memory": 1}})
    with pytest.raises(NotLeader, match="m1 leads"):
        operator.step()
    assert operator.controller.step().events == () and operator.host("h").state is HostState.INSTALLING
    m.elector.resign()
    assert operator.step() is not None


def test_a_leader_key_without_a_lease_is_reported_and_can_be_cleared() -> None:
    store = MemoryStore()
    store.put(LEADER_KEY, b"ghost\xff\n")
    out = io.StringIO()
    status(store, out)
    assert "STALE" in out.getvalue() and "clear-leader" in out.getvalue() and "ghost" in out.getvalue()
    m = Manager(store, "m1", plugins=Plugins([FakeFlavor("fake")], entry_points=False))
    assert not m.step()
    from clustercore.leadership import clear_stale

    assert clear_stale(store) is not None
    assert m.step(), "leads once the stale key is gone"
    assert clear_stale(store) is None, "a key on a lease is never cleared"


def bounded(call: Callable[[], object]) -> None:
    """Run ``call``: only success or the typed error, in under 1 s and 100 MB."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        call()
    except ValidationError:
        pass
    finally:
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 100 * 2**20, (elapsed, peak)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(10**30), 10**400) | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=12)
HOST_KEYS = st.sampled_from(["name", "capacity", "labels", "address", "fence_devices", "allocatable", "state",
                             "taints", "location", "facts", "schedulable", "nonsense"])
WORKLOAD_KEYS = st.sampled_from(["name", "flavor", "requests", "ha", "priority", "pinned", "affinity", "spec",
                                 "tolerations", "spread", "nonsense"])
CONFIG_KEYS = st.sampled_from(["policy", "liveness", "fencing", "overcommit", "storage_roots", "call_timeout",
                               "events_retained", "nonsense"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(HOST_KEYS, JSON, max_size=6), st.dictionaries(WORKLOAD_KEYS, JSON, max_size=6),
       st.dictionaries(CONFIG_KEYS, JSON, max_size=4))
def test_every_core_entry_point_gives_an_object_or_a_validation_error(host: dict[str, Any], workload: dict[str, Any],
                                                                     config: dict[str, Any]) -> None:
    bounded(lambda: Host.from_dict({"name": "h", "capacity": {"cpu": 1, "memory": 1}, **host}))
    bounded(lambda: Workload.from_dict({"name": "w", "flavor": "fake", **workload}))
    bounded(lambda: ClusterConfig().merged(config))
    bounded(lambda: HostReport.from_dict(host))




@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["agent", "address", "port", "username", "password", "level", "options",
                                        "nonsense"]), JSON, max_size=6))
def test_a_fence_device_of_any_shape_is_a_device_or_a_validation_error(device: dict[str, Any]) -> None:
    bounded(lambda: FenceDevice.from_dict({"agent": "ipmi", "address": "10.0.0.1", **device}))


SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ganeti-iallocator"


@pytest.mark.skipif(not SAMPLE.exists(), reason="no IAllocator samples")
@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(p.name for p in SAMPLE.glob("*.json")) if SAMPLE.exists() else ["none"]),
       st.sampled_from(["request", "nodes", "instances", "nodegroups", "cluster_tags"]), JSON)
def test_an_iallocator_request_of_any_shape_is_answered_within_bounds(name: str, key: str, value: Any) -> None:
    data = json.loads((SAMPLE / name).read_text())
    data[key] = value
    answers: list[dict[str, Any]] = []
    bounded(lambda: answers.append(answer_text(json.dumps(data))))
    assert set(answers[0]) >= {"success", "info", "result"}
