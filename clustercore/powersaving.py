"""Power saving: empty a lightly loaded host, power it off through its BMC, and power it on
again when the cluster needs it (oVirt's power-saving policy, Proxmox's and Incus' idea
of consolidation). ``RebalancePolicy(mode="power_saving")``:

* **consolidate** (:func:`to_empty`, pure): while more than ``min_up`` hosts are Up, the
  least loaded host whose measured CPU and memory shares are both below ``low`` is emptied
  if every one of its workloads moves live, the other Up hosts take them all (the
  scheduler's filters, on a snapshot where they already moved) without any of them
  measuring above ``high``, and the HA workloads of any one remaining host still fit in the
  others' free capacity (N+1, by requests);
* the leader drains it through maintenance (the drain's own path), then powers it off
  through its fence devices with the power confirmed OFF by status (as fencing does), and
  it is **Standby**;
* **wake** (:func:`wake_needed`, pure): when a workload could not be placed for want of
  capacity (``Cluster.submit`` raised NoValidHost while a host was in Standby), or the
  Up hosts' mean CPU share is above ``high``, one Standby host is powered on
  (:func:`power_on`) and is Rebooting until its heartbeats resume, then Initializing and Up.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import numpy as np

from clustercore.errors import FencingFailed
from clustercore.fence_agents import AgentError, FenceAgent
from clustercore.fencing import levels
from clustercore.model import Host, Workload
from clustercore.rebalance import RebalancePolicy, shares
from clustercore.scheduling.engine import Scheduler
from clustercore.scheduling.snapshot import Snapshot
from clustercore.statistics import Load


def _n1_failures(snap: Snapshot, up: np.ndarray) -> int:
    """Hosts among ``up`` whose HA workloads would not fit in the other ``up`` hosts' free
    memory or CPU (by requests)."""
    mem, cpu = snap.column("memory"), snap.column("cpu")
    assert mem is not None and cpu is not None
    free = np.maximum(snap.allocatable - snap.used, 0.0)[:, [mem, cpu]] * up[:, None]
    ha = snap.ha_load()[:, [mem, cpu]]
    others = free.sum(axis=0) - free
    return int((((ha > others + 1e-9).any(axis=1)) & up).sum())


def to_empty(scheduler: Scheduler, loads: Mapping[str, Load], policy: RebalancePolicy,
             movable: Callable[[Workload], bool] = lambda w: True) -> str | None:
    """The host to empty for power saving now, or None (see the module docstring). Pure."""
    snap = scheduler.snapshot
    up = np.array([bool(snap.up[i]) and h.name in loads for i, h in enumerate(snap.hosts)])
    if int(up.sum()) <= policy.min_up:
        return None
    light = sorted((sum(shares(loads[h.name])), i) for i, h in enumerate(snap.hosts)
                   if up[i] and max(shares(loads[h.name])) < policy.low)
    for _, i in light:
        workloads = snap.workloads_on(i)
        if not all(movable(w) for w in workloads):
            continue
        trial, rest = snap, up.copy()
        rest[i] = False
        added = dict.fromkeys(range(snap.size), 0.0)  # CPUs of measured use moving onto each host
        usage = loads[snap.hosts[i].name].workloads
        for w in workloads:
            trial = trial.release(i, w)
        placed = True
        for w in sorted(workloads, key=lambda w: -w.requests.cpu):
            accepted, _ = scheduler.candidates(w, trial)
            used = usage[w.name].cpu if w.name in usage else float(w.requests.cpu)
            fits = [t for t in (int(k) for k in accepted) if rest[t] and shares(loads[snap.hosts[t].name])[0]
                    + (added[t] + used) / max(1.0, float(snap.hosts[t].capacity.cpu)) <= policy.high]
            if not fits:
                placed = False
                break
            target = min(fits, key=lambda t: shares(loads[snap.hosts[t].name])[0])
            added[target] += used
            trial = trial.reserve(target, w)
        if placed and _n1_failures(trial, rest) <= _n1_failures(snap, up):
            return snap.hosts[i].name
    return None


def wake_needed(loads: Mapping[str, Load], up: Collection[str], standby: Collection[str], demand: bool,
                policy: RebalancePolicy) -> str | None:
    """Why a Standby host must be powered on now (None: no need, or none to power on)."""
    if not standby:
        return None
    if demand:
        return "a workload found no host with room"
    measured = [shares(loads[h])[0] for h in up if h in loads]
    if measured and sum(measured) / len(measured) > policy.high:
        return f"the Up hosts' mean CPU share is {sum(measured) / len(measured):.2f} (above {policy.high:g})"
    return None


def power_on(host: Host, agent_for: Callable[[str], FenceAgent], timeout: float) -> list[str]:
    """Power ``host`` on through the first fencing level whose every device takes it; the
    attempts. FencingFailed (with them) when none does."""
    attempts: list[str] = []
    for n, level in enumerate(levels(host.fence_devices), 1):
        try:
            for device in level:
                agent_for(device.agent).power(device, "on", timeout)
                attempts.append(f"level {n} {device.agent}@{device.address}: on sent")
            return attempts
        except AgentError as exc:
            attempts.append(f"level {n}: {exc}")
    raise FencingFailed(host.name, attempts or ["no fence device configured"])
