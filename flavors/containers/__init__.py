"""The containers flavor: containers on podman as clustercore workloads.

Loaded through the ``clustercore.flavors`` entry point (``containers =
flavors.containers:flavor [containers]``) like any external flavor; nothing in
``clustercore`` imports it. It needs the ``containers`` extra (podman-py). Workloads of
flavor ``container`` carry a :class:`~flavors.containers.spec.ContainerSpec`; a host runs
containers when its address is a podman API URI (``tcp://HOST:PORT``, ``unix:///PATH``)
or, on a host whose address is another flavor's (a libvirt URI: a host that runs VMs and
containers side by side), when its ``podman/uri`` label names one.

==================  ===========================================================
module              concept
==================  ===========================================================
``spec``            the container: image, command, env, cgroup limits, how it moves
``driver``          start/stop/inspect/migrate (CRIU checkpoint/restore) over podman
``criu``            a CRIU that works on this kernel, built from source when needed
``image``           one busybox image archive, loaded identically on every host
``lab``             real podman hosts (with IPMI BMCs) on one machine
==================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from clustercore.config import ClusterConfig
from clustercore.errors import ValidationError
from clustercore.model import Host, Workload
from clustercore.plugins import HostDescription, Registry, hookimpl
from clustercore.scheduling import ForFlavor, HostView
from clustercore.statistics import Sample
from clustercore.storage import StorageView, volume_path
from flavors.containers import hoststats
from flavors.containers.driver import (
    ContainerError,
    NotCheckpointable,
    PodmanDriver,
    container_spec,
    container_workload,
    podman_uri,
)
from flavors.containers.spec import KIND, ContainerSpec, Mount

FACTS = "containers"

__all__ = ["KIND", "ContainerError", "ContainerSpec", "ContainersFlavor", "Mount", "NotCheckpointable",
           "PodmanDriver", "PodmanHostFilter", "complete_mounts", "container_spec", "container_workload", "flavor",
           "host_facts", "podman_uri"]


@attrs.frozen
class PodmanHostFilter:
    """Containers run only on hosts with a podman API (their address or ``podman/uri``
    label): never on a host that only runs VMs in a mixed cluster."""

    name: str = "container-podman-host"

    def check(self, workload: Workload, view: HostView) -> str | None:
        return None if podman_uri(view.host) is not None else "no podman API on this host"


def host_facts(info: Mapping[str, Any]) -> dict[str, Any]:
    """What the scheduler and an operator need of ``podman info``."""
    host = info.get("host", {}) if isinstance(info.get("host"), Mapping) else {}
    runtime = host.get("ociRuntime", {}) if isinstance(host.get("ociRuntime"), Mapping) else {}
    version = info.get("version", {}) if isinstance(info.get("version"), Mapping) else {}
    return {"runtime": str(runtime.get("name", "")), "cgroup_version": str(host.get("cgroupVersion", "")),
            "cpus": int(host.get("cpus", 0) or 0), "memory_mib": int(host.get("memTotal", 0) or 0) // 2**20,
            "podman": str(version.get("Version", ""))}


def complete_mounts(mounts: tuple[Mount, ...], view: StorageView) -> tuple[Mount, ...]:
    """Each mount with its volume's directory as ``source``. ValidationError naming the
    mount for an unknown volume or one that is not a directory (format ``dir``)."""
    out = []
    for i, mount in enumerate(mounts):
        volume = view.volumes.get(mount.volume)
        domain = view.domains.get(volume.domain) if volume is not None else None
        if volume is None or domain is None:
            raise ValidationError("workload", f"spec.mounts[{i}].volume", "no such volume", mount.volume)
        if volume.format != "dir":
            raise ValidationError("workload", f"spec.mounts[{i}].volume", f"volume {volume.name} is "
                                  f"{volume.format}: a container mounts dir volumes", mount.volume)
        out.append(attrs.evolve(mount, source=volume_path(domain, volume)))
    return tuple(out)


class ContainersFlavor:
    name = "containers"

    def __init__(self, driver: PodmanDriver | None = None) -> None:
        self.driver = driver or PodmanDriver()

    @hookimpl
    def clustercore_register(self, registry: Registry) -> None:
        registry.add_driver(self.driver)
        registry.add_filter(ForFlavor(KIND, PodmanHostFilter()))

    @hookimpl
    def clustercore_bootstrap_host(self, host: Host) -> str | None:
        if podman_uri(host) is None:
            return None  # another flavor's host
        try:
            self.driver.info(host)
        except ContainerError as exc:
            return f"podman at {podman_uri(host)} does not answer: {exc.detail}"
        return None

    @hookimpl
    def clustercore_describe_host(self, host: Host) -> HostDescription | None:
        if podman_uri(host) is None:
            return None
        return HostDescription(facts=host_facts(self.driver.info(host)))

    @hookimpl
    def clustercore_complete_workload(self, workload: Workload, workloads: Mapping[str, Workload],
                                      storage: StorageView) -> Workload | None:
        """Mounts naming cluster volumes get their directories; the workload names those
        volumes (placement, HA and probes follow them)."""
        if workload.flavor != KIND:
            return None
        spec = container_spec(workload)
        mounts = complete_mounts(spec.mounts, storage)
        return attrs.evolve(workload, spec=attrs.evolve(spec, mounts=mounts).to_dict(),
                            volumes=workload.volumes | {m.volume for m in mounts})

    @hookimpl
    def clustercore_validate_workload(self, workload: Workload, workloads: Mapping[str, Workload],
                                      config: ClusterConfig, storage: StorageView) -> str | None:
        """A container workload's spec whole, named as its workload (the container's name on
        every host is the workload's), each mount the directory of the volume it names,
        which the workload names too."""
        if workload.flavor != KIND:
            return None
        spec = container_spec(workload)
        if spec.name != workload.name:
            raise ValidationError("workload", "spec.name", f"must be the workload's name {workload.name!r}",
                                  spec.name)
        for i, (mount, expected) in enumerate(zip(spec.mounts, complete_mounts(spec.mounts, storage), strict=True)):
            if mount.source != expected.source:
                raise ValidationError("workload", f"spec.mounts[{i}].source",
                                      f"volume {mount.volume} is {expected.source}", mount.source)
            if mount.volume not in workload.volumes:
                raise ValidationError("workload", "volumes", f"must name volume {mount.volume} (mounted)",
                                      sorted(workload.volumes))
        return None

    @hookimpl
    def clustercore_sample_host(self, host: Host, workloads: Sequence[Workload]) -> Sample | None:
        """The host's containers' use (:mod:`flavors.containers.hoststats`)."""
        if podman_uri(host) is None:
            return None
        names = {w.name for w in workloads if w.flavor == KIND}
        return hoststats.sample(self.driver.container_stats(host), self.driver.info(host), names)

    @hookimpl
    def clustercore_maintenance_veto(self, host: Host, workloads: Sequence[Workload]) -> str | None:
        """Containers moved by checkpoint cannot leave a host without CRIU: stop them first."""
        if self.driver.criu(host):
            return None
        stuck = sorted(w.name for w in workloads if w.flavor == KIND and container_spec(w).move == "checkpoint")
        if stuck:
            return f"containers moved by checkpoint on a host without CRIU: {', '.join(stuck)}; stop them first"
        return None


flavor = ContainersFlavor()
