"""The cluster's logical networks on libvirt hosts, and the MAC pool.

A VM's NIC joins a logical network by naming it (``Nic(kind="network", network="lan")``,
or ``source="lan"`` with no ``network``). When the VM is submitted the flavor completes
the NIC through its :class:`NetworkBackend`: what the NIC is on the hosts.

* :class:`LibvirtNetworks` (the default): each logical network is a libvirt network of
  that name on every host, forwarding to the host bridge ``bridges.get(name, "br-NAME")``
  (which carries the VLAN and MTU: libvirt takes neither for a bridged network); the NIC
  is ``<interface type='network'>``. The probe defines and starts
  the libvirt network where it is missing, and a host reaches the logical network while
  it is active there.
* :class:`UdpNetworks` (the lab): each logical network is a :class:`~flavors.virt.
  labswitch.LabSwitch` at a UDP address; the NIC is ``<interface type='udp'>`` to that
  switch from a local port of its own, derived from its MAC (so unique in the cluster
  and kept across a migration). No bridge, no tap, nothing changed on the machine's
  network (see the GUEST notes); every host reaches the networks it has a switch for.

The **MAC pool** (:class:`MacPool`, ``52:54:00:cc:00:00``-``52:54:00:cc:ff:ff`` by
default, as oVirt's per-cluster pools) gives every NIC without a MAC the lowest one no VM
workload of the cluster uses (a NIC may bring its own MAC, outside the pool too). Two NICs
never share one: the flavor's validation refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol
from xml.sax.saxutils import escape

import attrs
import libvirt

from clustercore.errors import ValidationError
from clustercore.network import LogicalNetwork
from flavors.virt.spec import Nic


def mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def mac_text(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


@attrs.frozen
class MacPool:
    """MACs ``first``..``last`` (inclusive)."""

    first: str = "52:54:00:cc:00:00"
    last: str = "52:54:00:cc:ff:ff"

    def __attrs_post_init__(self) -> None:
        if mac_int(self.first) > mac_int(self.last) or mac_int(self.first) & 0x010000000000:
            raise ValueError(f"MAC pool {self.first}-{self.last}: a range of unicast MACs")

    def __contains__(self, mac: str) -> bool:
        return mac_int(self.first) <= mac_int(mac) <= mac_int(self.last)

    def offset(self, mac: str) -> int:
        return mac_int(mac) - mac_int(self.first)

    def assign(self, count: int, taken: Iterable[str]) -> list[str]:
        """``count`` free MACs, lowest first; ValidationError when the pool is exhausted."""
        used = {mac_int(m) for m in taken}
        out: list[str] = []
        value = mac_int(self.first)
        while len(out) < count:
            if value > mac_int(self.last):
                raise ValidationError("workload", "spec.nics", f"MAC pool {self.first}-{self.last} is exhausted")
            if value not in used:
                out.append(mac_text(value))
            value += 1
        return out


class NetworkBackend(Protocol):
    def nic(self, nic: Nic, network: LogicalNetwork, pool: MacPool) -> Nic:
        """What ``nic`` (with its MAC assigned) is on the hosts, to join ``network``."""

    def realize(self, conn: libvirt.virConnect, network: LogicalNetwork) -> bool:
        """Make ``network`` exist on the host behind ``conn``; whether the host reaches it."""


@attrs.frozen
class LibvirtNetworks:
    """Logical networks as libvirt networks bridged onto host bridges."""

    bridges: Mapping[str, str] = attrs.field(factory=dict)

    def bridge(self, network: LogicalNetwork) -> str:
        return self.bridges.get(network.name, f"br-{network.name}"[:15])

    def xml(self, network: LogicalNetwork) -> str:
        return (f"<network><name>{escape(network.name)}</name><forward mode='bridge'/>"
                f"<bridge name='{escape(self.bridge(network))}'/></network>")

    def nic(self, nic: Nic, network: LogicalNetwork, pool: MacPool) -> Nic:
        return attrs.evolve(nic, kind="network", source=network.name, network=network.name, local=None)

    def realize(self, conn: libvirt.virConnect, network: LogicalNetwork) -> bool:
        try:
            try:
                found = conn.networkLookupByName(network.name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                found = conn.networkDefineXML(self.xml(network))
                found.setAutostart(1)
            if not found.isActive():
                found.create()
            return bool(found.isActive())
        except libvirt.libvirtError:
            return False


@attrs.frozen
class UdpNetworks:
    """Logical networks as UDP switches (``switches``: name -> ``ADDR:PORT``); a NIC's
    local port is ``local_base`` plus its MAC's offset in the pool."""

    switches: Mapping[str, str]
    local_address: str = "127.0.0.1"
    local_base: int = 30000

    def nic(self, nic: Nic, network: LogicalNetwork, pool: MacPool) -> Nic:
        switch = self.switches.get(network.name)
        if switch is None:
            raise ValidationError("workload", "spec.nics", f"logical network {network.name} has no switch here",
                                  network.name)
        mac = str(nic.mac)
        port = self.local_base + pool.offset(mac)
        if mac not in pool or port > 65535:
            raise ValidationError("workload", "spec.nics", f"MAC {mac} gives no UDP port here (pool {pool.first}-"
                                  f"{pool.last}, ports from {self.local_base})", mac)
        return attrs.evolve(nic, kind="udp", source=switch, local=f"{self.local_address}:{port}",
                            network=network.name)

    def realize(self, conn: libvirt.virConnect, network: LogicalNetwork) -> bool:
        return network.name in self.switches


def logical_name(nic: Nic) -> str | None:
    """The logical network a NIC asks for (``network``, or a kind network NIC's source)."""
    return nic.network or (nic.source if nic.kind == "network" else None)


def complete_nics(nics: tuple[Nic, ...], networks: Mapping[str, LogicalNetwork], backend: NetworkBackend,
                  pool: MacPool, taken: Iterable[str]) -> tuple[tuple[Nic, ...], frozenset[str]]:
    """The NICs with MACs from the pool and joined to their logical networks through the
    backend, and the logical networks they are on. A kind network NIC whose source is no
    logical network is a plain libvirt network, left as it is."""
    own = [n.mac for n in nics if n.mac]  # never given again to another NIC of the same VM
    fresh = iter(pool.assign(sum(1 for n in nics if not n.mac), [*taken, *own]))
    out, joined = [], set()
    for i, nic in enumerate(nics):
        if not nic.mac:
            nic = attrs.evolve(nic, mac=next(fresh))
        name = logical_name(nic)
        if name is not None and name in networks:
            nic = backend.nic(nic, networks[name], pool)
            joined.add(name)
        elif nic.network is not None:
            raise ValidationError("workload", f"spec.nics[{i}].network", "no such logical network", nic.network)
        out.append(nic)
    return tuple(out), frozenset(joined)
