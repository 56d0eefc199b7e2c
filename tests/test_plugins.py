"""The flavor contract: loading, typed hook calls, and the check_flavor conformance suite."""

from __future__ import annotations

from collections.abc import Sequence

import pluggy
import pytest

from clustercore import Host, HostDescription, Plugins, Registry, Workload, hookimpl
from clustercore.errors import ConformanceError, FlavorError, NoValidHost, UnknownFlavor
from clustercore.model import HostState, Resources
from clustercore.scheduling.engine import HostView
from clustercore.testing import FakeDriver, FakeFlavor, check_flavor

HOST = Host("h1", capacity=Resources(8, 8192), state=HostState.UP)
OTHER = Host("h2", capacity=Resources(8, 8192), state=HostState.UP)
WORK = Workload("w1", "fake", requests=Resources(1, 512))


def test_fake_flavor_passes_the_conformance_suite() -> None:
    report = check_flavor(FakeFlavor("fake"), HOST, WORK, OTHER)
    assert report.flavor == "fake"
    assert {"loading", "start then inspect", "migrate: gone from source", "stop is idempotent"} <= set(report.passed)


def failures(flavor: object, target: Host | None = OTHER) -> str:
    with pytest.raises(ConformanceError) as info:
        check_flavor(flavor, HOST, WORK, target)
    return str(info.value)


def test_a_misspelled_hook_fails_with_the_known_names() -> None:
    class Typo(FakeFlavor):
        def clustercore_bootstrap_hots(self, host: Host) -> None:
            """Not marked, so pluggy alone would ignore it silently."""

    message = failures(Typo("fake"))
    assert "clustercore_bootstrap_hots is not a clustercore hook" in message
    assert "clustercore_bootstrap_host" in message


def test_a_hook_with_an_argument_the_spec_lacks_fails_loading() -> None:
    class WrongArgs(FakeFlavor):
        @hookimpl
        def clustercore_maintenance_veto(self, host: Host, urgency: int) -> None:  # type: ignore[override]
            return None

    message = failures(WrongArgs("fake"))
    assert "loading" in message and "urgency" in message


def test_a_stop_that_does_not_stop_fails() -> None:
    class Sticky(FakeDriver):
        def stop(self, workload: Workload, host: Host, force: bool = False) -> None:
            if not force:
                return
            super().stop(workload, host, force)

    flavor = FakeFlavor("fake")
    flavor.driver = Sticky("fake")
    message = failures(flavor)
    assert "still RUNNING on h2 after stop returned" in message
    assert flavor.driver.where("w1") == [], "check_flavor cleans up after itself"


def test_a_migration_that_copies_instead_of_moving_fails() -> None:
    class Cloner(FakeDriver):
        def migrate(self, workload: Workload, source: Host, target: Host) -> None:
            self.start(workload, target)

    flavor = FakeFlavor("fake")
    flavor.driver = Cloner("fake")
    assert "still RUNNING on h1: it runs twice" in failures(flavor)


def test_no_driver_for_the_workload_flavor_fails() -> None:
    class NoDriver(FakeFlavor):
        @hookimpl
        def clustercore_register(self, registry: Registry) -> None:
            pass

    message = failures(NoDriver("fake"))
    assert "clustercore_register added no WorkloadDriver" in message
    assert "no driver for flavor 'fake'" in message


def test_bad_host_descriptions_and_filters_fail() -> None:
    class Liar(FakeFlavor):
        @hookimpl
        def clustercore_register(self, registry: Registry) -> None:
            registry.add_driver(self.driver)
            registry.add_filter(EmptyReason())

        @hookimpl
        def clustercore_describe_host(self, host: Host) -> HostDescription:
            return HostDescription(extended={"gpu/x": -1})

    class EmptyReason:
        name = "empty-reason"

        def check(self, workload: Workload, view: HostView) -> str | None:
            return ""

    message = failures(Liar("fake"))
    assert "bad extended resource 'gpu/x'=-1" in message
    assert "filter empty-reason: must give non-empty reasons" in message


def test_a_flavor_without_a_name_is_refused() -> None:
    class Nameless:
        pass

    with pytest.raises(ConformanceError, match="name"):
        check_flavor(Nameless(), HOST, WORK)


def test_unknown_hookimpls_fail_at_load() -> None:
    class Unknown:
        name = "unknown"

        @hookimpl
        def clustercore_frobnicate(self) -> None:
            pass

    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'clustercore_frobnicate'"):
        Plugins([Unknown()], entry_points=False)


def test_hook_failures_name_the_flavor() -> None:
    class Fails(FakeFlavor):
        @hookimpl
        def clustercore_maintenance_veto(self, host: Host, workloads: Sequence[Workload]) -> str:
            raise RuntimeError("boom")

    plugins = Plugins([Fails("failing")], entry_points=False)
    with pytest.raises(FlavorError) as info:
        plugins.maintenance_vetoes(HOST, [])
    assert (info.value.flavor, info.value.hook) == ("failing", "clustercore_maintenance_veto")
    with pytest.raises(UnknownFlavor, match="loaded: failing"):
        plugins.driver("virt")


