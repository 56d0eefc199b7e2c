"""Differential testing of clustercore-iallocator against the installed hail (htools 3.0).

:func:`requests` builds random clusters and requests inside Ganeti's data model (node
groups with alloc policies and ipolicies, nodes offline or drained, DRBD, plain and shared
disk templates, running, stopped and offline instances, exclusion tags, spindles and
exclusive storage); :func:`compare` runs hail and ours on the same request file with the
same options and says how they differ, or None.

Two answers agree when both succeed or both fail; a failure's info text must be hail's
word for word (the failure counts "FailMem: 2, FailN1: 1" are what Ganeti users read); a
success must pick hail's nodes, or nodes whose cluster score ties hail's. The score is
judged by Ganeti itself: both placements are written into hail's own ``-S`` pre-allocation
state by one writer and scored by ``hinfo -t`` ("Cluster score").
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from clustercore.adapters.ganeti import answer

BIN = Path("/usr/lib/ganeti/3.0/usr")
HAIL = BIN / "lib/ganeti/iallocators/hail"
HINFO = BIN / "bin/hinfo"
LOCAL = {"plain", "drbd"}
SHARED = ("ext", "sharedfile", "rbd", "blockdev")
TIE = 1e-6

NETWORKS = ("uuid-net-a", "uuid-net-b")
SPEC_KEYS = ("memory-size", "cpu-count", "disk-count", "disk-size", "nic-count", "spindle-use")


@st.composite
def ipolicies(draw: st.DrawFn) -> dict[str, Any]:
    low = {"memory-size": draw(st.sampled_from([128, 512])), "cpu-count": 1, "disk-count": 1,
           "disk-size": draw(st.sampled_from([128, 1024])), "nic-count": 1, "spindle-use": 1}
    high = {"memory-size": draw(st.sampled_from([4096, 32768])), "cpu-count": draw(st.sampled_from([4, 8])),
            "disk-count": draw(st.sampled_from([1, 2, 16])), "disk-size": draw(st.sampled_from([8192, 1048576])),
            "nic-count": 8, "spindle-use": draw(st.sampled_from([2, 12]))}
    templates = ["plain", "drbd", *SHARED, "diskless", "file"]
    if draw(st.booleans()):
        templates = draw(st.lists(st.sampled_from(templates), min_size=1, max_size=4, unique=True))
    minmax = [{"min": low, "max": high}]
    if draw(st.integers(0, 3)) == 0:
        minmax.append({"min": high | {"memory-size": high["memory-size"] + 1, "cpu-count": 1, "disk-count": 1,
                                      "disk-size": 1, "spindle-use": 1},
                       "max": high | {"memory-size": high["memory-size"] * 4, "disk-count": 4}})
    return {"minmax": minmax, "std": low, "disk-templates": templates,
            "vcpu-ratio": draw(st.sampled_from([1.0, 2.0, 4.0])), "spindle-ratio": draw(st.sampled_from([1.0, 32.0]))}


def _disks(draw: st.DrawFn, template: str) -> list[dict[str, Any]]:
    if template == "diskless":
        return []
    count = draw(st.integers(1, 2))
    return [{"mode": "rw", "size": draw(st.sampled_from([256, 1024, 4096, 10240])), "spindles": 1}
            for _ in range(count)]


@st.composite
def new_instance(draw: st.DrawFn, name: str, templates: list[str], tags: list[str]) -> dict[str, Any]:
    template = draw(st.sampled_from(templates))
    disks = _disks(draw, template)
    return {"name": name, "memory": draw(st.sampled_from([128, 512, 1024, 2048, 4096, 8192])),
            "vcpus": draw(st.integers(1, 4)), "disks": disks,
            "disk_space_total": sum(d["size"] for d in disks), "disk_template": template,
            "spindle_use": draw(st.integers(1, 2)), "tags": draw(st.lists(st.sampled_from(tags), max_size=2,
                                                                          unique=True)),
            "nics": [{"mac": "aa:00:00:00:00:01", "ip": None, "mode": "bridged", "link": "br0",
                      "network": draw(st.sampled_from([None, None, *NETWORKS]))}
                     for _ in range(draw(st.integers(0, 2)))],
            "os": "debian", "hypervisor": "kvm",
            "required_nodes": 2 if template == "drbd" else 1}


@st.composite
def requests(draw: st.DrawFn, kinds: tuple[str, ...] = ("allocate",)) -> dict[str, Any]:
    """A cluster of 2-6 nodes in 1-2 groups with up to 6 instances, and a request."""
    ngroups = draw(st.integers(1, 2))
    cluster_policy = draw(ipolicies())
    groups = {}
    for g in range(ngroups):
        policy = draw(st.sampled_from(["preferred"] * 4 + ["last_resort", "unallocable"])) if g else "preferred"
        groups[f"uuid-{g}"] = {"name": f"group{g}", "alloc_policy": policy,
                               "ipolicy": draw(ipolicies()) if draw(st.booleans()) else cluster_policy,
                               "networks": draw(st.lists(st.sampled_from(NETWORKS), max_size=2, unique=True)),
                               "tags": []}
    nnodes = draw(st.integers(2, 6))
    exclusive = draw(st.booleans()) and draw(st.booleans())
    dedicated = exclusive and draw(st.booleans())  # node0 too: hail's dedicated allocation
    nodes: dict[str, Any] = {}
    for i in range(nnodes):
        total = draw(st.sampled_from([4096, 8192, 16384, 32768]))
        reserved = draw(st.sampled_from([0, 512, 1024]))
        disk = draw(st.sampled_from([20480, 102400, 409600]))
        spindles = draw(st.integers(1, 12))
        nodes[f"node{i}"] = {
            "total_memory": total, "reserved_memory": reserved, "free_memory": total - reserved,
            "total_disk": disk, "free_disk": disk, "total_cpus": draw(st.sampled_from([2, 4, 8])),
            "reserved_cpus": draw(st.sampled_from([0, 1])), "total_spindles": spindles, "free_spindles": spindles,
            "group": f"uuid-{draw(st.integers(0, ngroups - 1)) if i else 0}",
            "offline": draw(st.integers(0, 9)) == 0, "drained": draw(st.integers(0, 9)) == 0,
            "vm_capable": draw(st.integers(0, 14)) > 0, "master_capable": True, "master_candidate": True,
            "tags": draw(st.lists(st.sampled_from(["rack:r1", "rack:r2", "power:p1", "other"]), max_size=2,
                                  unique=True)),
            "ndparams": {"spindle_count": spindles, "exclusive_storage": exclusive and (i > 0 or dedicated)},
            "primary_ip": f"192.0.2.{i + 1}", "secondary_ip": f"198.51.100.{i + 1}"}
    tags = ["svc:a", "svc:b", "other", "rack:r1", "rack:r2"]
    instances: dict[str, Any] = {}
    names = list(nodes)
    for j in range(draw(st.integers(0, 6))):
        inst = draw(new_instance(f"inst{j}", ["plain", "drbd", *SHARED[:2], "diskless"], tags))
        primary = draw(st.sampled_from(names))
        peers = [n for n in names if n != primary and nodes[n]["group"] == nodes[primary]["group"]]
        if inst["disk_template"] == "drbd" and not peers:
            continue
        where = [primary, draw(st.sampled_from(peers))] if inst["disk_template"] == "drbd" else [primary]
        state = draw(st.sampled_from(["up", "up", "up", "down", "offline"]))
        if state == "up" and nodes[primary]["free_memory"] < inst["memory"]:
            state = "down"
        if inst["disk_template"] in LOCAL and any(nodes[n]["free_disk"] < inst["disk_space_total"] for n in where):
            continue
        if state == "up":
            nodes[primary]["free_memory"] -= inst["memory"]
        for n in where if inst["disk_template"] in LOCAL else []:
            nodes[n]["free_disk"] -= inst["disk_space_total"]
            nodes[n]["free_spindles"] = max(nodes[n]["free_spindles"] - len(inst["disks"]), 0)
        inst.pop("name"), inst.pop("required_nodes")
        instances[f"inst{j}"] = inst | {"nodes": where, "admin_state": state, "admin_state_source": "admin"}
    cluster_tags = draw(st.lists(st.sampled_from(["htools:iextags:svc", "htools:nlocation:rack",
                                                  "htools:nlocation:power", "htools:desiredlocation:rack"]),
                                 max_size=3, unique=True))
    kind = draw(st.sampled_from(kinds))
    hypervisor = draw(st.sampled_from(["kvm", "kvm", "xen-pvm"]))
    if kind in MOVES and not instances:
        kind = "allocate"
    if kind == "allocate":
        request = {"type": "allocate"} | draw(new_instance("new0", ["plain", "drbd", *SHARED[:2]], tags))
        if draw(st.integers(0, 5)) == 0:
            request["restrict-to-nodes"] = draw(st.lists(st.sampled_from(sorted(nodes)), min_size=1, unique=True))
        if draw(st.integers(0, 5)) == 0:
            request["group_name"] = draw(st.sampled_from([g["name"] for g in groups.values()]))
    elif kind in MOVES:
        request = draw(move_request(kind, instances, nodes, groups))
    else:
        request = {"type": "multi-allocate",
                   "instances": [draw(new_instance(f"new{k}", ["plain", "drbd", "ext"], tags))
                                 for k in range(draw(st.integers(1, 4)))]}
    return {"version": 2, "cluster_name": "diff", "cluster_tags": cluster_tags, "enabled_hypervisors": [hypervisor],
            "ipolicy": cluster_policy, "nodegroups": groups, "nodes": nodes, "instances": instances,
            "request": request}


@st.composite
def flags(draw: st.DrawFn) -> tuple[str, ...]:
    """hail's options: capacity checks off in a third, soft errors ignored, allocation restricted."""
    out = []
    if draw(st.integers(0, 2)) == 0:
        out.append("--no-capacity-checks")
    if draw(st.integers(0, 4)) == 0:
        out.append("--ignore-soft-errors")
    if draw(st.integers(0, 6)) == 0:
        chosen = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True))
        out.append("--restrict-allocation-to=" + ",".join(f"node{i}" for i in chosen))
    return tuple(out)


