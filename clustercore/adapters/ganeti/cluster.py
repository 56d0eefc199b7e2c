"""The request's cluster as Ganeti describes it: instances (:class:`Spec`), node groups and
nodes with their N+1 bookkeeping (:class:`GanetiCluster`), and its view as a snapshot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["EXCLUSION_PREFIX", "MIRRORED", "SHARED", "UNLIMITED", "GanetiCluster", "Group", "RequestError", "Spec",
           "need"]

import attrs
import numpy as np

from clustercore.adapters.ganeti.score import RAW, group_score
from clustercore.adapters.ganeti.validate import (
    MAX_COUNT,
    MAX_CPUS,
    MAX_DISK,
    MAX_MEMORY,
    RequestError,
    flag,
    mapping,
    need,
    number,
    ratio,
    show,
    strings,
)
from clustercore.model import Host, HostState, Resources, Workload
from clustercore.scheduling.snapshot import Snapshot

MIRRORED = {"drbd"}  # internally mirrored: a secondary node
SHARED = {"sharedfile", "blockdev", "rbd", "ext", "gluster", "diskless"}  # externally mirrored
EXCLUSION_PREFIX = "htools:iextags:"
UNLIMITED = 10**12


# --------------------------------------------------------------------------- the cluster


@attrs.frozen
class Spec:
    """An instance as Ganeti describes it."""

    name: str
    memory: int
    vcpus: int
    disk: int
    disks: tuple[int, ...]
    nics: int
    spindle_use: int
    template: str
    tags: tuple[str, ...]
    nodes: tuple[str, ...] = ()
    running: bool = True

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str, name: str | None = None) -> Spec:
        """The instance ``data`` describes, every field typed and bounded (see ``validate``)."""
        if not isinstance(data, Mapping):
            raise RequestError(f"{where}: expected dict, got {show(data)}")
        disks = data.get("disks") or []
        if not isinstance(disks, list) or len(disks) > MAX_COUNT:
            raise RequestError(f"{where}.disks: expected a list of at most {MAX_COUNT} disks, got {show(disks)}")
        sizes = tuple(number(d, "size", f"{where}.disks[{i}]", MAX_DISK) for i, d in enumerate(disks))
        if sum(sizes) > MAX_DISK:
            raise RequestError(f"{where}.disks: total size {sum(sizes)} is more than {MAX_DISK}")
        nics = data.get("nics") or []
        if not isinstance(nics, list) or len(nics) > MAX_COUNT:
            raise RequestError(f"{where}.nics: expected a list of at most {MAX_COUNT} NICs, got {show(nics)}")
        nodes = strings(data, "nodes", where)
        if len(nodes) > 2 or len(set(nodes)) != len(nodes):
            raise RequestError(f"{where}.nodes: expected at most two distinct nodes, got {show(list(nodes))}")
        state = data.get("admin_state", "up")
        if not isinstance(state, str):
            raise RequestError(f"{where}.admin_state: expected str, got {show(state)}")
        return cls(
            name=name or need(data, "name", str, where),
            memory=number(data, "memory", where, MAX_MEMORY),
            vcpus=number(data, "vcpus", where, MAX_CPUS, low=1),  # hail: 0 vCPUs fit nowhere (FailCPU)
            disk=number(data, "disk_space_total", where, MAX_DISK, default=sum(sizes)),
            disks=sizes,
            nics=len(nics),
            spindle_use=number(data, "spindle_use", where, MAX_COUNT, default=1),
            template=need(data, "disk_template", str, where),
            tags=strings(data, "tags", where),
            nodes=nodes,
            running=state == "up",
        )


@attrs.frozen
class Group:
    uuid: str
    name: str
    policy: str  # preferred | last_resort | unallocable
    ipolicy: Mapping[str, Any]


class GanetiCluster:
    """The request's cluster, with N+1 bookkeeping (peers and reserved memory per node)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise RequestError("the request must be a JSON object")
        self.data = data
        self.request = need(data, "request", dict, "request file")
        cluster_ipolicy = _ipolicy(data, "request file")
        self.groups: dict[str, Group] = {}
        for uuid, g in need(data, "nodegroups", dict, "request file").items():
            where = f"nodegroups.{uuid}"
            policy = need(g, "alloc_policy", str, where) if isinstance(g, Mapping) and "alloc_policy" in g else None
            if policy not in (None, "preferred", "last_resort", "unallocable"):
                raise RequestError(f"{where}.alloc_policy: must be preferred, last_resort or unallocable, "
                                   f"got {show(policy)}")
            policy = policy or "preferred"
            self.groups[uuid] = Group(uuid, need(g, "name", str, where), policy, _ipolicy(g, where) or cluster_ipolicy)
        nodes = need(data, "nodes", dict, "request file")
        self.names = sorted(nodes)
        self.index = {n: i for i, n in enumerate(self.names)}
        n = len(self.names)
        self.t_mem, self.f_mem, self.t_dsk, self.f_dsk = (np.zeros(n) for _ in range(4))
        self.t_cpu, self.r_cpu, self.u_cpu = np.zeros(n), np.zeros(n), np.zeros(n)
        self.free_spindles, self.t_spindles = np.zeros(n), np.ones(n)
        self.hi_spindles = np.ones(n)  # spindle_count x the group's spindle-ratio
        self.u_spindles = np.zeros(n)  # spindle use of the instances on the node (primary or secondary)
        self.n_pri, self.n_sec = np.zeros(n), np.zeros(n)
        self.down_mem = np.zeros(n)  # memory of stopped primaries: free now, not once they start
        self.exclusive = np.zeros(n, dtype=bool)
        self.offline = np.zeros(n, dtype=bool)
        self.unschedulable = np.zeros(n, dtype=bool)
        self.group: list[str] = []
        for i, name in enumerate(self.names):
            nd, where = nodes[name], f"nodes.{name}"
            self.t_mem[i] = number(nd, "total_memory", where, MAX_MEMORY)
            self.f_mem[i] = number(nd, "free_memory", where, MAX_MEMORY)
            self.t_dsk[i] = number(nd, "total_disk", where, MAX_DISK)
            self.f_dsk[i] = number(nd, "free_disk", where, MAX_DISK)
            self.t_cpu[i] = number(nd, "total_cpus", where, MAX_CPUS)
            self.r_cpu[i] = number(nd, "reserved_cpus", where, MAX_CPUS, default=0)
            self.free_spindles[i] = number(nd, "free_spindles", where, MAX_COUNT, default=0)
            self.t_spindles[i] = max(number(nd, "total_spindles", where, MAX_COUNT, default=0), 1)
            ndparams = mapping(nd, "ndparams", where, default={})
            self.exclusive[i] = flag(ndparams, "exclusive_storage", f"{where}.ndparams", False)
            self.offline[i] = flag(nd, "offline", where, False)
            self.unschedulable[i] = flag(nd, "drained", where, False) or not flag(nd, "vm_capable", where, True)
            group = need(nd, "group", str, where)
            if group not in self.groups:
                raise RequestError(f"{where}.group: unknown node group {show(group)}")
            self.group.append(group)
            spindles = number(ndparams, "spindle_count", f"{where}.ndparams", MAX_COUNT, default=1) or 1
            self.hi_spindles[i] = max(ratio(self.groups[group].ipolicy, "spindle-ratio", f"nodegroups.{group}.ipolicy",
                                            32.0) * spindles, 1e-9)
        self.instances: dict[str, Spec] = {}
        self.peers: list[dict[int, float]] = [{} for _ in range(n)]  # secondary -> {primary: memory}
        self.primaries: list[list[str]] = [[] for _ in range(n)]
        self._r_mem: np.ndarray | None = None
        for name, raw in need(data, "instances", dict, "request file").items():
            spec = Spec.parse(raw, f"instances.{name}", name)
            for node in spec.nodes:
                if node not in self.index:
                    raise RequestError(f"instances.{name}.nodes: unknown node {show(node)}")
            self._place(spec)
        tags = strings(data, "cluster_tags", "request file")
        self.exclusion_prefixes = tuple(t[len(EXCLUSION_PREFIX):] for t in tags if t.startswith(EXCLUSION_PREFIX))

    @property
    def r_mem(self) -> np.ndarray:
        """Per node, the N+1 reserve: the most memory one primary fails over onto it."""
        if self._r_mem is None:
            self._r_mem = np.array([max(p.values(), default=0.0) for p in self.peers])
        return self._r_mem

    def _place(self, spec: Spec) -> None:
        self._r_mem = None
        self.instances[spec.name] = spec
        if not spec.nodes:
            return
        p = self.index[spec.nodes[0]]
        self.u_cpu[p] += spec.vcpus
        self.n_pri[p] += 1
        self.u_spindles[p] += spec.spindle_use
        if not spec.running:
            self.down_mem[p] += spec.memory
        self.primaries[p].append(spec.name)
        if len(spec.nodes) > 1 and spec.template in MIRRORED:
            s = self.index[spec.nodes[1]]
            self.peers[s][p] = self.peers[s].get(p, 0.0) + spec.memory
            self.n_sec[s] += 1
            self.u_spindles[s] += spec.spindle_use

    def allocate(self, spec: Spec, nodes: Sequence[str]) -> None:
        """Record a decision, as Ganeti would see the node afterwards."""
        p = self.index[nodes[0]]
        self.f_mem[p] -= spec.memory
        self.f_dsk[p] -= spec.disk
        if self.exclusive[p]:
            self.free_spindles[p] -= spec.spindle_use
        if len(nodes) > 1:
            s = self.index[nodes[1]]
            self.f_dsk[s] -= spec.disk
        self._place(attrs.evolve(spec, nodes=tuple(nodes)))

    def score(self, group: str) -> float:
        """The group's Ganeti cluster score now (what ``hbal`` prints as "Initial score")."""
        idx = np.array([i for i, g in enumerate(self.group) if g == group and not self.offline[i]], dtype=np.int64)
        raw = {k: getattr(self, k) for k in RAW} | {"r_mem": self.r_mem}
        return group_score({k: v[idx] for k, v in raw.items()})

    def exclusion_tags(self, spec: Spec) -> frozenset[str]:
        return frozenset(t for t in spec.tags if any(t.startswith(p) for p in self.exclusion_prefixes))

    # ------------------------------------------------------------------ the scheduler's view

    def snapshot(self, group: str) -> Snapshot:
        r_mem = self.r_mem
        hosts = []
        for i, name in enumerate(self.names):
            if self.group[i] != group:
                continue
            state = HostState.DOWN if self.offline[i] else HostState.UP
            spindles = int(self.free_spindles[i]) if self.exclusive[i] else UNLIMITED
            cores = max(int(self.t_cpu[i] - self.r_cpu[i]), 0)
            alloc = Resources(cores, int(self.f_mem[i] - r_mem[i]), {"disk": int(self.f_dsk[i]), "spindles": spindles})
            hosts.append(Host(name, capacity=alloc, state=state, schedulable=not self.unschedulable[i],
                              labels={"group": group}))
        snap = Snapshot.build(hosts, resources=("disk", "spindles"))
        used = np.zeros_like(snap.allocatable)
        column = snap.column("cpu")
        for k, host in enumerate(snap.hosts):
            used[k, column] = self.u_cpu[self.index[host.name]]
        used.flags.writeable = False
        return attrs.evolve(snap, used=used)

    def workload(self, spec: Spec) -> Workload:
        """The instance as a workload; its exclusion tags become ``extag/TAG`` labels."""
        return Workload(spec.name, "ganeti", labels={f"extag/{t}": "1" for t in self.exclusion_tags(spec)},
                        requests=Resources(spec.vcpus, spec.memory, {"disk": spec.disk, "spindles": spec.spindle_use}))



