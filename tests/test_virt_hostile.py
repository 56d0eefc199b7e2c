"""Hostile input to the virt flavor (issue 14, items 3-8): each attack reproduced and
refused with a typed error, the store unchanged and nothing started; hypothesis over the
VM spec and domain XML entry points (only success or the typed error, each input in
under 1 s and 100 MB)."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustercore import Cluster, FakeClock, Host, HostReport, HostState, Plugins
from clustercore.errors import ValidationError
from flavors.virt import VirtFlavor, cloudinit, domxml
from flavors.virt.driver import LibvirtDriver, VirtError
from flavors.virt.spec import CloudInit, Disk, Graphics, KernelBoot, Memory, Nic, NumaCell, Pin, VMSpec
from flavors.virt.workload import adopt, vm_workload
from tests.virt_strategies import vm_specs

DATA = Path(__file__).parent / "data" / "virt"
PLAIN_HOST = f"test://{DATA / 'plain-host.xml'}"
BRIDGE = (DATA / "server-virtio-bridge.xml").read_text()


def vm(name: str, uid: str | None = None, **fields: Any) -> VMSpec:
    return VMSpec(name=name, uuid=uid or str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), memory=Memory(256),
                  domain_type="qemu", **fields).check()


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    return root


@pytest.fixture
def cluster(roots: Path) -> Iterator[Cluster]:
    clock = FakeClock()
    driver = LibvirtDriver(shutdown_timeout=0.5, storage_roots=[str(roots)])
    c = Cluster(plugins=Plugins([VirtFlavor(driver)], entry_points=False), clock=clock)
    c.configure({"storage_roots": [str(roots)]})
    c.register_host({"name": "plain", "address": PLAIN_HOST, "capacity": {"cpu": 16, "memory": 65536}})
    for _ in range(2):
        c.heartbeat("plain", HostReport())
        clock.advance(5)
        c.step()
    assert c.host("plain").state is HostState.UP
    yield c
    for name in list(c.placements()):
        c.stop(name)
    driver.close()


def domains(cluster: Cluster) -> list[str]:
    conn = cluster.plugins.driver("vm").connect(cluster.host("plain"))  # type: ignore[attr-defined]
    return sorted(d.UUIDString() for d in conn.listAllDomains(0))


def refused(cluster: Cluster, workload: Any, field: str) -> ValidationError:
    """``workload`` is refused by the flavor's hook and by submit, naming ``field``, and
    nothing is written or started."""
    before = (dict(cluster.workloads()), dict(cluster.placements()), domains(cluster))
    with pytest.raises(ValidationError) as direct:
        cluster.plugins.validate_workload(workload, cluster.workloads(), cluster.config)
    assert field in direct.value.field, direct.value
    with pytest.raises(ValidationError) as info:
        cluster.submit(workload)
    assert field in str(info.value)
    assert (dict(cluster.workloads()), dict(cluster.placements()), domains(cluster)) == before
    return direct.value


# --------------------------------------------------------------------------- 3: one uuid, one VM


def test_a_second_workload_with_a_taken_uuid_is_refused(cluster: Cluster) -> None:
    first = vm("first")
    cluster.submit(vm_workload(first))
    twin = vm_workload(vm("twin", uid=first.uuid))
    error = refused(cluster, twin, "spec.uuid")
    assert "'first'" in error.problem
    cluster.stop("first")  # the first VM is still its own
    assert domains(cluster) == []


def test_a_mac_taken_by_another_vm_or_twice_in_one_is_refused(cluster: Cluster) -> None:
    mac = "52:54:00:00:00:0a"
    cluster.submit(vm_workload(vm("first", nics=(Nic("user", mac=mac),))))
    error = refused(cluster, vm_workload(vm("second", nics=(Nic("user", mac=mac),))), "spec.nics")
    assert "'first'" in error.problem
    with pytest.raises(ValidationError, match="share a MAC"):  # within one VM: the spec's own rule
        vm("double", nics=(Nic("user", mac="52:54:00:00:00:0b"), Nic("user", mac="52:54:00:00:00:0b")))


# --------------------------------------------------------------------------- 4: paths


def test_disk_and_seed_paths_outside_every_storage_root_are_refused(cluster: Cluster, roots: Path,
                                                                   tmp_path: Path) -> None:
    refused(cluster, vm_workload(vm("shadow", disks=(Disk("vda", "/etc/shadow"),))), "spec.disks[0].source")
    keys = tmp_path / "home" / ".ssh" / "authorized_keys"
    seed = CloudInit(str(keys), "ssh-ed25519 AAAA attacker\n")
    refused(cluster, vm_workload(vm("seed", cloud_init=seed)), "spec.cloud_init.seed")
    refused(cluster, vm_workload(vm("dots", disks=(Disk("vda", f"{roots}/../../etc/shadow"),))),
            "spec.disks[0].source")
    (roots / "escape").symlink_to("/etc")
    refused(cluster, vm_workload(vm("link", disks=(Disk("vda", f"{roots}/escape/shadow"),))),
            "spec.disks[0].source")
    with pytest.raises(ValidationError):
        VMSpec.from_dict({"name": "rel", "uuid": str(uuid.uuid4()), "memory": {"size": 1},
                          "cloud_init": {"seed": "seeds/ci.iso"}})
    assert not (tmp_path / "home").exists()
    inside = CloudInit(str(roots / "seeds" / "ci.iso"), "#cloud-config\n")
    assert cluster.plugins.validate_workload(vm_workload(vm("fine", cloud_init=inside)), cluster.workloads(),
                                             cluster.config) is None


def test_kernel_initrd_and_console_log_outside_every_storage_root_are_refused(cluster: Cluster,
                                                                             roots: Path) -> None:
    inside = str(roots / "guest" / "vmlinuz")
    refused(cluster, vm_workload(vm("kernel", boot=KernelBoot("/etc/shadow"))), "spec.boot.kernel")
    refused(cluster, vm_workload(vm("initrd", boot=KernelBoot(inside, f"{roots}/../../etc/shadow"))),
            "spec.boot.initrd")
    # A console log is written by QEMU (as root): outside a root it could append to any file.
    refused(cluster, vm_workload(vm("log", console_log="/etc/profile.d/evil.sh")), "spec.console_log")
    (roots / "escape").symlink_to("/etc")
    refused(cluster, vm_workload(vm("linklog", console_log=f"{roots}/escape/passwd")), "spec.console_log")
    fine = vm("fine", boot=KernelBoot(inside, str(roots / "guest" / "initrd.gz"), "console=ttyS0"),
              console_log=str(roots / "fine.log"))
    assert cluster.plugins.validate_workload(vm_workload(fine), cluster.workloads(), cluster.config) is None


def test_the_seed_writer_refuses_outside_a_root_and_creates_no_directory_there(roots: Path,
                                                                              tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "deep" / "authorized_keys"
    with pytest.raises(ValidationError, match="storage root"):
        cloudinit.write_seed(CloudInit(str(outside), "key"), [str(roots)])
    assert not (tmp_path / "elsewhere").exists()
    (roots / "out").symlink_to(tmp_path)
    with pytest.raises(ValidationError):
        cloudinit.write_seed(CloudInit(str(roots / "out" / "made" / "x.iso"), "key"), [str(roots)])
    assert not (tmp_path / "made").exists()
    written = cloudinit.write_seed(CloudInit(str(roots / "a" / "b" / "ci.iso"), "#cloud-config\n"), [str(roots)])
    assert cloudinit.read_seed(written)["user-data"] == "#cloud-config\n"


def test_the_driver_refuses_to_start_a_vm_whose_paths_left_the_roots(roots: Path) -> None:
    driver = LibvirtDriver(storage_roots=[str(roots)])
    host = Host("plain", address=PLAIN_HOST, state=HostState.UP)
    with pytest.raises(VirtError, match=r"cloud_init\.seed"):
        driver.start(vm_workload(vm("late", cloud_init=CloudInit("/root/.ssh/authorized_keys", "k"))), host)
    assert driver.connect(host).listAllDomains(0) == []
    driver.close()


# --------------------------------------------------------------------------- 5: cpusets


def bounded(fn: Callable[[], object], seconds: float = 1.0, megabytes: int = 100) -> object:
    """Run ``fn``; assert it took under ``seconds`` and peaked under ``megabytes``."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        return fn()
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < seconds and peak < megabytes * 2**20, (elapsed, peak)


