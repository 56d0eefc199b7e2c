"""Real guests through the cluster, side by side with bare libvirt doing the same work.

A lab of three libvirtd hosts with IPMI BMCs (flavors.virt.lab, base port 16700) and a
cluster on it (flavors.virt.labcluster: a shared domain on the lab's shared directory, a
local domain on every host, the project's real guest uploaded as the template). Every guest
is the real guest (TCG where kvm-pvm cannot boot Linux), 256 MiB, one vCPU, appending its
counter to its disk once a second. Each measurement alternates ours and its reference in
the same run (same guest, same hosts, same flags); wall-clock seconds, min/median/max, and
the ratio of the medians (ours / reference):

1. **clone + boot to the first counter tick** on lab1: ``add_volume`` (a qcow2 clone of the
   template on the shared domain) + ``submit`` vs ``qemu-img create -b`` of the same
   template + ``createXML`` of the same XML (``domxml.build(guest_spec(...))``), from the
   start to the first ``counter N`` line on the guest's console (polled every 20 ms).
2. **migration lab1 -> lab2**, the guest idle and dirtying 176 MiB (the dirtier rewrites
   and checks one byte per page; 200 MiB gets OOM-killed), disk on the shared domain:
   ``Cluster.migrate`` vs ``virsh migrate --persistent --undefinesource --unsafe
   --auto-converge --abort-on-error --bandwidth 64`` (not live: on TCG our engine never
   pre-copies, it copies the guest paused at the 64 MiB/s cap; see migration_policy). The
   migration URI is libvirt's default for both (the hosts carry no ``virt/migration-uri``
   label). The pause is the ``downtime`` of the destination's completed-job stats. After
   each migration the counter must tick on and the dirtier report 0 lost pages after two
   more passes; a run that lost pages is counted in the table.
3. **storage migration of a 1 GiB local disk**: a raw volume that holds 1 GiB (the
   template's ext4 image as raw in its first 64 MiB, random data after it; the guest boots
   from it) on lab1's local domain, moved with the guest to lab2 and back (ping-pong, both
   guests idle and alive throughout): ``Cluster.migrate`` (NON_SHARED_DISK, the source copy
   deleted after) vs ``virsh migrate --copy-storage-all --migrate-disks vda`` with the same
   flags and cap (the source copy deleted after, untimed). The counter file on the
   destination's copy must hold 1..n with n at least the last tick said before.
4. **power cut -> the HA guest writing again on another host**: lab1 loses power under the
   guest (disk on the shared domain); timed to its first counter tick after the restart,
   with ``ClusterConfig()`` defaults and with labcluster's aggressive ``FAST``; the host is
   powered on and Up again between runs; detection, fencing and restart are read at each
   reconcile pass (0.2-1.2 s apart). Like for like here is the same scenario under the two
   timings (bare libvirt restarts nothing after a power cut).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import attrs
import libvirt

from clustercore import ClusterConfig, HostState
from clustercore.model import PlacementState
from flavors.virt import domxml, vm_workload
from flavors.virt.guest import build_guest, console_lines, counter_values, guest_spec
from flavors.virt.lab import Lab, linux_domain_type
from flavors.virt.labcluster import FAST, LOCAL, LOCAL_PATH, LabCluster
from flavors.virt.spec import VMSpec

TITLE = "Real guests: clone and boot, migration, storage migration, HA after a power cut"
BASE_PORT = 16700
MEMORY, DIRTY, BIG = 256, 176, 1024  # MiB
BANDWIDTH = 64  # MiB/s: the migration policy's default cap
RUNS = {"boot": 5, "migrate": 3, "storage": 3, "fast": 3, "default": 2}
S = HostState
VIRSH = ["--persistent", "--undefinesource", "--auto-converge", "--abort-on-error", "--bandwidth", str(BANDWIDTH)]


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f}" if values else "- | - | -"


def ratio(ours: list[float], ref: list[float]) -> str:
    return f"{statistics.median(ours) / statistics.median(ref):.2f}" if ours and ref else "-"


def first_tick(console: Path, limit: float = 60) -> None:
    """Wait (no reconcile passes) for a counter tick on ``console``, checking every 20 ms."""
    deadline = time.monotonic() + limit
    while not counter_values(console_lines(console)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no counter tick on {console} in {limit} s")
        time.sleep(0.02)


class Bench:
    def __init__(self, lc: LabCluster) -> None:
        self.lc, self.lab = lc, lc.lab
        self.conns: dict[str, libvirt.virConnect] = {h.name: libvirt.open(h.uri) for h in self.lab.hosts}
        self.bare = self.lab.shared / "bare"
        self.bare.mkdir(exist_ok=True)
        self.seq = 0

    def name(self, kind: str) -> str:  # a fresh name (and console file) for every guest
        self.seq += 1
        return f"{kind}{self.seq}"

    def spec(self, name: str, disk: str, dirty: int = 0, volume: str | None = None, raw: bool = False) -> VMSpec:
        assert self.lc.image is not None
        spec = guest_spec(self.lc.image, name, disk, self.lc.console(name), memory=MEMORY, dirty_mib=dirty,
                          volume=volume, domain_type=linux_domain_type())
        return attrs.evolve(spec, disks=(attrs.evolve(spec.disks[0], format="raw"),)) if raw else spec

    def bare_start(self, spec: VMSpec, define: bool = True) -> None:
        """On lab1: defined and started (as our driver does; untimed) or created (timed)."""
        if define:
            self.conns["lab1"].defineXML(domxml.build(spec)).create()
        else:
            self.conns["lab1"].createXML(domxml.build(spec), 0)

    def bare_drop(self, name: str, host: str) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            dom = self.conns[host].lookupByName(name)
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()

    def virsh_migrate(self, name: str, source: str, target: str, *extra: str) -> float:
        uri = {h.name: h.uri for h in self.lab.hosts}
        started = time.perf_counter()
        subprocess.run(["virsh", "-c", uri[source], "migrate", *VIRSH, *extra, name, uri[target]], check=True,
                       capture_output=True)
        return time.perf_counter() - started

    def after(self, out: dict[str, list[float]], who: str, name: str, host: str, dirty: int = 0,
              disk: str | None = None) -> None:
        """Note the guest's pause in the migration that brought it to ``host`` (libvirt's
        downtime there); after two more ticks (and dirtier passes) the pages it lost (total),
        -1 when its counter has a gap or a duplicate on its console or, for ``disk`` (a file
        of ``host``'s local directory), in the counter file of that copy."""
        with contextlib.suppress(libvirt.libvirtError):
            stats = self.conns[host].lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
            if "downtime" in stats:
                out[f"{who}_pause"].append(float(stats["downtime"]) / 1000)
        self.lc.wait_ticks(name, 2, limit=60)
        if dirty:
            passes = len(self.lc.lost(name))
            self.lc.until(lambda: len(self.lc.lost(name)) >= passes + 2, 60, f"two more dirtier passes of {name}")
        ticks = self.lc.ticks(name)
        whole = ticks == list(range(ticks[0], ticks[0] + len(ticks)))
        if disk is not None:
            path = str(self.lab.host(host).local_dir / disk)
            done = subprocess.run(["debugfs", "-R", "cat /counter", path], capture_output=True, check=False)
            values = [int(v) for v in done.stdout.decode().split()]
            whole = whole and values == list(range(1, len(values) + 1)) and values[-1] >= ticks[-1] - 1
        out[f"{who}_lost"].append((self.lc.lost(name)[-1] if dirty else 0) if whole else -1)

    def ready(self, name: str, dirty: int = 0) -> None:
        self.lc.until(lambda: bool(self.lc.ticks(name)) and (not dirty or len(self.lc.lost(name)) >= 2), 60,
                      f"{name} ticking{' and dirtying' if dirty else ''}")

    # ------------------------------------------------------------------ 1. clone + boot

    def clone(self, name: str) -> Path:
        """A qcow2 overlay of the template volume's file, outside the cluster's domain."""
        disk = self.bare / f"{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.lab.shared / "domain" /
                        "guest.qcow2"), "-F", "qcow2", str(disk)], check=True)
        return disk

    def boot(self, runs: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"ours": [], "bare": []}
        for _ in range(runs):
            out["ours"].append(self.boot_once(True))
            out["bare"].append(self.boot_once(False))
        return out

    def boot_once(self, ours: bool) -> float:
        name = self.name("boot" if ours else "bare")
        started = time.perf_counter()
        if ours:
            self.lc.guest(name, host="lab1", memory=MEMORY)
        else:
            disk = self.clone(name)
            self.bare_start(self.spec(name, str(disk)), define=False)
        first_tick(self.lc.console(name))
        took = time.perf_counter() - started
        if ours:
            self.lc.cluster.delete(name)
        else:
            self.bare_drop(name, "lab1")
            disk.unlink()
        self.lc.up()  # passes and heartbeats between runs
        return took

    # ------------------------------------------------------------------ 2. memory migration

    def migrate(self, runs: int, dirty: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {f"{who}{what}": [] for who in ("ours", "virsh") for what in ("", "_pause",
                                                                                                  "_lost")}
        for _ in range(runs):
            for ours in (True, False):
                name = self.name("mig" if ours else "vmig")
                if ours:
                    self.lc.guest(name, host="lab1", memory=MEMORY, dirty_mib=dirty)
                else:
                    disk = self.clone(name)
                    self.bare_start(self.spec(name, str(disk), dirty))
                self.ready(name, dirty)
                if ours:
                    started = time.perf_counter()
                    assert self.lc.cluster.migrate(name, "lab2").host == "lab2"
                    out["ours"].append(time.perf_counter() - started)
                    self.after(out, "ours", name, "lab2", dirty)
                    self.lc.cluster.delete(name)
                else:
                    out["virsh"].append(self.virsh_migrate(name, "lab1", "lab2", "--unsafe"))
                    self.after(out, "virsh", name, "lab2", dirty)
                    self.bare_drop(name, "lab2")
                    disk.unlink()
        return out

    # ------------------------------------------------------------------ 3. storage migration

    def storage(self, runs: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {f"{who}{what}": [] for who in ("ours", "virsh") for what in ("", "_pause",
                                                                                                  "_lost")}
        with tempfile.TemporaryDirectory(prefix="bench-guests-", dir=self.lab.shared) as tmp:
            image = Path(tmp) / "big.raw"  # the template's ext4 as raw, then random data to 1 GiB
            subprocess.run(["qemu-img", "convert", "-O", "raw", str(self.lc.template), str(image)], check=True)
            with image.open("ab") as f:
                while f.tell() < BIG << 20:
                    f.write(os.urandom(min(16 << 20, (BIG << 20) - f.tell())))
            c = self.lc.cluster
            c.add_volume({"name": "big-disk", "domain": LOCAL, "size": BIG, "format": "raw", "workload": "big",
                          "host": "lab1"}, upload=str(image))
            shutil.copyfile(image, self.lab.host("lab1").local_dir / "bare-big.raw")
        self.conns["lab1"].storagePoolLookupByName(LOCAL).refresh(0)
        c.submit(vm_workload(self.spec("big", f"{LOCAL_PATH}/big-disk.raw", volume="big-disk", raw=True)))
        self.bare_start(self.spec("bare-big", f"{LOCAL_PATH}/bare-big.raw", raw=True))
        self.ready("big")
        self.ready("bare-big")
        where, there = "lab1", "lab2"
        try:
            for _ in range(runs):
                started = time.perf_counter()
                assert c.migrate("big", there).host == there and c.volumes()["big-disk"].host == there
                out["ours"].append(time.perf_counter() - started)
                self.after(out, "ours", "big", there, disk="big-disk.raw")
                out["virsh"].append(self.virsh_migrate("bare-big", where, there, "--copy-storage-all",
                                                       "--migrate-disks", "vda"))
                pool = self.conns[where].storagePoolLookupByName(LOCAL)
                pool.refresh(0)
                pool.storageVolLookupByName("bare-big.raw").delete(0)  # what our driver does after a move
                self.conns[there].storagePoolLookupByName(LOCAL).refresh(0)
                self.after(out, "virsh", "bare-big", there, disk="bare-big.raw")
                where, there = there, where
        finally:
            with contextlib.suppress(Exception):
                c.delete("big")
            for host in ("lab1", "lab2"):
                self.bare_drop("bare-big", host)
                with contextlib.suppress(libvirt.libvirtError):
                    pool = self.conns[host].storagePoolLookupByName(LOCAL)
                    pool.refresh(0)
                    pool.storageVolLookupByName("bare-big.raw").delete(0)
        return out

    # ------------------------------------------------------------------ 4. power cut

    def power_cut(self, config: ClusterConfig) -> dict[str, float]:
        c = self.lc.cluster
        c.configure(attrs.evolve(config, storage_roots=c.config.storage_roots))
        c.controller.started = min(c.controller.started, c.clock.now() - config.fencing.startup_grace)
        name = self.name("ha")
        self.lc.guest(name, host="lab1", memory=MEMORY)
        self.lc.wait_ticks(name, 3)
        starts = sum(line.startswith("counter counter continues") for line in self.lc.lines(name))
        stamp: dict[str, float] = {}

        def watch() -> None:  # the first tick after the guest's next start, 20 ms resolution
            while "tick" not in stamp and "stop" not in stamp:
                lines = self.lc.lines(name)
                begun = [i for i, line in enumerate(lines) if line.startswith("counter counter continues")]
                if len(begun) > starts and counter_values(lines[begun[-1]:]):
                    stamp["tick"] = time.monotonic()
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        marks: dict[str, float] = {}

        def seen() -> bool:
            now, state = time.monotonic(), c.host("lab1").state
            if state in (S.NON_RESPONSIVE, S.FENCING, S.DOWN):
                marks.setdefault("detect", now)
            if state is S.DOWN:
                marks.setdefault("fenced", now)
            placed = c.placements().get(name)
            if placed is not None and placed.state is PlacementState.RUNNING and placed.host != "lab1":
                marks.setdefault("running", now)
            return "tick" in stamp

        start = time.monotonic()
        self.lab.host("lab1").power_off()
        try:
            self.lc.until(seen, 400, f"{name} writing again")
        finally:
            stamp["stop"] = 0
            watcher.join()
        c.delete(name)
        self.lab.host("lab1").power_on()
        self.lc.until(lambda: c.host("lab1").state in (S.UP, S.MAINTENANCE), 120, "lab1 back")
        if c.host("lab1").state is S.MAINTENANCE:
            c.activate_host("lab1")
        self.lc.up()
        return {k: v - start for k, v in (*marks.items(), ("tick", stamp["tick"]))}

    def close(self) -> None:
        for conn in self.conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self.conns.clear()


def measure(runs: dict[str, int] = RUNS) -> dict[str, object]:
    image = build_guest(Path(tempfile.gettempdir()) / "clustercore-guest-cache")
    with Lab(3, base_port=BASE_PORT, bmc=True) as lab:
        lc = LabCluster(lab)
        bench = Bench(lc)
        try:
            lc.up()
            lc.storage(image)
            found: dict[str, object] = {"boot": bench.boot(runs["boot"]),
                                        "idle": bench.migrate(runs["migrate"], 0),
                                        "dirty": bench.migrate(runs["migrate"], DIRTY),
                                        "storage": bench.storage(runs["storage"])}
            bench.close()
            found["default"] = [bench.power_cut(ClusterConfig()) for _ in range(runs["default"])]
            found["fast"] = [bench.power_cut(FAST) for _ in range(runs["fast"])]
            return found
        finally:
            bench.close()
            lc.close()


def losses(values: list[float]) -> str:
    """What the checks after each migration found: lost pages (a total per run) or -1 for a
    counter with a gap (on the console, or on the destination's disk)."""
    lost, gaps = [int(v) for v in values if v > 0], sum(v < 0 for v in values)
    if not lost and not gaps:
        return f"0 lost, counter whole, in {len(values)} runs"
    return (f"**{len(lost)} of {len(values)} runs lost pages ({', '.join(map(str, lost))}), "
            f"{gaps} with a counter gap**")


def run(runs: dict[str, int] = RUNS) -> str:
    load_before, began = Path("/proc/loadavg").read_text().split()[:3], time.monotonic()
    found = measure(runs)
    load_after, minutes = Path("/proc/loadavg").read_text().split()[:3], (time.monotonic() - began) / 60
    boot = found["boot"]
    assert isinstance(boot, dict)
    lines = [f"Lab of 3 libvirtd hosts on this 2-core machine; the project's real guest under "
             f"{linux_domain_type()} (TCG where kvm-pvm cannot boot Linux), {MEMORY} MiB, 1 vCPU. Ours and the "
             f"reference alternate in one run; seconds. Load average (1, 5, 15 min) before: {' '.join(load_before)}, "
             f"after: {' '.join(load_after)}; the whole benchmark took {minutes:.1f} min (`python -m bench guests`).",
             "", f"| clone + boot on lab1 to the first counter tick, {runs['boot']} runs each | min | median | max |",
             "|---|---:|---:|---:|",
             f"| cluster: `add_volume` (clone on the shared domain) + `submit` | {spread(boot['ours'])} |",
             f"| bare: `qemu-img create -b` + `createXML` of the same XML | {spread(boot['bare'])} |",
             "", f"Ratio cluster / bare (medians): **{ratio(boot['ours'], boot['bare'])}**.", "",
             f"| migration at the {BANDWIDTH} MiB/s cap, {runs['migrate']} runs each | min | median | max "
             "| pause (libvirt's downtime) min | median | max | checked after each |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    ratios = []
    for label, key in (("idle, lab1 -> lab2", "idle"), (f"dirtying {DIRTY} MiB, lab1 -> lab2", "dirty"),
                       (f"{BIG} MiB local raw disk, lab1 <-> lab2", "storage")):
        r = found[key]
        assert isinstance(r, dict)
        for who, how in (("ours", "`Cluster.migrate`"), ("virsh", "`virsh migrate`")):
            lines.append(f"| {label}: {how} | {spread(r[who])} | {spread(r[f'{who}_pause'])} "
                         f"| {losses(r[f'{who}_lost'])} |")
        ratios.append(f"{key} **{ratio(r['ours'], r['virsh'])}**")
    idle, dirty = found["idle"], found["dirty"]
    assert isinstance(idle, dict) and isinstance(dirty, dict)
    lines += ["", f"Ratio ours / virsh (medians): {', '.join(ratios)}. Dirtying / idle (medians): ours "
              f"{ratio(dirty['ours'], idle['ours'])}, virsh {ratio(dirty['virsh'], idle['virsh'])}.", "",
              "Both not live (on TCG our engine copies a guest paused rather than lose pages), same flags and cap; "
              "virsh's time includes starting virsh and opening its two connections, ours a kept connection, the "
              "scheduler's check and the store's writes. Storage: the destination's pool makes the file; the "
              "source copy is deleted by our driver within the timing, for virsh after it.",
              "", "| power cut of lab1 -> HA guest's first counter tick on another host | runs | detected "
              "| fenced (Down) | running elsewhere | **writing again** min | median | max |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    medians = []
    for label, key in (("`ClusterConfig()` defaults", "default"), ("aggressive (labcluster's `FAST`)", "fast")):
        cuts = found[key]
        assert isinstance(cuts, list)
        mid = {k: statistics.median(r[k] for r in cuts if k in r) for k in ("detect", "fenced", "running", "tick")}
        medians.append(mid["tick"])
        lines.append(f"| {label} | {len(cuts)} | {mid['detect']:.1f} | {mid['fenced']:.1f} | {mid['running']:.1f} "
                     f"| {spread([r['tick'] for r in cuts])} |")
    lines += ["", "Detected, fenced and running: medians of the first reconcile pass that saw it. Ratio default / "
              f"aggressive (medians): **{medians[0] / medians[1]:.1f}**."]
    return "\n".join(lines)
