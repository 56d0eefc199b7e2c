"""clustercore-iallocator against Ganeti's hail, like for like, side by side in one run.

Two kinds of cluster, at 100, 1,000 and 5,000 nodes:

* *synthetic*: one group, nodes of 64 GiB and 2 TB, three instances per node on average
  (30 % DRBD), so the N+1 checks have something to fail over;
* *simulated*: hail's own ``--simulate=p,N,1T,64g,16`` (empty nodes, Ganeti's default
  instance policy). hail is run with that option; ours gets the same cluster written as an
  IAllocator request (read from hail's own ``-S`` state file, so the numbers are hail's).

Each request (an ``allocate`` of one plain instance; a ``multi-allocate`` of 100 at 100
nodes) runs both **with** the global N+1 capacity checks (hail's default) and **without**
(``--no-capacity-checks``): both sides always do the same work. Timed:

* as processes, as Ganeti runs an IAllocator: hail, and ``clustercore-iallocator``
  (``python -m clustercore.adapters.ganeti``), alternating, min / median / max of
  :data:`RUNS` (one run where a side took more than :data:`REPEAT_BELOW` s);
* the work itself: ours in process (:func:`answer` on the file's text, JSON parsing
  included), and hail's process time less its start-up (hail and ours as processes on a
  one-node request are the start-up row).

A side gets :data:`BUDGET` s per run; a stopped side is not run on the larger clusters of
the same kind and mode. The answers are compared whole (success, info text with its
failure counts, nodes chosen): ours is a port of hail, so they must be equal.
"""

from __future__ import annotations

import compileall
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import clustercore
from clustercore.adapters.ganeti import answer_text

TITLE = "Ganeti IAllocator: clustercore-iallocator vs hail, like for like"
HAIL = Path("/usr/lib/ganeti/3.0/usr/lib/ganeti/iallocators/hail")
BUDGET = 300.0  # s per run and side; a side is stopped after that and the row says so
RUNS = 3  # process timings per side and request: min / median / max
REPEAT_BELOW = 10.0  # s: a run longer than this is not repeated (the row says "1 run")
SIZES = (100, 1_000, 5_000)
SIMULATE = "p,{nodes},1T,64g,16"
OURS = [sys.executable, "-m", "clustercore.adapters.ganeti"]
NO_CHECKS = "--no-capacity-checks"
SPEC = {"memory-size": 2048, "cpu-count": 2, "disk-count": 1, "disk-size": 20480, "nic-count": 1,
        "spindle-use": 1}
IPOLICY = {"std": SPEC, "minmax": [{"min": {k: 1 for k in SPEC} | {"memory-size": 128, "disk-size": 128},
                                    "max": {"memory-size": 65536, "cpu-count": 16, "disk-count": 16,
                                            "disk-size": 1048576, "nic-count": 8, "spindle-use": 16}}],
           "vcpu-ratio": 4.0, "spindle-ratio": 32.0, "disk-templates": ["plain", "drbd"]}
ISPEC_ORDER = ("memory-size", "cpu-count", "disk-size", "disk-count", "nic-count", "spindle-use")  # htools text


def _node(group: str, t_mem: int, n_mem: int, f_mem: int, t_dsk: int, f_dsk: int, t_cpu: int, n_cpu: int,
          spindles: int, f_spindles: int) -> dict[str, Any]:
    return {"total_memory": t_mem, "reserved_memory": n_mem, "free_memory": f_mem, "total_disk": t_dsk,
            "free_disk": f_dsk, "total_cpus": t_cpu, "reserved_cpus": n_cpu, "total_spindles": spindles,
            "free_spindles": f_spindles, "group": group, "offline": False, "drained": False, "vm_capable": True,
            "master_capable": True, "master_candidate": False, "tags": [],
            "ndparams": {"spindle_count": spindles, "exclusive_storage": False},
            "primary_ip": "192.0.2.1", "secondary_ip": "198.51.100.1", "i_pri_memory": 0, "i_pri_up_memory": 0}