@pytest.mark.parametrize("where", ["pins", "numa"])
def test_a_huge_cpuset_is_refused_without_being_expanded(cluster: Cluster, where: str) -> None:
    data: dict[str, Any] = {"name": "wide", "uuid": str(uuid.uuid4()), "memory": {"size": 256}, "vcpus": 2,
                            "domain_type": "qemu"}
    if where == "pins":
        data["pins"] = [{"vcpu": 0, "cpuset": "0-999999999"}]
    else:
        data["numa"] = [{"cpus": "0-999999999", "memory": 256}]

    def read() -> None:
        with pytest.raises(ValidationError) as info:
            VMSpec.from_dict(data, "spec")
        assert info.value.field == ("spec.pins[0].cpuset" if where == "pins" else "spec.numa[0].cpus")

    bounded(read)
    from clustercore.model import Workload

    workload = Workload.from_dict({"name": "wide", "flavor": "vm", "requests": {"cpu": 2, "memory": 256}, "spec": data})
    bounded(lambda: refused(cluster, workload, "cpus" if where == "numa" else "cpuset"))
    # Typed objects built in Python are not expanded either, and check() refuses them.
    def typed() -> None:
        with pytest.raises(ValidationError):
            vm("p", vcpus=2, pins=(Pin(0, "0-99999999"),))
        with pytest.raises(ValidationError):
            vm("n", numa=(NumaCell("0-4096", 256),))

    bounded(typed)
    assert Pin(0, "3,2,0-1").cpuset == "0-3"  # valid sets are still canonical


