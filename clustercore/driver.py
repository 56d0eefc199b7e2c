"""How a flavor runs its workloads: the ``WorkloadDriver`` protocol.

A flavor registers one driver per workload flavor name through the
``clustercore_register`` hook. The core calls it to act; it never guesses what a workload
is. Drivers raise any exception to report failure; the core wraps it in a
:class:`~clustercore.errors.FlavorError` naming the flavor and the operation.

Optional capabilities are small protocols of their own (``isinstance`` tells whether a
driver has one; :func:`~clustercore.testing.check_flavor` checks their signatures):

- :class:`MovabilityDriver`: ``movable(workload) -> bool`` when some workloads cannot
  leave their host at all (neither migrate nor restart elsewhere, such as a VM holding a
  passthrough device); maintenance then stops them only when asked to. Ask through
  :func:`movable`, which is True for drivers without it.
- :class:`SettlingDriver`: ``settle(workload, source, target)`` ends a move whose manager
  died mid-way (abort a migration still running, clean up a half-done end); a new leader
  calls it before it asks both hosts where the workload runs.
- :class:`StorageMigrationDriver`: ``migrates_storage(workload) -> bool`` when a live
  migration copies the workload's volumes on local domains to the target (ask through
  :func:`migrates_storage`).

Volumes' data is kept by a :class:`VolumeDriver` (``registry.add_volume_driver``), used by
:mod:`clustercore.volumes`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from clustercore.model import Host, Workload

if TYPE_CHECKING:
    from clustercore.storage import StorageDomain, Volume


class WorkloadState(enum.Enum):
    """What a driver finds when it inspects a workload on one host."""

    RUNNING = "running"
    STOPPED = "stopped"  # defined there but not running
    ABSENT = "absent"  # the host knows nothing of it

    def __str__(self) -> str:
        return self.value


@runtime_checkable
class WorkloadDriver(Protocol):
    @property
    def flavor(self) -> str:
        """The ``Workload.flavor`` this driver runs."""

    @property
    def live_migration(self) -> bool:
        """False when workloads of this flavor can only be stopped and started elsewhere."""

    def start(self, workload: Workload, host: Host) -> None:
        """Start ``workload`` on ``host``; return once it runs (or raise)."""

    def stop(self, workload: Workload, host: Host, force: bool = False) -> None:
        """Stop it; ``force`` skips any graceful phase. Stopping a stopped workload is a no-op."""

    def migrate(self, workload: Workload, source: Host, target: Host) -> None:
        """Move a running workload; on return it runs on ``target`` and not on ``source``.
        On failure it must still run on ``source``."""

    def inspect(self, workload: Workload, host: Host) -> WorkloadState:
        """The workload's state on ``host`` as the host itself reports it."""


@runtime_checkable
class MovabilityDriver(Protocol):
    """A driver some of whose workloads cannot leave their host."""

    def movable(self, workload: Workload) -> bool:
        """False when ``workload`` can neither migrate nor restart on another host."""


@runtime_checkable
class SettlingDriver(Protocol):
    """A driver that can end a move its manager left half done."""

    def settle(self, workload: Workload, source: Host, target: Host) -> None:
        """Finish or undo a move of ``workload`` from ``source`` to ``target`` begun by a
        manager that was lost: on return no transfer is running, and the workload runs on at
        most one of the two hosts (the core then asks both which)."""


@runtime_checkable
class StorageMigrationDriver(Protocol):
    """A driver that takes a workload's volumes on local domains along when it migrates it
    (a live storage migration): such a workload may move to another host of the domain."""

    def migrates_storage(self, workload: Workload) -> bool:
        """True when :meth:`WorkloadDriver.migrate` copies ``workload``'s local volumes to
        the target host (the core then records them there)."""


#: Every optional capability, by the method that makes it: what ``check_flavor`` checks.
CAPABILITIES: dict[str, type] = {"movable": MovabilityDriver, "settle": SettlingDriver,
                                 "migrates_storage": StorageMigrationDriver}


def movable(driver: WorkloadDriver, workload: Workload) -> bool:
    """Whether ``workload`` can leave its host: the driver's ``movable()`` when it has one
    (:class:`MovabilityDriver`), otherwise True."""
    return bool(driver.movable(workload)) if isinstance(driver, MovabilityDriver) else True


def migrates_storage(driver: WorkloadDriver, workload: Workload) -> bool:
    """Whether moving ``workload`` takes its local volumes along (False for drivers
    without :class:`StorageMigrationDriver`)."""
    return isinstance(driver, StorageMigrationDriver) and bool(driver.migrates_storage(workload))


@runtime_checkable
class VolumeDriver(Protocol):
    """Keeps volumes' data on hosts. Each method returns False when ``host`` is not one
    of this driver's (another flavor's host), True once done; it raises on failure."""

    def prepare_domain(self, host: Host, domain: StorageDomain) -> bool:
        """Make a new storage domain usable from ``host`` and mark it as the cluster's (a
        host's probe finds the domain by that mark: an empty mount point is not it)."""

    def create_volume(self, host: Host, domain: StorageDomain, volume: Volume, template: Volume | None,
                      upload: str | None) -> bool:
        """Make ``volume`` on ``host``: a clone of ``template`` (a volume on a domain this
        host reaches), the contents of the local file ``upload``, or empty."""

    def delete_volume(self, host: Host, domain: StorageDomain, volume: Volume) -> bool:
        """Remove ``volume``'s data (gone already is done)."""

    def resize_volume(self, host: Host, domain: StorageDomain, volume: Volume, size: int) -> bool:
        """Grow ``volume`` to ``size`` MiB."""