MOVES = ("relocate", "node-evacuate", "change-group", "allocate-secondary")
KINDS = ("allocate", "multi-allocate", *MOVES)


@st.composite
def move_request(draw: st.DrawFn, kind: str, instances: dict[str, Any], nodes: dict[str, Any],
                 groups: dict[str, Any]) -> dict[str, Any]:
    """A request about existing instances, shaped as Ganeti sends it."""
    name = draw(st.sampled_from(sorted(instances)))
    inst = instances[name]
    if kind == "relocate":
        old = inst["nodes"][1:] if inst["disk_template"] == "drbd" else inst["nodes"][:1]
        return {"type": "relocate", "name": name, "required_nodes": 1, "relocate_from": old}
    if kind == "allocate-secondary":
        return {"type": "allocate-secondary", "name": name}
    if kind == "change-group":
        chosen = draw(st.lists(st.sampled_from(sorted(instances)), min_size=1, max_size=3, unique=True))
        targets = draw(st.lists(st.sampled_from(sorted(groups)), max_size=2, unique=True))
        return {"type": "change-group", "instances": chosen, "target_groups": targets}
    node = draw(st.sampled_from(inst["nodes"]))
    mode = draw(st.sampled_from(["all", "primary-only", "secondary-only"]))
    on_node = [n for n, i in instances.items()
               if (mode != "secondary-only" and i["nodes"][0] == node) or
               (mode != "primary-only" and node in i["nodes"][1:])]
    return {"type": "node-evacuate", "evac_mode": mode, "instances": on_node or [name]}


