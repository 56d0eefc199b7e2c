"""The flavor contract: every hook a flavor may implement, and nothing else.

A flavor is any object or module with functions marked ``@hookimpl`` and named after the
specs below. It is found through the entry-point group ``clustercore.flavors`` (built-in
flavors load exactly that way too) or passed to :class:`clustercore.plugins.Plugins`.
A flavor implements only the hooks it needs; a hook implementation may take a subset of
the arguments. Unknown ``clustercore_*`` names fail loudly at load (``check_pending``).

The hooks are few on purpose. Objects (workload drivers, scheduler filters and weighers)
are handed over once through :func:`clustercore_register`; the other hooks are the moments
in a host's life where every flavor has a say. Every hook below is called for every flavor
(none is ``firstresult``); the core merges the answers and attributes failures to the
flavor that raised them (:class:`~clustercore.errors.FlavorError`). Every call goes through
pluggy, one flavor at a time: a flavor's ``@hookimpl(wrapper=True)`` wraps its own
implementation and receives (and must return) the list of its answers, and
``pm.add_hookcall_monitoring`` / ``pm.enable_tracing`` see each call.

Writing one::

    from clustercore.plugins import hookimpl

    class MyFlavor:
        name = "mine"

        @hookimpl
        def clustercore_register(self, registry):
            registry.add_driver(MyDriver())

        @hookimpl
        def clustercore_bootstrap_host(self, host):
            return None if can_run_on(host) else "runtime missing"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pluggy

from clustercore.model import Host, Workload

if TYPE_CHECKING:
    from clustercore.config import ClusterConfig
    from clustercore.network import LogicalNetwork
    from clustercore.plugins import HostDescription, HostProbe, Registry
    from clustercore.statistics import Sample
    from clustercore.storage import StorageDomain, StorageView

PROJECT = "clustercore"
hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec(historic=True)
def clustercore_register(registry: Registry) -> None:
    """Hand the flavor's objects to the core.

    When: once per flavor, as soon as both the flavor and the plugin manager exist
    (historic: a flavor added later is called on its arrival).
    Arguments: ``registry``, a :class:`~clustercore.plugins.Registry`; call its
    ``add_driver`` (one :class:`~clustercore.driver.WorkloadDriver` per workload flavor
    name), ``add_filter`` and ``add_weigher`` (scheduler plugins, see
    :mod:`clustercore.scheduling`), ``add_volume_driver`` (a
    :class:`~clustercore.driver.VolumeDriver` keeping volumes' data on the flavor's hosts,
    see :mod:`clustercore.volumes`).
    Returns: nothing.
    """


@hookspec
def clustercore_configure(config: ClusterConfig) -> None:
    """Take the cluster's config (settings a flavor follows, such as ``storage_roots``).

    When: when a Cluster starts on its store, after ``Cluster.configure``, and whenever a
    reconcile pass finds the stored config changed (another writer, another manager).
    Arguments: ``config``, the :class:`~clustercore.config.ClusterConfig` in force.
    Returns: nothing. An exception is logged; the config stays in force.
    """


@hookspec
def clustercore_describe_host(host: Host) -> HostDescription | None:
    """Discover what the flavor knows of a host.

    When: each time a host enters Initializing (after joining, after coming back).
    Arguments: ``host``, the current host (its ``address`` tells where to look).
    Returns: a :class:`~clustercore.plugins.HostDescription`: ``facts`` (JSON-like, stored
    under the flavor's name in ``Host.facts``) and ``extended`` resources the flavor
    offers on the host (for example ``{"pci/10de:1eb8": 2}``), added to the host's
    capacity; or None when the flavor has nothing to say. Raising makes the host
    NonOperational with reason ``flavor-check-failed``.
    """


@hookspec
def clustercore_bootstrap_host(host: Host) -> str | None:
    """Prepare a joining host, or say why it cannot join.

    When: once per install, while the host is Installing (after approval when approval is
    required).
    Arguments: ``host``.
    Returns: None when the host is ready for this flavor, or the reason it is not (the
    host becomes InstallFailed with that reason, prefixed by the flavor's name). Raising
    counts as failing with the exception's message.
    """


@hookspec
def clustercore_complete_workload(workload: Workload, workloads: Mapping[str, Workload], config: ClusterConfig,
                                  storage: StorageView) -> Workload | None:
    """Fill in what the cluster assigns to a new workload, before it is validated.

    When: at ``Cluster.submit``, before ``clustercore_validate_workload``; for every
    flavor in turn, each seeing the previous one's answer (a flavor ignores workloads of
    other flavors).
    Arguments: as ``clustercore_validate_workload``.
    Returns: the completed workload (same name and flavor: a NIC's MAC from the cluster's
    pool, the path of a volume a disk names...), or None to leave it as it is. The answer
    is checked again as a definition; raising refuses the submit (a
    :class:`~clustercore.errors.ValidationError` naming the field reaches the caller as is).
    """


@hookspec
def clustercore_validate_workload(workload: Workload, workloads: Mapping[str, Workload],
                                  config: ClusterConfig, storage: StorageView) -> str | None:
    """Check a workload definition before anything of it is written.

    When: at ``Cluster.submit`` (and any other way a definition enters the store), before
    the definition is written; for every flavor (a flavor ignores workloads of other
    flavors).
    Arguments: ``workload``, the new definition; ``workloads``, every workload already
    defined (for identities that must be unique in the cluster, such as a VM's uuid);
    ``config``, the cluster's config (its ``storage_roots`` bound every path a spec may
    name); ``storage``, a :class:`~clustercore.storage.StorageView` of the cluster's
    storage domains, volumes and logical networks.
    Returns: None to accept; a string (or a raised
    :class:`~clustercore.errors.ValidationError` naming the field) to refuse. Nothing is
    written when any flavor refuses.
    """


@hookspec
def clustercore_probe_host(host: Host, storage: Sequence[StorageDomain],
                           networks: Sequence[LogicalNetwork]) -> HostProbe | None:
    """Check what ``host`` really reaches.

    When: every heartbeat interval for each monitored host (Up, NonOperational,
    Initializing, PreparingForMaintenance), off the reconcile pass with the cluster's
    ``call_timeout`` (a probe that hangs, as on a dead NFS mount, counts as reaching no
    storage), while the cluster defines storage domains or logical networks.
    Arguments: ``host``; ``storage``, the domains attached to it; ``networks``, every
    logical network.
    Returns: a :class:`~clustercore.plugins.HostProbe` naming the domains and networks the
    host reaches (and the MiB free on each domain, where it can tell; a flavor that
    realizes domains and networks makes sure here that they exist), or None when the
    flavor does not know (the host's reports then count).
    The answers of all flavors are merged; they replace the host's reports for
    connectivity: a host missing a required network or an attached shared domain goes
    NonOperational, and back Up when the probe finds it again.
    """


@hookspec
def clustercore_maintenance_veto(host: Host, workloads: Sequence[Workload]) -> str | None:
    """Object to a host entering maintenance.

    When: when an operator asks for maintenance, before the host changes state.
    Arguments: ``host``, and ``workloads`` placed on it (all flavors).
    Returns: None to allow, or the reason to refuse (for example a workload of this flavor
    that can neither migrate nor stop). Any veto refuses the request with
    :class:`~clustercore.errors.MaintenanceVetoed`, listing every flavor's reason.
    """


@hookspec
def clustercore_prepare_maintenance(host: Host) -> None:
    """Get a host ready for maintenance once its workloads are gone.

    When: when a host's drain is complete, just before it enters Maintenance.
    Arguments: ``host`` (still PreparingForMaintenance).
    Returns: nothing. Raising leaves the host PreparingForMaintenance; the controller
    tries again on its next pass and records the failure as an event.
    """


@hookspec
def clustercore_soft_fence(host: Host) -> bool | None:
    """Try to revive a NonResponsive host without powering it off (restart a daemon).

    When: once per fencing episode, before any hard fencing, when the cluster's fence
    policy says ``soft_first``.
    Arguments: ``host``.
    Returns: True when the flavor tried something (the controller then waits the policy's
    ``soft_wait`` for heartbeats to resume before hard fencing); None or False when it has
    nothing to try. Raising is recorded and counts as not tried.
    """


@hookspec
def clustercore_host_alive(host: Host, workloads: Sequence[Workload]) -> bool | None:
    """A liveness witness: say whether an unreachable host is known to be alive.

    When: before each decision to fence a NonResponsive host, off the reconcile pass.
    Arguments: ``host``, and the ``workloads`` placed on it (all flavors).
    Returns: True when the flavor has evidence the host is alive (a fresh storage lease, a
    disk lease its workloads still hold, a peer that still sees it): fencing is skipped
    while any flavor says so. None or False when it does not know. Raising counts as not knowing.
    """


@hookspec
def clustercore_sample_host(host: Host, workloads: Sequence[Workload]) -> Sample | None:
    """Measure what ``host`` and its workloads use (:mod:`clustercore.statistics`).

    When: every ``statistics.interval`` seconds for each Up host, off the reconcile pass
    with the cluster's ``call_timeout``.
    Arguments: ``host``, and the ``workloads`` placed on it (all flavors).
    Returns: a :class:`~clustercore.statistics.Sample` of cumulative counters (the host's
    CPU time busy and idle, each of the flavor's workloads' CPU time and I/O bytes) and
    current levels (memory, swap), or None when the flavor cannot measure this host. The
    answers of all flavors are merged: the host's own counters from the first, the
    workloads of each. The core turns two samples into rates and smooths them.
    """


@hookspec
def clustercore_upgrade_host(host: Host) -> bool | None:
    """Upgrade a host during a rolling cluster upgrade (:mod:`clustercore.upgrade`).

    When: once per host, while it is in Maintenance (drained), before it is activated.
    Arguments: ``host``.
    Returns: True when the flavor has started a reboot that finishes the upgrade (the host
    becomes Rebooting and comes back through Initializing once its heartbeats resume);
    None or False otherwise (the host is activated). Raising fails the upgrade: it stops
    there, the host stays in Maintenance with the reason recorded.
    """


@hookspec
def clustercore_host_transition(old: Host, new: Host, event: str, reason: str) -> None:
    """React to a host changing state.

    When: after the change is stored (so it is a fact, not a proposal).
    Arguments: ``old`` and ``new`` host, the ``event`` name (a
    :class:`~clustercore.lifecycle.HostEvent` value) and its human ``reason``.
    Returns: nothing. An exception is logged and recorded as an event; it does not undo
    the transition.
    """
