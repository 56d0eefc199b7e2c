"""Hooks go through pluggy's own call path: wrappers, monitoring and tracing apply, and a
failure still names the flavor that raised it."""

from __future__ import annotations

import warnings
from collections.abc import Generator, Mapping, Sequence
from importlib.metadata import Distribution, PathDistribution
from pathlib import Path

import pluggy
import pytest

from clustercore import Cluster, FakeClock, Host, HostDescription, HostState, Plugins, hookimpl
from clustercore.errors import FlavorError
from clustercore.model import Resources
from clustercore.plugins import FlavorSkipped, install_hint
from clustercore.testing import FakeFlavor

HOST = Host("h1", capacity=Resources(8, 8192), state=HostState.UP)
CAPACITY = {"cpu": 8, "memory": 16384}


class Wrapping(FakeFlavor):
    """FakeFlavor with wrappers (``specname``) around its own bootstrap and describe."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.wrapped: list[tuple[str, object]] = []

    @hookimpl(wrapper=True, specname="clustercore_bootstrap_host")
    def wrap_bootstrap(self, host: Host) -> Generator[None, list[str], list[str]]:
        answers = yield
        self.wrapped.append(("bootstrap", list(answers)))
        return answers

    @hookimpl(wrapper=True, specname="clustercore_describe_host")
    def wrap_describe(self, host: Host) -> Generator[None, list[HostDescription], list[HostDescription]]:
        answers = yield
        self.wrapped.append(("describe", list(answers)))
        return [HostDescription(facts={**desc.facts, "wrapped": True}, extended=desc.extended) for desc in answers]


class WrapperOnly:
    """A flavor whose only bootstrap and describe implementations are wrappers."""

    name = "watcher"

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl(wrapper=True)
    def clustercore_bootstrap_host(self, host: Host) -> Generator[None, list[str], list[str]]:
        self.calls.append(f"bootstrap {host.name}")
        return (yield)

    @hookimpl(wrapper=True)
    def clustercore_describe_host(self, host: Host) -> Generator[None, list[object], list[object]]:
        self.calls.append(f"describe {host.name}")
        return (yield)


Seen = list[tuple[str, tuple[str, ...]]]


def monitored(plugins: Plugins) -> Seen:
    """Every hook call pluggy makes from now on: (hook name, plugins called)."""
    seen: Seen = []

    def before(name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]) -> None:
        seen.append((name, tuple(impl.plugin_name for impl in impls)))

    def after(outcome: object, name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]) -> None:
        pass

    plugins.pm.add_hookcall_monitoring(before, after)
    return seen


def join(plugins: Plugins, name: str = "h1") -> Cluster:
    """README's first example: register, heartbeat, two passes."""
    cluster = Cluster(plugins=plugins, clock=FakeClock())
    assert cluster.register_host({"name": name, "capacity": CAPACITY}).state is HostState.INSTALLING
    cluster.heartbeat(name)
    cluster.step()
    cluster.step()
    return cluster


def test_a_flavor_with_wrappers_joins_hosts_and_monitoring_sees_every_call() -> None:
    flavor = Wrapping("sim")
    plugins = Plugins([flavor], entry_points=False)
    seen = monitored(plugins)
    cluster = join(plugins)
    host = cluster.host("h1")
    assert host.state is HostState.UP, host.reason
    assert host.facts["sim"] == {"simulated": True, "wrapped": True}  # the wrapper's answer is the one kept
    assert flavor.wrapped == [("bootstrap", []), ("describe", [HostDescription(facts={"simulated": True})])]
    names = [name for name, _ in seen]
    assert {"clustercore_bootstrap_host", "clustercore_describe_host", "clustercore_host_transition"} == set(names)
    assert names.count("clustercore_bootstrap_host") == names.count("clustercore_describe_host") == 1
    assert names.count("clustercore_host_transition") == len(flavor.transitions) >= 2
    assert all(called == ("sim",) * len(called) and called for _, called in seen)


def test_a_wrapper_only_flavor_wraps_its_own_call_beside_another_flavor() -> None:
    watcher = WrapperOnly()
    plugins = Plugins([FakeFlavor("sim"), watcher], entry_points=False)
    seen = monitored(plugins)
    cluster = join(plugins)
    assert cluster.host("h1").state is HostState.UP, cluster.host("h1").reason
    assert watcher.calls == ["bootstrap h1", "describe h1"]
    assert "sim" in cluster.host("h1").facts and "watcher" not in cluster.host("h1").facts
    # Each flavor is called on its own, so a failure can be pinned on it.
    assert ("clustercore_bootstrap_host", ("watcher",)) in seen
    assert ("clustercore_bootstrap_host", ("sim",)) in seen
    assert ("clustercore_describe_host", ("watcher",)) in seen


def test_tracing_sees_the_calls() -> None:
    plugins = Plugins([FakeFlavor("sim")], entry_points=False)
    lines: list[str] = []
    plugins.pm.trace.root.setwriter(lines.append)
    plugins.pm.enable_tracing()
    assert plugins.bootstrap_host(HOST) == {}
    assert any("clustercore_bootstrap_host" in line for line in lines)


