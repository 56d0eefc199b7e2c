"""The placement state machine: the table, the pure transition, and "fail" in one place."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustercore.errors import InvalidPlacementTransition
from clustercore.model import Placement, PlacementState
from clustercore.placements import TRANSITIONS, PlacementEvent, fail_host, transition
from clustercore.state import Versioned

P = PlacementState
E = PlacementEvent
HOSTS = ("h1", "h2", "h3")


def test_every_state_is_reachable_and_every_event_is_used() -> None:
    sources = {s for s, _ in TRANSITIONS}
    targets = set(TRANSITIONS.values())
    assert {*P, None} == sources | targets
    assert {e for _, e in TRANSITIONS} == set(E)


def test_an_undeclared_pair_raises_with_its_data() -> None:
    running = Placement("w", "h1", P.RUNNING)
    with pytest.raises(InvalidPlacementTransition) as info:
        transition(running, E.RESTART, 1.0, host="h2")
    assert (info.value.workload, info.value.state, info.value.event) == ("w", P.RUNNING, E.RESTART)
    assert E.MIGRATE in info.value.allowed


def test_a_failing_move_keeps_its_target_only_when_asked() -> None:
    moving = Placement("w", "h1", P.MIGRATING, 0.0, "h2")
    kept = transition(moving, E.FAIL, 5.0, "h1 is down", keep_target=True)
    assert kept is not None and (kept.state, kept.host, kept.target, kept.since) == (P.FAILED, "h1", "h2", 5.0)
    cleared = transition(moving, E.FAIL, 5.0, "runs nowhere")
    assert cleared is not None and cleared.target is None


def test_fail_host_fails_every_placement_of_the_host_but_those_failed_already() -> None:
    placements = {
        "a": Versioned(Placement("a", "h1", P.RUNNING), 3),
        "b": Versioned(Placement("b", "h1", P.MIGRATING, 0.0, "h2"), 4),
        "c": Versioned(Placement("c", "h1", P.FAILED), 5),
        "d": Versioned(Placement("d", "h2", P.RUNNING), 6),
        "e": Versioned(Placement("e", "h1", P.STARTING), 7),
    }
    failed = {new.workload: (current.revision, new) for current, new in fail_host(placements, "h1", 9.0, "down")}
    assert set(failed) == {"a", "b", "e"}
    assert all(new.state is P.FAILED and new.since == 9.0 and new.reason == "down" for _, new in failed.values())
    assert failed["b"][1].target == "h2", "a move's target is asked before any restart"
    assert failed["a"][0] == 3


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(list(E)), st.sampled_from(HOSTS)), max_size=40))
def test_random_events_never_reach_an_undeclared_state(events: list[tuple[PlacementEvent, str]]) -> None:
    p: Placement | None = None
    for now, (event, host) in enumerate(events):
        state = p.state if p is not None else None
        declared = (state, event) in TRANSITIONS
        target = next(h for h in HOSTS if p is None or h != p.host)
        try:
            new = transition(p, event, float(now), workload="w", host=host, target=target)
        except InvalidPlacementTransition:
            assert not declared
            continue
        assert declared
        assert (new.state if new is not None else None) is TRANSITIONS[(state, event)]
        if new is not None:
            assert new.workload == "w" and new.since == float(now)
            assert (new.target is not None) == (new.state is P.MIGRATING) or new.state is P.FAILED
            assert new.target != new.host
        p = new
