"""The filter/weigh engine: pass/fail with a reason per host, then normalised weights.

A filter's ``check`` returns None when the host passes and a short reason when it does
not ("insufficient memory"). A weigher's ``weigh`` returns a raw score; the engine
normalises each weigher's scores over the candidates to [0, 1] (Nova style) and adds them
up times the weigher's ``multiplier`` (a negative multiplier stacks instead of spreading).
Ties go to the first host by name, so placement is deterministic.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from clustercore.errors import NoValidHost
from clustercore.lifecycle import accepts_workloads
from clustercore.model import ZERO, Host, Placement, PlacementState, Resources, Workload

log = logging.getLogger(__name__)


@attrs.frozen
class HostView:
    """What a filter or weigher sees of one host: the host, what is already reserved on it
    and the workloads placed there. Immutable."""

    host: Host
    used: Resources
    workloads: tuple[Workload, ...] = ()

    @property
    def free(self) -> Resources:
        return self.host.allocatable - self.used


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


@attrs.frozen
class HostStateFilter:
    name: str = "host-state"

    def check(self, workload: Workload, view: HostView) -> str | None:
        if accepts_workloads(view.host):
            return None
        return "unschedulable" if view.host.state.value == "Up" else f"host {view.host.state}"


@attrs.frozen
class ResourcesFilter:
    name: str = "resources"

    def check(self, workload: Workload, view: HostView) -> str | None:
        short = workload.requests.shortfall(view.free)
        return f"insufficient {' and '.join(short)}" if short else None


@attrs.frozen
class HostSelectorFilter:
    name: str = "host-selector"

    def check(self, workload: Workload, view: HostView) -> str | None:
        labels = view.host.labels
        for key, value in workload.host_selector.items():
            if labels.get(key) != value:
                return f"label {key}={value} missing"
        return None


@attrs.frozen
class FreeMemoryWeigher:
    """Spread: more free memory is better (Nova's RAMWeigher)."""

    name: str = "free-memory"
    multiplier: float = 1.0

    def weigh(self, workload: Workload, view: HostView) -> float:
        return float(view.free.memory)


def build_views(
    hosts: Iterable[Host], workloads: Mapping[str, Workload], placements: Iterable[Placement]
) -> list[HostView]:
    """One view per host. A workload counts on its host and, while it migrates, on its
    target too (both hold its resources until the move ends)."""
    used: dict[str, Resources] = {}
    placed: dict[str, list[Workload]] = {}
    for p in placements:
        workload = workloads.get(p.workload)
        if workload is None or p.state is PlacementState.STOPPED:
            continue
        for name in (p.host, p.target) if p.target else (p.host,):
            used[name] = used.get(name, ZERO) + workload.requests
            placed.setdefault(name, []).append(workload)
    return [HostView(h, used.get(h.name, ZERO), tuple(placed.get(h.name, ()))) for h in hosts]


DEFAULT_FILTERS: tuple[HostFilter, ...] = (HostStateFilter(), ResourcesFilter(), HostSelectorFilter())
DEFAULT_WEIGHERS: tuple[HostWeigher, ...] = (FreeMemoryWeigher(),)


def place(
    workload: Workload,
    views: Sequence[HostView],
    filters: Sequence[HostFilter] = DEFAULT_FILTERS,
    weighers: Sequence[HostWeigher] = DEFAULT_WEIGHERS,
) -> str:
    """The name of the best host for ``workload``; NoValidHost with counts per reason."""
    reasons: Counter[str] = Counter()
    candidates: list[HostView] = []
    for view in views:
        for f in filters:
            why = f.check(workload, view)
            if why is not None:
                reasons[why] += 1
                break
        else:
            candidates.append(view)
    if not candidates:
        error = NoValidHost(workload.name, len(views), reasons)
        log.info("%s", error)
        raise error
    candidates.sort(key=lambda v: v.host.name)
    totals = [0.0] * len(candidates)
    for w in weighers:
        raw = [w.weigh(workload, v) for v in candidates]
        low, high = min(raw), max(raw)
        span = high - low
        for i, score in enumerate(raw):
            totals[i] += w.multiplier * ((score - low) / span if span else 0.0)
    best = max(range(len(candidates)), key=lambda i: (totals[i], -i))
    return candidates[best].host.name
