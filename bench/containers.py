"""Containers on real podman hosts (issue 17): a drain by CRIU checkpoint/restore beside the
same drain by stop and start elsewhere, and a power cut until the HA containers run again.

A podman lab of three hosts with an IPMI BMC each (flavors.containers.lab). Each run is a
new cluster (ContainersFlavor, the real PodmanDriver) over the same lab; the manager polls
every host's podman each tick (a heartbeat when it answers) and reconciles; the clock is
the system's. A watcher thread lists the running containers of every powered host
continuously (each sample: one list call per host) and keeps, per container, the
longest time it ran nowhere: its downtime, to within the watcher's sampling interval
(reported). A container is a busybox shell counting in memory, 32 MiB.

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

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator

from podman import PodmanClient

from clustercore import Cluster, ClusterConfig, HostReport, HostState, Plugins
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from flavors.containers import ContainersFlavor, ContainerSpec, PodmanDriver, container_workload
from flavors.containers.lab import IMAGE, PodmanLab

TITLE = "Containers on podman: a drain by checkpoint vs by restart, a power cut to HA containers elsewhere"
N, HA, RUNS = 10, 5, 3
COUNTER = ("sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done")
CONFIG = ClusterConfig(
    liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2, grace_per_workload=0),
    fencing=FencePolicy(retries=1, retry_delay=1, confirm_timeout=10), drain_parallel=2)
S = HostState


class Watcher:
    """Samples which containers run on which powered host until stopped."""

    def __init__(self, lab: PodmanLab, names: list[str]) -> None:
        self.lab, self.names = lab, names
        self.last_seen: dict[str, float] = {}
        self.down: dict[str, float] = dict.fromkeys(names, 0.0)  # longest time running nowhere
        self.twice: list[dict[str, list[str]]] = []
        self.samples, self.elapsed = 0, 0.0
        self._stop = threading.Event()
        self._clients = {h.name: PodmanClient(base_url=h.uri, timeout=2) for h in lab.hosts}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def where(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for host in self.lab.hosts:
            if not host.running:
                continue
            with contextlib.suppress(Exception):  # a host cut mid-call
                for container in self._clients[host.name].containers.list():
                    out.setdefault(container.name, []).append(host.name)
        return out

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            seen, now = self.where(), time.monotonic()
            self.samples += 1
            for name in self.names:
                if seen.get(name):
                    self.down[name] = max(self.down[name], now - self.last_seen.get(name, now))
                    self.last_seen[name] = now
            if any(len(hosts) > 1 for hosts in seen.values()):
                self.twice.append(seen)
            self.elapsed = now - started
            time.sleep(0.01)

    def stop(self) -> float:
        """Stop; the mean sampling interval (s)."""
        self._stop.set()
        self._thread.join(10)
        return self.elapsed / max(1, self.samples)


@contextlib.contextmanager
def cluster(lab: PodmanLab) -> Iterator[tuple[Cluster, Callable[[Callable[[], bool]], float]]]:
    """A new cluster of the lab's powered hosts; ``until(done)``: ticks until done, returns when."""
    assert lab.bmcs is not None
    for i, host in enumerate(lab.hosts):
        if not host.running:
            lab.power_on(i)
    clear(lab)  # what a powered-off host still held
    driver = PodmanDriver(call_timeout=5, cgroup_parent=lab.cgroup_parent)
    c = Cluster(plugins=Plugins([ContainersFlavor(driver)], entry_points=False), config=CONFIG)
    c.controller.started -= CONFIG.fencing.startup_grace  # the manager has run for a while
    for host in lab.hosts:
        c.register_host({"name": host.name, "address": host.uri, "labels": host.labels,
                         "capacity": {"cpu": 16, "memory": 8192}, "fence_devices": [lab.bmcs.device(host)]})

    def until(done: Callable[[], bool], limit: float = 300) -> float:
        start = time.monotonic()
        while not done():
            if time.monotonic() - start > limit:
                raise RuntimeError(f"not reached in {limit} s: {c.query_events()[-5:]}")
            for host in lab.hosts:
                if host.answers(0.5):
                    c.heartbeat(host.name, HostReport())
            c.step()
            time.sleep(0.1)
        return time.monotonic()

    try:
        until(lambda: all(h.state is S.UP for h in c.hosts().values()))
        yield c, until
    finally:
        clear(lab)


def clear(lab: PodmanLab) -> None:
    """Remove every container of every powered host at once."""
    for host in lab.hosts:
        if host.running:
            with PodmanClient(base_url=host.uri, timeout=30) as client:
                for found in client.containers.list(all=True):
                    client.api.delete(f"/containers/{found.name}", params={"force": True, "timeout": 0})


def only_on(c: Cluster, until: Callable[[Callable[[], bool]], float], host: str, specs: list[ContainerSpec],
            ha: bool = False) -> None:
    """Start ``specs`` on ``host``: the other hosts in maintenance meanwhile."""
    others = [n for n in c.hosts() if n != host]
    for name in others:
        c.start_maintenance(name)
    until(lambda: all(c.host(n).state is S.MAINTENANCE for n in others))
    for spec in specs:
        c.submit(container_workload(spec, ha=ha))
    for name in others:
        c.activate_host(name)
    until(lambda: all(h.state is S.UP for h in c.hosts().values()))


def drain(lab: PodmanLab, move: str, run: int) -> dict[str, float]:
    specs = [ContainerSpec(name=f"{move[0]}{run}-{i}", image=IMAGE, memory=32, command=COUNTER, stop_timeout=0,
                           move=move) for i in range(N)]
    with cluster(lab) as (c, until):
        only_on(c, until, "pod1", specs)
        time.sleep(1)
        watcher = Watcher(lab, [s.name for s in specs])
        start = time.monotonic()
        c.start_maintenance("pod1")
        done = until(lambda: c.host("pod1").state is S.MAINTENANCE)
        interval = watcher.stop()
        where = watcher.where()
        assert sorted(where) == sorted(s.name for s in specs) and all(h != ["pod1"] for h in where.values()), where
        assert not watcher.twice, watcher.twice[:2]
        downs = sorted(watcher.down.values())
        return {"total": done - start, "down_median": statistics.median(downs), "down_max": downs[-1],
                "interval": interval}


def power_cut(lab: PodmanLab, run: int) -> dict[str, float]:
    specs = [ContainerSpec(name=f"ha{run}-{i}", image=IMAGE, memory=32, command=COUNTER, stop_timeout=0)
             for i in range(HA)]
    names = sorted(s.name for s in specs)
    with cluster(lab) as (c, until):
        only_on(c, until, "pod2", specs, ha=True)
        watcher = Watcher(lab, names)
        settled = time.monotonic() + 3
        until(lambda: time.monotonic() >= settled)
        start = time.monotonic()
        lab.power_cut(1)
        unreachable = until(lambda: c.host("pod2").state in (S.NON_RESPONSIVE, S.FENCING, S.DOWN))
        down = until(lambda: c.host("pod2").state is S.DOWN)
        done = until(lambda: sorted(watcher.where()) == names)
        interval = watcher.stop()
        assert not watcher.twice, watcher.twice[:2]
        assert all(h in (["pod1"], ["pod3"]) for h in watcher.where().values())
        return {"detect": unreachable - start, "fence": down - unreachable, "restart": done - down,
                "total": done - start, "interval": interval}


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
              "", "No container was ever seen running on two hosts at once in any run."]
    return "\n".join(lines)
