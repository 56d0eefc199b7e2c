"""The reconcile loop end to end on the memory store: join, heartbeats, connectivity,
maintenance, conflicts, corrupt entries, events."""

from __future__ import annotations

import attrs
import pytest

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins, Workload, hookimpl
from clustercore.controller import Decision
from clustercore.errors import (
    Conflict,
    CorruptEntry,
    HostBusy,
    HostExists,
    InvalidTransition,
    MaintenanceVetoed,
    NoValidHost,
    UnknownFlavor,
)
from clustercore.lifecycle import HostEvent, LivenessPolicy
from clustercore.model import Host, NonOperationalReason, Resources
from clustercore.testing import FakeFlavor

MGMT = frozenset({"mgmt"})
NFS = frozenset({"nfs"})
OK = HostReport(MGMT, NFS)


class Env:
    def __init__(self, flavor: FakeFlavor | None = None, **config: object) -> None:
        self.clock = FakeClock()
        self.flavor = flavor or FakeFlavor("fake")
        self.cluster = Cluster(
            plugins=Plugins([self.flavor], entry_points=False),
            clock=self.clock,
            config=ClusterConfig(required_networks=MGMT, required_storage=NFS, **config),  # type: ignore[arg-type]
        )
        self.reports: dict[str, HostReport] = {}

    def add(self, name: str, memory: int = 8192) -> None:
        self.cluster.register_host({"name": name, "capacity": {"cpu": 8, "memory": memory}})
        self.reports[name] = OK

    def tick(self, seconds: float = 10.0, silent: frozenset[str] = frozenset()) -> None:
        for name, report in self.reports.items():
            if name not in silent:
                self.cluster.heartbeat(name, report)
        self.clock.advance(seconds)
        self.cluster.step()

    def state(self, name: str) -> HostState:
        return self.cluster.host(name).state

    def up(self, *names: str) -> None:
        for name in names:
            self.add(name)
        for _ in range(3):
            self.tick()
        assert all(self.state(n) is HostState.UP for n in names)


def test_join_installs_discovers_and_comes_up_with_flavor_resources() -> None:
    env = Env(FakeFlavor("fake", extended={"gpu/t4": 2}))
    env.add("h1")
    assert env.state("h1") is HostState.INSTALLING
    env.cluster.step()
    assert env.state("h1") is HostState.INITIALIZING
    env.cluster.step()
    assert env.state("h1") is HostState.INITIALIZING, "no heartbeat yet: connectivity unknown"
    env.tick()
    host = env.cluster.host("h1")
    assert host.state is HostState.UP
    assert host.capacity.get("gpu/t4") == 2 and host.allocatable.get("gpu/t4") == 2
    assert host.facts["fake"] == {"simulated": True}
    kinds = [e.kind for e in env.cluster.query_events(subject="host/h1")]
    assert kinds == ["registered", "install-succeeded", "initialized"]


def test_approval_holds_a_host_until_an_operator_approves() -> None:
    env = Env(approval_required=True)
    env.add("h1")
    env.tick()
    env.tick()
    assert env.state("h1") is HostState.PENDING_APPROVAL
    env.cluster.approve_host("h1")
    env.tick()
    env.tick()
    assert env.state("h1") is HostState.UP


def test_a_refusing_flavor_fails_the_install_with_its_reason_and_reinstall_recovers() -> None:
    flavor = FakeFlavor("fake", refuse={"h1": "kvm module missing"})
    env = Env(flavor)
    env.add("h1")
    env.tick()
    host = env.cluster.host("h1")
    assert host.state is HostState.INSTALL_FAILED
    assert host.reason == "fake: kvm module missing"
    flavor.refuse.clear()
    env.cluster.reinstall_host("h1")
    env.tick()
    env.tick()
    assert env.state("h1") is HostState.UP


def test_duplicate_registration_is_refused() -> None:
    env = Env()
    env.add("h1")
    with pytest.raises(HostExists):
        env.cluster.register_host({"name": "h1"})


