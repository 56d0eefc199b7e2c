"""Logical networks: the networks workloads attach to, generically.

A logical network has a name, an optional VLAN and an MTU. ``required`` ones must be
reached by every host that runs workloads (a host that loses one goes NonOperational
until it is back, as an oVirt required network); optional ones only by the hosts that run
workloads naming them (a workload's ``networks``: the scheduler's connectivity filter). A
flavor realizes them on each host (the virt flavor: libvirt networks) and probes them
(``clustercore_probe_host``).
"""

from __future__ import annotations

from typing import Any

import attrs

from clustercore.values import NAME_RE, Reader


@attrs.frozen
class LogicalNetwork:
    name: str
    vlan: int | None = None
    mtu: int = 1500
    required: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "vlan": self.vlan, "mtu": self.mtu, "required": self.required}

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> LogicalNetwork:
        r = Reader("logical network", data, path)
        vlan = None if r.get("vlan") is None else r.integer("vlan", minimum=1, maximum=4094)
        network = cls(r.string("name", pattern=NAME_RE), vlan, r.integer("mtu", 1500, minimum=68, maximum=65535),
                      r.boolean("required", False))
        r.done()
        return network
