"""Operations (issue 16, item 3): requested by anyone, carried out by the leader, followed
in the store with progress and step, cancelled where the work can be, taken over by a new
leader. A simulated cluster (fake flavor, fake clock), so every path is quick and exact."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins
from clustercore.errors import ValidationError
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from clustercore.model import FenceDevice, PlacementState, Workload
from clustercore.operations import TRANSITIONS, NotCancellable, OpState, UnknownOperation
from clustercore.plugins import Registry, hookimpl
from clustercore.scheduling import HostView
from clustercore.store.memory import MemoryStore
from clustercore.testing import FakeFlavor

S = HostState
NAMES = ("h1", "h2", "h3")


def cluster(store: MemoryStore | None = None, clock: FakeClock | None = None, flavor: FakeFlavor | None = None,
            register: bool = True, drain_parallel: int = 1) -> tuple[Cluster, FakeClock, FakeFlavor]:
    clock = clock or FakeClock()
    flavor = flavor or FakeFlavor("fake")
    config = ClusterConfig(liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2,
                                                   grace_per_workload=0),
                           fencing=FencePolicy(startup_grace=0, soft_first=False, confirm_timeout=0, retries=0),
                           drain_parallel=drain_parallel, call_timeout=5, call_wait=0.5)
    c = Cluster(store=store, plugins=Plugins([flavor], entry_points=False), clock=clock, config=config,
                monotonic=clock.now)
    if register:
        for name in NAMES:
            c.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192},
                             "fence_devices": [{"agent": "ipmi", "address": name}]})
        tick(c, clock, 3)
    return c, clock, flavor


def tick(c: Cluster, clock: FakeClock, n: int = 1, silent: Sequence[str] = ()) -> None:
    for _ in range(n):
        for name in c.hosts():
            if name not in silent:
                c.heartbeat(name, HostReport())
        clock.advance(1)
        c.step()


def place(c: Cluster, names: Sequence[str], host: str) -> None:
    for name in names:
        c.submit({"name": name, "flavor": "fake", "requests": {"cpu": 1, "memory": 64}, "pinned": [host]})
        c.update_workload(name, lambda w: attrs.evolve(w, pinned=frozenset()))


def test_a_maintenance_operation_reports_progress_until_the_host_is_drained() -> None:
    c, clock, _ = cluster()
    place(c, ["a", "b", "c", "d"], "h1")
    op = c.request("maintenance", "h1", by="alice")
    assert op.state is OpState.PENDING and c.operation(op.id) == op
    seen = []
    for _ in range(8):
        tick(c, clock)
        current = c.operation(op.id)
        seen.append((current.state, current.progress))
        if current.state.done:
            break
    assert c.operation(op.id).state is OpState.SUCCEEDED and c.operation(op.id).progress == 100.0
    running = [p for s, p in seen if s is OpState.RUNNING]
    assert running and running == sorted(running) and 0 <= running[0] < 100  # it went up, one move a pass
    assert c.host("h1").state is S.MAINTENANCE
    requested = c.query_events(kind="requested")
    assert requested and "maintenance h1 by alice" in requested[0].reason
    assert c.query_events(kind="succeeded")


def test_a_maintenance_cancelled_halfway_moves_nothing_more_and_ends_cancelled() -> None:
    c, clock, flavor = cluster()
    place(c, ["a", "b", "c", "d"], "h1")
    op = c.request("maintenance", "h1")
    tick(c, clock, 2)
    assert c.operation(op.id).state is OpState.RUNNING
    moved = [n for n in "abcd" if flavor.driver.where(n) != ["h1"]]
    assert 0 < len(moved) < 4
    c.cancel_operation(op.id, by="bob")
    tick(c, clock, 3)
    done = c.operation(op.id)
    assert done.state is OpState.CANCELLED and c.host("h1").state is S.UP
    assert [n for n in "abcd" if flavor.driver.where(n) != ["h1"]] == moved
    assert all(len(flavor.driver.where(n)) == 1 for n in "abcd")
    with pytest.raises(NotCancellable, match="Cancelled already"):
        c.cancel_operation(op.id)


def test_workload_operations_move_start_stop_and_delete() -> None:
    c, clock, flavor = cluster()
    place(c, ["w"], "h1")
    move = c.request("migrate", "w", {"target": "h3"})
    tick(c, clock)
    assert c.operation(move.id).state is OpState.SUCCEEDED and c.operation(move.id).result == "h3"
    assert flavor.driver.where("w") == ["h3"]
    nowhere = c.request("migrate", "w", {"target": "nowhere"})
    tick(c, clock)
    failed = c.operation(nowhere.id)
    assert failed.state is OpState.FAILED and "NoValidHost" in failed.error
    stop = c.request("stop", "w", {"force": True})
    tick(c, clock)
    assert c.operation(stop.id).state is OpState.SUCCEEDED and "w" not in c.placements()
    start = c.request("start", "w")
    tick(c, clock)
    started = c.operation(start.id)
    assert started.state is OpState.SUCCEEDED and flavor.driver.where("w") == [started.result]
    delete = c.request("delete", "w")
    tick(c, clock)
    assert c.operation(delete.id).state is OpState.SUCCEEDED and "w" not in c.workloads()
    assert flavor.driver.where("w") == []


def test_requests_are_checked_before_anything_is_written() -> None:
    c, _, _ = cluster()
    with pytest.raises(ValidationError, match="must be one of"):
        c.request("reboot-everything", "h1")
    with pytest.raises(ValidationError, match="must be one of"):
        c.request("fence", "h1")  # recorded by the controller, never requested
    with pytest.raises(ValidationError, match="no such host"):
        c.request("maintenance", "h9")
    with pytest.raises(ValidationError, match="unknown for maintenance"):
        c.request("maintenance", "h1", {"force": True})
    with pytest.raises(ValidationError) as info:
        c.request("migrate", "bad\nname")
    assert info.value.field == "target"
    assert c.operations() == {}
    with pytest.raises(UnknownOperation):
        c.operation("0" * 32)


def test_a_pending_operation_cancelled_never_runs_and_a_start_cannot_be_cancelled() -> None:
    c, clock, flavor = cluster()
    place(c, ["w"], "h1")
    move = c.request("migrate", "w", {"target": "h2"})
    c.cancel_operation(move.id)
    tick(c, clock)
    assert c.operation(move.id).state is OpState.CANCELLED and flavor.driver.where("w") == ["h1"]
    c.stop("w")
    start = c.request("start", "w")
    with pytest.raises(NotCancellable, match="cannot be stopped half-way"):
        c.cancel_operation(start.id)


def test_a_new_leader_takes_over_what_a_dead_one_left() -> None:
    """The first manager dies after starting two moves (its jobs gone with it): one had
    finished (the placement says so), one had not begun. The next one follows both."""
    store, clock = MemoryStore(clock=FakeClock()), FakeClock()
    c, clock, flavor = cluster(store=store, clock=clock)
    place(c, ["done", "todo"], "h1")
    finished = c.request("migrate", "done", {"target": "h2"})
    todo = c.request("migrate", "todo", {"target": "h3"})
    ops = c.ops
    for op_id, memo in ((finished.id, {"source": "h1"}), (todo.id, {"source": "h1"})):
        current = ops.get(op_id)
        ops.put(current, attrs.evolve(current.value, state=OpState.RUNNING, memo=memo))
    c.migrate("done", "h2")  # the dead leader's job got this far
    successor, _, _ = cluster(store=store, clock=clock, flavor=flavor, register=False)
    tick(successor, clock, 2)
    assert successor.operation(finished.id).state is OpState.SUCCEEDED
    assert "previous leader" in successor.operation(finished.id).step
    assert successor.operation(todo.id).state is OpState.SUCCEEDED and flavor.driver.where("todo") == ["h3"]


def test_fencing_is_an_operation_too() -> None:
    c, clock, _ = cluster()

    class Agent:
        def power(self, device: FenceDevice, action: str, timeout: float) -> str:
            return "off"

    c.controller.fencer.agent_for = lambda _: Agent()
    tick(c, clock, 12, silent=("h2",))
    assert c.host("h2").state is S.DOWN
    fences = [o for o in c.operations().values() if o.kind == "fence"]
    assert len(fences) == 1 and fences[0].state is OpState.SUCCEEDED and fences[0].by == "controller"


def test_a_rolling_upgrade_operation_upgrades_every_host_and_can_be_cancelled() -> None:
    c, clock, _ = cluster()
    place(c, ["a"], "h1")
    op = c.request("upgrade", params={"hosts": ["h2", "h3", "h1"]})
    for _ in range(40):
        tick(c, clock)
        if c.operation(op.id).state.done:
            break
    done = c.operation(op.id)
    assert done.state is OpState.SUCCEEDED and done.result == "3 host(s) upgraded" and done.progress == 100.0
    assert all(c.host(n).state is S.UP for n in NAMES)
    again = c.request("upgrade")
    c.cancel_operation(again.id)
    tick(c, clock, 3)
    assert c.operation(again.id).state is OpState.CANCELLED


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["maintenance", "migrate", "stop", "start", "cancel", "tick"]),
                          st.integers(0, 2)), max_size=25))
def test_operations_only_take_declared_transitions_and_all_end(steps: list[tuple[str, int]]) -> None:
    c, clock, flavor = cluster()
    place(c, ["w0", "w1", "w2"], "h1")
    seen: dict[str, list[OpState]] = {}
    for action, i in steps:
        try:
            if action == "maintenance":
                c.request("maintenance", NAMES[i])
            elif action in ("migrate", "stop", "start"):
                c.request(action, f"w{i}")
            elif action == "cancel" and c.operations():
                c.cancel_operation(sorted(c.operations())[i % len(c.operations())])
        except (ValidationError, NotCancellable):
            pass
        tick(c, clock)
        for op in c.operations().values():
            states = seen.setdefault(op.id, [])
            if not states or states[-1] is not op.state:
                states.append(op.state)
        assert all(len(flavor.driver.where(f"w{n}")) <= 1 for n in range(3))
    for name in list(c.hosts()):
        if c.host(name).state is S.MAINTENANCE:
            c.activate_host(name)
    tick(c, clock, 10)
    assert all(op.state.done for op in c.operations().values())
    for states in seen.values():
        for before, after in itertools.pairwise(states):
            assert any((before, event) in TRANSITIONS and TRANSITIONS[(before, event)] is after
                       for event in {e for _, e in TRANSITIONS}), (before, after)
    assert PlacementState.FAILED not in {p.state for p in c.placements().values()}


class Gate:
    """A filter that holds the scheduling of workload ``slow`` until opened, counting its
    calls (one per host and scheduling)."""

    name = "gate"

    def __init__(self) -> None:
        self.entered, self.open, self.entries = threading.Event(), threading.Event(), 0

    def check(self, workload: Workload, view: HostView) -> str | None:
        if workload.name == "slow":
            self.entries += 1
            self.entered.set()
            self.open.wait(10)
        return None

    @hookimpl
    def clustercore_register(self, registry: Registry) -> None:
        registry.add_filter(self)


def test_a_leader_deposed_and_elected_again_mid_start_never_starts_twice() -> None:
    """Deposed while its start job still schedules (a pass over the lease limit), then the
    leader again at once: the operation waits for that job, launches no second start, and
    ends Succeeded with the workload running once."""
    gate, clock, flavor = Gate(), FakeClock(), FakeFlavor("fake")
    with ThreadPoolExecutor(2) as pool:
        c = Cluster(plugins=Plugins([flavor, gate], entry_points=False), clock=clock, executor=pool,
                    monotonic=clock.now)
        for name in NAMES:
            c.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192}})
        tick(c, clock, 3)
        c.define({"name": "slow", "flavor": "fake", "requests": {"cpu": 1, "memory": 64}})
        op = c.request("start", "slow")
        tick(c, clock)
        assert gate.entered.wait(5) and c.operation(op.id).state is OpState.RUNNING
        c.controller.depose()
        tick(c, clock, 2)  # leading again: the old job still schedules
        gate.open.set()
        for _ in range(50):
            tick(c, clock)
            if c.operation(op.id).state.done:
                break
            time.sleep(0.02)
    done = c.operation(op.id)
    assert (done.state, gate.entries) == (OpState.SUCCEEDED, len(NAMES)), (done, gate.entries)  # one scheduling
    assert len(flavor.driver.where("slow")) == 1 and c.placements()["slow"].state is PlacementState.RUNNING
