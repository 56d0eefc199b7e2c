"""Containers on real podman hosts (issue 17): a drain by CRIU checkpoint/restore beside the
same drain by stop and start elsewhere, and a power cut until the HA containers run again.

A podman lab of three hosts with an IPMI BMC each (flavors.containers.lab). Each run is a
new cluster over the same lab (flavors.containers.labcluster: the containers flavor, the
real PodmanDriver, a heartbeat for each host whose podman answers, then a pass; the
system's clock). A watcher (clustercore.watcher) lists the running containers of every
powered host continuously (one list call per host) and keeps, per container, the longest
time it ran nowhere: its downtime, to within the sampling interval (reported). A
container is a busybox shell counting in memory (32 MiB, half a CPU).

1. **Drain**: ``N`` containers on pod1, the other two hosts Up; pod1 put into maintenance
   until it is in Maintenance. Runs alternate ``move: checkpoint`` (frozen, dumped, restored
   on the target, the count going on) and ``move: restart`` (stopped, started anew there,
   the count from 0); the same containers, hosts and config (``drain_parallel`` 2).
2. **Power cut**: 5 HA containers on pod2, aggressive timings (heartbeat 1 s x 2,
   NonResponsive after 2 s); pod2's power cut; fenced through ``fence_ipmilan`` to its lab
   BMC; measured until every container runs on pod1 or pod3 (podman's view), split into
   detection, fencing and restart; never two copies (the watcher).
"""

from __future__ import annotations

import statistics
import time

from clustercore import ClusterConfig, HostState
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from clustercore.watcher import Watcher
from flavors.containers.lab import PodmanLab
from flavors.containers.labcluster import PodLabCluster, counter

TITLE = "Containers on podman: a drain by checkpoint vs by restart, a power cut to HA containers elsewhere"
N, HA, RUNS = 10, 5, 3
CONFIG = ClusterConfig(
    liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2, grace_per_workload=0),
    fencing=FencePolicy(retries=1, retry_delay=1, confirm_timeout=10), drain_parallel=2)
S = HostState


def drain(lab: PodmanLab, move: str, run: int) -> dict[str, float]:
    names = [f"{move[0]}{run}-{i}" for i in range(N)]
    lc = PodLabCluster(lab, CONFIG)
    try:
        lc.up()
        lc.only_on("pod1", [counter(name, move=move) for name in names])
        time.sleep(1)
        watcher = Watcher(lc.running, names)
        start = time.monotonic()
        lc.cluster.start_maintenance("pod1")
        done = lc.until(lambda: lc.cluster.host("pod1").state is S.MAINTENANCE)
        watcher.stop()
        where = lc.running()
        assert sorted(where) == sorted(names) and all(h != ["pod1"] for h in where.values()), where
        assert not watcher.twice, watcher.twice[:2]
        downs = sorted(watcher.down.values())
        return {"total": done - start, "down_median": statistics.median(downs), "down_max": downs[-1],
                "interval": watcher.interval}
    finally:
        lc.close()


def power_cut(lab: PodmanLab, run: int) -> dict[str, float]:
    names = [f"ha{run}-{i}" for i in range(HA)]
    lc = PodLabCluster(lab, CONFIG)
    c = lc.cluster
    try:
        lc.up()
        lc.only_on("pod2", [counter(name, ha=True) for name in names])
        watcher = Watcher(lc.running, names)
        settled = time.monotonic() + 3
        lc.until(lambda: time.monotonic() >= settled)
        start = time.monotonic()
        lab.power_cut(1)
        unreachable = lc.until(lambda: c.host("pod2").state in (S.NON_RESPONSIVE, S.FENCING, S.DOWN))
        down = lc.until(lambda: c.host("pod2").state is S.DOWN)
        done = lc.until(lambda: sorted(lc.running()) == names)
        watcher.stop()
        assert not watcher.twice, watcher.twice[:2]
        assert all(h in (["pod1"], ["pod3"]) for h in lc.running().values())
        return {"detect": unreachable - start, "fence": down - unreachable, "restart": done - down,
                "total": done - start, "interval": watcher.interval}
    finally:
        lc.close()


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / **{statistics.median(values):.2f}** / {max(values):.2f}"


def run() -> str:
    with PodmanLab(3, base_port=17080, bmc=True) as lab:
        if lab.criu.path is None:
            return f"Not run: no working CRIU ({lab.criu.reason})."
        drains: dict[str, list[dict[str, float]]] = {"checkpoint": [], "restart": []}
        for i in range(RUNS):
            for move in drains:
                drains[move].append(drain(lab, move, i))
        cuts = [power_cut(lab, i) for i in range(RUNS)]
    lines = [f"Drain of a host running {N} containers, {RUNS} runs each, alternating (min / **median** / max):",
             "", "| move | drain until Maintenance, s | downtime per container, median of the run, s "
             "| worst container's downtime, s |", "|---|---:|---:|---:|"]
    for move, runs in drains.items():
        lines.append(f"| {move} | {spread([r['total'] for r in runs])} | {spread([r['down_median'] for r in runs])} "
                     f"| {spread([r['down_max'] for r in runs])} |")
    ratio = statistics.median(r["total"] for r in drains["checkpoint"]) / statistics.median(
        r["total"] for r in drains["restart"])
    interval = max(r["interval"] for runs in drains.values() for r in runs)
    lines += ["", f"Checkpoint / restart, drain time (medians): **{ratio:.2f}**. Downtime is what the watcher saw "
              f"(a sample of every host at most every {interval * 1000:.0f} ms). A checkpointed container keeps "
              "its memory (its count goes on); a restarted one starts from 0.", "",
              f"Power cut of a host running {HA} HA containers (aggressive timings), {RUNS} runs, until they run "
              "elsewhere (podman's view), fenced through `fence_ipmilan` to the lab BMC (min / **median** / max):",
              "", "| detected unreachable, s | fenced, s | restarted, s | total, s |", "|---:|---:|---:|---:|",
              "| " + " | ".join(spread([r[k] for r in cuts]) for k in ("detect", "fence", "restart", "total")) + " |",
              "", "No container ran on two hosts at once in any run (clustercore.watcher: never on two hosts in two "
              "consecutive looks that asked the hosts in opposite orders)."]
    return "\n".join(lines)
