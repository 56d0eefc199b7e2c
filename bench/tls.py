"""The cost of encrypting live migration (issue 18, item 3): the same idle real guest
migrated lab1 -> lab2 over plain ``qemu+tcp://`` connections without TLS and over
``qemu+tls://`` connections with ``VIR_MIGRATE_TLS`` (the policy's default between TLS
hosts), alternating in one run.

A TLS lab of two hosts (flavors.virt.lab ``transport="tls"``, base port 17320: each
libvirtd listens on its TLS port and on its plain TCP port) and a cluster on it
(flavors.virt.labcluster) that makes the guest: the project's real guest, 256 MiB, one
vCPU, idle but for its counter, disk on the shared domain. The guest is moved by the
cluster's own migration engine (:class:`~flavors.virt.migration.Migrator`, the policy's
defaults but for the cap), given the source and destination connections of one kind: the
engine picks TLS from the hosts' URIs. Each timed migration lab1 -> lab2 is followed by a
check (two more counter ticks, the counter whole) and an untimed one back over the same
kind. Two caps: the policy's 64 MiB/s, and none (what the CPU can encrypt; the guest is
TCG, so the engine moves it paused either way, see migration_policy). Wall-clock seconds,
min/median/max, and the ratio of the medians (TLS / plain).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import libvirt

from clustercore import ClusterConfig
from flavors.virt.guest import build_guest
from flavors.virt.lab import Lab, linux_domain_type
from flavors.virt.labcluster import LabCluster
from flavors.virt.migration import MigrationPolicy, Migrator

TITLE = "Migration over TLS: the cost of encryption"
BASE_PORT = 17320
MEMORY = 256  # MiB
RUNS = 3
CAPS: tuple[int | None, ...] = (64, None)  # MiB/s; None: uncapped


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f}" if values else "- | - | -"


Found = dict[tuple[int | None, bool, str], list[float]]  # (cap, tls, "s" or "MiB") -> one value per run


def measure(runs: int = RUNS) -> Found:
    image = build_guest(Path(tempfile.gettempdir()) / "clustercore-guest-cache")
    out: Found = {(cap, tls, what): [] for cap in CAPS for tls in (False, True) for what in ("s", "MiB")}
    with Lab(2, base_port=BASE_PORT, transport="tls") as lab:
        lc = LabCluster(lab, ClusterConfig())
        conns = {(h.name, tls): libvirt.open(h.uri if tls else h.tcp_uri) for h in lab.hosts for tls in (False, True)}
        try:
            lc.up()
            lc.storage(image)
            lc.guest("moved", host="lab1", ha=False, memory=MEMORY)
            lc.wait_booted("moved")

            def move(source: str, target: str, cap: int | None, tls: bool) -> float:
                dom = conns[source, tls].lookupByName("moved")
                addresses = tuple(lab.host(h).uri if tls else lab.host(h).tcp_uri for h in (source, target))
                started = time.perf_counter()
                Migrator(MigrationPolicy(bandwidth=cap)).migrate(
                    dom, conns[target, tls], vm="moved", source=source, target=target, memory_mib=MEMORY,
                    passthrough=False, shared_disks=True, addresses=(addresses[0], addresses[1]))
                return time.perf_counter() - started

            for cap in CAPS:
                for _ in range(runs):
                    for tls in (False, True):
                        out[cap, tls, "s"].append(move("lab1", "lab2", cap, tls))
                        stats = conns["lab2", tls].lookupByName("moved").jobStats(
                            libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
                        out[cap, tls, "MiB"].append(stats.get("memory_processed", 0) / 2**20)
                        lc.wait_ticks("moved", 2, limit=60)
                        lc.counter_intact("moved")
                        move("lab2", "lab1", cap, tls)
            lc.check_guest("moved")
            return out
        finally:
            for conn in conns.values():
                conn.close()
            lc.close()


def run(runs: int = RUNS) -> str:
    began = time.monotonic()
    found = measure(runs)
    minutes = (time.monotonic() - began) / 60
    lines = [f"Lab of 2 libvirtd hosts on this 2-core machine (`python -m bench tls`, {minutes:.1f} min); the "
             f"project's real guest under {linux_domain_type()}, {MEMORY} MiB, idle, moved lab1 -> lab2 by the "
             f"cluster's migration engine, not live (TCG); plain and TLS alternate, {runs} runs each, seconds. "
             "After each: two more counter ticks and the counter file on its disk whole.", "",
             "| migration lab1 -> lab2 | min | median | max | memory sent, MiB (median) |",
             "|---|---:|---:|---:|---:|"]
    ratios = []
    for cap in CAPS:
        label = f"at the {cap} MiB/s cap" if cap else "uncapped"
        for tls, how in ((False, "`qemu+tcp://`, unencrypted"), (True, "`qemu+tls://`, `VIR_MIGRATE_TLS`")):
            lines.append(f"| {label}: {how} | {spread(found[cap, tls, 's'])} "
                         f"| {statistics.median(found[cap, tls, 'MiB']):.1f} |")
        ratio = statistics.median(found[cap, True, "s"]) / statistics.median(found[cap, False, "s"])
        ratios.append(f"{label} **{ratio:.2f}**")
    lines += ["", f"Ratio TLS / plain (medians): {', '.join(ratios)}."]
    return "\n".join(lines)
