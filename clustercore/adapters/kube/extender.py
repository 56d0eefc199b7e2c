"""The extender's verbs: filter, prioritize, bind, preempt, on decoded v1 requests.

Nodes reach the extender in one of two ways, as kube-scheduler's ``nodeCacheCapable`` says:

* false: every filter and prioritize call carries the candidate Node documents; the
  extender builds a table of them for each call, reading again only the nodes whose
  ``(name, resourceVersion)`` it has not seen (see :func:`node_table`);
* true: calls carry node names only; the extender judges them against its node cache,
  which is loaded from a NodeList (``kubectl get nodes -o json``) given at start
  (``--nodes FILE``) or sent later with ``PUT /nodes``. The cache is a
  :class:`~clustercore.adapters.kube.rules.NodeTable` built once: a call costs a name
  lookup per node and a few vector operations. A name not in the cache fails with
  :data:`UNKNOWN_NODE` (in FailedNodes, not unresolvable: a refreshed cache may know it).

Deciding goes through clustercore's :class:`~clustercore.scheduling.engine.Scheduler`: its
filters are replaced by the Kubernetes ones (:mod:`.rules`) and its weighers are
:func:`weighers`; each weigher is normalised over the nodes to score (min-max, as the
engine does) and the weighted sum is scaled to 0..:data:`~.wire.MAX_PRIORITY`.

``bind`` creates the pod's Binding through the Kubernetes API with a :class:`Binder`
(see :mod:`.binder`); without one, bind answers an error (configure no bindVerb then).
``preempt`` keeps kube-scheduler's victims on every node where the pod passes the
extender's filters once they are gone: since those filters do not depend on other pods,
that is every node that passes them; nodes it does not know are kept as they are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Protocol

import numpy as np

from clustercore.adapters.kube.mapping import NodeInfo, node_host, pod_workload
from clustercore.adapters.kube.rules import NodeTable, PreferNoScheduleTaints, PreferredNodeAffinity, kube_filters
from clustercore.adapters.kube.wire import (
    MAX_PRIORITY,
    Doc,
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderFilterResult,
    ExtenderPreemptionArgs,
    HostPriorityList,
    MetaVictims,
    array,
    bad,
    field,
    obj,
)
from clustercore.model import Host, Workload
from clustercore.scheduling.engine import Scheduler, Weigher
from clustercore.scheduling.policies import NONE
from clustercore.scheduling.weighers import LeastAllocated

log = logging.getLogger(__name__)

UNKNOWN_NODE = "node(s) unknown to the extender (not in its node cache)"


def weighers(table: NodeTable) -> tuple[tuple[Weigher, float], ...]:
    """Preferred node affinity (2), untolerated PreferNoSchedule taints (1), least
    allocated cpu and memory against the node's allocatable (1)."""
    return ((PreferredNodeAffinity(table), 2.0), (PreferNoScheduleTaints(table), 1.0), (LeastAllocated(), 1.0))


class Binder(Protocol):
    def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        """Bind the pod to the node; raise with a message when that fails."""


def rows_of(table: NodeTable, names: Sequence[str]) -> np.ndarray:
    """Each name's row in ``table``, -1 where unknown (a C-level pass: ~0.2 ms for 5,000)."""
    return np.fromiter(map(table.snapshot.index.get, names, repeat(-1)), dtype=np.int64, count=len(names))


#: How many parsed nodes :class:`Extender` keeps by (name, resourceVersion) for requests
#: that carry Node documents; the memo starts over when it is full.
PARSED_NODES = 50_000


def node_table(nodes: Sequence[Doc], where: str = "Nodes.items",
               parsed: dict[tuple[str, str], tuple[Host, NodeInfo]] | None = None) -> NodeTable:
    """A table of Node documents (``table.order``: their names as given); a name twice is
    refused. With ``parsed``, a node whose name and ``metadata.resourceVersion`` were seen
    before is not read again (the API server gives every change a new resourceVersion)."""
    hosts: list[tuple[Host, NodeInfo]] = []
    seen: set[str] = set()
    for i, doc in enumerate(nodes):
        key = _version(doc) if parsed is not None else None
        known = parsed.get(key) if parsed is not None and key is not None else None
        if known is None:
            known = node_host(doc, f"{where}[{i}]")
            if parsed is not None and key is not None:
                if len(parsed) >= PARSED_NODES:
                    parsed.clear()
                parsed[key] = known
        host, info = known
        if host.name in seen:
            raise bad("NodeList", f"{where}[{i}].metadata.name", "names a node twice", host.name)
        seen.add(host.name)
        hosts.append((host, info))
    return NodeTable(hosts)


def _version(doc: Doc) -> tuple[str, str] | None:
    meta = field(doc, "metadata")
    if not isinstance(meta, dict):
        return None
    name, version = field(meta, "name"), field(meta, "resourceVersion")
    return (name, version) if isinstance(name, str) and isinstance(version, str) and version else None


