"""The balancer's score and planner, and capacity planning."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clustercore.model import AffinityRule, Host, HostState, Placement, PlacementState, Resources, SpreadRule, Workload
from clustercore.scheduling import Scheduler, Snapshot
from clustercore.scheduling.balancer import cluster_score, plan_balance
from clustercore.scheduling.capacity import capacity
from clustercore.scheduling.policies import EVENLY_DISTRIBUTED, NONE, POWER_SAVING, WORKLOAD_EVENLY_DISTRIBUTED


def cluster(layout: dict[str, list[Workload]], memory: int = 32768, **extra: Host) -> Snapshot:
    hosts = [Host(name, capacity=Resources(16, memory), state=HostState.UP, location={"rack": f"r{i % 2}"})
             for i, name in enumerate(sorted(layout))]
    workloads = {w.name: w for ws in layout.values() for w in ws}
    placements = [Placement(w.name, h, PlacementState.RUNNING) for h, ws in layout.items() for w in ws]
    return Snapshot.build(hosts, workloads, placements)


def w(name: str, memory: int = 4096, cpu: int = 2, **kw: object) -> Workload:
    return Workload(name, "fake", requests=Resources(cpu, memory), **kw)  # type: ignore[arg-type]


def test_spread_moves_load_off_the_busy_host() -> None:
    snap = cluster({"a": [w(f"v{i}") for i in range(6)], "b": [], "c": []})
    plan = plan_balance(Scheduler(snap, EVENLY_DISTRIBUTED), budget=10)
    assert plan.after.total < plan.before.total
    assert all(m.source == "a" for m in plan.moves) and len(plan.moves) == 4
    used = plan.snapshot.used[:, 1]
    assert used.tolist() == [8192.0, 8192.0, 8192.0]


def test_pack_frees_whole_hosts() -> None:
    snap = cluster({"a": [w("x", memory=8192)], "b": [w("y")], "c": [w("z")]})
    before = cluster_score(snap, "pack")
    plan = plan_balance(Scheduler(snap, POWER_SAVING))
    assert before.parts["hosts in use"] == 3
    assert plan.after.parts["hosts in use"] == 1
    assert [m.target for m in plan.moves] == ["a", "a"]


def test_count_objective_and_none_policy() -> None:
    snap = cluster({"a": [w(f"s{i}", memory=256) for i in range(4)], "b": [w("big", memory=20000)]})
    plan = plan_balance(Scheduler(snap, WORKLOAD_EVENLY_DISTRIBUTED))
    counts = plan.snapshot.workload_counts().tolist()
    assert counts == [3, 2]
    assert plan_balance(Scheduler(snap, NONE)).moves == ()


def test_the_planner_never_breaks_hard_anti_affinity() -> None:
    rule = AffinityRule({"app": "db"}, anti=True)
    snap = cluster({"a": [w("db1", labels={"app": "db"}, affinity=(rule,)), w("x1"), w("x2"), w("x3")],
                    "b": [w("db2", labels={"app": "db"}, affinity=(rule,))]})
    plan = plan_balance(Scheduler(snap, EVENLY_DISTRIBUTED))
    assert plan.moves and "db1" not in {m.workload for m in plan.moves}
    assert plan.after.parts["hard violations"] == 0


def test_soft_anti_affinity_is_scored_and_fixed() -> None:
    rule = AffinityRule({"app": "web"}, anti=True, hard=False)
    webs = [w(f"web{i}", memory=1024, labels={"app": "web"}, affinity=(rule,)) for i in range(2)]
    snap = cluster({"a": [*webs, w("pad", memory=1024)], "b": [w("pad2", memory=3072)]})
    assert cluster_score(snap).parts["soft violations"] == 2
    plan = plan_balance(Scheduler(snap, EVENLY_DISTRIBUTED))
    assert plan.after.parts["soft violations"] == 0


workload_st = st.builds(
    lambda i, mem, app, anti, hard, spread: w(
        f"w{i}", memory=mem, labels={"app": app},
        affinity=(AffinityRule({"app": app}, anti=True, hard=hard),) if anti else (),
        spread=(SpreadRule("rack", {"app": app}, 1),) if spread else ()),
    st.integers(0, 10**6), st.sampled_from([512, 2048, 6144]), st.sampled_from(["a", "b"]), st.booleans(),
    st.booleans(), st.booleans())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(workload_st, max_size=5), min_size=2, max_size=4),
       st.sampled_from([EVENLY_DISTRIBUTED, POWER_SAVING, WORKLOAD_EVENLY_DISTRIBUTED]))
def test_moves_never_raise_the_score_nor_break_a_hard_rule(layout: list[list[Workload]], policy: object) -> None:
    seen: set[str] = set()
    hosts: dict[str, list[Workload]] = {}
    for i, group in enumerate(layout):
        hosts[f"h{i}"] = [x for x in group if not (x.name in seen or seen.add(x.name))]  # type: ignore[func-returns-value]
    snap = cluster(hosts)
    scheduler = Scheduler(snap, policy)  # type: ignore[arg-type]
    plan = plan_balance(scheduler, budget=6)
    objective = scheduler.policy.balance
    current = snap
    score = cluster_score(current, objective)
    for move in plan.moves:
        index = {h.name: i for i, h in enumerate(current.hosts)}
        workload = next(x for x in current.workloads_on(index[move.source]) if x.name == move.workload)
        released = (current.unreserve(workload.name) if any(r[1].name == workload.name for r in current.reserved)
                    else current.release(index[move.source], workload))
        candidates, _ = scheduler.candidates(workload, released)
        assert index[move.target] in candidates, f"{move} breaks a hard filter"
        current = released.reserve(index[move.target], workload)
        new = cluster_score(current, objective)
        assert new.total < score.total and abs((score.total - new.total) - move.gain) < 1e-9
        assert new.parts["hard violations"] <= score.parts["hard violations"]
        score = new
    assert np.allclose(current.used, plan.snapshot.used)


def test_capacity_counts_copies_and_names_what_runs_out() -> None:
    snap = cluster({"a": [], "b": [w("x", memory=30000)]})
    report = capacity(Scheduler(snap), w("vm", memory=4096, cpu=1))
    assert report.fits == 8 and report.per_host == {"a": 8}
    assert report.runs_out_first == "insufficient memory"
    cpu_bound = capacity(Scheduler(snap, ratios={"cpu": 1.0}), w("cpu-hog", memory=1, cpu=4))
    assert cpu_bound.fits == 4 + 3 and cpu_bound.runs_out_first == "insufficient cpu"
    assert str(cpu_bound) == "7 more cpu-hog fit; then: insufficient cpu"
