"""Incremental scoring (clustercore/scheduling/incremental.py): a scheduler that carries the
row-wise plugins' arrays from one decision to the next decides exactly as one that computes
everything anew: the same host, the same random draws for ties, on random clusters and
sequences of decisions, reservations, unreservations, releases and rewinds."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustercore.errors import NoValidHost
from clustercore.model import AffinityRule, Host, HostState, Placement, PlacementState, Resources, Workload
from clustercore.scheduling import Scheduler, Snapshot, incremental
from clustercore.scheduling.policies import POLICIES
from clustercore.scheduling.weighers import BalancedAllocation, LeastAllocated

SHAPES = [Resources(c, m, e) for c, m, e in ((1, 1024, {}), (2, 4096, {}), (4, 0, {}), (0, 2048, {}),
                                             (1, 1024, {"gpu": 1}), (3, 3072, {}), (0, 0, {}), (2, 1024, {"fpga": 1}))]

hosts_st = st.lists(
    st.builds(
        lambda i, cpu, mem, gpu, state, sched, rack: Host(
            f"h{i:03d}", capacity=Resources(cpu, mem, {"gpu": gpu} if gpu else {}), state=state, schedulable=sched,
            labels={"disk": "ssd"} if i % 2 else {}, location={"rack": f"r{rack}"}),
        st.integers(0, 999), st.integers(0, 16), st.sampled_from([0, 4096, 8192, 16384]), st.integers(0, 2),
        st.sampled_from([HostState.UP] * 5 + [HostState.MAINTENANCE]), st.booleans() | st.just(True),
        st.integers(0, 2)),
    min_size=1, max_size=14, unique_by=lambda h: h.name)
ops_st = st.lists(st.tuples(st.sampled_from(["schedule"] * 8 + ["select", "unreserve", "rewind", "release"]),
                            st.integers(0, len(SHAPES) - 1), st.integers(0, 3), st.integers(0, 10**6)),
                  min_size=1, max_size=60)


def workload(name: str, shape: int, kind: int) -> Workload:
    return Workload(name, "fake", requests=SHAPES[shape], labels={"app": "web"},
                    host_selector={"disk": "ssd"} if kind == 1 else {},
                    affinity=(AffinityRule({"app": "web"}, anti=True, hard=kind == 3),) if kind >= 2 else ())


def decide(scheduler: Scheduler, w: Workload, reserve: bool) -> str | None:
    try:
        chosen = scheduler.select(w)
    except NoValidHost:
        return None
    if reserve:
        scheduler.reserve(w, chosen)
    return chosen


def check_carried(scheduler: Scheduler, w: Workload) -> None:
    """What ``scheduler`` carries for ``w``'s request, as computed anew on its snapshot: the
    masks, the raw scores, their extremes, the total where it is not stale, its best hosts."""
    snap = scheduler.snapshot
    carrier = scheduler._incremental()
    assert carrier is not None
    carried = carrier.carried.get(w.requests)
    if carried is None:  # asked once while there was no room: nothing carried
        return
    assert (carried.journal, carried.version, carried.released) == (snap.journal, snap.version, snap.released)
    for f, mask in zip(carrier.filters, carried.masks, strict=True):
        if f is not None:
            assert np.array_equal(mask, f.reject_rows(w.requests, snap, None))
    for weigher, raw, extremes in zip(carrier.weighers, carried.raws, carried.extremes, strict=True):
        if weigher is not None:
            assert np.array_equal(raw, weigher.weigh_rows(w.requests, snap, None))
            assert extremes is None or extremes == (raw.min(), raw.max())
    everyone = snap.everyone
    taking_part = [k for k, (weigher, _, optional) in enumerate(scheduler._planned()[3])
                   if not optional or weigher.applies(w, snap)]  # type: ignore[attr-defined]
    row_wise = all(carrier.weighers[k] is not None for k in taking_part)
    if row_wise and carried.total is not None and not carried.pending \
            and len(scheduler.passing(w, snap)) == snap.size > 1:
        total, _ = scheduler._weigh(w, snap, everyone)
        assert np.array_equal(carried.total, total)
        if carried.top is not None:
            assert carried.top[0] == total.max()
            assert carried.top[1].tolist() == np.flatnonzero(total >= total.max() - 1e-12).tolist()


def replay(snap: Snapshot, ops: list[tuple[str, int, int, int]], policy: str, ratio: float, seed: int) -> int:
    """Apply ``ops`` to a carrying scheduler and to one computing anew, side by side; how many
    decisions were compared."""
    carrying = Scheduler(snap, POLICIES[policy], ratios={"cpu": ratio}, seed=seed)
    anew = Scheduler(snap, POLICIES[policy], ratios={"cpu": ratio}, seed=seed)
    carrying.carry_from, anew.carry_from = 0, 1 << 62
    history = [(snap, snap)]
    made: list[str] = []
    decided = 0
    for k, (op, shape, kind, pick) in enumerate(ops):
        if op == "unreserve" and made:
            name = made[pick % len(made)]
            carrying.unreserve(name)
            anew.unreserve(name)
        elif op == "rewind":
            carrying.snapshot, anew.snapshot = history[pick % len(history)]
        elif op == "release" and any(carrying.snapshot.shared.placed):
            there = [(i, w) for i, group in enumerate(carrying.snapshot.shared.placed) for w in group]
            index, gone = there[pick % len(there)]
            carrying.snapshot = carrying.snapshot.release(index, gone)
            anew.snapshot = anew.snapshot.release(index, gone)
        else:
            w = workload(f"w{k}", shape, kind)
            chosen = decide(carrying, w, False)
            assert chosen == decide(anew, w, False), f"op {k}: {w}"
            if chosen is not None:
                check_carried(carrying, w)
                if op == "schedule":
                    carrying.reserve(w, chosen)
                    anew.reserve(w, chosen)
            assert carrying.rng.bit_generator.state == anew.rng.bit_generator.state
            decided += 1
            if chosen is not None and op == "schedule":
                made.append(w.name)
        assert np.array_equal(carrying.snapshot.used, anew.snapshot.used)
        history.append((carrying.snapshot, anew.snapshot))
    return decided


@settings(max_examples=150, deadline=None)
@given(hosts_st, st.lists(st.tuples(st.integers(0, len(SHAPES) - 1), st.integers(0, 20)), max_size=20), ops_st,
       st.sampled_from(sorted(POLICIES)), st.sampled_from([1.0, 2.0]), st.integers(0, 3))
def test_carrying_decides_exactly_as_computing_anew(hosts: list[Host], placed: list[tuple[int, int]],
                                                     ops: list[tuple[str, int, int, int]], policy: str, ratio: float,
                                                     seed: int) -> None:
    names = sorted(h.name for h in hosts)
    workloads = [workload(f"p{k}", shape, 0) for k, (shape, _) in enumerate(placed)]
    snap = Snapshot.build(hosts, {w.name: w for w in workloads},
                          [Placement(w.name, names[at % len(names)], PlacementState.RUNNING)
                           for w, (_, at) in zip(workloads, placed, strict=True)])
    replay(snap, ops, policy, ratio, seed)


def test_many_hosts_with_ties_long_runs_and_rewinds() -> None:
    """Hundreds of identical hosts (many ties), a long run, rewinds far back (computed
    anew) and near (patched), for every policy."""
    rng = random.Random(5)
    hosts = [Host(f"n{i:04d}", capacity=Resources(32, 65536), state=HostState.UP,
                  labels={"disk": "ssd"} if i % 2 else {}, location={"rack": f"r{i // 20}"}) for i in range(400)]
    old = [Workload(f"old{i}", "fake", requests=Resources(rng.randint(0, 4), rng.choice([0, 1024, 4096])))
           for i in range(600)]
    snap = Snapshot.build(hosts, {w.name: w for w in old},
                          [Placement(w.name, hosts[rng.randrange(400)].name, PlacementState.RUNNING) for w in old])
    ops = [(rng.choice(["schedule"] * 12 + ["select", "unreserve", "rewind", "release"]), rng.randrange(len(SHAPES)),
            rng.choice([0, 0, 0, 1, 2]), rng.randrange(10**6)) for _ in range(700)]
    for policy in sorted(POLICIES):
        assert replay(snap, ops, policy, 1.5, 3) > 500


def test_an_earlier_snapshot_answers_as_before() -> None:
    """Copy-on-write: after decisions on later snapshots, asking an earlier one again gives
    what a fresh scheduler gives there, and the later one's answers are unchanged too."""
    hosts = [Host(f"h{i}", capacity=Resources(8, 16384), state=HostState.UP) for i in range(50)]
    first = Snapshot.build(hosts)
    scheduler = Scheduler(first, seed=1)
    scheduler.carry_from = 0
    w = Workload("w", "fake", requests=Resources(2, 2048))
    for k in range(40):
        scheduler.schedule(Workload(f"x{k}", "fake", requests=Resources(1 + k % 3, 1024 * (1 + k % 4))))
    later = scheduler.snapshot
    for snap in (first, later, first):
        scheduler.snapshot, scheduler.rng = snap, np.random.default_rng(7)
        fresh = Scheduler(snap, seed=7)
        fresh.carry_from = 1 << 62
        assert scheduler.select(w) == fresh.select(w)


