"""Every IAllocator request answered as hail 3.0.2 answers it (allocate, multi-allocate,
relocate, node-evacuate, change-group, allocate-secondary), and hail's command-line options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from clustercore.adapters.ganeti import hdedicated, hevac
from clustercore.adapters.ganeti.cluster import Spec
from clustercore.adapters.ganeti.hail import (
    AllocError,
    Options,
    Solution,
    alloc_list,
    describe,
    try_group_alloc,
    try_mg_alloc,
)
from clustercore.adapters.ganeti.hevac import Evacuation
from clustercore.adapters.ganeti.hload import Model, load, parse_instance
from clustercore.adapters.ganeti.hnode import EXTERNAL
from clustercore.adapters.ganeti.validate import RequestError, need, show, strings

__all__ = ["FLAGS", "allocate", "allocate_secondary", "change_group", "multi_allocate", "node_evacuate",
           "options", "relocate"]

#: hail's options that change its answer (``hail --help``); Ganeti passes them from the
#: cluster's ``default_iallocator_params``.
FLAGS = ("--no-capacity-checks", "--ignore-soft-errors", "--restrict-allocation-to=NODE,...",
         "--static-kvm-node-memory=N")


def options(flags: Sequence[str]) -> Options:
    """hail's options from its command line; RequestError on one it does not know."""
    capacity, soft, restrict, static = True, False, None, 4096
    for flag in flags:
        if flag == "--no-capacity-checks":
            capacity = False
        elif flag == "--ignore-soft-errors":
            soft = True
        elif flag.startswith("--restrict-allocation-to="):
            restrict = tuple(n for n in flag.split("=", 1)[1].split(",") if n)
        elif flag.startswith("--static-kvm-node-memory="):
            value = flag.split("=", 1)[1]
            if not value.isdigit():
                raise RequestError(f"--static-kvm-node-memory: expected a number of MiB, got {show(value)}")
            static = int(value)
        else:
            raise RequestError(f"unknown option {show(flag)} (known: {', '.join(FLAGS)})")
    return Options(capacity, soft, restrict, static)


def _count(request: Mapping[str, Any], where: str) -> int:
    count: int = need(request, "required_nodes", int, where)
    if count not in (1, 2):
        raise RequestError(f"{where}.required_nodes: must be 1 or 2, got {show(count)}")
    return count


def _info(sol: Solution) -> str:
    return ", ".join(sol.log)


def _reply(success: bool, info: str, result: Any) -> dict[str, Any]:
    return {"success": success, "info": info, "result": result}


