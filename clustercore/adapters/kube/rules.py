"""kube-scheduler's filter plugins, as clustercore filters over a snapshot of nodes.

In kube-scheduler's order, each with its reason word for word as kube-scheduler shows it:

==================  =====================================================  ================
plugin              reason                                                 preemption helps
==================  =====================================================  ================
NodeUnschedulable   ``node(s) were unschedulable``                         no
NodeName            ``node(s) didn't match the requested node name``       no
TaintToleration     ``node(s) had untolerated taint {KEY: VALUE}``         no
NodeAffinity        ``node(s) didn't match Pod's node affinity/selector``  no
NodeResourcesFit    ``Too many pods``, ``Insufficient cpu`` (", "-joined)  no (see below)
==================  =====================================================  ================

The extender is told only the pod and the nodes, never the pods already running there, so
NodeResourcesFit here checks the request against the node's whole allocatable (what
kube-scheduler's own NodeResourcesFit, which runs before any extender, cannot have missed
only if the pod exceeds the node itself): no eviction can fix that, so every failure is
"unresolvable". Each filter holds the :class:`NodeTable` (taints, unschedulable flags and
label lookups cached per node set); the pod comes in the workload's ``spec["pod"]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from clustercore.adapters.kube.mapping import UNSCHEDULABLE_TAINT, NodeInfo, Requirement, Taint, Term, pod_info
from clustercore.model import Host, Workload
from clustercore.scheduling.engine import Filter
from clustercore.scheduling.snapshot import Floats, Mask, Snapshot

UNSCHEDULABLE = "node(s) were unschedulable"
NODE_NAME = "node(s) didn't match the requested node name"
NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
TOO_MANY_PODS = "Too many pods"
INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
FIRST_RESOURCES = ("pods", "cpu", "memory", "ephemeral-storage")  # kube's fitsRequest order; then by name


def untolerated_taint(taint: Taint) -> str:
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


def insufficient(resource: str) -> str:
    return TOO_MANY_PODS if resource == "pods" else f"Insufficient {resource}"


class NodeTable:
    """Nodes as a snapshot plus what the Kubernetes rules read of them, with per-node-set
    caches (label masks, key presence, numeric labels, nodes grouped by their taints)."""

    def __init__(self, hosts: Sequence[tuple[Host, NodeInfo]]) -> None:
        #: The node names in the order given.
        self.order: tuple[str, ...] = tuple(host.name for host, _ in hosts)
        infos = {host.name: info for host, info in hosts}
        self.snapshot = Snapshot.build([host for host, _ in hosts])
        snap = self.snapshot
        self.infos: tuple[NodeInfo, ...] = tuple(infos[h.name] for h in snap.hosts)
        self.names = np.array([h.name for h in snap.hosts], dtype=object)
        self.unschedulable: Mask = np.array([i.unschedulable for i in self.infos], dtype=bool)
        groups: dict[tuple[Taint, ...], list[int]] = {}
        for k, info in enumerate(self.infos):
            if info.taints:
                groups.setdefault(info.taints, []).append(k)
        self.taint_groups = [(taints, np.array(idx, dtype=np.int64)) for taints, idx in groups.items()]
        self._has: dict[str, Mask] = {}
        self._numbers: dict[str, Floats] = {}

    @property
    def size(self) -> int:
        return self.snapshot.size

    def has(self, key: str) -> Mask:
        mask = self._has.get(key)
        if mask is None:
            mask = self._has[key] = np.array([key in h.labels for h in self.snapshot.hosts], dtype=bool)
        return mask

    def numbers(self, key: str) -> Floats:
        values = self._numbers.get(key)
        if values is None:
            values = np.full(self.size, np.nan)
            for k, h in enumerate(self.snapshot.hosts):
                text = h.labels.get(key, "")
                if INTEGER.fullmatch(text):  # strconv.ParseInt: no spaces, no underscores
                    values[k] = int(text)
            self._numbers[key] = values
        return values

    def any_label(self, key: str, values: Sequence[str]) -> Mask:
        mask = np.zeros(self.size, dtype=bool)
        for v in values:
            mask |= self.snapshot.label_mask(key, v)
        return mask

    def requirement(self, req: Requirement, on_fields: bool = False) -> Mask:
        if on_fields:  # metadata.name In/NotIn
            inside = np.isin(self.names, list(req.values))
            return inside if req.operator == "In" else ~inside
        op = req.operator
        if op == "In":
            return self.any_label(req.key, req.values)
        if op == "NotIn":
            return ~self.any_label(req.key, req.values)
        if op == "Exists":
            return self.has(req.key)
        if op == "DoesNotExist":
            return ~self.has(req.key)
        bound = int(req.values[0])
        with np.errstate(invalid="ignore"):
            return self.numbers(req.key) > bound if op == "Gt" else self.numbers(req.key) < bound

    def term(self, term: Term) -> Mask:
        if not term.expressions and not term.fields:
            return np.zeros(self.size, dtype=bool)
        mask = np.ones(self.size, dtype=bool)
        for req in term.expressions:
            mask &= self.requirement(req)
        for req in term.fields:
            mask &= self.requirement(req, on_fields=True)
        return mask


Verdict = Mapping[str, Mask]


@attrs.frozen(eq=False)
class Offered:
    """Only the nodes kube-scheduler offered in this call (its reason is never shown)."""

    offered: Mask
    name: str = "offered"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        return {"": ~self.offered}


@attrs.frozen(eq=False)
class NodeUnschedulable:
    table: NodeTable
    name: str = "NodeUnschedulable"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        if pod_info(workload).tolerates(Taint(UNSCHEDULABLE_TAINT, "", "NoSchedule")):
            return {}
        return {UNSCHEDULABLE: self.table.unschedulable}


@attrs.frozen(eq=False)
class NodeName:
    table: NodeTable
    name: str = "NodeName"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        wanted = pod_info(workload).node_name
        return {NODE_NAME: self.table.names != wanted} if wanted else {}


@attrs.frozen(eq=False)
class TaintToleration:
    """The first NoSchedule or NoExecute taint of the node the pod does not tolerate."""

    table: NodeTable
    name: str = "TaintToleration"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        pod = pod_info(workload)
        out: dict[str, Mask] = {}
        for taints, idx in self.table.taint_groups:
            for taint in taints:
                if taint.effect in ("NoSchedule", "NoExecute") and not pod.tolerates(taint):
                    mask = out.setdefault(untolerated_taint(taint), np.zeros(snap.size, dtype=bool))
                    mask[idx] = True
                    break
        return out


@attrs.frozen(eq=False)
class NodeAffinity:
    """``spec.nodeSelector`` (every label) and the required node affinity (terms ORed)."""

    table: NodeTable
    name: str = "NodeAffinity"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        pod = pod_info(workload)
        if not pod.node_selector and pod.required is None:
            return {}
        ok = np.ones(snap.size, dtype=bool)
        for key, value in pod.node_selector.items():
            ok &= snap.label_mask(key, value)
        if pod.required is not None:
            any_term = np.zeros(snap.size, dtype=bool)
            for term in pod.required:
                any_term |= self.table.term(term)
            ok &= any_term
        return {NODE_AFFINITY: ~ok}


@attrs.frozen(eq=False)
class NodeResourcesFit:
    """Every requested resource within the node's allocatable; all shortfalls of a node in
    one reason, in kube's order ("Too many pods, Insufficient cpu")."""

    table: NodeTable
    name: str = "NodeResourcesFit"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        requests = workload.requests
        order = [r for r in FIRST_RESOURCES if requests.get(r)]
        order += sorted(r for r in requests.names() if r not in FIRST_RESOURCES and requests.get(r))
        code = np.zeros(snap.size, dtype=np.int64)
        for bit, resource in enumerate(order):
            j = snap.column(resource)
            short = np.ones(snap.size, dtype=bool) if j is None else snap.allocatable[:, j] < requests.get(resource)
            code |= short.astype(np.int64) << bit
        out: dict[str, Mask] = {}
        for value in np.unique(code[code > 0]):
            reason = ", ".join(insufficient(r) for bit, r in enumerate(order) if int(value) >> bit & 1)
            out[reason] = code == value
        return out


