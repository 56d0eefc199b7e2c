"""Operations: long work asked of the cluster, carried out by the leader, followed by anyone.

An operator (through the API, the CLI or Python) *requests* an operation: it is written to
the store as ``operations/ID``, Pending, and the leading manager carries it out (its
operations reconciler, :mod:`clustercore.reconcile.operations`), so the caller needs no
access to the hosts. Its state, progress percent and current step are written back as it
goes; a new leader takes over the operations a dead one left (they live in the store).

Kinds (:data:`KINDS`: what each targets, and whether it can be cancelled)::

    maintenance  host      drain it into Maintenance (param stop_unmovable)   cancellable
    migrate      workload  move it (param target: a host, or the scheduler's) cancellable*
    start        workload  place and start it
    stop         workload  stop it (param force)
    delete       workload  stop and forget it (its own volumes too, unless kept)
    upgrade      cluster   rolling upgrade (param hosts: the order, or least loaded first)  cancellable
    fence        host      recorded by the controller when it fences a host (not requestable)

(*) while its driver can abort a move under way (the virt flavor can).

The state machine, as data (:data:`TRANSITIONS`)::

    Pending  --run-->     Running   --succeed--> Succeeded
    Pending  --cancel-->  Cancelled Running   --fail-->    Failed
    Pending  --fail-->    Failed    Running   --cancel-->  Cancelled

Cancelling is a request too (``cancel`` set on the operation); the leader turns it into
``Cancelled`` once the work has stopped. Everything here is pure: values, the table and
:func:`transition`; :class:`Operations` reads and writes them with compare-and-swap.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from clustercore.errors import ClusterError, Conflict, InvalidTransition, ValidationError
from clustercore.events import Event, EventLog
from clustercore.state import Versioned, encode
from clustercore.store.base import Check, Put, Store
from clustercore.values import EMPTY, NAME_RE, FrozenMap, Reader, frozen_map

PREFIX = "operations/"
ID_RE = re.compile(r"\A[0-9a-f]{32}\Z")


class OpState(enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def done(self) -> bool:
        return self in (OpState.SUCCEEDED, OpState.FAILED, OpState.CANCELLED)

    def __str__(self) -> str:
        return self.value


class OpEvent(enum.Enum):
    RUN = "run"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"


S, V = OpState, OpEvent
TRANSITIONS: dict[tuple[OpState, OpEvent], OpState] = {
    (S.PENDING, V.RUN): S.RUNNING,
    (S.PENDING, V.CANCEL): S.CANCELLED,
    (S.PENDING, V.FAIL): S.FAILED,
    (S.RUNNING, V.SUCCEED): S.SUCCEEDED,
    (S.RUNNING, V.FAIL): S.FAILED,
    (S.RUNNING, V.CANCEL): S.CANCELLED,
}


@attrs.frozen
class Kind:
    name: str
    target: str  # "host", "workload" or "cluster"
    cancellable: bool
    requestable: bool = True


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("maintenance", "host", True), Kind("migrate", "workload", True), Kind("start", "workload", False),
    Kind("stop", "workload", False), Kind("delete", "workload", False), Kind("upgrade", "cluster", True),
    Kind("fence", "host", False, requestable=False))}
PARAMS: dict[str, frozenset[str]] = {"maintenance": frozenset({"stop_unmovable"}), "migrate": frozenset({"target"}),
                                     "stop": frozenset({"force"}), "upgrade": frozenset({"hosts"})}


class InvalidOperationTransition(ClusterError):
    def __init__(self, operation: str, state: OpState, event: OpEvent) -> None:
        self.operation, self.state, self.event = operation, state, event
        super().__init__(f"operation {operation} is {state}: cannot {event.value}")


class UnknownOperation(ClusterError):
    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"no operation {operation!r}")


class NotCancellable(ClusterError):
    def __init__(self, operation: str, kind: str, why: str) -> None:
        self.operation, self.kind, self.why = operation, kind, why
        super().__init__(f"operation {operation} ({kind}) cannot be cancelled: {why}")


@attrs.frozen
class Operation:
    id: str
    kind: str
    target: str
    params: FrozenMap[str, Any] = attrs.field(default=EMPTY, converter=frozen_map)
    state: OpState = OpState.PENDING
    progress: float = 0.0  # percent
    step: str = ""  # what it is doing now
    result: str = ""  # what it achieved (a host, a summary)
    error: str = ""
    by: str = ""  # who asked (a token's name, "controller"...)
    created: float = 0.0
    updated: float = 0.0
    cancel: bool = False  # cancelling was asked for
    memo: FrozenMap[str, Any] = attrs.field(default=EMPTY, converter=frozen_map)  # the runner's notes

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "target": self.target, "params": self.params.thaw(),
                "state": self.state.value, "progress": self.progress, "step": self.step, "result": self.result,
                "error": self.error, "by": self.by, "created": self.created, "updated": self.updated,
                "cancel": self.cancel, "memo": self.memo.thaw()}

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Operation:
        r = Reader("operation", data, path)
        op = cls(r.string("id", pattern=ID_RE), r.string("kind"), r.string("target"), r.mapping("params"),
                 r.enum("state", OpState, OpState.PENDING), r.number("progress", 0.0, minimum=0.0, maximum=100.0),
                 r.string("step", ""), r.string("result", ""), r.string("error", ""), r.string("by", ""),
                 r.number("created", 0.0), r.number("updated", 0.0), r.boolean("cancel", False), r.mapping("memo"))
        r.done()
        return op


def transition(op: Operation, event: OpEvent, now: float, **changes: Any) -> Operation:
    """``op`` after ``event`` (InvalidOperationTransition when the table has no such row),
    with ``changes`` (progress, step, result, error)."""
    target = TRANSITIONS.get((op.state, event))
    if target is None:
        raise InvalidOperationTransition(op.id, op.state, event)
    if target is OpState.SUCCEEDED:
        changes.setdefault("progress", 100.0)
    return attrs.evolve(op, state=target, updated=now, **changes)


def new_id() -> str:
    return uuid.uuid4().hex


def new_operation(kind: str, target: str, params: Mapping[str, Any] | None, by: str, now: float) -> Operation:
    """A Pending operation of a requestable ``kind`` (ValidationError naming the field)."""
    spec = KINDS.get(kind)
    if spec is None or not spec.requestable:
        known = ", ".join(sorted(k for k, v in KINDS.items() if v.requestable))
        raise ValidationError("operation", "kind", f"must be one of {known}", kind)
    if spec.target != "cluster" and not NAME_RE.match(target):
        raise ValidationError("operation", "target", f"must name a {spec.target}", target)
    params = dict(params or {})
    unknown = sorted(set(params) - PARAMS.get(kind, frozenset()))
    if unknown:
        raise ValidationError("operation", f"params.{unknown[0]}", f"unknown for {kind}", params[unknown[0]])
    return Operation(new_id(), kind, target if spec.target != "cluster" else "cluster", params, by=by,
                     created=now, updated=now)


class Operations:
    """Operations in the store: requested, changed (compare-and-swap, with an event when
    the state changes), listed, awaited."""

    def __init__(self, store: Store, events: EventLog, now: Callable[[], float]) -> None:
        self.store, self.events, self.now = store, events, now

    def get(self, op_id: str) -> Versioned[Operation]:
        kv = self.store.get(PREFIX + op_id) if ID_RE.match(op_id) else None
        if kv is None:
            raise UnknownOperation(op_id)
        return Versioned(Operation.from_dict(_json(kv.value)), kv.mod_revision)

    def list(self) -> dict[str, Versioned[Operation]]:
        out = {}
        for kv in self.store.list(PREFIX):
            try:
                op = Operation.from_dict(_json(kv.value))
            except (ValueError, ValidationError):
                continue  # a corrupt entry is skipped, as the other listings do
            out[op.id] = Versioned(op, kv.mod_revision)
        return out

    def request(self, op: Operation) -> Operation:
        """Write a new operation (Pending), with an event naming who asked."""
        self.store.txn([Check(PREFIX + op.id, 0)], [
            Put(PREFIX + op.id, encode(op)),
            self.events.put_op(Event(op.created, f"operation/{op.id}", "requested",
                                     f"{op.kind} {op.target} by {op.by or 'unknown'}", "", op.state.value))])
        return op

    def put(self, current: Versioned[Operation], new: Operation) -> Versioned[Operation]:
        """Replace ``current`` by ``new`` (Conflict when another writer changed it first)."""
        ops = [Put(PREFIX + new.id, encode(new))]
        if new.state is not current.value.state:
            ops.append(self.events.put_op(Event(new.updated, f"operation/{new.id}", new.state.value.lower(),
                                                new.error or new.result or new.step, current.value.state.value,
                                                new.state.value)))
        revision = self.store.txn([Check(PREFIX + new.id, current.revision)], ops)
        return Versioned(new, revision)

    def ask_cancel(self, op_id: str, by: str = "") -> Operation:
        """Ask for the operation to be cancelled (the leader stops it); NotCancellable."""
        for _ in range(3):
            current = self.get(op_id)
            op = current.value
            if op.state.done:
                raise NotCancellable(op_id, op.kind, f"it is {op.state} already")
            if not KINDS[op.kind].cancellable:
                raise NotCancellable(op_id, op.kind, "this kind of work cannot be stopped half-way")
            try:
                return self.put(current, attrs.evolve(op, cancel=True, updated=self.now(),
                                                      step=f"cancel asked by {by or 'unknown'}")).value
            except Conflict:
                continue
        raise Conflict(PREFIX + op_id, 0, 0)

    def wait(self, op_id: str, timeout: float, poll: float = 0.2) -> Operation:
        """The operation once it is done, or as it is after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            op = self.get(op_id).value
            if op.state.done or time.monotonic() >= deadline:
                return op
            time.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))


