"""Load-aware placement (issue 20, item 2): measured load weighs, memory pressure filters,
requests stay the floor."""

from __future__ import annotations

from clustercore import Resources, Workload
from clustercore.model import Host, HostState, Placement, PlacementState
from clustercore.scheduling import Scheduler, Snapshot
from clustercore.scheduling.measured import load_aware
from clustercore.scheduling.policies import EVENLY_DISTRIBUTED, POWER_SAVING
from clustercore.statistics import Load

HOSTS = [Host(n, capacity=Resources(8, 16384), state=HostState.UP) for n in ("a", "b", "c")]
NEW = Workload("new", "fake", requests=Resources(1, 1024))


def scheduler(loads: dict[str, Load], policy: object = EVENLY_DISTRIBUTED, placed: dict[str, str] | None = None
              ) -> Scheduler:
    workloads = {w: Workload(w, "fake", requests=Resources(1, 1024)) for w in (placed or {})}
    placements = [Placement(w, h, PlacementState.RUNNING) for w, h in (placed or {}).items()]
    snap = Snapshot.build(HOSTS, workloads, placements)
    filters, weighers = load_aware(loads, policy.name)  # type: ignore[attr-defined]
    return Scheduler(snap, policy, filters, weighers)  # type: ignore[arg-type]


def load(cpu: float, used: float = 1024, available: float = 15360, swap: float = 0) -> Load:
    return Load(cpu, 0.0, used, available, swap)


def test_a_host_busy_beyond_its_requests_is_avoided_and_power_saving_stacks_on_it() -> None:
    loads = {"a": load(0.9), "b": load(0.1), "c": load(0.5)}
    assert scheduler(loads).select(NEW) == "b"
    assert scheduler(loads, POWER_SAVING).select(NEW) == "a"
    assert scheduler({}).select(NEW) in ("a", "b", "c")  # no measures: requests alone (all equal)


def test_requests_are_the_floor_an_idle_host_full_of_requests_is_still_full() -> None:
    placed = {f"w{i}": "b" for i in range(6)}  # b holds 6 CPUs of requests but measures idle
    loads = {"a": load(0.3), "b": load(0.0), "c": load(0.3)}
    assert scheduler(loads, placed=placed).select(NEW) in ("a", "c")


def test_memory_pressure_refuses_a_host_short_of_measured_memory_or_swapping() -> None:
    loads = {"a": load(0.1, used=15872, available=512), "b": load(0.1, swap=64), "c": load(0.9)}
    rows = {r.host: r for r in scheduler(loads).explain(NEW)}
    assert scheduler(loads).select(NEW) == "c"
    assert rows["a"].reason == rows["b"].reason == "memory pressure (measured)"


def test_overcommit_goes_only_into_what_is_measured_idle() -> None:
    """With cpu overcommitted 4:1, requests may reach 32 CPUs on an 8-CPU host, but only
    while the host's measured use plus the request stays within its 8 CPUs."""
    placed = {f"w{i}": "a" for i in range(12)} | {f"v{i}": "b" for i in range(12)}  # 12 CPUs requested on each
    workloads = {w: Workload(w, "fake", requests=Resources(1, 512)) for w in placed}
    snap = Snapshot.build(HOSTS, workloads, [Placement(w, h, PlacementState.RUNNING) for w, h in placed.items()])
    loads = {"a": load(0.95), "b": load(0.25), "c": load(0.0)}
    filters, weighers = load_aware(loads, "evenly_distributed", {"cpu": 4.0})
    rows = {r.host: r for r in Scheduler(snap, EVENLY_DISTRIBUTED, filters, weighers, {"cpu": 4.0}).explain(NEW)}
    assert rows["a"].reason == "no measured headroom for cpu (overcommitted)"  # 7.6 busy + 1 > 8
    assert rows["b"].reason is None and rows["c"].reason is None  # 2 busy + 1: room, though 12 are requested
    assert len(load_aware(loads, "evenly_distributed")[0]) == 1  # no overcommit: no headroom filter
