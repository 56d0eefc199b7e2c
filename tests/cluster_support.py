"""A cluster of Up fake hosts on a fake clock, for tests of the pass."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins
from clustercore.statistics import StatsPolicy
from clustercore.testing import FakeFlavor

REPORT = HostReport(networks=frozenset({"mgmt"}))


def up_cluster(names: Sequence[str], statistics: bool = True) -> tuple[Cluster, FakeClock]:
    """Hosts ``names`` (8 CPUs, 8 GiB, network ``mgmt`` required) registered, beating
    ``REPORT`` and Up after two passes; ``statistics=False`` turns sampling off (it reads
    each host's workloads every interval)."""
    clock = FakeClock()
    config = ClusterConfig(required_networks=frozenset({"mgmt"}))
    if not statistics:
        config = attrs.evolve(config, statistics=StatsPolicy(interval=0))
    cluster = Cluster(plugins=Plugins([FakeFlavor("fake")], entry_points=False), clock=clock, config=config)
    for name in names:
        cluster.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192}})
        cluster.heartbeat(name, REPORT)
    cluster.step()
    cluster.step()
    assert all(h.state is HostState.UP for h in cluster.hosts().values())
    return cluster, clock