_IPOLICY_KEYS = ("memory-size", "cpu-count", "disk-count", "disk-size", "spindle-use", "nic-count")


def _ipolicy(data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The ``ipolicy`` of ``data`` (a group or the cluster), checked: disk templates a list
    of strings, ``minmax`` a list of ``{min, max}`` of bounded integers, ratios finite."""
    policy = mapping(data, "ipolicy", where, default={})
    where = f"{where}.ipolicy"
    if "disk-templates" in policy:
        strings(policy, "disk-templates", where)
    ratio(policy, "vcpu-ratio", where, 4.0)
    ratio(policy, "spindle-ratio", where, 32.0)
    minmax = policy.get("minmax") or []
    if not isinstance(minmax, list) or len(minmax) > MAX_COUNT:
        raise RequestError(f"{where}.minmax: expected a list, got {show(minmax)}")
    for i, bounds in enumerate(minmax):
        if not isinstance(bounds, Mapping):
            raise RequestError(f"{where}.minmax[{i}]: expected dict, got {show(bounds)}")
        for side in ("min", "max"):
            if side not in bounds:
                continue
            limits = mapping(bounds, side, f"{where}.minmax[{i}]")
            for key in _IPOLICY_KEYS:
                if key in limits:
                    number(limits, key, f"{where}.minmax[{i}].{side}", MAX_DISK)
    return policy