def test_flavors_added_later_still_register() -> None:
    plugins = Plugins([FakeFlavor("a")], entry_points=False)
    plugins.add(FakeFlavor("b"))
    assert plugins.driver("b").flavor == "b"
    assert plugins.names == ("a", "b")


def test_a_flavor_weigher_and_filter_steer_placement() -> None:
    """Flavor plugins join the core's filters and weighers when the cluster places work."""
    from clustercore import Cluster, FakeClock, HostReport

    class PreferLabelled:
        name = "prefer-fast"
        multiplier = 10.0

        def weigh(self, workload: Workload, view: HostView) -> float:
            return 1.0 if view.host.labels.get("disk") == "fast" else 0.0

    class NoOdd:
        name = "no-odd"

        def check(self, workload: Workload, view: HostView) -> str | None:
            return "odd host" if view.host.name.endswith(("1", "3")) else None

    class Steering(FakeFlavor):
        @hookimpl
        def clustercore_register(self, registry: Registry) -> None:
            registry.add_driver(self.driver)
            registry.add_weigher(PreferLabelled())
            registry.add_filter(NoOdd())

    clock = FakeClock()
    cluster = Cluster(plugins=Plugins([Steering("fake")], entry_points=False), clock=clock)
    for i in range(1, 5):
        cluster.register_host({"name": f"h{i}", "capacity": {"cpu": 8, "memory": 8192},
                               "labels": {"disk": "fast"} if i == 4 else {}})
    for _ in range(2):
        for i in range(1, 5):
            cluster.heartbeat(f"h{i}", HostReport())
        clock.advance(1)
        cluster.step()
    # Without the weigher, h2 (most free memory, first by name) would win.
    assert cluster.submit(Workload("w", "fake", requests=Resources(1, 4096))).host == "h4"
    # h4 is now fuller than h2, but the weigher's multiplier outweighs free memory.
    assert cluster.submit(Workload("w2", "fake", requests=Resources(1, 1024))).host == "h4"
    # Only h2 has room for 7000 MiB among the hosts the flavor's filter allows.
    assert cluster.submit(Workload("w3", "fake", requests=Resources(1, 7000))).host == "h2"
    with pytest.raises(NoValidHost) as info:
        cluster.submit(Workload("w4", "fake", requests=Resources(1, 7000)))
    assert info.value.reasons == {"odd host": 2, "insufficient memory": 2}


def test_bootstrap_merges_every_flavors_refusal() -> None:
    plugins = Plugins([FakeFlavor("a", refuse={"h1": "no kvm"}), FakeFlavor("b", refuse={"h1": "no disk"})],
                      entry_points=False)
    assert plugins.bootstrap_host(HOST) == {"a": "no kvm", "b": "no disk"}
    assert plugins.bootstrap_host(OTHER) == {}


def test_optional_driver_capabilities_are_protocols() -> None:
    from clustercore.driver import MovabilityDriver, SettlingDriver, movable

    class Pinning(FakeDriver):
        def movable(self, workload: Workload) -> bool:
            return workload.name != "pinned"

        def settle(self, workload: Workload, source: Host, target: Host, timeout: float = 30.0) -> None:
            pass

    plain, pinning = FakeDriver("fake"), Pinning("fake")
    assert not isinstance(plain, MovabilityDriver) and not isinstance(plain, SettlingDriver)
    assert isinstance(pinning, MovabilityDriver) and isinstance(pinning, SettlingDriver)
    assert movable(plain, Workload("pinned", "fake")) and movable(pinning, WORK)
    assert not movable(pinning, Workload("pinned", "fake"))
    flavor = FakeFlavor("fake")
    flavor.driver = pinning
    passed = check_flavor(flavor, HOST, WORK, OTHER).passed
    assert {"driver.movable", "driver.movable answers", "driver.settle"} <= set(passed)


def test_optional_driver_methods_with_the_wrong_shape_fail() -> None:
    class Misshapen(FakeDriver):
        settle = "not a method"

        def movable(self) -> bool:  # forgot the workload
            return True

    flavor = FakeFlavor("fake")
    flavor.driver = Misshapen("fake")
    message = failures(flavor)
    assert "driver.movable: cannot be called as MovabilityDriver.movable(workload)" in message
    assert ("driver.settle: is 'not a method', not a method (see SettlingDriver.settle(workload, source, target))"
            in message)


def test_a_movable_that_answers_no_bool_fails() -> None:
    class Vague(FakeDriver):
        def movable(self, workload: Workload) -> bool:
            return "maybe"  # type: ignore[return-value]

    flavor = FakeFlavor("fake")
    flavor.driver = Vague("fake")
    assert "driver.movable answers: returned 'maybe', not True or False" in failures(flavor)