class OperationRequests:
    """The operator's calls on operations (a mixin of :class:`~clustercore.cluster.Cluster`):
    the work is done by whichever manager leads, not by the caller."""

    store: Store
    events: EventLog
    clock: Any
    if TYPE_CHECKING:  # the Cluster's own
        def hosts(self) -> Mapping[str, Any]: ...
        def workloads(self) -> Mapping[str, Any]: ...
        def cancel_maintenance(self, name: str) -> Any: ...

    @property
    def ops(self) -> Operations:
        return Operations(self.store, self.events, self.clock.now)

    def request(self, kind: str, target: str = "cluster", params: Mapping[str, Any] | None = None,
                by: str = "") -> Operation:
        """Ask for long work (see :data:`KINDS`); the leading manager carries it out. The
        target must exist (ValidationError naming it); returns the Pending operation."""
        op = new_operation(kind, target, params, by, self.clock.now())
        where = KINDS[kind].target
        known = self.hosts() if where == "host" else self.workloads() if where == "workload" else None
        if known is not None and target not in known:
            raise ValidationError("operation", "target", f"no such {where}", target)
        return self.ops.request(op)

    def operations(self) -> dict[str, Operation]:
        return {k: v.value for k, v in self.ops.list().items()}

    def operation(self, op_id: str) -> Operation:
        return self.ops.get(op_id).value

    def cancel_operation(self, op_id: str, by: str = "") -> Operation:
        """Ask the leader to stop the operation (NotCancellable when it cannot be). A
        maintenance is cancelled here and now (a host transition: no new move starts after
        this returns; moves under way finish); the leader ends the operation."""
        op = self.ops.ask_cancel(op_id, by)
        if op.kind == "maintenance" and op.state is OpState.RUNNING:
            with contextlib.suppress(InvalidTransition):  # drained meanwhile, or given up: the leader ends it
                self.cancel_maintenance(op.target)
        return op

    def wait_operation(self, op_id: str, timeout: float = 60.0) -> Operation:
        """The operation once done (the leader must be stepping meanwhile), or as it is
        after ``timeout`` seconds."""
        return self.ops.wait(op_id, timeout)


def _json(value: bytes) -> object:
    return json.loads(value)
