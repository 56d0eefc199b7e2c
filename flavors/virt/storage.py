"""The cluster's storage on libvirt hosts: storage domains as ``dir`` pools, volumes as
pool volumes (qcow2 clones of templates, uploads, empty images), and the storage probe.

A domain is realized on each attached host as a libvirt storage pool named exactly like
the domain, of type ``dir``, whose target is the domain's ``path`` (an NFS export mounted
there, as oVirt mounts a domain; or the host's own disk for a local domain). A volume is
the pool volume ``<name>.<format>``: a clone is a qcow2 overlay whose backing file is its
template's file (on a shared domain every host reaches), an upload is streamed through
libvirt (so a remote host needs no file copy), an empty one is created by libvirt.

When a domain is added, it is *prepared* on one attached host: the pool is made and a
marker volume (``MARKER``) written into the domain. A host's probe then finds the domain
only where its pool is active, refreshes, and shows the marker: a host whose mount is
gone (an empty directory in its place) or hangs does not reach it, whatever libvirt's
pool state says. The probe also makes sure the pool exists and is active on each attached
host (realizing the domain there) and reports its free space.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape

import attrs
import libvirt

from clustercore.errors import ValidationError
from clustercore.model import Host
from clustercore.storage import StorageDomain, StorageView, Volume, volume_path
from flavors.virt.leases import held
from flavors.virt.spec import Disk, VMSpec
from flavors.virt.uri import is_libvirt_uri

log = logging.getLogger(__name__)

MARKER = "clustercore-domain.meta"
"""A small volume in every prepared domain: a host that sees it reaches the domain."""
CHUNK = 1 << 20



BUSY = "asynchronous jobs running"  # libvirt refuses to refresh a pool while a volume is built in it


def refresh(pool: libvirt.virStoragePool) -> None:
    """Re-read ``pool``'s directory, unless libvirt is building a volume in it (a clone):
    then the pool is active and in use, and its listing is the one of a moment ago."""
    try:
        pool.refresh(0)
    except libvirt.libvirtError as exc:
        if BUSY not in str(exc):
            raise


class StorageError(Exception):
    """A storage operation on a libvirt host failed: ``op`` on ``what`` at ``host``."""

    def __init__(self, op: str, what: str, host: str, detail: str) -> None:
        self.op, self.what, self.host, self.detail = op, what, host, detail
        super().__init__(f"{op} {what} on {host}: {detail}")


def pool_xml(domain: StorageDomain) -> str:
    return (f"<pool type='dir'><name>{escape(domain.name)}</name>"
            f"<target><path>{escape(domain.path)}</path></target></pool>")


def volume_xml(volume: Volume, backing: str | None = None) -> str:
    """A pool volume of ``volume``'s size and format; a qcow2 overlay of ``backing``."""
    mode = "<permissions><mode>0755</mode></permissions>" if volume.format == "dir" else ""  # libvirt: 0600
    xml = (f"<volume><name>{escape(volume.name)}.{volume.format}</name>"
           f"<capacity unit='MiB'>{volume.size}</capacity>"
           f"<target><format type='{volume.format}'/>{mode}</target>")
    if backing is not None:
        xml += f"<backingStore><path>{escape(backing)}</path><format type='qcow2'/></backingStore>"
    return xml + "</volume>"