class Extender:
    """The four verbs over a node cache (see the module docstring). Thread-safe: the cache
    is replaced whole, and each call reads the table it started with."""

    def __init__(self, nodes: Sequence[Doc] | None = None, binder: Binder | None = None) -> None:
        self.binder = binder
        self._lock = threading.Lock()
        self._table: NodeTable | None = None
        self._parsed: dict[tuple[str, str], tuple[Host, NodeInfo]] = {}
        if nodes is not None:
            self.set_nodes(nodes)

    # ------------------------------------------------------------------ the node cache

    def set_nodes(self, nodes: Sequence[Doc]) -> int:
        """Replace the node cache with ``nodes`` (the items of a NodeList); their count."""
        table = node_table(nodes, "items")
        with self._lock:
            self._table = table
        log.info("node cache: %d nodes", table.size)
        return table.size

    @property
    def cached_nodes(self) -> tuple[str, ...]:
        table = self._table
        return tuple(h.name for h in table.snapshot.hosts) if table else ()

    def _table_for(self, args: ExtenderArgs) -> tuple[NodeTable, list[str], np.ndarray]:
        """The table to judge against, the names asked for (in order) and their rows there
        (-1 where unknown)."""
        if args.nodes is not None:
            table = node_table(args.nodes, parsed=self._parsed)
            names = list(table.order)
        else:
            table = self._table or NodeTable([])
            names = list(args.node_names or ())
        return table, names, rows_of(table, names)

    @staticmethod
    def _scheduler(table: NodeTable, rows: np.ndarray) -> Scheduler:
        offered = np.zeros(table.size, dtype=bool)
        offered[rows[rows >= 0]] = True
        scheduler = Scheduler(table.snapshot, policy=NONE)
        scheduler.filters = kube_filters(table, offered)
        scheduler.weighers = weighers(table)
        return scheduler

    # ------------------------------------------------------------------ verbs

    def filter(self, args: ExtenderArgs) -> ExtenderFilterResult:
        workload = pod_workload(args.pod)
        table, names, rows = self._table_for(args)
        snap = table.snapshot
        reasons = np.full(snap.size, None, dtype=object)
        passing = np.zeros(snap.size, dtype=bool)
        passing[self._scheduler(table, rows).candidates(workload, snap, reasons)[0]] = True
        known = rows >= 0
        ok = np.zeros(len(names), dtype=bool)
        ok[known] = passing[rows[known]]
        labels = np.array(names, dtype=object)
        refused = known & ~ok
        unresolvable = dict(zip(labels[refused].tolist(), reasons[rows[refused]].tolist(), strict=True))
        failed = dict.fromkeys(labels[~known].tolist(), UNKNOWN_NODE)
        if args.nodes is not None:
            return ExtenderFilterResult(nodes=tuple(args.nodes[k] for k in np.flatnonzero(ok)), failed=failed,
                                        unresolvable=unresolvable)
        return ExtenderFilterResult(node_names=tuple(labels[ok].tolist()), failed=failed, unresolvable=unresolvable)

    def prioritize(self, args: ExtenderArgs) -> HostPriorityList:
        workload = pod_workload(args.pod)
        table, names, rows = self._table_for(args)
        return HostPriorityList(tuple(names), tuple(self.scores(workload, table, rows).tolist()))

    def scores(self, workload: Workload, table: NodeTable, rows: np.ndarray) -> np.ndarray:
        """0..MAX_PRIORITY per row (0 where the row is -1)."""
        out = np.zeros(len(rows), dtype=np.int64)
        known = np.flatnonzero(rows >= 0)
        candidates = rows[known]
        if len(candidates) < 2:
            return out
        scheduler = self._scheduler(table, rows)
        total = np.zeros(len(candidates))
        factors = 0.0  # of the weighers that told nodes apart: the best on all of them scores MAX_PRIORITY
        for weigher, factor in scheduler.weighers:
            raw = np.asarray(weigher.weigh(workload, table.snapshot, candidates), dtype=float)
            low, high = raw.min(), raw.max()
            if high > low:  # a weigher that tells no node apart takes no share of the scale
                total += factor * (raw - low) / (high - low)
                factors += abs(factor)
        if factors:
            out[known] = np.clip(np.rint(total / factors * MAX_PRIORITY), 0, MAX_PRIORITY)
        return out

    def bind(self, args: ExtenderBindingArgs) -> str:
        """'' when bound, else the error kube-scheduler should see."""
        if self.binder is None:
            return "this extender does not bind pods (started without --kube-api): remove bindVerb"
        table = self._table
        if table is not None and args.node not in table.snapshot.index:
            log.warning("binding %s/%s to %s, which is not in the node cache", args.pod_namespace, args.pod_name,
                        args.node)
        try:
            self.binder.bind(args.pod_namespace or "default", args.pod_name, args.pod_uid, args.node)
        except Exception as exc:  # the API's refusal, or the network's: kube-scheduler retries the pod
            log.warning("bind %s/%s to %s failed: %s", args.pod_namespace, args.pod_name, args.node, exc)
            return f"binding {args.pod_namespace}/{args.pod_name} to {args.node} failed: {exc}"
        return ""

    def preempt(self, args: ExtenderPreemptionArgs) -> dict[str, MetaVictims]:
        workload = pod_workload(args.pod)
        nodes = list(args.victims)
        table = self._table
        if table is None:
            return dict(args.victims)
        rows = rows_of(table, nodes)
        passing = np.zeros(table.size, dtype=bool)
        passing[self._scheduler(table, rows).candidates(workload, table.snapshot)[0]] = True
        return {node: args.victims[node] for node, row in zip(nodes, rows, strict=True) if row < 0 or passing[row]}


def node_list_items(doc: object) -> list[Doc]:
    """The items of a NodeList document (or a bare list of Nodes)."""
    if isinstance(doc, list):
        items: Iterable[object] = doc
    else:
        node_list = obj("NodeList", "", doc, required=True)
        assert node_list is not None
        items = array("NodeList", "items", field(node_list, "items")) or []
    out = []
    for i, item in enumerate(items):
        node = obj("NodeList", f"items[{i}]", item, required=True)
        assert node is not None
        out.append(node)
    return out