def test_missing_network_makes_a_host_non_operational_until_it_is_back() -> None:
    env = Env()
    env.up("h1")
    env.reports["h1"] = HostReport(frozenset(), NFS)
    env.tick()
    host = env.cluster.host("h1")
    assert host.state is HostState.NON_OPERATIONAL
    assert host.non_operational is NonOperationalReason.NETWORK_UNREACHABLE
    assert host.reason == "missing network mgmt"
    env.reports["h1"] = HostReport(MGMT, frozenset())
    env.tick()
    assert env.state("h1") is HostState.NON_OPERATIONAL, "storage is still missing"
    env.reports["h1"] = OK
    env.tick()
    assert env.state("h1") is HostState.UP
    events = env.cluster.query_events(subject="host/h1")
    assert [e.kind for e in events][-2:] == ["not-operational", "recovered"]
    assert events[-1].old == "NonOperational" and events[-1].new == "Up"


def test_a_host_failing_discovery_is_non_operational_naming_the_flavor() -> None:
    class Broken(FakeFlavor):
        @hookimpl
        def clustercore_describe_host(self, host: Host) -> None:
            raise OSError("libvirt socket gone")

    env = Env(Broken("broken"))
    env.add("h1")
    env.tick()
    env.tick()
    host = env.cluster.host("h1")
    assert host.state is HostState.NON_OPERATIONAL
    assert host.non_operational is NonOperationalReason.FLAVOR_CHECK_FAILED
    assert "broken" in host.reason and "libvirt socket gone" in host.reason


def test_silence_goes_connecting_then_non_responsive_then_back_up() -> None:
    env = Env(liveness=LivenessPolicy(heartbeat_interval=10, missed_beats=3, non_responsive_grace=60,
                                      grace_per_workload=5))
    env.up("h1", "h2")
    for i in range(4):
        env.cluster.submit(Workload(f"w{i}", "fake", requests=Resources(1, 512), host_selector={}))
    on_h1 = sum(p.host == "h1" for p in env.cluster.placements().values())
    silent = frozenset({"h1"})
    env.tick(31, silent)
    assert env.state("h1") is HostState.CONNECTING and env.state("h2") is HostState.UP
    grace = 60 + 5 * on_h1
    waited = 0.0
    while env.state("h1") is HostState.CONNECTING:
        env.tick(5, silent)
        waited += 5
        assert waited <= grace + 5
    assert waited > grace - 5, f"NonResponsive after {waited} s, grace was {grace} s"
    assert env.state("h1") is HostState.NON_RESPONSIVE
    env.tick()
    assert env.state("h1") is HostState.INITIALIZING
    env.tick()
    assert env.state("h1") is HostState.UP


def test_a_host_with_workloads_cannot_be_removed() -> None:
    env = Env()
    env.up("h1")
    env.cluster.submit(Workload("w", "fake", requests=Resources(1, 512)))
    env.tick(100, frozenset({"h1"}))
    env.tick(100, frozenset({"h1"}))
    assert env.state("h1") is HostState.NON_RESPONSIVE
    env.cluster.confirm_down("h1")
    with pytest.raises(HostBusy) as info:
        env.cluster.remove_host("h1")
    assert info.value.workloads == ("w",)
    env.cluster.stop("w")
    env.cluster.remove_host("h1")
    assert "h1" not in env.cluster.hosts()


def test_maintenance_drains_to_other_hosts_and_cancel_returns_up() -> None:
    env = Env()
    env.up("h1", "h2", "h3")
    for i in range(6):
        env.cluster.submit(Workload(f"w{i}", "fake", requests=Resources(1, 1024)))
    env.cluster.start_maintenance("h1")
    for _ in range(8):
        env.tick()
    assert env.state("h1") is HostState.MAINTENANCE
    placements = env.cluster.placements()
    assert len(placements) == 6 and all(p.host in ("h2", "h3") for p in placements.values())
    for name, p in placements.items():
        assert env.flavor.driver.where(name) == [p.host]
    env.cluster.activate_host("h1")
    env.tick()
    env.tick()
    assert env.state("h1") is HostState.UP
    env.cluster.start_maintenance("h1")
    assert env.state("h1") is HostState.PREPARING_FOR_MAINTENANCE
    env.cluster.cancel_maintenance("h1")
    assert env.state("h1") is HostState.UP


