"""The example non-VM flavor: real processes, directories as hosts, through the whole core."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustercore import Cluster, FakeClock, Host, HostReport, HostState, Plugins, Workload, hookimpl
from clustercore.errors import ConformanceError, NoValidHost, ValidationError
from clustercore.model import Resources
from clustercore.testing import check_flavor

procflavor = pytest.importorskip("procflavor", reason="install examples/procflavor (./dev test does)")

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def flavor() -> Iterator[procflavor.ProcessFlavor]:
    flavor = procflavor.ProcessFlavor(stop_timeout=2.0)
    yield flavor
    for _pid, child in list(flavor.driver._children.items()):
        child.kill()
        child.wait()


def dir_host(tmp_path: Path, name: str, **labels: str) -> Host:
    directory = tmp_path / name
    directory.mkdir()
    return Host(name, capacity=Resources(4, 4096), address=str(directory), labels=labels, state=HostState.UP)


def pid_of(host: Host, workload: str) -> int:
    return int((Path(host.address) / f"{workload}.pid").read_text())


def running(pid: int) -> bool:
    return procflavor._alive(pid)


def test_the_process_flavor_passes_the_conformance_suite(tmp_path: Path, flavor: procflavor.ProcessFlavor) -> None:
    a, b = dir_host(tmp_path, "a"), dir_host(tmp_path, "b")
    report = check_flavor(flavor, a, Workload("sleeper", "proc", spec={"argv": SLEEP}), b)
    assert "migrate: gone from source" in report.passed and "stop is idempotent" in report.passed


def test_a_flavor_whose_stop_leaves_the_process_fails_conformance(
    tmp_path: Path, flavor: procflavor.ProcessFlavor
) -> None:
    class Leaky(procflavor.ProcessDriver):
        def stop(self, workload: Workload, host: Host, force: bool = False) -> None:
            if force:  # only the suite's final clean-up really stops
                super().stop(workload, host, force)

    flavor.driver = Leaky()
    a = dir_host(tmp_path, "a")
    with pytest.raises(ConformanceError) as info:
        check_flavor(flavor, a, Workload("sleeper", "proc", spec={"argv": SLEEP}))
    assert "still RUNNING on a after stop returned" in str(info.value)
    assert flavor.driver.inspect(Workload("sleeper", "proc", spec={"argv": SLEEP}), a) is not \
        procflavor.WorkloadState.RUNNING


def test_a_misspelled_hook_fails_conformance(tmp_path: Path) -> None:
    class Typo(procflavor.ProcessFlavor):
        @hookimpl(optionalhook=True)
        def clustercore_bootstrap_hots(self, host: Host) -> None:
            return None

    with pytest.raises(ConformanceError, match="clustercore_bootstrap_hots is not a clustercore hook"):
        check_flavor(Typo(), dir_host(tmp_path, "a"), Workload("s", "proc", spec={"argv": SLEEP}))


@pytest.mark.parametrize(
    ("spec", "field"),
    [({}, "spec.argv"), ({"argv": []}, "spec.argv"), ({"argv": ["x"], "env": {"A": 1}}, "spec.env.A"),
     ({"argv": ["x"], "cwd": "/"}, "spec.cwd")],
)
def test_a_malformed_spec_names_the_field(tmp_path: Path, flavor: procflavor.ProcessFlavor, spec: dict[str, object],
                                          field: str) -> None:
    with pytest.raises(ValidationError) as info:
        flavor.driver.start(Workload("bad", "proc", spec=spec), dir_host(tmp_path, "a"))
    assert info.value.field == field


def test_bootstrap_refuses_a_missing_directory(tmp_path: Path, flavor: procflavor.ProcessFlavor) -> None:
    host = Host("ghost", address=str(tmp_path / "nowhere"))
    assert "does not exist" in (flavor.clustercore_bootstrap_host(host) or "")
    other = Host("vm-host", address="qemu+tcp://127.0.0.1:16509/system")  # another flavor's host
    assert flavor.clustercore_bootstrap_host(other) is None and flavor.clustercore_describe_host(other) is None


def test_a_cluster_of_directories_runs_and_drains_real_processes(
    tmp_path: Path, flavor: procflavor.ProcessFlavor
) -> None:
    clock = FakeClock()
    cluster = Cluster(plugins=Plugins([flavor], entry_points=False), clock=clock)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        cluster.register_host({"name": name, "address": str(tmp_path / name),
                               "capacity": {"cpu": 4, "memory": 4096}, "labels": {"proc/slots": "2"}})

    def tick() -> None:
        for name in ("a", "b"):
            cluster.heartbeat(name, HostReport())
        clock.advance(5)
        cluster.step()

    tick()
    tick()
    assert {h.state for h in cluster.hosts().values()} == {HostState.UP}
    assert cluster.host("a").capacity.get("proc/slots") == 2
    placement = cluster.submit({"name": "sleeper", "flavor": "proc", "spec": {"argv": SLEEP}})
    first = cluster.host(placement.host)
    pid = pid_of(first, "sleeper")
    assert running(pid)

    cluster.start_maintenance(first.name)
    for _ in range(4):
        tick()
    assert cluster.host(first.name).state is HostState.MAINTENANCE
    moved = cluster.placements()["sleeper"]
    other = cluster.host(moved.host)
    assert other.name != first.name
    assert not running(pid) and not (Path(first.address) / "sleeper.pid").exists()
    new_pid = pid_of(other, "sleeper")
    assert running(new_pid)

    cluster.stop("sleeper")
    assert not running(new_pid)
    assert "sleeper" not in cluster.placements()


def test_the_slots_filter_caps_processes_per_host(tmp_path: Path, flavor: procflavor.ProcessFlavor) -> None:
    clock = FakeClock()
    cluster = Cluster(plugins=Plugins([flavor], entry_points=False), clock=clock)
    (tmp_path / "a").mkdir()
    cluster.register_host({"name": "a", "address": str(tmp_path / "a"), "capacity": {"cpu": 8, "memory": 8192},
                           "labels": {"proc/slots": "1"}})
    for _ in range(2):
        cluster.heartbeat("a", HostReport())
        clock.advance(5)
        cluster.step()
    cluster.submit({"name": "one", "flavor": "proc", "spec": {"argv": SLEEP}})
    with pytest.raises(NoValidHost, match="1 no free process slot"):
        cluster.submit({"name": "two", "flavor": "proc", "spec": {"argv": SLEEP}})
    cluster.stop("one")


def test_installed_entry_point_loads_the_flavor() -> None:
    eps = importlib.metadata.entry_points(group="clustercore.flavors")
    if "proc" not in {ep.name for ep in eps}:
        pytest.skip("procflavor is importable but not installed as a distribution")
    assert "proc" in Plugins().names
    assert Plugins().driver("proc").flavor == "proc"
