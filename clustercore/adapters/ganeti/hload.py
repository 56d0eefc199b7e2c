"""Reading an IAllocator request into htools' records, as hail's loader does
(``Backend/IAlloc.hs`` and ``Loader.hs``): indices in the file's order, offline (or not
vm-capable) nodes reporting nothing, drained nodes offline, exclusion and location tags
from the cluster tags, peers and N+1 state built from the instances."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from clustercore.adapters.ganeti.hnode import Inst, Node, div, set_pri, set_sec
from clustercore.adapters.ganeti.validate import (
    MAX_COUNT,
    MAX_CPUS,
    MAX_DISK,
    MAX_MEMORY,
    RequestError,
    flag,
    mapping,
    number,
    ratio,
    strings,
)

__all__ = ["EXCLUSION", "GroupInfo", "Model", "load", "parse_instance"]

EXCLUSION = "htools:iextags:"
LOCATION = "htools:nlocation:"
DESIRED = "htools:desiredlocation:"
_DEFAULT_POLICY: Mapping[str, Any] = {"minmax": [], "disk-templates": ["diskless", "file", "sharedfile", "plain",
                                                                      "blockdev", "drbd", "rbd", "ext", "gluster"],
                                      "vcpu-ratio": 4.0, "spindle-ratio": 32.0}
_STATE = {"up": "running", "down": "down", "offline": "offline"}


@attrs.frozen
class GroupInfo:
    idx: int
    uuid: str
    name: str
    policy: str
    networks: tuple[str, ...]
    ipolicy: Mapping[str, Any]

    @property
    def allocable(self) -> bool:
        return self.policy != "unallocable"

    @property
    def rank(self) -> int:
        return {"preferred": 0, "last_resort": 1}.get(self.policy, 2)

    tags: tuple[str, ...] = ()

    def haskell(self) -> str:
        """The group as hail's Haskell ``show`` prints it (hail puts it in one message)."""
        policy = {"preferred": "AllocPreferred", "last_resort": "AllocLastResort"}.get(self.policy, "AllocUnallocable")
        p = self.ipolicy
        minmax = ",".join(f"MinMaxISpecs {{minMaxISpecsMinSpec = {_ispec(b.get('min', {}))}, "
                           f"minMaxISpecsMaxSpec = {_ispec(b.get('max', {}))}}}" for b in p.get("minmax") or [])
        templates = ",".join(_DT.get(t, t) for t in p.get("disk-templates") or [])
        return (f"Group {{name = {_hstr(self.name)}, uuid = {_hstr(self.uuid)}, idx = {self.idx}, "
                f"allocPolicy = {policy}, networks = [{','.join(map(_hstr, self.networks))}], "
                f"iPolicy = IPolicy {{iPolicyMinMaxISpecs = [{minmax}], iPolicyStdSpec = {_ispec(p.get('std', {}))}, "
                f"iPolicyDiskTemplates = [{templates}], iPolicyVcpuRatio = {_hdouble(p.get('vcpu-ratio', 4.0))}, "
                f"iPolicySpindleRatio = {_hdouble(p.get('spindle-ratio', 32.0))}}}, "
                f"allTags = [{','.join(map(_hstr, self.tags))}]}}")


_DT = {"diskless": "DTDiskless", "file": "DTFile", "sharedfile": "DTSharedFile", "plain": "DTPlain",
       "blockdev": "DTBlock", "drbd": "DTDrbd8", "rbd": "DTRbd", "ext": "DTExt", "gluster": "DTGluster"}


def _hstr(text: str) -> str:
    return json.dumps(text)


def _hdouble(value: float) -> str:
    """Haskell's ``show`` of a Double."""
    value = float(value)
    if value == 0 or 0.1 <= abs(value) < 1e7:
        return repr(value)
    mantissa, exponent = f"{value:.16e}".split("e")
    digits = repr(float(mantissa))
    return f"{digits}e{int(exponent)}"


def _ispec(spec: Mapping[str, Any]) -> str:
    keys = (("iSpecMemorySize", "memory-size"), ("iSpecCpuCount", "cpu-count"), ("iSpecDiskSize", "disk-size"),
            ("iSpecDiskCount", "disk-count"), ("iSpecNicCount", "nic-count"), ("iSpecSpindleUse", "spindle-use"))
    return "ISpec {" + ", ".join(f"{h} = {spec.get(k, 0)}" for h, k in keys) + "}"


