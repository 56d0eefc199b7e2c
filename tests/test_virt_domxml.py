"""Domain XML: every generated document validates against libvirt's schema, defines on
libvirt's test driver and parses back to the same spec; bad input names its field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import libvirt
import pytest
from hypothesis import HealthCheck, given, settings

from clustercore.errors import ValidationError
from flavors.virt import domxml
from flavors.virt.guest import GuestImage, guest_spec
from flavors.virt.paths import spec_paths
from flavors.virt.spec import Disk, HostDevice, KernelBoot, Memory, Nic, VMSpec
from tests.virt_strategies import vm_specs


@pytest.fixture(scope="module")
def test_driver() -> Iterator[libvirt.virConnect]:
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(spec=vm_specs())
def test_generated_xml_validates_defines_and_parses_back(spec: VMSpec, test_driver: libvirt.virConnect) -> None:
    xml = domxml.build(spec)
    domxml.validate(xml)
    assert domxml.parse(xml) == spec
    dom = test_driver.defineXML(xml)
    try:
        assert domxml.parse(dom.XMLDesc(0)) == spec  # libvirt's own rendering, defaults added
        assert domxml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == spec
    finally:
        dom.undefine()


@settings(max_examples=100, deadline=None)
@given(spec=vm_specs())
def test_spec_dict_round_trip(spec: VMSpec) -> None:
    assert VMSpec.from_dict(spec.to_dict()) == spec


def minimal() -> dict[str, object]:
    return {"name": "web1", "uuid": "5f0c3a9e-6a43-4f0e-9f5c-2d8b3c0b6a11", "memory": {"size": 1024}, "vcpus": 2}


@pytest.mark.parametrize(("change", "field"), [
    ({"vcpus": 0}, "vcpus"),
    ({"memory": {"size": "1G"}}, "memory.size"),
    ({"disks": [{"target": "vda", "source": "/x", "bus": "ide"}]}, "disks[0].bus"),
    ({"disks": [{"target": "sda", "source": "/x"}]}, "disks[0].target"),
    ({"disks": [{"target": "vda", "source": "relative.img"}]}, "disks[0].source"),
    ({"nics": [{"kind": "bridge"}]}, "nics[0].source"),
    ({"nics": [{"kind": "direct", "source": "eth0", "mode": "client"}]}, "nics[0].mode"),
    ({"nics": [{"kind": "bridge", "source": "br0", "mac": "52:54:00:zz:00:01"}]}, "nics[0].mac"),
    ({"hostdevs": [{"kind": "pci"}]}, "hostdevs[0].address"),
    ({"hostdevs": [{"kind": "pci", "resource": "usb/046d:c52b"}]}, "hostdevs[0].resource"),
    ({"max_vcpus": 1}, "max_vcpus"),
    ({"max_vcpus": 4, "topology": {"sockets": 1, "cores": 3, "threads": 1}}, "topology"),
    ({"memory": {"size": 1024, "maximum": 4096, "slots": 2}}, "numa"),
    ({"memory": {"size": 1000, "hugepages": 1048576}}, "memory.size"),
    ({"cpu": {"mode": "custom"}}, "cpu.model"),
    ({"firmware": {"kind": "bios", "secure_boot": True}}, "firmware.secure_boot"),
    ({"numa": [{"cpus": "0", "memory": 512}]}, "numa"),
    ({"balloon": "yes"}, "balloon"),
    ({"sound": True}, "sound"),
    # direct kernel boot and the console log
    ({"boot": {"cmdline": "console=ttyS0"}}, "boot.kernel"),
    ({"boot": {"kernel": "vmlinuz"}}, "boot.kernel"),
    ({"boot": {"kernel": "/k", "initrd": "/i\n"}}, "boot.initrd"),
    ({"boot": {"kernel": "/k", "cmdline": "quiet\ninit=/bin/sh"}}, "boot.cmdline"),
    ({"boot": {"kernel": "/k", "cmdline": "quiet\x00"}}, "boot.cmdline"),
    ({"boot": {"kernel": "/k", "cmdline": "quiet\tx"}}, "boot.cmdline"),
    ({"boot": {"kernel": "/k", "cmdline": "quiet\x85"}}, "boot.cmdline"),
    ({"boot": {"kernel": "/k", "cmdline": "x" * 4097}}, "boot.cmdline"),
    ({"console_log": "console.log"}, "console_log"),
    ({"console_log": "/var/log/c.log\n"}, "console_log"),
    ({"console_log": "/var/log/c.log", "serial": False}, "console_log"),
    # cluster volumes
    ({"disks": [{"target": "vda", "source": "/x", "storage": "shared"}]}, "disks[0].storage"),
    ({"disks": [{"target": "vda", "source": "/x", "volume": "v", "storage": "nfs"}]}, "disks[0].storage"),
    ({"disks": [{"target": "vda", "source": "/dev/sdb", "kind": "block", "volume": "v"}]}, "disks[0].volume"),
    ({"disks": [{"target": "vda", "source": "/x", "volume": "a/b"}]}, "disks[0].volume"),
    ({"disks": [{"target": "vda", "source": "/x", "volume": "v\n"}]}, "disks[0].volume"),
    ({"disks": [{"target": "vda", "source": "/x", "volume": "v"}, {"target": "vdb", "source": "/y", "volume": "v"}]},
     "disks"),
    # udp NICs and logical networks
    ({"nics": [{"kind": "udp", "source": "127.0.0.1:5000"}]}, "nics[0].local"),
    ({"nics": [{"kind": "udp", "local": "127.0.0.1:5001"}]}, "nics[0].source"),
    ({"nics": [{"kind": "udp", "source": "127.0.0.1:0", "local": "127.0.0.1:5001"}]}, "nics[0].source"),
    ({"nics": [{"kind": "udp", "source": "127.0.0.1:65536", "local": "127.0.0.1:5001"}]}, "nics[0].source"),
    ({"nics": [{"kind": "udp", "source": "127.0.0.1:05000", "local": "127.0.0.1:5001"}]}, "nics[0].source"),
    ({"nics": [{"kind": "udp", "source": "switch:5000", "local": "127.0.0.1:5001"}]}, "nics[0].source"),
    ({"nics": [{"kind": "udp", "source": "256.0.0.1:5000", "local": "127.0.0.1:5001"}]}, "nics[0].source"),
    ({"nics": [{"kind": "udp", "source": "127.0.0.1:5000", "local": "127.0.0.1:99999"}]}, "nics[0].local"),
    ({"nics": [{"kind": "udp", "source": "127.0.0.1:5000", "local": "127.0.0.1"}]}, "nics[0].local"),
    ({"nics": [{"kind": "udp", "source": "127.0.0.1:5000", "local": "127.0.0.1:5001\n"}]}, "nics[0].local"),
    ({"nics": [{"kind": "udp", "source": "127.0.0.1:5000", "local": "127.0.0.1:5001", "mode": "bridge"}]},
     "nics[0].mode"),
    ({"nics": [{"kind": "bridge", "source": "br0", "local": "127.0.0.1:5001"}]}, "nics[0].local"),
    ({"nics": [{"kind": "user", "network": "no spaces"}]}, "nics[0].network"),
    ({"nics": [{"kind": "user", "network": "-leading"}]}, "nics[0].network"),
])
def test_bad_specs_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        VMSpec.from_dict(minimal() | change)
    assert info.value.field == field, info.value


def test_unbound_device_cannot_be_built() -> None:
    spec = VMSpec.from_dict(minimal() | {"hostdevs": [{"kind": "pci", "resource": "pci/10de:1eb8"}]})
    with pytest.raises(domxml.UnboundDevice) as info:
        domxml.build(spec)
    assert info.value.field == "hostdevs[0].address"
    vf = VMSpec.from_dict(minimal() | {"nics": [{"kind": "hostdev", "resource": "pci/8086:154c"}]})
    with pytest.raises(domxml.UnboundDevice):
        domxml.build(vf)


UUID = "5f0c3a9e-6a43-4f0e-9f5c-2d8b3c0b6a11"
GUEST = VMSpec(
    name="guest", uuid=UUID, memory=Memory(160), domain_type="qemu",
    boot=KernelBoot("/var/lib/clustercore/guest/vmlinuz", "/var/lib/clustercore/guest/initrd.gz",
                    "  console=ttyS0 quiet  counter=counter é "),
    disks=(Disk("vda", "/var/lib/clustercore/shared/guest.qcow2", format="qcow2", cache="none", volume="guest",
                storage="shared"),
           Disk("vdb", "/var/lib/libvirt/images/scratch.raw", volume="scratch", storage="local"),
           Disk("vdc", "/var/lib/libvirt/images/plain.raw")),
    nics=(Nic("udp", "127.0.0.1:17400", local="127.0.0.1:17401", mac="52:54:00:00:00:01", network="lan"),
          Nic("user", mac="52:54:00:00:00:02"), Nic("network", "default", mac="52:54:00:00:00:03", network="prod")),
    console_log="/var/lib/clustercore/console/guest.log", balloon=False,
).check()


def test_new_elements_validate_define_and_parse_back(test_driver: libvirt.virConnect) -> None:
    xml = domxml.build(GUEST)
    domxml.validate(xml)
    for part in ("<kernel>/var/lib/clustercore/guest/vmlinuz</kernel>",
                 "<cmdline>  console=ttyS0 quiet  counter=counter é </cmdline>",
                 '<serial type="file">', '<console type="file">',
                 '<source path="/var/lib/clustercore/console/guest.log" append="on"/>',
                 '<interface type="udp">', '<source address="127.0.0.1" port="17400">',
                 '<local address="127.0.0.1" port="17401"/>',
                 '<clustercore:disk target="vda" source="/var/lib/clustercore/shared/guest.qcow2" volume="guest" '
                 'storage="shared"/>', '<clustercore:nic mac="52:54:00:00:00:01" network="lan"/>'):
        assert part in xml, part
    assert domxml.parse(xml) == GUEST
    dom = test_driver.defineXML(xml)
    try:
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            assert domxml.parse(dom.XMLDesc(flags)) == GUEST
    finally:
        dom.undefine()
    assert VMSpec.from_dict(GUEST.to_dict()) == GUEST


def test_without_initrd_or_cmdline_and_with_a_pty_console() -> None:
    spec = VMSpec(name="bare", uuid=UUID, memory=Memory(64), boot=KernelBoot("/boot/vmlinuz")).check()
    xml = domxml.build(spec)
    domxml.validate(xml)
    assert "<initrd>" not in xml and "<cmdline>" not in xml and '<serial type="pty">' in xml
    assert domxml.parse(xml) == spec


LIBVIRT_GUEST = """<domain type='qemu'>
  <name>adopted</name>
  <uuid>5f0c3a9e-6a43-4f0e-9f5c-2d8b3c0b6a11</uuid>
  <memory unit='MiB'>160</memory>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/images/vmlinuz</kernel>
    <initrd>/images/initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/images/vm.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='udp'>
      <mac address='52:54:00:00:00:07'/>
      <source address='127.0.0.1' port='6000'>
        <local address='0.0.0.0' port='6001'/>
      </source>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='/images/console.log' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


