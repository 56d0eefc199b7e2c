"""Issue 15's acceptance on the lab: three real libvirtd hosts with IPMI BMCs, the cluster's
shared and local storage as libvirt pools, disk leases (virtlockd), the logical network as
a lab switch, and the project's real Linux guest (TCG) writing its counter to its disk,
dirtying and checking its memory, pinging its peer. Everything goes through the cluster
as an operator drives it (volumes, submit, migrate, power cuts answered by fencing)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustercore.model import HostState, NonOperationalReason, PlacementState
from flavors.virt.driver import VirtError
from flavors.virt.guest import GuestImage
from flavors.virt.lab import Lab
from flavors.virt.labcluster import SHARED, LabCluster

pytestmark = pytest.mark.slow
S = HostState


@pytest.fixture(scope="module")
def lc(image: GuestImage) -> Iterator[LabCluster]:
    with Lab(3, base_port=17100, bmc=True) as lab:
        cluster = LabCluster(lab)
        try:
            cluster.up()
            cluster.storage(image)
            yield cluster
        finally:
            cluster.close()


@pytest.fixture
def guests(lc: LabCluster) -> Iterator[list[str]]:
    """The names of the guests a test makes; deleted (with their disks) afterwards, and
    every lab host powered on and Up again."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(Exception):
            lc.cluster.delete(name)
    for host in lc.lab.hosts:
        host.heal()
        if not host.running:
            host.power_on()
    for name in lc.cluster.hosts():  # a Down host powered on comes back by its heartbeats
        if lc.cluster.host(name).state is S.MAINTENANCE:
            lc.cluster.activate_host(name)
    lc.up()


def test_a_shared_disk_vm_moves_twice_is_leased_and_survives_its_hosts_power_cut(
        lc: LabCluster, guests: list[str]) -> None:
    guests.append("ha1")
    lc.guest("ha1", host="lab1", dirty_mib=16)
    lc.wait_ticks("ha1", 3)
    for target in ("lab2", "lab3"):
        assert lc.cluster.migrate("ha1", target).host == target
        assert lc.running_once(["ha1"]) == {"ha1": target}
        lc.check_guest("ha1")  # memory (no page lost), disk (counter file whole), still ticking
    # Every other guard failing (a second start of the same disk elsewhere): the lease refuses.
    workload = lc.cluster.workloads()["ha1"]
    before = lc.cluster.placements()["ha1"]
    with pytest.raises(VirtError, match=r"(?i)lock"):
        lc.driver.start(workload, lc.cluster.host("lab1"))
    assert lc.cluster.placements()["ha1"] == before and "ha1" not in lc.lab.host("lab1").active_domains()
    assert lc.running_once(["ha1"]) == {"ha1": "lab3"}
    said = lc.ticks("ha1")[-1]
    lc.lab.host("lab3").power_off()  # a power cut: fenced through its BMC, the VM restarted elsewhere
    lc.until(lambda: lc.cluster.host("lab3").state is S.DOWN, 60, "lab3 fenced")
    lc.until(lambda: lc.cluster.placements().get("ha1") is not None
             and lc.cluster.placements()["ha1"].state is PlacementState.RUNNING, 60, "ha1 restarted")
    assert lc.running_once(["ha1"])["ha1"] in ("lab1", "lab2")
    lc.until(lambda: lc.ticks("ha1")[-1] > said + 1, 60, "ticks after the restart")
    values = lc.counter_intact("ha1")
    assert values[-1] > said  # every value written before the cut is there, and it continues
    assert any(line.startswith("counter counter continues after") for line in lc.lines("ha1"))


def test_a_local_disk_vm_migrates_with_its_storage_and_is_never_restarted_elsewhere(
        lc: LabCluster, guests: list[str]) -> None:
    guests.append("loc1")
    lc.guest("loc1", host="lab1", local=True, dirty_mib=16)
    lc.wait_ticks("loc1", 3)
    source_file = lc.disk_file("loc1")
    assert source_file.exists() and source_file.is_relative_to(lc.lab.host("lab1").local_dir)
    assert lc.cluster.migrate("loc1", "lab2").host == "lab2"
    assert lc.cluster.volumes()["loc1-disk"].host == "lab2" and not source_file.exists()
    assert lc.disk_file("loc1").is_relative_to(lc.lab.host("lab2").local_dir)
    lc.check_guest("loc1")
    lc.lab.host("lab2").power_off()
    lc.until(lambda: lc.cluster.host("lab2").state is S.DOWN, 60, "lab2 fenced")
    lc.until(lambda: bool(lc.cluster.query_events(kind="ha-blocked")), 30, "ha-blocked")
    placement = lc.cluster.placements()["loc1"]
    assert placement.state is PlacementState.FAILED and placement.host == "lab2"
    blocked = [e for e in lc.cluster.query_events(kind="ha-blocked") if e.subject == "workload/loc1"]
    assert blocked and "local domain" in blocked[-1].reason
    assert lc.running_once(["loc1"]) == {}


