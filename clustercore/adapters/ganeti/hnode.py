"""htools' node and instance records and their bookkeeping, as hail 3.0 keeps them.

A port of Ganeti's ``Node.hs`` and ``Instance.hs`` (the parts hail uses; no forthcoming
instances, no dynamic utilisation): :class:`Inst`, :class:`Node`, and the operations that
add or remove an instance as primary or secondary and refuse with a :class:`Fail` mode,
each in hail's order of checks, so that failure counts match hail's. Division follows
Haskell's ``Double`` (``x / 0`` is infinite, ``0 / 0`` NaN).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

__all__ = ["LOCAL", "MOVABLE", "Fail", "Inst", "Node", "NodeFail", "add_pri", "add_sec", "div", "remove_pri",
           "remove_sec"]

LOCAL = frozenset({"plain", "drbd"})  # localStorageTemplates
MOVABLE = frozenset({"diskless", "sharedfile", "rbd", "ext", "gluster"})  # diskTemplateMovable
EXTERNAL = frozenset({"diskless", "sharedfile", "blockdev", "rbd", "ext", "gluster"})  # MirrorExternal


class Fail(enum.Enum):
    """htools' FailMode, in its declaration order (the order failure counts are printed)."""

    FailMem = 0
    FailDisk = 1
    FailCPU = 2
    FailN1 = 3
    FailTags = 4
    FailMig = 5
    FailDiskCount = 6
    FailSpindles = 7
    FailInternal = 8


class NodeFail(Exception):
    """An operation refused with ``mode``."""

    def __init__(self, mode: Fail) -> None:
        super().__init__(mode.name)
        self.mode = mode


def div(a: float, b: float) -> float:
    """Haskell's Double division."""
    if b:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a)


@attrs.frozen
class Inst:
    """An instance (htools' Instance)."""

    name: str
    mem: int
    dsk: int
    disks: tuple[int, ...]
    disk_spindles: tuple[int | None, ...]
    vcpus: int
    state: str  # running | down | offline
    template: str
    spindle_use: int
    tags: tuple[str, ...] = ()
    excl_tags: tuple[str, ...] = ()
    dsrd_loc_tags: frozenset[str] = frozenset()
    location_score: int = 0
    networks: tuple[str | None, ...] = ()
    pnode: int = -1
    snode: int = -1
    idx: int = -1

    @property
    def offline(self) -> bool:
        return self.state == "offline"

    @property
    def uses_memory(self) -> bool:
        return self.state == "running"

    @property
    def uses_sec_mem(self) -> bool:
        return not self.offline  # autoBalance is always true in IAllocator input

    @property
    def local(self) -> bool:
        return self.template in LOCAL

    @property
    def has_secondary(self) -> bool:
        return self.template == "drbd"

    @property
    def total_spindles(self) -> int | None:
        if any(s is None for s in self.disk_spindles):
            return None
        return sum(s for s in self.disk_spindles if s is not None)


@attrs.frozen
class Node:
    """A node (htools' Node); ``peers`` maps a primary node to the memory it fails over here."""

    name: str
    idx: int
    group: int
    t_mem: float
    n_mem: int
    f_mem: int
    t_dsk: float
    f_dsk: int
    t_cpu: float
    n_cpu: int
    t_spindles: int
    f_spindles: int
    offline: bool
    excl: bool
    tags: tuple[str, ...] = ()
    i_mem: int = 0
    x_mem: int = 0
    f_mem_forth: int = 0
    u_cpu: int = 0
    p_list: tuple[int, ...] = ()
    s_list: tuple[int, ...] = ()
    peers: Mapping[int, int] = attrs.field(factory=dict)
    fail_n1: bool = True
    r_mem: int = 0
    p_mem: float = 0.0
    p_dsk: float = 0.0
    p_rem: float = 0.0
    vcpu_ratio: float = 4.0
    hi_spindles: float = 0.0
    inst_spindles: float = 0.0
    load: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # cpu, mem, disk, net
    p_tags: Mapping[str, int] = attrs.field(factory=dict)
    location_tags: frozenset[str] = frozenset()
    location_score: int = 0
    instance_map: Mapping[tuple[str, str], int] = attrs.field(factory=dict)
    ipolicy: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def unallocated_mem(self) -> int:
        return int(self.t_mem) - self.n_mem - self.i_mem - max(0, self.x_mem)

    @property
    def p_cpu(self) -> float:
        return div(self.u_cpu, self.t_cpu)

    @property
    def p_mem_forth(self) -> float:
        return div(self.f_mem_forth, self.t_mem)

    def new_p_dsk(self, free_sp: int, free_dsk: int) -> float:
        if self.excl:
            return 1.0 if self.t_spindles == 0 else free_sp / self.t_spindles
        return 1.0 if self.t_dsk == 0 else free_dsk / self.t_dsk

    def spindle_use(self, inst: Inst, add: bool) -> float:
        if self.excl or not inst.local:
            return self.inst_spindles
        return self.inst_spindles + (inst.spindle_use if add else -inst.spindle_use)

    def free_spindles(self, inst: Inst, add: bool) -> int:
        if not self.excl:
            return 0
        total = inst.total_spindles
        if total is None:
            return -1 if add else self.f_spindles
        return self.f_spindles - total if add else self.f_spindles + total

    def dsrd_loc_score(self, inst: Inst) -> int:
        return len(inst.dsrd_loc_tags) - len(inst.dsrd_loc_tags & self.location_tags)

    def excl_pairs(self, inst: Inst) -> list[tuple[str, str]]:
        return [(loc, tag) for loc in sorted(self.location_tags) for tag in inst.excl_tags]


