"""hail's allocation (Ganeti's ``Cluster.hs``, ``AllocationSolution.hs``, ``GlobalN1.hs``).

:func:`try_mg_alloc` places one instance the way hail 3.0 does: every node group tried
(preferred before last_resort, unallocable never chosen), in each every online node (or
every primary/secondary pair of one group) scored by the cluster score of the whole cluster
after the placement; by default a candidate counts only if the cluster stays globally N+1
redundant (every node could be evacuated: DRBD instances failed over, shared-storage ones
moved to the best other node of its group, others recreated there); candidates dropped by
that check are counted as ``FailN1``. Failures are counted per candidate with htools'
failure modes and described in hail's words.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from clustercore.adapters.ganeti.hload import GroupInfo, Model
from clustercore.adapters.ganeti.hmetrics import Stats, cluster_score, scores_replacing
from clustercore.adapters.ganeti.hnode import (
    MOVABLE,
    Fail,
    Inst,
    Node,
    NodeFail,
    add_pri,
    add_sec,
    remove_pri,
    remove_sec,
)

__all__ = ["AllocError", "Options", "Solution", "alloc_list", "policy_failure", "try_group_alloc", "try_mg_alloc"]

Nodes = dict[int, Node]  # by index; a group's view holds only its nodes
Insts = dict[int, Inst]


@attrs.frozen
class Options:
    """hail's options: ``--no-capacity-checks``, ``--ignore-soft-errors``,
    ``--restrict-allocation-to``, ``--static-kvm-node-memory``."""

    capacity: bool = True
    ignore_soft_errors: bool = False
    restrict_to: tuple[str, ...] | None = None
    static_kvm_memory: int = 4096


class AllocError(Exception):
    """hail's ``Bad`` message: the request failed with this text."""


@attrs.frozen
class Element:
    """A placement: the node list before it and the nodes it changed (built on demand)."""

    base: Mapping[int, Node]
    changed: tuple[Node, ...]
    inst: Inst
    chosen: tuple[int, ...]
    score: float

    @property
    def nodes(self) -> dict[int, Node]:
        """The node list after the placement."""
        out = dict(self.base)
        for node in self.changed:
            out[node.idx] = node
        return out


@attrs.frozen
class Solution:
    failures: tuple[Fail, ...] = ()
    allocs: int = 0
    best: Element | None = None
    log: tuple[str, ...] = ()


def _better(a: Element | None, b: Element | None) -> Element | None:
    """``bestAllocElement``: the lower score, the later one on a tie."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a.score < b.score else b


def _collect(results: list[Element | Fail], keep: Callable[[Element], bool]) -> Solution:
    """``collectionToSolution FailN1``: the best element that ``keep`` accepts; the better
    ones it refuses count as FailN1."""
    fails = [r for r in results if isinstance(r, Fail)]
    sols = [r for r in results if isinstance(r, Element)]
    ordered = sorted(reversed(sols), key=lambda e: e.score)
    dropped = 0
    best = None
    for element in ordered:
        if keep(element):
            best = element
            break
        dropped += 1
    return Solution(tuple([Fail.FailN1] * dropped + list(reversed(fails))), len(sols) - dropped, best)


def _sum(a: Solution, b: Solution) -> Solution:
    return Solution(b.failures + a.failures, a.allocs + b.allocs, _better(a.best, b.best), b.log + a.log)


def describe(sol: Solution) -> str:
    counts = [(mode, sol.failures.count(mode)) for mode in Fail]
    reasons = ", ".join(f"{mode.name}: {n}" for mode, n in counts if n)
    if sol.best is None:
        return "No valid allocation solutions, failure reasons: " + (reasons if sol.failures else "unknown reasons")
    names = "/".join(sol.best.base[i].name for i in sol.best.chosen)
    return (f"score: {sol.best.score:.8f}, successes {sol.allocs}, failures {len(sol.failures)} ({reasons}) "
            f"for node(s) {names}")


# ------------------------------------------------------------------------------ policy


def _compare(inst: Inst, spec: dict[str, int], excl: bool, below: bool) -> Fail | None:
    """``instCompareISpec``: below (min) or above (max) the spec, in hail's order."""
    def bad(value: int, key: str) -> bool:
        limit = spec.get(key)
        return limit is not None and (value < limit if below else value > limit)

    if bad(inst.mem, "memory-size"):
        return Fail.FailMem
    if any(bad(size, "disk-size") for size in inst.disks):
        return Fail.FailDisk
    if bad(inst.vcpus, "cpu-count"):
        return Fail.FailCPU
    if excl:
        total = inst.total_spindles
        if total is None or bad(total, "spindle-use"):
            return Fail.FailSpindles
    elif bad(inst.spindle_use, "spindle-use"):
        return Fail.FailSpindles
    if inst.template != "diskless" and bad(len(inst.disks), "disk-count"):
        return Fail.FailDiskCount
    return None


