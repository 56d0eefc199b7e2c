"""The IAllocator request types (allocate, relocate, multi-allocate, node-evacuate), each
answered as ``{"success", "info", "result"}`` with the opcodes Ganeti runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from clustercore.adapters.ganeti import hmodes
from clustercore.adapters.ganeti.allocator import Allocator
from clustercore.adapters.ganeti.cluster import MIRRORED, GanetiCluster, Group, Spec
from clustercore.adapters.ganeti.score import score_after
from clustercore.adapters.ganeti.validate import RequestError, check_document, decode, need, show, strings
from clustercore.errors import NoValidHost
from clustercore.scheduling.snapshot import Snapshot


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


def reply(success: bool, info: str, result: Any) -> dict[str, Any]:
    """An IAllocator answer."""
    return {"success": success, "info": info, "result": result}


def _required_nodes(request: Mapping[str, Any], spec: Spec, where: str) -> int:
    nodes: int = need(request, "required_nodes", int, where)
    if nodes not in (1, 2):
        raise RequestError(f"{where}.required_nodes: must be 1 or 2, got {show(nodes)}")
    if nodes == 2 and spec.template not in MIRRORED:
        raise RequestError(f"{where}.required_nodes: 2 nodes need a mirrored disk template, not {show(spec.template)}")
    return nodes


def _instance(cluster: GanetiCluster, name: str, where: str) -> Spec:
    """A known instance that has its primary node."""
    if name not in cluster.instances:
        raise RequestError(f"{where}: unknown instance {show(name)}")
    spec = cluster.instances[name]
    if not spec.nodes:
        raise RequestError(f"{where}: instance {show(name)} has no nodes")
    return spec


def _allocate(cluster: GanetiCluster, request: Mapping[str, Any]) -> dict[str, Any]:
    spec = Spec.parse(request, "request")
    nodes = _required_nodes(request, spec, "request")
    try:
        choice, group, reports = Allocator(cluster).allocate(spec, nodes)
    except NoValidHost as exc:
        return reply(False, f"Request failed: {next(iter(exc.reasons))}", [])
    info = (f"Request successful: Selected group: {group.name}, {'; '.join(reports)} for node(s) "
            f"{'/'.join(choice.nodes)}")
    return reply(True, info, list(choice.nodes))


def _relocate(cluster: GanetiCluster, request: Mapping[str, Any]) -> dict[str, Any]:
    name = need(request, "name", str, "request")
    spec = _instance(cluster, name, "request.name")
    need(request, "relocate_from", list, "request")
    old = strings(request, "relocate_from", "request")
    if spec.template not in MIRRORED:
        return reply(False, f"Request failed: Instances of type {spec.template} cannot be relocated", [])
    if len(spec.nodes) != 2:
        raise RequestError(f"instances.{name}.nodes: a {spec.template} instance needs a primary and a secondary")
    primary = spec.nodes[0]
    allocator = Allocator(cluster)
    group = cluster.groups[cluster.group[cluster.index[primary]]]
    # The primary stays; the best other node of its group becomes the secondary.
    snap = allocator.scheduler(group).snapshot
    secondary = _secondary_for(allocator, spec, snap, primary, frozenset(old) | frozenset(spec.nodes))
    if secondary is None:
        return reply(False, f"Request failed: no node of group {group.name} can be the new secondary of {name}",
                     [])
    return reply(True, "Request successful: success", [secondary])


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
    for i, raw in enumerate(need(request, "instances", list, "request")):
        spec = Spec.parse(raw, f"request.instances[{i}]")
        nodes = _required_nodes(raw, spec, f"request.instances[{i}]")
        try:
            choice, group, _ = allocator.allocate(spec, nodes)
        except NoValidHost:
            failed.append(spec.name)
            continue
        allocator.commit(spec, group, choice.nodes)
        allocated.append([spec.name, list(choice.nodes)])
    info = (f"Request successful: {len(failed)} instances failed to allocate and {len(allocated)} were allocated "
            "successfully")
    return reply(True, info, [allocated, failed])


def _node_evacuate(cluster: GanetiCluster, request: Mapping[str, Any]) -> dict[str, Any]:
    mode = need(request, "evac_mode", str, "request")
    if mode not in ("all", "primary-only", "secondary-only"):
        raise RequestError(f"request.evac_mode: must be all, primary-only or secondary-only, got {mode!r}")
    need(request, "instances", list, "request")
    names = strings(request, "instances", "request")
    for name in names:
        spec = _instance(cluster, name, "request.instances")
        if spec.template in MIRRORED and len(spec.nodes) != 2:
            raise RequestError(f"instances.{name}.nodes: a {spec.template} instance needs a primary and a secondary")
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
    return reply(True, info, [moved, failed, jobs])


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
#: The modes answered by the port of hail's own algorithm (hmodes), with hail's options.
HAIL_MODES = {"allocate": hmodes.allocate, "multi-allocate": hmodes.multi_allocate, "relocate": hmodes.relocate,
              "node-evacuate": hmodes.node_evacuate, "change-group": hmodes.change_group,
              "allocate-secondary": hmodes.allocate_secondary}


def answer(data: Any, flags: Sequence[str] = ()) -> dict[str, Any]:
    """The IAllocator answer for a parsed request; never raises. Every refusal is a
    RequestError ("Invalid request: ..."); anything else is a bug the net below turns into
    an answer ("unexpected ..." in its info) rather than a traceback."""
    try:
        opts = hmodes.options(flags)
        check_document(data)
        cluster = GanetiCluster(data)
        kind = need(cluster.request, "type", str, "request")
        if kind in HAIL_MODES:
            return HAIL_MODES[kind](cluster, cluster.request, opts)
        handler = HANDLERS.get(kind)
        if handler is None:
            raise RequestError(f"request.type: unsupported {show(kind)} (supported: {', '.join(HANDLERS)})")
        return handler(cluster, cluster.request)
    except RequestError as exc:
        return reply(False, f"Invalid request: {exc}", [])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, RecursionError) as exc:
        return reply(False, f"Invalid request (unexpected {type(exc).__name__}): {show(str(exc))}", [])


def answer_text(text: str | bytes, flags: Sequence[str] = ()) -> dict[str, Any]:
    """The answer for a request file's contents: what ``clustercore-iallocator`` prints.
    Never raises (undecodable JSON, ``NaN``, deep nesting are ``success: false``)."""
    try:
        data = decode(text)
    except RequestError as exc:
        return reply(False, f"Invalid request: {exc}", [])
    return answer(data, flags)