@attrs.frozen
class Model:
    """The cluster as hail sees it: groups, nodes and instances indexed in file order."""

    groups: tuple[GroupInfo, ...]
    nodes: tuple[Node, ...]
    instances: Mapping[int, Inst]
    excl_prefixes: tuple[str, ...]
    dsrd_prefixes: tuple[str, ...]

    def node_index(self, name: str) -> int:
        for n in self.nodes:
            if n.name == name:
                return n.idx
        raise KeyError(name)


def _prefixed(tags: list[str], prefix: str) -> tuple[str, ...]:
    return tuple(t[len(prefix):] for t in tags if t.startswith(prefix) and len(t) > len(prefix))


def parse_instance(data: Mapping[str, Any], name: str, model_prefixes: tuple[tuple[str, ...], tuple[str, ...]],
                   pnode: int = -1, snode: int = -1, idx: int = -1) -> Inst:
    """An instance (Spec.parse has checked ``data`` already)."""
    excl, dsrd = model_prefixes
    where = f"instance {name}"
    disks = data.get("disks") or []
    tags = strings(data, "tags", where)
    sizes = tuple(number(d, "size", where, MAX_DISK) for d in disks)
    return Inst(
        name=name, mem=number(data, "memory", where, MAX_MEMORY),
        dsk=number(data, "disk_space_total", where, MAX_DISK, default=sum(sizes)), disks=sizes,
        disk_spindles=tuple(d.get("spindles") if type(d.get("spindles")) is int else None for d in disks),
        vcpus=number(data, "vcpus", where, MAX_CPUS), state=_STATE.get(data.get("admin_state", "up"), "running"),
        template=data["disk_template"], spindle_use=number(data, "spindle_use", where, MAX_COUNT, default=1),
        tags=tags,
        excl_tags=tuple(t for t in tags if any(t.startswith(p) for p in excl)),
        dsrd_loc_tags=frozenset(t for t in tags if any(t.startswith(p) for p in dsrd)),
        networks=tuple(n.get("network") if isinstance(n, Mapping) else None for n in data.get("nics") or []),
        pnode=pnode, snode=snode, idx=idx)


def _node(name: str, nd: Mapping[str, Any], idx: int, group: GroupInfo, ctags: list[str]) -> Node:
    where = f"nodes.{name}"
    ndparams = mapping(nd, "ndparams", where, default={})
    excl = flag(ndparams, "exclusive_storage", where, False)
    live = not flag(nd, "offline", where, False) and flag(nd, "vm_capable", where, True)
    limits = {"total_memory": MAX_MEMORY, "reserved_memory": MAX_MEMORY, "free_memory": MAX_MEMORY,
              "total_disk": MAX_DISK, "free_disk": MAX_DISK, "total_cpus": MAX_CPUS, "reserved_cpus": MAX_CPUS,
              "total_spindles": MAX_COUNT, "free_spindles": MAX_COUNT}

    def get(key: str) -> int:
        return number(nd, key, where, limits[key], default=0) if live else 0

    spindles = get("total_spindles") if excl else number(ndparams, "spindle_count", where, MAX_COUNT, default=1)
    t_dsk, f_dsk = float(get("total_disk")), get("free_disk")
    f_sp = get("free_spindles")
    t_mem = float(get("total_memory"))
    prefixes = _prefixed(ctags, LOCATION)
    node_tags = strings(nd, "tags", where)
    node = Node(name=name, idx=idx, group=group.idx, t_mem=t_mem, n_mem=get("reserved_memory"),
                f_mem=get("free_memory"), t_dsk=t_dsk, f_dsk=f_dsk, t_cpu=float(get("total_cpus")),
                n_cpu=get("reserved_cpus"), t_spindles=spindles, f_spindles=f_sp,
                offline=not live or flag(nd, "drained", where, False), excl=excl, tags=node_tags,
                location_tags=frozenset(t for t in node_tags if any(t.startswith(p + ":") for p in prefixes)),
                ipolicy=group.ipolicy, vcpu_ratio=ratio(group.ipolicy, "vcpu-ratio", where, 4.0),
                hi_spindles=ratio(group.ipolicy, "spindle-ratio", where, 32.0) * spindles)
    p_dsk = node.new_p_dsk(f_sp, f_dsk)
    return attrs.evolve(node, u_cpu=node.n_cpu, f_mem_forth=node.f_mem, p_dsk=p_dsk,
                        p_mem=div(node.f_mem, t_mem))


