"""The engine against a plain restatement of its rules, on random clusters and sequences of
decisions, reservations, unreservations and rewinds to an earlier snapshot.

The reference below is pure Python, one host at a time, written from the rules as the
docs state them (filters: host state, resources with overcommit, host selector, NoSchedule
taints, the workload's own hard affinity and anti-affinity, the hard anti-affinity of the
workloads already there; weighers: least allocated, balanced allocation, workload count,
soft affinity, preferred labels, PreferNoSchedule, each min-max normalised over the
candidates and multiplied by the policy's factor). The engine must pick a host whose
reference total is the best (ties within 1e-9: the engine breaks them by its seed), refuse
exactly when the reference has no candidate, and its snapshot must hold exactly the
reference's reservations (used resources, order, per-host lists, match counts).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clustercore.errors import NoValidHost
from clustercore.model import (
    AffinityRule,
    Host,
    HostState,
    Placement,
    PlacementState,
    Resources,
    Taint,
    TaintEffect,
    Toleration,
    Workload,
)
from clustercore.scheduling import Scheduler, Snapshot
from clustercore.scheduling.policies import POLICIES

FACTORS = {  # policy -> (least allocated, balanced, workload count); soft rules weigh 2 each
    "evenly_distributed": (1.0, 1.0, 0.0),
    "power_saving": (-1.0, 0.0, 0.0),
    "workload_evenly_distributed": (0.5, 0.0, 1.0),
    "none": (0.0, 0.0, 0.0),
}


# --------------------------------------------------------------------------- the reference


def matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class Reference:
    """Hosts and, per host, the workloads on it (placed, then reserved in order)."""

    def __init__(self, hosts: Sequence[Host], placed: dict[str, list[Workload]], ratio: float) -> None:
        self.hosts = sorted(hosts, key=lambda h: h.name)
        self.placed = {h.name: list(placed.get(h.name, [])) for h in self.hosts}
        self.reserved: list[tuple[str, Workload]] = []
        self.ratio = ratio
        self.cache: dict[tuple[str, frozenset[tuple[str, str]]], dict[str, int]] = {}

    def on(self, host: str) -> list[Workload]:
        return self.placed[host] + [w for h, w in self.reserved if h == host]

    def domain(self, host: Host, scope: str) -> str | None:
        return host.name if scope == "host" else host.location.get(scope)

    def scope_count(self, host: Host, scope: str, selector: dict[str, str]) -> int:
        """Workloads matching ``selector`` in ``host``'s ``scope`` domain (0 without one);
        per domain, counted once per decision."""
        here = self.domain(host, scope)
        if here is None:
            return 0
        key = (scope, frozenset(selector.items()))
        if key not in self.cache:
            per: dict[str, int] = {}
            for h in self.hosts:
                domain = self.domain(h, scope)
                if domain is not None:
                    per[domain] = per.get(domain, 0) + sum(1 for w in self.on(h.name) if matches(dict(w.labels),
                                                                                                 selector))
            self.cache[key] = per
        return self.cache[key].get(here, 0)

    def rejects(self, w: Workload, h: Host) -> bool:
        if h.state is not HostState.UP or not h.schedulable:
            return True
        used_cpu = sum(x.requests.cpu for x in self.on(h.name))
        used_mem = sum(x.requests.memory for x in self.on(h.name))
        if w.requests.cpu > 0 and used_cpu + w.requests.cpu > h.allocatable.cpu * self.ratio + 1e-9:
            return True
        if w.requests.memory > 0 and used_mem + w.requests.memory > h.allocatable.memory + 1e-9:
            return True
        if not matches(dict(h.labels), dict(w.host_selector)):
            return True
        for taint in h.taints:
            if taint.effect is TaintEffect.NO_SCHEDULE and not any(t.tolerates(taint) for t in w.tolerations):
                return True
        for rule in w.affinity:
            if not rule.hard:
                continue
            has = self.domain(h, rule.scope) is not None
            count = self.scope_count(h, rule.scope, dict(rule.selector))
            if rule.anti and has and count >= rule.max_per_scope:
                return True
            anywhere = any(self.scope_count(o, rule.scope, dict(rule.selector)) for o in self.hosts)
            if not rule.anti and anywhere and (not has or count == 0):
                return True
        for other_host in self.hosts:
            for other in self.on(other_host.name):
                for rule in other.affinity:
                    if not (rule.hard and rule.anti and matches(dict(w.labels), dict(rule.selector))):
                        continue
                    theirs = self.domain(other_host, rule.scope)
                    if theirs is None or self.scope_count(other_host, rule.scope, dict(rule.selector)) \
                            < rule.max_per_scope:
                        continue
                    if self.domain(h, rule.scope) == theirs:
                        return True
        return False

    def totals(self, w: Workload, policy: str) -> dict[str, float]:
        self.cache = {}
        candidates = [h for h in self.hosts if not self.rejects(w, h)]
        least_f, balanced_f, count_f = FACTORS[policy]
        raws: list[tuple[float, list[float]]] = []
        shares = []
        for h in candidates:
            cpu = (sum(x.requests.cpu for x in self.on(h.name)) + w.requests.cpu) / h.allocatable.cpu \
                if h.allocatable.cpu else 1.0
            mem = (sum(x.requests.memory for x in self.on(h.name)) + w.requests.memory) / h.allocatable.memory \
                if h.allocatable.memory else 1.0
            shares.append((cpu, mem))
        raws.append((least_f, [1 - (c + m) / 2 for c, m in shares]))
        raws.append((balanced_f, [-statistics.pstdev([c, m]) for c, m in shares]))
        raws.append((count_f, [-float(len(self.on(h.name))) for h in candidates]))
        soft = [0.0] * len(candidates)
        for rule in w.affinity:
            if not rule.hard:
                for k, h in enumerate(candidates):
                    count = self.scope_count(h, rule.scope, dict(rule.selector))
                    soft[k] += rule.weight * (-count if rule.anti else (count > 0))
        raws.append((2.0, soft))
        raws.append((2.0, [float(sum(1 for k, v in w.preferred_labels.items() if h.labels.get(k) == v))
                           for h in candidates]))
        raws.append((2.0, [-float(sum(1 for t in h.taints if t.effect is TaintEffect.PREFER_NO_SCHEDULE
                                      and not any(tol.tolerates(t) for tol in w.tolerations)))
                           for h in candidates]))
        total = [0.0] * len(candidates)
        if len(candidates) >= 2:
            for factor, raw in raws:
                low, high = min(raw), max(raw)
                if factor and high > low:
                    total = [t + factor * (r - low) / (high - low) for t, r in zip(total, raw, strict=True)]
        return {h.name: t for h, t in zip(candidates, total, strict=True)}

    def reserve(self, w: Workload, host: str) -> None:
        self.unreserve(w.name)
        self.reserved.append((host, w))

    def unreserve(self, name: str) -> None:
        self.reserved = [(h, w) for h, w in self.reserved if w.name != name]


# --------------------------------------------------------------------------- strategies

APPS = ["web", "db", "cache"]
rules_st = st.builds(
    lambda app, anti, hard, scope, most, weight: AffinityRule({"app": app}, anti=anti, hard=hard, scope=scope,
                                                              max_per_scope=most, weight=weight),
    st.sampled_from(APPS), st.booleans(), st.booleans(), st.sampled_from(["host", "rack"]), st.integers(1, 2),
    st.integers(1, 3))
hosts_st = st.lists(
    st.builds(
        lambda i, cpu, mem, state, ssd, rack, taint, sched: Host(
            f"h{i:02d}", capacity=Resources(cpu, mem), state=state, labels={"disk": "ssd"} if ssd else {},
            location={"rack": f"r{rack}"} if rack < 3 else {}, schedulable=sched,
            taints=((Taint("dedicated", "db", TaintEffect.NO_SCHEDULE),) if taint == 1 else
                    (Taint("slow", "", TaintEffect.PREFER_NO_SCHEDULE),) if taint == 2 else ())),
        st.integers(0, 40), st.integers(0, 24), st.integers(0, 65536),
        st.sampled_from([HostState.UP] * 4 + [HostState.MAINTENANCE]), st.booleans(), st.integers(0, 3),
        st.integers(0, 4), st.booleans() | st.just(True)),
    min_size=1, max_size=10, unique_by=lambda h: h.name)
workloads_st = st.builds(
    lambda cpu, mem, app, sel, rules, pref, tol: (cpu, mem, app, sel, rules, pref, tol),
    st.integers(0, 6), st.integers(0, 12288), st.sampled_from(APPS), st.booleans(),
    st.lists(rules_st, max_size=2), st.booleans(), st.integers(0, 2))


def workload(name: str, spec: tuple[object, ...]) -> Workload:
    cpu, mem, app, sel, rules, pref, tol = spec
    return Workload(name, "fake", requests=Resources(cpu, mem), labels={"app": app},  # type: ignore[arg-type]
                    host_selector={"disk": "ssd"} if sel else {}, affinity=tuple(rules),  # type: ignore[arg-type]
                    preferred_labels={"disk": "ssd"} if pref else {},
                    tolerations=((Toleration("dedicated"),) if tol == 1 else (Toleration("slow"),) if tol == 2 else ()))


ops_st = st.lists(st.tuples(st.sampled_from(["schedule", "schedule", "schedule", "again", "unreserve", "rewind",
                                             "release"]),
                            workloads_st, st.integers(0, 10**6)), min_size=1, max_size=30)


# --------------------------------------------------------------------------- the property


def check_holding(snap: Snapshot, ref: Reference) -> None:
    assert [(snap.hosts[i].name, w.name) for i, w in snap.reserved] == [(h, w.name) for h, w in ref.reserved]
    for i, h in enumerate(snap.hosts):
        assert [w.name for w in snap.workloads_on(i)] == [w.name for w in ref.on(h.name)]
        used = [sum(w.requests.cpu for w in ref.on(h.name)), sum(w.requests.memory for w in ref.on(h.name))]
        assert snap.used[i, :2].tolist() == used
    for app in APPS:
        assert snap.match_counts({"app": app}).tolist() == [
            sum(1 for w in ref.on(h.name) if w.labels.get("app") == app) for h in snap.hosts]
    assert snap.workload_counts().tolist() == [len(ref.on(h.name)) for h in snap.hosts]
    rules = {(r.scope, r.selector, r.max_per_scope) for h in snap.hosts for w in ref.on(h.name) for r in w.affinity
             if r.hard and r.anti}
    assert set(snap.anti_rules()) >= rules  # a released holder's rule may stay, held nowhere
    for rule in snap.anti_rules():
        assert snap.holders(rule).tolist() == [
            sum(1 for w in ref.on(h.name) for r in w.affinity
                if r.hard and r.anti and (r.scope, r.selector, r.max_per_scope) == rule) for h in snap.hosts]


placed_st = st.lists(st.tuples(workloads_st, st.integers(0, 9)), max_size=12)
small_hosts_st = st.lists(hosts_st.map(lambda hs: hs[0]), min_size=1, max_size=4, unique_by=lambda h: h.name)
long_ops_st = st.lists(st.tuples(st.sampled_from(["schedule"] * 6 + ["again", "unreserve", "unreserve", "rewind",
                                                                    "release"]),
                                 workloads_st, st.integers(0, 10**6)), min_size=60, max_size=150)


@settings(max_examples=80, deadline=None)
@given(hosts_st, placed_st, ops_st, st.sampled_from(sorted(FACTORS)), st.sampled_from([1.0, 2.0]), st.integers(0, 3))
def test_the_engine_chooses_what_the_rules_say(hosts: list[Host], placed_specs: list[tuple[tuple[object, ...], int]],
                                               ops: list[tuple[str, tuple[object, ...], int]], policy: str,
                                               ratio: float, seed: int) -> None:
    replay(hosts, placed_specs, ops, policy, ratio, seed)


@settings(max_examples=10, deadline=None)
@given(small_hosts_st, placed_st, long_ops_st, st.sampled_from(sorted(FACTORS)), st.integers(0, 3))
def test_and_still_after_many_reservations_and_unreservations(
        hosts: list[Host], placed_specs: list[tuple[tuple[object, ...], int]],
        ops: list[tuple[str, tuple[object, ...], int]], policy: str, seed: int) -> None:
    replay(hosts, placed_specs, ops, policy, 4.0, seed)


def replay(hosts: list[Host], placed_specs: list[tuple[tuple[object, ...], int]],
           ops: list[tuple[str, tuple[object, ...], int]], policy: str, ratio: float, seed: int) -> None:
    """Apply ``ops`` to a scheduler and to the reference side by side, comparing each
    decision and the reservations after each step, and every earlier snapshot at the end."""
    names = sorted(h.name for h in hosts)
    placed = [(workload(f"p{k}", spec), names[at % len(names)]) for k, (spec, at) in enumerate(placed_specs)]
    snap = Snapshot.build(hosts, {w.name: w for w, _ in placed},
                          [Placement(w.name, h, PlacementState.RUNNING) for w, h in placed])
    by_host: dict[str, list[Workload]] = {}
    for w, h in placed:
        by_host.setdefault(h, []).append(w)
    ref = Reference(hosts, by_host, ratio)
    scheduler = Scheduler(snap, POLICIES[policy], ratios={"cpu": ratio}, seed=seed)
    history: list[tuple[Snapshot, list[tuple[str, Workload]], dict[str, list[Workload]]]] = []
    made: list[Workload] = []
    for k, (op, spec, pick) in enumerate(ops):
        if op == "unreserve" and made:
            name = made[pick % len(made)].name
            scheduler.unreserve(name)
            ref.unreserve(name)
        elif op == "rewind" and history:
            scheduler.snapshot, reserved, placed_then = history[pick % len(history)]
            ref.reserved, ref.placed = list(reserved), {h: list(ws) for h, ws in placed_then.items()}
        elif op == "release" and any(ref.placed.values()):  # a placed workload leaves (a move's source)
            there = [(h, w) for h in sorted(ref.placed) for w in ref.placed[h]]
            host, gone = there[pick % len(there)]
            scheduler.snapshot = scheduler.snapshot.release(scheduler.snapshot.index[host], gone)
            ref.placed[host].remove(gone)
        else:
            w = made[pick % len(made)] if op == "again" and made else workload(f"w{k}", spec)
            totals = ref.totals(w, policy)
            passing = scheduler.passing(w, scheduler.snapshot)
            assert passing.tolist() == scheduler.candidates(w, scheduler.snapshot)[0].tolist()
            assert sorted(scheduler.snapshot.hosts[i].name for i in passing) == sorted(totals)
            try:
                chosen = scheduler.schedule(w)
            except NoValidHost:
                assert not totals
                continue
            assert totals, f"{w.name} placed on {chosen} though every host rejects it"
            best = max(totals.values())
            assert totals[chosen] >= best - 1e-9, (
                f"{w.name}: engine chose {chosen} ({totals[chosen]}), the rules' best is {best} "
                f"({[h for h, t in totals.items() if t >= best - 1e-9]})")
            ref.reserve(w, chosen)
            made.append(w)
        history.append((scheduler.snapshot, list(ref.reserved), {h: list(ws) for h, ws in ref.placed.items()}))
        check_holding(scheduler.snapshot, ref)
    for snap_then, reserved, placed_then in history:  # every earlier snapshot still holds what it held
        ref.reserved, ref.placed = list(reserved), placed_then
        check_holding(snap_then, ref)


def test_the_reference_can_disagree() -> None:
    """The property's assertion bites: a host the rules reject is not accepted."""
    hosts = [Host("a", capacity=Resources(4, 4096), state=HostState.UP),
             Host("b", capacity=Resources(4, 4096), state=HostState.UP)]
    ref = Reference(hosts, {"a": [Workload("x", "fake", requests=Resources(4, 0))]}, 1.0)
    totals = ref.totals(Workload("y", "fake", requests=Resources(1, 1024)), "evenly_distributed")
    assert set(totals) == {"b"}
    snap = Snapshot.build(hosts)
    assert np.array_equal(Scheduler(snap).passing(Workload("y", "fake", requests=Resources(1, 1024)), snap), [0, 1])


def test_two_rules_with_one_selector_and_scope_both_apply() -> None:
    """Found by the property: the second rule's reason replaced the first's mask."""
    host = Host("h", capacity=Resources(8, 8192), state=HostState.UP, location={"rack": "r0"})
    db = Workload("db", "fake", labels={"app": "db"})
    snap = Snapshot.build([host], {"db": db}, [Placement("db", "h", PlacementState.RUNNING)])
    web = Workload("web", "fake", affinity=(AffinityRule({"app": "db"}, anti=True, scope="rack", max_per_scope=1),
                                            AffinityRule({"app": "db"}, anti=True, scope="rack", max_per_scope=2)))
    assert Reference([host], {"h": [db]}, 1.0).totals(web, "evenly_distributed") == {}
    assert not len(Scheduler(snap).passing(web, snap))