def test_libvirts_own_rendering_of_a_guest_parses(test_driver: libvirt.virConnect) -> None:
    """A domain written by hand (no console element, no metadata), as libvirt renders it
    (it adds the console, ``<boot dev='hd'/>``, the NIC's target...)."""
    dom = test_driver.defineXML(LIBVIRT_GUEST)
    try:
        rendered = dom.XMLDesc(0)
    finally:
        dom.undefine()
    assert "<boot dev='hd'/>" in rendered and "<console type='file'>" in rendered
    spec = domxml.parse(rendered)
    assert spec.boot == KernelBoot("/images/vmlinuz", "/images/initrd.gz", "console=ttyS0 quiet")
    assert spec.console_log == "/images/console.log" and spec.serial and not spec.balloon
    assert spec.nics == (Nic("udp", "127.0.0.1:6000", mac="52:54:00:00:00:07", local="0.0.0.0:6001"),)
    assert spec.disks == (Disk("vda", "/images/vm.qcow2", format="qcow2", cache="none"),)
    assert domxml.parse(domxml.build(spec)) == spec


@pytest.mark.parametrize(("old", "new", "where"), [
    ("<serial type='file'>\n      <source path='/images/console.log' append='on'/>",
     "<serial type='tcp'>\n      <source mode='connect' host='10.0.0.1' service='4555'/>",
     "/domain/devices/serial/@type"),
    ("append='on'", "append='off'", "/domain/devices/serial/source/@append"),
    ("append='on'", "", "/domain/devices/serial/source/@append"),
    ("<source path='/images/console.log' append='on'/>", "<source path='/images/console.log' append='on'/>"
     "<log file='/images/other.log'/>", "/domain/devices/serial/log"),
    ("<source path='/images/console.log' append='on'/>", "", "/domain/devices/serial/source/@path"),
    ("<memballoon", "<console type='pty'><target type='serial' port='0'/></console><memballoon",
     "/domain/devices/serial"),
    ("<cmdline>", "<dtb>/images/x.dtb</dtb><cmdline>", "/domain/os/dtb"),
    ("<kernel>/images/vmlinuz</kernel>", "", "/domain/os/initrd"),
    ("<initrd>/images/initrd.gz</initrd>", "<initrd>/a</initrd><initrd>/b</initrd>", "/domain/os/initrd"),
    ("<local address='0.0.0.0' port='6001'/>", "", "/domain/devices/interface[1]/source/local"),
    ("port='6000'", "port='0'", "/domain/devices/interface[1]/source/@port"),
    ("port='6001'", "port='65536'", "/domain/devices/interface[1]/source/local/@port"),
    ("address='127.0.0.1' port='6000'", "address='127.0.0.1' port='6000' dev='eth0'",
     "/domain/devices/interface[1]/source/@dev"),
    ("address='127.0.0.1' port='6000'", "address='switch.lab' port='6000'", "nics[0].source"),
])
def test_unsupported_guest_xml_is_refused_naming_where(old: str, new: str, where: str) -> None:
    assert old in LIBVIRT_GUEST
    with pytest.raises(domxml.UnsupportedXML) as info:
        domxml.parse(LIBVIRT_GUEST.replace(old, new))
    assert info.value.field == where, info.value


