"""VMs as clustercore workloads: a :class:`VMSpec` in ``Workload.spec``, its resource
requests derived from it, and adoption of domains already running on a host."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from clustercore.model import Workload
from flavors.virt import domxml
from flavors.virt.spec import KIND, VMSpec


def vm_workload(spec: VMSpec, *, ha: bool = False, priority: int = 0, pinned: frozenset[str] = frozenset(),
                labels: dict[str, str] | None = None) -> Workload:
    """The workload of ``spec``: flavor ``vm``, requests from the spec (vCPUs, memory,
    hugepages, devices asked for by resource name)."""
    return Workload(spec.name, KIND, requests=spec.requests(), ha=ha, priority=priority, pinned=pinned,
                    labels=labels or {}, spec=spec.to_dict())


def vm_spec(workload: Workload) -> VMSpec:
    """The spec a ``vm`` workload carries (validated; errors name ``spec.<field>``)."""
    return VMSpec.from_dict(workload.spec.thaw(), "spec")


def adopt(xml: str, host: str, facts: Mapping[str, Any] | None = None) -> Workload:
    """A workload for a domain already defined on ``host`` (its libvirt XML). With the
    host's facts (:mod:`flavors.virt.hostfacts`), PCI devices it holds by address are
    named (``pci/10de:1eb8``) so the scheduler counts them. A VM that cannot live-migrate
    (passthrough devices, host-passthrough CPU) stays pinned to ``host``.

    Pass libvirt's ``dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)``: without that flag libvirt
    leaves VNC/SPICE passwords out, and the rebuilt display would have none. Settings the
    spec does not carry (security labels, lifecycle actions, disk driver tuning, display
    options) refuse the domain with UnsupportedXML naming them (:func:`domxml.parse`)."""
    spec = domxml.parse(xml)
    if facts:
        names = {d["address"]: f"pci/{d['vendor']}:{d['product']}" for d in facts.get("pci", ())}
        spec = attrs.evolve(
            spec,
            hostdevs=tuple(attrs.evolve(d, resource=d.resource or names.get(d.address or ""))
                           if d.kind == "pci" else d for d in spec.hostdevs),
            nics=tuple(attrs.evolve(n, resource=n.resource or names.get(n.source or ""))
                       if n.kind == "hostdev" else n for n in spec.nics)).check()
    return vm_workload(spec, pinned=frozenset() if spec.migratable else frozenset({host}))
