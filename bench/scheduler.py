"""Placements per second, one at a time with reservation, default policy.

A cluster of N Up hosts (64 CPUs, 256 GiB, 4 racks per 100 hosts, a third labelled
``disk=ssd``), half full of small workloads already; then 2,000 new workloads (1-4 CPUs,
1-8 GiB, some with a host selector, some with soft anti-affinity) placed one after the
other, each decision seeing the previous reservations. Timed: the decisions and
reservations only (snapshot built beforehand, as the scheduler holds it between decisions).
kube-scheduler's own SLO threshold for 5,000 nodes is 680 pods/s.
"""

from __future__ import annotations

import random
import time

from clustercore.model import AffinityRule, Host, HostState, Placement, PlacementState, Resources, Workload
from clustercore.scheduling import Scheduler, Snapshot

TITLE = "Scheduler: placements per second, one at a time with reservation"
TARGET = 2000.0


def cluster(hosts: int, rng: random.Random) -> Snapshot:
    nodes = [Host(f"n{i:05d}", capacity=Resources(64, 262144), state=HostState.UP,
                  labels={"disk": "ssd"} if i % 3 == 0 else {}, location={"rack": f"r{i // 25}"})
             for i in range(hosts)]
    workloads, placements = {}, []
    for i in range(hosts * 4):
        w = Workload(f"old{i}", "fake", requests=Resources(rng.randint(1, 8), rng.choice([2048, 4096, 16384])),
                     labels={"app": rng.choice(["web", "db", "cache"])})
        workloads[w.name] = w
        placements.append(Placement(w.name, nodes[i % hosts].name, PlacementState.RUNNING))
    return Snapshot.build(nodes, workloads, placements)


def requests(count: int, rng: random.Random) -> list[Workload]:
    out = []
    for i in range(count):
        app = rng.choice(["web", "db", "cache"])
        out.append(Workload(
            f"new{i}", "fake", requests=Resources(rng.randint(1, 4), rng.choice([1024, 2048, 4096, 8192])),
            labels={"app": app}, host_selector={"disk": "ssd"} if i % 10 == 0 else {},
            affinity=(AffinityRule({"app": app}, anti=True, hard=False),) if i % 5 == 0 else ()))
    return out


def measure(hosts: int, count: int = 2000) -> dict[str, float]:
    rng = random.Random(hosts)
    snap = cluster(hosts, rng)
    batch = requests(count, rng)
    scheduler = Scheduler(snap, seed=1)
    t0 = time.perf_counter()
    for workload in batch:
        scheduler.schedule(workload)
    elapsed = time.perf_counter() - t0
    return {"hosts": hosts, "count": count, "per_s": count / elapsed, "ms": elapsed / count * 1000}


def run() -> str:
    rows = [measure(n) for n in (1_000, 5_000, 10_000)]
    lines = ["| hosts | placements | placements/s | ms per placement | vs kube-scheduler's 680/s at 5,000 nodes |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['hosts']:,} | {r['count']:,} | {r['per_s']:,.0f} | {r['ms']:.2f} | "
                     f"{r['per_s'] / 680:.1f}x |")
    at5k = next(r for r in rows if r["hosts"] == 5_000)
    verdict = "met" if at5k["per_s"] >= TARGET else "NOT met"
    lines += ["", f"Target: at least {TARGET:,.0f} placements/s at 5,000 hosts on one core: **{verdict}** "
              f"({at5k['per_s']:,.0f}/s)."]
    return "\n".join(lines)
