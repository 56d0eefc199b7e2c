"""Fencing on real lab hosts with a real etcd and host agents on leases (issue 18):

* a BMC password, sealed at rest, shows nowhere while a host is fenced through its BMC:
  not in any etcd key or value, event, log line (DEBUG) or process's argv or environment;
  after ``clustercore secrets rotate`` a manager with the new key alone fences again;
* watchdog self-fencing: a host whose agent is cut from the store (through a link the
  test cuts) while its BMC is silent resets itself through its watchdog (the lab's
  supervisor power-cuts it), and the manager restarts its HA guest elsewhere only once
  the lease TTL, the watchdog timeout and the margin have passed; the guest is never on
  two hosts."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clustercore import Cluster, ClusterConfig, HostState, Plugins
from clustercore.agent import HostAgent
from clustercore.etcdcluster import EtcdCluster
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from clustercore.secrets import Secrets, new_key
from clustercore.state import HEARTBEATS
from clustercore.store.etcd import EtcdStore
from flavors.virt import VirtFlavor
from flavors.virt.driver import LibvirtDriver
from flavors.virt.lab import Lab, domain_type
from flavors.virt.labrelay import TcpRelay
from flavors.virt.labwatchdog import LabWatchdog
from flavors.virt.spec import Memory, VMSpec
from flavors.virt.workload import vm_workload

pytestmark = pytest.mark.slow
S = HostState
ETCD, RELAY = 23970, 23975
TTL, WATCHDOG, MARGIN = 2.0, 3.0, 2.0
CONFIG = ClusterConfig(
    liveness=LivenessPolicy(heartbeat_interval=0.5, missed_beats=2, non_responsive_grace=1, grace_per_workload=0),
    fencing=FencePolicy(startup_grace=0, soft_first=False, retries=0, retry_delay=0.2, confirm_timeout=2,
                        backoff=2, watchdog_margin=MARGIN))


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Lab, EtcdCluster]]:
    with EtcdCluster(1, base_port=ETCD) as etcd, Lab(2, base_port=17340, bmc=True) as lab:
        yield lab, etcd


def manager(lab: Lab, etcd: EtcdCluster, prefix: str, key: str) -> tuple[Cluster, LibvirtDriver]:
    driver = LibvirtDriver(shutdown_timeout=0.5)
    return Cluster(store=EtcdStore(etcd.url, prefix=prefix), plugins=Plugins([VirtFlavor(driver)], entry_points=False),
                   config=CONFIG, secrets=Secrets((key,))), driver


def agent(cluster: Cluster, driver: LibvirtDriver, name: str, url: str, prefix: str, stop: threading.Event,
          **kwargs: object) -> threading.Thread:
    """The host's agent on a lease, beating while its libvirtd answers, in a thread."""
    registered = cluster.host(name)
    beats = HostAgent(EtcdStore(url, prefix=prefix, timeout=1), name, interval=0.5, ttl=TTL,
                      probe=lambda: driver.answers(registered, timeout=1), credential=cluster.credentials[name],
                      **kwargs)  # type: ignore[arg-type]
    thread = threading.Thread(target=beats.run, args=(stop,), daemon=True)
    thread.start()
    return thread


def wait_for(cluster: Cluster, done: Callable[[], bool], limit: float = 60,
             check: Callable[[], None] = lambda: None) -> None:
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, cluster.query_events()[-8:]
        cluster.step()
        check()
        time.sleep(0.2)