@pytest.mark.parametrize(("old", "new", "where"), [
    ('<clustercore:nic mac="52:54:00:00:00:01" network="lan"/>',
     '<clustercore:nic mac="52:54:00:00:00:01" network="lan"/><clustercore:nic mac="52:54:00:00:00:01" network="x"/>',
     "/domain/metadata/vm/nic/@mac"),
    ('<clustercore:nic mac="52:54:00:00:00:01" network="lan"/>',
     '<clustercore:nic index="5" network="lan"/><clustercore:nic index="5" network="x"/>',
     "/domain/metadata/vm/nic/@index"),
    ('<clustercore:nic mac="52:54:00:00:00:01" network="lan"/>', '<clustercore:nic index="x" network="lan"/>',
     "/domain/metadata/vm/nic/@index"),
    ('<clustercore:disk target="vdb"', '<clustercore:disk target="vda"', "/domain/metadata/vm/disk/@target"),
    ('volume="guest" storage="shared"', 'storage="shared"', "disks[0].storage"),
    ('network="lan"', 'network="a b"', "nics[0].network"),
])
def test_metadata_for_volumes_and_networks_is_checked(old: str, new: str, where: str) -> None:
    xml = domxml.build(GUEST)
    assert old in xml
    with pytest.raises(domxml.UnsupportedXML) as info:
        domxml.parse(xml.replace(old, new))
    assert info.value.field == where, info.value


