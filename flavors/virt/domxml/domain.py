"""``<domain>``: :func:`build` writes a :class:`VMSpec` in XML order, one writer per part,
and :func:`parse` reads it back with the parts' readers."""

from __future__ import annotations

from typing import Any

from lxml import etree

from clustercore.errors import ValidationError
from flavors.virt.domxml.boot import read_os, write_os
from flavors.virt.domxml.common import UnsupportedXML, attributes, el, only, parse_xml
from flavors.virt.domxml.cpu import read_cpu, read_vcpus, write_cpu, write_vcpus
from flavors.virt.domxml.devices import read_devices, write_devices
from flavors.virt.domxml.memory import read_memory, write_memory
from flavors.virt.domxml.metadata import read_metadata, write_metadata
from flavors.virt.spec import NAME_RE, UUID_RE, VMSpec

# What libvirt adds by itself or what the spec leaves to libvirt's defaults.
_IGNORED_TOP = {"pm", "resource", "genid", "title",
                "description", "vcpus", "iothreads"}
_IGNORED_FEATURES = {"acpi", "apic", "pae", "vmport", "smm", "vmcoreinfo"}
# Lifecycle actions: the spec runs libvirt's defaults; any other is refused by name.
_LIFECYCLE = {"on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "destroy"}
# What libvirt writes itself for a dynamic label: generated, so nothing is lost rebuilding.
_GENERATED_LABEL = {"label", "imagelabel"}


def build(spec: VMSpec) -> str:
    """The domain XML of ``spec`` (every host device must be bound to an address)."""
    spec.check()
    root = etree.Element("domain", type=spec.domain_type)
    el(root, "name", spec.name)
    el(root, "uuid", spec.uuid)
    write_metadata(root, spec)
    write_memory(root, spec)
    write_vcpus(root, spec)
    write_os(root, spec)
    features = el(root, "features")
    el(features, "acpi")
    el(features, "apic")
    if spec.firmware.secure_boot:
        el(features, "smm", state="on")
    write_cpu(root, spec)
    el(root, "clock", offset=spec.clock)
    write_devices(root, spec)
    return str(etree.tostring(root, pretty_print=True, encoding="unicode"))


def parse(xml: str) -> VMSpec:
    """The :class:`VMSpec` of a domain XML (ours, or libvirt's rendering of any domain),
    checked as :meth:`VMSpec.from_dict` checks a dict. Anything the spec cannot carry
    (security labels, lifecycle actions other than libvirt's defaults, disk driver or
    graphics settings it has no field for) is refused with :class:`UnsupportedXML` naming
    it; every error is an UnsupportedXML (a ValidationError), never a bare ValueError."""
    root = parse_xml(xml)
    try:
        return _parse(root)
    except ValidationError:  # UnsupportedXML among them (a ValidationError is a ValueError too)
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError) as exc:
        raise UnsupportedXML("/domain", f"unreadable: {type(exc).__name__}: {str(exc)[:200]}") from None


def _parse(root: etree._Element) -> VMSpec:
    if root.tag != "domain":
        raise UnsupportedXML("/", "the root element must be <domain>", root.tag)
    only(root, {"name", "uuid", "metadata", "maxMemory", "memory", "currentMemory", "memoryBacking", "vcpu",
                "cputune", "numatune", "os", "features", "cpu", "clock", "devices", "seclabel"} | set(_LIFECYCLE)
         | _IGNORED_TOP, "/domain")
    fields: dict[str, Any] = {"name": _text(root, "name"), "uuid": _text(root, "uuid")}
    if not NAME_RE.match(fields["name"]) or root.findtext("name") != fields["name"]:
        raise UnsupportedXML("/domain/name", f"must match {NAME_RE.pattern}", fields["name"][:100])
    if not UUID_RE.match(fields["uuid"]):
        raise UnsupportedXML("/domain/uuid", "must be a lowercase uuid", fields["uuid"][:100])
    _check_security(root)
    domain_type = root.get("type", "kvm")
    if domain_type not in ("kvm", "qemu"):
        raise UnsupportedXML("/domain/@type", "only kvm and qemu domains", domain_type)
    fields["domain_type"] = domain_type
    clock = root.find("clock")
    if clock is not None:
        offset = clock.get("offset", "utc")
        if offset not in ("utc", "localtime"):
            raise UnsupportedXML("/domain/clock/@offset", "only utc and localtime clocks", offset)
        fields["clock"] = offset  # its timers are tuning libvirt picks by itself
    meta = read_metadata(root)
    fields["memory"] = read_memory(root, meta)
    read_vcpus(root, fields)
    read_os(root, fields)
    only(root.find("features"), _IGNORED_FEATURES, "/domain/features")
    read_cpu(root, fields)
    read_devices(root, fields, meta)
    try:
        return VMSpec(**fields).check()
    except ValidationError as exc:
        raise UnsupportedXML(exc.field, exc.problem, exc.value) from None
    except TypeError as exc:
        raise UnsupportedXML("/domain", str(exc)) from None


def _check_security(root: etree._Element) -> None:
    """Lifecycle actions and security labels the spec does not carry are refused by name."""
    for tag, default in _LIFECYCLE.items():
        node = root.find(tag)
        if node is not None and (node.text or "").strip() != default:
            raise UnsupportedXML(f"/domain/{tag}", f"only libvirt's default ({default}) is carried by the VM spec",
                                 (node.text or "").strip()[:50])
    for i, label in enumerate(root.findall("seclabel"), 1):
        at = f"/domain/seclabel[{i}]"
        if label.get("type", "dynamic") != "dynamic" or label.get("relabel", "yes") != "yes":
            raise UnsupportedXML(at, "only libvirt's default confinement (a dynamic label, relabelled) is carried "
                                 "by the VM spec", etree.tostring(label, encoding="unicode")[:200])
        only(label, _GENERATED_LABEL, at)
        attributes(label, {"type", "model", "relabel"}, at)


def _text(root: etree._Element, path: str) -> str:
    node = root.find(path)
    if node is None or not (node.text or "").strip():
        raise UnsupportedXML(f"/domain/{path}", "is required")
    return str(node.text).strip()
