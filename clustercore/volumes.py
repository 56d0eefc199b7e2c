"""Volumes as operations: create (empty, cloned from a template, or uploaded), resize,
delete, through the flavor that realizes them on a host.

A flavor that keeps volumes' data registers a :class:`~clustercore.driver.VolumeDriver` (``registry.
add_volume_driver``). For each operation the core picks a host that reaches the volume
(the host holding a volume on a local domain; an answering host attached to a shared
one, in name order) and asks each volume driver in turn until one says the host is its
own; the store is written only once the driver is done, so a failed operation leaves the
store as it was (and a create whose write loses a race removes what it made). Without any
volume driver (a flavor that needs no data, the tests' fake flavors) volumes are records.

Refusals, each before anything is done: an unknown domain or template, no room left
(:func:`clustercore.storage.free`), a volume in use (:class:`~clustercore.errors.InUse`:
named by a workload, or the template of clones), shrinking, resizing while its workload
runs, or no host able to do it (:class:`NoVolumeHost`).

:class:`StorageOps` holds the operator's storage calls; :class:`~clustercore.cluster.
Cluster` is one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from clustercore.clock import Clock
from clustercore.driver import VolumeDriver, migrates_storage
from clustercore.errors import ClusterError, Conflict, FlavorError, InUse, ValidationError
from clustercore.events import Event
from clustercore.lifecycle import MONITORED
from clustercore.model import Host, HostState, Placement, Workload
from clustercore.network import LogicalNetwork
from clustercore.plugins import Plugins
from clustercore.reconcile.writer import Writer
from clustercore.state import NETWORKS, STORAGE, VOLUMES, ClusterState, Versioned
from clustercore.storage import StorageDomain, StorageView, Volume, clones_of, free, placed_volume

log = logging.getLogger(__name__)

ANSWERING = MONITORED | {HostState.MAINTENANCE}


class NoVolumeHost(ClusterError):
    """No host can carry out ``action`` on ``volume`` (``-``: the domain itself): ``why``."""

    def __init__(self, action: str, volume: str, why: str) -> None:
        self.action, self.volume, self.why = action, volume, why
        super().__init__(f"cannot {action} volume {volume}: {why}")


def hosts_for_volume(volume: Volume, domain: StorageDomain, hosts: Mapping[str, Host]) -> list[Host]:
    """The answering hosts that reach ``volume``'s data, in the order to ask them."""
    names = [volume.host] if volume.host is not None else sorted(h for h in hosts if domain.attached(h))
    return [hosts[n] for n in names if n in hosts and hosts[n].state in ANSWERING]


def realize(plugins: Plugins, action: str, volume: Volume, domain: StorageDomain, hosts: Mapping[str, Host],
            call: Callable[[VolumeDriver, Host], bool]) -> str | None:
    """Run ``call`` with the first volume driver that owns the first host able to; the
    host's name, or None when no flavor keeps volumes. NoVolumeHost, FlavorError."""
    drivers = plugins.registry.volume_drivers
    if not drivers:
        return None
    candidates = hosts_for_volume(volume, domain, hosts)
    if not candidates:
        where = f"host {volume.host}" if volume.host else f"no host attached to {domain.name}"
        raise NoVolumeHost(action, volume.name, f"{where} is not answering")
    for host in candidates:
        for flavor, driver in drivers:
            try:
                if call(driver, host):
                    log.info("%s volume %s on %s (%s)", action, volume.name, host.name, flavor)
                    return host.name
            except Exception as exc:
                raise FlavorError(flavor, f"{action}_volume", f"{type(exc).__name__}: {exc}") from exc
    raise NoVolumeHost(action, volume.name, "no flavor keeps volumes on " + ", ".join(h.name for h in candidates))