# ------------------------------------------------------------------------------ running


def run_hail(path: Path, flags: tuple[str, ...], state: Path) -> dict[str, Any]:
    # hail prints its answer before saving the state; saving can fail after a group-restricted
    # allocation (hail 3.0.2 exits 1 there), so the answer is read whatever the exit status.
    done = subprocess.run([str(HAIL), *flags, "-S", str(state), str(path)], capture_output=True, text=True,
                          timeout=20, check=False)
    if not done.stdout.strip():
        raise RuntimeError(f"hail printed no answer (exit {done.returncode}): {done.stderr[-500:]}")
    return json.loads(done.stdout.splitlines()[0])  # type: ignore[no-any-return]


def run_ours(data: dict[str, Any], flags: tuple[str, ...]) -> dict[str, Any]:
    return answer(data, flags)


def placements(data: dict[str, Any], result: Any) -> list[tuple[dict[str, Any], list[str]]]:
    request = data["request"]
    if request["type"] == "allocate":
        return [(request, result)]
    by_name = {i["name"]: i for i in request["instances"]}
    return [(by_name[name], nodes) for name, nodes in result[0]]


def hinfo_score(pre: str, placed: list[tuple[dict[str, Any], list[str]]], work: Path, tag: str) -> float:
    """hinfo's cluster score of hail's pre-allocation state plus ``placed``."""
    groups, nodes, instances, *rest = pre.split("\n\n")
    rows = {row[0]: row for row in (line.split("|") for line in nodes.splitlines())}
    lines = instances.splitlines()
    for spec, where in placed:
        rows[where[0]][3] = str(int(rows[where[0]][3]) - spec["memory"])
        local = spec["disk_template"] in LOCAL
        for node in where if local else []:
            rows[node][5] = str(int(rows[node][5]) - spec["disk_space_total"])
        lines.append("|".join([spec["name"], str(spec["memory"]), str(spec["disk_space_total"]), str(spec["vcpus"]),
                               "running", "Y", where[0], where[1] if len(where) > 1 else "", spec["disk_template"],
                               ",".join(spec.get("tags", [])), str(spec["spindle_use"]),
                               str(len(spec["disks"])), "N"]))
    path = work / f"{tag}.txt"
    path.write_text("\n\n".join([groups, "\n".join("|".join(r) for r in rows.values()), "\n".join(lines), *rest]))
    out = subprocess.run([str(HINFO), "-t", str(path)], capture_output=True, text=True, timeout=20,
                         check=True).stdout
    match = re.search(r"Cluster score: ([0-9.eE+-]+|NaN)", out)
    assert match, out
    return float(match.group(1))


