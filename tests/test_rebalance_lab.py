"""Rebalancing on the lab (issue 20): three real guests burning CPU on one host, two idle
hosts; the leader measures them (libvirt's bulk stats), moves guests by live migration until
no host is beyond the threshold, then moves nothing more. Each guest keeps running intact."""

from __future__ import annotations

import time
from collections.abc import Iterator

import attrs
import pytest

from clustercore.rebalance import RebalancePolicy, over
from clustercore.statistics import Load, StatsPolicy
from flavors.virt.guest import GuestImage
from flavors.virt.lab import Lab
from flavors.virt.labcluster import FAST, LabCluster

pytestmark = pytest.mark.slow
POLICY = RebalancePolicy("evenly_distributed", interval=1, threshold=0.2, hold=3, margin=0.02, batch=1, cooldown=600)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(3, base_port=17380) as lab:
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
        lc.until(lambda: time.monotonic() - quiet > 8, what="a quiet spell")  # 8 rounds, each one over nothing
        assert len(c.query_events(kind="migrated")) == 2  # nothing more moved
        lc.check_guest(*names)  # moved, not restarted: each kept running, its disk whole
    finally:
        lc.close()
