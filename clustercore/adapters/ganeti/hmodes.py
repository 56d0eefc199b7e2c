"""The allocation requests answered as hail 3.0 answers them (``allocate`` and
``multi-allocate``), and hail's command-line options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from clustercore.adapters.ganeti.cluster import GanetiCluster, Spec
from clustercore.adapters.ganeti.hail import (
    AllocError,
    Options,
    Solution,
    alloc_list,
    describe,
    try_group_alloc,
    try_mg_alloc,
)
from clustercore.adapters.ganeti.hload import Model, load, parse_instance
from clustercore.adapters.ganeti.validate import RequestError, need, show, strings

__all__ = ["FLAGS", "allocate", "dedicated", "multi_allocate", "options"]

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


def dedicated(data: Mapping[str, Any]) -> bool:
    """hail's ``isDedicated``: every node of an allocable group has exclusive storage (hail
    then allocates by lost allocations, which is not ported: the older allocator answers)."""
    allocable = {uuid for uuid, g in data["nodegroups"].items() if g.get("alloc_policy") != "unallocable"}
    return all((nd.get("ndparams") or {}).get("exclusive_storage") is True or nd["group"] not in allocable
               for nd in data["nodes"].values())


def _count(request: Mapping[str, Any], where: str) -> int:
    count: int = need(request, "required_nodes", int, where)
    if count not in (1, 2):
        raise RequestError(f"{where}.required_nodes: must be 1 or 2, got {show(count)}")
    return count


def _info(sol: Solution) -> str:
    return ", ".join(sol.log)


def _reply(success: bool, info: str, result: Any) -> dict[str, Any]:
    return {"success": success, "info": info, "result": result}


def allocate(cluster: GanetiCluster, request: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    Spec.parse(request, "request")  # validated as the other modes are
    count = _count(request, "request")
    model = load(cluster.data, opts.static_kvm_memory)
    inst = parse_instance(request, need(request, "name", str, "request"), (model.excl_prefixes, model.dsrd_prefixes))
    if "restrict-to-nodes" in request and opts.restrict_to is None:
        opts = attrs.evolve(opts, restrict_to=strings(request, "restrict-to-nodes", "request"))
    group = request.get("group_name")
    try:
        if isinstance(group, str):
            sol = try_group_alloc(opts, model, list(model.nodes), dict(model.instances), group, inst, count)
        else:
            sol = try_mg_alloc(opts, model, list(model.nodes), dict(model.instances), inst, count)
    except AllocError as exc:
        return _reply(False, f"Request failed: {exc}", [])
    if sol.best is None:
        return _reply(False, f"Request failed: {_info(sol)}", [])
    return _reply(True, f"Request successful: {_info(sol)}", [sol.best.nodes[i].name for i in sol.best.chosen])


def multi_allocate(cluster: GanetiCluster, request: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    model: Model = load(cluster.data, opts.static_kvm_memory)
    group = request.get("group_name")
    wanted = []
    for i, raw in enumerate(need(request, "instances", list, "request")):
        where = f"request.instances[{i}]"
        Spec.parse(raw, where)
        inst = parse_instance(raw, need(raw, "name", str, where), (model.excl_prefixes, model.dsrd_prefixes))
        wanted.append((inst, _count(raw, where), group if isinstance(group, str) else None))
    try:
        done = alloc_list(opts, model, wanted)
    except AllocError as exc:
        return _reply(False, f"Request failed: {exc}", [])
    placed = [[inst.name, [sol.best.nodes[i].name for i in sol.best.chosen]] for inst, sol in done if sol.best]
    failed = [[inst.name, describe(sol)] for inst, sol in done if sol.best is None]
    info = f"{len(failed)} instances failed to allocate and {len(placed)} were allocated successfully"
    return _reply(True, f"Request successful: {info}", [placed, failed])
