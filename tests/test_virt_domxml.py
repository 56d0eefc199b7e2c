"""Domain XML: every generated document validates against libvirt's schema, defines on
libvirt's test driver and parses back to the same spec; bad input names its field."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest
from hypothesis import HealthCheck, given, settings

from clustercore.errors import ValidationError
from flavors.virt import domxml
from flavors.virt.spec import HostDevice, Memory, Nic, VMSpec
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
