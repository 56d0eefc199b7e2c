"""The scheduler's plugin protocols, and the adapters that run per-host plugins.

Two ways to write a plugin:

* vectorised (fast): ``Filter.filter(workload, snapshot, candidates) -> {reason: mask}``
  and ``Weigher.weigh(workload, snapshot, candidates) -> scores`` over numpy columns
  (a weigher may also say beforehand that it cannot tell hosts apart: :class:`OptionalWeigher`);
* row-wise (incremental): a vectorised plugin whose answer for a host depends only on the
  request and that host's row of ``used`` can say so (:class:`RowwiseFilter`,
  :class:`RowwiseWeigher`); the engine then keeps its answers per request between decisions
  and asks again only for the hosts whose reservations changed (:mod:`.incremental`);
* per host (simple): ``HostFilter.check(workload, view) -> reason | None`` and
  ``HostWeigher.weigh(workload, view) -> float``, with a :class:`HostView` of one host.
  The engine adapts them (:func:`as_filter`, :func:`as_weigher`); they cost a Python call
  per candidate host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs
import numpy as np

from clustercore.model import Host, Resources, Workload
from clustercore.scheduling.snapshot import Floats, Ints, Mask, Snapshot


@runtime_checkable
class Filter(Protocol):
    @property
    def name(self) -> str: ...

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Mapping[str, Mask]:
        """{reason: mask over all hosts, True where the host fails for that reason}."""


@runtime_checkable
class RejectingFilter(Filter, Protocol):
    """A filter that can also give the union of its masks more cheaply than ``filter``:
    the engine asks for it when it needs only the hosts left, not the reasons."""

    def reject(self, workload: Workload, snap: Snapshot) -> Mask | None:
        """True where ``filter`` would reject the host for any reason (None: nowhere)."""


@runtime_checkable
class Weigher(Protocol):
    @property
    def name(self) -> str: ...

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        """A raw score per candidate (aligned with ``candidates``); higher is better."""


@runtime_checkable
class RowwiseFilter(Filter, Protocol):
    """A filter whose verdict on a host is a function of the workload's requests and of that
    host's row of ``used`` (and of what reservations never change: hosts, allocatable)."""

    def reject_rows(self, requests: Resources, snap: Snapshot, rows: Ints | None) -> Mask:
        """True where ``filter`` would reject the host for any reason, for the hosts ``rows``
        (None: every host), aligned with them: a new array, which the engine keeps and changes."""


@runtime_checkable
class RowwiseWeigher(Weigher, Protocol):
    """A weigher whose raw score for a host is a function of the workload's requests and of
    that host's row of ``used`` (and of what reservations never change)."""

    def weigh_rows(self, requests: Resources, snap: Snapshot, rows: Ints | None) -> Floats:
        """The raw scores of the hosts ``rows`` (None: every host), bit for bit what ``weigh``
        gives them whatever the other candidates: a new array, which the engine keeps and changes."""


@attrs.frozen
class HostView:
    """What a per-host plugin sees of one host: the host, what is used or reserved on it,
    and the workloads placed or reserved there."""

    host: Host
    used: Resources
    workloads: tuple[Workload, ...] = ()

    @property
    def free(self) -> Resources:
        return self.host.allocatable - self.used


@runtime_checkable
class OptionalWeigher(Weigher, Protocol):
    """A weigher that can say beforehand that it tells no hosts apart for a workload (a soft
    rule the workload does not have): the engine then skips it, which changes no total."""

    def applies(self, workload: Workload, snap: Snapshot) -> bool: ...


@runtime_checkable
class HostFilter(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, workload: Workload, view: HostView) -> str | None:
        """None when ``view`` may run ``workload``; otherwise the reason it may not."""


@runtime_checkable
class HostWeigher(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def multiplier(self) -> float: ...

    def weigh(self, workload: Workload, view: HostView) -> float:
        """A raw score: higher is better before the multiplier."""


def view(snap: Snapshot, index: int) -> HostView:
    return HostView(snap.hosts[index], snap.host_resources(index, snap.used), snap.workloads_on(index))


@attrs.frozen
class PerHostFilter:
    """Runs a per-host filter on each remaining candidate."""

    inner: HostFilter

    @property
    def name(self) -> str:
        return self.inner.name

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Mapping[str, Mask]:
        out: dict[str, Mask] = {}
        for i in candidates:
            why = self.inner.check(workload, view(snap, int(i)))
            if why is not None:
                out.setdefault(why, np.zeros(snap.size, dtype=bool))[i] = True
        return out


@attrs.frozen
class PerHostWeigher:
    inner: HostWeigher

    @property
    def name(self) -> str:
        return self.inner.name

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        return np.array([self.inner.weigh(workload, view(snap, int(i))) for i in candidates], dtype=float)


@attrs.frozen
class ForFlavor:
    """A per-host filter that concerns one workload flavor only: workloads of other flavors
    skip it without a per-host call (what a flavor's own rules should be wrapped in)."""

    flavor: str
    inner: HostFilter

    @property
    def name(self) -> str:
        return self.inner.name

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Mapping[str, Mask]:
        if workload.flavor != self.flavor:
            return {}
        return PerHostFilter(self.inner).filter(workload, snap, candidates)


@attrs.frozen
class ForFlavorWeigher:
    """A per-host weigher for one workload flavor only (zero for the others; its factor is
    the inner weigher's multiplier)."""

    flavor: str
    inner: HostWeigher

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def factor(self) -> float:
        return float(self.inner.multiplier)

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        if workload.flavor != self.flavor:
            return np.zeros(len(candidates))
        return PerHostWeigher(self.inner).weigh(workload, snap, candidates)


def as_filter(plugin: Filter | HostFilter) -> Filter:
    if isinstance(plugin, Filter):
        return plugin
    if isinstance(plugin, HostFilter):
        return PerHostFilter(plugin)
    raise TypeError(f"{plugin!r} is neither a Filter (filter) nor a HostFilter (check)")


def as_weigher(plugin: Weigher | HostWeigher) -> tuple[Weigher, float]:
    """The weigher and its factor (a per-host weigher brings its own multiplier)."""
    if isinstance(plugin, HostWeigher):
        return PerHostWeigher(plugin), float(plugin.multiplier)
    if isinstance(plugin, ForFlavorWeigher):
        return plugin, plugin.factor
    if isinstance(plugin, Weigher):
        return plugin, float(getattr(plugin, "multiplier", 1.0))
    raise TypeError(f"{plugin!r} is neither a Weigher nor a HostWeigher")
