"""Every error clustercore raises, each carrying the data that explains it.

One base class; catch ``ClusterError`` to catch them all::

    ClusterError
    ├── ValidationError          a definition (host, workload, config) is malformed: names the field
    ├── InvalidTransition        an event that the host's current state does not accept
    ├── InvalidPlacementTransition  an event that the placement's current state does not accept
    ├── UnknownHost              no host of that name
    ├── UnknownWorkload          no workload of that name
    ├── HostExists               registering a name that is already taken
    ├── WorkloadExists           submitting a workload whose name is already taken
    ├── HostBusy                 removing (or similar) a host that still runs workloads
    ├── InUse                    deleting a volume (or similar) that a workload still uses
    ├── MaintenanceVetoed        a flavor refused to let a host enter maintenance
    ├── NoValidHost              no host passed the scheduler's filters: counts per reason
    ├── FencingFailed            no fence level confirmed the host off: carries every attempt
    ├── FlavorError              a flavor's hook or driver failed: names the flavor and the hook
    │   ├── UnknownFlavor        no loaded flavor provides a driver of that name
    │   └── ConformanceError     check_flavor() found the flavor breaks the contract
    └── StoreError
        ├── StoreAccessError     the store refused us: TLS, authentication, permission (not an outage)
        ├── Conflict             compare-and-swap lost: expected revision != actual revision
        ├── KeyNotFound          get/delete of a missing key
        ├── CorruptEntry         a stored value cannot be decoded: names the key and what is wrong
        ├── Compacted            a watch asked to resume from history that is gone
        ├── LeaseNotFound        keep-alive or attach to an expired/unknown lease
        └── NotLeader            a manager that is not (or no longer) the leader tried to act
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ClusterError(Exception):
    """Base of every clustercore error."""


class ValidationError(ClusterError, ValueError):
    """A definition is malformed. ``field`` is a dotted path such as ``capacity.memory``."""

    def __init__(self, kind: str, field: str, problem: str, value: Any = None) -> None:
        self.kind = kind
        self.field = field
        self.problem = problem
        self.value = value
        super().__init__(f"invalid {kind}: field {field!r}: {problem} (got {value!r})")


class InvalidTransition(ClusterError):
    """``event`` is not accepted by ``host`` in ``state``."""

    def __init__(self, host: str, state: object, event: object, allowed: Sequence[object] = ()) -> None:
        self.host = host
        self.state = state
        self.event = event
        self.allowed = tuple(allowed)
        names = ", ".join(sorted(str(a) for a in self.allowed)) or "none"
        super().__init__(
            f"host {host!r} in state {state} does not accept event {event} (accepted here: {names})"
        )


class InvalidPlacementTransition(ClusterError):
    """``event`` is not accepted by the placement of ``workload`` in ``state`` (None: not placed)."""

    def __init__(self, workload: str, state: object, event: object, allowed: Sequence[object] = ()) -> None:
        self.workload = workload
        self.state = state
        self.event = event
        self.allowed = tuple(allowed)
        names = ", ".join(sorted(str(a) for a in self.allowed)) or "none"
        super().__init__(f"placement of {workload!r} in state {state or 'unplaced'} does not accept event {event}"
                         f" (accepted here: {names})")


class UnknownHost(ClusterError, KeyError):
    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(f"no host named {host!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownWorkload(ClusterError, KeyError):
    def __init__(self, workload: str) -> None:
        self.workload = workload
        super().__init__(f"no workload named {workload!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class HostExists(ClusterError):
    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(f"a host named {host!r} is already registered")


class WorkloadExists(ClusterError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a workload named {name!r} exists already")


class InUse(ClusterError):
    """``what`` (a volume, a storage domain) cannot go: ``users`` still need it."""

    def __init__(self, what: str, users: Sequence[str]) -> None:
        self.what = what
        self.users = tuple(users)
        super().__init__(f"{what} is in use by {', '.join(self.users)}")


class HostBusy(ClusterError):
    """An operation needs an empty host but ``workloads`` still run on it."""

    def __init__(self, host: str, action: str, workloads: Sequence[str]) -> None:
        self.host = host
        self.action = action
        self.workloads = tuple(workloads)
        shown = ", ".join(self.workloads[:5]) + (" ..." if len(self.workloads) > 5 else "")
        super().__init__(
            f"cannot {action} host {host!r}: {len(self.workloads)} workload(s) still placed on it ({shown})"
        )


class MaintenanceVetoed(ClusterError):
    def __init__(self, host: str, vetoes: Mapping[str, str]) -> None:
        self.host = host
        self.vetoes = dict(vetoes)
        why = "; ".join(f"{flavor}: {reason}" for flavor, reason in sorted(self.vetoes.items()))
        super().__init__(f"host {host!r} cannot enter maintenance: {why}")


class NoValidHost(ClusterError):
    """No host passed the filters. ``reasons`` maps a reason to how many hosts it excluded."""

    def __init__(self, workload: str, total: int, reasons: Mapping[str, int]) -> None:
        self.workload = workload
        self.total = total
        self.reasons = dict(reasons)
        parts = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        super().__init__(f"no valid host for {workload!r}: 0/{total} hosts: {parts or 'no hosts'}")


class FencingFailed(ClusterError):
    """No fencing level confirmed ``host`` powered off. ``attempts`` lists each try
    (level, device, action, outcome), never a credential."""

    def __init__(self, host: str, attempts: Sequence[str]) -> None:
        self.host = host
        self.attempts = tuple(attempts)
        super().__init__(f"fencing {host} failed after {len(self.attempts)} attempt(s): " + "; ".join(self.attempts))


class FlavorError(ClusterError):
    """A flavor failed while clustercore called it."""

    def __init__(self, flavor: str, hook: str, problem: str) -> None:
        self.flavor = flavor
        self.hook = hook
        self.problem = problem
        super().__init__(f"flavor {flavor!r} failed in {hook}: {problem}")


class UnknownFlavor(FlavorError):
    def __init__(self, flavor: str, loaded: Sequence[str]) -> None:
        self.loaded = tuple(loaded)
        super().__init__(flavor, "driver lookup", f"no driver registered (loaded: {', '.join(loaded) or 'none'})")


class ConformanceError(FlavorError):
    """``check_flavor`` failures; ``failures`` lists every broken promise."""

    def __init__(self, flavor: str, failures: Sequence[str]) -> None:
        self.failures = tuple(failures)
        listed = "\n  - ".join(self.failures)
        super().__init__(flavor, "check_flavor", f"{len(self.failures)} conformance failure(s):\n  - {listed}")


class StoreError(ClusterError):
    """Base of the state store's errors."""


