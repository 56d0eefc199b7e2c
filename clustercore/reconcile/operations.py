"""The leader carries out the operations operators requested (:mod:`clustercore.operations`).

Each pass, for every operation not done yet, oldest first: a Pending one is started (its
work launched on the jobs executor, or the host transition asked), a Running one is
followed (progress and step written back when they change) and finished when its work
is. Work that runs long in a driver (moves, starts, stops, deletes, a rolling upgrade)
runs as a job off the pass; maintenance is followed through the host's own state (the
drain reconciler does the moves), so it needs no job at all.

A new leader finds the operations a dead one left Running and takes them over from what
the store shows: a maintenance by its host's state; a move, start, stop or delete by where
the workload is (finished already, or launched again); an upgrade from its stored status.
Fencing the controller does is recorded as ``fence`` operations too, so an operator sees it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any, Protocol

import attrs

from clustercore.errors import ClusterError, Conflict, NotLeader
from clustercore.model import HostState, Placement, PlacementState
from clustercore.operations import KINDS, PREFIX, Operation, Operations, OpEvent, OpState, new_id, transition
from clustercore.reconcile.observe import View
from clustercore.state import ClusterState, Informer, Versioned
from clustercore.upgrade import RollingUpgrade

log = logging.getLogger(__name__)
S = HostState
V = OpEvent


class Actions(Protocol):
    """What operations do, as the operator's API does it (the Cluster)."""

    def start_maintenance(self, name: str, stop_unmovable: bool = False) -> Any: ...
    def cancel_maintenance(self, name: str) -> Any: ...
    def start(self, name: str) -> Placement: ...
    def stop(self, name: str, force: bool = False) -> None: ...
    def delete(self, name: str) -> None: ...
    def migrate(self, name: str, target: str | None = None) -> Placement: ...
    def rolling_upgrade(self, hosts: Sequence[str] | None = None) -> RollingUpgrade: ...
    def resume_upgrade(self) -> RollingUpgrade | None: ...


@attrs.define
class Job:
    future: Future[Any]
    cancel: threading.Event