def policy_failure(inst: Inst, node: Node) -> Fail | None:
    """``instMatchesPolicy`` against the node's group ipolicy."""
    minmax = node.ipolicy.get("minmax") or []
    if minmax:
        first: Fail | None = None
        for i, bounds in enumerate(minmax):
            fail = _compare(inst, bounds.get("min", {}), node.excl, True) or \
                _compare(inst, bounds.get("max", {}), node.excl, False)
            if fail is None:
                break
            if i == 0:
                first = fail
        else:
            return first
    templates = node.ipolicy.get("disk-templates")
    if templates is not None and inst.template not in templates:
        return Fail.FailDisk
    return None


# ------------------------------------------------------------------------------ placing


def on_singles(opts: Options, nl: Nodes, inst: Inst, targets: list[int], force: bool | None = None
               ) -> list[Element | Fail]:
    """``allocateOnSingle`` on each node of ``targets``: ``inst`` on it, scored on the whole
    node list afresh as hail does (:func:`scores_replacing` scores all candidates at once)."""
    out: list[Element | Fail] = []
    placed: list[tuple[int, Inst, Node]] = []
    for pdx in targets:
        node = nl[pdx]
        fail = policy_failure(inst, node)
        if fail:
            out.append(fail)
            continue
        new_inst = attrs.evolve(inst, pnode=pdx, snode=-1)
        try:
            placed.append((len(out), new_inst, add_pri(node, new_inst, opts.ignore_soft_errors if force is None
                                                       else force)))
        except NodeFail as exc:
            out.append(exc.mode)
            continue
        out.append(Fail.FailN1)  # replaced below
    scores = scores_replacing(nl.values(), [new_p for _, _, new_p in placed])
    for (k, new_inst, new_p), score in zip(placed, scores, strict=True):
        out[k] = Element(nl, (new_p,), new_inst, (new_inst.pnode,), score)
    return out


def on_pair(opts: Options, stats: Stats, nl: Nodes, inst: Inst, pdx: int, sdx: int) -> Element | Fail:
    """``allocateOnPair``: primary ``pdx``, secondary ``sdx``, scored incrementally as hail does."""
    p, s = nl[pdx], nl[sdx]
    fail = policy_failure(inst, p)
    if fail:
        return fail
    shared = p.location_tags & s.location_tags
    new_inst = attrs.evolve(inst, pnode=pdx, snode=sdx, location_score=len(shared))
    try:
        new_p = add_pri(p, new_inst, opts.ignore_soft_errors)
        new_s = add_sec(s, new_inst, pdx)
    except NodeFail as exc:
        return exc.mode
    return Element(nl, (new_p, new_s), new_inst, (pdx, sdx),
                   stats.replaced([(p, new_p), (s, new_s)], keep_zero=True).score())


def _alloc_nodes(opts: Options, nl: list[Node], count: int) -> list[int] | list[tuple[int, list[int]]]:
    online = [n for n in nl if not n.offline]
    if opts.restrict_to is not None:
        online = [n for n in online if n.name in opts.restrict_to]
    if count == 1:
        return [n.idx for n in online]
    if count == 2:
        pairs = [(p.idx, [s.idx for s in online if s.idx != p.idx and s.group == p.group]) for p in online]
        return [pair for pair in pairs if pair[1]]
    raise AllocError("Unsupported number of nodes, only one or two  supported")


