"""Ganeti IAllocator adapter: clustercore's scheduler answering Ganeti's allocator protocol.

``clustercore-iallocator FILE`` reads an IAllocator request (version 2) and prints
``{"success", "info", "result"}`` exactly as Ganeti's ``hail`` does, for ``allocate`` (one
node, or two for DRBD: primary and secondary), ``relocate`` (a new DRBD secondary),
``multi-allocate`` and ``node-evacuate`` (with the opcodes Ganeti runs).

How Ganeti's cluster maps onto the scheduler's snapshot (one host per node):

* memory: allocatable is the node's free memory above its N+1 reserve (``rMem``: the
  most memory any one primary would fail over onto it as a DRBD secondary), so the
  generic resource filter refuses what would break N+1;
* cpu: allocatable is ``total_cpus - reserved_cpus``, used the vCPUs of its primaries,
  with the group's ``vcpu-ratio`` as the CPU overcommit ratio;
* ``disk`` (MiB) and ``spindles`` (with exclusive storage) are extended resources;
* offline nodes are Down, drained or non-vm-capable ones unschedulable;
* Ganeti's own rules are filters (exclusion tags), and the weigher is a Ganeti-style
  cluster score (lower is better; see :func:`group_score`), so the engine picks what hail
  would: the placement leaving the group best balanced.

A DRBD secondary takes the instance's disk and raises its N+1 reserve; that is recorded as
a second reservation on the secondary, so later decisions in a batch see it.
Malformed input gives ``success: false`` with what was wrong; never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from clustercore.errors import NoValidHost
from clustercore.model import Host, HostState, Resources, Workload
from clustercore.scheduling.engine import Scheduler
from clustercore.scheduling.policies import Policy
from clustercore.scheduling.snapshot import Mask, Snapshot

MIRRORED = {"drbd"}  # internally mirrored: a secondary node
SHARED = {"sharedfile", "blockdev", "rbd", "ext", "gluster", "diskless"}  # externally mirrored
EXCLUSION_PREFIX = "htools:iextags:"
UNLIMITED = 10**12


class RequestError(ValueError):
    """The request is malformed; the message says where."""


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
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
        disks = _need(data, "disks", list, where) if "disks" in data else []
        sizes = tuple(int(_need(d, "size", int, f"{where}.disks[{i}]")) for i, d in enumerate(disks))
        total = data.get("disk_space_total", sum(sizes))
        if not isinstance(total, int):
            raise RequestError(f"{where}.disk_space_total: expected int, got {total!r}")
        return cls(
            name=name or _need(data, "name", str, where),
            memory=_need(data, "memory", int, where),
            vcpus=_need(data, "vcpus", int, where),
            disk=total,
            disks=sizes,
            nics=len(data.get("nics") or []),
            spindle_use=int(data.get("spindle_use", 1)),
            template=_need(data, "disk_template", str, where),
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
        self.request = _need(data, "request", dict, "request file")
        cluster_ipolicy = data.get("ipolicy") or {}
        self.groups: dict[str, Group] = {}
        for uuid, g in _need(data, "nodegroups", dict, "request file").items():
            self.groups[uuid] = Group(uuid, _need(g, "name", str, f"nodegroups.{uuid}"),
                                      g.get("alloc_policy", "preferred"), g.get("ipolicy") or cluster_ipolicy)
        nodes = _need(data, "nodes", dict, "request file")
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
            self.t_mem[i] = _need(nd, "total_memory", int, where)
            self.f_mem[i] = _need(nd, "free_memory", int, where)
            self.t_dsk[i] = _need(nd, "total_disk", int, where)
            self.f_dsk[i] = _need(nd, "free_disk", int, where)
            self.t_cpu[i] = _need(nd, "total_cpus", int, where)
            self.r_cpu[i] = nd.get("reserved_cpus", 0) or 0
            self.free_spindles[i] = nd.get("free_spindles", 0) or 0
            self.t_spindles[i] = max(nd.get("total_spindles", 0) or 0, 1)
            ndparams = nd.get("ndparams") or {}
            self.exclusive[i] = bool(ndparams.get("exclusive_storage", False))
            self.offline[i] = bool(nd.get("offline", False))
            self.unschedulable[i] = bool(nd.get("drained", False)) or not nd.get("vm_capable", True)
            group = _need(nd, "group", str, where)
            if group not in self.groups:
                raise RequestError(f"{where}.group: unknown node group {group!r}")
            self.group.append(group)
            ratio = self.groups[group].ipolicy.get("spindle-ratio", 32.0)
            self.hi_spindles[i] = max(float(ratio) * float(ndparams.get("spindle_count", 1) or 1), 1e-9)
        self.instances: dict[str, Spec] = {}
        self.peers: list[dict[int, float]] = [{} for _ in range(n)]  # secondary -> {primary: memory}
        self.primaries: list[list[str]] = [[] for _ in range(n)]
        self._r_mem: np.ndarray | None = None
        for name, raw in _need(data, "instances", dict, "request file").items():
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


# --------------------------------------------------------------------------- rules and score


@attrs.frozen(eq=False)
class ExclusionTagsFilter:
    """No two instances sharing an exclusion tag on one primary (Ganeti's FailTags)."""

    cluster: GanetiCluster
    name: str = "exclusion-tags"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Mapping[str, Mask]:
        mine = {key[len("extag/"):] for key in workload.labels if key.startswith("extag/")}
        if not mine:
            return {}
        mask = np.zeros(snap.size, dtype=bool)
        for k, host in enumerate(snap.hosts):
            for other in self.cluster.primaries[self.cluster.index[host.name]]:
                if other != workload.name and mine & self.cluster.exclusion_tags(self.cluster.instances[other]):
                    mask[k] = True
        return {"exclusion tag conflict": mask}


def _std_after(values: np.ndarray, at: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Population std of ``values`` with ``values[at[j]] = new[j]``, for each j at once."""
    n = len(values)
    s1 = values.sum() - values[at] + new
    s2 = (values**2).sum() - values[at] ** 2 + new**2
    return np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))  # type: ignore[no-any-return]


#: Per node inputs of the score (arrays over a group's online nodes).
RAW = ("t_mem", "f_mem", "down_mem", "r_mem", "t_dsk", "f_dsk", "t_cpu", "u_cpu", "u_spindles", "hi_spindles", "n_pri",
       "n_sec", "exclusive", "free_spindles", "t_spindles")
#: Metric -> (weight of its std over nodes, weight of its sum over nodes): hbal's components
#: as Ganeti 3.0 weighs them (its "forth" copies of disk, vCPU and spindles, equal to the
#: current ones without forthcoming instances, are folded into weight 1; free memory once
#: stopped instances start is its own term).
WEIGHTS = {"free_mem": (0.5, 0.0), "free_mem_forth": (0.5, 0.0), "free_disk": (1.0, 0.0), "vcpu_ratio": (1.0, 0.0),
           "spindles": (1.0, 0.0), "reserved_mem": (1.0, 0.25), "n1_fail": (0.0, 1.0), "primaries": (3.0, 0.0),
           "disk_load": (1.0, 0.0)}


def node_metrics(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each metric of :data:`WEIGHTS`, per node (element-wise, so any subset of nodes works)."""
    return {
        "free_mem": raw["f_mem"] / np.maximum(raw["t_mem"], 1),
        "free_mem_forth": (raw["f_mem"] - raw["down_mem"]) / np.maximum(raw["t_mem"], 1),
        # With exclusive storage, disks are whole spindles: free disk is free spindles.
        "free_disk": np.where(raw["exclusive"], raw["free_spindles"] / raw["t_spindles"],
                              raw["f_dsk"] / np.maximum(raw["t_dsk"], 1)),
        "vcpu_ratio": raw["u_cpu"] / np.maximum(raw["t_cpu"], 1),
        "spindles": np.where(raw["exclusive"], 0.0, raw["u_spindles"] / raw["hi_spindles"]),
        "reserved_mem": raw["r_mem"] / np.maximum(raw["t_mem"], 1),
        "n1_fail": (raw["f_mem"] < raw["r_mem"]).astype(float),  # cannot take its N+1 failover
        # hbal's cpu, memory and network load (each primary weighs 1) and disk load (primaries
        # and secondaries); three equal terms for the first.
        "primaries": raw["n_pri"].astype(float),
        "disk_load": (raw["n_pri"] + raw["n_sec"]).astype(float),
    }


def group_score(raw: Mapping[str, np.ndarray]) -> float:
    """The Ganeti cluster score of a group's online nodes (lower is better): hbal's
    ``sum(weight * statistic)`` over the metrics of :data:`WEIGHTS`, the statistic being the
    population standard deviation over nodes or the sum. Exclusion-tag conflicts (hbal's
    ``pri_tags_score``) and location scores are not terms: conflicts are refused outright
    by :class:`ExclusionTagsFilter`."""
    metrics = node_metrics(raw)
    return float(sum(w_std * metrics[k].std() + w_sum * metrics[k].sum() for k, (w_std, w_sum) in WEIGHTS.items()))


def score_after(raw: Mapping[str, np.ndarray], at: np.ndarray, changed: Mapping[str, np.ndarray]) -> np.ndarray:
    """``group_score`` for each j, had node ``at[j]`` the inputs ``changed[.][j]`` (the other
    inputs as in ``raw``): every candidate of a decision scored at once."""
    base = node_metrics(raw)
    new = node_metrics({k: changed.get(k, raw[k][at]) for k in RAW})
    total = np.zeros(len(at))
    for k, (w_std, w_sum) in WEIGHTS.items():
        if w_std:
            total += w_std * _std_after(base[k], at, new[k])
        if w_sum:
            total += w_sum * (base[k].sum() - base[k][at] + new[k])
    return total


@attrs.frozen(eq=False)
class GanetiScoreWeigher:
    """Minus the group score after placing the instance as primary on each candidate."""

    cluster: GanetiCluster
    name: str = "ganeti-score"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        return -self.scores(workload, snap, candidates)

    def state(self, snap: Snapshot) -> dict[str, np.ndarray]:
        """The score's inputs per online host of ``snap`` (built from the cluster as it is now)."""
        c = self.cluster
        idx = np.array([c.index[h.name] for h in snap.hosts], dtype=np.int64)[snap.up]
        raw = {k: getattr(c, k) for k in RAW}
        raw["r_mem"] = c.r_mem
        return {k: v[idx] for k, v in raw.items()}

    def scores(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        raw = self.state(snap)
        vector, _ = snap.vector(workload.requests)
        mem, cpu, disk, spindles = (vector[snap.column(k)] for k in ("memory", "cpu", "disk", "spindles"))
        at = (np.cumsum(snap.up) - 1)[candidates]  # offline nodes are never candidates
        return score_after(raw, at, {"f_mem": raw["f_mem"][at] - mem, "f_dsk": raw["f_dsk"][at] - disk,
                                     "u_cpu": raw["u_cpu"][at] + cpu, "n_pri": raw["n_pri"][at] + 1,
                                     "u_spindles": raw["u_spindles"][at] + spindles,
                                     "free_spindles": raw["free_spindles"][at] - spindles * raw["exclusive"][at]})


# --------------------------------------------------------------------------- deciding


def _ipolicy_problem(spec: Spec, ipolicy: Mapping[str, Any]) -> str | None:
    templates = ipolicy.get("disk-templates")
    if templates is not None and spec.template not in templates:
        return f"disk template {spec.template} not allowed (allowed: {', '.join(templates)})"
    # As htools: memory, vCPUs, disk count and sizes, spindle use; NIC count is not checked.
    values = {"memory-size": [spec.memory], "cpu-count": [spec.vcpus], "disk-count": [len(spec.disks)],
              "disk-size": list(spec.disks), "spindle-use": [spec.spindle_use]}
    problems = []
    for bounds in ipolicy.get("minmax") or []:
        low, high = bounds.get("min", {}), bounds.get("max", {})
        bad = [f"{k} {v} outside [{low.get(k)}, {high.get(k)}]" for k, vs in values.items() for v in vs
               if k in low and k in high and not low[k] <= v <= high[k]]
        if not bad:
            return None
        problems.append("; ".join(bad))
    return f"instance spec violates the ipolicy: {min(problems, key=len)}" if problems else None


def _lost_allocations(cluster: GanetiCluster, spec: Spec, idx: np.ndarray, ipolicy: Mapping[str, Any]
                      ) -> list[np.ndarray]:
    """Per ipolicy size (largest first), how many instances of that size each node could
    take before minus after placing ``spec`` on it."""
    sizes = sorted((b["min"] for b in ipolicy.get("minmax") or [] if "min" in b),
                   key=lambda m: m.get("memory-size", 0), reverse=True)
    free = [cluster.f_mem[idx], cluster.f_dsk[idx], cluster.free_spindles[idx]]
    need = [spec.memory, spec.disk, spec.spindle_use]
    out = []
    for size in sizes:
        unit = [max(size.get("memory-size", 1), 1), max(size.get("disk-size", 1) * size.get("disk-count", 1), 1),
                max(size.get("spindle-use", 1), 1)]
        before = np.min([np.floor(f / u) for f, u in zip(free, unit, strict=True)], axis=0)
        after = np.min([np.floor((f - n) / u) for f, n, u in zip(free, need, unit, strict=True)], axis=0)
        out.append(before - np.maximum(after, 0))
    return out


@attrs.frozen
class Choice:
    nodes: tuple[str, ...]
    score: float


class Allocator:
    """Decisions for one request, through clustercore's Scheduler, group by group."""

    def __init__(self, cluster: GanetiCluster) -> None:
        self.cluster = cluster
        self.weigher = GanetiScoreWeigher(cluster)
        self._schedulers: dict[str, Scheduler] = {}

    def scheduler(self, group: Group) -> Scheduler:
        """The group's scheduler, kept for the whole request: decisions are committed to it
        as reservations, so a batch never rebuilds its snapshot."""
        found = self._schedulers.get(group.uuid)
        if found is None:
            ratio = float(group.ipolicy.get("vcpu-ratio", 4.0))
            found = Scheduler(self.cluster.snapshot(group.uuid), Policy("ganeti", ((self.weigher, 1.0),)),
                              filters=[ExclusionTagsFilter(self.cluster)], ratios={"cpu": ratio})
            self._schedulers[group.uuid] = found
        return found

    def commit(self, spec: Spec, group: Group, nodes: Sequence[str]) -> None:
        """Record a decision in the cluster and in the group's scheduler."""
        sched = self.scheduler(group)
        reserve_before = self.cluster.r_mem[self.cluster.index[nodes[1]]] if len(nodes) > 1 else 0.0
        self.cluster.allocate(spec, nodes)
        sched.reserve(self.cluster.workload(spec), nodes[0])
        if len(nodes) > 1:
            raised = self.cluster.r_mem[self.cluster.index[nodes[1]]] - reserve_before
            shadow = Workload(f"{spec.name}.secondary", "ganeti",
                              requests=Resources(0, int(raised), {"disk": spec.disk}))
            sched.reserve(shadow, nodes[1])

    def groups(self, only: str | None = None) -> list[Group]:
        ordered = [g for g in self.cluster.groups.values() if g.policy == "preferred"]
        ordered += [g for g in self.cluster.groups.values() if g.policy == "last_resort"]
        return [g for g in ordered if only is None or g.uuid == only]

    def place(self, spec: Spec, nodes: int, group: Group, exclude: frozenset[str] = frozenset()) -> Choice:
        """The best ``nodes`` (1 or 2) for ``spec`` in ``group``; NoValidHost with reasons."""
        problem = _ipolicy_problem(spec, group.ipolicy)
        if problem:
            raise NoValidHost(spec.name, 0, {problem: 1})
        sched = self.scheduler(group)
        workload = self.cluster.workload(spec)
        snap = sched.snapshot
        candidates, counts = sched.candidates(workload, snap)
        names = [snap.hosts[i].name for i in candidates]
        keep = np.array([n not in exclude for n in names], dtype=bool)
        if exclude and (~keep).any():
            counts["excluded (being evacuated)"] += int((~keep).sum())
            candidates = candidates[keep]
        if not len(candidates):
            raise NoValidHost(spec.name, snap.size, counts)
        scores = self.weigher.scores(workload, snap, candidates)
        if nodes == 1:
            idx = np.array([self.cluster.index[snap.hosts[i].name] for i in candidates], dtype=np.int64)
            if self.cluster.exclusive[idx].all():
                # Dedicated (exclusive storage) groups: fewest lost allocations of each ipolicy
                # size, largest size first, then the score (Ganeti's dedicated allocation).
                lost = _lost_allocations(self.cluster, spec, idx, group.ipolicy)
                best = int(np.lexsort((scores, *lost[::-1]))[0]) if lost else int(np.argmin(scores))
            else:
                best = int(np.argmin(scores))
            return Choice((snap.hosts[candidates[best]].name,), float(scores[best]))
        return self._pair(spec, snap, candidates, scores, counts, exclude)

    def _pair(self, spec: Spec, snap: Snapshot, primaries: np.ndarray, primary_scores: np.ndarray,
              counts: Any, exclude: frozenset[str]) -> Choice:
        """Primary and secondary: every primary candidate (the best 32 by their own score on
        large groups) against every possible secondary, vectorised over secondaries."""
        raw = self.weigher.state(snap)
        up = np.flatnonzero(snap.up)  # the score's positions -> snapshot rows
        pos = np.cumsum(snap.up) - 1
        disk = snap.column("disk")
        free_disk = (snap.allocatable[:, disk] - snap.used[:, disk])[up]
        usable = snap.schedulable[up] & (free_disk >= spec.disk)
        for name in exclude:
            if name in snap.index and snap.up[snap.index[name]]:
                usable[pos[snap.index[name]]] = False
        cluster_idx = [self.cluster.index[snap.hosts[k].name] for k in up]
        if len(primaries) > 256:
            primaries = primaries[np.argsort(primary_scores, kind="stable")[:32]]
        best: Choice | None = None
        for row in primaries:
            p = int(pos[row])
            after = {k: v.copy() for k, v in raw.items()}  # the group once the primary is placed
            after["f_mem"][p] -= spec.memory
            after["f_dsk"][p] -= spec.disk
            after["u_cpu"][p] += spec.vcpus
            after["n_pri"][p] += 1
            after["u_spindles"][p] += spec.spindle_use
            after["free_spindles"][p] -= spec.spindle_use * after["exclusive"][p]
            peer = np.array([self.cluster.peers[i].get(cluster_idx[p], 0.0) for i in cluster_idx])
            reserve = np.maximum(raw["r_mem"], peer + spec.memory)
            ok = usable & (after["f_mem"] >= reserve)
            ok[p] = False
            s = np.flatnonzero(ok)
            if not len(s):
                counts["no secondary"] += 1
                continue
            # Vectorised over secondaries: only the secondary's disk, reserve and load change.
            score = score_after(after, s, {"f_dsk": after["f_dsk"][s] - spec.disk, "r_mem": reserve[s],
                                           "n_sec": after["n_sec"][s] + 1,
                                           "u_spindles": after["u_spindles"][s] + spec.spindle_use})
            k = int(np.argmin(score))
            if best is None or score[k] < best.score - 1e-12:
                best = Choice((snap.hosts[int(row)].name, snap.hosts[int(up[s[k]])].name), float(score[k]))
        if best is None:
            raise NoValidHost(spec.name, snap.size, counts)
        return best

    def allocate(self, spec: Spec, nodes: int, exclude: frozenset[str] = frozenset(),
                 only_group: str | None = None) -> tuple[Choice, Group, list[str]]:
        """Best group first among preferred ones, last_resort groups only if none works."""
        reports: list[str] = []
        for tier in ("preferred", "last_resort"):
            found: list[tuple[Choice, Group]] = []
            for group in self.groups(only_group):
                if group.policy != tier:
                    continue
                try:
                    choice = self.place(spec, nodes, group, exclude)
                except NoValidHost as exc:
                    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(exc.reasons.items()))
                    reports.append(f"Group {group.name} ({group.policy}): no valid allocation ({reasons})")
                    continue
                reports.append(f"Group {group.name} ({group.policy}): score: {choice.score:.8f}")
                found.append((choice, group))
            if found:
                choice, group = min(found, key=lambda cg: cg[0].score)
                return choice, group, reports
        raise NoValidHost(spec.name, len(self.cluster.names), {"; ".join(reports) or "no allocable node group": 1})


# --------------------------------------------------------------------------- requests


def _replace(instance: str, node: str) -> dict[str, Any]:
    return {"OP_ID": "OP_INSTANCE_REPLACE_DISKS", "instance_name": instance, "early_release": False,
            "ignore_ipolicy": False, "mode": "replace_new_secondary", "disks": [], "remote_node": node}


def _migrate(instance: str, target: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": instance, "allow_runtime_changes": False,
                          "ignore_ipolicy": False, "cleanup": False, "allow_failover": True,
                          "ignore_hvversions": True}
    if target is not None:
        op["target_node"] = target
    return op


def _answer(success: bool, info: str, result: Any) -> dict[str, Any]:
    return {"success": success, "info": info, "result": result}


def _allocate(cluster: GanetiCluster, request: Mapping[str, Any]) -> dict[str, Any]:
    spec = Spec.parse(request, "request")
    nodes = _need(request, "required_nodes", int, "request")
    if nodes not in (1, 2):
        raise RequestError(f"request.required_nodes: must be 1 or 2, got {nodes}")
    if nodes == 2 and spec.template not in MIRRORED:
        raise RequestError(f"request.required_nodes: 2 nodes need a mirrored disk template, not {spec.template}")
    try:
        choice, group, reports = Allocator(cluster).allocate(spec, nodes)
    except NoValidHost as exc:
        return _answer(False, f"Request failed: {next(iter(exc.reasons))}", [])
    info = (f"Request successful: Selected group: {group.name}, {'; '.join(reports)} for node(s) "
            f"{'/'.join(choice.nodes)}")
    return _answer(True, info, list(choice.nodes))


def _relocate(cluster: GanetiCluster, request: Mapping[str, Any]) -> dict[str, Any]:
    name = _need(request, "name", str, "request")
    if name not in cluster.instances:
        raise RequestError(f"request.name: unknown instance {name!r}")
    spec = cluster.instances[name]
    old = tuple(_need(request, "relocate_from", list, "request"))
    if spec.template not in MIRRORED:
        return _answer(False, f"Request failed: Instances of type {spec.template} cannot be relocated", [])
    primary = spec.nodes[0]
    allocator = Allocator(cluster)
    group = cluster.groups[cluster.group[cluster.index[primary]]]
    # The primary stays; the best other node of its group becomes the secondary.
    snap = allocator.scheduler(group).snapshot
    secondary = _secondary_for(allocator, spec, snap, primary, frozenset(old) | frozenset(spec.nodes))
    if secondary is None:
        return _answer(False, f"Request failed: no node of group {group.name} can be the new secondary of {name}",
                       [])
    return _answer(True, "Request successful: success", [secondary])


def _secondary_for(allocator: Allocator, spec: Spec, snap: Snapshot, primary: str, exclude: frozenset[str]
                   ) -> str | None:
    """The best new secondary for ``spec`` (primary staying on ``primary``), or None."""
    cluster = allocator.cluster
    p = cluster.index[primary]
    raw = allocator.weigher.state(snap)
    up = np.flatnonzero(snap.up)
    names = [snap.hosts[k].name for k in up]
    idx = np.array([cluster.index[n] for n in names], dtype=np.int64)
    reserve = np.maximum(raw["r_mem"], np.array([cluster.peers[i].get(p, 0.0) for i in idx]))
    ok = (snap.schedulable[up] & (raw["f_dsk"] >= spec.disk) & (raw["f_mem"] >= reserve)
          & np.array([n not in exclude for n in names], dtype=bool))
    s = np.flatnonzero(ok)
    if not len(s):
        return None
    score = score_after(raw, s, {"f_dsk": raw["f_dsk"][s] - spec.disk, "r_mem": reserve[s],
                                 "n_sec": raw["n_sec"][s] + 1, "u_spindles": raw["u_spindles"][s] + spec.spindle_use})
    return names[int(s[int(np.argmin(score))])]


def _multi_allocate(cluster: GanetiCluster, request: Mapping[str, Any]) -> dict[str, Any]:
    allocated, failed = [], []
    allocator = Allocator(cluster)
    for i, raw in enumerate(_need(request, "instances", list, "request")):
        spec = Spec.parse(raw, f"request.instances[{i}]")
        nodes = _need(raw, "required_nodes", int, f"request.instances[{i}]")
        try:
            choice, group, _ = allocator.allocate(spec, nodes)
        except NoValidHost:
            failed.append(spec.name)
            continue
        allocator.commit(spec, group, choice.nodes)
        allocated.append([spec.name, list(choice.nodes)])
    info = (f"Request successful: {len(failed)} instances failed to allocate and {len(allocated)} were allocated "
            "successfully")
    return _answer(True, info, [allocated, failed])


def _node_evacuate(cluster: GanetiCluster, request: Mapping[str, Any]) -> dict[str, Any]:
    mode = _need(request, "evac_mode", str, "request")
    if mode not in ("all", "primary-only", "secondary-only"):
        raise RequestError(f"request.evac_mode: must be all, primary-only or secondary-only, got {mode!r}")
    names = _need(request, "instances", list, "request")
    for name in names:
        if name not in cluster.instances:
            raise RequestError(f"request.instances: unknown instance {name!r}")
    evacuated: set[str] = set()
    for name in names:
        nodes = cluster.instances[name].nodes
        if mode in ("all", "primary-only") and nodes:
            evacuated.add(nodes[0])
        if mode in ("all", "secondary-only") and len(nodes) > 1:
            evacuated.add(nodes[1])
    evacuated |= {n for n, i in cluster.index.items() if cluster.offline[i]}
    allocator = Allocator(cluster)
    moved, failed, jobs = [], [], []
    for name in names:
        spec = cluster.instances[name]
        group = cluster.groups[cluster.group[cluster.index[spec.nodes[0]]]]
        try:
            new_nodes, ops = _evacuate_one(allocator, spec, mode, group, frozenset(evacuated) | {spec.nodes[0]})
        except (NoValidHost, RequestError) as exc:
            failed.append([name, str(exc)])
            continue
        moved.append([name, group.name, list(new_nodes)])
        jobs.append(ops)
    info = f"Request successful: {len(failed)} instances failed to move and {len(moved)} were moved successfully"
    return _answer(True, info, [moved, failed, jobs])


def _evacuate_one(allocator: Allocator, spec: Spec, mode: str, group: Group, exclude: frozenset[str]
                  ) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    if spec.template in ("plain", "file"):
        raise RequestError(f"Instances of type {spec.template} cannot be relocated")
    if spec.template in MIRRORED:
        if mode == "primary-only":
            return (spec.nodes[1], spec.nodes[0]), [_migrate(spec.name)]
        if mode == "secondary-only":
            secondary = _secondary_for(allocator, spec, allocator.scheduler(group).snapshot, spec.nodes[0], exclude)
            if secondary is None:
                raise RequestError("Can't find any good node for the new secondary")
            return (spec.nodes[0], secondary), [_replace(spec.name, secondary)]
        choice = allocator.place(attrs.evolve(spec, nodes=()), 2, group, exclude)
        primary, secondary = choice.nodes
        return choice.nodes, [_replace(spec.name, primary), _migrate(spec.name), _replace(spec.name, secondary)]
    if mode == "secondary-only":
        raise RequestError(f"Instances with disk template '{spec.template}' can't execute change secondary")
    choice = allocator.place(attrs.evolve(spec, nodes=()), 1, group, exclude)
    return choice.nodes, [_migrate(spec.name, choice.nodes[0])]


HANDLERS = {"allocate": _allocate, "relocate": _relocate, "multi-allocate": _multi_allocate,
            "node-evacuate": _node_evacuate}


def answer(data: Any) -> dict[str, Any]:
    """The IAllocator answer for a parsed request; never raises."""
    try:
        cluster = GanetiCluster(data)
        kind = _need(cluster.request, "type", str, "request")
        handler = HANDLERS.get(kind)
        if handler is None:
            raise RequestError(f"request.type: unsupported {kind!r} (supported: {', '.join(HANDLERS)})")
        return handler(cluster, cluster.request)
    except RequestError as exc:
        return _answer(False, f"Invalid request: {exc}", [])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        return _answer(False, f"Invalid request: {type(exc).__name__}: {exc}", [])


def main(argv: list[str] | None = None) -> int:
    """``clustercore-iallocator FILE``: print the answer as JSON (exit 0, as hail does)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: clustercore-iallocator REQUEST_FILE", file=sys.stderr)
        return 2
    try:
        with open(args[0], encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        print(json.dumps(_answer(False, f"Invalid request: cannot read {args[0]}: {exc}", [])))
        return 0
    print(json.dumps(answer(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
