"""The request file's cluster, checked before anything reads it: its node groups and their
instance policies, its nodes' numbers, its instances (:class:`Spec`) and the nodes they
name. :func:`check` refuses a malformed file with a :class:`RequestError` that says what
and where (see ``validate`` for the limits)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MIRRORED", "SHARED", "RequestError", "Spec", "check", "need"]

import attrs

from clustercore.adapters.ganeti.validate import (
    MAX_COUNT,
    MAX_CPUS,
    MAX_DISK,
    MAX_MEMORY,
    RequestError,
    flag,
    mapping,
    need,
    number,
    ratio,
    show,
    strings,
)

MIRRORED = {"drbd"}  # internally mirrored: a secondary node
SHARED = {"sharedfile", "blockdev", "rbd", "ext", "gluster", "diskless"}  # externally mirrored


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
        """The instance ``data`` describes, every field typed and bounded (see ``validate``)."""
        if not isinstance(data, Mapping):
            raise RequestError(f"{where}: expected dict, got {show(data)}")
        disks = data.get("disks") or []
        if not isinstance(disks, list) or len(disks) > MAX_COUNT:
            raise RequestError(f"{where}.disks: expected a list of at most {MAX_COUNT} disks, got {show(disks)}")
        sizes = tuple(number(d, "size", f"{where}.disks[{i}]", MAX_DISK) for i, d in enumerate(disks))
        if sum(sizes) > MAX_DISK:
            raise RequestError(f"{where}.disks: total size {sum(sizes)} is more than {MAX_DISK}")
        nics = data.get("nics") or []
        if not isinstance(nics, list) or len(nics) > MAX_COUNT:
            raise RequestError(f"{where}.nics: expected a list of at most {MAX_COUNT} NICs, got {show(nics)}")
        nodes = strings(data, "nodes", where)
        if len(nodes) > 2 or len(set(nodes)) != len(nodes):
            raise RequestError(f"{where}.nodes: expected at most two distinct nodes, got {show(list(nodes))}")
        state = data.get("admin_state", "up")
        if not isinstance(state, str):
            raise RequestError(f"{where}.admin_state: expected str, got {show(state)}")
        return cls(
            name=name or need(data, "name", str, where),
            memory=number(data, "memory", where, MAX_MEMORY),
            vcpus=number(data, "vcpus", where, MAX_CPUS, low=1),  # hail: 0 vCPUs fit nowhere (FailCPU)
            disk=number(data, "disk_space_total", where, MAX_DISK, default=sum(sizes)),
            disks=sizes,
            nics=len(nics),
            spindle_use=number(data, "spindle_use", where, MAX_COUNT, default=1),
            template=need(data, "disk_template", str, where),
            tags=strings(data, "tags", where),
            nodes=nodes,
            running=state == "up",
        )


def check(data: Any) -> Mapping[str, Any]:
    """The request of a well-formed request file ``data``; a :class:`RequestError` otherwise."""
    if not isinstance(data, Mapping):
        raise RequestError("the request must be a JSON object")
    request: Mapping[str, Any] = need(data, "request", dict, "request file")
    _ipolicy(data, "request file")
    groups = need(data, "nodegroups", dict, "request file")
    for uuid, g in groups.items():
        where = f"nodegroups.{uuid}"
        policy = need(g, "alloc_policy", str, where) if isinstance(g, Mapping) and "alloc_policy" in g else None
        if policy not in (None, "preferred", "last_resort", "unallocable"):
            raise RequestError(f"{where}.alloc_policy: must be preferred, last_resort or unallocable, "
                               f"got {show(policy)}")
        need(g, "name", str, where)
        _ipolicy(g, where)
    nodes = need(data, "nodes", dict, "request file")
    for name in sorted(nodes):
        nd, where = nodes[name], f"nodes.{name}"
        for key, limit in (("total_memory", MAX_MEMORY), ("free_memory", MAX_MEMORY), ("total_disk", MAX_DISK),
                           ("free_disk", MAX_DISK), ("total_cpus", MAX_CPUS)):
            number(nd, key, where, limit)
        number(nd, "reserved_cpus", where, MAX_CPUS, default=0)
        number(nd, "free_spindles", where, MAX_COUNT, default=0)
        number(nd, "total_spindles", where, MAX_COUNT, default=0)
        ndparams = mapping(nd, "ndparams", where, default={})
        flag(ndparams, "exclusive_storage", f"{where}.ndparams", False)
        flag(nd, "offline", where, False)
        flag(nd, "drained", where, False)
        flag(nd, "vm_capable", where, True)
        group = need(nd, "group", str, where)
        if group not in groups:
            raise RequestError(f"{where}.group: unknown node group {show(group)}")
        number(ndparams, "spindle_count", f"{where}.ndparams", MAX_COUNT, default=1)
    for name, raw in need(data, "instances", dict, "request file").items():
        spec = Spec.parse(raw, f"instances.{name}", name)
        for node in spec.nodes:
            if node not in nodes:
                raise RequestError(f"instances.{name}.nodes: unknown node {show(node)}")
    strings(data, "cluster_tags", "request file")
    return request


_IPOLICY_KEYS = ("memory-size", "cpu-count", "disk-count", "disk-size", "spindle-use", "nic-count")


def _ipolicy(data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The ``ipolicy`` of ``data`` (a group or the cluster), checked: disk templates a list
    of strings, ``minmax`` a list of ``{min, max}`` of bounded integers, ratios finite."""
    policy = mapping(data, "ipolicy", where, default={})
    where = f"{where}.ipolicy"
    if "disk-templates" in policy:
        strings(policy, "disk-templates", where)
    ratio(policy, "vcpu-ratio", where, 4.0)
    ratio(policy, "spindle-ratio", where, 32.0)
    minmax = policy.get("minmax") or []
    if not isinstance(minmax, list) or len(minmax) > MAX_COUNT:
        raise RequestError(f"{where}.minmax: expected a list, got {show(minmax)}")
    for i, bounds in enumerate(minmax):
        if not isinstance(bounds, Mapping):
            raise RequestError(f"{where}.minmax[{i}]: expected dict, got {show(bounds)}")
        for side in ("min", "max"):
            if side not in bounds:
                continue
            limits = mapping(bounds, side, f"{where}.minmax[{i}]")
            for key in _IPOLICY_KEYS:
                if key in limits:
                    number(limits, key, f"{where}.minmax[{i}].{side}", MAX_DISK)
    return policy
