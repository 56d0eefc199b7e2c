"""Fencing on real lab hosts: libvirtd + QEMU guests, an IPMI BMC per host (pyghmi's BMC
server), ClusterLabs' ``fence_ipmilan`` over lanplus, real power cuts. Heartbeats come
from polling each host's libvirtd, as oVirt's engine polls VDSM; the clock is the
system's, with aggressive timings so a recovery takes seconds."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from clustercore import Cluster, ClusterConfig, HostReport, HostState, Plugins
from clustercore.fencing import FencePolicy, IpmiAgent
from clustercore.lifecycle import LivenessPolicy
from clustercore.model import FenceDevice
from flavors.virt import VirtFlavor
from flavors.virt.driver import LibvirtDriver
from flavors.virt.lab import Lab, LabHost, domain_type
from flavors.virt.spec import Memory, VMSpec
from flavors.virt.workload import vm_workload

pytestmark = pytest.mark.slow
S = HostState

FAST = ClusterConfig(
    liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2, grace_per_workload=0),
    fencing=FencePolicy(startup_grace=0, soft_wait=8, retries=0, retry_delay=1, confirm_timeout=10, backoff=5))


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(3, base_port=16760, bmc=True) as lab:
        yield lab


class Harness:
    def __init__(self, lab: Lab, config: ClusterConfig = FAST, passwords: dict[str, str] | None = None,
                 device: Callable[[LabHost], dict[str, Any]] | None = None) -> None:
        """Each host's fence device: ``device(host)``, or its IPMI BMC (``fence_ipmilan``,
        with ``passwords`` where given)."""
        self.lab = lab
        self.pool = ThreadPoolExecutor(4)
        self.pollers = ThreadPoolExecutor(4)
        self.driver = LibvirtDriver(shutdown_timeout=0.5)
        self.cluster = Cluster(plugins=Plugins([VirtFlavor(self.driver, soft_fence=lab.soft_fence)],
                                               entry_points=False), config=config, executor=self.pool)
        bmcs = lab.bmcs
        for host in lab.hosts:
            password = (passwords or {}).get(host.name)
            assert device is not None or bmcs is not None
            found = device(host) if device is not None else bmcs.device(host, password=password)  # type: ignore[union-attr]
            self.cluster.register_host({"name": host.name, "address": host.uri, "capacity": {"cpu": 8, "memory": 4096},
                                        "fence_devices": [found]})

    def tick(self) -> None:
        """Poll every host at once (a heartbeat when its libvirtd answers: a silent one costs
        its timeout, not the others'), then one reconcile pass."""
        hosts = [self.cluster.host(name) for name in self.cluster.hosts()]
        for host, answered in zip(hosts, self.pollers.map(lambda h: self.driver.answers(h, timeout=1), hosts),
                                  strict=True):
            if answered:
                self.cluster.heartbeat(host.name, HostReport())
        self.cluster.step()
        time.sleep(0.2)

    def until(self, done: Callable[[], bool], limit: float = 90.0) -> float:
        start = time.monotonic()
        while not done():
            if time.monotonic() - start > limit:
                raise AssertionError(f"not reached in {limit} s: {self.cluster.query_events()[-6:]}")
            self.tick()
        return time.monotonic() - start

    def up(self, *names: str) -> None:
        self.until(lambda: all(self.cluster.host(n).state is S.UP for n in names))

    def guests(self, n: int, ha: bool = True) -> list[str]:
        names = []
        for i in range(n):
            spec = VMSpec(name=f"f{i}", uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"fence-f{i}")), memory=Memory(64),
                          domain_type=domain_type())
            self.cluster.submit(vm_workload(spec, ha=ha, priority=i))
            names.append(spec.name)
        return names

    def libvirt_runs(self) -> dict[str, list[str]]:
        return self.lab.libvirt_runs()

    def running_once(self, names: list[str]) -> dict[str, str]:
        """Where each guest runs according to libvirt; each runs on exactly one host."""
        runs = self.libvirt_runs()
        counts = Counter(g for guests in runs.values() for g in guests)
        assert all(counts[n] <= 1 for n in names), counts
        return {g: h for h, guests in runs.items() for g in guests if g in names}

    def close(self) -> None:
        for host in self.lab.hosts:
            host.heal()
        for name in list(self.cluster.placements()):
            with contextlib.suppress(Exception):
                self.cluster.stop(name, force=True)
        self.pool.shutdown()
        self.pollers.shutdown()
        self.driver.close()


def setup_with_guests_on_lab2(lab: Lab, **kwargs: object) -> tuple[Harness, list[str]]:
    h = Harness(lab, **kwargs)  # type: ignore[arg-type]
    h.up("lab1", "lab2", "lab3")
    for other in ("lab1", "lab3"):
        h.cluster.start_maintenance(other)
    h.until(lambda: all(h.cluster.host(n).state is S.MAINTENANCE for n in ("lab1", "lab3")))
    names = h.guests(3)
    for other in ("lab1", "lab3"):
        h.cluster.activate_host(other)
    h.up("lab1", "lab3")
    assert set(h.running_once(names).values()) == {"lab2"}
    return h, names


@pytest.fixture
def powered(lab: Lab) -> Iterator[Lab]:
    for host in lab.hosts:
        host.power_on()
        host.heal()
    assert lab.bmcs is not None
    for host in lab.hosts:
        lab.bmcs.silence(host.name, False)
    yield lab


