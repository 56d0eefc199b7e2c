"""How a flavor runs its workloads: the ``WorkloadDriver`` protocol.

A flavor registers one driver per workload flavor name through the
``clustercore_register`` hook. A driver may also define ``movable(workload) -> bool`` when
some of its workloads cannot leave their host at all (neither migrate nor restart
elsewhere, such as a VM holding a passthrough device); maintenance then stops them only
when asked to. A driver may define ``settle(workload, source, target)`` to end a move
whose manager died mid-way (abort a migration still running, clean up a half-done end);
a new leader calls it before it asks both hosts where the workload runs. The core calls
it to act; it never guesses what a workload is. Drivers raise any exception to report failure; the core wraps it in a
:class:`~clustercore.errors.FlavorError` naming the flavor and the operation.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

from clustercore.model import Host, Workload


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
