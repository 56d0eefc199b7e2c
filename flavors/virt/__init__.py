"""The virtualization flavor: VMs on libvirt as clustercore workloads.

Loaded through the ``clustercore.flavors`` entry point (``virt = flavors.virt:flavor
[virt]``) like any external flavor; nothing in ``clustercore`` imports it. It needs the
``virt`` extra (libvirt-python, lxml, pycdlib): without it, ``Plugins()`` skips the flavor
with one warning naming ``pip install 'clustercore[virt]'``. Workloads of flavor ``vm``
carry a :class:`~flavors.virt.spec.VMSpec`; hosts are libvirt URIs.

Before a VM workload is written (``clustercore_validate_workload``) its spec is checked
whole, its uuid must be unused by every other VM workload of the cluster, and every path
it names must lie below a storage root of the cluster (:mod:`~flavors.virt.paths`). A
host whose address is empty or names a libvirt driver must be a libvirt URI the flavor
opens (:mod:`~flavors.virt.uri`), or its join fails naming the address.

==================  ===========================================================
module              concept
==================  ===========================================================
``spec``            the VM: CPUs, memory, NUMA, firmware, disks, NICs, devices...
``domxml``          libvirt domain XML: builder, parser, schema validation
``workload``        VMs as workloads (requests), adopting running domains
``hostfacts``       what a host offers, from libvirt; devices as resources
``devices``         binding devices asked for by name, at start
``filters``         VM-aware scheduler filters and weighers
``driver``          define/start/stop/migrate/inspect through libvirt
``hotplug``         disks, NICs, devices, vCPUs, memory into running VMs
``migration``       live migration policy and monitor
``cloudinit``       NoCloud seeds
``paths``           paths a spec names, kept under the cluster's storage roots
``uri``             which host addresses are libvirt URIs this flavor opens
``lab``             real libvirtd hosts (with IPMI BMCs) on one machine
==================  ===========================================================

Soft fencing (``clustercore_soft_fence``): like oVirt's SSH soft fencing, restart libvirtd
on the host over SSH (``ssh root@HOST systemctl restart libvirtd``, batch mode, started in
the background; the controller then waits for heartbeats). Hosts on loopback or without a
host name in their URI are not soft-fenced by default; pass ``soft_fence`` to do
something else (the lab restarts its namespaced libvirtd).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

import attrs

from clustercore.config import ClusterConfig
from clustercore.errors import ValidationError
from clustercore.model import Host, Workload
from clustercore.network import LogicalNetwork
from clustercore.plugins import HostDescription, HostProbe, Registry, hookimpl
from clustercore.statistics import Sample
from clustercore.storage import StorageDomain, StorageView
from flavors.virt import filters, hostfacts, hoststats
from flavors.virt.driver import LibvirtDriver
from flavors.virt.networks import LibvirtNetworks, MacPool, NetworkBackend, complete_nics
from flavors.virt.paths import check_paths
from flavors.virt.spec import KIND, VMSpec
from flavors.virt.storage import check_volume_disks, complete_disks, leases_held, probe_storage
from flavors.virt.uri import claims, is_libvirt_uri, uri_problem
from flavors.virt.workload import adopt, vm_spec, vm_workload

URI_RE = re.compile(r"\A[a-z][a-z0-9+]*://")
"""A URI-looking address (kept for callers; :mod:`flavors.virt.uri` decides)."""

__all__ = ["KIND", "LibvirtDriver", "VMSpec", "VirtFlavor", "adopt", "flavor", "vm_spec", "vm_workload"]


def is_libvirt_host(host: Host) -> bool:
    """Hosts of this flavor have a libvirt URI it opens as their address."""
    return is_libvirt_uri(host.address)


class VirtFlavor:
    """``vcpu_ratio``: vCPUs per hardware thread; ``host_reserve``: MiB kept for the host
    itself; ``passthrough``: which PCI devices VMs may get (see
    :func:`~flavors.virt.hostfacts.passthrough_allowed`); ``soft_fence``: how to revive a
    host's libvirtd (default :func:`ssh_restart_libvirtd`); ``cpu_from_domains``: a host's
    measured CPU is its VMs' alone (for hosts that share one kernel, as lab hosts do: the
    node's own counters are the machine's)."""

    name = "virt"

    def __init__(self, driver: LibvirtDriver | None = None, vcpu_ratio: float = 4.0, host_reserve: int = 1024,
                 passthrough: Sequence[str] = hostfacts.DEFAULT_PASSTHROUGH,
                 soft_fence: Callable[[Host], bool] | None = None, networks: NetworkBackend | None = None,
                 mac_pool: MacPool | None = None, cpu_from_domains: bool = False) -> None:
        self.passthrough = tuple(passthrough)
        self.cpu_from_domains = cpu_from_domains
        self.soft_fence = soft_fence or ssh_restart_libvirtd
        self.driver = driver or LibvirtDriver(passthrough=self.passthrough)
        self.storage = self.driver.storage
        self.networks: NetworkBackend = networks or LibvirtNetworks()
        self.mac_pool = mac_pool or MacPool()
        self.vcpu_ratio = vcpu_ratio
        self.host_reserve = host_reserve

    @hookimpl
    def clustercore_register(self, registry: Registry) -> None:
        registry.add_driver(self.driver)
        registry.add_volume_driver(self.storage)
        for f in filters.filters(self.vcpu_ratio, self.host_reserve):
            registry.add_filter(f)
        for w in filters.weighers():
            registry.add_weigher(w)

    @hookimpl
    def clustercore_configure(self, config: ClusterConfig) -> None:
        """The driver's second-line path check follows the cluster's ``storage_roots`` (with
        the roots it was built with): a manager starts what the cluster accepted."""
        self.driver.storage_roots = self.driver.base_roots | config.storage_roots

    @hookimpl
    def clustercore_bootstrap_host(self, host: Host) -> str | None:
        if not claims(host.address):
            return None  # another flavor's host (a directory...)
        problem = uri_problem(host.address)
        if problem is not None:
            return problem  # checked before anything opens it: libvirt.open("") is never called
        facts = hostfacts.discover(self.driver.connect(host))  # VirtError names the URI when unreachable
        usable = {"kvm", "qemu", "test"} & set(facts.get("domain_types", ()))
        if not usable:
            return f"libvirt at {host.address} runs no hvm guests (domain types: {facts.get('domain_types')})"
        return None

    @hookimpl
    def clustercore_complete_workload(self, workload: Workload, workloads: Mapping[str, Workload],
                                      storage: StorageView) -> Workload | None:
        """A VM's disks that name volumes get their files; its NICs get MACs from the pool
        and join their logical networks (:mod:`flavors.virt.networks`); the workload names
        those volumes and networks (placement, HA and probes follow them)."""
        if workload.flavor != KIND:
            return None
        spec = vm_spec(workload)
        taken = [str(n.get("mac", "")) for name, other in workloads.items() if other.flavor == KIND
                 for n in other.spec.get("nics", ()) if isinstance(n, Mapping) and n.get("mac")]
        nics, joined = complete_nics(spec.nics, storage.networks, self.networks, self.mac_pool, taken)
        disks, named = complete_disks(spec.disks, storage)
        spec = attrs.evolve(spec, nics=nics, disks=disks)
        return attrs.evolve(workload, spec=spec.to_dict(), volumes=workload.volumes | named,
                            networks=workload.networks | joined)

    @hookimpl
    def clustercore_validate_workload(self, workload: Workload, workloads: Mapping[str, Workload],
                                      config: ClusterConfig, storage: StorageView) -> str | None:
        """A VM workload's spec whole (fields, rules), its uuid and NIC MACs unused by every
        other VM workload, every disk naming a volume that volume's file, and every path it
        names below one of ``config.storage_roots`` or a storage domain: ValidationError
        naming the field otherwise."""
        if workload.flavor != KIND:
            return None
        spec = vm_spec(workload)
        macs = {n.mac.lower() for n in spec.nics if n.mac}  # unique within the VM: the spec's own rule
        for name, other in workloads.items():
            if name == workload.name or other.flavor != KIND:
                continue
            taken = {str(n.get("mac", "")).lower() for n in other.spec.get("nics", ()) if isinstance(n, Mapping)}
            clash = sorted(macs & taken)
            if clash:
                raise ValidationError("workload", "spec.nics", f"MAC used by VM workload {name!r} already "
                                      "(two NICs with one MAC break the network they share)", clash)
            if str(other.spec.get("uuid", "")).lower() == spec.uuid:
                raise ValidationError("workload", "spec.uuid", f"is the uuid of VM workload {name!r} already "
                                      "(a VM's uuid is its identity in libvirt: two workloads would share one VM)",
                                      spec.uuid)
        check_volume_disks(spec.disks, workload.volumes, storage)
        check_paths(spec, config.storage_roots | {d.path for d in storage.domains.values() if d.path})
        return None

    @hookimpl
    def clustercore_probe_host(self, host: Host, storage: Sequence[StorageDomain],
                               networks: Sequence[LogicalNetwork]) -> HostProbe | None:
        """The domains a libvirt host reaches (its pools made and active, the domain's
        marker seen, free space) and the logical networks it carries (made where missing)."""
        if not is_libvirt_host(host):
            return None
        free = probe_storage(self.storage, host, storage)
        conn = self.driver.connect(host)
        carried = frozenset(n.name for n in networks if self.networks.realize(conn, n))
        return HostProbe(frozenset(free), carried, free)

    @hookimpl
    def clustercore_sample_host(self, host: Host, workloads: Sequence[Workload]) -> Sample | None:
        """The host's CPU and memory and its VMs' usage (:mod:`flavors.virt.hoststats`)."""
        if not is_libvirt_host(host):
            return None
        domains = {vm_spec(w).name: w.name for w in workloads if w.flavor == KIND}
        return hoststats.sample(self.driver.connect(host), domains, from_domains=self.cpu_from_domains)

    @hookimpl
    def clustercore_host_alive(self, host: Host, workloads: Sequence[Workload]) -> bool | None:
        """Alive while a disk lease of its VMs on shared storage is still held there (the
        holder is the host's lock daemon, for its QEMU: as oVirt reads a live storage lease)."""
        for workload in workloads:
            if workload.flavor == KIND and leases_held(vm_spec(workload)):
                return True
        return None

    @hookimpl
    def clustercore_describe_host(self, host: Host) -> HostDescription | None:
        if not is_libvirt_host(host):
            return None
        facts = hostfacts.discover(self.driver.connect(host))
        return HostDescription(facts=facts, extended=hostfacts.extended_resources(facts, self.passthrough))

    @hookimpl
    def clustercore_maintenance_veto(self, host: Host, workloads: Sequence[Workload]) -> str | None:
        pinned = sorted(w.name for w in workloads if w.flavor == KIND and not vm_spec(w).migratable)
        if pinned:
            return (f"VMs that cannot live-migrate (passthrough devices or host-passthrough CPU): "
                    f"{', '.join(pinned)}; stop them first")
        return None

    @hookimpl
    def clustercore_soft_fence(self, host: Host) -> bool | None:
        return self.soft_fence(host) if is_libvirt_host(host) else None


def ssh_restart_libvirtd(host: Host) -> bool:
    """Start ``ssh root@HOST systemctl restart libvirtd`` in the background; False when the
    host has no remote host name (or is on loopback: that would restart this machine's)."""
    name = urlsplit(host.address).hostname or ""
    if not name or name in ("localhost", "::1") or name.startswith("127."):
        return False
    subprocess.Popen(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"root@{name}",
                      "systemctl restart libvirtd"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    return True


flavor = VirtFlavor()