def compare(data: dict[str, Any], flags: tuple[str, ...] = ()) -> str | None:
    """None if ours answers as hail does (see the module docstring), else what differs."""
    with tempfile.TemporaryDirectory(prefix="ganeti-diff-") as tmp:
        work = Path(tmp)
        path = work / "request.json"
        path.write_text(json.dumps(data))
        hail = run_hail(path, flags, work / "state")
        ours = run_ours(json.loads(path.read_text()), flags)
        if hail["success"] != ours["success"]:
            return f"success: hail {hail['success']} ({hail['info']}), ours {ours['success']} ({ours['info']})"
        if not hail["success"]:
            return None if hail["info"] == ours["info"] else f"info: hail {hail['info']!r}, ours {ours['info']!r}"
        if hail["result"] == ours["result"]:
            return None
        if data["request"]["type"] in MOVES:  # moves must match exactly (no score tie judged yet)
            return f"result: hail {hail['result']}, ours {ours['result']}"
        if data["request"]["type"] == "multi-allocate" and \
                [n for n, _ in hail["result"][1]] != [n for n, _ in ours["result"][1]]:
            return f"failed instances: hail {hail['result'][1]}, ours {ours['result'][1]}"
        pre = (work / "state.pre-ialloc").read_text()
        theirs = hinfo_score(pre, placements(data, hail["result"]), work, "hail")
        mine = hinfo_score(pre, placements(data, ours["result"]), work, "ours")
        if abs(theirs - mine) <= TIE:
            return None
        return f"result: hail {hail['result']} (score {theirs:.8f}), ours {ours['result']} (score {mine:.8f})"


def survey(examples: int, kinds: tuple[str, ...] = ("allocate",)) -> tuple[int, list[tuple[dict[str, Any], str]]]:
    """Run ``examples`` examples without stopping: (examples run, mismatches with their cases)."""
    from hypothesis import HealthCheck, given, settings

    seen: list[tuple[dict[str, Any], str]] = []
    count = [0]

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(requests(kinds), flags())
    def run(data: dict[str, Any], flags: tuple[str, ...]) -> None:
        count[0] += 1
        try:
            problem = compare(data, flags)
        except Exception as exc:  # a crash is a mismatch, counted and shown
            problem = f"crash: {type(exc).__name__}: {exc}"
        if problem:
            seen.append((data | {"flags": list(flags)}, problem))

    run()
    return count[0], seen


if __name__ == "__main__":
    import collections
    import os
    import sys
    import time

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    kinds = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("allocate",)
    t0 = time.perf_counter()
    ran, bad = survey(n, kinds)
    print(f"{ran} examples in {time.perf_counter() - t0:.1f} s, {len(bad)} mismatches")
    kinds_seen = collections.Counter(p.split(":")[0] for _, p in bad)
    print(dict(kinds_seen))
    out = os.environ.get("CLUSTERCORE_DIFF_OUT")
    if out:
        Path(out).write_text(json.dumps([{"case": c, "problem": p} for c, p in bad], indent=1))
    for _, p in bad[:15]:
        print(" -", p[:400])