def test_a_host_that_loses_the_shared_storage_is_non_operational_evacuated_and_back(
        lc: LabCluster, guests: list[str]) -> None:
    """st2 (a whole local disk) leaves by storage migration; st1's disk is on the lost
    domain itself: a migration would fail at the switch (QEMU reopens the image there, the
    lease daemon too) and leave it paused, so it is not tried: st1 runs on where it is,
    writing through its open disk."""
    guests.extend(["st1", "st2"])
    lc.guest("st1", host="lab1")
    lc.guest("st2", host="lab1", local=True, copy=True, dirty_mib=16)
    lc.wait_ticks("st2", 2)
    lab1 = lc.lab.host("lab1")
    domain = str(lc.lab.shared / "domain")
    lab1.lose_path(domain)  # lab1's mount of the shared domain is gone (its QEMU keeps its open disk)
    try:
        lc.until(lambda: lc.cluster.host("lab1").state is S.NON_OPERATIONAL, 30, "lab1 NonOperational")
        host = lc.cluster.host("lab1")
        assert host.non_operational is NonOperationalReason.STORAGE_UNREACHABLE and SHARED in host.reason
        lc.until(lambda: lc.cluster.placements()["st2"].host in ("lab2", "lab3")
                 and lc.cluster.placements()["st2"].state is PlacementState.RUNNING, 90, "st2 evacuated")
        assert lc.cluster.volumes()["st2-disk"].host == lc.running_once(["st2"])["st2"]
        stranded = lc.cluster.query_events(kind="not-evacuated")
        assert [e.subject for e in stranded] == ["workload/st1"] and SHARED in stranded[0].reason
        assert not [e for e in lc.cluster.query_events(kind="migration-failed") if e.subject == "workload/st1"]
        assert lc.running_once(["st1", "st2"])["st1"] == "lab1" and lc.cluster.placements()["st1"].host == "lab1"
        lc.wait_ticks("st1", 2)
        lc.check_guest("st2")  # evacuated by a storage migration: memory, disk, ticking
    finally:
        lab1.restore_path(domain)
    lc.until(lambda: lc.cluster.host("lab1").state is S.UP, 30, "lab1 Up again")
    lc.counter_intact("st1")


def test_two_vms_on_two_hosts_ping_over_the_logical_network_also_after_a_migration(
        lc: LabCluster, guests: list[str]) -> None:
    guests.extend(["n1", "n2"])
    lc.guest("n1", host="lab1", ip="10.15.0.1/24", ping="10.15.0.2", ha=False, dirty_mib=16)
    lc.guest("n2", host="lab2", ip="10.15.0.2/24", ping="10.15.0.1", ha=False)
    assert lc.cluster.workloads()["n1"].networks == {"lan"}

    def answered(name: str, after: int) -> bool:
        return any(lc.pings(name)[after:])

    lc.until(lambda: answered("n1", 0) and answered("n2", 0), 60, "pings both ways")
    seen = len(lc.pings("n1"))
    assert lc.cluster.migrate("n1", "lab3").host == "lab3"
    lc.until(lambda: sum(lc.pings("n1")[seen:]) >= 3, 60, "pings from n1 after its migration")
    assert lc.running_once(["n1", "n2"]) == {"n1": "lab3", "n2": "lab2"}
    lc.check_guest("n1")


def test_the_guest_files_are_where_the_cluster_says(lc: LabCluster) -> None:
    """The template was uploaded through libvirt into the shared domain's pool."""
    template = Path(lc.lab.shared / "domain" / "guest.qcow2")
    assert template.exists() and template.stat().st_size > 0
    assert (lc.lab.shared / "domain" / "clustercore-domain.meta").exists()


def test_a_hung_host_whose_guest_still_holds_its_disk_lease_is_not_fenced(
        lc: LabCluster, guests: list[str]) -> None:
    """The lease as oVirt uses it: lab1's libvirtd stops answering (no heartbeats), but its
    guest's QEMU still holds the lease on its disk on the shared domain: the host is alive,
    so it is neither soft- nor hard-fenced and the guest is not started elsewhere."""
    guests.append("w1")
    fenced_before = len(lc.cluster.query_events(kind="fence")) + len(lc.cluster.query_events(kind="soft-fence"))
    lc.guest("w1", host="lab1")
    lc.wait_ticks("w1", 2)
    lab1 = lc.lab.host("lab1")
    lab1.hang()
    try:
        lc.until(lambda: lc.cluster.host("lab1").state is S.NON_RESPONSIVE, 30, "lab1 NonResponsive")
        lc.until(lambda: bool(lc.cluster.query_events(kind="fence-skipped")), 30, "a fencing decision")
        skipped = [e for e in lc.cluster.query_events(kind="fence-skipped") if e.subject == "host/lab1"]
        assert skipped and "liveness witness" in skipped[-1].reason
        for _ in range(10):
            lc.tick()
        assert lc.cluster.host("lab1").state is S.NON_RESPONSIVE
        # none during this test (earlier tests of the module fenced lab2 and lab3)
        assert len(lc.cluster.query_events(kind="fence")) + len(lc.cluster.query_events(kind="soft-fence")) \
            == fenced_before, lc.cluster.query_events(kind="fence")[-3:]
        assert lab1.qemu_guests() == ["w1"] and lc.cluster.placements()["w1"].host == "lab1"
        assert all("w1" not in lc.lab.host(h).active_domains() for h in ("lab2", "lab3"))
    finally:
        lab1.heal()
    lc.until(lambda: lc.cluster.host("lab1").state is S.UP, 30, "lab1 Up again")
    lc.wait_ticks("w1", 2)
    lc.counter_intact("w1")