# --------------------------------------------------------------------------- 6: domain XML like the spec


BASE = domxml.build(vm("base", disks=(Disk("vda", "/var/lib/libvirt/images/base.img"),)))


@pytest.mark.parametrize(("old", "new", "where"), [
    ("bus=\"virtio\"", "bus=\"ide\"", "/domain/devices/disk[1]/target/@bus"),
    (">1</vcpu>", ">0</vcpu>", "/domain/vcpu"),
    (">1</vcpu>", ">lots</vcpu>", "/domain/vcpu"),
    (">1</vcpu>", ">1000000</vcpu>", "/domain/vcpu"),
    ("<name>base</name>", "<name>a/b c</name>", "/domain/name"),
    ("<name>base</name>", "<name>base&#10;</name>", "/domain/name"),
    ("<memory unit=\"KiB\">262144<", "<memory unit=\"KiB\">" + "9" * 30 + "<", "/domain/memory"),
    ("<memory unit=\"KiB\">262144<", "<memory unit=\"KiB\">-1<", "/domain/memory"),
])
def test_domain_xml_is_checked_like_a_spec(old: str, new: str, where: str) -> None:
    assert old in BASE
    with pytest.raises(domxml.UnsupportedXML) as info:
        domxml.parse(BASE.replace(old, new))
    assert info.value.field == where