class Peeping:
    """Every process's argv and environment, read many times a second while it runs: what
    anyone on the machine could see. ``seen`` lists the processes that showed ``secret``."""

    def __init__(self, secret: str) -> None:
        self.secret, self.seen, self.looks = secret.encode(), [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.looks += 1
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    for what in ("cmdline", "environ"):
                        with contextlib.suppress(OSError):
                            if self.secret in Path(f"/proc/{pid}/{what}").read_bytes():
                                self.seen.append(f"{pid} {what}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def fence_lab1(lab: Lab, cluster: Cluster) -> None:
    """lab1 hangs (libvirtd stopped: no heartbeat, the guests would keep running): it is
    fenced through its IPMI BMC and really powered off."""
    lab.host("lab1").cut_network()
    wait_for(cluster, lambda: cluster.host("lab1").state is S.DOWN)
    assert not lab.host("lab1").running
    fenced = cluster.query_events(subject="host/lab1", kind="fenced")
    assert fenced and "ipmi@127.0.0.1: status off" in fenced[-1].reason


def test_a_sealed_bmc_password_shows_nowhere_during_a_fencing_and_rotation_keeps_fencing(
        world: tuple[Lab, EtcdCluster], caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    lab, etcd = world
    assert lab.bmcs is not None
    password, old, new = lab.bmcs.password, new_key(), new_key()
    prefix = f"/secrets-{uuid.uuid4().hex[:6]}/"
    caplog.set_level(logging.DEBUG)
    cluster, driver = manager(lab, etcd, prefix, old)
    for host in lab.hosts:
        cluster.register_host({"name": host.name, "address": host.uri, "capacity": {"cpu": 4, "memory": 2048},
                               "fence_devices": [lab.bmcs.device(host, agent="ipmi")]})
    stop = threading.Event()
    drivers = [driver]
    peeping = Peeping(password)
    try:
        for host in lab.hosts:
            agent(cluster, driver, host.name, etcd.url, prefix, stop)
        wait_for(cluster, lambda: all(cluster.host(h.name).state is S.UP for h in lab.hosts))
        fence_lab1(lab, cluster)
        # The cluster key is rotated; a manager that has the new key alone takes over.
        keys = tmp_path / "keys"
        keys.write_text(f"{new}\n{old}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERCORE_SECRETS")}
        done = subprocess.run([sys.executable, "-m", "clustercore.cli", "secrets", "rotate", "--store", etcd.url,
                               "--prefix", prefix], env={**env, "CLUSTERCORE_SECRETS_KEY_FILE": str(keys)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "2 host(s) re-sealed" in done.stdout, done.stderr
        rotated, rotated_driver = manager(lab, etcd, prefix, new)
        drivers.append(rotated_driver)
        lab.host("lab1").power_on()
        wait_for(rotated, lambda: rotated.host("lab1").state is S.UP)
        fence_lab1(lab, rotated)
    finally:
        stop.set()
        peeping.close()
        lab.host("lab1").heal()
        lab.host("lab1").power_on()
        for each in drivers:
            each.close()
    stored = b"\n".join(kv.key.encode() + b"=" + kv.value for kv in EtcdStore(etcd.url, prefix="/").list(""))
    assert password.encode() not in stored
    assert len(rotated.query_events(subject="host/lab1", kind="fenced")) == 2
    assert not [e for e in rotated.query_events() if password in f"{e.reason} {e.subject}"]
    logged = [r for r in caplog.records if password in r.getMessage()]
    assert len(caplog.records) > 50 and not logged, logged[:3]
    assert peeping.looks > 100 and not peeping.seen, peeping.seen


def test_a_host_cut_from_the_store_with_a_silent_bmc_self_fences_then_its_guest_restarts(
        world: tuple[Lab, EtcdCluster]) -> None:
    lab, etcd = world
    assert lab.bmcs is not None
    prefix = f"/watchdog-{uuid.uuid4().hex[:6]}/"
    cluster, driver = manager(lab, etcd, prefix, new_key())
    store = cluster.store
    for host in lab.hosts:  # lab1 may count on its watchdog although it has a BMC
        cluster.register_host({"name": host.name, "address": host.uri, "capacity": {"cpu": 4, "memory": 2048},
                               "fence_devices": [lab.bmcs.device(host, agent="ipmi")],
                               "self_fence": host.name == "lab1"})
    stop = threading.Event()
    relay = TcpRelay(RELAY, ("127.0.0.1", ETCD))
    dog = LabWatchdog(lab.host("lab1"), WATCHDOG)
    gone: list[float] = []  # when the test saw lab1's heartbeat key vanish (wall clock)
    cut: list[float] = []

    def watch() -> None:
        while not stop.wait(0.05):
            if not gone and cut and store.get(HEARTBEATS + "lab1") is None:
                gone.append(time.time())

    def once() -> None:
        where = [h.name for h in lab.hosts if h.running and "g0" in h.active_domains()]
        assert len(where) <= 1, f"g0 runs on {where}"

    try:
        agent(cluster, driver, "lab1", f"etcd://127.0.0.1:{RELAY}", prefix, stop, watchdog=dog)
        agent(cluster, driver, "lab2", etcd.url, prefix, stop)
        threading.Thread(target=watch, daemon=True).start()

        def until(done: Callable[[], bool]) -> None:
            wait_for(cluster, done, check=once)

        until(lambda: all(cluster.host(h.name).state is S.UP for h in lab.hosts)
              and cluster.host("lab1").watchdog == WATCHDOG)  # the leader recorded the armed watchdog
        assert cluster.host("lab2").watchdog == 0
        cluster.start_maintenance("lab2")
        until(lambda: cluster.host("lab2").state is S.MAINTENANCE)
        spec = VMSpec(name="g0", uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, "watchdog-g0")), memory=Memory(64),
                      domain_type=domain_type())
        cluster.submit(vm_workload(spec, ha=True))
        cluster.activate_host("lab2")
        until(lambda: cluster.host("lab2").state is S.UP)
        assert lab.host("lab1").active_domains() == ["g0"]

        lab.bmcs.silence("lab1")
        cut.append(time.time())
        cut_at = time.monotonic()
        relay.cut()  # lab1 loses the store; its guest keeps running until the watchdog fires
        assert lab.host("lab1").active_domains() == ["g0"]
        until(lambda: cluster.placements().get("g0") is not None and cluster.placements()["g0"].host == "lab2"
              and "g0" in lab.host("lab2").active_domains())
        assert dog.fired_at is not None and not lab.host("lab1").running  # reset by its watchdog, for real
        assert dog.fired_at - cut_at <= TTL + WATCHDOG  # its last feed was under a lease still alive
        assert cluster.host("lab1").state is S.DOWN
        self_fenced = cluster.query_events(subject="host/lab1", kind="self-fenced")
        assert len(self_fenced) == 1 and "reset by its watchdog" in self_fenced[0].reason
        failed = cluster.query_events(subject="host/lab1", kind="fence-failed")
        assert failed and "no answer in 2 s" in failed[0].reason, failed  # the silent BMC, tried first
        restarted = cluster.query_events(kind="restarted")
        assert [(e.subject, e.old, e.new) for e in restarted] == [("workload/g0", "lab1", "lab2")]
        # Never earlier than the lease's expiry plus the watchdog's timeout and the margin.
        assert gone and gone[0] >= cut[0] + 0.5
        assert self_fenced[0].time >= gone[0] + WATCHDOG + MARGIN - 0.2, (gone, self_fenced[0].time)
        assert restarted[0].time >= self_fenced[0].time
        print(f"\ncut at 0; lease gone {gone[0] - cut[0]:.1f} s; watchdog fired {dog.fired_at - cut_at:.1f} s; "
              f"self-fenced "
              f"{self_fenced[0].time - cut[0]:.1f} s; restarted on lab2 {restarted[0].time - cut[0]:.1f} s")
    finally:
        stop.set()
        relay.close()
        dog.close()
        lab.bmcs.silence("lab1", False)
        for name in list(cluster.placements()):
            cluster.stop(name, force=True)
        lab.host("lab1").power_on()
        driver.close()
