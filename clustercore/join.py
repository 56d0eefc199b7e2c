"""Node join: register, (approve), bootstrap through the flavors, discover facts, then Up.

::

    register ──► PendingApproval ──approve──► Installing ──bootstrap ok──► Initializing ──► Up
                 (approval_required)              └── a flavor refuses ──► InstallFailed (reason)

Installing runs every flavor's ``clustercore_bootstrap_host``; Initializing runs every
flavor's ``clustercore_describe_host`` (facts and extended resources) and checks that the
host reaches the cluster's required networks and storage. The acting parts are called by
the controller; the functions here decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from clustercore.errors import HostBusy
from clustercore.lifecycle import HostEvent
from clustercore.model import Host, HostState, Placement, Resources
from clustercore.plugins import HostDescription, Plugins

#: Facts key listing the extended resources that flavors contributed (replaced on rediscovery).
EXTENDED_FACT = "_extended"


def registered(host: Host, approval_required: bool, now: float) -> Host:
    """``host`` as it enters the cluster: PendingApproval or Installing, nothing carried over
    (not a watchdog either: only its agent's heartbeats arm one)."""
    state = HostState.PENDING_APPROVAL if approval_required else HostState.INSTALLING
    return attrs.evolve(host, state=state, since=now, reason="registered", previous=None, non_operational=None,
                        watchdog=0.0)


def bootstrap(host: Host, plugins: Plugins) -> tuple[HostEvent, str]:
    """Ask every flavor to prepare ``host``: INSTALL_SUCCEEDED, or INSTALL_FAILED with
    each refusing flavor's reason."""
    problems = plugins.bootstrap_host(host)
    if problems:
        return HostEvent.INSTALL_FAILED, "; ".join(f"{f}: {p}" for f, p in sorted(problems.items()))
    return HostEvent.INSTALL_SUCCEEDED, f"bootstrapped ({', '.join(plugins.names) or 'no flavors'})"


def with_descriptions(host: Host, descriptions: Mapping[str, HostDescription]) -> Host:
    """``host`` with each flavor's facts and its extended resources added to capacity and
    allocatable (replacing what flavors contributed before)."""
    previous = set(host.facts.get(EXTENDED_FACT, ()))
    offered: dict[str, int] = {}
    for desc in descriptions.values():
        for name, count in desc.extended.items():
            offered[name] = offered.get(name, 0) + count

    def rebuild(res: Resources) -> Resources:
        kept = {k: v for k, v in res.extended if k not in previous}
        kept.update(offered)
        return Resources(res.cpu, res.memory, kept)

    facts: dict[str, object] = {flavor: desc.facts for flavor, desc in descriptions.items()}
    facts[EXTENDED_FACT] = sorted(offered)
    return attrs.evolve(host, capacity=rebuild(host.capacity), allocatable=rebuild(host.allocatable), facts=facts)


def check_removable(host: Host, placements: Iterable[Placement]) -> None:
    """Raise HostBusy when workloads are still placed on (or migrating to) ``host``."""
    busy = sorted(p.workload for p in placements if host.name in (p.host, p.target))
    if busy:
        raise HostBusy(host.name, "remove", busy)