def kube_filters(table: NodeTable, offered: Mask) -> tuple[Filter, ...]:
    """The filters in kube-scheduler's order, after the offered-nodes mask."""
    return (Offered(offered), NodeUnschedulable(table), NodeName(table), TaintToleration(table), NodeAffinity(table),
            NodeResourcesFit(table))


# --------------------------------------------------------------------------- weighers


@attrs.frozen(eq=False)
class PreferredNodeAffinity:
    """The weights of the preferred node affinity terms a node matches (kube's score)."""

    table: NodeTable
    name: str = "NodeAffinity"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        score = np.zeros(snap.size)
        for weight, term in pod_info(workload).preferred:
            score += weight * self.table.term(term)
        return score[candidates]  # type: ignore[no-any-return]


@attrs.frozen(eq=False)
class PreferNoScheduleTaints:
    """Fewer untolerated PreferNoSchedule taints is better (kube's TaintToleration score);
    only tolerations with that effect or none count."""

    table: NodeTable
    name: str = "TaintToleration"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        pod = pod_info(workload)
        relevant = [t for t in pod.tolerations if t.effect in ("", "PreferNoSchedule")]
        count = np.zeros(snap.size)
        for taints, idx in self.table.taint_groups:
            count[idx] = sum(1 for t in taints if t.effect == "PreferNoSchedule"
                             and not any(tol.tolerates(t) for tol in relevant))
        return -count[candidates]  # type: ignore[no-any-return]
