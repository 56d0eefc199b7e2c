"""Rebalancing and power saving on the lab (issue 20), real libvirtd hosts with IPMI BMCs:

* three real guests burning CPU on one host, two idle hosts: the leader measures them
  (libvirt's bulk stats), moves guests by live migration until no host is beyond the
  threshold, then moves nothing more; each guest keeps running intact;
* power saving: three lightly loaded hosts, one is emptied and powered off through its BMC
  (``fence_ipmilan``: a real power cut); a VM that needs the room powers it on through its
  BMC, it rejoins, and the VM is placed there."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import attrs
import pytest

from clustercore import HostState
from clustercore.errors import NoValidHost
from clustercore.rebalance import RebalancePolicy, over
from clustercore.statistics import Load, StatsPolicy
from flavors.virt.guest import GuestImage
from flavors.virt.lab import Lab, domain_type
from flavors.virt.labcluster import FAST, LabCluster
from flavors.virt.spec import Memory, VMSpec
from flavors.virt.workload import vm_workload

pytestmark = pytest.mark.slow
POLICY = RebalancePolicy("evenly_distributed", interval=1, threshold=0.2, hold=3, margin=0.02, batch=1, cooldown=600)


@pytest.fixture
def lab() -> Iterator[Lab]:  # a fresh lab each: a cluster's storage is made on it once
    with Lab(3, base_port=17380, bmc=True) as lab:
        yield lab


def test_busy_guests_on_one_host_are_spread_until_none_is_over_then_nothing_moves(lab: Lab,
                                                                                  image: GuestImage) -> None:
    config = attrs.evolve(FAST, statistics=StatsPolicy(interval=1, alpha=0.5), rebalance=attrs.evolve(POLICY,
                                                                                                        mode="off"))
    lc = LabCluster(lab, config)
    c = lc.cluster
    try:
        lc.up()
        lc.storage(image)
        names = [f"busy{i}" for i in range(3)]
        for name in names:
            lc.guest(name, host="lab1", burn=True)
        lc.until(lambda: all(any("burn cpu" in line for line in lc.lines(n)) for n in names), what="guests burning")
        lc.until(lambda: set(c.controller.stats.loads.get("lab1", Load()).workloads) == set(names), what="measures")
        assert over(c.controller.stats.loads, POLICY.threshold) == {"lab1"}
        c.configure({"rebalance": {"mode": "evenly_distributed"}})
        lc.until(lambda: len({p.host for p in c.placements().values()}) == 3, limit=120, what="one guest per host")
        moved = c.query_events(kind="migrated")
        assert len(moved) == 2 and all("rebalance: measured score" in e.reason for e in moved)
        lc.until(lambda: not over(c.controller.stats.loads, POLICY.threshold) and all(
            set(c.controller.stats.loads[h.name].workloads) == {n for n, p in c.placements().items()
                                                                   if p.host == h.name} for h in lab.hosts),
                 what="balanced measures")
        quiet = time.monotonic()
        lc.until(lambda: time.monotonic() - quiet > 5, what="a quiet spell")  # 5 rounds, each one over nothing
        assert len(c.query_events(kind="migrated")) == 2  # nothing more moved
        lc.check_guest(*names)  # moved, not restarted: each kept running, its disk whole
    finally:
        lc.close()


def test_power_saving_sends_a_light_host_to_standby_through_its_bmc_and_a_vm_needing_room_wakes_it(
        lab: Lab, image: GuestImage) -> None:
    policy = RebalancePolicy("power_saving", interval=1, low=0.3, high=0.9, min_up=2, cooldown=600)
    lc = LabCluster(lab, attrs.evolve(FAST, statistics=StatsPolicy(interval=1, alpha=0.5), rebalance=policy))
    c = lc.cluster
    try:
        lc.up()
        lc.storage(image)
        for i, host in enumerate(lab.hosts):
            lc.guest(f"idle{i}", host=host.name)
        lc.until(lambda: any(c.host(h.name).state is HostState.STANDBY for h in lab.hosts), limit=90,
                 what="a host in Standby")
        off = next(h for h in lab.hosts if c.host(h.name).state is HostState.STANDBY)
        assert not off.running  # powered off for real, through its BMC
        assert off.name not in {p.host for p in c.placements().values()} and len(c.placements()) == 3
        lc.check_guest(*(f"idle{i}" for i in range(3)))  # the one on it moved first, and kept running
        for _ in range(5):
            lc.tick()
        assert sum(c.host(h.name).state is HostState.STANDBY for h in lab.hosts) == 1  # min_up holds
        spec = VMSpec(name="roomy", uuid=str(uuid.uuid4()), memory=Memory(4000), domain_type=domain_type())
        with pytest.raises(NoValidHost):
            c.submit(vm_workload(spec))  # no Up host has 4,000 MiB free: only an empty one
        lc.until(lambda: c.host(off.name).state is HostState.UP, limit=90, what="the Standby host back Up")
        assert off.running and c.submit(vm_workload(spec)).host == off.name
    finally:
        lc.close()
