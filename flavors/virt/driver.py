"""Running VMs through libvirt: the ``vm`` workload driver.

A host's ``address`` is its libvirt URI (``qemu+tcp://127.0.0.1:16509/system``,
``qemu:///system``, or ``test:///...`` for libvirt's test driver). Connections are kept
per URI and reopened when they die.

* start: check every path the spec names against :attr:`LibvirtDriver.storage_roots`
  (:mod:`flavors.virt.paths`; the cluster checked them at submit, this is the second
  line), bind devices asked for by name (:mod:`flavors.virt.devices`, serialised per host
  so two VMs never get the same device), write the cloud-init seed (local hosts), define
  the domain, start it;
* stop: ACPI shutdown, then destroy after ``shutdown_timeout`` seconds (or at once when
  forced), then undefine, which releases the VM's devices on that host;
* migrate: live migration under a policy with limits (:mod:`flavors.virt.migration`),
  persistent on the destination, undefined on the source, confirmed on both hosts;
* inspect / stats: what libvirt says now.

libvirt errors are re-raised as :class:`VirtError` (``raise ... from``) naming the VM, the
host and the operation. A host's URI is checked (:mod:`flavors.virt.uri`) before it is
opened: an empty or mistyped one is a VirtError, never ``libvirt.open("")``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import libvirt

from clustercore.config import DEFAULT_STORAGE_ROOTS
from clustercore.driver import WorkloadState
from clustercore.errors import ValidationError
from clustercore.model import Host, Workload, thaw
from flavors.virt import cloudinit, devices, domxml, hostfacts
from flavors.virt.connections import Connections, VirtError
from flavors.virt.migration import Migrator, Progress
from flavors.virt.paths import check_paths
from flavors.virt.spec import KIND, Disk, Memory, VMSpec
from flavors.virt.storage import LibvirtStorage
from flavors.virt.workload import vm_spec

log = logging.getLogger(__name__)

__all__ = ["LibvirtDriver", "NotMigratable", "VirtError", "is_local"]


class NotMigratable(VirtError):
    """A VM with passthrough devices or a host-passthrough CPU cannot live-migrate."""


class LibvirtDriver:
    flavor = KIND
    live_migration = True

    def __init__(self, shutdown_timeout: float = 60.0, passthrough: Sequence[str] = hostfacts.DEFAULT_PASSTHROUGH,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
                 migrator: Migrator | None = None, storage_roots: Iterable[str] = DEFAULT_STORAGE_ROOTS) -> None:
        """``storage_roots``: where the paths of the VMs this driver starts may lie (give
        it the cluster's ``storage_roots``); nothing is written outside them."""
        self.shutdown_timeout = shutdown_timeout
        self.base_roots = frozenset(storage_roots)
        self.storage_roots = self.base_roots
        self.migrator = migrator or Migrator()
        self.passthrough = tuple(passthrough)
        self._sleep = sleep
        self._monotonic = monotonic
        self.conns = Connections()
        self.storage = LibvirtStorage(self.connect)

    # ------------------------------------------------------------------ connections

    def connect(self, host: Host) -> libvirt.virConnect:
        """A connection to ``host``'s libvirtd (:class:`~flavors.virt.connections.Connections`)."""
        return self.conns.connect(host)

    def answers(self, host: Host, timeout: float = 5.0) -> bool:
        """Whether ``host``'s libvirtd answers within ``timeout`` (see :meth:`Connections.answers`)."""
        return self.conns.answers(host, timeout)

    def close(self) -> None:
        self.conns.close()

    def host_lock(self, host: Host) -> contextlib.AbstractContextManager[None]:
        """Serialises binds on one host (device allocation reads, then defines)."""
        return self.conns.host_lock(host)

    def domain(self, spec: VMSpec, host: Host) -> libvirt.virDomain | None:
        conn = self.connect(host)
        try:
            return conn.lookupByUUIDString(spec.uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise VirtError("lookup", spec.name, host.name, str(exc)) from exc

    def specs_on(self, host: Host, but: str = "") -> list[VMSpec]:
        """The specs of the domains on ``host`` (except uuid ``but``), for device accounting.
        A foreign domain this flavor cannot express still counts with its host devices."""
        out = []
        for dom in self.connect(host).listAllDomains(0):
            if dom.UUIDString() == but:
                continue
            xml = dom.XMLDesc(0)
            try:
                out.append(domxml.parse(xml))
            except domxml.UnsupportedXML:
                out.append(_devices_only(xml, dom.UUIDString()))
        return out

    def facts(self, host: Host) -> dict[str, Any]:
        known = host.facts.get("virt")
        if isinstance(known, Mapping) and known:
            return dict(thaw(known))
        return hostfacts.discover(self.connect(host))

    # ------------------------------------------------------------------ WorkloadDriver

    def start(self, workload: Workload, host: Host) -> None:
        spec = vm_spec(workload)
        try:
            check_paths(attrs.evolve(spec, disks=tuple(d for d in spec.disks if d.volume is None)),
                        self.storage_roots)
        except ValidationError as exc:
            raise VirtError("start", spec.name, host.name, str(exc)) from exc
        for disk in spec.disks:  # a cluster volume's file is a volume of one of the host's pools
            if disk.volume is not None and self.storage.volume_at(host, disk.source) is None:
                raise VirtError("start", spec.name, host.name, f"volume {disk.volume} is not at {disk.source} "
                                "in a storage pool there")
        with self.host_lock(host):
            dom = self.domain(spec, host)
            if dom is not None and dom.isActive():
                return
            bound = devices.allocate(spec, host.name, self.facts(host), self.specs_on(host, but=spec.uuid),
                                     self.passthrough)
            self._clear_stale_name(spec, host)
            if spec.cloud_init is not None:
                if not is_local(host.address):
                    raise VirtError("start", spec.name, host.name, "cloud-init seeds are built on this machine and "
                                    f"{host.address} is remote: provide {spec.cloud_init.seed} there")
                cloudinit.write_seed(spec.cloud_init, self.storage_roots)
            try:
                dom = self.connect(host).defineXML(domxml.build(bound))
                dom.create()
            except libvirt.libvirtError as exc:
                raise VirtError("start", spec.name, host.name, str(exc)) from exc
        log.info("started %s on %s", spec.name, host.name)

    def _clear_stale_name(self, spec: VMSpec, host: Host) -> None:
        """A host that was powered off (fenced) keeps the definitions of its VMs, which may
        have been restarted elsewhere since, with other uuids. An inactive domain of the
        same name and another uuid is such a leftover: undefine it. An active one is a
        different VM running: refuse."""
        try:
            other = self.connect(host).lookupByName(spec.name)
        except libvirt.libvirtError:
            return  # no domain of that name
        if other.UUIDString() == spec.uuid:
            return
        if other.isActive():
            raise VirtError("start", spec.name, host.name, f"another running domain is named {spec.name} "
                                                           f"(uuid {other.UUIDString()})")
        log.info("undefining the stale definition of %s (uuid %s) on %s", spec.name, other.UUIDString(), host.name)
        _undefine(other)

    def stop(self, workload: Workload, host: Host, force: bool = False) -> None:
        spec = vm_spec(workload)
        dom = self.domain(spec, host)
        if dom is None:
            return
        try:
            if dom.isActive() and not force:
                with contextlib.suppress(libvirt.libvirtError):  # no ACPI: destroyed below
                    dom.shutdown()
                deadline = self._monotonic() + self.shutdown_timeout
                while dom.isActive() and self._monotonic() < deadline:
                    self._sleep(0.2)
            if dom.isActive():
                log.info("%s on %s did not shut down in %.0fs: destroying", spec.name, host.name,
                         self.shutdown_timeout)
                dom.destroy()
            _undefine(dom)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return  # gone meanwhile: stopped is what was asked
            raise VirtError("stop", spec.name, host.name, str(exc)) from exc

    def migrate(self, workload: Workload, source: Host, target: Host,
                progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None) -> None:
        """Live-migrate under :attr:`migrator`'s policy and limits; returns once libvirt
        reports the VM running on ``target`` and gone from ``source``. On failure the VM
        still runs on ``source`` (MigrationFailed says why). Disks on local volumes are
        copied with it (a storage migration: incremental when they are clones of a template
        both hosts reach, the destination's overlay made first; whole otherwise), and
        removed from ``source`` once the VM runs on ``target`` alone."""
        spec = vm_spec(workload)
        if not spec.migratable:
            raise NotMigratable("migrate", spec.name, source.name,
                                "passthrough devices or a host-passthrough CPU pin it to its host")
        dom = self.domain(spec, source)
        if dom is None or not dom.isActive():
            raise VirtError("migrate", spec.name, source.name, "not running there")
        local = [d for d in spec.disks if d.storage == "local"]
        kept = [d for d in spec.disks if d.storage != "local" and not d.readonly]
        made = self._precreate(spec, source, target, local)
        try:
            self.migrator.migrate(dom, self.connect(target), vm=spec.name, source=source.name, target=target.name,
                                  memory_mib=spec.memory.size, passthrough=spec.passthrough,
                                  uri=target.labels.get("virt/migration-uri"), progress=progress, cancel=cancel,
                                  copy_disks=tuple(d.target for d in local), incremental=bool(made),
                                  shared_disks=bool(kept) and all(d.storage == "shared" for d in kept),
                                  addresses=(source.address, target.address))
        except BaseException:
            _resume_if_left_paused(dom, spec.name, source.name)
            for path in made:  # the VM stays on its source: take the destination's copies back
                with contextlib.suppress(libvirt.libvirtError, VirtError):
                    vol = self.storage.volume_at(target, path)
                    if vol is not None:
                        vol.delete(0)
            raise
        if self.inspect(workload, target) is not WorkloadState.RUNNING or \
                self.inspect(workload, source) is WorkloadState.RUNNING:
            raise VirtError("migrate", spec.name, f"{source.name} -> {target.name}",
                            "libvirt reported success but the VM does not run on the target alone")
        for disk in local:
            with contextlib.suppress(libvirt.libvirtError):
                vol = self.storage.volume_at(source, disk.source)
                if vol is not None:
                    vol.delete(0)
                    log.info("storage of %s moved: %s removed from %s", spec.name, disk.source, source.name)

    def _precreate(self, spec: VMSpec, source: Host, target: Host, local: list[Disk]) -> list[str]:
        """For an incremental storage migration (every local disk a clone with a backing
        file), each disk's overlay made on ``target`` on the same backing; the paths made
        (none: libvirt copies whole disks, making them in the target's pool itself)."""
        found = []
        for disk in local:
            vol = self.storage.volume_at(source, disk.source)
            if vol is None:
                raise VirtError("migrate", spec.name, source.name, f"volume {disk.volume} not at {disk.source}")
            found.append((disk, vol))
        if not found or not all("<backingStore><path>" in "".join(v.XMLDesc(0).split()) for _, v in found):
            return []
        made = []
        try:
            for disk, vol in found:
                if self.storage.volume_at(target, disk.source) is not None:
                    raise VirtError("migrate", spec.name, target.name, f"{disk.source} exists there already")
                self.storage.precreate(target, disk.source, vol)
                made.append(disk.source)
        except BaseException:
            for path in made:
                with contextlib.suppress(libvirt.libvirtError, VirtError):
                    self.storage.volume_at(target, path).delete(0)  # type: ignore[union-attr]
            raise
        return made

    def migrates_storage(self, workload: Workload) -> bool:
        """A VM with disks on local volumes takes them along when it migrates."""
        return any(d.storage == "local" for d in vm_spec(workload).disks)

    def settle(self, workload: Workload, source: Host, target: Host, timeout: float = 30.0) -> None:
        """End a migration whose manager died mid-way, one way or the other. A job still
        running on ``source`` is aborted and awaited (libvirt then keeps the VM there); a VM
        left paused on one side while it runs on the other (the manager died between the
        two ends' last steps) is destroyed on the paused side. Afterwards :meth:`inspect`
        finds it running on one host at most."""
        spec = vm_spec(workload)
        src = self.domain(spec, source)
        if src is not None and src.isActive():
            with contextlib.suppress(libvirt.libvirtError):
                src.abortJob()
            deadline = time.monotonic() + timeout
            while src.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                if time.monotonic() > deadline:
                    raise VirtError("settle", spec.name, source.name, f"migration job still running after {timeout} s")
                time.sleep(0.2)
        dst = self.domain(spec, target)
        src_state, dst_state = _run_state(src), _run_state(dst)
        if dst_state == "running" and src_state == "paused" and src is not None:
            src.destroy()
            _undefine(src)
        elif src_state == "running" and dst_state == "paused" and dst is not None:
            dst.destroy()

    def movable(self, workload: Workload) -> bool:
        """False for VMs that cannot live-migrate (maintenance stops them only on request)."""
        return vm_spec(workload).migratable

    def inspect(self, workload: Workload, host: Host) -> WorkloadState:
        dom = self.domain(vm_spec(workload), host)
        if dom is None:
            return WorkloadState.ABSENT
        try:
            return WorkloadState.RUNNING if dom.isActive() else WorkloadState.STOPPED
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return WorkloadState.ABSENT
            raise VirtError("inspect", workload.name, host.name, str(exc)) from exc

    def stats(self, workload: Workload, host: Host) -> dict[str, Any]:
        """libvirt's state and counters: ``state``, ``vcpus``, ``memory_mib``, ``cpu_time_ns``."""
        spec = vm_spec(workload)
        dom = self.domain(spec, host)
        if dom is None:
            raise VirtError("stats", spec.name, host.name, "no such domain")
        state, max_mem, mem, vcpus, cpu_time = dom.info()
        return {"state": state, "vcpus": vcpus, "memory_mib": mem // 1024, "max_memory_mib": max_mem // 1024,
                "cpu_time_ns": cpu_time}

    def live_spec(self, workload: Workload, host: Host) -> VMSpec:
        """The VM as libvirt runs it now (its live XML, parsed)."""
        spec = vm_spec(workload)
        dom = self.domain(spec, host)
        if dom is None:
            raise VirtError("inspect", spec.name, host.name, "no such domain")
        return domxml.parse(dom.XMLDesc(0))


def is_local(uri: str) -> bool:
    """Whether a libvirt URI names this machine (files written here are the host's files)."""
    host = urllib.parse.urlsplit(uri).hostname
    return host in (None, "", "localhost", "127.0.0.1", "::1")


def _resume_if_left_paused(dom: libvirt.virDomain, vm: str, host: str) -> None:
    """A pre-copy migration that failed at its very end (the source paused for the
    switch, the destination gone) can leave the VM paused on its source: it is whole
    there, so resume it. A VM paused after a switch to post-copy is not touched (its
    memory is split between both ends)."""
    with contextlib.suppress(libvirt.libvirtError):
        state, reason = dom.state()
        if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION:
            log.warning("%s was left paused on %s by a failed migration: resuming it there", vm, host)
            dom.resume()


def _run_state(dom: libvirt.virDomain | None) -> str:
    """``running``, ``paused`` or ``off`` (absent, shut off or gone meanwhile)."""
    if dom is None:
        return "off"
    try:
        state = dom.state()[0]
    except libvirt.libvirtError:
        return "off"
    return {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused"}.get(state, "off")


def _undefine(dom: libvirt.virDomain) -> None:
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            raise
        dom.undefine()


def _devices_only(xml: str, uuid: str) -> VMSpec:
    """What a foreign domain holds, as a spec with only its passthrough devices."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    held = []
    for i, node in enumerate(root.findall("devices/hostdev")):
        with contextlib.suppress(domxml.UnsupportedXML):
            held.append(domxml.read_hostdev(node, f"hostdev[{i}]", None))
    return VMSpec(name="foreign", uuid=uuid, memory=Memory(1), hostdevs=tuple(held))