def load(data: Mapping[str, Any], static_kvm_memory: int = 4096) -> Model:
    """The request's cluster (already checked by :func:`cluster.check`). On a KVM
    cluster (the first enabled hypervisor), each node's own memory is ``static_kvm_memory``
    rather than its reported ``reserved_memory`` (hail's ``--static-kvm-node-memory``,
    4096 by default; 0 keeps the reported value)."""
    hypervisors = data.get("enabled_hypervisors")
    kvm = isinstance(hypervisors, list) and hypervisors[:1] == ["kvm"] and static_kvm_memory > 0
    cluster_policy = data.get("ipolicy") or _DEFAULT_POLICY
    groups = []
    for i, (uuid, g) in enumerate(data["nodegroups"].items()):
        groups.append(GroupInfo(i, uuid, g["name"], g.get("alloc_policy", "preferred"),
                                strings(g, "networks", f"nodegroups.{uuid}"), g.get("ipolicy") or cluster_policy,
                                strings(g, "tags", f"nodegroups.{uuid}")))
    by_uuid = {g.uuid: g for g in groups}
    ctags = list(strings(data, "cluster_tags", "request file"))
    prefixes = (_prefixed(ctags, EXCLUSION), _prefixed(ctags, DESIRED))
    nodes = [_node(name, nd, i, by_uuid[nd["group"]], ctags) for i, (name, nd) in enumerate(data["nodes"].items())]
    index = {n.name: n.idx for n in nodes}
    instances: dict[int, Inst] = {}
    for i, (name, raw) in enumerate(data["instances"].items()):
        where = [index[n] for n in raw.get("nodes") or []]
        if not where:
            raise RequestError(f"instances.{name}.nodes: empty node list for instance {name}")
        if raw.get("disk_template") == "drbd" and len(where) < 2:
            raise RequestError(f"instances.{name}.nodes: a drbd instance needs a primary and a secondary")
        inst = parse_instance(raw, name, prefixes, where[0], where[1] if len(where) > 1 else -1, i)
        if inst.snode >= 0:
            shared = nodes[inst.pnode].location_tags & nodes[inst.snode].location_tags
            inst = attrs.evolve(inst, location_score=len(shared))
        instances[i] = inst
    for inst in instances.values():
        nodes[inst.pnode] = set_pri(nodes[inst.pnode], inst)
        if inst.snode >= 0:
            nodes[inst.snode] = set_sec(nodes[inst.snode], inst)
    for k, node in enumerate(nodes):
        peers: dict[int, int] = {}
        for i in node.s_list:
            inst = instances[i]
            peers[inst.pnode] = peers.get(inst.pnode, 0) + (inst.mem if inst.uses_sec_mem else 0)
        r_mem = max(peers.values(), default=0)
        if kvm:
            node = attrs.evolve(node, n_mem=static_kvm_memory)
        i_mem = sum(instances[i].mem for i in node.p_list if instances[i].uses_memory)
        node = attrs.evolve(node, peers=peers, r_mem=r_mem, p_rem=div(r_mem, node.t_mem), i_mem=i_mem)
        recorded = int(node.t_mem) - node.n_mem - i_mem
        node = attrs.evolve(node, x_mem=recorded - node.f_mem)
        # htools 3.0.2 sets failN1 from the reported free memory (buildPeers); later
        # versions from the unallocated memory: the installed hail is 3.0.2.
        nodes[k] = attrs.evolve(node, fail_n1=node.f_mem < r_mem, p_mem=div(node.unallocated_mem, node.t_mem))
    return Model(tuple(groups), tuple(nodes), instances, prefixes[0], prefixes[1])
