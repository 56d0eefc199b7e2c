"""Rebalancing on measured load (issue 20, item 3): the pure plan and hysteresis under
hypothesis, and the leader's reconciler on a simulated cluster whose workloads burn CPU."""

from __future__ import annotations

import random

import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from clustercore import Cluster, ClusterConfig, FakeClock, HostState, Plugins, Resources, Workload
from clustercore.model import AffinityRule, Host, Placement, PlacementState
from clustercore.rebalance import Hysteresis, RebalancePolicy, held, measured_score, moved, observe, over, plan, shares
from clustercore.scheduling import Scheduler, Snapshot
from clustercore.scheduling.balancer import cluster_score
from clustercore.statistics import Load, StatsPolicy, Usage
from clustercore.testing import FakeFlavor

POLICY = RebalancePolicy("evenly_distributed", threshold=0.15, hold=0, margin=0.01, batch=3, cooldown=600)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[Scheduler, dict[str, Load]]:
    """Random hosts, workloads with requests and measured usage, some anti-affinity, and
    each host's load made of its workloads' usage plus noise."""
    n = draw(st.integers(2, 6))
    hosts = [Host(f"h{i}", capacity=Resources(draw(st.sampled_from([4, 8, 16])), 16384), state=HostState.UP)
             for i in range(n)]
    workloads, placements, usage = {}, [], {}
    for k in range(draw(st.integers(1, 14))):
        anti = draw(st.booleans()) and k % 3 == 0
        w = Workload(f"w{k}", "fake", requests=Resources(1, 1024), labels={"app": "db"} if anti else {},
                     affinity=(AffinityRule({"app": "db"}, anti=True),) if anti else ())
        host = draw(st.sampled_from(hosts))
        workloads[w.name] = w
        placements.append(Placement(w.name, host.name, PlacementState.RUNNING))
        usage[w.name] = (host.name, Usage(cpu=draw(st.floats(0, 1)), memory=draw(st.floats(0, 1024))))
    loads = {}
    for h in hosts:
        mine = {name: u for name, (where, u) in usage.items() if where == h.name}
        cpu = min(1.0, sum(u.cpu for u in mine.values()) / h.capacity.cpu + draw(st.floats(0, 0.05)))
        used = sum(u.memory for u in mine.values()) + 512
        loads[h.name] = Load(cpu, 0.0, used, 16384 - used, 0.0, mine)
    return Scheduler(Snapshot.build(hosts, workloads, placements)), loads


@settings(max_examples=150, deadline=None)
@given(clusters(), st.sets(st.sampled_from([f"w{k}" for k in range(14)])))
def test_a_plan_only_improves_respects_the_cooldown_and_never_breaks_rules_or_n_plus_1(
        cluster: tuple[Scheduler, dict[str, Load]], cooling: set[str]) -> None:
    scheduler, loads = cluster
    memory = moved(Hysteresis(), cooling, 1000.0, POLICY.cooldown)
    result = plan(scheduler, loads, over(loads, POLICY.threshold), memory, 1100.0, POLICY)
    event(f"{len(result.moves)} move(s)")
    assert len(result.moves) <= POLICY.batch
    assert not {m.workload for m in result.moves} & cooling  # nothing moved again within the cooldown
    assert len({m.workload for m in result.moves}) == len(result.moves)  # none moved twice in a batch
    score = result.before
    for m in result.moves:
        assert m.before == score and m.after <= m.before - POLICY.margin + 1e-12  # every move pays
        score = m.after
    assert result.after <= result.before
    # Replay the moves on the snapshot: rule violations and N+1 failures never grow.
    snap = scheduler.snapshot
    before = cluster_score(snap).parts
    for m in result.moves:
        workload = next(w for w in snap.workloads_on(snap.index[m.source]) if w.name == m.workload)
        snap = snap.release(snap.index[m.source], workload).reserve(snap.index[m.target], workload)
    after = cluster_score(snap).parts
    for part in ("N+1 failures", "hard violations", "soft violations"):
        assert after[part] <= before[part]
    names = sorted(loads)
    cpu = [shares(loads[n])[0] for n in names]
    assert result.before == pytest.approx(measured_score(*map(_array, (cpu, [shares(loads[n])[1] for n in names]))))