def test_spec_patterns_reject_a_trailing_newline_and_integers_are_bounded() -> None:
    good = vm("ok", disks=(Disk("vda", "/var/lib/libvirt/images/a.img"),)).to_dict()
    for path, value in ((("name",), "ok\n"), (("disks", 0, "source"), "/var/lib/libvirt/images/a.img\n"),
                        (("vcpus",), 10**6), (("memory", "size"), 10**30), (("nics",), [{"kind": "user",
                         "mac": "52:54:00:00:00:01\n"}]), (("graphics",), [{"listen": "127.0.0.1\n"}])):
        data = vm("ok").to_dict() | {k: v for k, v in good.items() if k == "disks"}
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(ValidationError):
            VMSpec.from_dict(data, "spec")


def test_entities_and_dtds_are_not_read() -> None:
    xxe = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + BASE.replace(
        "<name>base</name>", "<name>&x;</name>")
    with pytest.raises(domxml.UnsupportedXML):
        domxml.parse(xxe)


# --------------------------------------------------------------------------- 7: host URIs


@pytest.mark.parametrize("address", ["", "qemu+tcp:/10.0.0.9/system", "qemu+tcp//10.0.0.9/system",
                                     "qemu:///system\n", "qemu+tcp://10.0.0.9:99999/system"])
def test_a_host_whose_address_is_not_a_libvirt_uri_fails_its_join(address: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real = libvirt.open
    monkeypatch.setattr(libvirt, "open", lambda uri=None: opened.append(uri) or real(uri))
    clock = FakeClock()
    c = Cluster(plugins=Plugins([VirtFlavor(LibvirtDriver())], entry_points=False), clock=clock)
    c.register_host({"name": "typo", "address": address, "capacity": {"cpu": 4, "memory": 4096}})
    for _ in range(2):
        c.heartbeat("typo", HostReport())
        clock.advance(5)
        c.step()
    host = c.host("typo")
    assert host.state is HostState.INSTALL_FAILED
    assert ("empty" in host.reason) if not address else (address.strip()[:20] in host.reason)
    assert opened == []
    with pytest.raises(VirtError, match="libvirt URI"):
        LibvirtDriver().connect(Host("typo", address=address))
    assert opened == []


# --------------------------------------------------------------------------- 8: adoption keeps security


def test_adoption_carries_the_display_password_and_never_listens_open_without_it() -> None:
    xml = BRIDGE.replace("autoport='yes' listen='127.0.0.1'>", "autoport='yes' listen='0.0.0.0' passwd='s3cret'>")
    xml = xml.replace("<listen type='address' address='127.0.0.1'/>", "<listen type='address' address='0.0.0.0'/>")
    workload = adopt(xml, "plain")
    spec = VMSpec.from_dict(workload.spec.thaw(), "spec")
    assert spec.graphics == (Graphics("vnc", "0.0.0.0", password="s3cret"),)
    assert "s3cret" not in repr(spec)
    rebuilt = domxml.build(spec)
    domxml.validate(rebuilt)
    assert "passwd=\"s3cret\"" in rebuilt and domxml.parse(rebuilt) == spec


@pytest.mark.parametrize(("old", "new", "where"), [
    ("<seclabel type='dynamic' model='dac' relabel='yes'/>", "<seclabel type='none'/>", "/domain/seclabel[1]"),
    ("<seclabel type='dynamic' model='dac' relabel='yes'/>",
     "<seclabel type='static' model='selinux' relabel='no'><label>system_u:system_r:svirt_t:s0:c1</label>"
     "</seclabel>", "/domain/seclabel[1]"),
    ("<seclabel type='dynamic' model='dac' relabel='yes'/>",
     "<seclabel type='dynamic' model='selinux'><baselabel>x</baselabel></seclabel>",
     "/domain/seclabel[1]/baselabel"),
    ("<on_crash>destroy</on_crash>", "<on_crash>coredump-restart</on_crash>", "/domain/on_crash"),
    ("<on_poweroff>destroy</on_poweroff>", "<on_poweroff>preserve</on_poweroff>", "/domain/on_poweroff"),
    ("<on_reboot>restart</on_reboot>", "<on_reboot>destroy</on_reboot>", "/domain/on_reboot"),
    ("cache='none' io='native' discard='unmap'/>", "cache='none' io='native' discard='unmap' "
     "detect_zeroes='unmap'/>", "/domain/devices/disk[1]/driver/@detect_zeroes"),
    ("cache='none' io='native' discard='unmap'/>", "cache='none' io='native' error_policy='ignore'/>",
     "/domain/devices/disk[1]/driver/@error_policy"),
    ("listen='127.0.0.1'>", "listen='127.0.0.1' keymap='de'>", "/domain/devices/graphics[1]/@keymap"),
    ("listen='127.0.0.1'>", "listen='127.0.0.1' passwdValidTo='2030-01-01T00:00:00'>",
     "/domain/devices/graphics[1]/@passwdValidTo"),
    ("<listen type='address' address='127.0.0.1'/>", "<listen type='socket' socket='/tmp/vnc'/>",
     "/domain/devices/graphics[1]/listen[1]/@socket"),
])
def test_adoption_refuses_settings_it_would_drop_naming_each(old: str, new: str, where: str) -> None:
    assert old in BRIDGE
    with pytest.raises(domxml.UnsupportedXML) as info:
        adopt(BRIDGE.replace(old, new, 1), "plain")
    assert info.value.field == where


def test_disk_driver_settings_are_carried_over() -> None:
    spec = domxml.parse(BRIDGE)
    rebuilt = domxml.build(spec)
    assert "cache=\"none\" io=\"native\" discard=\"unmap\"" in rebuilt


# --------------------------------------------------------------------------- hypothesis: entry points


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
                    | st.text(max_size=30) | st.sampled_from(["0-999999999", "vm\n", "/etc/shadow", "ide", "",
                                                             "0-4095", "a/b c", "udp", "127.0.0.1:0",
                                                             "127.0.0.1:99999", "host:5000", "shared", "quiet\x1b",
                                                             "x" * 5000]),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                max_size=4), max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    data[path[0]] = _set(data[path[0]], path[1:], value)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vm_specs(), st.data())
