"""Host maintenance: move every workload away, then hold the host in Maintenance.

``Up --prepare--> PreparingForMaintenance --(drained)--> Maintenance --activate--> Initializing``

``plan_drain`` decides, purely, where each workload of the host goes: highest priority and
largest first, each placed by the scheduler on the other hosts with the moves already
planned counted as reserved. The controller carries the plan out through a
:class:`Drainer`: up to ``DrainPolicy.parallel`` moves of one host at a time, each through
the workload's driver (live migration where the flavor has it, else stop and start), the
placement moving in the store only once the driver reports success.

A failed move is retried on another host (the failed target is avoided for that
workload); after ``max_attempts`` failures of one workload the drain gives up and the host
goes back to Up, with the report in the event log. Cancelling (the operator's
``cancel_maintenance``) stops new moves at once; moves already running finish (or fail)
on their own, so no workload is lost or runs twice. Moves run on the executor the
controller was given: inline (one after another, inside the pass: deterministic, for
simulations and tests) or a thread pool (real migrations in parallel).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from typing import ParamSpec, TypeVar

import attrs

from clustercore.errors import NoValidHost
from clustercore.model import Workload
from clustercore.scheduling.engine import HostView, Scheduler

P = ParamSpec("P")
T = TypeVar("T")


@attrs.frozen
class Move:
    workload: str
    source: str
    target: str


@attrs.frozen
class DrainPlan:
    """Moves in execution order, and the workloads no host can take (with why)."""

    host: str
    moves: tuple[Move, ...]
    stuck: tuple[NoValidHost, ...] = ()


def plan_drain(host: str, scheduler: Scheduler) -> DrainPlan:
    """Where every workload on ``host`` should go, reserving each target on ``scheduler``
    so later moves see earlier ones. ``host`` must not be schedulable (it is
    PreparingForMaintenance), so it is never its own target."""
    snap = scheduler.snapshot
    index = snap.index.get(host)
    if index is None:
        return DrainPlan(host, ())
    if snap.schedulable[index]:
        raise ValueError(f"host {host!r} is still schedulable: it would be a target of its own drain")
    ordered: list[Workload] = sorted(
        snap.workloads_on(index), key=lambda w: (-w.priority, -w.requests.memory, -w.requests.cpu, w.name)
    )
    moves, stuck = [], []
    for workload in ordered:
        try:
            moves.append(Move(workload.name, host, scheduler.schedule(workload)))
        except NoValidHost as exc:
            stuck.append(exc)
    return DrainPlan(host, tuple(moves), tuple(stuck))


@attrs.frozen
class DrainPolicy:
    """``parallel``: moves of one host in flight at once; ``max_attempts``: failed moves of
    one workload before the drain gives up (the host returns to Up)."""

    parallel: int = 2
    max_attempts: int = 3


@attrs.frozen
class AvoidFilter:
    """Keeps a workload off the hosts where moving it failed during this drain (or, with
    another ``reason``, off any hosts a caller names)."""

    avoid: Mapping[str, frozenset[str]]
    name: str = "drain-avoid"
    reason: str = "a move there failed during this drain"

    def check(self, workload: Workload, view: HostView) -> str | None:
        return self.reason if view.host.name in self.avoid.get(workload.name, ()) else None


@attrs.frozen
class MoveOutcome:
    move: Move
    error: str | None = None


class InlineExecutor(Executor):
    """Runs each submitted call at once, in the caller's thread (deterministic drains)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the outcome is read from the future
            future.set_exception(exc)
        return future


class Drainer:
    """The moves of every draining host: in flight, failed, attempts per workload."""

    def __init__(self, executor: Executor | None = None) -> None:
        self.executor = executor or InlineExecutor()
        self._lock = threading.Lock()
        self._flight: dict[str, dict[str, tuple[Move, Future[object]]]] = {}
        self.attempts: dict[str, dict[str, int]] = {}
        self.avoid: dict[str, dict[str, frozenset[str]]] = {}

    def in_flight(self, host: str) -> set[str]:
        with self._lock:
            return set(self._flight.get(host, {}))

    def moving(self) -> set[str]:
        """Every workload with a move in flight, whatever its host."""
        with self._lock:
            return {name for flight in self._flight.values() for name in flight}

    def launch(self, move: Move, run: Callable[[Move], object]) -> None:
        future = self.executor.submit(run, move)
        with self._lock:
            self._flight.setdefault(move.source, {})[move.workload] = (move, future)

    def collect(self, host: str) -> list[MoveOutcome]:
        """Moves of ``host`` that ended since the last call (failures counted and avoided)."""
        out = []
        with self._lock:
            flight = self._flight.get(host, {})
            for name, (move, future) in list(flight.items()):
                if not future.done():
                    continue
                del flight[name]
                error = future.exception()
                if error is not None:
                    attempts = self.attempts.setdefault(host, {})
                    attempts[name] = attempts.get(name, 0) + 1
                    avoid = self.avoid.setdefault(host, {})
                    avoid[name] = avoid.get(name, frozenset()) | {move.target}
                out.append(MoveOutcome(move, None if error is None else f"{type(error).__name__}: {error}"))
        return out

    def forget(self, host: str) -> None:
        """The drain of ``host`` ended (done, given up or cancelled): start afresh next time."""
        with self._lock:
            self.attempts.pop(host, None)
            self.avoid.pop(host, None)

    def cancel(self) -> int:
        """Drop the moves not yet started (a deposed leader); returns how many. Moves
        already running end on their own: their writes are refused by the leader guard."""
        with self._lock:
            futures = [f for flight in self._flight.values() for _, f in flight.values()]
        return sum(1 for f in futures if f.cancel())

    def wait(self, timeout: float | None = None) -> None:
        """Until no move is in flight (tests, shutdown)."""
        with self._lock:
            futures = [f for flight in self._flight.values() for _, f in flight.values()]
        for future in futures:
            future.exception(timeout)


def moves_to_launch(plan: DrainPlan, in_flight: set[str], policy: DrainPolicy) -> list[Move]:
    """The next moves of a plan: those not already moving, up to the free slots."""
    free = max(policy.parallel - len(in_flight), 0)
    return [m for m in plan.moves if m.workload not in in_flight][:free]

