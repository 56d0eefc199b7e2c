"""The ``clustercore`` commands that run on: ``events --follow`` until Ctrl-C, a host agent
that joins through the API and heartbeats it to Up, ``manager run --listen`` as an operator
starts it; and the two ways in without an API: the first admin token written into the store,
and the VM of examples/vm.yaml created on libvirt's test driver through the real app."""

from __future__ import annotations

import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from clustercore import HostState, Plugins
from clustercore.testing import FakeFlavor

from .cli_support import Served, run, served

CLI = [sys.executable, "-m", "clustercore.cli"]
EXAMPLE = Path(__file__).parent.parent / "examples" / "vm.yaml"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-state")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli" / "config.json"
    monkeypatch.setenv("CLUSTERCORE_CONFIG", str(path))
    for name in ("CLUSTERCORE_API", "CLUSTERCORE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return path


def fake(config: Path, state_dir: Path, period: float = 0.02) -> Iterator[Served]:
    hosts = [{"name": f"h{i}", "capacity": {"cpu": 8, "memory": 8192}} for i in (1, 2)]
    with served(config, state_dir, Plugins([FakeFlavor("fake")], entry_points=False), hosts, period=period) as s:
        yield s


@pytest.fixture
def api(config: Path, state_dir: Path) -> Iterator[Served]:
    yield from fake(config, state_dir)


def lines(stream: IO[str]) -> queue.Queue[str]:
    """The lines of ``stream`` as they come."""
    out: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            out.put(line)
    threading.Thread(target=read, daemon=True).start()
    return out


def stopped(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=15)
    finally:
        process.kill()
    return process.returncode, err


def test_events_follow_until_ctrl_c(api: Served) -> None:
    process = subprocess.Popen([*CLI, "events", "--follow", "--subject", "host/h2"], env=api.env(), text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = lines(process.stdout)  # type: ignore[arg-type]
    got: list[str] = []
    for i in range(60):  # until the stream is subscribed and the change is seen
        api.cluster.update_host("h2", {"labels": {"n": str(i)}}, by="test")
        try:
            got.append(out.get(timeout=0.5))
            break
        except queue.Empty:
            continue
    code, err = stopped(process, signal.SIGINT)
    assert got and got[0].split(" ", 2)[2].startswith("host/h2: ") and "updated by test" in got[0]
    assert code == 130 and err == ""


def test_an_agent_joins_through_the_api_and_beats_its_host_up(config: Path, state_dir: Path,
                                                              tmp_path: Path) -> None:
    for api in fake(config, state_dir, period=0.2):
        api.silent.add("n1")  # only its agent beats for it
        secret = run("token", "create", "--join", "n1").out.strip()
        credential = tmp_path / "agent" / "n1.credential"
        argv = [*CLI, "agent", "--api", api.url, "--fingerprint", api.server.fingerprint, "--join", secret,
                "--name", "n1", "--address", "10.0.0.9", "--cpu", "4", "--memory", "2048", "--label", "rack=r9",
                "--credential-file", str(credential), "--interval", "0.1"]
        process = subprocess.Popen(argv, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (
                    "n1" not in api.cluster.hosts() or api.cluster.host("n1").state is not HostState.UP):
                assert process.poll() is None, process.communicate()
                time.sleep(0.1)
            host = api.cluster.host("n1")
            assert host.state is HostState.UP and host.address == "10.0.0.9" and dict(host.labels) == {"rack": "r9"}
            assert host.capacity.cpu == 4
            assert stat.S_IMODE(credential.stat().st_mode) == 0o600
        finally:
            code, err = stopped(process, signal.SIGTERM)
        assert code == 0 and "Traceback" not in err, err
        # started again with the same command line, it beats with its credential (the token is spent)
        process = subprocess.Popen(argv, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        time.sleep(2)
        code, err = stopped(process, signal.SIGTERM)
        assert code == 0 and "refused" not in err, err
        assert api.cluster.host("n1").state is HostState.UP
        refused = subprocess.run([*argv[:-4], "--credential-file", str(tmp_path / "other"), "--interval", "0.1"],
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert refused.returncode == 4 and len(refused.stderr.splitlines()) == 1, refused.stderr


def test_the_first_admin_token_straight_into_the_store(api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    import clustercore.store.url

    monkeypatch.setattr(clustercore.store.url, "open_store", lambda url, prefix, **access: api.cluster.store)
    made = run("token", "create", "--store", "etcd://10.0.0.1:2379", "root", "--role", "admin")
    assert made.code == 0 and made.out.startswith("cc_")
    assert run("whoami", "--token", made.out.strip()).out.startswith("root (admin)")
    memory = run("token", "create", "--store", "memory://", "root", "--role", "admin")
    assert memory.code == 2 and "inside one process" in memory.err


def test_manager_run_listen_prints_what_login_needs(tmp_path: Path, config: Path) -> None:
    process = subprocess.Popen([*CLI, "manager", "run", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path),
                                "--interval", "0.2", "--name", "m1"], text=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = lines(process.stdout)  # type: ignore[arg-type]
    try:
        said = dict(out.get(timeout=30).split(": ", 1) for _ in range(3))
        url, fp = said["API"].strip(), said["certificate sha256 fingerprint"].strip()
        token = said["admin token (memory store, this run only)"].strip()
        assert run("login", "--api", url, "--token", token, "--fingerprint", fp).code == 0
        assert run("host", "add", "n1", "--cpu", "2", "--memory", "1024").code == 0
        assert [h["name"] for h in run("host", "list", "-o", "json").json()] == ["n1"]
        assert (tmp_path / "api-cert.pem").exists() and stat.S_IMODE((tmp_path / "api-key.pem").stat().st_mode) == 0o600
    finally:
        code, err = stopped(process, signal.SIGTERM)
    assert code == 0 and "Traceback" not in err, err


def test_the_example_vm_is_created_on_libvirts_test_driver(config: Path, state_dir: Path) -> None:
    pytest.importorskip("libvirt")
    from flavors.virt import VirtFlavor

    host = {"name": "virt1", "address": "test:///default", "capacity": {"cpu": 8, "memory": 8192}}
    with served(config, state_dir, Plugins([VirtFlavor()], entry_points=False), [host]) as api:
        created = run("vm", "create", "-f", str(EXAMPLE), "--wait")
        assert created.code == 0, created.err
        assert created.out.rstrip().endswith("Succeeded: virt1")
        vm = run("vm", "show", "web1", "-o", "json").json()
        assert vm["flavor"] == "vm" and vm["ha"] is True and vm["placement"]["state"] == "Running"
        assert vm["spec"]["name"] == "web1" and len(vm["spec"]["uuid"]) == 36 and vm["requests"]["memory"] == 2048
        assert run("vm", "delete", "web1", "--wait").code == 0
        assert "web1" not in api.cluster.workloads()


def test_op_wait_stops_at_ctrl_c(api: Served) -> None:
    """``op wait`` on an operation that does not end stops at Ctrl-C: 130, no traceback."""
    api.paused.set()  # the leader never gets to it
    op = run("host", "maintenance", "h1", "-o", "json").json()
    assert op["state"] == "Pending"
    process = subprocess.Popen([*CLI, "op", "wait", op["id"]], env=api.env(), text=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2)
    code, err = stopped(process, signal.SIGINT)
    assert code == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