def try_alloc(opts: Options, nl: Nodes, il: Insts, inst: Inst, targets: list[int] | list[tuple[int, list[int]]],
              count: int) -> Solution:
    keep: Callable[[Element], bool] = (lambda e: redundant(*_with(e, il))) if opts.capacity else (lambda e: True)
    if count == 2:
        if not targets:
            raise AllocError("Not enough online nodes")
        stats = Stats.of(nl.values())
        total = Solution()
        for p, secondaries in targets:  # type: ignore[misc]
            results = [on_pair(opts, stats, nl, inst, p, s) for s in secondaries]
            total = _sum(total, _collect(results, keep))
        return attrs.evolve(total, log=(describe(total), *total.log))
    if not targets:
        raise AllocError("No online nodes")
    sol = _collect(on_singles(opts, nl, inst, targets), keep)  # type: ignore[arg-type]
    return attrs.evolve(sol, log=(describe(sol), *sol.log))


def _with(element: Element, il: Insts) -> tuple[Nodes, Insts]:
    """``updateIl``/``extractNl``: the cluster once the element is committed."""
    new_idx = len(il)
    inst = attrs.evolve(element.inst, idx=new_idx)
    nl = dict(element.nodes)
    for k in element.chosen:
        n = nl[k]
        nl[k] = attrs.evolve(n, p_list=tuple(new_idx if i < 0 else i for i in n.p_list),
                             s_list=tuple(new_idx if i < 0 else i for i in n.s_list))
    return nl, {**il, new_idx: inst}


# ------------------------------------------------------------------------------ global N+1


def _failover(nl: Nodes, il: Insts, idx: int, force: bool) -> tuple[Nodes, Insts]:
    inst = il[idx]
    old_p, old_s = nl[inst.pnode], nl[inst.snode]
    int_p, int_s = remove_pri(old_p, inst), remove_sec(old_s, inst)
    new_p = add_pri(int_s, inst, old_p.offline or force)
    new_s = add_sec(int_p, inst, inst.snode, old_p.offline or force, ignore_disks=old_p.offline)
    new_inst = attrs.evolve(inst, pnode=inst.snode, snode=inst.pnode)
    nl = dict(nl)
    nl[inst.pnode], nl[inst.snode] = new_s, new_p
    return nl, {**il, idx: new_inst}


def _group_score(nl: Nodes, gdx: int) -> float:
    return cluster_score(n for n in nl.values() if n.group == gdx)


def _failover_to_any(nl: Nodes, il: Insts, idx: int, gdx: int, targets: list[int]) -> tuple[Nodes, Insts]:
    """``evacOneNodeOnly`` of a shared-storage instance: the best other node of the group."""
    inst = il[idx]
    best: tuple[Nodes, Inst, float] | None = None
    for t in targets:
        old = nl[inst.pnode]
        try:
            new_t = add_pri(nl[t], inst, True)
        except NodeFail:
            continue
        new_nl = dict(nl)
        new_nl[inst.pnode], new_nl[t] = remove_pri(old, inst), new_t
        score = _group_score(new_nl, gdx)
        if best is None or not best[2] < score:
            best = (new_nl, attrs.evolve(inst, pnode=t), score)
    if best is None:
        raise NodeFail(Fail.FailN1)
    return best[0], {**il, idx: best[1]}


def _recreate(nl: Nodes, il: Insts, inst: Inst, targets: list[int]) -> tuple[Nodes, Insts]:
    sol = _collect(on_singles(Options(ignore_soft_errors=True), nl, inst, targets), lambda e: True)
    if sol.best is None:
        raise NodeFail(Fail.FailN1)
    return _with(sol.best, il)


def can_evacuate(nl: Nodes, il: Insts, node: Node) -> bool:
    """``canEvacuateNode``."""
    try:
        drbd = [i for i in node.p_list if il[i].template == "drbd"]
        others = [i for i in node.p_list if il[i].template != "drbd"]
        for i in drbd:
            nl, il = _failover(nl, il, i, True)
        escape = [n.idx for n in nl.values() if n.group == node.group and n.idx != node.idx]
        for i in [i for i in others if il[i].template in MOVABLE]:
            nl, il = _failover_to_any(nl, il, i, node.group, escape)
        rest = sorted((il[i] for i in others if il[i].template not in MOVABLE), key=lambda x: -x.mem)
        for inst in rest:
            nl, il = _recreate(nl, il, inst, escape)
    except NodeFail:
        return False
    return True


