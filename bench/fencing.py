"""Recovery from a host failure on real libvirt hosts, with the default timings and with
aggressive ones.

A lab of three libvirtd hosts with an IPMI BMC each (flavors.virt.lab), three HA guests of
64 MiB on the middle one. The manager polls every host's libvirtd each second (a
heartbeat when it answers) and reconciles; the clock is the system's. At t=0 the middle
host's network is cut (its libvirtd stops answering, its guests keep running): it is
found unreachable, fenced through ``fence_ipmilan`` to its BMC (a real power cut), and its
guests are restarted on the other two. Measured: from the cut to every guest running
again (libvirt's view), split into detection (host NonResponsive), fencing (host Down)
and restart. The manager has been running longer than ``startup_grace``.

Side by side, in the same run and on the same lab (issue 13): the aggressive scenario
again with a fourth "host" registered just before the cut, whose libvirt URI points at a
TCP listener that accepts and never sends a byte (its bootstrap, ``libvirt.open``, never
returns: it hangs through the whole recovery). Runs alternate with and without it.

The poller (the manager's heartbeat source, scaffolding here) asks every host in
parallel with ``virsh`` (1 s timeout) and collects a poll still running at a later tick,
so the hung host does not slow the poller either: what is compared is the controller.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from clustercore import Cluster, ClusterConfig, HostReport, HostState, Plugins
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from flavors.virt import VirtFlavor
from flavors.virt.driver import LibvirtDriver
from flavors.virt.lab import Lab, LabHost, domain_type
from flavors.virt.spec import Memory, VMSpec
from flavors.virt.workload import vm_workload

TITLE = "Fencing and HA restart on real libvirt hosts"
AGGRESSIVE = ClusterConfig(
    liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2, grace_per_workload=0),
    fencing=FencePolicy(retries=1, retry_delay=1, confirm_timeout=10))
S = HostState
RUNS = 3


class SilentListener:
    """A TCP listener on 127.0.0.1 that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.uri = f"qemu+tcp://127.0.0.1:{self.sock.getsockname()[1]}/system"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:  # the accept timeout included
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()


def recover(lab: Lab, config: ClusterConfig, hung: bool = False) -> dict[str, float]:
    for host in lab.hosts:
        host.power_on()
    assert lab.bmcs is not None
    driver = LibvirtDriver(shutdown_timeout=0.5)
    pool = ThreadPoolExecutor(4)
    polls = ThreadPoolExecutor(8, thread_name_prefix="poll")
    polling: dict[str, Future[bool]] = {}
    listener = SilentListener() if hung else None
    steps: list[float] = []
    cluster = Cluster(plugins=Plugins([VirtFlavor(driver, soft_fence=lab.soft_fence)], entry_points=False),
                      config=config, executor=pool)
    cluster.controller.started -= config.fencing.startup_grace  # the manager has run for a while

    def tick() -> None:
        for name in cluster.hosts():
            if name not in polling:
                polling[name] = polls.submit(driver.answers, cluster.host(name), 1)
        wait(list(polling.values()), timeout=0.3)
        for name, fut in list(polling.items()):
            if fut.done():
                del polling[name]
                if fut.result():
                    cluster.heartbeat(name, HostReport())
        began = time.monotonic()
        cluster.step()
        steps.append(time.monotonic() - began)
        time.sleep(0.1)

    def until(done: Callable[[], bool], limit: float = 600) -> float:
        start = time.monotonic()
        while not done():
            if time.monotonic() - start > limit:
                raise RuntimeError(f"not reached in {limit} s: {cluster.query_events()[-5:]}")
            tick()
        return time.monotonic()

    try:
        def join(host: LabHost) -> None:
            assert lab.bmcs is not None
            cluster.register_host({"name": host.name, "address": host.uri, "capacity": {"cpu": 8, "memory": 4096},
                                   "fence_devices": [lab.bmcs.device(host)]})

        join(lab.hosts[1])  # the guests start on lab2, the only host yet
        until(lambda: cluster.host("lab2").state is S.UP)
        names = [f"b{i}" for i in range(3)]
        for name in names:
            spec = VMSpec(name=name, uuid=str(uuid.uuid4()), memory=Memory(64), domain_type=domain_type())
            cluster.submit(vm_workload(spec, ha=True))
        join(lab.hosts[0])
        join(lab.hosts[2])
        until(lambda: all(cluster.host(n).state is S.UP for n in ("lab1", "lab3")))
        assert {p.host for p in cluster.placements().values()} == {"lab2"}

        def running_elsewhere() -> bool:
            return sorted(lab.hosts[0].active_domains() + lab.hosts[2].active_domains()) == names

        steps.clear()
        if listener is not None:  # the fourth host joins and hangs
            cluster.register_host({"name": "hung", "address": listener.uri, "capacity": {"cpu": 8, "memory": 4096}})
            until(lambda: bool(listener.accepted), limit=30)
            assert cluster.host("hung").state is S.INSTALLING
        # A few seconds of passes and heartbeats before the cut, in both variants: the join's
        # first pass waits up to call_wait for the hung bootstrap, and a cut right after it
        # would start with lab2's last heartbeat already that old (a shorter detection).
        settled = time.monotonic() + 3
        until(lambda: time.monotonic() >= settled)
        start = time.monotonic()
        lab.hosts[1].cut_network()
        unreachable = until(lambda: cluster.host("lab2").state in (S.NON_RESPONSIVE, S.FENCING, S.DOWN))
        down = until(lambda: cluster.host("lab2").state is S.DOWN)
        done = until(running_elsewhere)
        assert not lab.hosts[1].running
        if listener is not None:
            assert cluster.host("hung").state in (S.INSTALLING, S.INSTALL_FAILED), cluster.host("hung")
        return {"detect": unreachable - start, "fence": down - unreachable, "restart": done - down,
                "total": done - start, "slowest_pass": max(steps)}
    finally:
        for name in list(cluster.placements()):
            with contextlib.suppress(Exception):  # a guest of the powered-off host
                cluster.stop(name, force=True)
        if listener is not None:
            listener.close()  # the hung bootstrap gets EOF and its lane ends
        polls.shutdown(cancel_futures=True)
        pool.shutdown()
        driver.close()


