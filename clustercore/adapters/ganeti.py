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
        self.free_spindles = np.zeros(n)
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
            self.exclusive[i] = bool((nd.get("ndparams") or {}).get("exclusive_storage", False))
            self.offline[i] = bool(nd.get("offline", False))
            self.unschedulable[i] = bool(nd.get("drained", False)) or not nd.get("vm_capable", True)
            group = _need(nd, "group", str, where)
            if group not in self.groups:
                raise RequestError(f"{where}.group: unknown node group {group!r}")
            self.group.append(group)
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
        self.primaries[p].append(spec.name)
        if len(spec.nodes) > 1 and spec.template in MIRRORED:
            s = self.index[spec.nodes[1]]
            self.peers[s][p] = self.peers[s].get(p, 0.0) + spec.memory

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


def group_score(f_mem: np.ndarray, r_mem: np.ndarray, t_mem: np.ndarray, f_dsk: np.ndarray, t_dsk: np.ndarray,
                u_cpu: np.ndarray, t_cpu: np.ndarray) -> float:
    """The Ganeti-style score of a group's online nodes (lower is better)::

        std(free mem %) + std(free disk %) + std(vcpu ratio) + std(reserved mem %)
          + 0.25 * sum(reserved mem %) + 0.5 * (nodes failing N+1)

    the main terms of hbal's score (its free memory, disk and vCPU terms count twice,
    once for the current and once for the "forthcoming" state, at weight 0.5 each)."""
    p_mem = (f_mem - r_mem) / np.maximum(t_mem, 1)
    p_rem = r_mem / np.maximum(t_mem, 1)
    return float(p_mem.std() + (f_dsk / np.maximum(t_dsk, 1)).std() + (u_cpu / np.maximum(t_cpu, 1)).std()
                 + p_rem.std() + 0.25 * p_rem.sum() + 0.5 * float((f_mem < r_mem).sum()))