def test_arbitrary_spec_dicts_give_a_spec_or_a_validation_error(spec: VMSpec, data: st.DataObject) -> None:
    raw = spec.to_dict()
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(raw)))
        raw = _set(raw, path, data.draw(JSON))

    def read() -> None:
        with contextlib.suppress(ValidationError):
            VMSpec.from_dict(raw, "spec").check()

    bounded(read)


def _mutations(xml: str) -> st.SearchStrategy[str]:
    junk = st.sampled_from(["0", "-1", "lots", "999999999999999999999", "0-999999999", "ide", "a/b c", "\n", "",
                            "<x/>", "'", "&amp;", "none", "0x10000", "</devices>", "<seclabel type='none'/>"])
    cut = st.integers(0, len(xml))

    def splice(args: tuple[int, int, str]) -> str:
        a, b, text = args
        lo, hi = sorted((a, b))
        return xml[:lo] + text + xml[min(hi, lo + 40):]

    replace_value = st.tuples(cut, cut, junk | st.text(max_size=8)).map(splice)
    attr = st.tuples(st.sampled_from([m for m in ('"', ">") if m in xml]), cut, junk).map(
        lambda t: xml[:t[1]] + xml[t[1]:].replace(t[0], t[0] + t[2], 1))
    return replace_value | attr


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vm_specs(passthrough=False), st.data())
def test_mutated_domain_xml_gives_a_spec_or_unsupported_xml(spec: VMSpec, data: st.DataObject) -> None:
    xml = data.draw(st.sampled_from([domxml.build(spec), BRIDGE]))
    for _ in range(data.draw(st.integers(1, 3))):
        xml = data.draw(_mutations(xml))

    def read() -> None:
        try:
            parsed = domxml.parse(xml)
        except domxml.UnsupportedXML:
            return
        with contextlib.suppress(domxml.UnboundDevice):
            domxml.build(parsed)  # what parses also builds

    bounded(read)