def test_an_unreachable_host_is_fenced_by_fence_ipmilan_and_its_ha_guests_run_elsewhere(powered: Lab) -> None:
    h, names = setup_with_guests_on_lab2(powered)
    try:
        qemu_before = powered.host("lab2").pids("qemu-system-x86")
        assert len(qemu_before) == 3
        powered.host("lab2").cut_network()  # guests still run there; nothing answers
        took = h.until(lambda: set(h.running_once(names).values()) <= {"lab1", "lab3"}
                       and len(h.running_once(names)) == 3)
        assert not powered.host("lab2").running  # powered off for real by its BMC
        assert h.cluster.host("lab2").state is S.DOWN
        fenced = h.cluster.query_events(subject="host/lab2", kind="fenced")
        assert len(fenced) == 1 and "fence_ipmilan@127.0.0.1: status off" in fenced[0].reason
        restarted = h.cluster.query_events(kind="restarted")
        assert sorted(e.subject for e in restarted) == [f"workload/{n}" for n in names]
        assert [e.subject for e in restarted] == [f"workload/{n}" for n in reversed(names)]  # by priority
        assert all(e.old == "lab2" and e.time >= fenced[0].time for e in restarted)
        assert {p.host for p in h.cluster.placements().values()} <= {"lab1", "lab3"}
        print(f"\nlab2 cut -> its 3 HA guests running on lab1/lab3 again in {took:.1f} s")
        # Powered on again through the BMC (pyghmi this time): it comes back empty and Up.
        device = FenceDevice.from_dict(powered.bmcs.device(powered.host("lab2"), agent="ipmi"))  # type: ignore[union-attr]
        IpmiAgent().power(device, "on", 20)
        h.up("lab2")
        assert powered.host("lab2").pids("qemu-system-x86") == []
        assert len(h.running_once(names)) == 3
    finally:
        h.close()


def test_a_hung_libvirtd_is_revived_by_a_soft_fence_without_touching_the_guests(powered: Lab) -> None:
    h, names = setup_with_guests_on_lab2(powered)
    try:
        qemu_before = sorted(powered.host("lab2").pids("qemu-system-x86"))
        powered.host("lab2").hang()
        h.until(lambda: bool(h.cluster.query_events(subject="host/lab2", kind="soft-fence")))
        h.up("lab2")
        assert sorted(powered.host("lab2").pids("qemu-system-x86")) == qemu_before  # same QEMU processes
        assert h.running_once(names) == dict.fromkeys(names, "lab2")
        assert not h.cluster.query_events(subject="host/lab2", kind="fence")
        assert powered.host("lab2").running
    finally:
        h.close()


def test_two_of_three_unreachable_is_a_storm_nothing_is_fenced(powered: Lab) -> None:
    h, names = setup_with_guests_on_lab2(powered)
    try:
        powered.host("lab2").cut_network()
        powered.host("lab3").cut_network()
        h.until(lambda: h.cluster.host("lab2").state is S.NON_RESPONSIVE and
                h.cluster.host("lab3").state is S.NON_RESPONSIVE)
        for _ in range(15):  # well past the soft wait and the fencing it would allow
            h.tick()
        assert powered.host("lab2").running and powered.host("lab3").running
        skipped = h.cluster.query_events(subject="host/lab2", kind="fence-skipped")
        assert any("2 of 3 hosts unreachable" in e.reason for e in skipped), skipped
        assert not h.cluster.query_events(kind="fence") and not h.cluster.query_events(kind="restarted")
        powered.host("lab2").heal()
        powered.host("lab3").heal()
        h.up("lab2", "lab3")
        assert h.running_once(names) == dict.fromkeys(names, "lab2")
    finally:
        h.close()


def test_a_bmc_refusing_fails_fencing_and_an_operator_confirms(powered: Lab) -> None:
    h, names = setup_with_guests_on_lab2(powered, passwords={"lab2": "wrong-password"})
    try:
        powered.host("lab2").cut_network()
        h.until(lambda: bool(h.cluster.query_events(subject="host/lab2", kind="fence-failed")))
        failed = h.cluster.query_events(subject="host/lab2", kind="fence-failed")[0]
        assert "fencing lab2 failed" in failed.reason and "fence_ipmilan off" in failed.reason, failed.reason
        assert "wrong-password" not in failed.reason and powered.bmcs.password not in failed.reason  # type: ignore[union-attr]
        for _ in range(5):
            h.tick()
        assert h.cluster.host("lab2").state in (S.NON_RESPONSIVE, S.FENCING)
        assert powered.host("lab2").running  # still on: the guests must not start elsewhere
        assert not h.cluster.query_events(kind="restarted")
        assert {p.host for p in h.cluster.placements().values()} == {"lab2"}
        # The operator pulls the plug and says so.
        powered.host("lab2").power_off()
        h.until(lambda: h.cluster.host("lab2").state is S.NON_RESPONSIVE)
        h.cluster.confirm_down("lab2")
        h.until(lambda: len(h.running_once(names)) == 3)
        assert set(h.running_once(names).values()) <= {"lab1", "lab3"}
        # A BMC that never answers fails fencing too: tests/test_fencing_etcd_lab.py (then the host's watchdog).
    finally:
        h.close()
