"""Storage domains and volumes: the storage every kind of workload needs, generically.

A **storage domain** is where volumes live. A *shared* domain (an NFS export, a Ceph pool)
shows every attached host the same data; a *local* one (``shared=False``) exists on each
attached host at the same ``path`` with that host's own content, as Proxmox's ``local``
storage does. ``hosts`` lists the attached hosts (a shared domain with none is attached
to every host; a local domain names at least one). ``capacity`` is in MiB (per host for a
local domain; 0: not tracked).

A **volume** (a disk image, a container volume) lives on one domain, and on one ``host``
when the domain is local; it has a size, a format, usually an owner workload (which names
it in its ``volumes``), and may be a clone of a ``template`` volume. Its data is the file
``<domain.path>/<volume.name>.<format>`` (:func:`volume_path`): a disk image (``raw``,
``qcow2``) or, of format ``dir``, a directory (what containers mount). A flavor realizes domains
and volumes on its hosts (:class:`clustercore.volumes.VolumeDriver`; the virt flavor:
libvirt storage pools and qcow2 clones) and probes them (``clustercore_probe_host``): a
host that cannot reach a shared domain attached to it goes NonOperational until it can.

Decisions here are pure: :func:`hosts_for` (where a workload's volumes let it run, or
move to when its flavor migrates storage), :func:`ha_blocker` (why a workload cannot be
restarted elsewhere: a volume on a local domain), :func:`free` (room left on a domain).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from clustercore.errors import ValidationError
from clustercore.network import LogicalNetwork
from clustercore.values import NAME_RE, Reader

FORMATS = ("raw", "qcow2", "dir")  # disk images; a directory (a container's volume)
PATH_RE = re.compile(r"\A(/[^\x00-\x1f\x7f/]+)+/?\Z|\A\Z")
"""A domain's path: absolute, no control characters (``.`` and ``..`` parts refused apart)."""


@attrs.frozen
class StorageDomain:
    """``shared``: every attached host reaches the same data; local: each attached host
    has its own at ``path``. ``hosts`` empty: a shared domain attached to every host.
    ``path`` is the flavor's locator (a directory); ``capacity`` in MiB (per host when local)."""

    name: str
    shared: bool = True
    path: str = ""
    capacity: int = 0
    hosts: frozenset[str] = frozenset()

    def attached(self, host: str) -> bool:
        return not self.hosts or host in self.hosts

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shared": self.shared, "path": self.path, "capacity": self.capacity,
                "hosts": sorted(self.hosts)}

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> StorageDomain:
        """``host`` (one host) is accepted for ``hosts`` of a local domain."""
        r = Reader("storage domain", data, path)
        shared = r.boolean("shared", True)
        hosts = set(r.str_set("hosts"))
        if r.get("host") is not None:
            if shared:
                raise r.fail("host", "a shared domain names no host (use hosts to attach it to some)", r.get("host"))
            hosts.add(r.string("host", pattern=NAME_RE))
        where = r.string("path", "", pattern=PATH_RE)
        if any(part in (".", "..") for part in where.split("/")):
            raise r.fail("path", "must not hold . or .. parts", where)
        domain = cls(r.string("name", pattern=NAME_RE), shared, where, r.integer("capacity", 0, minimum=0),
                     frozenset(hosts))
        r.done()
        if not shared and not hosts:
            raise r.fail("hosts", "a local domain names its host (or hosts)")
        for name in domain.hosts:
            if not NAME_RE.match(name):
                raise r.fail("hosts", f"must match {NAME_RE.pattern}", name)
        return domain


@attrs.frozen
class Volume:
    """``size`` in MiB; ``workload`` owns it (None: free); ``template``: the volume it was
    cloned from; ``keep``: it outlives its workload (otherwise deleted with it); ``host``:
    where it lives, for a volume on a local domain."""

    name: str
    domain: str
    size: int
    format: str = "qcow2"
    workload: str | None = None
    template: str | None = None
    keep: bool = False
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "domain": self.domain, "size": self.size, "format": self.format,
                "workload": self.workload, "template": self.template, "keep": self.keep, "host": self.host}

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Volume:
        r = Reader("volume", data, path)
        fmt = r.choice("format", FORMATS, "qcow2")

        def name_or_none(field: str) -> str | None:
            return None if r.get(field) is None else r.string(field, pattern=NAME_RE)

        owner, template, host = name_or_none("workload"), name_or_none("template"), name_or_none("host")
        volume = cls(r.string("name", pattern=NAME_RE), r.string("domain", pattern=NAME_RE),
                     r.integer("size", minimum=1), fmt, owner, template, r.boolean("keep", False), host)
        r.done()
        return volume