class LibvirtStorage:
    """Storage domains and volumes on the hosts ``connect`` opens (a
    :class:`~clustercore.driver.VolumeDriver`); hosts that are not libvirt URIs are
    another flavor's."""

    def __init__(self, connect: Callable[[Host], libvirt.virConnect]) -> None:
        self.connect = connect

    # ------------------------------------------------------------------ pools

    def pool(self, host: Host, domain: StorageDomain, create: bool = True, build: bool = False
             ) -> libvirt.virStoragePool:
        """The domain's pool on ``host``, defined and started when missing (``create``; its
        directory made with ``build``), refreshed. StorageError when libvirt refuses (a
        path that does not exist)."""
        conn = self.connect(host)
        try:
            try:
                pool = conn.storagePoolLookupByName(domain.name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL or not create:
                    raise
                pool = conn.storagePoolDefineXML(pool_xml(domain), 0)
                with contextlib.suppress(libvirt.libvirtError):
                    pool.setAutostart(1)
            if not pool.isActive():
                if not create:
                    raise StorageError("probe", f"domain {domain.name}", host.name, "pool not active")
                if build:
                    pool.build(0)  # a dir pool: makes the directory
                pool.create(0)
            refresh(pool)
            return pool
        except libvirt.libvirtError as exc:
            raise StorageError("pool", f"domain {domain.name}", host.name, str(exc)) from exc

    def prepare_domain(self, host: Host, domain: StorageDomain) -> bool:
        """Make the domain's pool on ``host`` and write its marker (once per domain)."""
        if not is_libvirt_uri(host.address):
            return False
        pool = self.pool(host, domain, build=True)
        if MARKER not in pool.listVolumes():
            try:
                pool.createXML(f"<volume><name>{MARKER}</name><capacity unit='KiB'>4</capacity>"
                               "<target><format type='raw'/></target></volume>", 0)
            except libvirt.libvirtError as exc:
                raise StorageError("prepare", f"domain {domain.name}", host.name, str(exc)) from exc
        return True

    def reaches(self, host: Host, domain: StorageDomain) -> int | None:
        """MiB free on ``domain`` as ``host`` sees it, or None when it does not reach it
        (no active pool, a failed refresh, or no marker: the mount is gone)."""
        try:
            pool = self.pool(host, domain)
            if MARKER not in pool.listVolumes():
                return None
            return int(pool.info()[3] // 2**20)
        except (StorageError, libvirt.libvirtError) as exc:
            log.info("%s does not reach storage domain %s: %s", host.name, domain.name, exc)
            return None

    # ------------------------------------------------------------------ VolumeDriver

    def create_volume(self, host: Host, domain: StorageDomain, volume: Volume, template: Volume | None,
                      upload: str | None) -> bool:
        if not is_libvirt_uri(host.address):
            return False
        pool = self.pool(host, domain)
        name = f"{volume.name}.{volume.format}"
        if name in pool.listVolumes():
            raise StorageError("create", f"volume {volume.name}", host.name, f"{name} exists already in {domain.name}")
        backing = None
        if volume.format == "dir" and (template is not None or upload is not None):
            raise StorageError("create", f"volume {volume.name}", host.name, "a dir volume is made empty")
        if template is not None:
            if volume.format != "qcow2":
                raise StorageError("create", f"volume {volume.name}", host.name, "a clone is a qcow2 volume")
            backing = self._template_path(host, template)
        try:
            created = pool.createXML(volume_xml(volume, backing), 0)
            if upload is not None:
                self._upload(created, upload)
        except (libvirt.libvirtError, OSError) as exc:
            with contextlib.suppress(libvirt.libvirtError, UnboundLocalError):
                created.delete(0)
            raise StorageError("create", f"volume {volume.name}", host.name, str(exc)) from exc
        return True

    def _template_path(self, host: Host, template: Volume) -> str:
        """The template's file as ``host`` sees it (looked up in its pool there)."""
        try:
            pool = self.connect(host).storagePoolLookupByName(template.domain)
            refresh(pool)
            return str(pool.storageVolLookupByName(f"{template.name}.{template.format}").path())
        except libvirt.libvirtError as exc:
            raise StorageError("clone", f"template {template.name}", host.name, str(exc)) from exc

    def _upload(self, vol: libvirt.virStorageVol, path: str) -> None:
        size = os.path.getsize(path)
        stream = vol.connect().newStream(0)
        vol.upload(stream, 0, size, 0)
        try:
            with open(path, "rb") as source:
                while chunk := source.read(CHUNK):
                    sent = 0
                    while sent < len(chunk):
                        sent += stream.send(chunk[sent:])
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    def delete_volume(self, host: Host, domain: StorageDomain, volume: Volume) -> bool:
        if not is_libvirt_uri(host.address):
            return False
        pool = self.pool(host, domain)
        try:
            pool.storageVolLookupByName(f"{volume.name}.{volume.format}").delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise StorageError("delete", f"volume {volume.name}", host.name, str(exc)) from exc
        return True

    def resize_volume(self, host: Host, domain: StorageDomain, volume: Volume, size: int) -> bool:
        if not is_libvirt_uri(host.address):
            return False
        if volume.format == "dir":  # a directory has no size of its own: the record's is its share
            return True
        pool = self.pool(host, domain)
        try:
            pool.storageVolLookupByName(f"{volume.name}.{volume.format}").resize(size * 2**20, 0)
        except libvirt.libvirtError as exc:
            raise StorageError("resize", f"volume {volume.name}", host.name, str(exc)) from exc
        return True

    # ------------------------------------------------------------------ migration

    def precreate(self, host: Host, path: str, like: libvirt.virStorageVol) -> libvirt.virStorageVol:
        """An empty volume at ``path`` on ``host`` shaped like ``like`` (its size, format
        and backing file), in the pool holding that directory there: the destination of
        an incremental storage migration."""
        conn = self.connect(host)
        try:
            pool = conn.storagePoolLookupByTargetPath(os.path.dirname(path))
            refresh(pool)
            return pool.createXML(like.XMLDesc(0), 0)
        except libvirt.libvirtError as exc:
            raise StorageError("precreate", path, host.name, str(exc)) from exc

    def volume_at(self, host: Host, path: str) -> libvirt.virStorageVol | None:
        """The pool volume at ``path`` on ``host`` (None when no pool holds it)."""
        conn = self.connect(host)
        with contextlib.suppress(libvirt.libvirtError):  # a volume made by another host shows after a refresh
            conn.storagePoolLookupByTargetPath(os.path.dirname(path)).refresh(0)
        try:
            return conn.storageVolLookupByPath(path)
        except libvirt.libvirtError:
            return None


def probe_storage(storage: LibvirtStorage, host: Host, domains: Sequence[StorageDomain]) -> dict[str, int]:
    """The domains ``host`` reaches, with MiB free on each."""
    found = {}
    for domain in domains:
        free = storage.reaches(host, domain)
        if free is not None:
            found[domain.name] = free
    return found




def complete_disks(disks: tuple[Disk, ...], view: StorageView) -> tuple[tuple[Disk, ...], frozenset[str]]:
    """Disks naming a cluster volume get its file as their source and where it lives
    (``shared``/``local``); the volumes they name. ValidationError naming the disk for an
    unknown volume or a format that is not the volume's."""
    out, named = [], set()
    for i, disk in enumerate(disks):
        if disk.volume is None:
            out.append(disk)
            continue
        volume = view.volumes.get(disk.volume)
        domain = view.domains.get(volume.domain) if volume is not None else None
        if volume is None or domain is None:
            raise ValidationError("workload", f"spec.disks[{i}].volume", "no such volume", disk.volume)
        if disk.format != volume.format:
            raise ValidationError("workload", f"spec.disks[{i}].format", f"volume {volume.name} is {volume.format}",
                                  disk.format)
        out.append(attrs.evolve(disk, source=volume_path(domain, volume),
                                storage="shared" if domain.shared else "local"))
        named.add(volume.name)
    return tuple(out), frozenset(named)


def check_volume_disks(disks: tuple[Disk, ...], volumes: frozenset[str], view: StorageView) -> None:
    """Every disk naming a volume is that volume's file, as the cluster has it, and the
    workload names the volume (so placement and HA follow it)."""
    completed, named = complete_disks(disks, view)
    for i, (disk, expected) in enumerate(zip(disks, completed, strict=True)):
        if disk.volume is not None and (disk.source, disk.storage) != (expected.source, expected.storage):
            raise ValidationError("workload", f"spec.disks[{i}].source", f"volume {disk.volume} is "
                                  f"{expected.source} ({expected.storage})", disk.source)
    missing = sorted(named - volumes)
    if missing:
        raise ValidationError("workload", "volumes", "must name every volume a disk is", missing)


def leases_held(spec: VMSpec) -> bool:
    """Whether a lease on one of the VM's disks on shared storage is held right now (its
    QEMU or the lock daemon for it still runs somewhere). Read from this machine's view of
    the shared storage: a manager that mounts the cluster's shared domains sees it."""
    return any(held(d.source) for d in spec.disks if d.storage == "shared")