K = TypeVar("K", str, tuple[str, str])


def _add_counts(counts: Mapping[K, int], keys: list[K], sign: int) -> dict[K, int]:
    out: dict[K, int] = dict(counts)
    for key in keys:
        value = out.get(key, 0) + sign
        if value > 0:
            out[key] = value
        else:
            out.pop(key, None)
    return out


def _load(load: tuple[float, float, float, float], sign: int, disk_only: bool = False
          ) -> tuple[float, float, float, float]:
    if disk_only:
        return (load[0], load[1], load[2] + sign, load[3])
    return (load[0] + sign, load[1] + sign, load[2] + sign, load[3] + sign)


def set_pri(node: Node, inst: Inst) -> Node:
    """Loading: ``inst`` is a primary of ``node`` (no checks)."""
    u_cpu = node.u_cpu + (0 if inst.offline else inst.vcpus)
    return attrs.evolve(
        node, p_list=(inst.idx, *node.p_list), u_cpu=u_cpu, load=_load(node.load, 1),
        inst_spindles=node.spindle_use(inst, True),
        location_score=node.location_score + inst.location_score + node.dsrd_loc_score(inst),
        instance_map=_add_counts(node.instance_map, node.excl_pairs(inst), 1),
        p_tags=_add_counts(node.p_tags, list(inst.excl_tags), 1),
        f_mem_forth=node.f_mem_forth - (0 if inst.uses_memory else inst.mem))


def set_sec(node: Node, inst: Inst) -> Node:
    """Loading: ``inst`` is a secondary of ``node`` (no checks)."""
    return attrs.evolve(node, s_list=(inst.idx, *node.s_list), load=_load(node.load, 1, disk_only=True),
                        inst_spindles=node.spindle_use(inst, True))


def _prospective_mem(node: Node, inst: Inst, add: bool) -> tuple[int, int]:
    i_mem = node.i_mem + ((inst.mem if add else -inst.mem) if inst.uses_memory else 0)
    return i_mem, attrs.evolve(node, i_mem=i_mem).unallocated_mem


def add_pri(node: Node, inst: Inst, force: bool = False) -> Node:
    """``addPriEx``: ``inst`` as a new primary of ``node``, or NodeFail."""
    strict = not force
    i_mem, free_mem = _prospective_mem(node, inst, True)
    failn1 = free_mem <= node.r_mem
    dsk = node.f_dsk - inst.dsk if inst.local else node.f_dsk
    free_sp = node.free_spindles(inst, True)
    inst_sp = node.spindle_use(inst, True)
    u_cpu = node.u_cpu + (0 if inst.offline else inst.vcpus)
    p_cpu = div(u_cpu, node.t_cpu)
    mem_forth = node.f_mem_forth - inst.mem
    l_cpu = node.vcpu_ratio
    if free_mem <= 0:
        raise NodeFail(Fail.FailMem)
    if inst.local and dsk <= 0:
        raise NodeFail(Fail.FailDisk)
    if inst.local and node.excl and free_sp < 0:
        raise NodeFail(Fail.FailSpindles)
    if strict and inst.local and inst_sp > node.hi_spindles:
        raise NodeFail(Fail.FailDisk)
    if strict and failn1 and not node.fail_n1:
        raise NodeFail(Fail.FailMem)
    if strict and l_cpu >= 0 and l_cpu < p_cpu:
        raise NodeFail(Fail.FailCPU)
    if strict and any(t in node.p_tags for t in inst.excl_tags):
        raise NodeFail(Fail.FailTags)
    if strict and mem_forth <= 0:  # the forthcoming checks, all equal to the above but memory
        raise NodeFail(Fail.FailMem)
    return attrs.evolve(
        node, p_list=(inst.idx, *node.p_list), i_mem=i_mem, f_dsk=dsk, fail_n1=failn1,
        p_mem=div(free_mem, node.t_mem), p_dsk=node.new_p_dsk(free_sp, dsk), u_cpu=u_cpu,
        load=_load(node.load, 1), inst_spindles=inst_sp, f_spindles=free_sp,
        location_score=node.location_score + inst.location_score + node.dsrd_loc_score(inst),
        instance_map=_add_counts(node.instance_map, node.excl_pairs(inst), 1),
        p_tags=_add_counts(node.p_tags, list(inst.excl_tags), 1), f_mem_forth=mem_forth)


