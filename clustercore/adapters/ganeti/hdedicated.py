"""hail's allocation on dedicated clusters (Ganeti 3.0.2's ``Dedicated.hs``).

A cluster is dedicated when every node of the groups an allocation may use has exclusive
storage. hail then ranks candidates by lost allocations: for each minimal instance of the
group's ipolicy (largest disk first), how many fewer of them the node could still take
after the placement; fewer lost is better, then less free disk left (tight packing). No
global N+1 check applies, and the score printed is Haskell's ``show`` of that metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from clustercore.adapters.ganeti.hail import (
    AllocError,
    Element,
    Options,
    Solution,
    _group_description,
    _has_networks,
    _with,
    describe,
    policy_failure,
)
from clustercore.adapters.ganeti.hload import Model
from clustercore.adapters.ganeti.hnode import Fail, Inst, Node, NodeFail, add_pri, add_sec, div

__all__ = ["dedicated", "dedicated_alloc_list", "dedicated_allocate"]

Nodes = dict[int, Node]
Metric = tuple[tuple[int, ...], int]


def dedicated(model: Model, group: str | None) -> bool:
    """``isDedicated``: every node of the usable groups (``group`` alone if named, else the
    allocable ones) has exclusive storage."""
    usable = {g.idx for g in model.groups if (g.name == group if group is not None else g.allocable)}
    return all(n.excl or n.group not in usable for n in model.nodes)


def _test_instances(ipolicy: Mapping[str, Any]) -> list[Inst]:
    mins = [b.get("min", {}) for b in ipolicy.get("minmax") or []]
    mins.sort(key=lambda spec: -int(spec.get("disk-size", 0)))
    return [Inst(name="minimalspecinstance", mem=int(m.get("memory-size", 0)), dsk=int(m.get("disk-size", 0)),
                 disks=(), disk_spindles=(), vcpus=int(m.get("cpu-count", 0)), state="running", template="plain",
                 spindle_use=int(m.get("spindle-use", 0))) for m in mins]


def _room(tests: list[Inst], node: Node) -> list[int]:
    """``allocationVector``: how many of each test instance the node could still take (hail
    adds them one by one; each bound is linear, so the count is computed directly)."""
    return [_count(test, node) for test in tests]


_UNBOUNDED = 10**9  # hail would add such an instance forever


def _count(inst: Inst, node: Node) -> int:
    """How many times ``add_pri(node, inst)`` (strict) succeeds in a row (see hnode.add_pri)."""
    bounds = [_UNBOUNDED]

    def at_most(have: int, per: int) -> None:  # have - k * per > 0
        bounds.append((have - 1) // per if per > 0 else (_UNBOUNDED if have > 0 else 0))

    free, mem = node.unallocated_mem, (inst.mem if inst.uses_memory else 0)
    at_most(free, mem)
    at_most(node.f_mem_forth, inst.mem)
    # N+1: a step fails when it brings free memory to the reserve or below while the node
    # was above it; the node's state is that of the previous step.
    if not node.fail_n1 or free - mem > node.r_mem:
        at_most(free - node.r_mem, mem)
    if inst.local:
        at_most(node.f_dsk, inst.dsk)
        if node.excl and node.free_spindles(inst, True) < 0:
            return 0
        per = 0 if node.excl else inst.spindle_use
        if node.inst_spindles + per > node.hi_spindles:
            return 0
        if per > 0:
            bounds.append(int((node.hi_spindles - node.inst_spindles) // per))
    if node.vcpu_ratio >= 0 and not inst.offline:
        if inst.vcpus == 0 or node.t_cpu == 0:  # the ratio does not fall with k: the first step decides
            if node.vcpu_ratio < div(node.u_cpu + inst.vcpus, node.t_cpu):
                return 0
        else:
            k = min(min(bounds), max(int((node.vcpu_ratio * node.t_cpu - node.u_cpu) // inst.vcpus) + 1, 0))
            while k > 0 and node.vcpu_ratio < div(node.u_cpu + k * inst.vcpus, node.t_cpu):
                k -= 1  # at most a step or two: float rounding at the boundary
            bounds.append(k)
    return max(min(bounds), 0)


@attrs.frozen
class _DedicatedElement(Element):
    metric: Metric = ((), 0)


def _metric_element(base: Nodes, changed: tuple[Node, ...], inst: Inst, chosen: tuple[int, ...],
                    metric: Metric) -> Element:
    return _DedicatedElement(base, changed, inst, chosen, 0.0, metric)


def _on_single(opts: Options, nl: Nodes, inst: Inst, pdx: int) -> Element | Fail:
    node = nl[pdx]
    fail = policy_failure(inst, node)
    if fail:
        return fail
    tests = _test_instances(node.ipolicy)
    new_inst = attrs.evolve(inst, pnode=pdx, snode=-1)
    try:
        new_p = add_pri(node, inst, opts.ignore_soft_errors)
    except NodeFail as exc:
        return exc.mode
    lost = tuple(b - a for b, a in zip(_room(tests, node), _room(tests, new_p), strict=True))
    return _metric_element(nl, (new_p,), new_inst, (pdx,), (lost, new_p.f_dsk))


def _on_pair(opts: Options, nl: Nodes, inst: Inst, pdx: int, sdx: int) -> Element | Fail:
    p, s = nl[pdx], nl[sdx]
    fail = policy_failure(inst, p)
    if fail:
        return fail
    tests = _test_instances(p.ipolicy)
    new_inst = attrs.evolve(inst, pnode=pdx, snode=sdx)
    try:
        new_p = add_pri(p, new_inst, opts.ignore_soft_errors)
        new_s = add_sec(s, new_inst, pdx)
    except NodeFail as exc:
        return exc.mode
    lost_p = [b - a for b, a in zip(_room(tests, p), _room(tests, new_p), strict=True)]
    lost_s = [b - a for b, a in zip(_room(tests, s), _room(tests, new_s), strict=True)]
    metric = (tuple(x + y for x, y in zip(lost_p, lost_s, strict=True)), new_p.f_dsk + new_s.f_dsk)
    return _metric_element(nl, (new_p, new_s), new_inst, (pdx, sdx), metric)


def _concat(sol: Solution, result: Element | Fail) -> Solution:
    """``concatAllocs``: the better metric wins, the later one on a tie."""
    if isinstance(result, Fail):
        return attrs.evolve(sol, failures=(result, *sol.failures))
    best = sol.best
    return attrs.evolve(sol, allocs=sol.allocs + 1, best=_better(best, result))


def _better(a: Element | None, b: Element | None) -> Element | None:
    """``bestAllocElement`` on the lost-allocations metric: the lower, the later on a tie."""
    if not isinstance(a, _DedicatedElement):
        return b
    if not isinstance(b, _DedicatedElement):
        return a
    return a if a.metric < b.metric else b


def _sum(a: Solution, b: Solution) -> Solution:
    return Solution(b.failures + a.failures, a.allocs + b.allocs, _better(a.best, b.best), b.log + a.log)


def _show(metric: Metric) -> str:
    return f"([{','.join(map(str, metric[0]))}],{metric[1]})"


def _annotate(sol: Solution) -> Solution:
    text = describe(sol)
    if isinstance(sol.best, _DedicatedElement):
        text = text.replace(f"score: {sol.best.score:.8f}", f"score: {_show(sol.best.metric)}", 1)
    return attrs.evolve(sol, log=(text, *sol.log))


def find_allocation(opts: Options, model: Model, nl: Nodes, gdx: int, inst: Inst, count: int
                    ) -> tuple[Solution, list[str]]:
    group = model.groups[gdx]
    members = {i: n for i, n in nl.items() if n.group == gdx}
    if not _has_networks(group, inst):
        raise AllocError(f"The group {group.name} is not connected to a network required by instance {inst.name}")
    online = [n for n in members.values() if not n.offline]
    if opts.restrict_to is not None:
        online = [n for n in online if n.name in opts.restrict_to]
    sol = Solution()
    if count == 1:
        if not online:
            raise AllocError("No online nodes")
        for n in online:
            sol = _concat(sol, _on_single(opts, members, inst, n.idx))
    elif count == 2:
        pairs = [(p.idx, [s.idx for s in online if s.idx != p.idx]) for p in online]
        pairs = [pair for pair in pairs if pair[1]]
        if not pairs:
            raise AllocError("Not enough online nodes")
        for p, secondaries in pairs:
            part = Solution()
            for s in secondaries:
                part = _concat(part, _on_pair(opts, members, inst, p, s))
            sol = _sum(sol, part)
    else:
        raise AllocError("Unsupported number of nodes, only one or two  supported")
    sol = _annotate(sol)
    return sol, _group_description(group, sol)


def _sort_key(item: tuple[Any, Solution]) -> tuple[int, Metric]:
    group, sol = item
    assert isinstance(sol.best, _DedicatedElement)
    return (group.rank, sol.best.metric)


def find_mg_allocation(opts: Options, model: Model, nl: Nodes, inst: Inst, count: int) -> Solution:
    results: list[tuple[Any, Solution | str]] = []
    for gdx in sorted({n.group for n in nl.values()}):
        group = model.groups[gdx]
        try:
            results.append((group, find_allocation(opts, model, nl, gdx, inst, count)[0]))
        except AllocError as exc:
            results.append((group, str(exc)))
    msgs = [line for group, result in results for line in _group_description(group, result)]
    good = [(g, r) for g, r in reversed(results) if isinstance(r, Solution) and r.best is not None and g.allocable]
    good.sort(key=_sort_key)
    if not good:
        raise AllocError(", ".join(msgs))
    group, sol = good[0]
    return attrs.evolve(sol, log=(f"Selected group: {group.name}", *msgs))


def dedicated_allocate(opts: Options, model: Model, inst: Inst, count: int, group: str | None) -> Solution:
    nl = dict(enumerate(model.nodes))
    if group is None:
        return find_mg_allocation(opts, model, nl, inst, count)
    found = [g for g in model.groups if g.name == group]
    if not found:
        raise AllocError(f"Unknown group '{group}'")
    sol, msgs = find_allocation(opts, model, nl, found[0].idx, inst, count)
    return attrs.evolve(sol, log=tuple(msgs))


def dedicated_alloc_list(opts: Options, model: Model, requests: list[tuple[Inst, int, str | None]]
                         ) -> list[tuple[Inst, Solution]]:
    """The dedicated multi-allocate: each in turn; a named group is searched on the original
    cluster (as hail 3.0.2 does), and one that fails there is reported, not fatal."""
    nl, il = dict(enumerate(model.nodes)), dict(model.instances)
    original = dict(nl)
    out = []
    for inst, count, group in requests:
        if group is None:
            sol = find_mg_allocation(opts, model, nl, inst, count)
        else:
            found = [g for g in model.groups if g.name == group]
            if not found:
                raise AllocError(f"Unknown group '{group}'")
            sol = find_allocation(opts, model, original, found[0].idx, inst, count)[0]
        if sol.best is not None:
            nl, il = _with(sol.best, il)
        out.append((inst, sol))
    return out
