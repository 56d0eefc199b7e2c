"""A cluster on a lab, with real guests: what the lab tests, the benchmarks and the demo
drive (one harness, not three).

:class:`LabCluster` puts a :class:`~clustercore.Cluster` (the virt flavor, the lab's soft
fence, its BMCs as fence devices) on a :class:`~flavors.virt.lab.Lab`, with the system
clock and heartbeats from polling each host's libvirtd, as oVirt's engine polls VDSM.
:meth:`LabCluster.storage` gives it the cluster's storage and network as a user would: a
shared domain on ``lab.shared`` (the lab's NFS), a local domain on every host's own
``/var/lib/libvirt/images``, the logical network ``lan`` (a lab switch: UDP NICs, no
bridge), and the project's real guest (:mod:`flavors.virt.guest`) uploaded as the
template volume ``guest``. :meth:`LabCluster.guest` creates a VM the way an operator
does: a clone of the template on the shared or a local domain, then a submit; what the
guest says on its console (counter ticks, dirtier passes, pings) and what its disk holds
are read back for the checks: :meth:`LabCluster.check_guest` is what every lab test that
migrates a guest checks afterwards (its memory, its disk, that it keeps running).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from clustercore import Cluster, ClusterConfig, HostReport, HostState, Plugins
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from clustercore.model import Placement
from clustercore.plugins import HostProbe
from clustercore.storage import StorageDomain
from clustercore.store.base import Store
from flavors.virt import VirtFlavor, vm_workload
from flavors.virt.driver import LibvirtDriver, VirtError
from flavors.virt.guest import (
    GuestImage,
    console_lines,
    counter_values,
    guest_spec,
    lost_pages,
    ping_results,
    read_disk_file,
)
from flavors.virt.lab import Lab
from flavors.virt.labnet import SWITCHES, UDP_BLOCK, lab_udp_ports
from flavors.virt.migration import Migrator
from flavors.virt.networks import MacPool, UdpNetworks, mac_int, mac_text
from flavors.virt.spec import Nic
from flavors.virt.storage import StorageError
from flavors.virt.workload import vm_spec

FAST = ClusterConfig(
    liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2, grace_per_workload=0),
    fencing=FencePolicy(startup_grace=0, soft_wait=8, retries=0, retry_delay=1, confirm_timeout=10, backoff=5))
"""Aggressive timings: a dead host is NonResponsive 4 s after its last beat."""
SHARED, LOCAL, NETWORK, TEMPLATE = "shared", "local", "lan", "guest"
LOCAL_PATH = "/var/lib/libvirt/images"
S = HostState


class LabCluster:
    """``config`` is the cluster's (its ``storage_roots`` become ``lab.shared``);
    ``migrator`` the driver's migration engine (a test's own policy or hooks); ``plugins``
    more plugins beside the virt flavor (an upgrade hook). ``passive``: the cluster on
    ``store`` is run elsewhere (managers reconcile, host agents send the heartbeats); this
    process only defines, submits and checks, and :meth:`tick` only waits."""

    def __init__(self, lab: Lab, config: ClusterConfig = FAST, *, shutdown_timeout: float = 0.5,
                 driver: LibvirtDriver | None = None, migrator: Migrator | None = None,
                 plugins: Sequence[object] = (), store: Store | None = None, passive: bool = False) -> None:
        assert driver is None or migrator is None, "a driver comes with its own migrator"
        assert store is not None or not passive, "a passive cluster is run elsewhere, on a store of its own"
        self.lab = lab
        self.passive = passive
        self.pool = ThreadPoolExecutor(4)
        self.pollers = ThreadPoolExecutor(4)
        self.driver = driver or LibvirtDriver(shutdown_timeout=shutdown_timeout, storage_roots=[str(lab.shared)],
                                              migrator=migrator)
        low, _ = lab_udp_ports(lab.hosts[0].port)
        first = MacPool().first
        self.macs = MacPool(first, mac_text(mac_int(first) + UDP_BLOCK - SWITCHES - 1))
        switch = lab.switch(NETWORK)
        networks = UdpNetworks({NETWORK: switch.address}, local_base=low + SWITCHES)
        flavor = VirtFlavor(self.driver, soft_fence=lab.soft_fence, networks=networks, mac_pool=self.macs,
                            cpu_from_domains=True)  # lab hosts share one kernel: a host's CPU is its VMs'

        self.cluster = Cluster(store=store, plugins=Plugins([flavor, *plugins], entry_points=False), executor=self.pool,
                               config=attrs.evolve(config, storage_roots=frozenset({str(lab.shared)})))
        for host in lab.hosts:
            devices = [lab.bmcs.device(host)] if lab.bmcs is not None else []
            self.cluster.register_host({"name": host.name, "address": host.uri, "fence_devices": devices,
                                        "capacity": {"cpu": 8, "memory": 4096}})
        self.image: GuestImage | None = None
        self.template = Path()

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Poll every host (a heartbeat when its libvirtd answers), then one reconcile pass
        (passive: only a wait, the cluster is run elsewhere)."""
        if self.passive:
            time.sleep(0.2)
            return
        hosts = [self.cluster.host(name) for name in self.cluster.hosts()]  # polled at once: a silent host
        for host, answered in zip(hosts, self.pollers.map(lambda h: self.driver.answers(h, timeout=1), hosts),
                                  strict=True):  # costs its timeout, not the others'
            if answered:
                self.cluster.heartbeat(host.name, HostReport())
        self.cluster.step()
        time.sleep(0.2)

    def until(self, done: Callable[[], bool], limit: float = 90.0, what: str = "") -> float:
        """Tick until ``done()``; the seconds it took. AssertionError after ``limit``."""
        start = time.monotonic()
        while not done():
            if time.monotonic() - start > limit:
                raise AssertionError(f"{what or 'condition'} not reached in {limit} s: "
                                     f"{self.cluster.query_events()[-8:]}")
            self.tick()
        return time.monotonic() - start

    def up(self, *names: str) -> None:
        names = names or tuple(self.cluster.hosts())
        self.until(lambda: all(self.cluster.host(n).state is S.UP for n in names), what=f"{names} Up")

    # ------------------------------------------------------------------ storage and guests

    def storage(self, image: GuestImage) -> None:
        """The shared and local domains, the network ``lan`` and the guest template; the
        guest's kernel and initrd copied onto the shared storage (every host boots them)."""
        boot = self.lab.shared / "boot"
        boot.mkdir(exist_ok=True)
        for part in (image.kernel, image.initrd):
            shutil.copy2(part, boot / part.name)
        self.image = attrs.evolve(image, kernel=boot / image.kernel.name, initrd=boot / image.initrd.name)
        (self.lab.shared / "consoles").mkdir(exist_ok=True)
        c = self.cluster
        c.add_storage_domain({"name": SHARED, "path": str(self.lab.shared / "domain")})
        c.add_storage_domain({"name": LOCAL, "shared": False, "path": LOCAL_PATH,
                              "hosts": [h.name for h in self.lab.hosts]})
        c.add_network({"name": NETWORK})
        self.template = image.template
        c.add_volume({"name": TEMPLATE, "domain": SHARED, "size": 64}, upload=str(image.template))
        if self.passive:  # the leader's probes are elsewhere: the pools they make are seen on the hosts
            domain = c.storage_domains()[SHARED]
            self.until(lambda: all(self._has_pool(h.name, domain) for h in self.lab.hosts),
                       what="every host's pool of the shared domain")
        else:
            self.until(lambda: all(SHARED in c.controller.observer.probes.get(h.name, HostProbe()).storage
                                   for h in self.lab.hosts), what="every host reaching the shared domain")

    def _has_pool(self, host: str, domain: StorageDomain) -> bool:
        try:
            self.driver.storage.pool(self.cluster.host(host), domain, create=False)
        except (StorageError, VirtError):
            return False
        return True

    def guest(self, name: str, *, host: str | None = None, local: bool = False, ha: bool = True, priority: int = 0,
              memory: int = 160, dirty_mib: int = 0, burn: bool = False, ip: str | None = None,
              ping: str | None = None, size: int = 64, copy: bool = False) -> Placement:
        """A VM running the real guest: its disk a clone of the template (a whole copy of
        it with ``copy``) on the shared domain (or ``local`` on ``host``), a NIC on
        ``lan`` when ``ip`` is given; placed by the scheduler (on ``host`` when given)."""
        assert self.image is not None, "storage() first"
        assert host is not None or not local, "a local disk is on a host"
        disk = f"{name}-disk"
        domain = LOCAL if local else SHARED
        source = {"upload": str(self.template)} if copy else {}
        self.cluster.add_volume({"name": disk, "domain": domain, "size": size, "workload": name,
                                 **({} if copy else {"template": TEMPLATE}), **({"host": host} if local else {})},
                                **source)
        words = " ".join(w for w in (f"ip={ip}" if ip else "", f"ping={ping}" if ping else "") if w)
        spec = guest_spec(self.image, name, self.disk_path(name, host), self.console(name), memory=memory,
                          dirty_mib=dirty_mib, burn=burn, volume=disk, nics=(Nic("network", NETWORK),) if ip else (),
                          extra_cmdline=words)
        pinned = frozenset({host}) if host is not None and not local else frozenset()
        placement = self.cluster.submit(vm_workload(spec, ha=ha, priority=priority, pinned=pinned))
        if pinned:  # placed where asked; free to move from now on
            self.cluster.update_workload(name, lambda w: attrs.evolve(w, pinned=frozenset()))
        return placement

    def disk_path(self, name: str, host: str | None = None) -> str:
        """The path of a guest's disk on the hosts (the cluster fills it in from the volume)."""
        volume = self.cluster.volumes().get(f"{name}-disk")
        if volume is not None and volume.domain == LOCAL:
            return f"{LOCAL_PATH}/{volume.name}.qcow2"
        return str(self.lab.shared / "domain" / f"{name}-disk.qcow2")

    def disk_file(self, name: str) -> Path:
        """Where this process reads a guest's disk (a local one from its host's directory)."""
        volume = self.cluster.volumes()[f"{name}-disk"]
        if volume.domain == LOCAL:
            return self.lab.host(str(volume.host)).local_dir / f"{volume.name}.qcow2"
        return self.lab.shared / "domain" / f"{volume.name}.qcow2"

    def console(self, name: str) -> Path:
        return self.lab.shared / "consoles" / f"{name}.log"

    def lines(self, name: str) -> list[str]:
        return console_lines(self.console(name))

    def ticks(self, name: str) -> list[int]:
        """The counter values the guest said, in order (across restarts)."""
        return counter_values(self.lines(name))

    def lost(self, name: str) -> list[int]:
        """The dirtier's total of lost pages after each pass."""
        return lost_pages(self.lines(name))

    def pings(self, name: str) -> list[bool]:
        return ping_results(self.lines(name))

    def disk_counter(self, name: str) -> list[int]:
        """The counter file on the guest's disk, read with the guest running."""
        return [int(v) for v in read_disk_file(self.disk_file(name), "counter").split()]

    def wait_ticks(self, name: str, more: int, limit: float = 60.0) -> None:
        """Until the guest says ``more`` counter ticks beyond what it said so far."""
        goal = len(self.ticks(name)) + more
        self.until(lambda: len(self.ticks(name)) >= goal, limit, f"{more} more ticks of {name}")

    def wait_booted(self, *names: str, limit: float = 90.0) -> None:
        """Until each guest has said a counter tick and, when it dirties memory, a dirtier pass."""
        dirty = {n for n in names if self.dirties(n)}
        self.until(lambda: all(self.ticks(n) and (n not in dirty or self.lost(n)) for n in names), limit,
                   f"{', '.join(names)} booted")

    # ------------------------------------------------------------------ checks

    def dirties(self, name: str) -> bool:
        """Whether the guest runs the memory dirtier (``dirty=`` on its kernel command line)."""
        boot = vm_spec(self.cluster.workloads()[name]).boot
        return boot is not None and any(word.startswith("dirty=") for word in boot.cmdline.split())

    def boots(self, name: str) -> int:
        """How many times the guest booted: its counter says where it continues once a boot."""
        return sum(line.startswith("counter counter continues after") for line in self.lines(name))

    def counter_intact(self, name: str) -> list[int]:
        """The counter file on the guest's disk, checked: 1, 2, 3... with no gap and no
        duplicate, holding every tick the guest said before it was read (a tick is written
        and synced before it is said)."""
        said = self.ticks(name)
        values = self.disk_counter(name)
        assert values and values == list(range(1, len(values) + 1)), f"{name}: counter file {values}"
        assert not said or said[-1] <= values[-1], f"{name} said {said[-1]}, its disk holds up to {values[-1]}"
        return values

    def check_guest(self, *names: str, booted: int | None = 1, limit: float = 60.0) -> dict[str, list[int]]:
        """What a lab test checks after every migration, for each guest at once: it keeps
        running (two more counter ticks) and, when it dirties memory, says two more dirtier
        passes, none of them (nor any before) finding a lost page; the counter file on its
        disk is whole (:meth:`counter_intact`); it booted ``booted`` times (moved, not
        restarted: a restart would also begin the dirtier's count again). Returns each
        guest's counter file."""
        ticks = {n: len(self.ticks(n)) for n in names}
        passes = {n: len(self.lost(n)) for n in names if self.dirties(n)}
        self.until(lambda: all(len(self.ticks(n)) >= ticks[n] + 2 for n in names)
                   and all(len(self.lost(n)) >= passes[n] + 2 for n in passes),
                   limit, f"two more ticks (and dirtier passes) of {', '.join(names)}")
        for n in passes:
            assert not any(self.lost(n)), f"{n}: pages lost, totals after each pass {self.lost(n)}"
        if booted is not None:
            assert {n: self.boots(n) for n in names} == dict.fromkeys(names, booted)
        return {n: self.counter_intact(n) for n in names}

    # ------------------------------------------------------------------ what libvirt says

    def libvirt_runs(self) -> dict[str, list[str]]:
        """The guests running on each host that answers (a migration's paused end is not)."""
        return self.lab.libvirt_runs(paused=False)

    def running_once(self, names: list[str]) -> dict[str, str]:
        """Where each guest runs according to libvirt; each runs on one host at most."""
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