def _document(groups: dict[str, Any], ipolicy: dict[str, Any], nodes: dict[str, Any],
              instances: dict[str, Any]) -> dict[str, Any]:
    return {"version": 2, "cluster_name": "bench", "cluster_tags": [], "enabled_hypervisors": ["kvm"],
            "ipolicy": ipolicy, "nodegroups": groups, "nodes": nodes, "instances": instances}


def synthetic(nodes: int, seed: int) -> dict[str, Any]:
    """A group of ``nodes`` nodes holding about three instances each, 30 % of them DRBD."""
    rng = random.Random(seed)
    names = [f"node{i:05d}" for i in range(nodes)]
    free_mem = {n: 65536 - 1024 for n in names}
    free_dsk = {n: 2_000_000 for n in names}
    instances: dict[str, Any] = {}
    for i in range(nodes * 3):
        memory, disk = rng.choice([1024, 2048, 4096, 8192]), rng.choice([10240, 20480, 51200])
        primary = rng.choice(names)
        secondary = rng.choice([n for n in names[:64] if n != primary]) if nodes > 1 and rng.random() < 0.3 else None
        if free_mem[primary] < memory + 4096 or free_dsk[primary] < disk or \
                (secondary and free_dsk[secondary] < disk):
            continue
        free_mem[primary] -= memory
        free_dsk[primary] -= disk
        if secondary:
            free_dsk[secondary] -= disk
        instances[f"inst{i}"] = {
            "disks": [{"mode": "rw", "size": disk, "spindles": 1}], "disk_space_total": disk,
            "disk_template": "drbd" if secondary else "plain", "memory": memory, "vcpus": rng.randint(1, 4),
            "nodes": [primary, secondary] if secondary else [primary], "admin_state": "up", "tags": [],
            "nics": [], "spindle_use": 1, "hypervisor": "kvm", "os": "debian"}
    node_data = {n: _node("g1", 65536, 1024, free_mem[n], 2_000_000, free_dsk[n], 32, 1, 12, 12) for n in names}
    group = {"name": "default", "alloc_policy": "preferred", "ipolicy": IPOLICY, "networks": [], "tags": []}
    return _document({"g1": group}, IPOLICY, node_data, instances)


def _ispec(text: str) -> dict[str, int]:
    return dict(zip(ISPEC_ORDER, map(int, text.split(",")), strict=True))


def simulated(nodes: int, work: Path) -> dict[str, Any]:
    """hail's ``--simulate`` cluster of ``nodes`` nodes as an IAllocator request. hail writes
    a one-node simulated cluster in htools' text format (``-S``); its node, group and policy
    are read from there and the node repeated under hail's names (``node-01-001``...)."""
    request = work / "empty.json"
    request.write_text(json.dumps(_document({}, {}, {}, {}) | {"request": allocate()}))
    subprocess.run([str(HAIL), f"--simulate={SIMULATE.format(nodes=1)}", "-S", str(work / "simu"), str(request)],
                   capture_output=True, timeout=60, check=True)
    lines = (work / "simu.pre-ialloc").read_text().splitlines()
    name, uuid, policy = lines[0].split("|")[:3]  # the group
    _, std, minmax, templates, vcpu, spindle = lines[-1].split("|")  # the group's instance policy
    low, high = minmax.split(";")
    ipolicy = {"std": _ispec(std), "minmax": [{"min": _ispec(low), "max": _ispec(high)}],
               "disk-templates": templates.split(","), "vcpu-ratio": float(vcpu), "spindle-ratio": float(spindle)}
    f = lines[2].split("|")  # the node, after a blank line
    values = map(int, (f[1], f[2], f[3], f[4], f[5], f[6], f[13], f[9], f[12]))
    node = _node(uuid, *values)
    group = {"name": name, "alloc_policy": policy, "ipolicy": ipolicy, "networks": [], "tags": []}
    return _document({uuid: group}, ipolicy, {f"node-01-{i:03d}": node for i in range(1, nodes + 1)}, {})


