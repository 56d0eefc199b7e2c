"""The host state machine: the table, the pure transition, heartbeat grace periods."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustercore.errors import InvalidTransition, ValidationError
from clustercore.lifecycle import (
    PREVIOUS,
    TRANSITIONS,
    HostEvent,
    LivenessPolicy,
    accepts_workloads,
    allowed_events,
    connectivity_event,
    liveness_event,
    transition,
)
from clustercore.model import Host, HostState, NonOperationalReason

S, E = HostState, HostEvent
NONOP = NonOperationalReason


def host(state: HostState, **kw: object) -> Host:
    return attrs.evolve(Host("h1"), state=state, since=100.0, **kw)  # type: ignore[arg-type]


def test_every_state_is_reachable_from_registration() -> None:
    reached = {S.PENDING_APPROVAL}
    frontier = [S.PENDING_APPROVAL]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state:
                targets = set(HostState) if target is PREVIOUS else {target}
                for t in targets:
                    if isinstance(t, HostState) and t not in reached:
                        reached.add(t)
                        frontier.append(t)
    assert reached == set(HostState)


def test_removed_is_final_and_every_other_state_has_a_way_out() -> None:
    assert allowed_events(S.REMOVED) == ()
    for state in set(HostState) - {S.REMOVED}:
        assert allowed_events(state), state


def test_transition_is_pure_and_stamps_time_and_reason() -> None:
    h = host(S.PENDING_APPROVAL)
    new = transition(h, E.APPROVE, 250.0, "ok")
    assert h.state is S.PENDING_APPROVAL and h.since == 100.0
    assert (new.state, new.since, new.reason) == (S.INSTALLING, 250.0, "ok")


def test_invalid_event_carries_host_state_event_and_what_is_allowed() -> None:
    with pytest.raises(InvalidTransition) as info:
        transition(host(S.MAINTENANCE), E.FENCE, 1.0)
    err = info.value
    assert (err.host, err.state, err.event) == ("h1", S.MAINTENANCE, E.FENCE)
    assert E.ACTIVATE in err.allowed
    assert "Maintenance" in str(err) and "fence" in str(err)


def test_not_operational_needs_a_reason_and_only_auto_reasons_recover() -> None:
    with pytest.raises(ValidationError, match="non_operational"):
        transition(host(S.UP), E.NOT_OPERATIONAL, 1.0)
    cpu = transition(host(S.UP), E.NOT_OPERATIONAL, 1.0, "cpu", NONOP.CPU_INCOMPATIBLE)
    with pytest.raises(InvalidTransition):
        transition(cpu, E.RECOVERED, 2.0)
    net = transition(host(S.UP), E.NOT_OPERATIONAL, 1.0, "net", NONOP.NETWORK_UNREACHABLE)
    back = transition(net, E.RECOVERED, 2.0)
    assert back.state is S.UP and back.non_operational is None


@pytest.mark.parametrize("origin", [S.UP, S.NON_OPERATIONAL, S.INITIALIZING, S.PREPARING_FOR_MAINTENANCE])
def test_connecting_returns_to_the_state_it_came_from(origin: HostState) -> None:
    start = host(origin, non_operational=NONOP.NETWORK_UNREACHABLE if origin is S.NON_OPERATIONAL else None)
    connecting = transition(start, E.HEARTBEAT_MISSED, 200.0)
    assert connecting.state is S.CONNECTING and connecting.previous is origin
    assert transition(connecting, E.HEARTBEAT_RESUMED, 210.0).state is origin


@given(st.lists(st.sampled_from(list(HostEvent)), max_size=40), st.sampled_from(list(NonOperationalReason)))
def test_random_events_reach_only_declared_states_or_raise(
    events: list[HostEvent], reason: NonOperationalReason
) -> None:
    h = Host("h1")
    for i, event in enumerate(events):
        declared = (h.state, event) in TRANSITIONS
        try:
            h = transition(h, event, float(i), non_operational=reason)
        except InvalidTransition as err:
            assert err.state is h.state and err.event is event and err.host == "h1"
            recover_guard = event is E.RECOVERED and declared
            assert not declared or recover_guard
            continue
        assert declared
        assert isinstance(h.state, HostState)
        assert h.since == float(i)
        assert (h.state is S.NON_OPERATIONAL) == (h.non_operational is not None)


def test_only_up_and_schedulable_hosts_accept_workloads() -> None:
    assert accepts_workloads(host(S.UP))
    assert not accepts_workloads(host(S.UP, schedulable=False))
    for state in set(HostState) - {S.UP}:
        assert not accepts_workloads(host(state))


class TestLiveness:
    policy = LivenessPolicy(heartbeat_interval=10, missed_beats=3, non_responsive_grace=60, grace_per_workload=0.5)

    def test_up_host_goes_connecting_only_after_the_missed_beats(self) -> None:
        up = host(S.UP)
        assert liveness_event(up, 150.0, 180.0, self.policy) is None
        event = liveness_event(up, 150.0, 180.1, self.policy)
        assert event is not None and event[0] is E.HEARTBEAT_MISSED and "30" in event[1]

    def test_grace_counts_from_the_state_change_when_no_beat_was_seen(self) -> None:
        assert liveness_event(host(S.INITIALIZING), None, 130.0, self.policy) is None
        assert liveness_event(host(S.INITIALIZING), None, 131.0, self.policy) is not None

    def test_connecting_grace_grows_with_workloads(self) -> None:
        c = host(S.CONNECTING, previous=S.UP)
        assert liveness_event(c, 90.0, 160.5, self.policy, workloads=0) is not None
        assert liveness_event(c, 90.0, 160.5, self.policy, workloads=20) is None  # 60 + 10 s
        lost = liveness_event(c, 90.0, 170.5, self.policy, workloads=20)
        assert lost is not None and lost[0] is E.HEARTBEAT_LOST

    @pytest.mark.parametrize("state", [S.CONNECTING, S.NON_RESPONSIVE, S.REBOOTING, S.DOWN, S.KDUMPING])
    def test_a_beat_after_the_state_change_resumes(self, state: HostState) -> None:
        h = host(state, previous=S.UP if state is S.CONNECTING else None)
        assert liveness_event(h, 99.0, 101.0, self.policy) is None  # a beat from before the change
        resumed = liveness_event(h, 100.5, 101.0, self.policy)
        assert resumed == (E.HEARTBEAT_RESUMED, "heartbeat received")

    def test_unmonitored_states_are_left_alone(self) -> None:
        for state in (S.MAINTENANCE, S.PENDING_APPROVAL, S.INSTALL_FAILED, S.FENCING):
            assert liveness_event(host(state), None, 10_000.0, self.policy) is None


def test_connectivity_loss_and_auto_recovery() -> None:
    up = host(S.UP)
    lost = connectivity_event(up, frozenset({"mgmt"}), frozenset())
    assert lost == (E.NOT_OPERATIONAL, "missing network mgmt", NONOP.NETWORK_UNREACHABLE)
    storage = connectivity_event(up, frozenset(), frozenset({"nfs"}))
    assert storage is not None and storage[2] is NONOP.STORAGE_UNREACHABLE
    assert connectivity_event(up, frozenset(), frozenset()) is None
    nonop = transition(up, E.NOT_OPERATIONAL, 1.0, "x", NONOP.STORAGE_UNREACHABLE)
    assert connectivity_event(nonop, frozenset(), frozenset({"nfs"})) is None
    recovered = connectivity_event(nonop, frozenset(), frozenset())
    assert recovered is not None and recovered[0] is E.RECOVERED
    manual = transition(up, E.NOT_OPERATIONAL, 1.0, "x", NONOP.CPU_INCOMPATIBLE)
    assert connectivity_event(manual, frozenset(), frozenset()) is None
