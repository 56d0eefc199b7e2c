"""Draining a real libvirt host, and our overhead over a bare ``virsh migrate``.

A lab of three libvirtd hosts (flavors.virt.lab) on this machine, guests of 64 MiB (KVM, or
TCG without /dev/kvm). Measured in wall-clock time:

* the drain of a host running 4 guests, from ``start_maintenance`` to the host in
  Maintenance, with 1 and with 2 migrations in parallel (the controller stepping every
  50 ms, moves on a thread pool), three runs each;
* one guest migrated back and forth between two hosts, alternately by ``virsh migrate
  --live --persistent --undefinesource`` and by the virt driver (our migration engine:
  job monitoring, policy decisions, the check that the VM runs on the target alone),
  ten runs each; the overhead is the difference of the medians over virsh's median.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from clustercore import Cluster, ClusterConfig, FakeClock, Host, HostReport, HostState, Plugins
from flavors.virt import VirtFlavor
from flavors.virt.driver import LibvirtDriver
from flavors.virt.lab import Lab, domain_type
from flavors.virt.spec import Graphics, Memory, VMSpec
from flavors.virt.workload import vm_workload

TITLE = "Maintenance drain and migration overhead on real libvirt hosts"
TARGET_OVERHEAD = 10.0  # percent


def guest(name: str) -> VMSpec:
    return VMSpec(name=name, uuid=str(uuid.uuid4()), memory=Memory(64), domain_type=domain_type(),
                  graphics=(Graphics(),))


def drain_seconds(lab: Lab, parallel: int) -> float:
    clock = FakeClock()
    pool = ThreadPoolExecutor(4)
    driver = LibvirtDriver(shutdown_timeout=0.5)
    cluster = Cluster(plugins=Plugins([VirtFlavor(driver)], entry_points=False), clock=clock,
                      config=ClusterConfig(drain_parallel=parallel), executor=pool)

    def tick() -> None:
        for name in cluster.hosts():
            cluster.heartbeat(name, HostReport())
        clock.advance(1)
        cluster.step()

    def join(host_names: list[str]) -> None:
        for h in lab.hosts:
            if h.name in host_names:
                cluster.register_host({"name": h.name, "address": h.uri, "capacity": {"cpu": 8, "memory": 4096},
                                       "labels": {"virt/migration-uri": "tcp://127.0.0.1"}})
        while any(cluster.host(n).state is not HostState.UP for n in host_names):
            tick()

    try:
        join(["lab1"])
        for i in range(4):
            cluster.submit(vm_workload(guest(f"d{parallel}-{i}")))
        join(["lab2", "lab3"])
        started = time.perf_counter()
        cluster.start_maintenance("lab1")
        while cluster.host("lab1").state is not HostState.MAINTENANCE:
            tick()
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        cluster.controller.drainer.wait(60)
        for name in list(cluster.placements()):
            cluster.stop(name, force=True)
        pool.shutdown()
        driver.close()


def overhead(lab: Lab, runs: int = 10) -> tuple[list[float], list[float]]:
    a, b = (Host(h.name, address=h.uri, labels={"virt/migration-uri": "tcp://127.0.0.1"}, state=HostState.UP)
            for h in lab.hosts[:2])
    driver = LibvirtDriver(shutdown_timeout=0.5)
    workload = vm_workload(guest("pingpong"))
    driver.start(workload, a)
    ours, virsh = [], []
    where, there = a, b
    try:
        for i in range(2 * runs):
            started = time.perf_counter()
            if i % 2 == 0:
                subprocess.run(["virsh", "-c", where.address, "migrate", "--live", "--persistent", "--undefinesource",
                                "pingpong", there.address, "tcp://127.0.0.1"], check=True, capture_output=True)
                virsh.append(time.perf_counter() - started)
            else:
                driver.migrate(workload, where, there)
                ours.append(time.perf_counter() - started)
            where, there = there, where
    finally:
        driver.stop(workload, where, force=True)
        driver.close()
    return virsh, ours


def run() -> str:
    with Lab(3, base_port=16800) as lab:
        drains = {p: [drain_seconds(lab, p) for _ in range(3)] for p in (1, 2)}
        virsh, ours = overhead(lab)
    lines = ["| drain of 4 guests (64 MiB) | run 1 (s) | run 2 (s) | run 3 (s) | median (s) |",
             "|---|---:|---:|---:|---:|"]
    for p, times in drains.items():
        lines.append(f"| {p} migration{'s' if p > 1 else ''} in parallel | "
                     + " | ".join(f"{t:.2f}" for t in times) + f" | {statistics.median(times):.2f} |")
    speedup = statistics.median(drains[1]) / statistics.median(drains[2])
    v, o = statistics.median(virsh), statistics.median(ours)
    pct = 100 * (o - v) / v
    lines += ["", f"2 in parallel drain {speedup:.2f}x as fast as 1.", "",
              "| one guest, 10 migrations each | median (s) | min (s) | max (s) |", "|---|---:|---:|---:|",
              f"| `virsh migrate --live --persistent --undefinesource` | {v:.3f} | {min(virsh):.3f} | "
              f"{max(virsh):.3f} |",
              f"| clustercore virt driver (monitored, policy, confirmed) | {o:.3f} | {min(ours):.3f} | "
              f"{max(ours):.3f} |",
              "", f"Overhead over virsh: {pct:+.1f}% (target under {TARGET_OVERHEAD:.0f}%: "
              f"**{'met' if pct < TARGET_OVERHEAD else 'not met'}**). Guests run as {domain_type()}."]
    return "\n".join(lines)
