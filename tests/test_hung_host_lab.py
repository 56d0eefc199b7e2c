"""A hung host costs only itself, on real lab hosts (issue 13).

Three real libvirt lab hosts with IPMI BMCs (as in test_fencing_lab), and a fourth "host"
registered with the virt flavor whose libvirt URI points at a TCP listener that accepts
connections and never sends a byte: the virt flavor's bootstrap of it (``libvirt.open``)
never returns. While it hangs, lab2 is cut from the network: it must be fenced through its
BMC and its HA guests restarted on lab1/lab3, every reconcile pass returning on time, and
the hung host must end InstallFailed for not answering within ``call_timeout``.

Heartbeats come from polling each host's libvirtd with ``virsh`` (as test_fencing_lab
does), here in parallel and without waiting for a poll still running: a manager's poller
must not be held up by the hung host either, and that poller is test scaffolding, not the
product under test (only ``cluster.step()`` is timed).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait

import pytest

from clustercore import Cluster, ClusterConfig, HostReport, HostState, Plugins
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from flavors.virt import VirtFlavor
from flavors.virt.driver import LibvirtDriver
from flavors.virt.lab import Lab, domain_type
from flavors.virt.spec import Memory, VMSpec
from flavors.virt.workload import vm_workload

pytestmark = pytest.mark.slow
S = HostState
CALL_TIMEOUT = 5.0
FAST = ClusterConfig(
    liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2, grace_per_workload=0),
    fencing=FencePolicy(startup_grace=0, soft_wait=8, retries=0, retry_delay=1, confirm_timeout=10, backoff=5),
    call_timeout=CALL_TIMEOUT)


class SilentListener:
    """A TCP listener on 127.0.0.1 that accepts every connection and never sends a byte
    (the accepted sockets stay open until :meth:`close`)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-listener", daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"qemu+tcp://127.0.0.1:{self.port}/system"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(3, base_port=16900, bmc=True) as lab:
        yield lab


@pytest.fixture
def listener() -> Iterator[SilentListener]:
    silent = SilentListener()
    try:
        yield silent
    finally:
        silent.close()


