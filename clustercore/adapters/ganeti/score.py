"""The Ganeti cluster score (hbal's metrics and weights) and the weigher built on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs
import numpy as np

from clustercore.model import Workload
from clustercore.scheduling.snapshot import Snapshot

if TYPE_CHECKING:
    from clustercore.adapters.ganeti.cluster import GanetiCluster


def _std_after(values: np.ndarray, at: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Population std of ``values`` with ``values[at[j]] = new[j]``, for each j at once."""
    n = len(values)
    s1 = values.sum() - values[at] + new
    s2 = (values**2).sum() - values[at] ** 2 + new**2
    return np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))  # type: ignore[no-any-return]


#: Per node inputs of the score (arrays over a group's online nodes).
RAW = ("t_mem", "f_mem", "down_mem", "r_mem", "t_dsk", "f_dsk", "t_cpu", "u_cpu", "u_spindles", "hi_spindles", "n_pri",
       "n_sec", "exclusive", "free_spindles", "t_spindles")
#: Metric -> (weight of its std over nodes, weight of its sum over nodes): hbal's components
#: as Ganeti 3.0 weighs them (its "forth" copies of disk, vCPU and spindles, equal to the
#: current ones without forthcoming instances, are folded into weight 1; free memory once
#: stopped instances start is its own term).
WEIGHTS = {"free_mem": (0.5, 0.0), "free_mem_forth": (0.5, 0.0), "free_disk": (1.0, 0.0), "vcpu_ratio": (1.0, 0.0),
           "spindles": (1.0, 0.0), "reserved_mem": (1.0, 0.25), "n1_fail": (0.0, 1.0), "primaries": (3.0, 0.0),
           "disk_load": (1.0, 0.0)}


def node_metrics(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each metric of :data:`WEIGHTS`, per node (element-wise, so any subset of nodes works)."""
    return {
        "free_mem": raw["f_mem"] / np.maximum(raw["t_mem"], 1),
        "free_mem_forth": (raw["f_mem"] - raw["down_mem"]) / np.maximum(raw["t_mem"], 1),
        # With exclusive storage, disks are whole spindles: free disk is free spindles.
        "free_disk": np.where(raw["exclusive"], raw["free_spindles"] / raw["t_spindles"],
                              raw["f_dsk"] / np.maximum(raw["t_dsk"], 1)),
        "vcpu_ratio": raw["u_cpu"] / np.maximum(raw["t_cpu"], 1),
        "spindles": np.where(raw["exclusive"], 0.0, raw["u_spindles"] / raw["hi_spindles"]),
        "reserved_mem": raw["r_mem"] / np.maximum(raw["t_mem"], 1),
        "n1_fail": (raw["f_mem"] < raw["r_mem"]).astype(float),  # cannot take its N+1 failover
        # hbal's cpu, memory and network load (each primary weighs 1) and disk load (primaries
        # and secondaries); three equal terms for the first.
        "primaries": raw["n_pri"].astype(float),
        "disk_load": (raw["n_pri"] + raw["n_sec"]).astype(float),
    }


def group_score(raw: Mapping[str, np.ndarray]) -> float:
    """The Ganeti cluster score of a group's online nodes (lower is better): hbal's
    ``sum(weight * statistic)`` over the metrics of :data:`WEIGHTS`, the statistic being the
    population standard deviation over nodes or the sum. Exclusion-tag conflicts (hbal's
    ``pri_tags_score``) and location scores are not terms: conflicts are refused outright
    by :class:`ExclusionTagsFilter`."""
    metrics = node_metrics(raw)
    return float(sum(w_std * metrics[k].std() + w_sum * metrics[k].sum() for k, (w_std, w_sum) in WEIGHTS.items()))


def score_after(raw: Mapping[str, np.ndarray], at: np.ndarray, changed: Mapping[str, np.ndarray]) -> np.ndarray:
    """``group_score`` for each j, had node ``at[j]`` the inputs ``changed[.][j]`` (the other
    inputs as in ``raw``): every candidate of a decision scored at once."""
    base = node_metrics(raw)
    new = node_metrics({k: changed.get(k, raw[k][at]) for k in RAW})
    total = np.zeros(len(at))
    for k, (w_std, w_sum) in WEIGHTS.items():
        if w_std:
            total += w_std * _std_after(base[k], at, new[k])
        if w_sum:
            total += w_sum * (base[k].sum() - base[k][at] + new[k])
    return total


@attrs.frozen(eq=False)
class GanetiScoreWeigher:
    """Minus the group score after placing the instance as primary on each candidate."""

    cluster: GanetiCluster
    name: str = "ganeti-score"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        return -self.scores(workload, snap, candidates)

    def state(self, snap: Snapshot) -> dict[str, np.ndarray]:
        """The score's inputs per online host of ``snap`` (built from the cluster as it is now)."""
        c = self.cluster
        idx = np.array([c.index[h.name] for h in snap.hosts], dtype=np.int64)[snap.up]
        raw = {k: getattr(c, k) for k in RAW}
        raw["r_mem"] = c.r_mem
        return {k: v[idx] for k, v in raw.items()}

    def scores(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        raw = self.state(snap)
        vector, _ = snap.vector(workload.requests)
        mem, cpu, disk, spindles = (vector[snap.column(k)] for k in ("memory", "cpu", "disk", "spindles"))
        at = (np.cumsum(snap.up) - 1)[candidates]  # offline nodes are never candidates
        return score_after(raw, at, {"f_mem": raw["f_mem"][at] - mem, "f_dsk": raw["f_dsk"][at] - disk,
                                     "u_cpu": raw["u_cpu"][at] + cpu, "n_pri": raw["n_pri"][at] + 1,
                                     "u_spindles": raw["u_spindles"][at] + spindles,
                                     "free_spindles": raw["free_spindles"][at] - spindles * raw["exclusive"][at]})

