"""Several managers over a real 3-member etcd with 5,000 simulated hosts heartbeating.

Every host is a :class:`~clustercore.agent.HostAgent` (heartbeat on its own etcd lease of
40 s, a put every 10 s, a keepalive every other beat), all run by a separate process
with a pool of threads, staggered over the 10 s. Two managers run in this process over
their own connections (FakeFlavor: the hosts run nothing; default liveness policy, so
Connecting after three missed 10 s beats). Measured:

* store requests per second the heartbeats make, and how late beats were;
* the leading manager's pass (lease renewal + reconcile), with the 5,000 hosts Up;
* from a host's last heartbeat (and from its first missed one) to Connecting in the store;
* failover: the leader stops (no resignation, as a crash), until the follower leads and
  until its first pass as leader is done.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

from clustercore import HostReport, HostState, Plugins
from clustercore.agent import HostAgent
from clustercore.cluster import Cluster
from clustercore.manager import Manager
from clustercore.store.etcd import EtcdStore
from clustercore.testing import EtcdCluster, FakeFlavor

TITLE = "etcd: 5,000 hosts heartbeating every 10 s, two managers"
HOSTS = 5000
INTERVAL = 10.0
THREADS = 24
PREFIX = "/bench/"
SILENT = 20


def _beat(url: str, names: list[str], conn: Connection, issued: dict[str, str]) -> None:
    """The hosts' side (child process): beat every INTERVAL, staggered; stop the hosts the
    parent names; report requests, lateness and the silenced hosts' last beats."""
    agents = [HostAgent(EtcdStore(url, prefix=PREFIX), n, INTERVAL, report=HostReport, credential=issued[n])
              for n in names]
    start = time.monotonic()
    silenced: set[str] = set()
    last: dict[str, float] = {}
    late: list[float] = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker(k: int) -> None:
        mine = list(range(k, len(agents), THREADS))
        beat = 0
        while not stop.is_set():
            for i in mine:
                due = start + beat * INTERVAL + INTERVAL * i / len(agents)
                delay = due - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
                agent = agents[i]
                with lock:
                    if agent.host in silenced:
                        continue
                agent.beat()
                with lock:
                    late.append(time.monotonic() - due)
                    last[agent.host] = time.time()
            beat += 1

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(THREADS)]
    for t in threads:
        t.start()
    conn.send("running")
    while True:
        command, arg = conn.recv()
        if command == "silence":
            with lock:
                silenced.update(arg)
                conn.send({n: last.get(n, 0.0) for n in arg})
        elif command == "stats":
            with lock:
                conn.send((sum(a.requests for a in agents), time.monotonic() - start, sorted(late)))
                late.clear()
        elif command == "stop":
            stop.set()
            for t in threads:
                t.join(5)
            conn.send("stopped")
            return