class StoreAccessError(StoreError):
    """The store refused this process: TLS (a CA that does not verify it, a client
    certificate it does not accept), authentication or permission. A matter of
    configuration, not an outage: waiting does not mend it."""


class Conflict(StoreError):
    """Compare-and-swap lost: the key is at ``actual`` (0 = absent), the writer expected ``expected``."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(f"conflict on {key!r}: expected revision {expected}, store has {actual}")


class KeyNotFound(StoreError, KeyError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no key {key!r} in the store")

    def __str__(self) -> str:
        return str(self.args[0])


class CorruptEntry(StoreError):
    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"corrupt store entry {key!r}: {problem}")


class Compacted(StoreError):
    def __init__(self, requested: int, oldest: int) -> None:
        self.requested = requested
        self.oldest = oldest
        super().__init__(f"revision {requested} is compacted; oldest kept is {oldest}")


class LeaseNotFound(StoreError):
    def __init__(self, lease: int) -> None:
        self.lease = lease
        super().__init__(f"lease {lease} is unknown or expired")


class NotLeader(StoreError):
    """An acting write or action by a manager that does not hold the leadership (any more):
    ``manager`` is who tried, ``token`` the leadership it thought it had (0 = none)."""

    def __init__(self, manager: str, token: int, leader: str | None = None) -> None:
        self.manager = manager
        self.token = token
        self.leader = leader
        if leader is not None:
            super().__init__(f"{manager} may not reconcile: manager {leader} leads this store "
                             "(use clustercore manager run, or a Manager)")
        else:
            super().__init__(f"manager {manager} is not the leader (its token {token} is stale)")