def allocate(data: Mapping[str, Any], request: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    Spec.parse(request, "request")  # validated as the other modes are
    count = _count(request, "request")
    model = load(data, opts.static_kvm_memory)
    inst = parse_instance(request, need(request, "name", str, "request"), (model.excl_prefixes, model.dsrd_prefixes))
    if "restrict-to-nodes" in request and opts.restrict_to is None:
        opts = attrs.evolve(opts, restrict_to=strings(request, "restrict-to-nodes", "request"))
    group = request.get("group_name")
    try:
        if hdedicated.dedicated(model, group if isinstance(group, str) else None):
            sol = hdedicated.dedicated_allocate(opts, model, inst, count, group if isinstance(group, str) else None)
        elif isinstance(group, str):
            sol = try_group_alloc(opts, model, dict(enumerate(model.nodes)), dict(model.instances), group, inst, count)
        else:
            sol = try_mg_alloc(opts, model, dict(enumerate(model.nodes)), dict(model.instances), inst, count)
    except AllocError as exc:
        return _reply(False, f"Request failed: {exc}", [])
    if sol.best is None:
        return _reply(False, f"Request failed: {_info(sol)}", [])
    return _reply(True, f"Request successful: {_info(sol)}", [sol.best.base[i].name for i in sol.best.chosen])


def multi_allocate(data: Mapping[str, Any], request: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    model: Model = load(data, opts.static_kvm_memory)
    group = request.get("group_name")
    wanted = []
    for i, raw in enumerate(need(request, "instances", list, "request")):
        where = f"request.instances[{i}]"
        Spec.parse(raw, where)
        inst = parse_instance(raw, need(raw, "name", str, where), (model.excl_prefixes, model.dsrd_prefixes))
        wanted.append((inst, _count(raw, where), group if isinstance(group, str) else None))
    try:
        if hdedicated.dedicated(model, group if isinstance(group, str) else None):
            done = hdedicated.dedicated_alloc_list(opts, model, wanted)
        else:
            done = alloc_list(opts, model, wanted)
    except AllocError as exc:
        return _reply(False, f"Request failed: {exc}", [])
    placed = [[inst.name, [sol.best.base[i].name for i in sol.best.chosen]] for inst, sol in done if sol.best]
    failed = [[inst.name, describe(sol)] for inst, sol in done if sol.best is None]
    info = f"{len(failed)} instances failed to allocate and {len(placed)} were allocated successfully"
    return _reply(True, f"Request successful: {info}", [placed, failed])


# ------------------------------------------------------------------------------ moves


def _instance_index(model: Model, name: str, where: str) -> int:
    for idx, inst in model.instances.items():
        if inst.name == name:
            return idx
    raise RequestError(f"{where}: unknown instance {show(name)}")


def _evacuation(ev: Evacuation) -> dict[str, Any]:
    info = f"{len(ev.failed)} instances failed to move and {len(ev.moved)} were moved successfully"
    return _reply(True, f"Request successful: {info}", [ev.moved, ev.failed, ev.jobs])


def node_evacuate(data: Mapping[str, Any], request: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    mode = need(request, "evac_mode", str, "request")
    if mode not in ("all", "primary-only", "secondary-only"):
        raise RequestError(f"request.evac_mode: must be all, primary-only or secondary-only, got {show(mode)}")
    model = load(data, opts.static_kvm_memory)
    need(request, "instances", list, "request")
    idxs = [_instance_index(model, n, "request.instances") for n in strings(request, "instances", "request")]
    return _evacuation(hevac.node_evacuate(opts, model, mode, idxs))


def change_group(data: Mapping[str, Any], request: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    model = load(data, opts.static_kvm_memory)
    need(request, "instances", list, "request")
    idxs = [_instance_index(model, n, "request.instances") for n in strings(request, "instances", "request")]
    targets = []
    for name in strings(request, "target_groups", "request"):
        found = [g.idx for g in model.groups if name in (g.uuid, g.name)]
        if not found:
            raise RequestError(f"request.target_groups: unknown group {show(name)}")
        targets.append(found[0])
    return _evacuation(hevac.change_group(opts, model, idxs, targets))


def relocate(data: Mapping[str, Any], request: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    model = load(data, opts.static_kvm_memory)
    idx = _instance_index(model, need(request, "name", str, "request"), "request.name")
    count = need(request, "required_nodes", int, "request")
    need(request, "relocate_from", list, "request")
    names = strings(request, "relocate_from", "request")
    known = {n.name: n.idx for n in model.nodes}
    for name in names:
        if name not in known:
            raise RequestError(f"request.relocate_from: unknown node {show(name)}")
    excluded = [known[n] for n in names]
    inst = model.instances[idx]
    try:
        if count != 1:
            raise AllocError(f"Exchange {count} nodes mode is not implemented")
        if inst.template == "drbd":
            expected, kind, mode = inst.snode, "secondary", "secondary-only"
        elif inst.template in EXTERNAL:
            expected, kind, mode = inst.pnode, "primary", "primary-only"
        else:
            raise AllocError("Can't relocate non-mirrored instances")
        if excluded != [expected]:
            raise AllocError(f"Unsupported request: excluded nodes not equal to instance's {kind}({expected} versus "
                             f"[{','.join(map(str, excluded))}])")
        ev = hevac.node_evacuate(opts, model, mode, [idx])
        if ev.failed:
            raise AllocError(ev.failed[0][1])
        nodes = ev.moved[0][2]
        return _reply(True, "Request successful: success", nodes[1:] if inst.template == "drbd" else nodes)
    except AllocError as exc:
        return _reply(False, f"Request failed: {exc}", [])


def allocate_secondary(data: Mapping[str, Any], request: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    model = load(data, opts.static_kvm_memory)
    idx = _instance_index(model, need(request, "name", str, "request"), "request.name")
    try:
        sol = hevac.allocate_secondary(opts, model, idx)
    except AllocError as exc:
        return _reply(False, f"Request failed: {exc}", [])
    if sol.best is None:
        return _reply(False, f"Request failed: {_info(sol)}", [])
    return _reply(True, f"Request successful: {_info(sol)}", sol.best.base[sol.best.chosen[1]].name)
