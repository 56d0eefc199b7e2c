"""hail's moves and evacuations (Ganeti 3.0.2's ``Cluster/Moves.hs``, ``Cluster/Evacuate.hs``,
``tryChangeGroup`` and ``AllocateSecondary.hs``): node-evacuate, relocate, change-group and
allocate-secondary, with the opcodes Ganeti runs and hail's failure messages."""

from __future__ import annotations

from typing import Any

import attrs

from clustercore.adapters.ganeti.hail import AllocError, Options, Solution, find_best_group, try_alloc
from clustercore.adapters.ganeti.hload import Model
from clustercore.adapters.ganeti.hmetrics import cluster_score
from clustercore.adapters.ganeti.hnode import EXTERNAL, Inst, Node, NodeFail, add_pri, add_sec, remove_pri, remove_sec

__all__ = ["EvacFailed", "Evacuation", "allocate_secondary", "change_group", "node_evacuate"]

Nodes = dict[int, Node]  # by index; a group's view holds only its nodes
Insts = dict[int, Inst]


class EvacFailed(Exception):
    """One instance could not be moved: hail's message."""


@attrs.frozen
class Evacuation:
    moved: list[list[Any]]
    failed: list[list[str]]
    jobs: list[list[dict[str, Any]]]


# ------------------------------------------------------------------------------ opcodes