@given(st.lists(st.integers(0, 8), min_size=3, max_size=30), st.lists(st.integers(0, 30), min_size=1, max_size=8))
def test_row_wise_plugins_answer_a_row_as_over_every_host(used: list[int], rows: list[int]) -> None:
    """The contract of RowwiseFilter and RowwiseWeigher: a host's answer from its own row,
    whatever else is asked with it (three resources: the general formulas)."""
    hosts = [Host(f"h{i:02d}", capacity=Resources(8, 8192, {"gpu": i % 3}), state=HostState.UP)
             for i in range(len(used))]
    snap = Snapshot.build(hosts)
    scheduler = Scheduler(snap)
    for i, n in enumerate(used):
        snap = snap.reserve(i, Workload(f"u{i}", "fake", requests=Resources(n, 512 * n)))
    at = np.array(sorted({r % len(used) for r in rows}), dtype=np.int64)
    requests = Resources(1, 1024, {"gpu": 0})
    resources = scheduler.filters[1]
    assert np.array_equal(resources.reject_rows(requests, snap, at),  # type: ignore[attr-defined]
                          resources.reject_rows(requests, snap, None)[at])  # type: ignore[attr-defined]
    for weigher in (LeastAllocated(), BalancedAllocation(), LeastAllocated(("cpu", "memory", "gpu")),
                    BalancedAllocation(("cpu", "memory", "gpu"))):
        assert np.array_equal(weigher.weigh_rows(requests, snap, at), weigher.weigh_rows(requests, snap, None)[at])


