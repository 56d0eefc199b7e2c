"""hbal's cluster score (Ganeti's ``Cluster/Metrics.hs``): one record per metric.

The score is ``sum(weight * statistic)`` over :data:`METRICS`; a statistic is the
population standard deviation of a per-node value over online nodes, its sum over online
nodes, its sum over offline nodes, or (location exclusion) the number of instances beyond
the first sharing a (location, exclusion tag) pair. Computed as Ganeti computes it (mean
first, then the sum of squared deviations, nodes in index order), so scores match to the
last bit where hail computes from scratch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence

import attrs

from clustercore.adapters.ganeti.hnode import Node, div

__all__ = ["METRICS", "Metric", "Stats", "cluster_score", "components", "scores_replacing"]


@attrs.frozen
class Metric:
    name: str
    weight: float
    value: Callable[[Node], float]
    statistic: str = "std"  # std | sum | offline-sum


def _n1(node: Node) -> float:
    return float(len(node.s_list) + len(node.p_list)) if node.fail_n1 else 0.0


METRICS = (
    Metric("free_mem_cv", 0.5, lambda n: n.p_mem),
    Metric("free_disk_cv", 0.5, lambda n: n.p_dsk),
    Metric("n1_cnt", 1.0, _n1, "sum"),
    Metric("reserved_mem_cv", 1.0, lambda n: n.p_rem),
    Metric("offline_all_cnt", 4.0, lambda n: float(len(n.p_list) + len(n.s_list)), "offline-sum"),
    Metric("offline_pri_cnt", 16.0, lambda n: float(len(n.p_list)), "offline-sum"),
    Metric("vcpu_ratio_cv", 0.5, lambda n: n.p_cpu),
    Metric("cpu_load_cv", 1.0, lambda n: n.load[0]),
    Metric("mem_load_cv", 1.0, lambda n: n.load[1]),
    Metric("disk_load_cv", 1.0, lambda n: n.load[2]),
    Metric("net_load_cv", 1.0, lambda n: n.load[3]),
    Metric("pri_tags_score", 2.0, lambda n: float(sum(n.p_tags.values()) - len(n.p_tags)), "sum"),
    Metric("spindles_cv", 0.5, lambda n: div(n.inst_spindles, n.hi_spindles)),
    Metric("free_mem_cv_forth", 0.5, lambda n: n.p_mem_forth),
    Metric("free_disk_cv_forth", 0.5, lambda n: n.p_dsk),
    Metric("vcpu_ratio_cv_forth", 0.5, lambda n: n.p_cpu),
    Metric("spindles_cv_forth", 0.5, lambda n: div(n.inst_spindles, n.hi_spindles)),
    Metric("location_score", 1.0, lambda n: float(n.location_score), "sum"),
    Metric("location_exclusion_score", 1.0, lambda n: 0.0, "map"),
    Metric("reserved_mem_rtotal", 0.25, lambda n: n.p_rem, "sum"),
)


def _std(values: list[float]) -> float:
    total = 0.0
    for v in values:
        total += v
    count = float(len(values))
    mean = div(total, count)
    nvar = 0.0
    for v in values:
        d = v - mean
        nvar += d * d
    var = div(nvar, count)
    return math.sqrt(var) if var >= 0 else math.nan


def _sum(values: Iterable[float]) -> float:
    total = 0.0
    for v in values:
        total += v
    return total


def components(nodes: Iterable[Node]) -> list[tuple[Metric, float]]:
    """Each metric's statistic (hbal's "detailed CV")."""
    ordered = sorted(nodes, key=lambda n: n.idx)
    online = [n for n in ordered if not n.offline]
    offline = [n for n in ordered if n.offline]
    out = []
    for metric in METRICS:
        if metric.statistic == "std":
            value = _std([metric.value(n) for n in online])
        elif metric.statistic == "sum":
            value = _sum(metric.value(n) for n in online)
        elif metric.statistic == "offline-sum":
            value = _sum(metric.value(n) for n in offline)
        else:
            merged: dict[tuple[str, str], int] = {}
            for n in online:
                for key, count in n.instance_map.items():
                    merged[key] = merged.get(key, 0) + count
            value = float(sum(merged.values()) - len(merged))
        out.append((metric, value))
    return out


def cluster_score(nodes: Iterable[Node]) -> float:
    """hbal's cluster score (``compCVNodes``) of ``nodes``; lower is better."""
    total = 0.0
    for metric, value in components(nodes):
        total += metric.weight * value
    return total