def test_a_raising_bootstrap_names_its_flavor_in_the_install_failure() -> None:
    class Broken(FakeFlavor):
        @hookimpl
        def clustercore_bootstrap_host(self, host: Host) -> str | None:
            raise RuntimeError("no kvm module")

    cluster = join(Plugins([FakeFlavor("sim"), Broken("broken")], entry_points=False))
    host = cluster.host("h1")
    assert host.state is HostState.INSTALL_FAILED
    assert "broken" in host.reason and "RuntimeError: no kvm module" in host.reason
    assert "sim" not in host.reason.replace("simulated", "")


def test_a_raising_wrapper_names_its_flavor() -> None:
    class BrokenWrapper(FakeFlavor):
        @hookimpl(wrapper=True, specname="clustercore_describe_host")
        def wrap_describe(self, host: Host) -> Generator[None, list[object], list[object]]:
            yield
            raise ValueError("wrapper broke")

    plugins = Plugins([FakeFlavor("sim"), BrokenWrapper("wrapped")], entry_points=False)
    with pytest.raises(FlavorError) as info:
        plugins.describe_host(HOST)
    assert (info.value.flavor, info.value.hook) == ("wrapped", "clustercore_describe_host")
    assert "ValueError: wrapper broke" in info.value.problem


def test_a_wrapper_that_returns_no_list_is_the_flavors_failure() -> None:
    class Sloppy(FakeFlavor):
        @hookimpl(wrapper=True, specname="clustercore_maintenance_veto")
        def wrap_veto(self, host: Host) -> Generator[None, list[object], object]:
            yield
            return "not a list"

    with pytest.raises(FlavorError, match="'sloppy' failed in clustercore_maintenance_veto"):
        Plugins([Sloppy("sloppy")], entry_points=False).maintenance_vetoes(HOST, [])


def test_quiet_hooks_call_the_others_when_one_raises(caplog: pytest.LogCaptureFixture) -> None:
    class Alive(FakeFlavor):
        @hookimpl
        def clustercore_host_alive(self, host: Host) -> bool:
            return True

        @hookimpl
        def clustercore_soft_fence(self, host: Host) -> bool:
            return True

    class Raising(FakeFlavor):
        @hookimpl
        def clustercore_host_alive(self, host: Host) -> bool:
            raise OSError("lease unreadable")

        @hookimpl
        def clustercore_soft_fence(self, host: Host) -> bool:
            raise OSError("ssh failed")

        @hookimpl
        def clustercore_host_transition(self, old: Host, new: Host, event: str) -> None:
            raise OSError("told too late")

    for order in ([Alive("alive"), Raising("raising")], [Raising("raising"), Alive("alive")]):
        alive = order[0] if order[0].name == "alive" else order[1]
        plugins = Plugins(order, entry_points=False)
        assert plugins.host_alive(HOST)
        assert plugins.soft_fence(HOST) == ["alive"]
        failures = plugins.host_transition(HOST, HOST, "initialized", "test")
        assert [(f.flavor, f.hook) for f in failures] == [("raising", "clustercore_host_transition")]
        assert alive.transitions == [("h1", "initialized", "Up")]
    assert "flavor raising failed in clustercore_host_alive" in caplog.text


def test_a_flavor_added_later_is_called_on_its_own() -> None:
    plugins = Plugins([FakeFlavor("a", refuse={"h1": "no a"})], entry_points=False)
    assert plugins.bootstrap_host(HOST) == {"a": "no a"}  # callers are cached now
    plugins.add(FakeFlavor("b", refuse={"h1": "no b"}))
    seen = monitored(plugins)
    assert plugins.bootstrap_host(HOST) == {"a": "no a", "b": "no b"}
    assert sorted(called for _, called in seen) == [("a",), ("b",)]


# --------------------------------------------------------------------------- entry points


def distribution(path: Path, entry_points: str, extras: Sequence[str] = ("virt", "etcd")) -> Distribution:
    """An installed distribution ``brokenflavor`` under ``path`` declaring ``entry_points``."""
    info = path / "brokenflavor-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenflavor\nVersion: 0.1\n"
                                   + "".join(f"Provides-Extra: {extra}\n" for extra in extras))
    (info / "entry_points.txt").write_text(f"[clustercore.flavors]\n{entry_points}\n")
    return PathDistribution(info)


def test_install_hint_names_the_extra(tmp_path: Path) -> None:
    dist = distribution(tmp_path, "gpu = nowhere:flavor [gpu]\nvirt = nowhere:flavor\nother = nowhere:flavor")
    hints = {ep.name: install_hint(ep) for ep in dist.entry_points}
    assert hints == {"gpu": "pip install 'brokenflavor[gpu]'",  # written in the entry point
                     "virt": "pip install 'brokenflavor[virt]'",  # the extra named like the entry point
                     "other": "pip install 'brokenflavor'"}


def test_a_flavor_whose_import_fails_is_skipped_with_one_warning(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    distribution(tmp_path, "broken = clustercore_no_such_module:flavor [virt]")
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugins = Plugins()
    messages = [str(w.message) for w in caught if isinstance(w.message, FlavorSkipped)]
    assert messages == ["flavor 'broken' skipped: No module named 'clustercore_no_such_module'; "
                        "install it with pip install 'brokenflavor[virt]'"]
    assert "broken" not in plugins.names and set(plugins.skipped) == {"broken"}
    assert plugins.skipped["broken"].install == "pip install 'brokenflavor[virt]'"
