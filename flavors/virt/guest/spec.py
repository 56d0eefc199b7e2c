"""The real guest as a :class:`~flavors.virt.spec.VMSpec`: :func:`guest_spec` turns the
domain essentials of :mod:`flavors.virt.guest.domain` into a spec that
:func:`flavors.virt.domxml.build` writes and the cluster schedules like any VM."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

from flavors.virt.guest.build import GuestImage
from flavors.virt.guest.domain import GuestBoot, guest_cmdline
from flavors.virt.spec import Disk, KernelBoot, Memory, Nic, VMSpec


def guest_spec(image: GuestImage, name: str, disk: Path | str, console: Path | str, memory: int = 160,
               counter: str | None = "counter", dirty_mib: int = 0, burn: bool = False,
               domain_type: str | None = None, nics: tuple[Nic, ...] = (), uuid: str | None = None,
               volume: str | None = None, storage: str | None = None, extra_cmdline: str = "") -> VMSpec:
    """A VM running ``image`` from ``disk`` (its :func:`~flavors.virt.guest.clone`, absolute),
    its serial console appended to ``console``: direct kernel boot with
    :func:`guest_cmdline`'s words (``counter``, ``dirty_mib``, ``burn``) then the words of
    ``extra_cmdline``; the disk as virtio ``vda``, qcow2, ``cache='none'`` (the cluster
    volume ``volume`` on ``storage`` when given); 1 vCPU, ``memory`` MiB, no balloon, no
    graphics. ``domain_type`` None is :func:`flavors.virt.lab.linux_domain_type` (``qemu``
    where KVM cannot boot Linux); ``uuid`` None is a fresh one. Checked: a
    :class:`~clustercore.errors.ValidationError` names the field of anything wrong."""
    if domain_type is None:
        from flavors.virt.lab import linux_domain_type  # the lab is not needed to describe a guest

        domain_type = linux_domain_type()
    essentials = GuestBoot(kernel=image.kernel, initrd=image.initrd,
                           cmdline=" ".join([guest_cmdline(counter, dirty_mib, burn), *extra_cmdline.split()]),
                           disk=Path(disk), console=Path(console))
    return VMSpec(
        name=name, uuid=uuid or str(uuidlib.uuid4()), memory=Memory(memory), vcpus=1, domain_type=domain_type,
        boot=KernelBoot(str(essentials.kernel), str(essentials.initrd), essentials.cmdline),
        disks=(Disk("vda", str(essentials.disk), bus=essentials.disk_bus, format=essentials.disk_format,
                    cache=essentials.disk_cache, volume=volume, storage=storage),),
        nics=nics, graphics=(), serial=True, console_log=str(essentials.console),
        balloon=essentials.memballoon != "none",
    ).check()