def test_a_host_given_back_rejoins_the_best() -> None:
    """The best hosts are carried too: an unreservation that makes a host as good as the best
    again (normalisation unchanged) puts it back among those the tie is drawn from."""
    hosts = [Host(f"h{i:02d}", capacity=Resources(8, 8192), state=HostState.UP) for i in range(30)]
    busy = Workload("busy", "fake", requests=Resources(6, 1024))
    snap = Snapshot.build(hosts, {"busy": busy}, [Placement("busy", "h00", PlacementState.RUNNING)])
    ops = []
    for k in range(8):  # placed, seen placed, given back (the k-th made), seen given back
        ops += [("schedule", 0, 0, 0), ("select", 0, 0, 0), ("unreserve", 0, 0, k), ("select", 0, 0, 0)]
    for seed in range(6):
        assert replay(snap, ops, "evenly_distributed", 1.0, seed) == 24


def test_with_room_for_two_requests_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the room is full a request asked for the first time is computed without carrying,
    the second time it is carried in place of the least recent: decisions unchanged."""
    monkeypatch.setattr(incremental, "MOST", 2)
    hosts = [Host(f"h{i:02d}", capacity=Resources(16, 32768, {"gpu": 2}), state=HostState.UP) for i in range(40)]
    rng = random.Random(9)
    ops = [("schedule", rng.randrange(len(SHAPES)), 0, rng.randrange(100)) for _ in range(120)]
    assert replay(Snapshot.build(hosts), ops, "evenly_distributed", 1.0, 1) == 120