class Harness:
    def __init__(self, lab: Lab, config: ClusterConfig = FAST) -> None:
        self.lab = lab
        self.pool = ThreadPoolExecutor(4)
        self.polls = ThreadPoolExecutor(8, thread_name_prefix="poll")
        self.polling: dict[str, Future[bool]] = {}
        self.driver = LibvirtDriver(shutdown_timeout=0.5)
        self.cluster = Cluster(plugins=Plugins([VirtFlavor(self.driver, soft_fence=lab.soft_fence)],
                                               entry_points=False), config=config, executor=self.pool)
        self.steps: list[float] = []
        assert lab.bmcs is not None
        for host in lab.hosts:
            self.cluster.register_host({"name": host.name, "address": host.uri,
                                        "capacity": {"cpu": 8, "memory": 4096},
                                        "fence_devices": [lab.bmcs.device(host)]})

    def poll(self) -> None:
        """Poll every host's libvirtd (``virsh``, 1 s timeout) in parallel; a heartbeat for
        each that answered. A poll still running after 0.3 s is collected at a later tick."""
        for name in self.cluster.hosts():
            if name not in self.polling:
                self.polling[name] = self.polls.submit(self.driver.answers, self.cluster.host(name), 1)
        wait(list(self.polling.values()), timeout=0.3)
        for name, fut in list(self.polling.items()):
            if fut.done():
                del self.polling[name]
                if fut.result():
                    self.cluster.heartbeat(name, HostReport())

    def tick(self) -> None:
        self.poll()
        start = time.monotonic()
        self.cluster.step()
        self.steps.append(time.monotonic() - start)
        time.sleep(0.2)

    def until(self, done: Callable[[], bool], limit: float = 90.0) -> float:
        start = time.monotonic()
        while not done():
            if time.monotonic() - start > limit:
                raise AssertionError(f"not reached in {limit} s: {self.cluster.query_events()[-8:]}")
            self.tick()
        return time.monotonic() - start

    def up(self, *names: str) -> None:
        self.until(lambda: all(self.cluster.host(n).state is S.UP for n in names))

    def guests(self, n: int) -> list[str]:
        names = []
        for i in range(n):
            spec = VMSpec(name=f"h{i}", uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"hung-h{i}")), memory=Memory(64),
                          domain_type=domain_type())
            self.cluster.submit(vm_workload(spec, ha=True, priority=i))
            names.append(spec.name)
        return names

    def running_once(self, names: list[str]) -> dict[str, str]:
        """Where each guest runs according to libvirt; each runs on at most one host."""
        runs = {h.name: h.active_domains() for h in self.lab.hosts if h.running and h.reachable}
        counts = Counter(g for guests in runs.values() for g in guests)
        assert all(counts[n] <= 1 for n in names), counts
        return {g: h for h, guests in runs.items() for g in guests if g in names}

    def close(self) -> None:
        for host in self.lab.hosts:
            host.heal()
        for name in list(self.cluster.placements()):
            with contextlib.suppress(Exception):
                self.cluster.stop(name, force=True)
        self.polls.shutdown(wait=False, cancel_futures=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.driver.close()


def test_a_host_cut_off_is_fenced_and_its_guests_restart_while_a_fourth_host_hangs(
        lab: Lab, listener: SilentListener) -> None:
    for host in lab.hosts:
        host.power_on()
        host.heal()
    assert lab.bmcs is not None
    offs_before = lab.bmcs.bmcs["lab2"].offs
    h = Harness(lab)
    try:
        h.up("lab1", "lab2", "lab3")
        for other in ("lab1", "lab3"):  # the guests start on lab2
            h.cluster.start_maintenance(other)
        h.until(lambda: all(h.cluster.host(n).state is S.MAINTENANCE for n in ("lab1", "lab3")))
        names = h.guests(3)
        for other in ("lab1", "lab3"):
            h.cluster.activate_host(other)
        h.up("lab1", "lab3")
        assert set(h.running_once(names).values()) == {"lab2"}

        # The fourth host joins: its libvirt "daemon" accepts and never answers.
        h.steps.clear()
        h.cluster.register_host({"name": "hung", "address": listener.uri, "capacity": {"cpu": 8, "memory": 4096}})
        h.until(lambda: bool(listener.accepted), limit=30)  # the bootstrap is connected and waiting
        assert h.cluster.host("hung").state is S.INSTALLING

        # While it hangs, lab2 is cut off.
        start = time.monotonic()
        lab.host("lab2").cut_network()
        h.until(lambda: len(h.running_once(names)) == 3 and set(h.running_once(names).values()) <= {"lab1", "lab3"})
        took = time.monotonic() - start
        h.until(lambda: h.cluster.host("hung").state is not S.INSTALLING, limit=CALL_TIMEOUT + 30)
        for _ in range(5):  # a few more passes with the hung host's call still stuck in its lane
            h.tick()

        # (b) the hung host failed its join for not answering in time
        hung = h.cluster.host("hung")
        assert hung.state in (S.INSTALL_FAILED, S.NON_OPERATIONAL), hung
        events = h.cluster.query_events(subject="host/hung")
        reasons = " | ".join(e.reason for e in events)
        assert f"did not answer within {CALL_TIMEOUT:.0f} s" in reasons, reasons
        # (c) lab2 fenced through its BMC, once; its guests run once each on lab1/lab3
        assert lab.bmcs.bmcs["lab2"].offs - offs_before == 1
        assert not lab.host("lab2").running
        assert h.cluster.host("lab2").state is S.DOWN
        fenced = h.cluster.query_events(subject="host/lab2", kind="fenced")
        assert len(fenced) == 1 and "fence_ipmilan@127.0.0.1" in fenced[0].reason, fenced
        where = h.running_once(names)
        assert sorted(where) == sorted(names) and set(where.values()) <= {"lab1", "lab3"}, where
        on_hosts = lab.host("lab1").active_domains() + lab.host("lab3").active_domains()
        assert sorted(g for g in on_hosts if g in names) == sorted(names)  # each on exactly one host
        assert {p.host for p in h.cluster.placements().values()} <= {"lab1", "lab3"}
        # (a) every pass returned on time while the fourth host hung
        slowest = max(h.steps)
        # (d)
        print(f"\nwith a hung 4th host: lab2 cut -> its 3 HA guests running on lab1/lab3 in {took:.1f} s; "
              f"{len(h.steps)} passes, slowest {slowest:.2f} s; hung host {hung.state.value}: "
              f"{events[-1].reason}")
        assert slowest < 3.0, sorted(h.steps)[-5:]
    finally:
        h.close()