def instance(name: str) -> dict[str, Any]:
    return {"name": name, "disks": [{"mode": "rw", "size": 20480, "spindles": 1}], "disk_space_total": 20480,
            "disk_template": "plain", "memory": 2048, "vcpus": 2, "nics": [], "tags": [], "spindle_use": 1,
            "hypervisor": "kvm", "os": "debian", "required_nodes": 1}


def allocate() -> dict[str, Any]:
    return {"type": "allocate", **instance("new0")}


def multi_allocate(count: int) -> dict[str, Any]:
    return {"type": "multi-allocate", "instances": [instance(f"new{i}") for i in range(count)]}


def _once(argv: list[str]) -> tuple[float, Any] | None:
    """Wall time and answer of one run of ``argv``; None past :data:`BUDGET`."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BUDGET, check=True)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - t0, json.loads(done.stdout)


def timed(sides: dict[str, list[str] | None], runs: int = RUNS) -> dict[str, tuple[list[float] | None, Any]]:
    """Each side's wall times over up to ``runs`` runs, the sides alternating so that both
    meet the same machine (a side stops repeating once a run took :data:`REPEAT_BELOW` s),
    and its answer; ``(None, None)`` for a side stopped at :data:`BUDGET`, ``([], None)``
    for a side not run (its argv None)."""
    out: dict[str, tuple[list[float] | None, Any]] = {side: ([], None) for side in sides}
    for _ in range(runs):
        for side, argv in sides.items():
            times, _ = out[side]
            if argv is None or times is None or (times and times[-1] > REPEAT_BELOW):
                continue
            got = _once(argv)
            out[side] = (None, None) if got is None else ([*times, got[0]], got[1])
    return out


def start_up(work: Path) -> dict[str, Any]:
    """Both sides as processes on a one-node cluster: what a process costs before any work."""
    path = work / "one.json"
    path.write_text(json.dumps(synthetic(1, 0) | {"request": allocate()}))
    got = timed({"hail": [str(HAIL), str(path)], "ours": [*OURS, str(path)]}, runs=5)
    return {side: times for side, (times, _) in got.items()}


def compare(kind: str, nodes: int, request: dict[str, Any], checks: bool, work: Path,
            skip: set[str]) -> dict[str, Any]:
    """One row: the same request and mode for both sides; ``skip`` names the sides already
    stopped on a smaller cluster (and gains those stopped here)."""
    data = simulated(nodes, work) if kind == "simulated" else synthetic(nodes, seed=nodes)
    path = work / "request.json"
    text = json.dumps(data | {"request": request})
    path.write_text(text)
    flags = [] if checks else [NO_CHECKS]
    hail_argv = [str(HAIL), *flags, *([f"--simulate={SIMULATE.format(nodes=nodes)}"] if kind == "simulated" else []),
                 str(path)]
    row: dict[str, Any] = {"kind": kind, "nodes": nodes, "request": request["type"], "checks": checks,
                           "hail": [], "ours": [], "inproc": None, "same": None}
    got = timed({"hail": None if "hail" in skip else hail_argv,
                 "ours": None if "ours" in skip else [*OURS, *flags, str(path)]})
    (row["hail"], hail_answer), (row["ours"], ours_answer) = got["hail"], got["ours"]
    if ours_answer is not None:
        t0 = time.perf_counter()
        inproc = answer_text(text, flags)
        row["inproc"] = time.perf_counter() - t0
        assert inproc == ours_answer
    skip.update(side for side in ("hail", "ours") if row[side] is None)
    if hail_answer is not None and ours_answer is not None:
        row["same"] = hail_answer == ours_answer
        row["info"] = hail_answer["info"]
    return row


def _spread(times: list[float] | None, ran: bool = True) -> str:
    if not ran:
        return "not run"
    if not times:
        return f"> {BUDGET:.0f} (stopped)"
    if len(times) == 1:
        return f"**{times[0]:.3f}** (1 run)"
    return f"{min(times):.3f} / **{statistics.median(times):.3f}** / {max(times):.3f}"


def _ratio(ours: float | None, hail: float | None) -> str:
    return f"{ours / hail:.2f}" if ours is not None and hail else "-"


def table(rows: list[dict[str, Any]], boot: dict[str, Any]) -> str:
    hail_boot = statistics.median(boot["hail"])
    lines = [f"Start-up, both as processes on a one-node request (min / median / max of {len(boot['hail'])}): "
             f"hail {_spread(boot['hail'])} s, ours {_spread(boot['ours'])} s.", "",
             "| cluster | nodes | request | N+1 capacity checks | hail as a process, s | ours as a process, s "
             "| ours / hail (processes) | hail's work (process less start-up), s | ours in process, s "
             "| ours / hail (work) | same answer |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        hail = statistics.median(r["hail"]) if r["hail"] else None
        ours = statistics.median(r["ours"]) if r["ours"] else None
        work = max(hail - hail_boot, 1e-3) if hail is not None else None
        same = {True: "yes", False: "**no**", None: "-"}[r["same"]]
        inproc = "-" if r["inproc"] is None else f"{r['inproc']:.3f}"
        hail_work = "-" if work is None else f"{work:.3f}"
        lines.append(
            f"| {r['kind']} | {r['nodes']:,} | {r['request']} | {'on' if r['checks'] else 'off'} "
            f"| {_spread(r['hail'], r['hail'] != [])} | {_spread(r['ours'], r['ours'] != [])} | {_ratio(ours, hail)} "
            f"| {hail_work} | {inproc} "
            f"| {_ratio(r['inproc'], work)} | {same} |")
    both = [r for r in rows if r["hail"] and r["ours"]]
    process = sorted(statistics.median(r["ours"]) / statistics.median(r["hail"]) for r in both)
    work = sorted(r["inproc"] / max(statistics.median(r["hail"]) - hail_boot, 1e-3) for r in both)
    if both:
        lines += ["", f"Where both sides finished ({len(both)} rows), ours / hail: as processes "
                  f"{process[0]:.2f} / **{statistics.median(process):.2f}** / {process[-1]:.2f} (min / median / max); "
                  f"the work alone {work[0]:.2f} / **{statistics.median(work):.2f}** / {work[-1]:.2f}. "
                  f"Same answer on {sum(bool(r['same']) for r in both)}/{len(both)}. Below 1 ours is faster."]
    lines += ["", "Ours runs from compiled bytecode, as an installed package does (the bench compiles it first: "
              "an editable install under PYTHONDONTWRITEBYTECODE compiled every module in every process, 0.03 to "
              "0.04 s of each run before this was fixed).", "",
              "Both sides always do the same work: the same file, the same mode (hail's default global N+1 "
              "capacity checks on, or both with `--no-capacity-checks`); \"not run\": that side was already stopped "
              "on a smaller cluster of the same kind and mode. hail's work is an estimate (its process time less its "
              "median start-up); ours in process is measured (`answer_text` on the file's text). Command: "
              "`python -m bench ganeti`."]
    return "\n".join(lines)


def compiled() -> None:
    """Our package's bytecode written, as an installed package has it (pip compiles on
    install; an editable install run with PYTHONDONTWRITEBYTECODE would compile every module
    in every process, which a deployed clustercore-iallocator never does)."""
    compileall.compile_dir(str(Path(clustercore.__file__).parent), quiet=1)


def run() -> str:
    if not HAIL.exists():
        return "hail is not installed (`apt-get install ganeti-htools-3.0`); nothing measured."
    compiled()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        boot = start_up(work)
        for kind in ("synthetic", "simulated"):
            rows.append(compare(kind, 100, multi_allocate(100), False, work, set()))
            for checks in (False, True):
                skip: set[str] = set()
                for nodes in SIZES:
                    rows.append(compare(kind, nodes, allocate(), checks, work, skip))
                    print(rows[-1], file=sys.stderr)
    return table(rows, boot)
