"""``python -m flavors.virt.demo`` (``./dev demo``): a cluster of real libvirt hosts.

The embedded defaults (memory store, flavors from their entry points) and a lab of three
libvirtd hosts on this machine (:mod:`flavors.virt.lab`), running small QEMU guests (KVM,
or TCG without /dev/kvm). Hosts join and libvirt tells what they offer; VMs are placed by
the scheduler and started by libvirt; one gets a vCPU hotplugged; one host enters
maintenance and its VMs live-migrate away; it comes back. Each phase prints what the
cluster recorded and what libvirt reports on every host. Everything is torn down at the end.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import TextIO

from clustercore import Cluster, FakeClock, HostReport, HostState
from flavors.virt import hotplug
from flavors.virt.lab import Lab, domain_type
from flavors.virt.spec import Graphics, Memory, NumaCell, VMSpec
from flavors.virt.workload import vm_workload

START = 1_700_000_000.0


class VirtDemo:
    def __init__(self, lab: Lab, out: TextIO) -> None:
        self.lab = lab
        self.out = out
        self.clock = FakeClock(start=START)  # cluster time; libvirt and QEMU run in real time
        self.cluster = Cluster(clock=self.clock)
        self.names = [h.name for h in lab.hosts]
        self.seen = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def tick(self) -> None:
        for name in self.names:
            self.cluster.heartbeat(name, HostReport())
        self.clock.advance(10)
        self.cluster.step()

    def until(self, name: str, state: HostState, limit: int = 40) -> None:
        for _ in range(limit):
            if self.cluster.host(name).state is state:
                return
            self.tick()
        raise RuntimeError(f"{name} did not reach {state.value}: {self.cluster.host(name).reason}")

    def events(self) -> None:
        events = self.cluster.query_events()
        for event in events[self.seen:]:
            self.say(f"    t+{event.time - START:4.0f}s  {event}")
        self.seen = len(events)

    def libvirt_view(self) -> None:
        placements = self.cluster.placements()
        for host in self.lab.hosts:
            running = host.active_domains()
            stored = sorted(p.workload for p in placements.values() if p.host == host.name)
            state = self.cluster.host(host.name).state.value
            check = "" if stored == running else f"   MISMATCH: store says {stored}"
            self.say(f"    {host.name:<5} {state:<24} libvirt runs {', '.join(running) or '-'}{check}")

    def run(self) -> int:
        phases: list[tuple[str, Callable[[], None]]] = [
            ("three libvirt hosts join", self.join),
            ("four VMs are placed and started by libvirt", self.place),
            ("vm-1 gets a second vCPU, hotplugged", self.hotplug),
            ("lab1 enters maintenance: its VMs live-migrate away", self.maintenance),
            ("lab1 is activated again", self.activate),
        ]
        for i, (title, phase) in enumerate(phases, 1):
            done = int(20 * i / len(phases))
            self.say(f"[{'#' * done}{'.' * (20 - done)}] {i}/{len(phases)} {title}")
            started = time.monotonic()
            phase()
            self.events()
            self.libvirt_view()
            self.say(f"    ({time.monotonic() - started:.1f} s)")
        self.say(f"done: {len(self.cluster.query_events())} events recorded, "
                 f"{len(self.cluster.placements())} VMs running")
        return 0

    def join(self) -> None:
        for host in self.lab.hosts:
            self.cluster.register_host({"name": host.name, "address": host.uri, "capacity": {"cpu": 4, "memory": 2048},
                                        "labels": {"virt/migration-uri": "tcp://127.0.0.1"}})
        for name in self.names:
            self.until(name, HostState.UP)
        facts = self.cluster.host(self.names[0]).facts["virt"]
        self.say(f"    libvirt says: {facts['arch']} {facts['cpu_model']}, domain types "
                 f"{', '.join(facts['domain_types'])}, {len(facts['machines'])} machine types, "
                 f"{len(facts['cpu_models'])} usable CPU models; guests run as {domain_type()}")

    def place(self) -> None:
        for i in range(1, 5):
            spec = VMSpec(name=f"vm-{i}", uuid=str(uuid.uuid4()), memory=Memory(64), vcpus=1,
                          max_vcpus=2 if i == 1 else None, numa=(NumaCell("0-1", 64),) if i == 1 else (),
                          domain_type=domain_type(), graphics=(Graphics(),))
            self.cluster.submit(vm_workload(spec))

    def hotplug(self) -> None:
        spec = hotplug.set_vcpus(self.cluster, "vm-1", 2)
        self.say(f"    vm-1 now has {spec.vcpus} vCPUs; the store's request says "
                 f"{self.cluster.workloads()['vm-1'].requests.cpu}")

    def maintenance(self) -> None:
        self.cluster.start_maintenance("lab1")
        self.until("lab1", HostState.MAINTENANCE)

    def activate(self) -> None:
        self.cluster.activate_host("lab1")
        self.until("lab1", HostState.UP)


def main(out: TextIO = sys.stdout) -> int:
    with Lab(3) as lab:
        demo = VirtDemo(lab, out)
        try:
            return demo.run()
        finally:
            for name in list(demo.cluster.placements()):
                demo.cluster.stop(name, force=True)


if __name__ == "__main__":
    sys.exit(main())
