"""The placement state machine: the transition table as data, and pure decisions on it.

A placement binds a workload to a host. ``transition(placement, event, now, ...)`` is the
only way one changes; a pair ``(state, event)`` that is not in :data:`TRANSITIONS` raises
:class:`~clustercore.errors.InvalidPlacementTransition`. ``None`` stands for "no placement"
on either side: the workload is defined but placed nowhere. The table::

    (none)    --PLACE(host)-->     Starting
    Starting  --STARTED-->         Running
    Starting  --START_FAILED-->    (none)        an operator's start that the driver refused
    Running   --MIGRATE(target)--> Migrating
    Migrating --MIGRATED-->        Running on the target
    Migrating --MIGRATION_FAILED-> Running on the source
    Starting, Running, Migrating --FAIL--> Failed (its host went down or rebooted, or it runs nowhere)
    Failed    --FOUND(host)-->     Running       it runs after all (a move that had finished)
    Failed    --CLEAR_TARGET-->    Failed        the move's target does not run it
    Failed    --RESTART(host)-->   Starting      an HA restart elsewhere
    Starting  --RESTART_FAILED-->  Failed        the restart did not happen; retried with backoff
    Starting, Running, Failed --STOP--> (none)   stopped by an operator
    Failed    --LOSE-->            (none)        not HA: lost with its host

:func:`fail_host` is the one home of "this host's placements fail": the host went Down,
rebooted (a new boot id), or a settled move found the workload nowhere.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs

from clustercore.errors import InvalidPlacementTransition
from clustercore.model import Placement, PlacementState
from clustercore.state import Versioned

P = PlacementState


class PlacementEvent(enum.Enum):
    PLACE = "place"
    STARTED = "started"
    START_FAILED = "start-failed"
    MIGRATE = "migrate"
    MIGRATED = "migrated"
    MIGRATION_FAILED = "migration-failed"
    FAIL = "fail"
    FOUND = "found"
    CLEAR_TARGET = "clear-target"
    RESTART = "restart"
    RESTART_FAILED = "restart-failed"
    STOP = "stop"
    LOSE = "lose"

    def __str__(self) -> str:
        return self.value


E = PlacementEvent
Row = tuple[PlacementEvent, tuple[PlacementState | None, ...], PlacementState | None]

# (event, sources, target): the whole state machine, one row an edge family.
_ROWS: tuple[Row, ...] = (
    (E.PLACE, (None,), P.STARTING),
    (E.STARTED, (P.STARTING,), P.RUNNING),
    (E.START_FAILED, (P.STARTING,), None),
    (E.MIGRATE, (P.RUNNING,), P.MIGRATING),
    (E.MIGRATED, (P.MIGRATING,), P.RUNNING),
    (E.MIGRATION_FAILED, (P.MIGRATING,), P.RUNNING),
    (E.FAIL, (P.STARTING, P.RUNNING, P.MIGRATING), P.FAILED),
    (E.FOUND, (P.FAILED,), P.RUNNING),
    (E.CLEAR_TARGET, (P.FAILED,), P.FAILED),
    (E.RESTART, (P.FAILED,), P.STARTING),
    (E.RESTART_FAILED, (P.STARTING,), P.FAILED),
    (E.STOP, (P.STARTING, P.RUNNING, P.FAILED), None),
    (E.LOSE, (P.FAILED,), None),
)


def _compile(rows: Iterable[Row]) -> dict[tuple[PlacementState | None, PlacementEvent], PlacementState | None]:
    table: dict[tuple[PlacementState | None, PlacementEvent], PlacementState | None] = {}
    for event, sources, target in rows:
        for source in sources:
            if (source, event) in table:
                raise AssertionError(f"duplicate placement transition {source} --{event}-->")
            table[(source, event)] = target
    return table


TRANSITIONS: Mapping[tuple[PlacementState | None, PlacementEvent], PlacementState | None] = _compile(_ROWS)
#: Events that need a host (PLACE, RESTART, FOUND) or a target (MIGRATE).
_NEEDS_HOST = frozenset({E.PLACE, E.RESTART, E.FOUND})


def allowed_events(state: PlacementState | None) -> tuple[PlacementEvent, ...]:
    return tuple(e for (s, e) in TRANSITIONS if s is state)


def transition(placement: Placement | None, event: PlacementEvent, now: float, reason: str = "", *,
               workload: str = "", host: str | None = None, target: str | None = None,
               keep_target: bool = False) -> Placement | None:
    """The placement after ``event`` at ``now`` (None: no placement any more). Pure.

    ``host`` names where PLACE, RESTART and FOUND put it; ``target`` where MIGRATE moves it;
    ``keep_target`` keeps a failing move's target (the move may have finished: recovery
    asks it before restarting anything)."""
    state = placement.state if placement is not None else None
    name = placement.workload if placement is not None else workload
    if (state, event) not in TRANSITIONS:
        raise InvalidPlacementTransition(name, state, event, allowed_events(state))
    new_state = TRANSITIONS[(state, event)]
    if new_state is None:
        return None
    if event in _NEEDS_HOST and not host:
        raise ValueError(f"{event} of {name!r} needs a host")
    if event is E.PLACE or event is E.RESTART or event is E.FOUND:
        assert host is not None
        return Placement(name, host, new_state, now, None, reason)
    assert placement is not None
    if event is E.MIGRATE:
        if not target or target == placement.host:
            raise ValueError(f"a move of {name!r} needs a target other than {placement.host!r}")
        return attrs.evolve(placement, state=new_state, target=target, since=now, reason=reason)
    if event is E.MIGRATED:
        assert placement.target is not None
        return Placement(name, placement.target, new_state, now, None, reason)
    moving = placement.state is P.MIGRATING
    kept = placement.target if event is E.FAIL and keep_target and moving else None
    if event is E.RESTART_FAILED:  # back on the host it died with
        return attrs.evolve(placement, state=new_state, host=host or placement.host, target=None, since=now,
                            reason=reason)
    return attrs.evolve(placement, state=new_state, target=kept, since=now, reason=reason)


def fail_host(placements: Mapping[str, Versioned[Placement]], host: str, now: float,
              reason: str) -> list[tuple[Versioned[Placement], Placement]]:
    """The placements on ``host`` that fail with it (every one not Failed already), each
    with its Failed value. A move's target is kept: the move may have finished just before
    (recovery asks the target first)."""
    out = []
    for current in placements.values():
        p = current.value
        if p.host == host and p.state is not P.FAILED:
            failed = transition(p, E.FAIL, now, reason, keep_target=True)
            assert failed is not None
            out.append((current, failed))
    return out


def in_flight(placement: Placement) -> bool:
    """Starting or Migrating: an action on it is (or was) under way."""
    return placement.state is P.STARTING or placement.state is P.MIGRATING