class OperationsRunner:
    def __init__(self, state: ClusterState, operations: Operations, jobs: Executor, may_act: Callable[[], bool],
                 actions: Actions | None = None) -> None:
        self.state, self.operations, self.jobs, self.may_act = state, operations, jobs, may_act
        self.actions = actions
        self._jobs: dict[str, Job] = {}
        self._deposed: dict[str, Job] = {}  # jobs of an earlier leadership of this manager, maybe still running
        self._upgrades: dict[str, RollingUpgrade] = {}
        self._informer = Informer(state.store, PREFIX)
        self._open: dict[str, Versioned[Operation]] = {}  # the operations not done, from the watch

    def _follow(self, errors: list[str]) -> None:
        changed, deleted = self._informer.sync()
        for op_id in deleted:
            self._open.pop(op_id, None)
        for op_id in changed:
            kv = self._informer.items[op_id]
            try:
                op = Operation.from_dict(json.loads(kv.value))
            except (ValueError, ClusterError) as exc:
                errors.append(f"{PREFIX}{op_id}: {exc}")
                continue
            if op.state.done:
                self._open.pop(op_id, None)
            else:
                self._open[op_id] = Versioned(op, kv.mod_revision)

    def sync(self, view: View, errors: list[str]) -> None:
        self._follow(errors)  # followers too: a new leader knows what is open at once
        for op_id in [i for i, job in self._deposed.items() if job.future.done() and i not in self._open]:
            del self._deposed[op_id]
        if not self.may_act():
            return
        self._record_fencing(view)
        pending = sorted(self._open.values(), key=lambda v: (v.value.created, v.value.id))
        for current in pending:
            if not self.may_act():
                return
            try:
                self._advance(current, view)
            except Conflict:
                continue  # someone (a cancel) changed it meanwhile: next pass
            except NotLeader:
                raise
            except ClusterError as exc:
                errors.append(f"operation {current.value.id} ({current.value.kind}): {exc}")

    # ------------------------------------------------------------------ one operation

    def _advance(self, current: Versioned[Operation], view: View) -> None:
        op = current.value
        if op.kind == "fence":
            self._follow_fence(current, view)
            return
        if self.actions is None:
            return  # a controller without an operator's API (tests of the reconcilers alone)
        if op.state is OpState.PENDING:
            if op.cancel:
                self._end(current, V.CANCEL, step="cancelled before it began")
            else:
                self._begin(current, view)
            return
        old = self._deposed.get(op.id)
        if old is not None:
            if not old.future.done():
                return  # its job from before this manager was deposed still runs here: never a second one
            del self._deposed[op.id]  # ended (its writes perhaps refused): the store says what is left to do
        job = self._jobs.get(op.id)
        if op.kind == "maintenance":
            self._follow_maintenance(current, view)
        elif op.kind == "upgrade":
            self._follow_upgrade(current, view)
        elif job is not None:
            self._follow_job(current, job, view)
        else:
            self._take_over(current, view)

    def _begin(self, current: Versioned[Operation], view: View) -> None:
        op = current.value
        if op.kind == "maintenance":
            host = op.target
            placed = sum(1 for p in self.state.placements().values() if p.value.host == host)
            try:
                assert self.actions is not None
                self.actions.start_maintenance(host, bool(op.params.get("stop_unmovable", False)))
            except ClusterError as exc:
                self._end(current, V.FAIL, error=str(exc))
                return
            self._put(current, transition(op, V.RUN, view.now, step=f"moving {placed} workload(s) off {host}",
                                          memo={"placed": placed}))
            return
        if op.kind == "upgrade":
            hosts = op.params.get("hosts")
            try:
                assert self.actions is not None
                self._upgrades[op.id] = self.actions.rolling_upgrade(list(hosts) if hosts else None)
            except ClusterError as exc:
                self._end(current, V.FAIL, error=str(exc))
                return
            self._put(current, transition(op, V.RUN, view.now, step=self._what(op)))
            return
        running = self._put(current, transition(op, V.RUN, view.now, step=self._what(op),
                                                memo=self._memo(op)))
        self._launch(running.value)
        job = self._jobs[op.id]
        if job.future.done():  # an inline executor ran it already
            self._follow_job(running, job, view)

    def _what(self, op: Operation) -> str:
        target = op.params.get("target")
        return {"migrate": f"moving {op.target}" + (f" to {target}" if target else ""),
                "start": f"starting {op.target}", "stop": f"stopping {op.target}",
                "delete": f"deleting {op.target}", "upgrade": "upgrading hosts one at a time"}.get(op.kind, op.kind)

    def _memo(self, op: Operation) -> dict[str, Any]:
        placement = self.state.placement(op.target) if KINDS[op.kind].target == "workload" else None
        return {"source": placement.value.host} if placement is not None else {}

    def _launch(self, op: Operation) -> None:
        assert self.actions is not None
        actions, cancel = self.actions, threading.Event()
        params = op.params
        work: Callable[[], Any]
        if op.kind == "migrate":
            target = params.get("target")
            work = lambda: actions.migrate(op.target, str(target) if target else None).host  # noqa: E731
        elif op.kind == "start":
            work = lambda: actions.start(op.target).host  # noqa: E731
        elif op.kind == "stop":
            work = lambda: actions.stop(op.target, bool(params.get("force", False)))  # noqa: E731
        elif op.kind == "delete":
            work = lambda: actions.delete(op.target)  # noqa: E731
        else:
            raise ValueError(f"no job for {op.kind}")
        self._jobs[op.id] = Job(self.jobs.submit(work), cancel)

    def _follow_job(self, current: Versioned[Operation], job: Job, view: View) -> None:
        op = current.value
        if op.cancel and not job.cancel.is_set():
            job.cancel.set()
        if not job.future.done():
            return
        del self._jobs[op.id]
        error = job.future.exception()
        if error is not None:
            self._end(current, V.CANCEL if op.cancel else V.FAIL, error=f"{type(error).__name__}: {error}")
        else:
            self._end(current, V.SUCCEED, result=str(job.future.result() or "done"))

    def _follow_upgrade(self, current: Versioned[Operation], view: View) -> None:
        """One step of the rolling upgrade per pass, as a job (a flavor's upgrade hook may
        take long); a new leader resumes it from the status in the store."""
        op = current.value
        job = self._jobs.get(op.id)
        if job is not None:
            if not job.future.done():
                return
            del self._jobs[op.id]
            if job.future.exception() is not None:
                self._end(current, V.FAIL, error=str(job.future.exception()))
                return
        upgrade = self._upgrades.get(op.id)
        if upgrade is None:
            assert self.actions is not None
            upgrade = self._upgrades[op.id] = self.actions.resume_upgrade()  # type: ignore[assignment]
            if upgrade is None:
                self._end(current, V.FAIL, error="the upgrade's status is gone")
                return
        status = upgrade.status
        if op.cancel and status.phase in ("pending", "maintenance") and not status.finished:
            status = upgrade.cancel(f"cancelled by {op.step.removeprefix('cancel asked by ') or 'operator'}")
            self._upgrades.pop(op.id)
            self._end(current, V.CANCEL, step=f"stopped before {status.current or 'the next host'}")
            return
        if status.finished:
            self._upgrades.pop(op.id)
            if status.phase == "failed":
                self._end(current, V.FAIL, error=status.failure)
            else:
                self._end(current, V.SUCCEED, result=f"{len(status.done)} host(s) upgraded")
            return
        step = f"{status.phase} {status.current or ''}".strip()
        if (status.percent, step) != (op.progress, op.step) and not op.cancel:
            current = self._put(current, attrs.evolve(op, progress=status.percent, step=step, updated=view.now))
        self._jobs[op.id] = Job(self.jobs.submit(upgrade.step), threading.Event())

    def _take_over(self, current: Versioned[Operation], view: View) -> None:
        """A Running operation whose job this manager does not hold (its leader died)."""
        op = current.value
        placement = self.state.placement(op.target)
        workloads = self.state.workloads()
        if placement is not None and placement.value.state in (PlacementState.MIGRATING, PlacementState.STARTING):
            return  # a move or start under way when its manager died: the settle reconciler ends it first
        done = {"migrate": placement is not None and placement.value.state is PlacementState.RUNNING
                and placement.value.host != op.memo.get("source"),
                "start": placement is not None and placement.value.state is PlacementState.RUNNING,
                "stop": placement is None, "delete": op.target not in workloads}[op.kind]
        if done:
            self._end(current, V.SUCCEED, result=placement.value.host if placement is not None else "done",
                      step="finished under the previous leader")
        elif op.kind in ("migrate", "start") and op.target not in workloads:
            self._end(current, V.FAIL, error=f"workload {op.target} is gone")
        else:
            log.info("operation %s (%s %s): taken over, launched again", op.id, op.kind, op.target)
            self._launch(op)

    def _follow_maintenance(self, current: Versioned[Operation], view: View) -> None:
        op = current.value
        host = view.hosts.get(op.target)
        if host is None:
            self._end(current, V.FAIL, error=f"host {op.target} is gone")
            return
        state = host.value.state
        if state is S.MAINTENANCE:
            self._end(current, V.SUCCEED, result=f"{op.target} in maintenance")
        elif state is S.PREPARING_FOR_MAINTENANCE:
            if op.cancel:
                assert self.actions is not None
                self.actions.cancel_maintenance(op.target)
                return
            left = sum(1 for p in self.state.placements().values() if p.value.host == op.target)
            placed = int(op.memo.get("placed", left)) or 1
            progress = round(100.0 * max(placed - left, 0) / placed, 1) if left else 99.0
            step = f"{left} workload(s) left on {op.target}" if left else "preparing the host"
            if (progress, step) != (op.progress, op.step):
                self._put(current, attrs.evolve(op, progress=progress, step=step, updated=view.now))
        elif op.cancel:
            self._end(current, V.CANCEL, step=f"{op.target} is {state.value}: maintenance cancelled")
        else:
            self._end(current, V.FAIL, error=f"{op.target} is {state.value}: {host.value.reason}")

    # ------------------------------------------------------------------ fencing, as operations

    def _record_fencing(self, view: View) -> None:
        fencing = {n for n in view.unsettled if n in view.hosts and view.hosts[n].value.state is S.FENCING}
        if not fencing:
            return
        followed = {o.value.target for o in self._open.values() if o.value.kind == "fence"}
        for name in sorted(fencing - followed):
            op = Operation(new_id(), "fence", name, state=OpState.RUNNING, step=f"fencing {name}",
                           by="controller", created=view.now, updated=view.now)
            self.operations.request(op)
            self._follow([])

    def _follow_fence(self, current: Versioned[Operation], view: View) -> None:
        op = current.value
        host = view.hosts.get(op.target)
        state = host.value.state if host is not None else None
        if state is S.FENCING:
            return
        if state is S.DOWN:
            self._end(current, V.SUCCEED, result=f"{op.target} powered off")
        else:
            self._end(current, V.FAIL, error=f"{op.target} is {state.value if state else 'gone'}"
                      + (f": {host.value.reason}" if host is not None else ""))

    # ------------------------------------------------------------------ writing

    def _put(self, current: Versioned[Operation], new: Operation) -> Versioned[Operation]:
        return self.operations.put(current, new)

    def _end(self, current: Versioned[Operation], event: OpEvent, **changes: Any) -> None:
        self._put(current, transition(current.value, event, self.operations.now(), **changes))

    def depose(self) -> None:
        """No longer the leader: forget the jobs (their writes are refused meanwhile); the
        next leader takes the operations over. Should that be this manager again while one
        of them still runs, the operation waits for it to end before taking it over."""
        for op_id, job in self._jobs.items():
            job.cancel.set()
            self._deposed[op_id] = job
        self._jobs.clear()
        self._upgrades.clear()

