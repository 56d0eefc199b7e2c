"""``clustercore demo``: a small simulated cluster on the embedded defaults, told as a story.

Memory store, a simulated flavor, a fake clock (so a minute of cluster time takes
milliseconds). Hosts join, workloads are placed, one host loses its storage and recovers
by itself, one stops answering and goes NonResponsive, one enters maintenance and is
drained. Each phase prints a progress bar, the events it caused and the host table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from clustercore.clock import FakeClock
from clustercore.cluster import Cluster
from clustercore.config import ClusterConfig
from clustercore.model import HostReport, HostState
from clustercore.plugins import Plugins
from clustercore.testing import FakeFlavor

NETWORKS = frozenset({"mgmt"})
STORAGE = frozenset({"shared"})


class Demo:
    def __init__(self, out: TextIO, hosts: int = 4) -> None:
        self.out = out
        self.clock = FakeClock(start=1_700_000_000.0)
        self.flavor = FakeFlavor("sim")
        self.cluster = Cluster(
            plugins=Plugins([self.flavor], entry_points=False),
            clock=self.clock,
            config=ClusterConfig(name="demo", required_networks=NETWORKS, required_storage=STORAGE),
        )
        self.names = [f"host-{i}" for i in range(1, hosts + 1)]
        self.silent: set[str] = set()
        self.reports = {name: HostReport(NETWORKS, STORAGE) for name in self.names}
        self.seen_events = 0

    def tick(self, seconds: float = 10.0) -> None:
        """Every live host beats, then the controller reconciles."""
        for name in self.names:
            if name not in self.silent:
                self.cluster.heartbeat(name, self.reports[name])
        self.clock.advance(seconds)
        self.cluster.step()

    def until(self, name: str, state: HostState, limit: int = 30) -> None:
        for _ in range(limit):
            if self.cluster.host(name).state is state:
                return
            self.tick()
        raise RuntimeError(f"{name} did not reach {state}")

    def show(self) -> None:
        placements = self.cluster.placements()
        for host in self.cluster.hosts().values():
            running = sorted(p.workload for p in placements.values() if p.host == host.name)
            reason = f"  ({host.reason})" if host.state is not HostState.UP else ""
            print(f"    {host.name:<8} {host.state.value:<24} {len(running)} workload(s){reason}", file=self.out)

    def new_events(self) -> None:
        events = self.cluster.query_events()
        for event in events[self.seen_events:]:
            print(f"    t+{event.time - 1_700_000_000.0:5.0f}s  {event}", file=self.out)
        self.seen_events = len(events)

    def run(self) -> int:
        phases: list[tuple[str, Callable[[], None]]] = [
            ("hosts join", self.join),
            ("workloads are placed", self.place),
            ("host-2 loses its storage, then gets it back", self.storage_blip),
            ("host-3 stops answering", self.silence),
            ("host-1 enters maintenance", self.maintenance),
        ]
        for i, (title, phase) in enumerate(phases, 1):
            done = int(20 * i / len(phases))
            print(f"[{'#' * done}{'.' * (20 - done)}] {i}/{len(phases)} {title}", file=self.out)
            phase()
            self.new_events()
            self.show()
        print(f"done: {len(self.cluster.query_events())} events recorded, "
              f"{len(self.cluster.placements())} workloads running", file=self.out)
        return 0

    def join(self) -> None:
        for i, name in enumerate(self.names):
            self.cluster.register_host({"name": name, "capacity": {"cpu": 16, "memory": 65536},
                                        "location": {"rack": f"r{i % 2 + 1}"}})
        for name in self.names:
            self.until(name, HostState.UP)

    def place(self) -> None:
        for i in range(6):
            self.cluster.submit({"name": f"vm-{i + 1}", "flavor": "sim",
                                 "requests": {"cpu": 2, "memory": 4096}, "ha": i % 2 == 0})

    def storage_blip(self) -> None:
        self.reports["host-2"] = HostReport(NETWORKS, frozenset())
        self.until("host-2", HostState.NON_OPERATIONAL)
        self.reports["host-2"] = HostReport(NETWORKS, STORAGE)
        self.until("host-2", HostState.UP)

    def silence(self) -> None:
        self.silent.add("host-3")
        self.until("host-3", HostState.NON_RESPONSIVE)

    def maintenance(self) -> None:
        self.cluster.start_maintenance("host-1")
        self.until("host-1", HostState.MAINTENANCE)


def main(out: TextIO = sys.stdout) -> int:
    return Demo(out).run()