def redundant(nl: Nodes, il: Insts) -> bool:
    """``redundant``: every node (offline ones too) can be evacuated."""
    return all(can_evacuate(nl, il, n) for n in nl.values())


# ------------------------------------------------------------------------------ groups


def _group_description(group: GroupInfo, result: Solution | str) -> list[str]:
    if isinstance(result, str):
        return [f"Group {group.name}: error {result}"]
    return [f"Group {group.name} ({group.policy}): {line}" for line in result.log]


def _has_networks(group: GroupInfo, inst: Inst) -> bool:
    return all(net is None or net in group.networks for net in inst.networks)


def find_best_group(opts: Options, model: Model, nl: Nodes, il: Insts, inst: Inst, count: int,
                    allowed: list[int] | None = None) -> tuple[GroupInfo, Solution, list[str]]:
    present = sorted({n.group for n in nl.values()})
    groups = [model.groups[g] for g in present if allowed is None or g in allowed]
    if not groups:
        shown = "Nothing" if allowed is None else f"Just [{','.join(map(str, allowed))}]"
        raise AllocError(f"no groups for evacuation: allowed groups was {shown}, all groups: "
                         f"[{','.join(model.groups[g].haskell() for g in present)}]")
    msgs = [f"group {g.name} is not connected to a network required by instance {inst.name}"
            for g in groups if not _has_networks(g, inst)]
    results: list[tuple[GroupInfo, Solution | str]] = []
    for group in (g for g in groups if _has_networks(g, inst)):
        try:
            targets = _alloc_nodes(opts, [n for n in nl.values() if n.group == group.idx], count)
            results.append((group, try_alloc(opts, nl, il, inst, targets, count)))
        except AllocError as exc:
            results.append((group, str(exc)))
    for group, result in results:
        msgs += _group_description(group, result)
    good = [(g, r) for g, r in reversed(results) if isinstance(r, Solution) and r.best is not None and g.allocable]
    good.sort(key=lambda gr: (gr[0].rank, gr[1].best.score))  # type: ignore[union-attr]
    if not good:
        raise AllocError(", ".join(msgs))
    return good[0][0], good[0][1], msgs


def try_mg_alloc(opts: Options, model: Model, nl: Nodes, il: Insts, inst: Inst, count: int) -> Solution:
    group, sol, msgs = find_best_group(opts, model, nl, il, inst, count)
    return attrs.evolve(sol, log=(f"Selected group: {group.name}", *msgs))


def try_group_alloc(opts: Options, model: Model, nl: Nodes, il: Insts, name: str, inst: Inst,
                    count: int) -> Solution:
    group = next((g for g in model.groups if g.name == name or g.uuid == name), None)
    if group is None:
        raise AllocError(f"Unknown group '{name}'")
    if not _has_networks(group, inst):
        raise AllocError(f"The group {group.name} is not connected to a network required by instance {inst.name}")
    members = [n for n in nl.values() if n.group == group.idx]
    ids = {n.idx for n in members}
    group_il = {i: x for i, x in il.items() if x.pnode in ids}
    group_nl = {n.idx: n for n in members}  # hail's findAllocation: the group alone, score and N+1 included
    sol = try_alloc(opts, group_nl, group_il, inst, _alloc_nodes(opts, members, count), count)
    return attrs.evolve(sol, log=tuple(_group_description(group, sol)))


def alloc_list(opts: Options, model: Model, requests: list[tuple[Inst, int, str | None]]
               ) -> list[tuple[Inst, Solution]]:
    """``allocList`` (multi-allocate): one after the other, each seeing the ones before;
    one that cannot be placed fails the whole request (AllocError), as in hail."""
    nl, il = dict(enumerate(model.nodes)), dict(model.instances)
    out = []
    for inst, count, group in requests:
        if group is None:
            sol = try_mg_alloc(opts, model, nl, il, inst, count)
        else:
            sol = try_group_alloc(opts, model, nl, il, group, inst, count)
        if sol.best is not None:
            nl, il = _with(sol.best, il)
        out.append((inst, sol))
    return out
