"""What a lab host (:mod:`flavors.virt.lab`) is given: its own copy of ``/etc/libvirt``
with ``libvirtd.conf`` (its TCP port, host uuid, the transport's lines), ``qemu.conf``
(its migration, display and websocket port ranges; no cgroups, no security driver, disk
leases by ``virtlockd``), and :data:`SCRIPT`, what its namespace runs."""

from __future__ import annotations

import shutil
from pathlib import Path

from flavors.virt.labnet import host_ports
from flavors.virt.labtransport import LabAccess

__all__ = ["SCRIPT", "configure"]

SCRIPT = """set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt /run/lock
mount --bind {dir}/lib /var/lib/libvirt
mount --bind {dir}/cache /var/cache/libvirt
mount --bind {dir}/log /var/log/libvirt
mount --bind {dir}/etc /etc/libvirt
virtlogd -d
virtlockd -d
{sshd}# libvirtd restarted when it dies, as systemd does (a soft fence kills it)
while true; do libvirtd --listen >>{dir}/libvirtd.out 2>&1 || true; sleep 0.2; done
"""


def configure(name: str, root: Path, port: int, host_uuid: str, access: LabAccess | None) -> str:
    """Write the host's configuration under ``root``; the line of :data:`SCRIPT` that
    starts its sshd (empty unless the transport is SSH)."""
    for sub in ("lib", "cache", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "lib" / "qemu").mkdir(exist_ok=True)
    etc = root / "etc"
    if not etc.exists():
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        for autostart in ("qemu/networks/autostart", "storage/autostart"):
            shutil.rmtree(etc / autostart, ignore_errors=True)
    libvirtd, qemu, sshd = access.prepare(name, root, port) if access else ("listen_tls = 0\n", "", "")
    (etc / "libvirtd.conf").write_text(
        f'listen_tcp = 1\n{libvirtd}listen_addr = "127.0.0.1"\ntcp_port = "{port}"\n'
        f'auth_tcp = "none"\nhost_uuid = "{host_uuid}"\nlog_outputs = "3:stderr"\n')
    ports = host_ports(port)
    (low, high), (display, display_max), (websocket, websocket_max) = (
        ports["migration"], ports["display"], ports["websocket"])
    # No cgroups: else two hosts' same-named domains share /machine/qemu-1-NAME.libvirt-qemu
    # and a power cut leaves it behind.
    (etc / "qemu.conf").write_text(
        f'migration_port_min = {low}\nmigration_port_max = {high}\n'
        f'remote_display_port_min = {display}\nremote_display_port_max = {display_max}\n'
        f'remote_websocket_port_min = {websocket}\nremote_websocket_port_max = {websocket_max}\n'
        'security_driver = "none"\nnamespaces = [ ]\ncgroup_controllers = [ ]\n'
        'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nlock_manager = "lockd"\n' + qemu)
    # Direct leases (no file_lockspace_dir): virtlockd locks each disk file itself, so a
    # local disk at the same path on two hosts (two files) never conflicts.
    (etc / "qemu-lockd.conf").write_text("auto_disk_leases = 1\nrequire_lease_for_disks = 0\n")
    return sshd