def test_metadata_of_devices_changed_by_hotplug_no_longer_applies() -> None:
    """Hotplug changes the devices, not the metadata: the entry of a disk detached since (or
    replaced at its target by another file) and of a NIC detached since applies to nothing."""
    xml = domxml.build(GUEST)
    gone = domxml.parse(xml.replace('<source file="/var/lib/clustercore/shared/guest.qcow2"/>',
                                    '<source file="/var/lib/libvirt/images/other.qcow2"/>'))
    assert (gone.disks[0].volume, gone.disks[0].storage, gone.disks[1].volume) == (None, None, "scratch")
    first_nic = xml[xml.index('<interface type="udp">'):xml.index("</interface>") + len("</interface>")]
    detached = domxml.parse(xml.replace(first_nic, ""))
    assert [(n.mac, n.network) for n in detached.nics] == [("52:54:00:00:00:02", None),
                                                            ("52:54:00:00:00:03", "prod")]
    # A NIC built without a MAC is found by its index (libvirt chooses its MAC).
    spec = attrs.evolve(GUEST, nics=(Nic("user", network="lan"),)).check()
    assert '<clustercore:nic index="0" network="lan"/>' in domxml.build(spec)
    assert domxml.parse(domxml.build(spec).replace("<interface type=\"user\">",
                                                   "<interface type=\"user\"><mac address=\"52:54:00:aa:00:01\"/>"
                                                   )).nics[0].network == "lan"


