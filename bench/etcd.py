"""Two managers over a real 3-member etcd with 10,000 simulated hosts heartbeating.

The hosts (:mod:`bench.etcd_load`) are spread over ``GENERATORS`` processes, each
registering its share and then beating for it from one asyncio loop (the requests of
:class:`~clustercore.agent.HostAgent`: a put every 10 s on the host's own 40 s lease, a
keepalive every other beat), staggered over the 10 s. Each manager runs in a process of its
own, as on two machines (FakeFlavor: the hosts run nothing; default liveness policy, so
Connecting after three missed 10 s beats), one pass a second, with the threads and the
memory policy of ``Manager.run`` (lease renewal, the heartbeat listener, long-lived objects
frozen between passes).
Measured:

* heartbeat lateness (answer read - due time), split into the generator's own lag, the
  wait for a free connection and the store's answer; the generators' CPU;
* the leading manager's pass (lease renewal + reconcile) with the 10,000 hosts Up, and
  while 20 of them fall silent;
* from a host's last heartbeat (and from its first missed one) to Connecting in the store;
* failover: the leader's process is SIGKILLed, until the follower leads and until its
  first pass as leader is done;
* CPU of each party (etcd members, generators, managers) over the steady window, since all
  share one machine.

Every child process dies with this one (PR_SET_PDEATHSIG) and is killed in a ``finally``.
"""

from __future__ import annotations

import cProfile
import multiprocessing
import os
import pstats
import signal
import socket
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import attrs

from bench import etcd_load
from clustercore import HostState, Plugins, credentials
from clustercore.cluster import Cluster
from clustercore.manager import Manager
from clustercore.state import HOSTS as HOST_KEYS
from clustercore.store.base import Put
from clustercore.store.etcd import EtcdStore
from clustercore.testing import EtcdCluster, FakeFlavor

TITLE = "etcd: 10,000 hosts heartbeating every 10 s, two managers"
HOSTS = 10_000
GENERATORS = 4
INTERVAL = 10.0
TTL = 40.0
PREFIX = "/bench/"
SILENT = 20
BASE_PORT = 24100  # client ports 24100, 24102, 24104; peers one above each
WARMUP, STEADY = 15.0, 60.0
PROFILE = os.environ.get("BENCH_ETCD_PROFILE")  # a file: the leader's steady passes under cProfile


def _manager(conn: Connection, url: str, name: str) -> None:
    """A manager process: a pass a second (no resignation ever: it is killed), each pass
    reported as (start, seconds, leading, last lease renewal, CPU seconds so far)."""
    etcd_load.die_with_parent()
    manager = Manager(EtcdStore(url, prefix=PREFIX), name, ttl=10,
                      plugins=Plugins([FakeFlavor("sim")], entry_points=False), freeze_memory=True)
    manager.start(threading.Event())  # as Manager.run: lease renewal and the heartbeat listener
    profile: cProfile.Profile | None = None
    while True:
        while conn.poll():
            command, arg = conn.recv()
            if command == "profile":
                profile = cProfile.Profile()
            elif command == "dump" and profile is not None:
                pstats.Stats(profile).sort_stats("cumulative").dump_stats(arg)
                profile = None
        t0, own = time.monotonic(), time.thread_time()
        if profile is not None:
            profile.enable()
        leading = manager.step()
        if profile is not None:
            profile.disable()
        took = time.monotonic() - t0
        conn.send((t0, took, leading, manager.elector.renewed_at, time.process_time(), time.thread_time() - own))
        manager.between_passes()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))


