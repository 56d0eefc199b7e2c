"""Watchdog self-fencing on real lab hosts (issue 18): a host whose agent is cut from the
store (a real etcd, through a link the test cuts) while its BMC is silent resets itself
through its watchdog (the lab's supervisor power-cuts it), and the manager restarts its
HA guest elsewhere only once the lease TTL, the watchdog timeout and the margin have
passed; the guest is never on two hosts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from clustercore import Cluster, ClusterConfig, HostState, Plugins
from clustercore.agent import HostAgent
from clustercore.etcdcluster import EtcdCluster
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
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


def test_a_host_cut_from_the_store_with_a_silent_bmc_self_fences_then_its_guest_restarts(
        world: tuple[Lab, EtcdCluster]) -> None:
    lab, etcd = world
    assert lab.bmcs is not None
    driver = LibvirtDriver(shutdown_timeout=0.5)
    store = EtcdStore(etcd.url)
    cluster = Cluster(store=store, plugins=Plugins([VirtFlavor(driver)], entry_points=False), config=CONFIG)
    for host in lab.hosts:  # lab1 may count on its watchdog although it has a BMC
        cluster.register_host({"name": host.name, "address": host.uri, "capacity": {"cpu": 4, "memory": 2048},
                               "fence_devices": [lab.bmcs.device(host, agent="ipmi")],
                               "self_fence": host.name == "lab1"})
    stop = threading.Event()
    relay = TcpRelay(RELAY, ("127.0.0.1", ETCD))
    dog = LabWatchdog(lab.host("lab1"), WATCHDOG)
    agents = []
    for host in lab.hosts:
        url = f"etcd://127.0.0.1:{RELAY}" if host.name == "lab1" else etcd.url
        registered = cluster.host(host.name)
        agent = HostAgent(EtcdStore(url, timeout=1), host.name, interval=0.5, ttl=TTL,
                          probe=lambda registered=registered: driver.answers(registered, timeout=1),
                          credential=cluster.credentials[host.name], watchdog=dog if host.name == "lab1" else None)
        agents.append(threading.Thread(target=agent.run, args=(stop,), daemon=True))
    gone: list[float] = []  # when the test saw lab1's heartbeat key vanish (wall clock)

    def watch() -> None:
        while not stop.wait(0.05):
            if not gone and store.get(HEARTBEATS + "lab1") is None and cut:
                gone.append(time.time())

    cut: list[float] = []
    try:
        for thread in [*agents, threading.Thread(target=watch, daemon=True)]:
            thread.start()

        def until(done: object, limit: float = 60) -> None:
            deadline = time.monotonic() + limit
            while not done():  # type: ignore[operator]
                assert time.monotonic() < deadline, cluster.query_events()[-8:]
                cluster.step()
                where = [h.name for h in lab.hosts if h.running and "g0" in h.active_domains()]
                assert len(where) <= 1, f"g0 runs on {where}"
                time.sleep(0.2)

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
        assert failed, "the silent BMC was tried first"
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