def _migrate(inst: Inst, target: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": inst.name}
    if target is not None:
        op["target_node"] = target
    return op | {"allow_runtime_changes": False, "ignore_ipolicy": False, "cleanup": False, "allow_failover": True,
                 "ignore_hvversions": True}


def _replace(inst: Inst, node: str) -> dict[str, Any]:
    return {"OP_ID": "OP_INSTANCE_REPLACE_DISKS", "instance_name": inst.name, "early_release": False,
            "ignore_ipolicy": False, "mode": "replace_new_secondary", "disks": [], "remote_node": node}


# ------------------------------------------------------------------------------ moves


def _mode(exc: NodeFail) -> str:
    return exc.mode.name


def failover(nl: Nodes, il: Insts, idx: int, force: bool) -> tuple[Nodes, Insts]:
    """``applyMoveEx Failover``: primary and secondary swap."""
    inst = il[idx]
    old_p, old_s = nl[inst.pnode], nl[inst.snode]
    int_p, int_s = remove_pri(old_p, inst), remove_sec(old_s, inst)
    new_p = add_pri(int_s, inst, old_p.offline or force)
    new_s = add_sec(int_p, inst, inst.snode, old_p.offline or force, ignore_disks=old_p.offline)
    nl = dict(nl)
    nl[inst.pnode], nl[inst.snode] = new_s, new_p
    return nl, {**il, idx: attrs.evolve(inst, pnode=inst.snode, snode=inst.pnode)}


def failover_to_any(nl: Nodes, il: Insts, idx: int, target: int, force: bool) -> tuple[Nodes, Insts]:
    inst = il[idx]
    old = nl[inst.pnode]
    new_t = add_pri(nl[target], inst, old.offline or force)
    nl = dict(nl)
    nl[target] = new_t
    nl[inst.pnode] = remove_pri(old, inst)
    return nl, {**il, idx: attrs.evolve(inst, pnode=target)}


def replace_secondary(nl: Nodes, il: Insts, idx: int, target: int, force: bool) -> tuple[Nodes, Insts]:
    inst = il[idx]
    old_s = nl[inst.snode]
    pnode = remove_pri(nl[inst.pnode], inst)
    int_s = remove_sec(old_s, inst)
    shared = nl[inst.pnode].location_tags & nl[target].location_tags
    new_inst = attrs.evolve(inst, snode=target, location_score=len(shared))
    new_s = add_sec(nl[target], new_inst, inst.pnode, old_s.offline or force)
    new_p = add_pri(pnode, new_inst, True)
    nl = dict(nl)
    nl[inst.snode] = int_s
    nl[target] = new_s
    nl[inst.pnode] = new_p
    return nl, {**il, idx: new_inst}


def _group_score(nl: Nodes, gdx: int) -> float:
    return cluster_score(n for n in nl.values() if n.group == gdx)


def _one_node_only(opts: Options, nl: Nodes, il: Insts, inst: Inst, gdx: int, avail: list[int]
                   ) -> tuple[Nodes, Insts, list[dict[str, Any]]]:
    """``evacOneNodeOnly``: a new secondary (DRBD) or primary (shared storage), the best
    available node by the group's score."""
    if inst.template in EXTERNAL:
        move = failover_to_any
    elif inst.template == "drbd":
        move = replace_secondary
    else:
        raise EvacFailed("Can't relocate/evacuate non-mirrored instances")
    best: tuple[Nodes, Insts, float, int] | None = None
    errors = ""
    for ndx in avail:
        try:
            new_nl, new_il = move(nl, il, inst.idx, ndx, opts.ignore_soft_errors)
        except NodeFail as exc:
            errors += f" Node {nl[ndx].name} failed: {_mode(exc)};"
            continue
        score = _group_score(new_nl, gdx)
        if best is None or not best[2] < score:
            best = (new_nl, new_il, score, ndx)
    if best is None:
        raise EvacFailed(f"Can't find any good node: {errors}")
    new_nl, new_il, _, ndx = best
    op = _migrate(inst, new_nl[ndx].name) if move is failover_to_any else _replace(inst, new_nl[ndx].name)
    return new_nl, new_il, [op]


def _drbd_all(opts: Options, nl: Nodes, il: Insts, inst: Inst, gdx: int, avail: list[int]
              ) -> tuple[Nodes, Insts, list[dict[str, Any]]]:
    """``nodeEvacInstance ChangeAll`` for DRBD: the best new (primary, secondary) pair."""
    force = opts.ignore_soft_errors
    best: tuple[Nodes, Insts, list[dict[str, Any]], float] | None = None
    error = "no nodes available"
    for p in avail:
        for s in avail:
            if p == s:
                continue
            step = "Failing over to the secondary"
            try:
                cur_nl, cur_il, ops = nl, il, []
                if nl[inst.pnode].offline:
                    cur_nl, cur_il = failover(cur_nl, cur_il, inst.idx, force)
                    ops.append(_migrate(inst))
                step = "Changing secondary to new primary"
                cur_nl, cur_il = replace_secondary(cur_nl, cur_il, inst.idx, p, force)
                step = "Failing over to new primary"
                cur_nl, cur_il = failover(cur_nl, cur_il, inst.idx, force)
                step = "Changing secondary to final secondary"
                cur_nl, cur_il = replace_secondary(cur_nl, cur_il, inst.idx, s, force)
            except NodeFail as exc:
                if best is None:
                    error = f"Allocation failed: {step}: {_mode(exc)}"
                continue
            ops += [_replace(inst, nl[p].name), _migrate(inst), _replace(inst, nl[s].name)]
            score = _group_score(cur_nl, gdx)
            if best is None or not best[3] < score:
                best = (cur_nl, cur_il, ops, score)
    if best is None:
        raise EvacFailed(f"Can't find any good nodes for relocation: {error}")
    return best[0], best[1], best[2]


def evacuate_instance(opts: Options, nl: Nodes, il: Insts, mode: str, inst: Inst, gdx: int, avail: list[int]
                      ) -> tuple[Nodes, Insts, list[dict[str, Any]]]:
    """``nodeEvacInstance``; mode is primary-only, secondary-only or all."""
    if inst.template in ("plain", "file"):
        raise EvacFailed(f"Instances of type {inst.template} cannot be relocated")
    if inst.template != "drbd":
        if mode == "secondary-only":
            raise EvacFailed(f"Instances with disk template '{inst.template}' can't execute change secondary")
        return _one_node_only(opts, nl, il, inst, gdx, avail)
    if mode == "primary-only":
        try:
            nl, il = failover(nl, il, inst.idx, opts.ignore_soft_errors)
        except NodeFail as exc:
            raise EvacFailed(_mode(exc)) from exc
        return nl, il, [_migrate(inst)]
    if mode == "secondary-only":
        return _one_node_only(opts, nl, il, inst, gdx, avail)
    return _drbd_all(opts, nl, il, inst, gdx, avail)


def _all_nodes(inst: Inst) -> list[int]:
    return [inst.pnode, inst.snode] if inst.template == "drbd" else [inst.pnode]


def _evac_nodes(il: Insts, mode: str, idxs: list[int]) -> set[int]:
    out: set[int] = set()
    for idx in idxs:
        inst = il[idx]
        if mode in ("primary-only", "all"):
            out.add(inst.pnode)
        if mode in ("secondary-only", "all") and inst.template == "drbd":
            out.add(inst.snode)
    out.discard(-1)
    return out


def _result(model: Model, nl: Nodes, il: Insts, idx: int, gdx_of: int) -> list[Any]:
    inst = il[idx]
    return [inst.name, model.groups[gdx_of].name, [nl[n].name for n in _all_nodes(inst)]]


def node_evacuate(opts: Options, model: Model, mode: str, idxs: list[int]) -> Evacuation:
    """``tryNodeEvac``: each instance in turn, off the nodes being evacuated and offline ones."""
    nl, il = dict(enumerate(model.nodes)), dict(model.instances)
    excluded = _evac_nodes(il, mode, idxs) | {n.idx for n in nl.values() if n.offline}
    groups = {g: [n.idx for n in nl.values() if n.group == g] for g in sorted({n.group for n in nl.values()})}
    out = Evacuation([], [], [])
    for idx in idxs:
        inst = il[idx]
        gdx = nl[inst.pnode].group
        avail = [n for n in groups[gdx] if n not in excluded | {inst.pnode}]
        try:
            nl, il, ops = evacuate_instance(opts, nl, il, mode, inst, gdx, avail)
        except EvacFailed as exc:
            out.failed.append([inst.name, str(exc)])
            continue
        out.moved.append(_result(model, nl, il, idx, nl[il[idx].pnode].group))
        out.jobs.append(ops)
    return out


def change_group(opts: Options, model: Model, idxs: list[int], targets: list[int]) -> Evacuation:
    """``tryChangeGroup``: each instance to the best allowed other group, then evacuated
    there with all its nodes."""
    nl, il = dict(enumerate(model.nodes)), dict(model.instances)
    evac_groups = {nl[il[i].pnode].group for i in idxs}
    allowed = [g for g in (targets or [g.idx for g in model.groups]) if g not in evac_groups]
    offline = {n.idx for n in nl.values() if n.offline}
    groups = {g: [n.idx for n in nl.values() if n.group == g] for g in sorted({n.group for n in nl.values()})}
    out = Evacuation([], [], [])
    for idx in idxs:
        inst = il[idx]
        try:
            try:
                group, _, _ = find_best_group(opts, model, nl, il, inst, 2 if inst.template == "drbd" else 1,
                                              allowed)
            except AllocError as exc:
                raise EvacFailed(str(exc)) from exc
            avail = [n for n in groups.get(group.idx, []) if n not in offline]
            nl, il, ops = evacuate_instance(Options(), nl, il, "all", inst, group.idx, avail)
        except EvacFailed as exc:
            out.failed.append([inst.name, str(exc)])
            continue
        out.moved.append(_result(model, nl, il, idx, nl[il[idx].pnode].group))
        out.jobs.append(ops)
    return out


def allocate_secondary(opts: Options, model: Model, idx: int) -> Solution:
    """``tryAllocateSecondary``: a secondary for a non-mirrored instance, as if it were DRBD."""
    inst = model.instances[idx]
    if inst.snode >= 0:
        raise AllocError("Instance already has a secondary")
    nl = dict(enumerate(model.nodes))
    pnode = remove_pri(nl[inst.pnode], inst)
    nl[inst.pnode] = pnode
    drbd = attrs.evolve(inst, template="drbd")
    secondaries = [n.idx for n in nl.values() if n.group == pnode.group and n.idx != inst.pnode]
    return try_alloc(opts, nl, dict(model.instances), drbd, [(inst.pnode, secondaries)], 2)
