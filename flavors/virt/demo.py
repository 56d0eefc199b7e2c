"""``python -m flavors.virt.demo`` (``./dev demo``): a cluster of real hosts running real
Linux guests and containers side by side.

The embedded defaults (memory store, the virt and containers flavors) on a lab of three
libvirtd hosts with IPMI BMCs on this machine (:mod:`flavors.virt.lab`), each paired with a
podman service (:mod:`flavors.containers.lab`, named by the host's ``podman/uri`` label),
driven through :class:`~flavors.virt.labcluster.LabCluster`: hosts join; the cluster gets a
shared storage domain, local disks, a logical network and the project's guest as a
template; three VMs are cloned from it and boot (their console lines shown); three
counting containers start beside them, placed by the same scheduler; one VM is
live-migrated while it writes its counter and dirties its memory; a host loses power (its
VMs' and containers' alike), is fenced through its BMC, and its HA VM and containers come
back on other hosts; a host is drained for maintenance, VMs by live migration and
containers by CRIU checkpoint/restore (their counts going on), and activated again. After
each phase the demo prints what the cluster recorded and what libvirt and podman run on
every host, and checks they agree with the store. Everything is torn down at the end.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from clustercore import HostState
from flavors.containers import ContainersFlavor, PodmanDriver
from flavors.containers.lab import PodmanLab
from flavors.containers.labcluster import counter, read_count
from flavors.virt.guest import GuestImage, build_guest
from flavors.virt.lab import Lab, linux_domain_type
from flavors.virt.labcluster import LabCluster

S = HostState
VMS = ("vm-1", "vm-2", "vm-3")
CONTAINERS = ("ct-1", "ct-2", "ct-3")
PODMAN_PORT = 17040  # the demo's podman hosts: 17040..17042 (the tests' podman labs start at 17050)


class VirtDemo:
    def __init__(self, lab: Lab, pods: PodmanLab, image: GuestImage, out: TextIO) -> None:
        self.lab, self.pods, self.image, self.out = lab, pods, image, out
        self.podman = PodmanDriver(cgroup_parent=pods.cgroup_parent)
        self.lc = LabCluster(lab, plugins=[ContainersFlavor(self.podman)])
        self.cluster = self.lc.cluster
        self.seen = 0
        self.started = time.time()
        self.problems: list[str] = []

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def events(self) -> None:
        events = self.cluster.query_events()
        for event in events[self.seen:]:
            if event.kind not in ("defined", "updated"):
                self.say(f"    t+{event.time - self.started:5.1f}s  {event}")
        self.seen = len(events)

    def containers(self, i: int) -> list[str]:
        pod = self.pods.hosts[i]
        if not pod.running:
            return []
        return sorted(c.name for c in self.podman.client(self.cluster.host(self.lab.hosts[i].name)).containers.list())

    def libvirt_view(self) -> None:
        """Each host's state, what libvirt and podman run there and whether the store agrees."""
        placements = self.cluster.placements()
        runs = self.lc.libvirt_runs()
        for i, host in enumerate(self.lab.hosts):
            vms, containers = runs.get(host.name, []), self.containers(i)
            stored = sorted(p.workload for p in placements.values() if p.host == host.name and p.state.value ==
                            "Running") if host.running else []
            state = self.cluster.host(host.name).state.value
            running = sorted(vms + containers)
            check = "" if stored == running else f"   MISMATCH: store says {stored}"
            if check:
                self.problems.append(f"{host.name}: libvirt and podman run {running}, store says {stored}")
            self.say(f"    {host.name:<5} {state:<24} libvirt runs {', '.join(vms) or '-'}; "
                     f"podman runs {', '.join(containers) or '-'}{check}")

    def run(self) -> int:
        phases: list[tuple[str, Callable[[], None]]] = [
            ("three libvirt hosts join", self.join),
            ("storage: a shared domain, local disks, a network, the guest as a template", self.storage),
            ("three VMs are cloned from the template and boot", self.boot),
            ("three containers start beside them: one scheduler, one resource count", self.start_containers),
            ("vm-1 is live-migrated while it writes and dirties its memory", self.migrate),
            ("the host of vm-2 (HA) loses power: fenced, its VMs and containers restarted elsewhere",
             self.power_cut),
            ("a host enters maintenance: VMs live-migrate, containers move by checkpoint", self.maintenance),
            ("it is activated again", self.activate),
        ]
        for i, (title, phase) in enumerate(phases, 1):
            done = int(20 * i / len(phases))
            self.say(f"[{'#' * done}{'.' * (20 - done)}] {i}/{len(phases)} {title}")
            started = time.monotonic()
            phase()
            self.events()
            self.libvirt_view()
            self.say(f"    ({time.monotonic() - started:.1f} s)")
        running = sum(1 for p in self.cluster.placements().values() if p.state.value == "Running")
        self.say(f"done: {len(self.cluster.query_events())} events recorded, {running} VMs and containers running, "
                 f"{len(self.problems)} mismatches")
        return 1 if self.problems else 0

    def join(self) -> None:
        for host, pod in zip(self.lab.hosts, self.pods.hosts, strict=True):  # each also runs containers
            self.cluster.update_host(host.name, {"labels": {"podman/uri": pod.uri, **pod.labels}})
        self.lc.up()
        facts = self.cluster.host("lab1").facts["virt"]
        self.say(f"    libvirt says: {facts['arch']} {facts['cpu_model']}, domain types "
                 f"{', '.join(facts['domain_types'])}; Linux guests run as {linux_domain_type()}")

    def storage(self) -> None:
        self.lc.storage(self.image)
        domains = ", ".join(f"{d.name} ({'shared' if d.shared else 'local'}, {d.path})"
                            for d in self.cluster.storage_domains().values())
        self.say(f"    domains: {domains}; template: {self.cluster.volumes()['guest']}")

    def boot(self) -> None:
        for i, name in enumerate(VMS, 1):
            self.lc.guest(name, host=f"lab{i}", dirty_mib=16 if name == "vm-1" else 0, priority=4 - i)
        for name in VMS:
            self.lc.wait_ticks(name, 2)
            self.say(f"    {name} console: {' | '.join(self.lc.lines(name)[:4])}")

    def start_containers(self) -> None:
        move = "checkpoint" if self.pods.criu.path is not None else "restart"
        if move == "restart":
            self.say(f"    no working CRIU ({self.pods.criu.reason}): containers move by restart")
        for name in CONTAINERS:
            self.cluster.submit(counter(name, ha=True, move=move))
        time.sleep(1)
        self.say("    counted so far: " + ", ".join(f"{n} {self.count(n)}" for n in CONTAINERS))

    def count(self, name: str) -> int:
        found = read_count(self.podman.client(self.cluster.host(self.cluster.placements()[name].host)), name)
        return -1 if found is None else found

    def migrate(self) -> None:
        before = self.lc.ticks("vm-1")[-1]
        target = self.cluster.migrate("vm-1").host
        self.lc.wait_ticks("vm-1", 2)
        passes = len(self.lc.lost("vm-1"))
        self.lc.until(lambda: len(self.lc.lost("vm-1")) > passes, 30, "a dirtier pass after the move")
        self.say(f"    vm-1 now on {target}: counter {before} before the move, {self.lc.ticks('vm-1')[-1]} now; "
                 f"pages lost by the move: {self.lc.lost('vm-1')[-1]}")
        self.check_counter("vm-1")

    def power_cut(self) -> None:
        host = self.cluster.placements()["vm-2"].host
        said = self.lc.ticks("vm-2")[-1]
        i = self.lab.hosts.index(self.lab.host(host))
        self.lab.host(host).power_off()
        self.pods.power_cut(i)  # one machine: its containers lose power with its VMs
        self.say(f"    {host} powered off (vm-2 had said counter {said})")
        took = self.lc.until(lambda: self.cluster.placements()["vm-2"].state.value == "Running"
                             and self.cluster.placements()["vm-2"].host != host, 120, "vm-2 back")
        self.lc.until(lambda: self.lc.ticks("vm-2")[-1] > said, 60, "vm-2 counting again")
        self.say(f"    vm-2 running on {self.cluster.placements()['vm-2'].host} {took:.1f} s after the cut, "
                 f"counting again from {self.lc.ticks('vm-2')[-1]}")
        self.check_counter("vm-2")
        self.lc.until(lambda: all(self.cluster.placements()[n].host != host for n in CONTAINERS), 60, "containers back")
        self.lab.host(host).power_on()  # the operator repairs it; it rejoins by its heartbeats
        self.pods.power_on(i)
        self.lc.up()

    def maintenance(self) -> None:
        busiest = max(self.cluster.hosts(), key=lambda h: sum(p.host == h for p in self.cluster.placements().values()))
        self.say(f"    draining {busiest}")
        before = {n: self.count(n) for n in CONTAINERS}
        self.cluster.start_maintenance(busiest)
        self.lc.until(lambda: self.cluster.host(busiest).state is S.MAINTENANCE, 120, f"{busiest} drained")
        for name in VMS:
            self.check_counter(name)
        after = {n: self.count(n) for n in CONTAINERS}
        self.say("    containers counted: " + ", ".join(f"{n} {before[n]} -> {after[n]}" for n in CONTAINERS))
        if self.pods.criu.path is not None and any(after[n] < before[n] for n in CONTAINERS):
            self.problems.append(f"a container restarted instead of moving: {before} -> {after}")

    def activate(self) -> None:
        host = next(n for n in self.cluster.hosts() if self.cluster.host(n).state is S.MAINTENANCE)
        self.cluster.activate_host(host)
        self.lc.up(host)

    def check_counter(self, name: str) -> None:
        values = self.lc.disk_counter(name)
        whole = values == list(range(1, len(values) + 1))
        self.say(f"    {name} disk counter: {len(values)} values, {'no gap, no duplicate' if whole else 'BROKEN'}")
        if not whole:
            self.problems.append(f"{name}: counter on disk {values}")


def main(out: TextIO = sys.stdout, cache: Path | None = None) -> int:
    image = build_guest(cache or Path(tempfile.gettempdir()) / "clustercore-guest-cache")
    with Lab(3, bmc=True) as lab, PodmanLab(3, base_port=PODMAN_PORT) as pods:
        demo = VirtDemo(lab, pods, image, out)
        try:
            return demo.run()
        finally:
            demo.lc.close()


if __name__ == "__main__":
    sys.exit(main())