@attrs.frozen(eq=False)
class GanetiScoreWeigher:
    """Minus the group score after placing the instance as primary on each candidate."""

    cluster: GanetiCluster
    name: str = "ganeti-score"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        return -self.scores(workload, snap, candidates)

    def state(self, snap: Snapshot) -> dict[str, np.ndarray]:
        """Per host of ``snap`` (built from the cluster as it is now): the score's inputs."""
        idx = np.array([self.cluster.index[h.name] for h in snap.hosts], dtype=np.int64)
        c = self.cluster
        return {"t_mem": c.t_mem[idx], "t_dsk": c.t_dsk[idx], "t_cpu": c.t_cpu[idx], "f_mem": c.f_mem[idx],
                "r_mem": c.r_mem[idx], "f_dsk": c.f_dsk[idx], "u_cpu": c.u_cpu[idx]}

    def scores(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        st = self.state(snap)
        online = snap.up
        vector, _ = snap.vector(workload.requests)
        mem, cpu, disk = snap.column("memory"), snap.column("cpu"), snap.column("disk")
        # Only online nodes count; offline ones are never candidates.
        pos = np.cumsum(online) - 1
        sub = {k: v[online] for k, v in st.items()}
        at = pos[candidates]
        base = (sub["f_mem"] - sub["r_mem"]) / np.maximum(sub["t_mem"], 1)
        std_mem = _std_after(base, at, base[at] - vector[mem] / np.maximum(sub["t_mem"][at], 1))
        dsk = sub["f_dsk"] / np.maximum(sub["t_dsk"], 1)
        std_dsk = _std_after(dsk, at, dsk[at] - vector[disk] / np.maximum(sub["t_dsk"][at], 1))
        vr = sub["u_cpu"] / np.maximum(sub["t_cpu"], 1)
        std_cpu = _std_after(vr, at, vr[at] + vector[cpu] / np.maximum(sub["t_cpu"][at], 1))
        p_rem = sub["r_mem"] / np.maximum(sub["t_mem"], 1)
        n1 = float((sub["f_mem"] < sub["r_mem"]).sum())
        fails = (sub["f_mem"][at] - vector[mem] < sub["r_mem"][at]).astype(float) - (
            sub["f_mem"][at] < sub["r_mem"][at]).astype(float)
        return std_mem + std_dsk + std_cpu + p_rem.std() + 0.25 * p_rem.sum() + 0.5 * (n1 + fails)  # type: ignore[no-any-return]


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
        candidates, counts = sched._filter(workload, snap)
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
        st = self.weigher.state(snap)
        online = snap.up & snap.schedulable
        idx = [self.cluster.index[h.name] for h in snap.hosts]
        disk = snap.column("disk")
        free_disk = snap.allocatable[:, disk] - snap.used[:, disk]
        if len(primaries) > 256:
            primaries = primaries[np.argsort(primary_scores, kind="stable")[:32]]
        best: Choice | None = None
        t_mem, t_dsk, t_cpu = st["t_mem"], st["t_dsk"], st["t_cpu"]
        for p in primaries:
            p = int(p)
            f_mem, r_mem, f_dsk, u_cpu = st["f_mem"].copy(), st["r_mem"], st["f_dsk"].copy(), st["u_cpu"].copy()
            f_mem[p] -= spec.memory
            f_dsk[p] -= spec.disk
            u_cpu[p] += spec.vcpus
            peer = np.array([self.cluster.peers[idx[s]].get(idx[p], 0.0) for s in range(snap.size)])
            new_reserve = np.maximum(r_mem, peer + spec.memory)
            ok = online & (free_disk >= spec.disk) & (f_mem >= new_reserve)
            ok[p] = False
            for name in exclude:
                if name in snap.index:
                    ok[snap.index[name]] = False
            secondaries = np.flatnonzero(ok)
            if not len(secondaries):
                counts["no secondary"] += 1
                continue
            # Vectorised over secondaries: only the secondary's disk and reserve change.
            p_mem = (f_mem - r_mem) / np.maximum(t_mem, 1)
            p_dsk = f_dsk / np.maximum(t_dsk, 1)
            p_rem = r_mem / np.maximum(t_mem, 1)
            s = secondaries
            new_rem = new_reserve[s]
            score = (
                _std_after(p_mem, s, (f_mem[s] - new_rem) / np.maximum(t_mem[s], 1))
                + _std_after(p_dsk, s, (f_dsk[s] - spec.disk) / np.maximum(t_dsk[s], 1))
                + (u_cpu / np.maximum(t_cpu, 1)).std()
                + _std_after(p_rem, s, new_rem / np.maximum(t_mem[s], 1))
                + 0.25 * (p_rem.sum() - p_rem[s] + new_rem / np.maximum(t_mem[s], 1))
                + 0.5 * ((f_mem < r_mem).sum() - (f_mem[s] < r_mem[s]) + (f_mem[s] < new_rem))
            )
            k = int(np.argmin(score))
            if best is None or score[k] < best.score - 1e-12:
                best = Choice((snap.hosts[p].name, snap.hosts[int(s[k])].name), float(score[k]))
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
    cluster = allocator.cluster
    p = cluster.index[primary]
    best: tuple[float, str] | None = None
    for k, host in enumerate(snap.hosts):
        s = cluster.index[host.name]
        if host.name in exclude or not (snap.up[k] and snap.schedulable[k]):
            continue
        reserve = max(cluster.r_mem[s], cluster.peers[s].get(p, 0.0))
        if cluster.f_dsk[s] < spec.disk or cluster.f_mem[s] < reserve:
            continue
        f_dsk, r_mem = cluster.f_dsk.copy(), cluster.r_mem.copy()
        f_dsk[s] -= spec.disk
        r_mem[s] = reserve
        members = [cluster.index[h.name] for h in snap.hosts]
        score = group_score(cluster.f_mem[members], r_mem[members], cluster.t_mem[members], f_dsk[members],
                            cluster.t_dsk[members], cluster.u_cpu[members], cluster.t_cpu[members])
        if best is None or score < best[0] - 1e-12:
            best = (score, host.name)
    return None if best is None else best[1]


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