class Runner:
    """Steps one manager every second in its own thread, its lease renewed by another, until
    stopped (no resignation: a crash, for the store)."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.passes: list[float] = []
        self.led_at: float | None = None
        self.first_pass_done: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.renewer = threading.Thread(target=manager.keep_leading, args=(self.stop,), daemon=True)
        self.renewer.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            leading = self.manager.step()
            took = time.monotonic() - t0
            if leading:
                self.passes.append(took)
                if self.led_at is None:
                    self.led_at, self.first_pass_done = t0, t0 + took
            self.stop.wait(max(0.0, 1.0 - took))


def _ms(values: list[float], q: float) -> float:
    return 1000 * values[min(len(values) - 1, int(q * len(values)))]


def run() -> str:
    names = [f"h{i:05d}" for i in range(HOSTS)]
    with EtcdCluster(3, base_port=23850) as etcd:
        admin = Cluster(store=EtcdStore(etcd.url, prefix=PREFIX), plugins=Plugins([FakeFlavor("sim")],
                                                                                    entry_points=False))
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            stores = [EtcdStore(etcd.url, prefix=PREFIX) for _ in range(16)]
            regs = [Cluster(store=s, plugins=Plugins([FakeFlavor("sim")], entry_points=False)) for s in stores]
            list(pool.map(lambda i: regs[i % 16].register_host(
                {"name": names[i], "capacity": {"cpu": 32, "memory": 262144}}), range(HOSTS)))
        registered = time.monotonic() - t0
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        issued = {n: c for reg in regs for n, c in reg.credentials.items()}
        beater = ctx.Process(target=_beat, args=(etcd.url, names, child, issued), daemon=True)
        beater.start()
        assert parent.recv() == "running"
        managers = [Manager(EtcdStore(etcd.url, prefix=PREFIX), f"m{k}", ttl=10,
                            plugins=Plugins([FakeFlavor("sim")], entry_points=False)) for k in (1, 2)]
        first = Runner(managers[0])
        time.sleep(0.5)
        second = Runner(managers[1])
        t0 = time.monotonic()
        while sum(h.state is HostState.UP for h in admin.hosts().values()) < HOSTS:
            if time.monotonic() - t0 > 300:
                raise RuntimeError("hosts did not all come Up in 300 s")
            time.sleep(2)
        joined = time.monotonic() - t0
        # steady state: every host Up and beating (after the last joining pass has ended)
        time.sleep(20)
        parent.send(("stats", None))
        parent.recv()
        first.passes.clear()
        time.sleep(40)
        parent.send(("stats", None))
        requests0, elapsed0, _ = parent.recv()
        time.sleep(30)
        parent.send(("stats", None))
        requests1, elapsed1, late = parent.recv()
        rate = (requests1 - requests0) / (elapsed1 - elapsed0)
        passes = sorted(first.passes)
        # missed heartbeats
        silent = names[:: HOSTS // SILENT][:SILENT]
        parent.send(("silence", silent))
        last_beat = parent.recv()
        connecting: dict[str, float] = {}
        t0 = time.monotonic()
        while len(connecting) < len(silent) and time.monotonic() - t0 < 120:
            for n in silent:
                if n not in connecting and admin.host(n).state is not HostState.UP:
                    connecting[n] = time.time()
            time.sleep(0.2)
        to_connecting = sorted(connecting[n] - last_beat[n] for n in connecting)
        # failover: the leader stops without resigning, as a crash
        killed = time.monotonic()
        first.stop.set()
        t0 = time.monotonic()
        while second.first_pass_done is None and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        second.stop.set()
        parent.send(("stop", None))
        parent.recv()
        beater.join(10)
        elected = (second.led_at or float("nan")) - killed
        since_renewal = (second.led_at or float("nan")) - managers[0].elector.renewed_at
        first_pass = (second.first_pass_done or float("nan")) - killed
        first.thread.join(5)
        second.thread.join(5)
    med = statistics.median
    rows = [
        ("hosts registered (16 clients)", f"{HOSTS / registered:,.0f} hosts/s ({registered:.1f} s)"),
        ("hosts joined and Up through the leader", f"{joined:.0f} s"),
        ("heartbeat store requests (puts + keepalives)", f"{rate:,.0f}/s (target load 500 beats/s)"),
        ("heartbeat lateness p50 / p99", f"{_ms(late, 0.5):.0f} ms / {_ms(late, 0.99):.0f} ms"),
        ("leader pass (renewal + reconcile) p50 / p95 / max",
         f"{_ms(passes, 0.5):.1f} / {_ms(passes, 0.95):.1f} / {1000 * passes[-1]:.1f} ms ({len(passes)} passes)"),
        ("last heartbeat to Connecting, median (min-max)",
         f"{med(to_connecting):.1f} s ({to_connecting[0]:.1f}-{to_connecting[-1]:.1f}; "
         f"{len(to_connecting)}/{SILENT} hosts; rule: 30 s)"),
        ("first missed heartbeat to Connecting, median", f"{med(to_connecting) - INTERVAL:.1f} s"),
        ("failover: leader stops -> follower leads (TTL 10 s)", f"{elected:.1f} s"),
        ("failover: leader's last lease renewal -> follower leads", f"{since_renewal:.1f} s"),
        ("failover: leader stops -> follower's first pass done", f"{first_pass:.1f} s"),
    ]
    table = "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    return (f"{HOSTS:,} hosts, a HostAgent each (heartbeat every {INTERVAL:.0f} s on its own 40 s etcd lease), run by "
            f"a separate process with {THREADS} threads; a 3-member etcd on loopback (same 2-core machine); two "
            f"managers in this process (leader + warm follower, lease TTL 10 s), one pass a second.\n\n{table}\n"
            "The follower keeps its cache warm through watches, so its first pass as leader needs no listing; "
            "failover is bounded by the lease TTL (the dead leader's lease must expire before anyone else may act).\n")