def _array(values: list[float]) -> object:
    import numpy as np

    return np.array(values)


@given(st.lists(st.sets(st.sampled_from(["a", "b", "c"])), min_size=1, max_size=20), st.floats(0, 100))
def test_the_hold_counts_from_the_first_time_over_and_restarts_when_a_host_calms_down(
        rounds: list[set[str]], hold: float) -> None:
    memory, since = Hysteresis(), {}
    for t, hosts_over in enumerate(rounds):
        memory = observe(memory, hosts_over, t * 60.0)
        since = {h: since.get(h, t * 60.0) for h in hosts_over}
        assert dict(memory.over_since) == since
        assert held(memory, t * 60.0, hold) == sorted(h for h, s in since.items() if t * 60.0 - s >= hold)


def simulated(usage: dict[str, float], policy: RebalancePolicy = POLICY, first: tuple[str, ...] = ("h1",)
              ) -> tuple[Cluster, FakeFlavor, FakeClock]:
    """Three hosts; the workloads placed while only ``first`` take any, then all do."""
    clock = FakeClock()
    flavor = FakeFlavor("fake", clock=clock.now)
    config = ClusterConfig(statistics=StatsPolicy(interval=15, alpha=0.5), rebalance=policy)
    cluster = Cluster(plugins=Plugins([flavor], entry_points=False), clock=clock, config=config)
    for name in ("h1", "h2", "h3"):
        cluster.register_host({"name": name, "capacity": {"cpu": 4, "memory": 16384}, "schedulable": name in first})
    run(cluster, clock, 3)
    for name in usage:
        cluster.submit(Workload(name, "fake", requests=Resources(1, 1024)))
    for name in {"h1", "h2", "h3"} - set(first):
        cluster.update_host(name, {"schedulable": True})
    flavor.usage.update(usage)
    return cluster, flavor, clock


def run(cluster: Cluster, clock: FakeClock, passes: int, step: float = 5.0) -> None:
    for _ in range(passes):
        for name in cluster.hosts():
            cluster.heartbeat(name)
        cluster.step()
        clock.advance(step)


def test_three_busy_workloads_on_one_host_are_spread_then_nothing_moves() -> None:
    cluster, _, clock = simulated({"b1": 1.0, "b2": 1.0, "b3": 1.0, "idle": 0.0},
                                       RebalancePolicy("evenly_distributed", interval=60, threshold=0.15, hold=120,
                                                       margin=0.01, batch=1, cooldown=1800))
    assert {p.host for p in cluster.placements().values()} == {"h1"}
    run(cluster, clock, 12 * 30)  # 30 minutes
    moves = cluster.query_events(kind="migrated")
    on = {n: p.host for n, p in cluster.placements().items()}
    busy_hosts = sorted(on[b] for b in ("b1", "b2", "b3"))
    assert busy_hosts == ["h1", "h2", "h3"], on  # one busy workload per host
    assert on["idle"] == "h1" or len(moves) == 2  # the idle one is not worth moving
    assert all("rebalance: measured score" in e.reason for e in moves)
    assert not over(cluster.controller.stats.loads, 0.15)
    run(cluster, clock, 12 * 60)  # an hour more: balanced, nothing moves
    assert len(cluster.query_events(kind="migrated")) == len(moves)


def noisy_run(hold: float) -> list[tuple[float, str, str, str]]:
    """Six workloads whose CPU use jumps between idle and busy every two minutes, for two
    simulated hours: the moves (time, workload, from, to)."""
    names = [f"w{i}" for i in range(6)]
    policy = RebalancePolicy("evenly_distributed", interval=60, threshold=0.15, hold=hold, margin=0.01, batch=3,
                             cooldown=1800)
    cluster, flavor, clock = simulated(dict.fromkeys(names, 0.5), policy, first=("h1", "h2", "h3"))
    rng = random.Random(7)
    for i in range(12 * 120):
        if i % 24 == 0:
            for name in names:
                flavor.usage[name] = rng.choice([0.0, 1.0])
        run(cluster, clock, 1)
    return [(e.time, e.subject.removeprefix("workload/"), e.old, e.new) for e in cluster.query_events(kind="migrated")]