@attrs.frozen
class StorageView:
    """The cluster's storage and networks as flavors see them when they complete and
    validate a workload (``clustercore_complete_workload``, ``clustercore_validate_workload``)."""

    domains: Mapping[str, StorageDomain] = attrs.field(factory=dict)
    volumes: Mapping[str, Volume] = attrs.field(factory=dict)
    networks: Mapping[str, LogicalNetwork] = attrs.field(factory=dict)

    def path(self, volume: Volume) -> str:
        return volume_path(self.domains[volume.domain], volume)


def volume_path(domain: StorageDomain, volume: Volume) -> str:
    """Where a volume's data lies on a host attached to its domain."""
    return f"{domain.path.rstrip('/')}/{volume.name}.{volume.format}"


def placed_volume(volume: Volume, domain: StorageDomain) -> Volume:
    """``volume`` checked against its ``domain``: a volume on a local domain lives on one
    attached host (defaulted when the domain has exactly one); one on a shared domain names
    none. ValidationError naming the field otherwise."""
    if domain.shared:
        if volume.host is not None:
            raise ValidationError("volume", "host", f"a volume on shared domain {domain.name} names no host",
                                  volume.host)
        return volume
    if volume.host is None:
        if len(domain.hosts) != 1:
            raise ValidationError("volume", "host", f"a volume on local domain {domain.name} names the host "
                                  f"holding it (one of {', '.join(sorted(domain.hosts))})")
        return attrs.evolve(volume, host=next(iter(domain.hosts)))
    if not domain.attached(volume.host):
        raise ValidationError("volume", "host", f"local domain {domain.name} is not on that host", volume.host)
    return volume


def free(domain: StorageDomain, volumes: Iterable[Volume], host: str | None = None) -> int:
    """MiB left on ``domain`` (on ``host``, for a local domain) once its volumes are
    counted (capacity 0: not tracked)."""
    if not domain.capacity:
        return 2**48
    used = sum(v.size for v in volumes if v.domain == domain.name and (domain.shared or v.host == host))
    return domain.capacity - used


def hosts_for(volumes: Iterable[Volume], domains: Mapping[str, StorageDomain], hosts: Iterable[str],
              moving: bool = False) -> tuple[frozenset[str], str]:
    """The hosts among ``hosts`` that reach every volume (its shared domain attached, or
    the host holding it on a local domain; with ``moving``, a storage migration may take a
    local volume to any host its domain is on), and why the others do not (empty when
    none is left out)."""
    allowed = set(hosts)
    why = ""
    for volume in volumes:
        domain = domains.get(volume.domain)
        if domain is None:
            return frozenset(), f"volume {volume.name} is on unknown storage domain {volume.domain}"
        before = len(allowed)
        allowed = {h for h in allowed if reaches(domain, volume, h, moving)}
        if len(allowed) < before:
            where = "shared" if domain.shared else f"{volume.host}'s local"
            why = f"volume {volume.name} is on {where} domain {domain.name}"
    return frozenset(allowed), why


def reaches(domain: StorageDomain, volume: Volume, host: str, moving: bool = False) -> bool:
    """Whether ``volume`` (on ``domain``) is usable on ``host`` (with ``moving``: could be
    taken there by a storage migration)."""
    if domain.shared or moving:
        return domain.attached(host)
    return host == volume.host


def ha_blocker(volumes: Iterable[Volume], domains: Mapping[str, StorageDomain]) -> str | None:
    """Why a workload with these volumes cannot be restarted on another host (a volume on
    a host-local domain died with the host, as far as anyone knows), or None."""
    for volume in volumes:
        domain = domains.get(volume.domain)
        if domain is not None and not domain.shared:
            return (f"volume {volume.name} is on {volume.host}'s local domain {domain.name}: not restarted "
                    "elsewhere; an operator decides (bring the host back, or stop the workload)")
    return None


def clones_of(template: str, volumes: Iterable[Volume]) -> list[str]:
    """The volumes cloned from ``template`` (their data depends on it)."""
    return sorted(v.name for v in volumes if v.template == template)
