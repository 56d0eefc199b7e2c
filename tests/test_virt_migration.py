"""Live migration: the policy's pure decisions (hypothesis), the limits, and real
migrations between lab hosts: progress, cancel, and a destination that dies mid-way."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustercore import Host, HostState
from clustercore.driver import WorkloadState
from flavors.virt.driver import LibvirtDriver
from flavors.virt.lab import Lab, domain_type
from flavors.virt.migration import (
    Act,
    Limits,
    MigrationFailed,
    MigrationPolicy,
    Migrator,
    Progress,
    Sample,
    Seen,
    decide,
)
from flavors.virt.spec import Graphics, Memory, VMSpec
from flavors.virt.workload import vm_workload

samples = st.lists(st.tuples(st.floats(0.01, 5.0), st.integers(0, 3), st.integers(0, 2**30)), max_size=60)


def run_policy(policy: MigrationPolicy, steps: list[tuple[float, int, int]], may_post_copy: bool
               ) -> list[tuple[Sample, Act, int | None]]:
    seen, elapsed, iteration, out = Seen(), 0.0, 0, []
    for dt, passes, remaining in steps:
        elapsed += dt
        iteration += passes
        sample = Sample(elapsed, iteration, remaining, 2**30)
        decision, seen = decide(policy, seen, sample, 1024, may_post_copy)
        out.append((sample, decision.act, decision.downtime))
        if decision.act is Act.ABORT:
            break
    return out


@given(samples, st.booleans(), st.booleans())
def test_decisions_follow_the_policy(steps: list[tuple[float, int, int]], post_copy: bool, may: bool) -> None:
    policy = MigrationPolicy(post_copy=post_copy, progress_timeout=20, completion_timeout_per_gib=60)
    out = run_policy(policy, steps, may)
    downtimes = [d for _, act, d in out if act is Act.RAISE_DOWNTIME]
    assert downtimes == sorted(downtimes) and len(set(downtimes)) == len(downtimes)  # only ever raised
    assert all(d in policy.downtime_schedule for d in downtimes)
    if not (post_copy and may):
        assert all(act is not Act.POST_COPY for _, act, _ in out)  # never without leave, never with passthrough
    assert sum(act is Act.POST_COPY for _, act, _ in out) <= 1
    for sample, act, _ in out:
        if act is not Act.ABORT:
            assert sample.elapsed <= 60  # 60 s per GiB of a 1 GiB VM
    if out and out[-1][1] is Act.ABORT:
        assert out[-1][0].elapsed > 20  # aborts only on a timeout


def test_stalled_copy_raises_downtime_then_switches_to_post_copy() -> None:
    policy = MigrationPolicy(downtime_schedule=(100, 300), stall_iterations=2, post_copy=True)
    stalled = [(1.0, 1, 500)] * 6
    acts = [(act, d) for _, act, d in run_policy(policy, stalled, may_post_copy=True)]
    assert (Act.RAISE_DOWNTIME, 300) in acts and acts.index((Act.RAISE_DOWNTIME, 300)) < [
        a for a, _ in acts].index(Act.POST_COPY)
    no_progress = [(10.0, 0, 500)] * 30
    assert run_policy(MigrationPolicy(progress_timeout=50), no_progress, True)[-1][1] is Act.ABORT


def test_limits_cap_per_host_and_in_total() -> None:
    limits = Limits(per_host=1, total=2)
    with limits.slot("a"), limits.slot("b"):
        with pytest.raises(TimeoutError), limits.slot("a", timeout=0.05):
            pass
        with pytest.raises(TimeoutError), limits.slot("c", timeout=0.05):
            pass
        assert limits.active() == {"a": 1, "b": 1}
    assert limits.active() == {}


# --------------------------------------------------------------------------- on the lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(2, base_port=16720) as lab:
        yield lab


def hosts(lab: Lab) -> list[Host]:
    return [Host(h.name, address=h.uri, labels={"virt/migration-uri": "tcp://127.0.0.1"}, state=HostState.UP)
            for h in lab.hosts]


def slow_driver(**policy: object) -> LibvirtDriver:
    """1 MiB/s: a few seconds for a small guest, time to act while it moves."""
    return LibvirtDriver(shutdown_timeout=0.5, migrator=Migrator(MigrationPolicy(bandwidth=1, **policy)))  # type: ignore[arg-type]


def guest(name: str) -> VMSpec:
    return VMSpec(name=name, uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), memory=Memory(128),
                  domain_type=domain_type(), graphics=(Graphics(),))


@pytest.mark.slow
def test_a_migration_reports_progress_and_ends_on_the_target_only(lab: Lab) -> None:
    a, b = hosts(lab)
    driver = slow_driver()
    workload = vm_workload(guest("mover"))
    driver.start(workload, a)
    seen: list[Progress] = []
    driver.migrate(workload, a, b, progress=seen.append)
    # Percent is per copy pass: a pass that re-sends dirtied pages starts low again.
    assert seen and max(p.percent for p in seen) > 50 and all(p.vm == "mover" for p in seen)
    assert [p.iteration for p in seen] == sorted(p.iteration for p in seen)
    assert driver.inspect(workload, b) is WorkloadState.RUNNING
    assert driver.inspect(workload, a) is WorkloadState.ABSENT
    driver.stop(workload, b, force=True)
    driver.close()


@pytest.mark.slow
def test_a_cancelled_migration_leaves_the_vm_on_its_source(lab: Lab) -> None:
    a, b = hosts(lab)
    driver = slow_driver()
    workload = vm_workload(guest("cancelled"))
    driver.start(workload, a)
    cancel = threading.Event()
    with pytest.raises(MigrationFailed, match="cancelled"):
        driver.migrate(workload, a, b, progress=lambda p: cancel.set(), cancel=cancel)
    assert driver.inspect(workload, a) is WorkloadState.RUNNING
    assert driver.inspect(workload, b) is not WorkloadState.RUNNING
    driver.stop(workload, a, force=True)
    driver.close()


@pytest.mark.slow
def test_a_destination_that_dies_mid_migration_leaves_the_vm_running_on_its_source(lab: Lab) -> None:
    a, b = hosts(lab)
    driver = slow_driver()
    workload = vm_workload(guest("survivor"))
    driver.start(workload, a)
    killed = threading.Event()

    def power_cut(progress: Progress) -> None:
        if not killed.is_set():
            killed.set()
            lab.hosts[1].power_off()

    started = time.monotonic()
    with pytest.raises(MigrationFailed) as info:
        driver.migrate(workload, a, b, progress=power_cut)
    assert killed.is_set() and time.monotonic() - started < 60
    assert info.value.source == "lab1" and info.value.target == "lab2"
    assert driver.inspect(workload, a) is WorkloadState.RUNNING
    driver.stop(workload, a, force=True)
    lab.hosts[1].power_on()
    driver.close()
