"""Storage domains and volumes: the storage every kind of workload needs, generically.

A **storage domain** is where volumes live: *shared* (an NFS export, a Ceph pool: every
host it is attached to reaches the same data; ``hosts`` empty means every host) or
*local* to one ``host``. A **volume** (a disk image, a container volume) lives on one
domain, has a size, a format, and usually an owner workload, which names it in its
``volumes``. A flavor realizes domains and volumes on each host (the virt flavor: libvirt
storage pools and qcow2 clones) and probes them (``clustercore_probe_host``): a host that
cannot reach a shared domain attached to it goes NonOperational until it can again.

Decisions here are pure: :func:`hosts_for` (where a workload's volumes let it run: the
local domain's host, or where its shared domains are attached), :func:`ha_blocker` (why a
workload cannot be restarted elsewhere: a volume on a local domain), :func:`free` (room
left on a domain).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from clustercore.values import NAME_RE, Reader

FORMATS = ("raw", "qcow2")


@attrs.frozen
class StorageDomain:
    """``shared``: every attached host reaches the same data (``hosts`` empty: all of
    them); otherwise local to ``host``. ``path`` is the flavor's locator (a directory, a
    pool name); ``capacity`` in MiB."""

    name: str
    shared: bool = True
    host: str | None = None
    path: str = ""
    capacity: int = 0
    hosts: frozenset[str] = frozenset()

    def attached(self, host: str) -> bool:
        if not self.shared:
            return host == self.host
        return not self.hosts or host in self.hosts

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shared": self.shared, "host": self.host, "path": self.path,
                "capacity": self.capacity, "hosts": sorted(self.hosts)}

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> StorageDomain:
        r = Reader("storage domain", data, path)
        shared = r.boolean("shared", True)
        host = None if r.get("host") is None else r.string("host", pattern=NAME_RE)
        domain = cls(r.string("name", pattern=NAME_RE), shared, host, r.string("path", ""),
                     r.integer("capacity", 0, minimum=0), r.str_set("hosts"))
        r.done()
        if not shared and host is None:
            raise r.fail("host", "a local domain names its host")
        if shared and host is not None:
            raise r.fail("host", "a shared domain names no host (use hosts to attach it to some)", host)
        for name in domain.hosts:
            if not NAME_RE.match(name):
                raise r.fail("hosts", f"must match {NAME_RE.pattern}", name)
        return domain


@attrs.frozen
class Volume:
    """``size`` in MiB; ``workload`` owns it (None: free); ``template``: the volume it was
    cloned from; ``keep``: it outlives its workload (otherwise deleted with it)."""

    name: str
    domain: str
    size: int
    format: str = "qcow2"
    workload: str | None = None
    template: str | None = None
    keep: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "domain": self.domain, "size": self.size, "format": self.format,
                "workload": self.workload, "template": self.template, "keep": self.keep}

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Volume:
        r = Reader("volume", data, path)
        fmt = r.string("format", "qcow2")
        if fmt not in FORMATS:
            raise r.fail("format", f"must be one of {', '.join(FORMATS)}", fmt)
        owner = None if r.get("workload") is None else r.string("workload", pattern=NAME_RE)
        template = None if r.get("template") is None else r.string("template", pattern=NAME_RE)
        volume = cls(r.string("name", pattern=NAME_RE), r.string("domain", pattern=NAME_RE),
                     r.integer("size", minimum=1), fmt, owner, template, r.boolean("keep", False))
        r.done()
        return volume


def free(domain: StorageDomain, volumes: Iterable[Volume]) -> int:
    """MiB left on ``domain`` once its volumes are counted (capacity 0: not tracked)."""
    if not domain.capacity:
        return 2**48
    return domain.capacity - sum(v.size for v in volumes if v.domain == domain.name)


def hosts_for(volumes: Iterable[Volume], domains: Mapping[str, StorageDomain],
              hosts: Iterable[str]) -> tuple[frozenset[str], str]:
    """The hosts among ``hosts`` that reach every volume's domain (attached to it), and
    why the others do not (empty when none is left out)."""
    allowed = set(hosts)
    why = ""
    for volume in volumes:
        domain = domains.get(volume.domain)
        if domain is None:
            return frozenset(), f"volume {volume.name} is on unknown storage domain {volume.domain}"
        before = len(allowed)
        allowed = {h for h in allowed if domain.attached(h)}
        if len(allowed) < before:
            why = f"volume {volume.name} is on {'local' if not domain.shared else 'shared'} domain {domain.name}"
    return frozenset(allowed), why


def ha_blocker(volumes: Iterable[Volume], domains: Mapping[str, StorageDomain]) -> str | None:
    """Why a workload with these volumes cannot be restarted on another host (a volume on
    a host-local domain died with the host, as far as anyone knows), or None."""
    for volume in volumes:
        domain = domains.get(volume.domain)
        if domain is not None and not domain.shared:
            return (f"volume {volume.name} is on {domain.host}'s local domain {domain.name}: not restarted "
                    "elsewhere; an operator decides (bring the host back, or stop the workload)")
    return None
