"""Hypothesis drives a whole cluster (store, controller, operator API, a fake flavor) with
random host registrations, heartbeats that stop and resume, network loss, clock jumps,
operator events and workload submissions, and checks after every step that:

* every host is in a declared state, and only declared transitions happened;
* an event the host's state does not accept raises InvalidTransition (and changes nothing);
* a new workload only ever lands on a host that was Up and schedulable;
* hosts in Maintenance (or removed) hold no workloads;
* no workload ever runs on two hosts, and the store agrees with what the driver runs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins, Resources, Workload
from clustercore.errors import HostBusy, InvalidTransition, NoValidHost, UnknownHost
from clustercore.lifecycle import TRANSITIONS, HostEvent, accepts_workloads
from clustercore.model import PlacementState
from clustercore.testing import FakeFlavor

OPERATOR = {
    HostEvent.APPROVE: "approve_host",
    HostEvent.REINSTALL: "reinstall_host",
    HostEvent.ACTIVATE: "activate_host",
    HostEvent.PREPARE_MAINTENANCE: "start_maintenance",
    HostEvent.CANCEL_MAINTENANCE: "cancel_maintenance",
    HostEvent.CONFIRM_DOWN: "confirm_down",
    HostEvent.REMOVE: "remove_host",
}


class ClusterMachine(RuleBasedStateMachine):
    hosts = Bundle("hosts")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.flavor = FakeFlavor("fake")
        self.cluster = Cluster(
            plugins=Plugins([self.flavor], entry_points=False),
            clock=self.clock,
            config=ClusterConfig(required_networks=frozenset({"mgmt"}), approval_required=True),
        )
        self.alive: set[str] = set()
        self.unreachable: set[str] = set()
        self.count = 0
        self.workloads = 0

    @initialize(target=hosts)
    def two_hosts(self) -> object:
        return multiple(self.register(True), self.register(True))

    @rule(target=hosts, approval=st.booleans())
    def register(self, approval: bool) -> str:
        self.count += 1
        name = f"h{self.count}"
        host = self.cluster.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192}})
        assert host.state is HostState.PENDING_APPROVAL
        if approval:
            self.cluster.approve_host(name)
        self.alive.add(name)
        return name

    @rule(name=hosts, alive=st.booleans())
    def agent(self, name: str, alive: bool) -> None:
        (self.alive.add if alive else self.alive.discard)(name)

    @rule(name=hosts, refuse=st.booleans())
    def bootstrap_outcome(self, name: str, refuse: bool) -> None:
        if refuse:
            self.flavor.refuse[name] = "injected refusal"
        else:
            self.flavor.refuse.pop(name, None)

    @rule(name=hosts, reachable=st.booleans())
    def network(self, name: str, reachable: bool) -> None:
        (self.unreachable.discard if reachable else self.unreachable.add)(name)

    @rule(seconds=st.sampled_from([1.0, 5.0, 10.0, 31.0, 61.0, 120.0]))
    def tick(self, seconds: float) -> None:
        known = self.cluster.hosts()
        for name in self.alive & set(known):
            networks = frozenset() if name in self.unreachable else frozenset({"mgmt"})
            self.cluster.heartbeat(name, HostReport(networks=networks))
        self.clock.advance(seconds)
        before = self.cluster.hosts()
        report = self.cluster.step()
        assert not report.conflicts
        after = self.cluster.hosts()
        for host in after.values():
            event(f"state {host.state}")
        for name, host in after.items():
            old = before[name]
            if host.state is not old.state:
                matching = [e for (s, e), t in TRANSITIONS.items() if s is old.state]
                assert matching, f"{name} left {old.state}, which has no exits"

    @rule(name=hosts, event=st.sampled_from(sorted(OPERATOR, key=lambda e: e.value)))
    def operate(self, name: str, event: HostEvent) -> None:
        try:
            before = self.cluster.host(name)
        except UnknownHost:
            return
        declared = (before.state, event) in TRANSITIONS
        try:
            getattr(self.cluster, OPERATOR[event])(name)
        except InvalidTransition as err:
            assert not declared
            assert err.state is before.state and err.event is event
            assert self.cluster.host(name) == before
        except HostBusy as err:
            assert event in (HostEvent.REMOVE, HostEvent.PREPARE_MAINTENANCE) and err.workloads
            assert self.cluster.host(name) == before
        else:
            assert declared
            if event is HostEvent.REMOVE:
                self.alive.discard(name)

    @rule(memory=st.sampled_from([512, 2048, 6144]))
    def submit(self, memory: int) -> None:
        self.workloads += 1
        snapshot = self.cluster.hosts()
        workload = Workload(f"w{self.workloads}", "fake", requests=Resources(1, memory))
        try:
            placement = self.cluster.submit(workload)
        except NoValidHost as err:
            assert err.total == len(snapshot)
            return
        assert accepts_workloads(snapshot[placement.host]), snapshot[placement.host]
        event("workload placed")

    @invariant()
    def hosts_are_in_declared_states(self) -> None:
        for host in self.cluster.hosts().values():
            assert isinstance(host.state, HostState) and host.state is not HostState.REMOVED

    @invariant()
    def maintenance_and_removed_hosts_hold_nothing(self) -> None:
        hosts = self.cluster.hosts()
        for p in self.cluster.placements().values():
            assert p.host in hosts, f"{p.workload} placed on removed host {p.host}"
            assert hosts[p.host].state is not HostState.MAINTENANCE, p

    @invariant()
    def no_workload_runs_twice_and_the_store_agrees(self) -> None:
        placements = self.cluster.placements()
        for name in self.cluster.workloads():
            where = self.flavor.driver.where(name)
            assert len(where) <= 1, f"{name} runs on {where}"
            p = placements.get(name)
            if p is not None and p.state is PlacementState.RUNNING:
                assert where == [p.host]


ClusterMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestClusterMachine = ClusterMachine.TestCase

