"""What a libvirt host and its VMs use, for :mod:`clustercore.statistics`.

The host: ``virNodeGetCPUStats`` (busy = user + kernel; idle = idle + iowait, ns over all
CPUs) and ``virNodeGetMemoryStats`` (available = free + buffers + cached). libvirt tells
neither swap nor steal: they are reported as 0. The VMs: libvirt's bulk domain stats
(``virConnectGetAllDomainStats``, one call for every running domain): ``cpu.time``,
``balloon.current`` and ``balloon.rss`` (KiB), the ``block.N.rd/wr.bytes`` and
``net.N.rx/tx.bytes`` counters summed; a domain is reported under the name of the
workload it runs (the domain's name is the spec's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import libvirt

from clustercore.statistics import Counters, Sample

STATS = (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_BLOCK
         | libvirt.VIR_DOMAIN_STATS_INTERFACE)


def _summed(stats: Mapping[str, Any], kind: str, counter: str) -> int:
    return sum(int(stats.get(f"{kind}.{i}.{counter}", 0)) for i in range(int(stats.get(f"{kind}.count", 0))))


def counters(stats: Mapping[str, Any]) -> Counters:
    """One domain's bulk stats as counters (memory in MiB). Pure."""
    return Counters(int(stats.get("cpu.time", 0)), float(stats.get("balloon.rss", 0)) / 1024,
                    float(stats.get("balloon.current", 0)) / 1024, _summed(stats, "block", "rd.bytes"),
                    _summed(stats, "block", "wr.bytes"), _summed(stats, "net", "rx.bytes"),
                    _summed(stats, "net", "tx.bytes"))


def sample(conn: libvirt.virConnect, workloads: Mapping[str, str],
           monotonic: Callable[[], float] = time.monotonic, from_domains: bool = False) -> Sample:
    """The host behind ``conn`` now; ``workloads`` maps domain names to the workload names
    to report them under (other domains are left out). ``from_domains``: the host's busy
    time is its running domains' CPU time (hosts sharing one kernel, as the lab's do)."""
    at = monotonic()
    cpus = conn.getInfo()[2]
    memory = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
    found: dict[str, Counters] = {}
    busy_domains = 0
    if workloads or from_domains:
        for dom, stats in conn.getAllDomainStats(STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE):
            busy_domains += int(stats.get("cpu.time", 0))
            name = workloads.get(dom.name())
            if name is not None:
                found[name] = counters(stats)
    if from_domains:  # idle: the rest of the CPUs' time since an arbitrary origin (only differences count)
        busy, idle = busy_domains, max(0, int(cpus * at * 1e9) - busy_domains)
    else:
        cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
        busy, idle = cpu.get("kernel", 0) + cpu.get("user", 0), cpu.get("idle", 0) + cpu.get("iowait", 0)
    available = sum(memory.get(k, 0) for k in ("free", "buffers", "cached")) / 1024
    return Sample(at, cpus, busy, idle, memory.get("total", 0) / 1024, available, workloads=found)