class Child:
    """A child process and its pipe; a thread keeps what a manager reports."""

    def __init__(self, ctx: Any, target: Any, *args: Any, listen: bool = False) -> None:
        self.conn, child = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.process.start()
        self.reports: list[tuple[float, float, bool, float, float, float]] = []
        self.fresh = threading.Event()
        if listen:
            threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        try:
            while True:
                self.reports.append(self.conn.recv())
                self.fresh.set()
        except (EOFError, OSError):
            return

    def ask(self, what: str, arg: Any = None) -> Any:
        self.conn.send((what, arg))
        return self.conn.recv()

    def kill(self) -> None:
        if self.process.pid is not None and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(5)


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy() -> tuple[float, float, float]:
    """(busy, total, stolen) CPU seconds of the whole machine so far; stolen: the time its
    virtual CPUs wanted to run and the hypervisor ran something else (counted as busy)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle, tick = values[3] + values[4], os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick, values[7] / tick


def _q(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _dist(values: Sequence[float], unit: float = 1000.0) -> str:
    v = sorted(values)
    return f"{unit * _q(v, 0.5):.0f} / {unit * _q(v, 0.99):.0f} / {unit * v[-1]:.0f}" if v else "-"


def _dist1(values: Sequence[float]) -> str:
    v = sorted(values)
    return f"{1000 * _q(v, 0.5):.1f} / {1000 * _q(v, 0.99):.1f} / {1000 * v[-1]:.1f}" if v else "-"


def _own_cpu(w: Window) -> str:
    """The leader's passes' own CPU, and the CPU of its slowest pass (a pass much slower than
    its CPU waited: for a core, or for the interpreter another thread of its process held)."""
    slowest = max(zip(w.leader, w.leader_cpu, strict=True), default=(0.0, float("nan")))
    return f"{_dist1(w.leader_cpu)}; {1000 * slowest[1]:.1f}"


def _seed(url: str, names: list[str]) -> tuple[dict[str, str], float, float, int]:
    """Join the hosts through the controller's real path on the embedded store (two passes),
    then copy their records (hosts/, credentials/) into etcd, 100 puts a transaction from 8
    clients: the etcd leader commits transitions one at a time (about 10 ms each on this
    machine), so joining 10,000 hosts there would take minutes. (credentials, seconds to
    join, seconds to copy, transactions)."""
    t0 = time.monotonic()
    seed = Cluster(plugins=Plugins([FakeFlavor("sim")], entry_points=False))
    for name in names:
        seed.register_host({"name": name, "capacity": {"cpu": 32, "memory": 262144}})
        seed.heartbeat(name)
    seed.step()
    seed.step()
    up = sum(h.state is HostState.UP for h in seed.hosts().values())
    assert up == len(names), f"only {up}/{len(names)} hosts joined"
    joined = time.monotonic() - t0
    t0 = time.monotonic()
    kvs = [kv for prefix in (HOST_KEYS, credentials.KEY) for kv in seed.store.list(prefix)]
    batches = [kvs[i:i + 100] for i in range(0, len(kvs), 100)]
    stores = [EtcdStore(url, prefix=PREFIX) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: stores[i % 8].txn([], [Put(kv.key, kv.value) for kv in batches[i]]),
                      range(len(batches))))
    for store in stores:
        store.close()
    return dict(seed.credentials), joined, time.monotonic() - t0, len(batches)


def _stats(generators: list[Child]) -> dict[str, Any]:
    parts = [g.ask("stats") for g in generators]
    return {"requests": sum(p["requests"] for p in parts), "failures": sum(p["failures"] for p in parts),
            "samples": [s for p in parts for s in p["samples"]], "at": max(p["at"] for p in parts)}


def _window(seconds: float, generators: list[Child], managers: list[Child], pids: dict[str, list[int]]) -> Window:
    """Everything measured over ``seconds`` of steady heartbeating."""
    marks = [len(m.reports) for m in managers]
    cpu0 = {k: [_cpu(p) for p in v] for k, v in pids.items()}
    busy0 = _busy()
    before = _stats(generators)
    time.sleep(seconds)
    after = _stats(generators)
    busy1 = _busy()
    cpu1 = {k: [_cpu(p) for p in v] for k, v in pids.items()}
    wall = after["at"] - before["at"]
    reports = [r for m, n in zip(managers, marks, strict=True) for r in m.reports[n:]]
    changes = sum(a[2] != b[2] for m, n in zip(managers, marks, strict=True)
                  for a, b in zip(m.reports[max(0, n - 1):], m.reports[n:], strict=False))
    return Window(after["samples"], (after["requests"] - before["requests"]) / wall,
                  after["failures"] - before["failures"],
                  {k: [(b - a) / wall for a, b in zip(cpu0[k], cpu1[k], strict=True)] for k in pids},
                  (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) * (os.cpu_count() or 1),
                  (busy1[2] - busy0[2]) / (busy1[1] - busy0[1]) * (os.cpu_count() or 1),
                  [r[1] for r in reports if r[2]], [r[5] for r in reports if r[2]], [r[1] for r in reports if not r[2]],
                  changes)


@attrs.frozen
class Window:
    samples: list[tuple[float, float, float]]  # (woke, sent, done) - due, per beat
    rate: float  # store requests per second
    failures: int
    usage: dict[str, list[float]]  # share of one core, per process
    machine: float  # cores busy on the whole machine
    stolen: float  # of which stolen by the hypervisor
    leader: list[float]  # pass seconds, of whichever manager led
    leader_cpu: list[float]  # the CPU seconds of those passes' own thread
    follower: list[float]
    changes: int  # leadership changes seen


def _ports_free() -> None:
    """Refuse to start over another run's members (EtcdCluster's health check would pass on them)."""
    for port in range(BASE_PORT, BASE_PORT + 6):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"port {port} is taken: another etcd bench is running")


def run() -> str:
    _ports_free()
    names = [f"h{i:05d}" for i in range(HOSTS)]
    ctx = multiprocessing.get_context("spawn")
    children: list[Child] = []
    with EtcdCluster(3, base_port=BASE_PORT) as etcd:
        try:
            return _run(etcd, ctx, names, children)
        finally:
            for child in children:
                child.kill()


def _run(etcd: EtcdCluster, ctx: Any, names: list[str], children: list[Child]) -> str:
    issued, joined, copied, txns = _seed(etcd.url, names)
    admin = Cluster(store=EtcdStore(etcd.url, prefix=PREFIX),
                    plugins=Plugins([FakeFlavor("sim")], entry_points=False))
    shares = [[(n, issued[n], INTERVAL * i / HOSTS) for i, n in enumerate(names) if i % GENERATORS == g]
              for g in range(GENERATORS)]
    generators = [Child(ctx, etcd_load.main, etcd.url, PREFIX, share, INTERVAL, TTL) for share in shares]
    children += generators
    for g in generators:
        assert g.conn.recv() == "ready"
    start = time.monotonic() + 0.5
    for g in generators:
        g.conn.send(("start", start))
    time.sleep(INTERVAL + 2)  # every agent has beaten once (a manager taking over a running cluster)
    first = Child(ctx, _manager, etcd.url, "m1", listen=True)
    children.append(first)
    first.fresh.wait(120)
    took_over = first.reports[0][1] if first.reports else float("nan")  # lists every host
    second = Child(ctx, _manager, etcd.url, "m2", listen=True)
    children.append(second)
    managers = [first, second]
    time.sleep(WARMUP)
    pids: dict[str, list[int]] = {
        "etcd": [p.pid for p in etcd.processes if p is not None],
        "generators": [g.process.pid for g in generators if g.process.pid is not None],
        "managers": [m.process.pid for m in managers if m.process.pid is not None]}
    if PROFILE:
        first.conn.send(("profile", None))
    with_stats = _window(STEADY, generators, managers, pids)
    if PROFILE:
        first.conn.send(("dump", PROFILE))
    admin.configure({"statistics": {"interval": 0}})
    time.sleep(3)
    without = _window(STEADY, generators, managers, pids)
    # missed heartbeats
    silent = names[:: HOSTS // SILENT][:SILENT]
    last_beat: dict[str, float] = {}
    for g in generators:
        last_beat.update(g.ask("silence", silent))
    marks = [len(m.reports) for m in managers]
    connecting: dict[str, float] = {}
    t0 = time.monotonic()
    while len(connecting) < len(silent) and time.monotonic() - t0 < 120:
        for n in silent:
            if n not in connecting and admin.host(n).state is not HostState.UP:
                connecting[n] = time.time()
        time.sleep(0.2)
    to_connecting = sorted(connecting[n] - last_beat[n] for n in connecting if n in last_beat)
    silencing = [r[1] for m, n in zip(managers, marks, strict=True) for r in m.reports[n:] if r[2]]
    # failover: the leader's process is killed just after a pass (SIGKILL: no resignation)
    leader, follower = (first, second) if first.reports and first.reports[-1][2] else (second, first)
    leader.fresh.clear()
    leader.fresh.wait(10)
    renewed = leader.reports[-1][3] if leader.reports else float("nan")
    killed = time.monotonic()
    leader.kill()
    seen = len(follower.reports)
    while not any(r[2] for r in follower.reports[seen:]) and time.monotonic() - killed < 60:
        time.sleep(0.05)
    led = next((r for r in follower.reports[seen:] if r[2]), None)
    failover = ((led[0] - killed, led[0] - renewed, led[0] + led[1] - killed) if led
                else (float("nan"),) * 3)
    for g in generators:
        g.conn.send(("stop", None))
    return _report((joined, copied, txns, took_over), with_stats, without, silencing, to_connecting, failover)


def _report(seeding: tuple[float, float, int, float], a: Window, b: Window, silencing: list[float],
            to_connecting: list[float], failover: tuple[float, float, float]) -> str:
    med = statistics.median
    joined, copied, txns, took_over = seeding

    def both(f: Any) -> str:
        return f"{f(a)} | {f(b)}"

    def cores(values: list[float]) -> str:
        return " + ".join(f"{100 * u:.0f}" for u in values)

    rows = [
        ("heartbeat store requests/s (puts + keepalives; 1,000 beats/s + 500 keepalives/s due)",
         both(lambda w: f"{w.rate:,.0f} ({w.failures} failed)")),
        ("**heartbeat lateness** p50 / p99 / max, ms (target p99 <= 200)",
         both(lambda w: f"**{_dist([s[2] for s in w.samples])}** ({len(w.samples):,} beats)")),
        ("... the generator's own lag (its loop woke - due)", both(lambda w: _dist([s[0] for s in w.samples]))),
        ("... waiting for a free connection (sent - woke)", both(lambda w: _dist([s[1] - s[0] for s in w.samples]))),
        ("... etcd's answers (done - sent)", both(lambda w: _dist([s[2] - s[1] for s in w.samples]))),
        ("**leader pass** (renewal + reconcile) p50 / p99 / max, ms (target p99 <= 100)",
         both(lambda w: f"**{_dist1(w.leader)}** ({len(w.leader)} passes)")),
        ("... the pass's own CPU (its thread), p50 / p99 / max, ms; the slowest pass's", both(_own_cpu)),
        ("follower pass (observe only) p50 / p99 / max, ms", both(lambda w: f"{_dist1(w.follower)}")),
        ("leadership changes in the window", both(lambda w: str(w.changes))),
        ("CPU, % of one core: etcd members", both(lambda w: cores(w.usage["etcd"]))),
        ("... generator processes", both(lambda w: cores(w.usage["generators"]))),
        ("... manager processes (m1 + m2)", both(lambda w: cores(w.usage["managers"]))),
        ("... all of these / whole machine (2 cores = 200)",
         both(lambda w: f"{100 * sum(sum(v) for v in w.usage.values()):.0f} / {100 * w.machine:.0f}")),
        ("... of the whole machine, stolen by the hypervisor (steal)", both(lambda w: f"{100 * w.stolen:.1f}")),
    ]
    table = ("| measure | statistics every 15 s (default) | statistics off |\n|---|---|---|\n"
             + "".join(f"| {x} | {y} |\n" for x, y in rows))
    others = [
        ("hosts joined on the embedded store (register, heartbeat, 2 passes)", f"{joined:.1f} s"),
        ("their records copied into etcd (hosts/, credentials/)", f"{copied:.1f} s ({txns} transactions of 100 puts)"),
        ("first manager's first pass (lists every host)", f"{1000 * took_over:.0f} ms"),
        (f"leader pass while {SILENT} hosts go silent and Connecting (statistics off), p50 / p99 / max",
         f"{_dist1(silencing)} ms ({len(silencing)} passes)"),
        ("last heartbeat to Connecting, median (min-max)",
         f"{med(to_connecting):.1f} s ({to_connecting[0]:.1f}-{to_connecting[-1]:.1f}; "
         f"{len(to_connecting)}/{SILENT} hosts; rule: 30 s)" if to_connecting else "-"),
        ("first missed heartbeat to Connecting, median",
         f"{med(to_connecting) - INTERVAL:.1f} s" if to_connecting else "-"),
        ("failover: leader killed -> follower leads (TTL 10 s)", f"{failover[0]:.1f} s"),
        ("failover: leader's last lease renewal -> follower leads", f"{failover[1]:.1f} s"),
        ("failover: leader killed -> follower's first pass done", f"{failover[2]:.1f} s"),
    ]
    table2 = "| measure | value |\n|---|---|\n" + "".join(f"| {x} | {y} |\n" for x, y in others)
    return (f"{HOSTS:,} hosts beating every {INTERVAL:.0f} s on their own {TTL:.0f} s etcd leases (the requests of "
            f"HostAgent), from {GENERATORS} generator processes, each one asyncio loop over "
            f"{etcd_load.CONNECTIONS} keep-alive connections spread over the members; a 3-member etcd on "
            "loopback; two managers, each a process of its own (leader + warm follower, lease TTL 10 s), one "
            f"pass a second. Two steady windows of {STEADY:.0f} s, side by side in one run: the default config "
            "(every Up host measured every 15 s), then statistics off (``statistics.interval = 0``).\n\n"
            f"**All of it shares one {os.cpu_count()}-core machine**: three etcd members (each fsyncing its "
            "own WAL), the generators and both managers; the CPU rows say who used what. On a real cluster the "
            "members, the managers and the 10,000 agents would each have machines of their own.\n\n"
            f"{table}\n{table2}\n"
            "Lateness is measured at the generator, from a beat's due instant until etcd's answer was read; "
            "its first split (the loop's own lag) shows whether the generator delays beats. Hosts join on the "
            "embedded store and their records are copied into etcd (a join through etcd is not timed here). "
            "The managers take heartbeats on a listener thread, as `Manager.run` does; a leader renewed "
            "within a third of its TTL asks etcd nothing in its pass and waits for no statistics round (they "
            "run between passes and are taken once over), so its pass is its own work and its wait for the "
            "interpreter and a core (the CPU row beside it), while a beat's lateness is etcd's: the machine "
            "is saturated (the whole-machine row), the members "
            "taking three quarters of it. The follower keeps its cache warm through watches, so its first "
            "pass as leader needs no listing; failover is bounded by the lease TTL (the dead leader's lease "
            "must expire before anyone else may act).\n")