CHUNK = 1 << 20  # matrix elements folded at a time by numpy in scores_replacing
SMALL = 40_000  # candidates x nodes up to which pure Python folds them (numpy's import costs more)
SMALL_NODES = 256  # beyond, a pure-Python fold per candidate costs more than numpy's import
NEAR = 1e-9  # relative score gap under which candidates are scored afresh


def _folds(base: list[float], rows: list[int], values: list[float]) -> tuple[list[float], list[float]]:
    """For each k, the sum of ``base`` with ``values[k]`` at ``rows[k]``, and the sum of
    squared deviations from its mean: both folded left to right, as Ganeti's ``foldl'``."""
    count = float(len(base))
    if len(base) <= SMALL_NODES and len(rows) * len(base) <= SMALL:
        sums, nvars = [], []
        for row, value in zip(rows, values, strict=True):
            xs = [*base[:row], value, *base[row + 1:]]
            total = _sum(xs)
            mean = total / count
            nvar = 0.0
            for x in xs:
                d = x - mean
                nvar += d * d
            sums.append(total)
            nvars.append(nvar)
        return sums, nvars
    import numpy as np  # only for large clusters: its import is most of a small request's time

    array, at, new = np.array(base), np.array(rows, dtype=np.int64), np.array(values)
    out_sums, out_nvars = np.empty(len(rows)), np.empty(len(rows))
    step = max(1, CHUNK // max(len(base), 1))
    for start in range(0, len(rows), step):
        stop = min(start + step, len(rows))
        matrix = np.tile(array, (stop - start, 1))
        matrix[np.arange(stop - start), at[start:stop]] = new[start:stop]
        folded = np.add.accumulate(matrix, axis=1)[:, -1]  # sequential, unlike np.sum's pairwise sum
        deviation = matrix - (folded / count)[:, None]
        out_sums[start:stop] = folded
        out_nvars[start:stop] = np.add.accumulate(deviation * deviation, axis=1)[:, -1]
    return out_sums.tolist(), out_nvars.tolist()


def _tags_score(online: list[Node], replaced: Node, new: Node) -> float:
    merged: dict[tuple[str, str], int] = {}
    for n in online:
        for key, count in (new if n is replaced else n).instance_map.items():
            merged[key] = merged.get(key, 0) + count
    merged = {k: c for k, c in merged.items() if c}
    return float(sum(merged.values()) - len(merged))


def scores_replacing(nodes: Iterable[Node], changes: Sequence[Node]) -> list[float]:
    """``cluster_score`` of ``nodes`` with each of ``changes`` in turn in place of the node
    of its index: what hail's ``allocateOnSingle`` computes for every candidate with
    ``compCV`` afresh. An incremental update (:class:`Stats`) orders the candidates; where
    two or more come within :data:`NEAR` of each other, only rounding can separate them,
    so their scores are computed afresh, bit for bit (:func:`_afresh`): ties then break
    as hail's do, and the others cost no fold over the cluster."""
    nodes = list(nodes)
    by_idx = {n.idx: n for n in nodes}
    stats = Stats.of(nodes)
    approx = [stats.replaced([(by_idx[c.idx], c)]).score() for c in changes]
    if any(math.isnan(a) for a in approx):
        return _afresh(nodes, changes)
    order = sorted(range(len(changes)), key=approx.__getitem__)
    tied: set[int] = set()
    for a, b in itertools.pairwise(order):
        if approx[b] - approx[a] <= NEAR * max(1.0, abs(approx[b])):
            tied.update((a, b))
    out = list(approx)
    if tied:
        ks = sorted(tied)
        for k, score in zip(ks, _afresh(nodes, [changes[k] for k in ks]), strict=True):
            out[k] = score
    return out


def _afresh(nodes: list[Node], changes: Sequence[Node]) -> list[float]:
    """:func:`cluster_score` with each of ``changes`` in place, computed for all at once with
    the same left-to-right sums as Ganeti's."""
    ordered = sorted(nodes, key=lambda n: n.idx)
    online = [n for n in ordered if not n.offline]
    offline = [n for n in ordered if n.offline]
    at = {n.idx: k for k, n in enumerate(online)}
    if any(c.idx not in at or c.offline for c in changes):  # an offline node's: rare, scored one by one
        return [cluster_score([c if n.idx == c.idx else n for n in ordered]) for c in changes]
    rows = [at[c.idx] for c in changes]
    totals = [0.0] * len(changes)
    for metric in METRICS:
        if metric.statistic == "offline-sum":
            values = [_sum(metric.value(n) for n in offline)] * len(changes)
        elif metric.statistic == "map":
            mapped = any(n.instance_map for n in online) or any(c.instance_map for c in changes)
            values = [_tags_score(online, online[r], c) if mapped else 0.0 for r, c in zip(rows, changes, strict=True)]
        else:
            base = [metric.value(n) for n in online]
            new = [metric.value(c) for c in changes]
            if all(y == base[r] or (math.isnan(y) and math.isnan(base[r])) for r, y in zip(rows, new, strict=True)):
                values = [_std(base) if metric.statistic == "std" else _sum(base)] * len(changes)
            else:
                sums, nvars = _folds(base, rows, new)
                count = float(len(base))
                values = [math.sqrt(v / count) if v >= 0 else math.nan for v in nvars] \
                    if metric.statistic == "std" else sums
        totals = [t + metric.weight * v for t, v in zip(totals, values, strict=True)]
    return totals


@attrs.frozen
class Stats:
    """The score's statistics of a node list, updatable one node at a time with Ganeti's own
    formulas (``updateStatistics``: what hail uses to score DRBD pairs), so that scoring a
    candidate costs the nodes it changes, not the whole cluster."""

    values: tuple[tuple[float, float, float], ...]  # per metric: (count, sum, variance) or (0, sum, 0)
    tags: dict[tuple[str, str], int]

    @classmethod
    def of(cls, nodes: Iterable[Node]) -> Stats:
        ordered = sorted(nodes, key=lambda n: n.idx)
        online = [n for n in ordered if not n.offline]
        offline = [n for n in ordered if n.offline]
        values = []
        for metric in METRICS:
            if metric.statistic == "std":
                xs = [metric.value(n) for n in online]
                total = _sum(xs)
                count = float(len(xs))
                mean = div(total, count)
                nvar = 0.0
                for x in xs:
                    nvar += (x - mean) * (x - mean)
                values.append((count, total, div(nvar, count)))
            elif metric.statistic == "offline-sum":
                values.append((0.0, _sum(metric.value(n) for n in offline), 0.0))
            else:
                values.append((0.0, _sum(metric.value(n) for n in online), 0.0))
        tags: dict[tuple[str, str], int] = {}
        for n in online:
            for key, count in n.instance_map.items():
                tags[key] = tags.get(key, 0) + count
        return cls(tuple(values), tags)

    def replaced(self, changes: Iterable[tuple[Node, Node]], keep_zero: bool = False) -> Stats:
        """The statistics once each ``old`` node is replaced by ``new``. ``keep_zero``: a
        (location, tag) pair whose count drops to zero still counts in the exclusion score,
        as in hail's incremental update (its pair scoring); otherwise as computed afresh."""
        values = list(self.values)
        tags = self.tags
        for old, new in changes:
            for k, metric in enumerate(METRICS):
                if (metric.statistic == "offline-sum") != old.offline or metric.statistic == "map":
                    continue
                x, y = metric.value(old), metric.value(new)
                n, s, var = values[k]
                if metric.statistic == "std":
                    ds, dss = y - x, y * y - x * x
                    dnnvar = (n * dss - 2 * s * ds) - ds * ds
                    values[k] = (n, s + ds, max(0.0, var + div(dnnvar, n * n)))
                else:
                    values[k] = (n, s + (y - x), var)
            if not old.offline and (old.instance_map or new.instance_map):
                tags = dict(tags)
                for key, count in old.instance_map.items():
                    tags[key] = tags.get(key, 0) - count
                for key, count in new.instance_map.items():
                    tags[key] = tags.get(key, 0) + count
                if not keep_zero:
                    tags = {k: c for k, c in tags.items() if c != 0}
        return Stats(tuple(values), tags)

    def score(self) -> float:
        total = 0.0
        for metric, (_, s, var) in zip(METRICS, self.values, strict=True):
            if metric.statistic == "std":
                value = math.sqrt(var) if var >= 0 else math.nan
            elif metric.statistic == "map":
                value = float(sum(self.tags.values()) - len(self.tags))
            else:
                value = s
            total += metric.weight * value
        return total
