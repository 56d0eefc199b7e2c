"""The request's cluster as Ganeti describes it: instances (:class:`Spec`), node groups and
nodes with their N+1 bookkeeping (:class:`GanetiCluster`), and its view as a snapshot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from clustercore.adapters.ganeti.score import RAW, group_score
from clustercore.model import Host, HostState, Resources, Workload
from clustercore.scheduling.snapshot import Snapshot

MIRRORED = {"drbd"}  # internally mirrored: a secondary node
SHARED = {"sharedfile", "blockdev", "rbd", "ext", "gluster", "diskless"}  # externally mirrored
EXCLUSION_PREFIX = "htools:iextags:"
UNLIMITED = 10**12


class RequestError(ValueError):
    """The request is malformed; the message says where."""


def need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``data[key]``, checked to be a ``kind``; RequestError naming ``where`` otherwise."""
    if not isinstance(data, Mapping) or key not in data:
        raise RequestError(f"{where}: missing {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise RequestError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


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
        disks = need(data, "disks", list, where) if "disks" in data else []
        sizes = tuple(int(need(d, "size", int, f"{where}.disks[{i}]")) for i, d in enumerate(disks))
        total = data.get("disk_space_total", sum(sizes))
        if not isinstance(total, int):
            raise RequestError(f"{where}.disk_space_total: expected int, got {total!r}")
        return cls(
            name=name or need(data, "name", str, where),
            memory=need(data, "memory", int, where),
            vcpus=need(data, "vcpus", int, where),
            disk=total,
            disks=sizes,
            nics=len(data.get("nics") or []),
            spindle_use=int(data.get("spindle_use", 1)),
            template=need(data, "disk_template", str, where),
            tags=tuple(data.get("tags") or ()),
            nodes=tuple(data.get("nodes") or ()),
            running=data.get("admin_state", "up") == "up",
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
        cluster_ipolicy = data.get("ipolicy") or {}
        self.groups: dict[str, Group] = {}
        for uuid, g in need(data, "nodegroups", dict, "request file").items():
            self.groups[uuid] = Group(uuid, need(g, "name", str, f"nodegroups.{uuid}"),
                                      g.get("alloc_policy", "preferred"), g.get("ipolicy") or cluster_ipolicy)
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
            self.t_mem[i] = need(nd, "total_memory", int, where)
            self.f_mem[i] = need(nd, "free_memory", int, where)
            self.t_dsk[i] = need(nd, "total_disk", int, where)
            self.f_dsk[i] = need(nd, "free_disk", int, where)
            self.t_cpu[i] = need(nd, "total_cpus", int, where)
            self.r_cpu[i] = nd.get("reserved_cpus", 0) or 0
            self.free_spindles[i] = nd.get("free_spindles", 0) or 0
            self.t_spindles[i] = max(nd.get("total_spindles", 0) or 0, 1)
            ndparams = nd.get("ndparams") or {}
            self.exclusive[i] = bool(ndparams.get("exclusive_storage", False))
            self.offline[i] = bool(nd.get("offline", False))
            self.unschedulable[i] = bool(nd.get("drained", False)) or not nd.get("vm_capable", True)
            group = need(nd, "group", str, where)
            if group not in self.groups:
                raise RequestError(f"{where}.group: unknown node group {group!r}")
            self.group.append(group)
            ratio = self.groups[group].ipolicy.get("spindle-ratio", 32.0)
            self.hi_spindles[i] = max(float(ratio) * float(ndparams.get("spindle_count", 1) or 1), 1e-9)
        self.instances: dict[str, Spec] = {}
        self.peers: list[dict[int, float]] = [{} for _ in range(n)]  # secondary -> {primary: memory}
        self.primaries: list[list[str]] = [[] for _ in range(n)]
        self._r_mem: np.ndarray | None = None
        for name, raw in need(data, "instances", dict, "request file").items():
            spec = Spec.parse(raw, f"instances.{name}", name)
            for node in spec.nodes:
                if node not in self.index:
                    raise RequestError(f"instances.{name}.nodes: unknown node {node!r}")
            self._place(spec)
        tags = data.get("cluster_tags") or []
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