def test_guest_spec_is_the_guests_domain_essentials() -> None:
    image = GuestImage(Path("/cache/vmlinuz"), Path("/cache/initrd.gz"), Path("/cache/base.qcow2"), "6.1.0-cloud")
    spec = guest_spec(image, "g1", Path("/images/g1.qcow2"), "/images/g1.log", memory=192, dirty_mib=32,
                      domain_type="qemu", uuid=UUID, volume="g1", storage="shared", extra_cmdline=" ip=10.0.0.2 ",
                      nics=(Nic("udp", "127.0.0.1:17400", local="127.0.0.1:17401"),))
    assert spec.boot == KernelBoot("/cache/vmlinuz", "/cache/initrd.gz",
                                   "console=ttyS0 quiet panic=-1 counter=counter dirty=32 ip=10.0.0.2")
    assert spec.disks == (Disk("vda", "/images/g1.qcow2", format="qcow2", cache="none", volume="g1",
                               storage="shared"),)
    assert (spec.uuid, spec.memory, spec.vcpus, spec.domain_type) == (UUID, Memory(192), 1, "qemu")
    assert (spec.console_log, spec.serial, spec.balloon, spec.graphics) == ("/images/g1.log", True, False, ())
    assert dict(spec_paths(spec)) == {"disks[0].source": "/images/g1.qcow2", "boot.kernel": "/cache/vmlinuz",
                                      "boot.initrd": "/cache/initrd.gz", "console_log": "/images/g1.log"}
    domxml.validate(domxml.build(spec))
    other = guest_spec(image, "g2", "/images/g2.qcow2", "/images/g2.log", counter=None)
    assert other.uuid != spec.uuid and other.domain_type in ("kvm", "qemu")
    assert "counter=" not in other.boot.cmdline if other.boot else False
    with pytest.raises(ValidationError) as info:
        guest_spec(image, "g3", "relative.qcow2", "/images/g3.log", domain_type="qemu")
    assert info.value.field == "disks[0].source"
    with pytest.raises(ValidationError) as info:
        guest_spec(image, "g4", "/images/g4.qcow2", "/images/g4.log", domain_type="qemu", storage="local")
    assert info.value.field == "disks[0].storage"


@pytest.mark.parametrize(("snippet", "where"), [
    ("<sound model='ich9'/>", "/domain/devices/sound"),
    ("<interface type='ethernet'><target dev='tap0'/></interface>", "/domain/devices/interface[1]/@type"),
    ("<hostdev mode='capabilities' type='storage'><source><block>/dev/sdf</block></source></hostdev>",
     "/domain/devices/hostdev[1]"),
    ("<disk type='volume' device='disk'><source pool='p' volume='v'/><target dev='vdb'/></disk>",
     "/domain/devices/disk[1]"),
])
def test_unsupported_xml_is_rejected_naming_where(snippet: str, where: str) -> None:
    spec = VMSpec(name="a", uuid="5f0c3a9e-6a43-4f0e-9f5c-2d8b3c0b6a11", memory=Memory(256))
    xml = domxml.build(spec).replace("</devices>", f"{snippet}</devices>")
    with pytest.raises(domxml.UnsupportedXML) as info:
        domxml.parse(xml)
    assert info.value.field == where


def test_malformed_xml_is_a_clear_error() -> None:
    with pytest.raises(domxml.UnsupportedXML, match="not well-formed"):
        domxml.parse("<domain><name>x</name")


def test_requests_count_devices_and_hugepages() -> None:
    spec = VMSpec(name="gpu", uuid="5f0c3a9e-6a43-4f0e-9f5c-2d8b3c0b6a11", vcpus=4,
                  memory=Memory(4096, hugepages=1048576),
                  hostdevs=(HostDevice("pci", resource="pci/10de:1eb8"), HostDevice("pci", resource="pci/10de:1eb8")),
                  nics=(Nic("hostdev", resource="pci/8086:154c"),))
    r = spec.requests()
    assert (r.cpu, r.memory) == (4, 4096)
    assert dict(r.extended) == {"pci/10de:1eb8": 2, "pci/8086:154c": 1, "hugepages-1G": 4}
    assert not spec.migratable
