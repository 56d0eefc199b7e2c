"""VMs as clustercore workloads: a :class:`VMSpec` in ``Workload.spec``, its resource
requests derived from it, and adoption of domains already running on a host."""

from __future__ import annotations

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


def adopt(xml: str, host: str) -> Workload:
    """A workload for a domain already defined on ``host`` (its libvirt XML). A VM that
    cannot live-migrate (passthrough devices, host-passthrough CPU) stays pinned to it."""
    spec = domxml.parse(xml)
    return vm_workload(spec, pinned=frozenset() if spec.migratable else frozenset({host}))
