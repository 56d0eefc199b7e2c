"""The podman lab on real hosts: three ``podman system service`` hosts in their own
namespaces (API ports 17400..17402, BMCs on UDP 7030..7032), one image loaded everywhere,
cgroup limits, power cuts, hangs, ``fence_ipmilan`` through the lab BMCs, and a container
checkpointed on one host and restored on another with the CRIU the lab found or built.
Other podman labs of this file use ports 17410..17412."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

podman = pytest.importorskip("podman", reason="the containers extra (podman-py) is not installed")
from podman import PodmanClient  # noqa: E402
from podman.domain.containers import Container  # noqa: E402

from flavors.containers.criu import VERSION, ensure_criu, locate_criu  # noqa: E402
from flavors.containers.lab import IMAGE, PodmanHost, PodmanLab  # noqa: E402
from flavors.containers.labcluster import COUNT  # noqa: E402
from flavors.virt.labnet import PortInUse  # noqa: E402
from flavors.virt.labprocs import alive  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(subprocess.run(["which", "podman"], capture_output=True).returncode != 0,
                                 reason="podman is not installed (./dev test installs it)")]
REPO = Path(__file__).resolve().parents[1]
COUNTER = ["sh", "-c", COUNT]


@pytest.fixture(scope="module")
def lab() -> Iterator[PodmanLab]:
    with PodmanLab(3, base_port=17400, bmc=True) as lab:
        yield lab


def client(host: PodmanHost) -> PodmanClient:
    return PodmanClient(base_url=host.uri, timeout=10)


def run(lab: PodmanLab, host: PodmanHost, name: str, command: list[str] = COUNTER, **extra: Any) -> Container:
    made = client(host).containers.create(IMAGE, command, name=name, cgroup_parent=lab.cgroup_parent,
                                          network_mode="host", **extra)
    made.start()
    made.reload()
    assert made.status == "running", made.logs()
    return made


def drop(host: PodmanHost, name: str) -> None:
    """Remove a container at once (its shell, PID 1, ignores SIGTERM: no 10 s stop timeout)."""
    answer = client(host).api.delete(f"/containers/{name}", params={"force": True, "timeout": 0})
    assert answer.ok, answer.text


def count(container: Container) -> int:
    code, (out, err) = container.exec_run(["cat", "/tmp/count"], demux=True)
    assert code == 0, err
    return int(out)


def until(done: Callable[[], bool], limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, f"not reached in {limit} s"
        time.sleep(0.05)


def counted(directory: Path) -> int:
    """The count a container writes into ``directory``: 0 before its first (or mid-) write."""
    try:
        return int((directory / "count").read_text() or 0)
    except FileNotFoundError:
        return 0


def status(host: PodmanHost, name: str) -> str:
    found = client(host).containers.get(name)
    found.reload()
    return str(found.status)


def test_every_host_has_the_same_image_id(lab: PodmanLab) -> None:
    ids = {client(h).images.get(IMAGE).id for h in lab.hosts}
    assert ids == {lab.image_id} and len(lab.image_id) == 64


def test_a_counter_runs_with_its_cgroup_limits(lab: PodmanLab) -> None:
    made = run(lab, lab.hosts[0], "limited", mem_limit="32m", cpu_period=100_000, cpu_quota=50_000, pids_limit=64)
    try:
        config = made.attrs["HostConfig"]
        assert (config["Memory"], config["CpuQuota"], config["CpuPeriod"], config["PidsLimit"]) == (
            32 << 20, 50_000, 100_000, 64)
        assert config["CgroupParent"] == lab.cgroup_parent
        first = count(made)
        until(lambda: count(made) > first)
        memory = Path(f"/sys/fs/cgroup/memory{lab.cgroup_parent}/libpod-{made.id}/memory.limit_in_bytes")
        if memory.exists():  # cgroup v1: the kernel's own word
            assert int(memory.read_text()) == 32 << 20
    finally:
        drop(lab.hosts[0], "limited")


def test_a_power_cut_kills_only_that_hosts_containers(lab: PodmanLab) -> None:
    victim_host, other = lab.hosts[1], lab.hosts[0]
    run(lab, victim_host, "victim")
    bystander = run(lab, other, "bystander")
    # the counter's own children (its sleeps, between renames) belong to the host's tree
    until(lambda: "sleep" in {name for name, _ in victim_host.processes().values()})
    doomed = victim_host.processes()
    lab.power_cut(1)
    assert not victim_host.running and not victim_host.answers()
    assert not [pid for pid, seen in doomed.items() if alive(pid, seen)], "a process of the host survived"
    before = count(bystander)
    until(lambda: count(bystander) > before)
    lab.power_on(1)
    assert status(victim_host, "victim") in ("created", "exited", "stopped")  # rebooted: not running
    drop(victim_host, "victim")
    drop(other, "bystander")


def test_a_hung_host_keeps_its_containers_running(lab: PodmanLab) -> None:
    host = lab.hosts[2]
    shared = lab.shared / "hang"
    shared.mkdir()
    run(lab, host, "hung", ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /shared/count; "
                                   "sleep 0.05; done"], mounts=[{"type": "bind", "source": str(shared),
                                                                  "target": "/shared"}])
    lab.hang(2)
    try:
        assert not host.answers(timeout=0.5)
        until(lambda: counted(shared) > 0)
        before = counted(shared)
        until(lambda: counted(shared) > before + 5)  # still counting
    finally:
        lab.resume(2)
    assert host.answers(timeout=5)
    assert status(host, "hung") == "running"
    drop(host, "hung")


def fence(lab: PodmanLab, host: PodmanHost, action: str) -> subprocess.CompletedProcess[str]:
    assert lab.bmcs is not None
    return subprocess.run(["fence_ipmilan", "--ip", "127.0.0.1", "--ipport", str(host.bmc_port), "-l",
                           lab.bmcs.username, "-p", lab.bmcs.password, "--lanplus", "-o", action],
                          capture_output=True, text=True, timeout=60, check=False)


def test_fence_ipmilan_powers_a_podman_host_off_and_on(lab: PodmanLab) -> None:
    host = lab.hosts[2]
    run(lab, host, "fenced")
    assert "Status: ON" in fence(lab, host, "status").stdout
    done = fence(lab, host, "off")
    assert done.returncode == 0, done.stderr
    assert not host.running and not host.answers()
    assert "Status: OFF" in fence(lab, host, "status").stdout
    done = fence(lab, host, "on")
    assert done.returncode == 0, done.stderr
    until(host.answers, 30)
    assert status(host, "fenced") != "running"  # its power was cut
    drop(host, "fenced")


def test_checkpoint_on_one_host_restores_on_another_with_its_memory(lab: PodmanLab) -> None:
    if lab.criu.path is None:
        pytest.skip(f"no working CRIU: {lab.criu.reason}")
    source, target = lab.hosts[0], lab.hosts[1]
    made = run(lab, source, "moved")
    until(lambda: count(made) > 40)  # about 2 s of counting: a restart from 0 takes as long to get here
    answer = client(source).api.post("/containers/moved/checkpoint", params={"export": True}, stream=True)
    assert answer.ok, answer.text
    archive = b"".join(answer.iter_content(1 << 20))
    stopped_at = int((Path(made.attrs["GraphDriver"]["Data"]["UpperDir"]) / "tmp" / "count").read_text())
    assert status(source, "moved") != "running"
    began = time.monotonic()
    restored = client(target).api.post("/containers/import/restore", params={"import": True}, data=archive,
                                       headers={"Content-Type": "application/x-tar"})
    assert restored.ok, restored.text
    moved = client(target).containers.get("moved")
    moved.reload()
    assert moved.status == "running" and moved.id == made.id
    now = count(moved)
    assert stopped_at <= now < stopped_at + 20 and time.monotonic() - began < 1.5, (stopped_at, now)
    until(lambda: count(moved) > now)  # and counting on
    drop(source, "moved")
    assert "moved" not in {c.name for c in client(source).containers.list(all=True)}
    drop(target, "moved")


def test_a_port_in_use_is_named_before_the_host_starts(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 17411))
        held.listen()
        lab = PodmanLab(1, root=tmp_path, base_port=17411, criu=False, image=False)
        with pytest.raises(PortInUse, match=r"pod1: TCP port 127\.0\.0\.1:17411 is already in use"), lab:
            pass
    assert not lab.hosts[0].running


def test_sigterm_tears_the_lab_down(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from flavors.containers.lab import PodmanLab
        with PodmanLab(1, root=__import__("pathlib").Path({str(tmp_path)!r}), base_port=17410, criu=False,
                       image=False) as lab:
            print(lab.hosts[0].process.pid, flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        assert Path(f"/proc/{pid}").exists()
        child.terminate()
        assert child.wait(30) == -15
    finally:
        child.kill()
    until(lambda: subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).returncode == 1, 5)
    with socket.socket() as free:
        free.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        free.bind(("127.0.0.1", 17410))  # no podman service holds it


def test_a_criu_failing_its_check_is_none_with_the_reason_logged(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CLUSTERCORE_CRIU", "/bin/false")
    with caplog.at_level(logging.WARNING, "flavors.containers.criu"):
        assert ensure_criu() is None
    assert "CLUSTERCORE_CRIU=/bin/false: /bin/false check failed (1)" in caplog.text


def test_no_criu_and_no_build_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no system criu
    found = locate_criu(tmp_path, build=False)
    assert found.path is None
    assert found.reason == f"system criu: no criu on PATH; no working build in {tmp_path / VERSION}"


def test_the_containers_flavor_keeps_the_flavor_contract(lab: PodmanLab) -> None:
    """check_flavor on two real podman hosts: hooks, filters, start/inspect/stop, and a
    move by checkpoint (where the lab has CRIU)."""
    from clustercore.model import Host
    from clustercore.resources import Resources
    from clustercore.testing import check_flavor
    from flavors.containers import ContainersFlavor, ContainerSpec, PodmanDriver, container_workload

    hosts = [Host(h.name, address=h.uri, labels=h.labels, capacity=Resources(cpu=2, memory=1024))
             for h in lab.hosts[:2]]
    spec = ContainerSpec(name="conform", image=IMAGE, memory=64, command=tuple(COUNTER), stop_timeout=0)
    flavor = ContainersFlavor(PodmanDriver(cgroup_parent=lab.cgroup_parent))
    moves = lab.criu.path is not None
    report = check_flavor(flavor, hosts[0], container_workload(spec), hosts[1] if moves else None)
    assert report.flavor == "containers"
    wanted = {"loading", "registers a driver", "clustercore_describe_host", "start then inspect", "stop is idempotent"}
    assert wanted | ({"migrate: runs on target", "migrate: gone from source"} if moves else set()) \
        <= set(report.passed), report.passed
    assert all("conform" not in {c.name for c in client(h).containers.list(all=True)} for h in lab.hosts[:2])


def test_a_name_that_is_another_containers_id_prefix_is_no_find(lab: PodmanLab) -> None:
    """podman looks a name up as an id prefix too; the driver must not take a stranger whose
    id begins with the name for the container of that name (a moved ``c5`` found as ``c1``
    whose id began with c5: a CI run once saw store and podman disagree after a drain)."""
    from clustercore.driver import WorkloadState
    from clustercore.model import Host
    from flavors.containers import ContainerSpec, PodmanDriver, container_workload

    host = lab.hosts[0]
    made = run(lab, host, "stranger")
    try:
        prefix = made.id[:4]
        assert client(host).containers.get(prefix).name == "stranger"  # what podman does
        driver = PodmanDriver(cgroup_parent=lab.cgroup_parent)
        spec = ContainerSpec(name=prefix, image=IMAGE, memory=32, command=tuple(COUNTER), stop_timeout=0)
        target = Host(host.name, address=host.uri, labels=host.labels)
        assert driver.inspect_state(prefix, target) == "absent"
        assert driver.inspect(container_workload(spec), target) is WorkloadState.ABSENT
        driver.stop(container_workload(spec), target, force=True)  # stops nothing of the stranger's
        assert status(host, "stranger") == "running"
    finally:
        drop(host, "stranger")


def test_the_flavor_measures_a_busy_and_an_idle_container(lab: PodmanLab) -> None:
    """Two samples of a podman host (libpod's container stats, the host's info) make its
    load: a container spinning keeps about one CPU busy, a sleeping one about none; a
    container the cluster does not know counts towards the host but is not reported."""
    from clustercore.model import Host
    from clustercore.statistics import rates
    from flavors.containers import ContainersFlavor, ContainerSpec, PodmanDriver, container_workload

    host = lab.hosts[0]
    run(lab, host, "spin", ["sh", "-c", "while true; do :; done"])
    run(lab, host, "nap", ["sleep", "1000"])
    run(lab, host, "stranger", ["sleep", "1000"])
    flavor = ContainersFlavor(PodmanDriver(cgroup_parent=lab.cgroup_parent))
    known = [container_workload(ContainerSpec(name=n, image=IMAGE, memory=64, command=("true",)))
             for n in ("spin", "nap")]
    record = Host(host.name, address=host.uri, labels=host.labels)
    try:
        first = flavor.clustercore_sample_host(record, known)
        time.sleep(2)
        second = flavor.clustercore_sample_host(record, known)
        assert first is not None and second is not None and set(second.workloads) == {"spin", "nap"}
        load = rates(first, second)
        assert load is not None
        assert 0.5 < load.workloads["spin"].cpu <= 1.05 and load.workloads["nap"].cpu < 0.05, load.workloads
        assert load.cpu >= load.workloads["spin"].cpu / second.cpus - 0.05 and load.memory_available > 0
        assert second.workloads["nap"].memory > 0
    finally:
        for name in ("spin", "nap", "stranger"):
            drop(host, name)