def test_noisy_load_never_moves_a_workload_again_within_the_cooldown_and_the_hold_damps_it() -> None:
    eager, held_back = noisy_run(hold=0), noisy_run(hold=180)
    for moves in (eager, held_back):
        last: dict[str, float] = {}
        for when, name, _, _ in moves:
            assert name not in last or when - last[name] >= 1800, f"{name} moved again within the cooldown"
            last[name] = when
    assert len(eager) > 3 * max(1, len(held_back)), (len(eager), len(held_back))  # a busy spell moves little


def test_the_dry_run_shows_the_plan_in_python_and_over_the_api_and_moves_nothing() -> None:
    from clustercore import auth
    from clustercore.api import create_app
    from tests.api_support import TestClient  # the api extra

    cluster, _, clock = simulated({"b1": 1.0, "b2": 1.0, "b3": 1.0})  # rebalancing off: a dry run only
    cluster.configure({"rebalance": {"mode": "off"}})
    run(cluster, clock, 12)
    result = cluster.rebalance_plan()
    assert result.hosts_over == ("h1",) and result.moves and all(m.source == "h1" for m in result.moves)
    assert result.after < result.before
    client = TestClient(create_app(cluster))
    token = auth.create_token(cluster.store, "viewer", "viewer", clock.now())
    shown = client.get("/api/v1/rebalance", headers={"Authorization": f"Bearer {token}"}).json()
    assert [(m["workload"], m["target"]) for m in shown["moves"]] == [(m.workload, m.target) for m in result.moves]
    assert shown["policy"]["mode"] == "off" and shown["hosts_over"] == ["h1"]
    host = client.get("/api/v1/hosts/h1", headers={"Authorization": f"Bearer {token}"}).json()
    assert host["load"]["cpu"] == pytest.approx(0.75, abs=0.01) and set(host["load"]["workloads"]) == {"b1", "b2",
                                                                                                          "b3"}
    run(cluster, clock, 60)
    assert not cluster.query_events(kind="migrated")  # off: nothing moved
    assert {p.host for p in cluster.placements().values()} == {"h1"}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 0.0, 1.0]), min_size=6, max_size=6), min_size=3, max_size=10),
       st.booleans())
def test_random_load_traces_never_undo_a_move_within_the_cooldown_nor_raise_the_score_nor_break_rules(
        trace: list[list[float]], anti: bool) -> None:
    """A simulated cluster driven by a random trace of CPU use (one step per two simulated
    minutes): moves happen or not, but never a workload again within the cooldown, every
    batch lowers the measured score it planned on, and N+1 and the rules hold throughout."""
    from clustercore.scheduling.balancer import cluster_score

    names = [f"w{i}" for i in range(6)]
    policy = RebalancePolicy("evenly_distributed", interval=30, threshold=0.15, hold=30, margin=0.01, batch=2,
                             cooldown=300)
    cluster, flavor, clock = simulated(dict.fromkeys(names, 0.5), policy, first=("h1", "h2", "h3"))
    if anti:  # two of them must never share a host
        for name in ("w0", "w1"):
            cluster.update_workload(name, lambda w: attrs.evolve(
                w, labels={"app": "db"}, affinity=(AffinityRule({"app": "db"}, anti=True),)))
    before = cluster_score(cluster.controller.scheduler().snapshot).parts
    for usage in trace:
        flavor.usage.update(zip(names, usage, strict=True))
        run(cluster, clock, 24)  # two minutes
        parts = cluster_score(cluster.controller.scheduler().snapshot).parts
        for part in ("N+1 failures", "hard violations", "soft violations"):
            assert parts[part] <= before[part]
    last: dict[str, float] = {}
    moves = cluster.query_events(kind="migrated")
    event(f"{min(len(moves), 3)}+ move(s)" if len(moves) >= 3 else f"{len(moves)} move(s)")
    for e in moves:
        name = e.subject.removeprefix("workload/")
        assert name not in last or e.time - last[name] >= policy.cooldown
        last[name] = e.time
    for e in cluster.query_events(kind="rebalance"):
        before_score, after_score = (float(x) for x in e.reason.rsplit("score ", 1)[1].split(" -> "))
        assert after_score < before_score