def test_maintenance_that_cannot_place_a_workload_stays_preparing_and_says_why() -> None:
    env = Env()
    env.up("h1", "h2")
    env.cluster.submit(Workload("big", "fake", requests=Resources(1, 8000)))
    env.cluster.submit(Workload("big2", "fake", requests=Resources(1, 8000)))
    host = env.cluster.placements()["big"].host
    env.cluster.start_maintenance(host)
    env.clock.advance(1)
    report = env.cluster.step()
    assert env.state(host) is HostState.PREPARING_FOR_MAINTENANCE
    assert any("insufficient memory" in e for e in report.errors)


def test_a_flavor_veto_refuses_maintenance() -> None:
    env = Env(FakeFlavor("fake", veto="workload pinned to a GPU"))
    env.up("h1")
    with pytest.raises(MaintenanceVetoed) as info:
        env.cluster.start_maintenance("h1")
    assert info.value.vetoes == {"fake": "workload pinned to a GPU"}
    assert env.state("h1") is HostState.UP


def test_operator_events_the_state_does_not_accept_raise() -> None:
    env = Env()
    env.up("h1")
    with pytest.raises(InvalidTransition) as info:
        env.cluster.activate_host("h1")
    assert (info.value.host, info.value.state, info.value.event) == ("h1", HostState.UP, HostEvent.ACTIVATE)


def test_scheduler_refusal_names_counts_per_reason() -> None:
    env = Env()
    env.up("h1", "h2", "h3")
    env.cluster.start_maintenance("h3")
    with pytest.raises(NoValidHost) as info:
        env.cluster.submit(Workload("huge", "fake", requests=Resources(1, 100_000)))
    assert info.value.reasons == {"insufficient memory": 2, "host PreparingForMaintenance": 1}
    assert "0/3 hosts" in str(info.value)
    with pytest.raises(UnknownFlavor):
        env.cluster.submit(Workload("x", "nosuch"))


def test_a_cas_conflict_is_reported_and_never_overwrites() -> None:
    env = Env()
    env.add("h1")
    stale = env.cluster.state.host("h1")
    env.cluster.step()  # the controller moves h1 on: Installing -> Initializing
    late = Decision(stale.value, HostEvent.INSTALL_FAILED, "a late writer with a stale read")
    with pytest.raises(Conflict) as info:
        env.cluster.controller.commit(stale, late, env.clock.now())
    assert info.value.key == "hosts/h1" and info.value.expected == stale.revision
    assert info.value.actual > stale.revision
    assert env.state("h1") is HostState.INITIALIZING


def test_a_step_racing_an_operator_reports_the_conflict() -> None:
    env_box: list[Env] = []

    class Racing(FakeFlavor):
        @hookimpl
        def clustercore_bootstrap_host(self, host: Host) -> None:
            # An operator edits the host while the controller is bootstrapping it.
            cluster = env_box[0].cluster
            current = cluster.store.get("hosts/h1")
            assert current is not None
            cluster.store.put("hosts/h1", current.value.replace(b'"labels":{}', b'"labels":{"x":"y"}'),
                              expect=current.mod_revision)

    env = Env(Racing("fake"))
    env_box.append(env)
    env.add("h1")
    report = env.cluster.step()
    assert len(report.conflicts) == 1 and "hosts/h1" in report.conflicts[0]
    host = env.cluster.host("h1")
    assert host.labels == {"x": "y"} and host.state is HostState.INSTALLING, "the operator's write survived"


