"""The controller's reconcile pass over 10,000 simulated hosts heartbeating on a fake clock.

Hosts join through the real path (register, bootstrap, discovery), then beat every 10 s,
staggered: each simulated second a tenth of them write their heartbeat key, and the
controller runs one pass. Measured: the pass alone (heartbeat writes are the hosts' work,
timed separately). Scenarios: steady state; a pass in which 1% of the hosts fall silent and
go Connecting (transitions committed with their events).
"""

from __future__ import annotations

import gc
import statistics
import time

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins
from clustercore.testing import FakeFlavor

TITLE = "Controller: one reconcile pass over 10,000 heartbeating hosts"
TARGET_MS = 50.0


def _cluster(hosts: int) -> tuple[Cluster, FakeClock, list[str]]:
    clock = FakeClock()
    cluster = Cluster(plugins=Plugins([FakeFlavor("sim")], entry_points=False), clock=clock,
                      config=ClusterConfig(required_networks=frozenset({"mgmt"}), events_retained=50_000))
    names = [f"h{i:05d}" for i in range(hosts)]
    report = HostReport(networks=frozenset({"mgmt"}))
    for name in names:
        cluster.register_host({"name": name, "capacity": {"cpu": 32, "memory": 262144},
                               "location": {"rack": f"r{int(name[1:]) // 40}"}})
        cluster.heartbeat(name, report)
    cluster.step()
    cluster.step()
    up = sum(h.state is HostState.UP for h in cluster.hosts().values())
    assert up == hosts, f"only {up}/{hosts} hosts came up"
    return cluster, clock, names


def _pass(cluster: Cluster, clock: FakeClock, beating: list[str], report: HostReport) -> tuple[float, float]:
    t0 = time.perf_counter()
    for name in beating:
        cluster.heartbeat(name, report)
    t1 = time.perf_counter()
    clock.advance(1.0)
    cluster.controller.step()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def _steady(cluster: Cluster, clock: FakeClock, names: list[str], passes: int) -> tuple[list[float], list[float]]:
    report = HostReport(networks=frozenset({"mgmt"}))
    steps, writes = [], []
    for i in range(passes):
        w, s = _pass(cluster, clock, names[i % 10::10], report)
        writes.append(w)
        steps.append(s)
    return sorted(steps), writes


def _stats(prefix: str, steps: list[float]) -> dict[str, float]:
    return {
        f"{prefix}mean_ms": statistics.fmean(steps) * 1000,
        f"{prefix}p50_ms": steps[len(steps) // 2] * 1000,
        f"{prefix}p95_ms": steps[int(len(steps) * 0.95)] * 1000,
        f"{prefix}max_ms": steps[-1] * 1000,
    }


def measure(hosts: int = 10_000, passes: int = 100) -> dict[str, float]:
    """Steady passes with Python's default GC, then the same after ``gc.freeze()`` (what a
    long-running manager does once started: the start-up objects leave the collector's
    view), then the pass in which 1% of the hosts go Connecting."""
    gc.collect()
    gc.unfreeze()
    t0 = time.perf_counter()
    cluster, clock, names = _cluster(hosts)
    join_s = time.perf_counter() - t0
    steps, writes = _steady(cluster, clock, names, passes)
    result = {"hosts": hosts, "join_s": join_s, **_stats("", steps),
              "steps_per_s": 1 / statistics.fmean(steps), "writes_per_s": (hosts / 10 * passes) / sum(writes)}
    gc.collect()
    gc.freeze()
    try:
        frozen, _ = _steady(cluster, clock, names, passes)
        result.update(_stats("frozen_", frozen))
        # 1% fall silent: they stop beating; after 31 s they go Connecting in one pass.
        report = HostReport(networks=frozenset({"mgmt"}))
        silent = set(names[::100])
        live = [n for n in names if n not in silent]
        for i in range(35):
            _, s = _pass(cluster, clock, live[i % 10::10], report)
            states = cluster.hosts()
            if all(states[n].state is HostState.CONNECTING for n in silent):
                result["transition_ms"] = s * 1000
                result["transitions"] = len(silent)
                break
        else:
            raise AssertionError("silent hosts never went Connecting")
    finally:
        gc.unfreeze()
    return result


def run() -> str:
    rows = [measure(1_000), measure(10_000)]
    lines = [
        "| hosts | GC | pass mean (ms) | p50 (ms) | p95 (ms) | max (ms) | passes/s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['hosts']:,} | default | {r['mean_ms']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                     f"| {r['max_ms']:.1f} | {r['steps_per_s']:.0f} |")
        lines.append(f"| {r['hosts']:,} | frozen after start-up | {r['frozen_mean_ms']:.1f} | "
                     f"{r['frozen_p50_ms']:.1f} | {r['frozen_p95_ms']:.1f} | {r['frozen_max_ms']:.1f} "
                     f"| {1000 / r['frozen_mean_ms']:.0f} |")
    lines += ["", "| hosts | pass in which 1% go Connecting (ms) | heartbeat writes/s (memory store) "
              "| join of all hosts, register to Up (s) |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['hosts']:,} | {r['transition_ms']:.1f} ({r['transitions']:.0f} transitions with events) "
                     f"| {r['writes_per_s']:,.0f} | {r['join_s']:.1f} |")
    big = rows[-1]
    verdict = "met" if big["p95_ms"] < TARGET_MS else "NOT met"
    lines += [
        "",
        f"Target: one pass over 10,000 hosts in under {TARGET_MS:.0f} ms on one core: **{verdict}** with the "
        f"default GC (mean {big['mean_ms']:.1f} ms, p95 {big['p95_ms']:.1f} ms). The max of the default-GC row "
        "is a full (generation 2) collection of the process's millions of long-lived objects landing in a pass; "
        "`gc.freeze()` once start-up is done removes it (frozen row).",
        "",
        "How: the controller keeps an informer (one listing, then a watch) on `hosts/` and `heartbeats/`, so a "
        "pass touches only what changed; an Up host heard from recently and missing nothing costs one dict "
        "lookup and a subtraction.",
    ]
    return "\n".join(lines)
