"""Hypothesis strategies for VM specs (shared by the virt flavor's tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from flavors.virt.spec import (
    CloudInit,
    Cpu,
    CpuFeature,
    Dimm,
    Disk,
    Firmware,
    Graphics,
    HostDevice,
    KernelBoot,
    Memory,
    Nic,
    NumaCell,
    Pin,
    Topology,
    VMSpec,
    Watchdog,
)

TEXT = st.text(st.sampled_from("abcdefghij XYZ:#-_0123456789\n"), max_size=40).map(str.strip)
HEX4 = st.integers(1, 0xFFFF).map(lambda v: f"{v:04x}")
PCI = st.tuples(st.integers(0x40, 0xFF), st.integers(0, 0x1F), st.integers(0, 7)).map(
    lambda t: f"0000:{t[0]:02x}:{t[1]:02x}.{t[2]:x}")
VF = st.tuples(st.integers(0, 0x3F), st.integers(0, 0x1F), st.integers(0, 7)).map(  # apart from PCI: never twice
    lambda t: f"0000:{t[0]:02x}:{t[1]:02x}.{t[2]:x}")
UUID = st.uuids().map(str)
CMDLINE = st.text(st.sampled_from("abcxyz =/_-.,:0123456789\u00e9"), max_size=60)  # spaces kept as written
PORT = st.integers(1, 65535)


def _split(total: int, parts: int) -> list[int]:
    base = [total // parts] * parts
    base[-1] += total - sum(base)
    return base


@st.composite
def disks(draw: st.DrawFn) -> tuple[Disk, ...]:
    out = []
    used: set[str] = set()
    for _ in range(draw(st.integers(0, 4))):
        bus = draw(st.sampled_from(["virtio", "scsi", "sata"]))
        device = "cdrom" if bus != "virtio" and draw(st.booleans()) else "disk"
        prefix = "vd" if bus == "virtio" else "sd"
        target = prefix + draw(st.sampled_from("abcdefgh"))
        if target in used:
            continue
        used.add(target)
        kind = "file" if device == "cdrom" else draw(st.sampled_from(["file", "block", "network"]))
        protocol = draw(st.sampled_from(["rbd", "iscsi"])) if kind == "network" else None
        source = {"file": f"/var/lib/vms/{target}.img", "block": f"/dev/mapper/{target}",
                  "network": "pool/image" if protocol == "rbd" else "iqn.2026-01.dev.example:store/1"}[kind]
        hosts = tuple(draw(st.lists(st.sampled_from(["mon1:6789", "mon2:6789", "10.0.0.5:3260"]), min_size=1,
                                    max_size=2 if protocol == "rbd" else 1, unique=True))) if kind == "network" else ()
        volume = draw(st.sampled_from([None, f"vol-{target}"])) if kind == "file" else None
        storage = draw(st.sampled_from([None, "shared", "local"])) if volume else None
        out.append(Disk(
            target=target, source=source, kind=kind, protocol=protocol, hosts=hosts, device=device, bus=bus,
            format=draw(st.sampled_from(["raw", "qcow2"])) if kind == "file" else "raw",
            cache=draw(st.sampled_from([None, "none", "writeback", "directsync"])),
            io=draw(st.sampled_from([None, "native", "threads"])),
            discard=draw(st.sampled_from([None, "unmap", "ignore"])),
            readonly=device == "cdrom" or draw(st.booleans()), shareable=draw(st.booleans()),
            boot=draw(st.sampled_from([None, len(out) + 1])),
            serial=draw(st.sampled_from([None, f"SER{len(out)}"])), volume=volume, storage=storage,
        ))
    return tuple(out)


@st.composite
def nics(draw: st.DrawFn) -> tuple[Nic, ...]:
    out = []
    vfs: set[str] = set()
    for i in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["bridge", "network", "direct", "hostdev", "vhostuser", "user", "udp"]))
        source = {"bridge": "br0", "network": "default", "direct": "eth0", "vhostuser": f"/run/vhost{i}.sock",
                  "user": None, "hostdev": draw(VF), "udp": f"127.0.0.1:{draw(PORT)}"}[kind]
        local = f"{draw(st.sampled_from(['127.0.0.1', '0.0.0.0', '10.1.2.3']))}:{draw(PORT)}" if kind == "udp" else None
        if kind == "hostdev":
            if source in vfs:
                continue
            vfs.add(str(source))
        mode = {"direct": draw(st.sampled_from(["bridge", "vepa", "private", "passthrough"])),
                "vhostuser": draw(st.sampled_from(["client", "server"]))}.get(kind)
        model = "virtio" if kind in ("hostdev", "vhostuser") else draw(st.sampled_from(["virtio", "e1000", "rtl8139"]))
        resource = draw(st.sampled_from([None, "pci/8086:154c"])) if kind == "hostdev" else None
        out.append(Nic(kind, source, model, f"52:54:00:00:00:{i:02x}", mode, resource, local,
                       draw(st.sampled_from([None, "prod", "lab-net.1"]))))
    return tuple(out)


@st.composite
def hostdevs(draw: st.DrawFn) -> tuple[HostDevice, ...]:
    out = []
    pcis = draw(st.lists(PCI, max_size=2, unique=True))
    for address in pcis:
        out.append(HostDevice("pci", address=address, resource=draw(st.sampled_from([None, "pci/10de:1eb8"]))))
    if draw(st.booleans()):
        if draw(st.booleans()):
            out.append(HostDevice("usb", vendor=draw(HEX4), product=draw(HEX4)))
        else:
            out.append(HostDevice("usb", resource="usb/046d:c52b"))
    if draw(st.booleans()):
        out.append(HostDevice("mdev", address=draw(UUID), resource=draw(st.sampled_from([None, "mdev/nvidia-63"]))))
    return tuple(out)


@st.composite
def vm_specs(draw: st.DrawFn, passthrough: bool = True) -> VMSpec:
    vcpu_max = draw(st.integers(1, 8))
    vcpus = draw(st.integers(1, vcpu_max))
    topology = None
    if draw(st.booleans()):
        sockets = draw(st.sampled_from([d for d in range(1, vcpu_max + 1) if vcpu_max % d == 0]))
        rest = vcpu_max // sockets
        cores = draw(st.sampled_from([d for d in range(1, rest + 1) if rest % d == 0]))
        topology = Topology(sockets, cores, rest // cores)
    hugepages = draw(st.sampled_from([None, None, 2048, 1048576]))
    unit = 1024 if hugepages == 1048576 else 2
    size = draw(st.integers(32, 4096)) * unit
    cells = min(draw(st.integers(0, 2)), vcpu_max)
    hotplug = cells > 0 and draw(st.booleans())
    dimms: tuple[Dimm, ...] = ()
    maximum, slots = None, 0
    if hotplug:
        slots = draw(st.integers(1, 4))
        dimms = tuple(Dimm(128 * unit, draw(st.integers(0, cells - 1))) for _ in range(draw(st.integers(0, slots))))
        size += sum(d.size for d in dimms)
        maximum = size + draw(st.integers(0, 8)) * 1024
    boot_memory = size - sum(d.size for d in dimms)
    numa = ()
    if cells:
        cpu_parts = _split(vcpu_max, cells)
        mem_parts = [m - m % unit for m in _split(boot_memory, cells)]
        mem_parts[-1] += boot_memory - sum(mem_parts)
        first = 0
        cells_out = []
        for n, m in zip(cpu_parts, mem_parts, strict=True):
            cpus = f"{first}-{first + n - 1}" if n > 1 else str(first)
            cells_out.append(NumaCell(cpus, m, draw(st.sampled_from([None, 0, 1]))))
            first += n
        numa = tuple(cells_out)
    mode = draw(st.sampled_from(["default", "host-model", "host-passthrough", "custom"]))
    cpu = Cpu(mode)
    if mode == "custom":
        features = draw(st.lists(st.sampled_from(["vmx", "pcid", "ssbd", "avx2", "x2apic"]), unique=True, max_size=3))
        cpu = Cpu(mode, draw(st.sampled_from(["Skylake-Server", "EPYC", "qemu64", "Haswell-noTSX"])),
                  tuple(CpuFeature(f, draw(st.sampled_from(["require", "disable", "optional"]))) for f in features))
    machine = draw(st.sampled_from(["pc", "q35", "pc-q35-7.2"]))
    firmware = Firmware()
    if draw(st.booleans()):
        firmware = Firmware("uefi", "q35" in machine and draw(st.booleans()))
    pins = tuple(Pin(v, draw(st.sampled_from(["0", "1", "0-1", "2,3"])))
                 for v in sorted(draw(st.sets(st.integers(0, vcpu_max - 1), max_size=3))))
    disk_list = draw(disks())
    cloud_init = None
    if draw(st.booleans()) and all(d.target != "sdz" for d in disk_list):
        cloud_init = CloudInit("/var/lib/seeds/x.iso", draw(TEXT), draw(TEXT), draw(st.sampled_from([None, "v: 2"])))
    watchdog = draw(st.sampled_from([None, Watchdog(), Watchdog("ib700", "poweroff")]))
    nic_list = draw(nics())
    boot = None
    if draw(st.booleans()):
        boot = KernelBoot("/var/lib/clustercore/guest/vmlinuz",
                          draw(st.sampled_from([None, "/var/lib/clustercore/guest/initrd.gz"])), draw(CMDLINE))
    serial = draw(st.booleans())
    console_log = draw(st.sampled_from([None, "/var/lib/clustercore/console/vm.log"])) if serial else None
    if not passthrough:
        nic_list = tuple(n for n in nic_list if n.kind != "hostdev")
    return VMSpec(
        name=draw(st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z")), uuid=draw(UUID),
        memory=Memory(size, maximum, slots, dimms, hugepages, draw(st.sampled_from([None, size // 2, size]))),
        vcpus=vcpus, max_vcpus=vcpu_max if vcpu_max != vcpus or draw(st.booleans()) else None,
        topology=topology, cpu=cpu, numa=numa, pins=pins,
        domain_type=draw(st.sampled_from(["kvm", "qemu"])), machine=machine, firmware=firmware, boot=boot,
        clock=draw(st.sampled_from(["utc", "localtime"])),
        disks=disk_list, nics=nic_list, graphics=tuple(draw(st.lists(
            st.builds(Graphics, st.sampled_from(["vnc", "spice"]), st.sampled_from(["127.0.0.1", "0.0.0.0", "::1"])),
            max_size=1))),
        serial=serial, console_log=console_log, guest_agent=draw(st.booleans()), balloon=draw(st.booleans()),
        watchdog=watchdog, rng=draw(st.booleans()), tpm=draw(st.booleans()),
        hostdevs=draw(hostdevs()) if passthrough else (), cloud_init=cloud_init,
    ).check()
