"""Power saving (issue 20): a lightly loaded cluster empties a host, powers it off through
its BMC and keeps it Standby; a workload that finds no room wakes it, it rejoins, and the
workload is placed there. N+1 and ``min_up`` always hold. A simulated cluster (fake
flavor, fake clock, BMCs as objects: the pure logic; the lab's BMCs are in the lab tests)."""

from __future__ import annotations

import attrs

from clustercore import Cluster, ClusterConfig, FakeClock, HostState, Plugins, Resources, Workload
from clustercore.errors import NoValidHost
from clustercore.model import FenceDevice
from clustercore.rebalance import RebalancePolicy
from clustercore.statistics import StatsPolicy
from clustercore.testing import FakeFlavor

S = HostState
POLICY = RebalancePolicy("power_saving", interval=10, low=0.2, high=0.75, min_up=2)


@attrs.define
class Bmcs:
    """Each host's power, switched by ``power`` as a fence agent would."""

    powered: dict[str, bool]
    actions: list[tuple[str, str]] = attrs.field(factory=list)

    def power(self, device: FenceDevice, action: str, timeout: float) -> str:
        host = device.address.removeprefix("bmc-")
        if action == "status":
            return "on" if self.powered[host] else "off"
        self.actions.append((host, action))
        self.powered[host] = action == "on"
        return ""


def simulated(ha: bool = False, memory: int = 512) -> tuple[Cluster, FakeFlavor, FakeClock, Bmcs]:
    """Three hosts (4 CPUs, 4 GiB), one workload on each using 0.3 CPU and 256 MiB."""
    clock = FakeClock()
    flavor = FakeFlavor("fake", clock=clock.now)
    config = ClusterConfig(statistics=StatsPolicy(interval=10, alpha=1.0), rebalance=POLICY)
    cluster = Cluster(plugins=Plugins([flavor], entry_points=False), clock=clock, config=config)
    bmcs = Bmcs(dict.fromkeys(("h1", "h2", "h3"), True))
    cluster.controller.fencer.agent_for = lambda name: bmcs
    for name in ("h1", "h2", "h3"):
        cluster.register_host({"name": name, "capacity": {"cpu": 4, "memory": 4096},
                               "fence_devices": [{"agent": "ipmi", "address": f"bmc-{name}", "username": "admin",
                                                  "password": "pw"}]})
    run(cluster, clock, bmcs, 3)
    for i, name in enumerate(("h1", "h2", "h3")):
        cluster.submit(Workload(f"w{i}", "fake", requests=Resources(1, memory), ha=ha, pinned=frozenset({name})))
        cluster.update_workload(f"w{i}", lambda w: attrs.evolve(w, pinned=frozenset()))  # placed; free to move
        flavor.usage[f"w{i}"] = 0.3
        flavor.resident[f"w{i}"] = 256
    return cluster, flavor, clock, bmcs


def run(cluster: Cluster, clock: FakeClock, bmcs: Bmcs, passes: int) -> None:
    """Passes 5 s apart; a powered host's agent beats, one that is off does not."""
    for _ in range(passes):
        for name, on in bmcs.powered.items():
            if on:
                cluster.heartbeat(name)
        cluster.step()
        clock.advance(5)


def test_a_light_cluster_sends_one_host_to_standby_and_a_workload_without_room_wakes_it() -> None:
    cluster, _, clock, bmcs = simulated()
    run(cluster, clock, bmcs, 40)
    standby = [n for n in ("h1", "h2", "h3") if cluster.host(n).state is S.STANDBY]
    assert len(standby) == 1, [(n, cluster.host(n).state) for n in ("h1", "h2", "h3")]
    off = standby[0]
    assert bmcs.actions == [(off, "off")] and not bmcs.powered[off]  # powered off through its BMC
    assert off not in {p.host for p in cluster.placements().values()}  # emptied first: its workload moved
    assert len(cluster.placements()) == 3 and len(cluster.query_events(kind="migrated")) == 1
    assert "powered off by power saving" in cluster.query_events(subject=f"host/{off}", kind="standby")[0].reason
    run(cluster, clock, bmcs, 20)
    assert bmcs.actions == [(off, "off")]  # min_up: nothing more goes off
    big = Workload("big", "fake", requests=Resources(3, 3700))  # fits only an empty host
    try:
        cluster.submit(big)
        raise AssertionError("placed without room")
    except NoValidHost:
        pass
    assert cluster.query_events(kind="capacity-wanted")
    run(cluster, clock, bmcs, 12)
    assert bmcs.actions == [(off, "off"), (off, "on")] and cluster.host(off).state is S.UP  # woke and rejoined
    events = cluster.query_events(subject=f"host/{off}")
    woke = next(i for i, e in enumerate(events) if e.kind == "power-saving" and "powering on" in e.reason)
    kinds = [e.kind for e in events[woke:]]  # Standby -> (Rebooting ->) Initializing -> Up, by its heartbeats
    assert "heartbeat-resumed" in kinds and kinds[-1] == "initialized", kinds
    assert cluster.submit(big).host == off


def test_n_plus_1_keeps_every_host_up_when_the_ha_workloads_would_not_fit_on_two() -> None:
    cluster, _, clock, bmcs = simulated(ha=True, memory=1400)  # light by measure; by requests two hosts
    # could hold all three, but then the HA workloads of either would not fit in the other
    run(cluster, clock, bmcs, 40)
    assert all(cluster.host(n).state is S.UP for n in ("h1", "h2", "h3"))
    assert not bmcs.actions and not cluster.query_events(kind="migrated")
