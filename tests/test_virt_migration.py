"""Live migration: the policy's pure decisions (hypothesis), the limits, and real
migrations of the project's real guest between lab hosts: progress, cancel, and a
destination that dies mid-way, each followed by a check of the guest's memory and disk."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import attrs
import libvirt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustercore import ClusterConfig, Host, HostState, Workload
from clustercore.driver import WorkloadState
from flavors.virt.driver import LibvirtDriver
from flavors.virt.guest import GuestImage
from flavors.virt.lab import Lab
from flavors.virt.labcluster import LabCluster
from flavors.virt.migration import (
    PRE_SWITCH_MIB,
    Act,
    Limits,
    MigrationFailed,
    MigrationPolicy,
    Migrator,
    Progress,
    Sample,
    Seen,
    decide,
    flags,
    params,
)

samples = st.lists(st.tuples(st.floats(0.01, 5.0), st.integers(0, 3), st.integers(0, 2**30)), max_size=60)


def run_policy(policy: MigrationPolicy, steps: list[tuple[float, int, int]], may_post_copy: bool,
               memory_mib: int = 1024) -> list[tuple[Sample, Act, int | None]]:
    seen, elapsed, iteration, out = Seen(), 0.0, 0, []
    for dt, passes, remaining in steps:
        elapsed += dt
        iteration += passes
        sample = Sample(elapsed, iteration, remaining, memory_mib * 2**20)
        decision, seen = decide(policy, seen, sample, memory_mib, may_post_copy)
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
    acts = [act for _, act, _ in out]
    switched = acts.index(Act.POST_COPY) if Act.POST_COPY in acts else len(out)
    for sample, act, _ in out[:switched + 1]:
        if act is not Act.ABORT:
            assert sample.elapsed <= 60  # 60 s per GiB of a 1 GiB VM, until post-copy begins
    # Once in post-copy only the destination has the current memory: never aborted, whatever the time.
    assert all(act is Act.CONTINUE for act in acts[switched + 1:])
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


def stalled_guest(memory_mib: int, pass_s: float, dirty_mib: int, passes: int) -> list[tuple[float, int, int]]:
    """Samples of a guest that never converges: each pass re-sends its whole dirty set,
    five samples a pass, the memory left falling from the dirty set towards nothing."""
    steps = [(pass_s / 5, 1 if i % 5 == 0 else 0, (memory_mib if i < 5 else dirty_mib) * 2**20 * (5 - i % 5) // 5)
             for i in range(5 * passes)]
    return steps


def first(out: list[tuple[Sample, Act, int | None]], act: Act) -> Sample:
    return next(sample for sample, a, _ in out if a is act)


def test_default_schedule_reaches_post_copy_before_the_deadline() -> None:
    policy = MigrationPolicy(post_copy=True)
    assert policy.bandwidth == 64  # capped by default
    # 256 MiB dirtying 176 MiB at 64 MiB/s: about 3 s a pass (measured on the lab).
    out = run_policy(policy, stalled_guest(256, 3.0, 176, 60), may_post_copy=True, memory_mib=256)
    raised = [d for _, act, d in out if act is Act.RAISE_DOWNTIME]
    assert raised == list(policy.downtime_schedule[1:])  # every step, in order, before post-copy
    switch = first(out, Act.POST_COPY)
    assert switch.elapsed < policy.completion_timeout(256) / 2 and switch.iteration == 20  # 2 + 2 x 9 passes
    assert all(act is not Act.ABORT for _, act, _ in out)
    # 16 GiB at 64 MiB/s: 4 min a pass, the schedule would outlast the 40 min deadline and the 150 s
    # progress timeout would abort it mid-pass: half of that timeout switches it to post-copy instead.
    out = run_policy(policy, stalled_guest(16384, 240.0, 12000, 12), may_post_copy=True, memory_mib=16384)
    switch = first(out, Act.POST_COPY)
    assert switch.elapsed < policy.completion_timeout(16384) / 2 and out[-1][1] is not Act.ABORT
    without = run_policy(MigrationPolicy(), stalled_guest(16384, 240.0, 12000, 12), True, memory_mib=16384)
    assert without[-1][1] is Act.ABORT and without[-1][0].elapsed > switch.elapsed


def test_without_post_copy_a_stalled_guest_is_aborted_at_the_deadline_only() -> None:
    policy = MigrationPolicy()
    out = run_policy(policy, stalled_guest(256, 3.0, 176, 80), may_post_copy=True, memory_mib=256)
    assert [d for _, act, d in out if act is Act.RAISE_DOWNTIME] == list(policy.downtime_schedule[1:])
    assert out[-1][1] is Act.ABORT and out[-1][0].elapsed > policy.progress_timeout
    assert all(act is not Act.POST_COPY for _, act, _ in out)


def test_post_copy_is_never_aborted() -> None:
    policy = MigrationPolicy(post_copy=True, progress_timeout=10, completion_timeout_per_gib=20)
    seen = attrs.evolve(Seen(), post_copy=True)
    for elapsed in (5.0, 50.0, 5000.0):
        decision, seen = decide(policy, seen, Sample(elapsed, 3, 2**29, 2**30), 1024, True)
        assert decision.act is Act.CONTINUE


def test_a_tcg_guest_goes_post_copy_at_its_first_memory_sample() -> None:
    policy = MigrationPolicy(post_copy=True)
    disks = Sample(0.2, 0, 0, 0, disk_remaining=2**26, disk_total=2**26)  # disks mirrored first
    assert decide(policy, Seen(), disks, 256, True, tcg=True)[0].act is Act.CONTINUE
    memory = Sample(0.4, 1, 2**28, 2**28)
    assert decide(policy, Seen(), memory, 256, True, tcg=True)[0].act is Act.POST_COPY
    assert decide(policy, Seen(), memory, 256, False, tcg=True)[0].act is Act.CONTINUE  # passthrough
    assert decide(policy, Seen(), memory, 256, True, tcg=False)[0].act is Act.CONTINUE
    trusted = MigrationPolicy(post_copy=True, tcg_pre_copy=True)
    assert decide(trusted, Seen(), memory, 256, True, tcg=True)[0].act is Act.CONTINUE


def test_disk_copy_is_progress_and_the_memory_copy_restarts_the_clock() -> None:
    policy = MigrationPolicy(progress_timeout=10)
    seen = Seen()
    for t, left in ((1.0, 900), (6.0, 500), (12.0, 100)):  # disks shrinking: no abort at 12 s
        decision, seen = decide(policy, seen, Sample(t, 0, 0, 0, disk_remaining=left, disk_total=1000), 1024, True)
        assert decision.act is Act.CONTINUE
    decision, seen = decide(policy, seen, Sample(13.0, 1, 800, 1000), 1024, True)  # memory: more left than disks
    assert decision.act is Act.CONTINUE and seen.memory and seen.best_at == 13.0
    assert decide(policy, seen, Sample(24.0, 1, 900, 1000), 1024, True)[0].act is Act.ABORT


def test_flags_and_params_for_storage_migration() -> None:
    policy = MigrationPolicy()
    plain = flags(policy, True)
    assert plain & libvirt.VIR_MIGRATE_LIVE and not plain & (libvirt.VIR_MIGRATE_NON_SHARED_DISK
                                                           | libvirt.VIR_MIGRATE_NON_SHARED_INC
                                                           | libvirt.VIR_MIGRATE_UNSAFE | libvirt.VIR_MIGRATE_POSTCOPY)
    full = flags(policy, True, ("vda",))
    assert full & libvirt.VIR_MIGRATE_NON_SHARED_DISK and not full & libvirt.VIR_MIGRATE_NON_SHARED_INC
    inc = flags(policy, True, ("vda", "vdb"), incremental=True, shared_disks=True)
    assert inc & libvirt.VIR_MIGRATE_NON_SHARED_INC and inc & libvirt.VIR_MIGRATE_UNSAFE
    assert not inc & libvirt.VIR_MIGRATE_NON_SHARED_DISK
    assert not flags(policy, True, live=False) & libvirt.VIR_MIGRATE_LIVE
    assert flags(MigrationPolicy(post_copy=True), True) & libvirt.VIR_MIGRATE_POSTCOPY
    assert not flags(MigrationPolicy(post_copy=True), False) & libvirt.VIR_MIGRATE_POSTCOPY
    assert params(policy, "tcp://127.0.0.1", ("vda", "vdb")) == {
        libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1", libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 64,
        libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda", "vdb"]}
    assert libvirt.VIR_MIGRATE_PARAM_BANDWIDTH not in params(MigrationPolicy(bandwidth=None), None)
    at_once = params(MigrationPolicy(post_copy=True), None, post_copy_at_once=True)
    assert at_once == {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: PRE_SWITCH_MIB,
                       libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY: 64}
    assert params(MigrationPolicy(post_copy=True, bandwidth=None), None, post_copy_at_once=True) == {
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: PRE_SWITCH_MIB}
    assert params(policy, None, ("vda",), post_copy_at_once=True)[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 64
    for bad in (("vda", "vda"), ("",), ("../x",), ("VDA",)):
        with pytest.raises(ValueError):
            flags(policy, True, bad)
    with pytest.raises(ValueError, match="incremental"):
        flags(policy, True, (), incremental=True)


class FakeDomain:
    """Just enough of a virDomain for the Migrator: scripted job samples, a migration
    that ends when told, and a record of what was called."""

    def __init__(self, samples: list[dict[str, int]], kind: str = "qemu", refuse_post_copy: int = 0,
                 abort_too_late: bool = False) -> None:
        self.samples, self.kind, self.refuse_post_copy = list(samples), kind, refuse_post_copy
        self.abort_too_late = abort_too_late  # libvirt had begun the switch: the abort is ignored
        self.calls: list[str] = []
        self.flags = 0
        self.done = threading.Event()
        self.aborted = False

    def XMLDesc(self, flags: int = 0) -> str:
        return f"<domain type='{self.kind}'><name>fake</name></domain>"

    def blockInfo(self, dev: str) -> list[int]:
        return [64 * 2**20, 0, 0]

    def migrate3(self, dest: object, params: dict[str, object], flags: int) -> None:
        self.flags = flags
        self.done.wait(10)
        if self.aborted:
            raise libvirt.libvirtError("operation aborted: migration out job: canceled by client")

    def migrateSetMaxDowntime(self, ms: int, flags: int = 0) -> None:
        self.calls.append(f"downtime {ms}")

    def migrateStartPostCopy(self, flags: int = 0) -> None:
        if self.refuse_post_copy:
            self.refuse_post_copy -= 1
            self.calls.append("post-copy refused")
            raise libvirt.libvirtError("not yet")
        self.calls.append("post-copy")

    def abortJob(self) -> None:
        self.calls.append("abort")
        self.aborted = not self.abort_too_late
        self.done.set()

    def jobStats(self, flags: int = 0) -> dict[str, int]:
        if not self.samples:
            self.done.set()
            return {"type": libvirt.VIR_DOMAIN_JOB_NONE}
        return {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, **self.samples.pop(0)}


def memory_samples(n: int) -> list[dict[str, int]]:
    return [{"memory_iteration": 1 + i // 3, "memory_remaining": 2**27, "memory_total": 2**28} for i in range(n)]


def test_migrator_takes_a_tcg_guest_post_copy_at_once_and_never_aborts_it() -> None:
    dom = FakeDomain(memory_samples(30), refuse_post_copy=1)
    cancel = threading.Event()
    seen: list[Progress] = []

    def report(p: Progress) -> None:
        seen.append(p)
        if p.post_copy:
            cancel.set()  # too late: the source no longer has a consistent copy

    # The memory left never shrinks: without post-copy the 0.05 s progress timeout would abort.
    samples = Migrator(MigrationPolicy(post_copy=True, poll=0.01, progress_timeout=0.05)).migrate(
        dom, None, vm="fake", source="a", target="b", memory_mib=256, passthrough=False,  # type: ignore[arg-type]
        progress=report, cancel=cancel)
    assert dom.calls == ["downtime 100", "post-copy refused", "post-copy"]  # retried, never aborted
    assert dom.flags & libvirt.VIR_MIGRATE_LIVE and dom.flags & libvirt.VIR_MIGRATE_POSTCOPY
    assert len(samples) == 30 and seen[-1].post_copy and not seen[0].post_copy
    assert samples[-1].elapsed > 0.05


def test_migrator_pauses_a_tcg_guest_without_post_copy_and_copies_disks() -> None:
    dom = FakeDomain(memory_samples(5))
    Migrator(MigrationPolicy(poll=0.01)).migrate(dom, None, vm="fake", source="a", target="b",  # type: ignore[arg-type]
                                                 memory_mib=256, passthrough=False, copy_disks=("vda",))
    assert not dom.flags & libvirt.VIR_MIGRATE_LIVE and dom.flags & libvirt.VIR_MIGRATE_NON_SHARED_DISK
    dom = FakeDomain(memory_samples(5), kind="kvm")
    Migrator(MigrationPolicy(poll=0.01, post_copy=True)).migrate(
        dom, None, vm="fake", source="a", target="b", memory_mib=256, passthrough=False)  # type: ignore[arg-type]
    assert dom.flags & libvirt.VIR_MIGRATE_LIVE and "post-copy" not in dom.calls  # KVM: the schedule, no haste
    dom = FakeDomain(memory_samples(500), kind="kvm")
    with pytest.raises(MigrationFailed, match="not complete") as failed:
        Migrator(MigrationPolicy(poll=0.001, completion_timeout_per_gib=0.05)).migrate(
            dom, None, vm="fake", source="a", target="b", memory_mib=256, passthrough=False)  # type: ignore[arg-type]
    assert "abort" in dom.calls and not failed.value.post_copy


def test_an_abort_that_comes_too_late_is_a_completed_migration() -> None:
    """libvirt ignores an abort once it has begun the switch (the migration then completes,
    the VM runs on the target): the Migrator reports what happened, not what it asked for."""
    dom = FakeDomain(memory_samples(500), kind="kvm", abort_too_late=True)
    samples = Migrator(MigrationPolicy(poll=0.001, completion_timeout_per_gib=0.05)).migrate(
        dom, None, vm="fake", source="a", target="b", memory_mib=256, passthrough=False)  # type: ignore[arg-type]
    assert "abort" in dom.calls and samples
    cancel = threading.Event()
    cancel.set()
    dom = FakeDomain(memory_samples(500), kind="kvm", abort_too_late=True)
    Migrator(MigrationPolicy(poll=0.001)).migrate(dom, None, vm="fake", source="a", target="b", memory_mib=256,
                                                  passthrough=False, cancel=cancel)  # type: ignore[arg-type]
    assert dom.calls[-1] == "abort"


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
# The project's real guest (TCG, 160 MiB, dirtying 16 MiB and writing its counter to a
# clone on the lab's shared domain), made by a LabCluster as an operator makes a VM; the
# driver under test then moves it itself, behind the cluster's back (nothing the cluster
# does here asks the hosts where its VMs run). After every migration, and every one that
# failed, the guest's memory, disk and life are checked (LabCluster.check_guest).


@pytest.fixture(scope="module")
def lc(image: GuestImage) -> Iterator[LabCluster]:
    with Lab(2, base_port=16720) as lab:
        cluster = LabCluster(lab, ClusterConfig())  # default timings: nothing here is timed
        try:
            cluster.up()
            cluster.storage(image)
            yield cluster
        finally:
            cluster.close()


def hosts(lab: Lab) -> list[Host]:
    return [Host(h.name, address=h.uri, labels={"virt/migration-uri": "tcp://127.0.0.1"}, state=HostState.UP)
            for h in lab.hosts]


def slow_driver(lc: LabCluster, **policy: object) -> LibvirtDriver:
    """16 MiB/s: a few seconds for the real guest (paused for its copy: TCG), time to act while it moves."""
    return LibvirtDriver(shutdown_timeout=0.5, migrator=Migrator(MigrationPolicy(bandwidth=16, **policy)),  # type: ignore[arg-type]
                         storage_roots=[str(lc.lab.shared)])


@contextlib.contextmanager
def guest(lc: LabCluster, name: str) -> Iterator[Workload]:
    """A real guest on lab1, booted (its workload as the cluster completed it); deleted after."""
    lc.guest(name, host="lab1", ha=False, dirty_mib=16)
    try:
        lc.wait_booted(name)
        yield lc.cluster.workloads()[name]
    finally:
        lc.cluster.delete(name)


@pytest.mark.slow
def test_a_migration_reports_progress_and_ends_on_the_target_only(lc: LabCluster) -> None:
    a, b = hosts(lc.lab)
    driver = slow_driver(lc)
    with guest(lc, "mover") as workload:
        seen: list[Progress] = []
        driver.migrate(workload, a, b, progress=seen.append)
        # Percent is per copy pass: a pass that re-sends dirtied pages starts low again.
        assert seen and max(p.percent for p in seen) > 50 and all(p.vm == "mover" for p in seen)
        assert [p.iteration for p in seen] == sorted(p.iteration for p in seen)
        assert driver.inspect(workload, b) is WorkloadState.RUNNING
        assert driver.inspect(workload, a) is WorkloadState.ABSENT
        assert lc.running_once(["mover"]) == {"mover": "lab2"}
        lc.check_guest("mover")
        driver.stop(workload, b, force=True)
    driver.close()


@pytest.mark.slow
def test_a_cancelled_migration_leaves_the_vm_on_its_source(lc: LabCluster) -> None:
    a, b = hosts(lc.lab)
    driver = slow_driver(lc)
    with guest(lc, "cancelled") as workload:
        cancel = threading.Event()
        with pytest.raises(MigrationFailed, match="cancelled"):
            driver.migrate(workload, a, b, progress=lambda p: cancel.set(), cancel=cancel)
        assert driver.inspect(workload, a) is WorkloadState.RUNNING
        assert driver.inspect(workload, b) is not WorkloadState.RUNNING
        lc.check_guest("cancelled")
        driver.stop(workload, a, force=True)
    driver.close()


@pytest.mark.slow
def test_a_destination_that_dies_mid_migration_leaves_the_vm_running_on_its_source(lc: LabCluster) -> None:
    a, b = hosts(lc.lab)
    driver = slow_driver(lc)
    with guest(lc, "survivor") as workload:
        killed = threading.Event()

        def power_cut(progress: Progress) -> None:
            if not killed.is_set():
                killed.set()
                lc.lab.hosts[1].power_off()

        started = time.monotonic()
        try:
            with pytest.raises(MigrationFailed) as info:
                driver.migrate(workload, a, b, progress=power_cut)
            assert killed.is_set() and time.monotonic() - started < 60
            assert info.value.source == "lab1" and info.value.target == "lab2"
            assert driver.inspect(workload, a) is WorkloadState.RUNNING
            lc.check_guest("survivor")
            driver.stop(workload, a, force=True)
        finally:
            lc.lab.hosts[1].power_on()
    driver.close()