def side_by_side(lab: Lab, config: ClusterConfig = AGGRESSIVE, runs: int = RUNS) -> dict[str, list[dict[str, float]]]:
    """The aggressive scenario ``runs`` times without and with the hung fourth host,
    alternating; prints min/median/max of the totals and their ratio."""
    out: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    for _ in range(runs):
        out["without"].append(recover(lab, config))
        out["with"].append(recover(lab, config, hung=True))
    stats = {k: spread([r["total"] for r in v]) for k, v in out.items()}
    for k, (low, mid, high) in stats.items():
        print(f"{k} a hung 4th host: total min {low:.1f} s, median {mid:.1f} s, max {high:.1f} s")
    print(f"ratio with/without (medians): {stats['with'][1] / stats['without'][1]:.2f}")
    return out


def spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def run() -> str:
    rows = []
    with Lab(3, base_port=16920, bmc=True) as lab:
        default = recover(lab, ClusterConfig())
        both = side_by_side(lab)
    fast, hung = both["without"], both["with"]
    median = {k: statistics.median(r[k] for r in fast) for k in fast[0]}
    hung_median = {k: statistics.median(r[k] for r in hung) for k in hung[0]}
    live = ClusterConfig().liveness
    rows.append(("defaults (heartbeat 10 s x 3, NonResponsive after 60 s + 0.5 s/VM)", default))
    rows.append((f"aggressive (heartbeat 1 s x 2, NonResponsive after 2 s), median of {RUNS}", median))
    rows.append((f"fencing, with a hung 4th host (aggressive), median of {RUNS}", hung_median))
    lines = [
        "Host cut from the network (its libvirtd stops answering; its 3 HA guests keep running) until "
        "the 3 guests run on the other hosts, fenced through `fence_ipmilan` to the lab BMC.",
        "",
        "| timings | detected unreachable | fenced (power off confirmed) | guests restarted | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        lines.append(f"| {label} | {r['detect']:.1f} s | {r['fence']:.1f} s | {r['restart']:.1f} s "
                     f"| **{r['total']:.1f} s** |")
    lines += ["", f"Default detection is {live.connecting_after:.0f} s to Connecting plus "
                  f"{live.non_responsive_grace:.0f} s + 0.5 s per VM to NonResponsive (oVirt's values); the "
                  "soft fence finds the host unreachable and is skipped, so hard fencing starts at once."]
    without, with_hung = spread([r["total"] for r in fast]), spread([r["total"] for r in hung])
    lines += [
        "",
        "With a hung 4th host: the same aggressive scenario, same guests, same lab, runs alternating, "
        "with a fourth host registered just before the cut whose libvirt URI is a TCP listener that "
        "accepts and never answers (its bootstrap hangs through the whole recovery; "
        f"`call_timeout` {AGGRESSIVE.call_timeout:.0f} s, `call_wait` {AGGRESSIVE.call_wait:.0f} s).",
        "",
        f"| cut -> guests running elsewhere, {RUNS} runs each | min | median | max "
        "| slowest pass (join and recovery) |",
        "|---|---:|---:|---:|---:|",
        f"| fencing, without a hung host | {without[0]:.1f} s | {without[1]:.1f} s | {without[2]:.1f} s "
        f"| {max(r['slowest_pass'] for r in fast):.2f} s |",
        f"| fencing, with a hung 4th host | {with_hung[0]:.1f} s | {with_hung[1]:.1f} s | {with_hung[2]:.1f} s "
        f"| {max(r['slowest_pass'] for r in hung):.2f} s |",
        "",
        f"Ratio with/without (medians): **{with_hung[1] / without[1]:.2f}**.",
    ]
    return "\n".join(lines)
