"""Issue 16, acceptance point 1: a cluster of three real libvirt hosts run through the
``clustercore`` command alone. A ``clustercore manager run --listen`` process (memory store)
serves the API; ``clustercore login`` pins its certificate; two lab hosts are added and
approved by an admin and beat through ``clustercore agent`` with the credential ``host add``
printed, the third joins with a join token; four VMs are created from spec files (one the
project's real Linux guest under TCG, booted from the lab's shared directory, the others
OS-less); lab1 goes into maintenance with its progress bar to completion, lab2's
maintenance is cancelled halfway through its drain, and one VM is migrated by name to lab3.
``events --follow`` runs from the start and shows each step. After every step what the
store says (``clustercore vm list -o json``) is what libvirt runs on each lab host: every
VM running once, where the store places it. This process only starts the lab, writes the
spec files and asks libvirt."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import pytest
import yaml

pytest.importorskip("libvirt")
pytest.importorskip("fastapi")

from flavors.virt.guest import GuestImage, console_lines, counter_values
from flavors.virt.guest.spec import guest_spec
from flavors.virt.lab import Lab, domain_type

pytestmark = pytest.mark.slow
PORT = 18200
BIN = Path(sys.executable).parent / "clustercore"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "clustercore.cli"]
VMS = ("real1", "vm2", "vm3", "vm4")


@attrs.frozen
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def collect(stream: IO[str], into: list[str]) -> None:
    """The lines of ``stream`` appended to ``into`` as they come."""

    def read() -> None:
        for line in stream:
            into.append(line)
    threading.Thread(target=read, daemon=True).start()


def lines(stream: IO[str]) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            out.put(line)
    threading.Thread(target=read, daemon=True).start()
    return out


@attrs.define
class Fleet:
    """The lab, the manager process and the background ``clustercore`` processes."""

    lab: Lab
    tmp: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[str]] = attrs.field(factory=list)
    url: str = ""
    fingerprint: str = ""
    vms: tuple[str, ...] = ()  # the VMs created so far

    def cc(self, *args: str, timeout: float = 60) -> Done:
        done = subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        return Done(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, timeout: float = 60) -> Done:
        done = self.cc(*args, timeout=timeout)
        assert done.code == 0, f"clustercore {' '.join(args)}: {done.code} {done.err}"
        return done

    def background(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen([*CLI, *args], env=self.env, text=True, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.processes.append(process)
        return process

    def agent(self, host: str, *extra: str) -> subprocess.Popen[str]:
        return self.background("agent", "--api", self.url, "--fingerprint", self.fingerprint, "--name", host,
                               "--credential-file", str(self.tmp / "agents" / f"{host}.credential"),
                               "--interval", "1", *extra)

    def placements(self) -> dict[str, str]:
        """Where the store says each VM runs (``vm list -o json``): name -> host."""
        out = {}
        for vm in self.ok("vm", "list", "-o", "json").json():
            placement = vm.get("placement") or {}
            assert placement.get("state") == "Running", vm
            out[vm["name"]] = placement["host"]
        return out

    def libvirt(self) -> dict[str, str]:
        """Where libvirt runs each VM (the running domains of every lab host); each runs once."""
        runs = [(d, h.name) for h in self.lab.hosts for d in h.active_domains(paused=False)]
        counts = Counter(d for d, _ in runs)
        assert all(n == 1 for n in counts.values()), f"a domain runs twice: {runs}"
        return dict(runs)

    def agree(self, step: str, limit: float = 30) -> dict[str, str]:
        """The store and libvirt agree (within ``limit`` s: a placement is written as the move
        ends); the placements."""
        deadline = time.monotonic() + limit
        while True:
            try:
                store, seen = self.placements(), self.libvirt()
                if store == seen and len(store) == len(self.vms):
                    return store
                error = f"{step}: store {store} != libvirt {seen}"
            except AssertionError as exc:
                error = f"{step}: {exc}"
            if time.monotonic() > deadline:
                raise AssertionError(error)
            time.sleep(0.3)

    def host_state(self, name: str) -> str:
        return str(self.ok("host", "show", name, "-o", "json").json()["state"])

    def until_state(self, name: str, state: str, limit: float = 30) -> None:
        deadline = time.monotonic() + limit
        while (seen := self.host_state(name)) != state:
            assert time.monotonic() < deadline, f"{name} {seen}, not {state}, after {limit} s"
            time.sleep(0.3)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLUSTERCORE_API", "CLUSTERCORE_TOKEN")}
    env["CLUSTERCORE_CONFIG"] = str(tmp_path / "cli" / "config.json")
    with Lab(3, base_port=17200) as lab:
        fleet = Fleet(lab, tmp_path, env)
        try:
            yield fleet
        finally:
            fleet.stop()


def spec_files(fleet: Fleet, image: GuestImage) -> list[Path]:
    """The four VM documents: ``real1`` the real guest (kernel and initrd on the lab's shared
    directory, no disk: its counter lives in its RAM, so a move that lost it would show),
    the others OS-less (64 MiB, no disk)."""
    shared = fleet.lab.shared
    boot = shared / "boot"
    boot.mkdir()
    for part in (image.kernel, image.initrd):
        (boot / part.name).write_bytes(part.read_bytes())
    spec = guest_spec(attrs.evolve(image, kernel=boot / image.kernel.name, initrd=boot / image.initrd.name),
                      "real1", "/unused", shared / "real1.console").to_dict()
    spec["disks"] = []
    del spec["uuid"]
    docs = [{"name": "real1", "flavor": "vm", "vm": spec}]
    docs += [{"name": name, "flavor": "vm",
              "vm": {"memory": {"size": 64}, "vcpus": 1, "domain_type": domain_type(), "balloon": False}}
             for name in VMS[1:]]
    files = []
    for doc in docs:
        path = fleet.tmp / "specs" / f"{doc['name']}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(doc))
        files.append(path)
    return files


def ticks(fleet: Fleet) -> list[int]:
    console = fleet.lab.shared / "real1.console"
    return counter_values(console_lines(console))


def until(what: str, done: Any, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, f"{what} not reached in {limit} s"
        time.sleep(0.2)


def test_three_lab_hosts_four_vms_maintenance_cancel_and_migrate_through_the_cli(
        fleet: Fleet, image: GuestImage) -> None:
    manager = fleet.background("manager", "run", "--listen", f"127.0.0.1:{PORT}", "--state-dir",
                               str(fleet.tmp / "state"), "--interval", "0.3", "--name", "m1")
    said_lines = lines(manager.stdout)  # type: ignore[arg-type]
    said = dict(said_lines.get(timeout=60).split(": ", 1) for _ in range(3))
    fleet.url, fleet.fingerprint = said["API"].strip(), said["certificate sha256 fingerprint"].strip()
    fleet.ok("login", "--api", fleet.url, "--token", said["admin token (memory store, this run only)"].strip(),
             "--fingerprint", fleet.fingerprint)
    follow = fleet.background("events", "--follow")
    shown: list[str] = []
    collect(follow.stdout, shown)  # type: ignore[arg-type]
    fleet.ok("cluster", "configure", "drain_parallel=1", "approval_required=true",
             f"storage_roots={json.dumps([str(fleet.lab.shared)])}")

    # hosts: two added and approved by an admin, beating with their credentials; one joins
    for host in fleet.lab.hosts[:2]:
        added = fleet.ok("host", "add", host.name, "--address", host.uri, "--cpu", "8", "--memory", "4096")
        credential = added.out.rsplit("clustercore agent --credential-file): ", 1)[1].strip()
        path = fleet.tmp / "agents" / f"{host.name}.credential"
        path.parent.mkdir(exist_ok=True)
        path.write_text(credential + "\n")
        path.chmod(0o600)
        fleet.ok("host", "approve", host.name)
        fleet.agent(host.name)
    lab3 = fleet.lab.hosts[2]
    join = fleet.ok("token", "create", "--join", lab3.name).out.strip()
    fleet.agent(lab3.name, "--join", join, "--address", lab3.uri, "--cpu", "8", "--memory", "4096")
    for host in fleet.lab.hosts:
        fleet.until_state(host.name, "Up", 45)
    fleet.agree("hosts up")

    # four VMs from spec files
    for path in spec_files(fleet, image):
        fleet.ok("vm", "create", "-f", str(path), "--wait", timeout=90)
        fleet.vms += (path.stem,)
    placed = fleet.agree("VMs created")
    console = fleet.lab.shared / "real1.console"
    try:
        until("real1's counter ticking", lambda: len(ticks(fleet)) >= 2, 60)
    except AssertionError:
        raise AssertionError(console.read_text() if console.exists() else "no console") from None

    # lab1 into maintenance, its progress bar to completion
    on_lab1 = sorted(vm for vm, host in placed.items() if host == "lab1")
    done = fleet.ok("host", "maintenance", "lab1", "--wait", timeout=120)
    assert "100%" in done.err and "Succeeded" in done.out, (done.out, done.err)
    assert fleet.host_state("lab1") == "Maintenance"
    placed = fleet.agree("lab1 in maintenance")
    assert "lab1" not in placed.values() and on_lab1 == sorted(set(on_lab1) & set(placed))

    # lab2's maintenance cancelled halfway: all four VMs to drain there, one at a time; the
    # cancel goes in as soon as events --follow shows the first of them moved
    for vm in sorted(vm for vm, h in placed.items() if h == "lab3"):
        fleet.ok("vm", "migrate", vm, "--to", "lab2", "--wait", timeout=90)
        placed = fleet.agree(f"{vm} moved to lab2")
    assert set(placed.values()) == {"lab2"}, placed
    started = fleet.ok("host", "maintenance", "lab2", "-o", "json").json()
    op = str(started["id"])
    until("the first VM of lab2's drain moved", lambda: any(
        "migrated lab2 -> lab3" in line for line in shown), 60)
    fleet.ok("host", "maintenance", "lab2", "--cancel")
    until("lab2's maintenance ended", lambda: fleet.ok("op", "show", op, "-o", "json").json()["state"]
          in ("Cancelled", "Succeeded", "Failed"), 60)
    cancelled = fleet.ok("op", "show", op, "-o", "json").json()
    assert cancelled["state"] == "Cancelled" and 0 < float(cancelled["progress"]) < 100, cancelled
    fleet.until_state("lab2", "Up", 30)
    placed = fleet.agree("lab2's maintenance cancelled")
    assert "lab2" in placed.values(), (placed, "".join(shown))

    # one VM migrated by name to lab3: the real guest when it is not there yet
    name = "real1" if placed["real1"] != "lab3" else next(vm for vm, h in placed.items() if h != "lab3")
    moved_from = placed[name]
    before = len(ticks(fleet))
    fleet.ok("vm", "migrate", name, "--to", "lab3", "--wait", timeout=90)
    placed = fleet.agree(f"{name} migrated")
    assert placed[name] == "lab3"
    until("real1 still ticking", lambda: len(ticks(fleet)) >= before + 2, 30)
    counted = ticks(fleet)
    assert counted == list(range(counted[0], counted[0] + len(counted))), counted  # moved, never restarted

    # what events --follow showed, step by step
    assert all(p.poll() is None for p in fleet.processes), "the manager, an agent or events --follow stopped"
    follow.send_signal(signal.SIGINT)
    assert follow.wait(timeout=15) == 130
    text = "".join(shown)
    steps = [
        "host/lab1: registered (none) -> PendingApproval", "host/lab1: approve PendingApproval -> Installing",
        "host/lab2: registered (none) -> PendingApproval", "host/lab2: approve PendingApproval -> Installing",
        "host/lab3: registered (none) -> Installing (joined with join token",
        *(f"host/{h.name}: initialized Initializing -> Up" for h in fleet.lab.hosts),
        *(f"workload/{vm}: defined" for vm in VMS), *(f"workload/{vm}: placed (none) -> lab" for vm in VMS),
        "host/lab1: prepare-maintenance Up -> PreparingForMaintenance", "off lab1)",
        "host/lab1: drained PreparingForMaintenance -> Maintenance", "Running -> Succeeded (lab1 in maintenance)",
        "host/lab2: prepare-maintenance Up -> PreparingForMaintenance", "-> lab3 (drain of lab2)",
        "host/lab2: cancel-maintenance PreparingForMaintenance -> Up", "Running -> Cancelled",
        f"workload/{name}: migrated {moved_from} -> lab3 (migration requested by operator)"]
    missing = [step for step in steps if step not in text]
    assert not missing, (missing, text)