def add_sec(node: Node, inst: Inst, pdx: int, force: bool = False, ignore_disks: bool = False) -> Node:
    """``addSecExEx``: ``inst`` (primary on node ``pdx``) as a new secondary of ``node``."""
    strict = not force
    needed = inst.mem if inst.uses_sec_mem else 0
    peem = node.peers.get(pdx, 0) + needed
    old_mem = node.unallocated_mem
    dsk = node.f_dsk - inst.dsk
    free_sp = node.free_spindles(inst, True)
    inst_sp = node.spindle_use(inst, True)
    r_mem = max(node.r_mem, peem)
    failn1 = old_mem <= r_mem
    if not inst.has_secondary:
        raise NodeFail(Fail.FailDisk)
    if not ignore_disks and dsk <= 0:
        raise NodeFail(Fail.FailDisk)
    if node.excl and free_sp < 0:
        raise NodeFail(Fail.FailSpindles)
    if strict and inst_sp > node.hi_spindles:
        raise NodeFail(Fail.FailDisk)
    if strict and needed >= old_mem:
        raise NodeFail(Fail.FailMem)
    if strict and failn1 and not node.fail_n1:
        raise NodeFail(Fail.FailMem)
    if strict and needed >= node.f_mem_forth:
        raise NodeFail(Fail.FailMem)
    return attrs.evolve(node, s_list=(inst.idx, *node.s_list), f_dsk=dsk, peers={**node.peers, pdx: peem},
                        fail_n1=failn1, r_mem=r_mem, p_dsk=node.new_p_dsk(free_sp, dsk),
                        p_rem=div(r_mem, node.t_mem), load=_load(node.load, 1, disk_only=True),
                        inst_spindles=inst_sp, f_spindles=free_sp)


def _without(items: tuple[int, ...], idx: int) -> tuple[int, ...]:
    out = list(items)
    if idx in out:
        out.remove(idx)
    return tuple(out)


def remove_pri(node: Node, inst: Inst) -> Node:
    i_mem, free_mem = _prospective_mem(node, inst, False)
    dsk = node.f_dsk + inst.dsk if inst.local else node.f_dsk
    free_sp = node.free_spindles(inst, False)
    return attrs.evolve(
        node, p_list=_without(node.p_list, inst.idx), i_mem=i_mem, f_dsk=dsk, fail_n1=free_mem <= node.r_mem,
        p_mem=div(free_mem, node.t_mem), p_dsk=node.new_p_dsk(free_sp, dsk),
        u_cpu=node.u_cpu - (0 if inst.offline else inst.vcpus), load=_load(node.load, -1),
        inst_spindles=node.spindle_use(inst, False), f_spindles=free_sp,
        location_score=node.location_score - inst.location_score - node.dsrd_loc_score(inst),
        instance_map=_add_counts(node.instance_map, node.excl_pairs(inst), -1),
        p_tags=_add_counts(node.p_tags, list(inst.excl_tags), -1), f_mem_forth=node.f_mem_forth + inst.mem)


def remove_sec(node: Node, inst: Inst) -> Node:
    dsk = node.f_dsk + inst.dsk if inst.local else node.f_dsk
    free_sp = node.free_spindles(inst, False)
    old_peem = node.peers.get(inst.pnode, 0)
    new_peem = old_peem - inst.mem if inst.uses_sec_mem else old_peem
    peers = dict(node.peers)
    if new_peem > 0:
        peers[inst.pnode] = new_peem
    else:
        peers.pop(inst.pnode, None)
    r_mem = node.r_mem if old_peem < node.r_mem else max(peers.values(), default=0)
    return attrs.evolve(node, s_list=_without(node.s_list, inst.idx), f_dsk=dsk, peers=peers,
                        fail_n1=node.unallocated_mem <= r_mem, r_mem=r_mem, p_dsk=node.new_p_dsk(free_sp, dsk),
                        p_rem=div(r_mem, node.t_mem), load=_load(node.load, -1, disk_only=True),
                        inst_spindles=node.spindle_use(inst, False), f_spindles=free_sp)
