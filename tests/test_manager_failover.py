"""Three ``clustercore manager run --listen`` processes over a real 3-member etcd drive three
lab hosts (real libvirtd + QEMU guests, an IPMI BMC each, ClusterLabs' ``fence_ipmilan``),
each serving the HTTP API. The leader is SIGKILLed (with its process group: its fence agent
dies too) in the middle of a maintenance drain an operator started through a follower's API
with the ``clustercore`` command (the operation is finished by the next leader, and the
``clustercore op wait`` begun before the kill returns its result), then in the middle of a
fencing action. Host agents keep each
host's heartbeat on an etcd lease, probing its libvirtd from outside as oVirt's engine
polls VDSM. A watcher asks every host, many times a second, which guests run there (by
libvirtd, or by QEMU processes when libvirtd is cut off): no guest ever runs on two.

The drain moves the project's real guest (TCG, 160 MiB, dirtying and checking 16 MiB,
its counter on a clone on the shared domain), made by a passive LabCluster on the
managers' store; afterwards every guest is checked (LabCluster.check_guest: no page lost,
the counter file on its disk whole, still ticking, moved or rolled back but never
restarted). The fencing phase then runs OS-less guests where the real ones ran, as before:
a real guest's disk lease, still held by the cut-off host's lock daemon, makes the
liveness witness say the host is alive (rightly: it still writes to the shared storage),
so that host would never be fenced.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from clustercore import ClusterConfig, HostState, auth
from clustercore.agent import HostAgent
from clustercore.api.tls import fingerprint
from clustercore.fencing import FencePolicy
from clustercore.leadership import LEADER_KEY
from clustercore.lifecycle import LivenessPolicy
from clustercore.model import HostReport, PlacementState, Workload
from clustercore.store.etcd import EtcdStore
from clustercore.testing import EtcdCluster
from flavors.virt.guest import GuestImage
from flavors.virt.lab import Lab, domain_type
from flavors.virt.labcluster import LabCluster
from flavors.virt.spec import Memory, VMSpec
from flavors.virt.workload import vm_workload

pytestmark = pytest.mark.slow
S = HostState
TTL = 3.0
CONFIG = ClusterConfig(
    liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2, grace_per_workload=0),
    fencing=FencePolicy(startup_grace=0, soft_first=False, retries=1, retry_delay=1, confirm_timeout=10, backoff=5),
    orphan_after=3, drain_parallel=1,
    call_wait=0.2)  # a pass waits up to 3 x call_wait for hosts: below the managers' pass limit (TTL / 3)
GUESTS = [f"g{i}" for i in range(4)]
MANAGERS = ("m1", "m2", "m3")
API_PORT = 23870  # m1's API; m2's the next port, m3's the one after
CLI = [sys.executable, "-m", "clustercore.cli"]


class Watcher:
    """Asks every lab host which guests run there, until stopped; remembers any guest seen
    running on two hosts at once."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.twice: list[dict[str, list[str]]] = []
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def where(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for host in self.lab.hosts:
            if not host.running:
                continue
            if host.reachable:
                try:
                    guests = host.active_domains(paused=False)  # a migration's paused end does not run
                except Exception:
                    guests = host.qemu_guests()
            else:
                guests = host.qemu_guests()
            for guest in guests:
                out.setdefault(guest, []).append(host.name)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            seen = self.where()
            self.looks += 1
            if any(len(hosts) > 1 for hosts in seen.values()):
                self.twice.append(seen)
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Fleet:
    def __init__(self, lab: Lab, etcd: EtcdCluster, logs: Path) -> None:
        self.lab = lab
        self.url = etcd.url
        self.prefix = f"/failover/{uuid.uuid4().hex[:8]}/"
        self.logs = logs
        assert lab.bmcs is not None  # the hosts are registered with their BMCs as fence devices
        self.lc = LabCluster(lab, CONFIG, store=EtcdStore(self.url, prefix=self.prefix), passive=True)
        self.driver = self.lc.driver
        self.cluster = self.lc.cluster
        self.stop_agents = threading.Event()
        self.agents = []
        for host in lab.hosts:
            probe = self._probe(host.name)
            agent = HostAgent(EtcdStore(self.url, prefix=self.prefix), host.name, interval=0.5, ttl=2,
                              report=HostReport, probe=probe, credential=self.cluster.credentials[host.name])
            thread = threading.Thread(target=agent.run, args=(self.stop_agents,), daemon=True)
            thread.start()
            self.agents.append(thread)
        self.managers: dict[str, subprocess.Popen[bytes]] = {}
        for name in MANAGERS:
            self.start_manager(name)
        self.token = auth.create_token(self.cluster.store, "operator1", "operator")

    def _probe(self, name: str) -> Callable[[], bool]:
        host = self.lab.host(name)
        return lambda: host.running and host.reachable and self.driver.answers(self.cluster.host(name), timeout=1)

    def start_manager(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.managers[name] = subprocess.Popen(
            [*CLI, "-v", "manager", "run", "--store", self.url, "--prefix", self.prefix, "--name", name,
             "--ttl", str(TTL), "--interval", "0.3", "--listen", f"127.0.0.1:{API_PORT + MANAGERS.index(name)}",
             "--state-dir", str(self.logs / f"api-{name}")],
            stdout=log, stderr=log, start_new_session=True)

    def cli_env(self, via: str) -> dict[str, str]:
        """The environment of a ``clustercore`` command logged in (as an operator) to the API
        of manager ``via``: the login pins the certificate that manager made."""
        config = self.logs / f"cli-{via}.json"
        env = {**os.environ, "CLUSTERCORE_CONFIG": str(config)}
        if not config.exists():
            cert, url = self.logs / f"api-{via}" / "api-cert.pem", f"https://127.0.0.1:{API_PORT + MANAGERS.index(via)}"
            self.until(cert.exists, 30)
            login = [*CLI, "login", "--api", url, "--token", self.token, "--fingerprint", fingerprint(cert)]
            self.until(lambda: subprocess.run(login, env=env, capture_output=True, timeout=30).returncode == 0, 30, 0.5)
        return env

    def cli(self, via: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``clustercore ARGS`` against manager ``via``'s API; it must succeed."""
        done = subprocess.run([*CLI, *args], env=self.cli_env(via), capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"clustercore {' '.join(args)}: {done.returncode} {done.stderr}"
        return done

    def leader(self) -> str | None:
        kv = self.cluster.store.get(LEADER_KEY)
        return kv.value.decode() if kv is not None else None

    def kill_leader(self) -> str:
        """SIGKILL the leader's process group: the manager and whatever it runs (fence agents)."""
        name = self.leader()
        assert name is not None
        os.killpg(self.managers[name].pid, signal.SIGKILL)
        self.managers[name].wait()
        return name

    def until(self, done: Callable[[], bool], limit: float = 60.0, poll: float = 0.2) -> float:
        start = time.monotonic()
        while not done():
            if time.monotonic() - start > limit:
                raise AssertionError(f"not reached in {limit} s; leader {self.leader()}; hosts "
                                     f"{ {n: str(h.state) for n, h in self.cluster.hosts().items()} }; events "
                                     f"{self.cluster.query_events()[-8:]}")
            time.sleep(poll)
        return time.monotonic() - start

    def close(self) -> None:
        for proc in self.managers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.stop_agents.set()
        for thread in self.agents:
            thread.join(5)
        for host in self.lab.hosts:
            host.heal()
            if not host.running:
                host.power_on()
        for name in GUESTS:
            for host in self.lab.hosts:
                with contextlib.suppress(Exception):
                    self.driver.stop(self.cluster.workloads()[name], self.cluster.host(host.name), force=True)
        self.lc.close()


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(3, base_port=23830) as cluster:
        yield cluster


@pytest.fixture
def fleet(etcd: EtcdCluster, tmp_path: Path) -> Iterator[Fleet]:
    with Lab(3, base_port=16780, bmc=True) as lab:
        fleet = Fleet(lab, etcd, tmp_path)
        try:
            yield fleet
        finally:
            fleet.close()
            for log in sorted(tmp_path.glob("m*.log")):
                print(f"--- {log.name} (tail)\n{log.read_text()[-3000:]}")


def os_less(name: str, priority: int, host: str) -> Workload:
    """An OS-less HA guest (no disk, so no lease) on ``host``."""
    spec = VMSpec(name=name, uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"failover-{name}")), memory=Memory(64),
                  domain_type=domain_type())
    return vm_workload(spec, ha=True, priority=priority, pinned=frozenset({host}))


def test_the_leader_killed_mid_drain_then_mid_fencing(fleet: Fleet, image: GuestImage) -> None:
    c, lc = fleet.cluster, fleet.lc
    fleet.until(lambda: all(h.state is S.UP for h in c.hosts().values()), 60)
    lc.storage(image)
    # every guest on lab1: the others in maintenance while they start
    for other in ("lab2", "lab3"):
        c.start_maintenance(other)
    fleet.until(lambda: all(c.host(n).state is S.MAINTENANCE for n in ("lab2", "lab3")))
    for i, name in enumerate(GUESTS):
        lc.guest(name, ha=True, priority=i, dirty_mib=16)
    for other in ("lab2", "lab3"):
        c.activate_host(other)
    fleet.until(lambda: all(h.state is S.UP for h in c.hosts().values()))
    lc.wait_booted(*GUESTS)
    watcher = Watcher(fleet.lab)
    try:
        assert {g: h for g, hs in watcher.where().items() for h in hs} == dict.fromkeys(GUESTS, "lab1")

        # 1. An operator drains lab1 through a follower's API and waits for it there; the
        #    leader is killed as soon as a guest is migrating.
        via = next(name for name in MANAGERS if name != fleet.leader())
        op = json.loads(fleet.cli(via, "host", "maintenance", "lab1", "-o", "json").stdout)
        assert op["kind"] == "maintenance" and op["target"] == "lab1", op
        waiter = subprocess.Popen([*CLI, "op", "wait", op["id"], "-o", "json"], env=fleet.cli_env(via), text=True,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        fleet.until(lambda: any(p.state is PlacementState.MIGRATING for p in c.placements().values()), 30, 0.02)
        killed = fleet.kill_leader()
        assert killed != via and str(c.operation(op["id"]).state) == "Running"  # the dead leader's, unfinished
        in_flight = [n for n, p in c.placements().items() if p.state is PlacementState.MIGRATING]
        took = fleet.until(lambda: fleet.leader() not in (None, killed), 3 * TTL)
        assert took < TTL + 2, f"new leader after {took:.1f} s"
        fleet.until(lambda: c.host("lab1").state is S.MAINTENANCE, 90)
        try:  # the wait begun before the kill returns the operation the next leader finished
            out, err = waiter.communicate(timeout=60)
        finally:
            waiter.kill()
        assert waiter.returncode == 0, err
        final = json.loads(out)
        assert (final["id"], final["state"], final["progress"]) == (op["id"], "Succeeded", 100), final
        assert json.loads(fleet.cli(via, "op", "show", op["id"], "-o", "json").stdout)["state"] == "Succeeded"
        fleet.start_manager(killed)  # as systemd would: three managers again
        placements = c.placements()
        where = watcher.where()
        assert all(p.state is PlacementState.RUNNING and p.host in ("lab2", "lab3") for p in placements.values())
        assert {g: hs for g, hs in where.items()} == {g: [placements[g].host] for g in GUESTS}  # store = libvirt
        moved = Counter(e.subject for e in c.query_events() if e.kind == "migrated")
        assert set(moved) == {f"workload/{g}" for g in GUESTS}
        assert max(moved.values()) == 1, moved  # nothing moved twice
        # what the dead leader was migrating, the new one settled (finished or rolled back)
        settled = [e for e in c.query_events() if "manager that began it was lost" in e.reason]
        assert sorted(e.subject for e in settled) == sorted(f"workload/{n}" for n in in_flight)
        print(f"drain: leader {killed} killed with {in_flight} migrating; new leader after {took:.1f} s; "
              f"settled: {[(e.subject, e.kind, e.reason) for e in settled]}")
        lc.check_guest(*GUESTS)  # moved (or rolled back), not restarted: memory, disk, ticking

        # 2. Cut lab2 off; kill the leader as soon as it is Fencing lab2.
        c.activate_host("lab1")
        fleet.until(lambda: c.host("lab1").state is S.UP)
        for i, name in enumerate(GUESTS):  # an OS-less guest where each real one ran (module docstring)
            host = c.placements()[name].host
            c.delete(name)
            c.submit(os_less(name, i, host))
            c.update_workload(name, lambda w: attrs.evolve(w, pinned=frozenset()))
        victim = "lab2" if any(p.host == "lab2" for p in c.placements().values()) else "lab3"
        on_victim = sorted(n for n, p in c.placements().items() if p.host == victim)
        fleet.lab.host(victim).cut_network()
        fleet.until(lambda: c.host(victim).state is S.FENCING, 60, 0.02)
        killed = fleet.kill_leader()
        took = fleet.until(lambda: fleet.leader() not in (None, killed), 3 * TTL)
        assert took < TTL + 2, f"new leader after {took:.1f} s"
        fleet.until(lambda: c.host(victim).state is S.DOWN, 60)
        fleet.until(lambda: all(p.state is PlacementState.RUNNING for p in c.placements().values()), 60)
        assert not fleet.lab.host(victim).running
        assert fleet.lab.bmcs is not None and fleet.lab.bmcs.bmcs[victim].offs == 1  # powered off once
        placements = c.placements()
        where = watcher.where()
        assert {g: hs for g, hs in where.items()} == {g: [placements[g].host] for g in GUESTS}
        assert all(placements[g].host != victim for g in on_victim)
        restarted = Counter(e.subject for e in c.query_events() if e.kind == "restarted")
        assert restarted == Counter(f"workload/{g}" for g in on_victim)  # each exactly once
        fenced = [e for e in c.query_events() if e.subject == f"host/{victim}"
                  and e.kind in ("fence", "fence-resumed", "fenced")]
        print(f"fencing: leader {killed} killed while fencing {victim}; new leader after {took:.1f} s; "
              f"{[(e.kind, e.reason) for e in fenced]}")
    finally:
        watcher.stop()
    assert watcher.looks > 100
    assert watcher.twice == [], watcher.twice[:3]