class StorageOps:
    """The operator's storage calls (a mixin of :class:`~clustercore.cluster.Cluster`)."""

    state: ClusterState
    writer: Writer
    plugins: Plugins
    clock: Clock
    if TYPE_CHECKING:  # the Cluster's own
        def hosts(self) -> dict[str, Host]: ...
        def workloads(self) -> dict[str, Workload]: ...
        def placements(self) -> dict[str, Placement]: ...

    def add_storage_domain(self, domain: StorageDomain | Mapping[str, Any]) -> StorageDomain:
        """A storage domain (shared, or local to some hosts) the flavors realize and probe:
        prepared (and marked as the cluster's) through one answering attached host of a
        shared domain, every answering one of a local domain, before it is written."""
        domain = StorageDomain.from_dict(domain.to_dict() if isinstance(domain, StorageDomain) else domain)
        if domain.name in self.storage_domains():
            raise ValidationError("storage domain", "name", "exists already", domain.name)
        hosts = self.hosts()
        if domain.shared:
            realize(self.plugins, "prepare", Volume("-", domain.name, 1), domain, hosts,
                    lambda driver, host: driver.prepare_domain(host, domain))
        else:
            for name in sorted(domain.hosts):
                if name in hosts and hosts[name].state in ANSWERING:
                    realize(self.plugins, "prepare", Volume("-", domain.name, 1, host=name), domain, hosts,
                            lambda driver, host: driver.prepare_domain(host, domain))
        self.writer.put_object(STORAGE, "storage", domain, self.clock.now())
        return domain

    def add_volume(self, volume: Volume | Mapping[str, Any], upload: str | None = None) -> Volume:
        """Create a volume on a known domain with room for it: a clone of its ``template``,
        the contents of the file ``upload`` (on this machine), or empty. ValidationError
        naming the field, NoVolumeHost, FlavorError; nothing is written on failure."""
        volume = Volume.from_dict(volume.to_dict() if isinstance(volume, Volume) else volume)
        domain = self._domain(volume)
        volume = placed_volume(volume, domain)
        volumes = self.volumes()
        if volume.name in volumes:
            raise ValidationError("volume", "name", "exists already", volume.name)
        template = None
        if volume.template is not None:
            if upload is not None:
                raise ValidationError("volume", "template", "a clone has no upload", volume.template)
            template = volumes.get(volume.template)
            if template is None:
                raise ValidationError("volume", "template", "no such volume", volume.template)
            if volume.size < template.size:
                raise ValidationError("volume", "size", f"smaller than its template ({template.size} MiB)",
                                      volume.size)
        left = free(domain, volumes.values(), volume.host)
        if volume.size > left:
            raise ValidationError("volume", "size", f"only {left} MiB left on {domain.name}", volume.size)
        hosts = self.hosts()
        done = realize(self.plugins, "create", volume, domain, hosts,
                       lambda driver, host: driver.create_volume(host, domain, volume, template, upload))
        try:
            self.writer.put_object(VOLUMES, "volume", volume, self.clock.now())
        except Conflict:
            if done is not None:  # another writer made one of that name meanwhile: take ours back
                realize(self.plugins, "delete", volume, domain, {done: hosts[done]},
                        lambda driver, host: driver.delete_volume(host, domain, volume))
            raise
        return volume

    def resize_volume(self, name: str, size: int) -> Volume:
        """Grow a volume whose workload is not running (ValidationError to shrink it)."""
        current = self._volume(name)
        volume = current.value
        if isinstance(size, bool) or not isinstance(size, int) or size < volume.size or size > 2**48:
            raise ValidationError("volume", "size", f"must be an integer >= the current {volume.size} MiB", size)
        if volume.workload is not None and volume.workload in self.placements():
            raise InUse(f"volume {name} (resized only while its workload is stopped)", [volume.workload])
        domain = self._domain(volume)
        left = free(domain, (v for v in self.volumes().values() if v.name != name), volume.host)
        if size > left:
            raise ValidationError("volume", "size", f"only {left} MiB left on {domain.name}", size)
        realize(self.plugins, "resize", volume, domain, self.hosts(),
                lambda driver, host: driver.resize_volume(host, domain, volume, size))
        grown = attrs.evolve(volume, size=size)
        self.writer.put_object(VOLUMES, "volume", grown, self.clock.now(), revision=current.revision)
        return grown

    def delete_volume(self, name: str) -> None:
        """Delete a volume and its data; InUse while a defined workload names it or clones
        depend on it."""
        current = self._volume(name)
        users = sorted(w.name for w in self.workloads().values() if name in w.volumes)
        users += clones_of(name, self.volumes().values())
        if users:
            raise InUse(f"volume {name}", users)
        self._drop(current.value, current.revision)

    def _drop(self, volume: Volume, revision: int) -> None:
        domain = self.storage_domains().get(volume.domain)
        if domain is not None:
            realize(self.plugins, "delete", volume, domain, self.hosts(),
                    lambda driver, host: driver.delete_volume(host, domain, volume))
        self.writer.delete_object(VOLUMES, "volume", volume.name, revision, self.clock.now())

    def drop_owned_volumes(self, workload: Workload) -> None:
        """The volumes ``workload`` owned, deleted with it unless kept. A volume another
        workload's clone depends on stays, with a warning; one whose deletion fails (no
        host reaches it, the flavor refuses: a ``dir`` volume libvirt removes only empty)
        stays too, recorded as a ``volume-kept`` event with the reason, and the others go."""
        for name in sorted(workload.volumes):
            found = self.state.volumes().get(name)
            if found is None or found.value.workload != workload.name or found.value.keep:
                continue
            clones = clones_of(name, self.volumes().values())
            if clones:
                log.warning("volume %s of %s kept: clones %s depend on it", name, workload.name, clones)
                continue
            try:
                self._drop(found.value, found.revision)
            except ClusterError as exc:
                log.warning("volume %s of %s kept: %s", name, workload.name, exc)
                self.writer.record(Event(self.clock.now(), f"volume/{name}", "volume-kept",
                                         f"not deleted with {workload.name}: {exc}"))

    def add_network(self, network: LogicalNetwork | Mapping[str, Any]) -> LogicalNetwork:
        """A logical network (``required`` ones every working host must reach)."""
        network = LogicalNetwork.from_dict(network.to_dict() if isinstance(network, LogicalNetwork) else network)
        self.writer.put_object(NETWORKS, "network", network, self.clock.now())
        return network

    def storage_domains(self) -> dict[str, StorageDomain]:
        return {n: v.value for n, v in self.state.storage_domains().items()}

    def volumes(self) -> dict[str, Volume]:
        return {n: v.value for n, v in self.state.volumes().items()}

    def networks(self) -> dict[str, LogicalNetwork]:
        return {n: v.value for n, v in self.state.networks().items()}

    def pinned_by_storage(self, host: str, workloads: Mapping[str, Workload]) -> list[str]:
        """The workloads on ``host`` held there by a volume on a local domain (their driver
        does not migrate storage)."""
        volumes, domains = self.volumes(), self.storage_domains()

        def local(volume: str) -> bool:
            found = volumes.get(volume)
            return found is not None and found.domain in domains and not domains[found.domain].shared

        return sorted(p.workload for p in self.placements().values()
                      if p.host == host and p.workload in workloads and any(map(local, workloads[p.workload].volumes))
                      and not migrates_storage(self.plugins.driver(workloads[p.workload].flavor),
                                               workloads[p.workload]))

    def storage_view(self) -> StorageView:
        """Domains, volumes and networks as flavors see them."""
        return StorageView(self.storage_domains(), self.volumes(), self.networks())

    def _domain(self, volume: Volume) -> StorageDomain:
        domain = self.storage_domains().get(volume.domain)
        if domain is None:
            raise ValidationError("volume", "domain", "no such storage domain", volume.domain)
        return domain

    def _volume(self, name: str) -> Versioned[Volume]:
        current = self.state.volumes().get(name)
        if current is None:
            raise ValidationError("volume", "name", "no such volume", name)
        return current