def test_a_corrupt_entry_is_reported_and_skipped() -> None:
    env = Env()
    env.up("h1")
    env.cluster.store.put("hosts/h2", b"{not json")
    env.cluster.store.put("hosts/h3", b'{"name": "other"}')
    env.cluster.store.put("heartbeats/h1x", b"[1,2]")
    env.tick()
    assert env.state("h1") is HostState.UP
    assert set(env.cluster.state.corrupt) == {"hosts/h2", "hosts/h3"}
    with pytest.raises(CorruptEntry) as info:
        env.cluster.host("h2")
    assert info.value.key == "hosts/h2"
    with pytest.raises(CorruptEntry, match="names 'other'"):
        env.cluster.host("h3")


def test_a_failing_transition_hook_is_recorded_not_fatal() -> None:
    class Noisy(FakeFlavor):
        @hookimpl
        def clustercore_host_transition(self, new: Host) -> None:
            raise RuntimeError("cannot notify")

    env = Env(Noisy("noisy"))
    env.up("h1")
    errors = env.cluster.query_events(kind="flavor-error")
    assert errors and "cannot notify" in errors[0].reason and "noisy" in errors[0].reason


def test_run_steps_on_the_injected_clock() -> None:
    env = Env()
    env.add("h1")
    start = env.clock.now()
    assert env.cluster.controller.run(interval=2.0, steps=5) == 5
    assert env.clock.now() == start + 10.0
    assert env.state("h1") is HostState.INITIALIZING


def test_a_failed_move_is_retried_elsewhere_and_the_drain_gives_up_after_the_bound() -> None:
    env = Env()
    env.up("h1", "h2", "h3")
    env.cluster.submit(Workload("w", "fake", requests=Resources(1, 1024), pinned=frozenset({"h1"})))
    env.cluster.update_workload("w", lambda w: attrs.evolve(w, pinned=frozenset()))
    env.flavor.driver.fail.add(("migrate", "h2"))  # a move to h2 fails: the retry goes to h3
    env.cluster.start_maintenance("h1")
    for _ in range(4):
        env.tick()
    assert env.state("h1") is HostState.MAINTENANCE
    assert env.cluster.placements()["w"].host == "h3" and env.flavor.driver.where("w") == ["h3"]
    failed = [e for e in env.cluster.query_events(subject="workload/w") if e.kind == "migration-failed"]
    assert [(e.old, e.new) for e in failed] in ([], [("h1", "h2")])  # the scheduler may pick h3 first

    env.cluster.activate_host("h1")
    env.tick()
    env.tick()
    env.flavor.driver.fail.update({("migrate", "h1"), ("migrate", "h2"), ("migrate", "h3")})
    env.cluster.start_maintenance("h3")
    for _ in range(6):
        env.tick()
    host = env.cluster.host("h3")
    assert host.state is HostState.UP  # given up: back in service
    assert host.reason == "drain gave up: w failed to move 2 times (tried h1, h2); no other host can take it"
    assert env.cluster.placements()["w"].host == "h3" and env.flavor.driver.where("w") == ["h3"]


def test_the_drain_gives_up_after_drain_attempts_failed_moves() -> None:
    env = Env(drain_attempts=2, drain_parallel=1)
    env.up("h1", "h2", "h3", "h4")
    env.cluster.submit(Workload("w", "fake", requests=Resources(1, 1024), pinned=frozenset({"h1"})))
    env.cluster.update_workload("w", lambda w: attrs.evolve(w, pinned=frozenset()))
    env.flavor.driver.fail.add(("migrate", "h1"))  # every move off h1 fails
    env.cluster.start_maintenance("h1")
    for _ in range(4):
        env.tick()
    host = env.cluster.host("h1")
    assert host.state is HostState.UP and host.reason.startswith("drain gave up: w failed to move 2 times")
    assert len([e for e in env.cluster.query_events(subject="workload/w") if e.kind == "migration-failed"]) == 2
    assert env.flavor.driver.where("w") == ["h1"]
