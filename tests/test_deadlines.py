"""Deadlines (a heap with lazy invalidation), and the controller's heartbeat grace kept in
them: a host that goes silent is Connecting on the first pass past its grace, no sooner."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from clustercore import Cluster, FakeClock, HostState
from clustercore.deadlines import Deadlines
from clustercore.lifecycle import LivenessPolicy
from tests.cluster_support import REPORT, up_cluster


def test_keys_come_due_in_order_of_their_time_and_are_then_disarmed() -> None:
    d: Deadlines[str] = Deadlines()
    d.arm("b", 20.0)
    d.arm("a", 10.0)
    d.arm("c", 30.0)
    assert d.next_due() == 10.0
    assert d.pop_due(9.9) == []
    assert d.pop_due(20.0) == ["a", "b"], "due at or before now, earliest first"
    assert "a" not in d and "b" not in d and d.due("c") == 30.0 and len(d) == 1
    assert d.pop_due(20.0) == []
    assert d.pop_due(1e9) == ["c"] and len(d) == 0 and d.next_due() is None


def test_ties_come_in_arming_order() -> None:
    d: Deadlines[str] = Deadlines()
    for key in ("z", "y", "x"):
        d.arm(key, 5.0)
    assert d.pop_due(5.0) == ["z", "y", "x"]


def test_re_arming_replaces_the_old_deadline_earlier_or_later() -> None:
    d: Deadlines[str] = Deadlines()
    d.arm("h", 10.0)
    d.arm("h", 30.0)  # pushed back: the old time no longer fires
    assert d.pop_due(29.0) == [] and d.due("h") == 30.0
    d.arm("h", 5.0)  # brought forward
    assert d.pop_due(6.0) == ["h"]
    assert d.pop_due(100.0) == [], "fired once, and none of its old times fire after"


def test_cancelled_keys_never_fire_and_cancel_of_an_unknown_key_is_nothing() -> None:
    d: Deadlines[str] = Deadlines()
    d.arm("h", 10.0)
    d.cancel("h")
    d.cancel("never armed")
    assert d.pop_due(1e9) == [] and len(d) == 0 and d.next_due() is None
    d.arm("h", 50.0)  # armed again after a cancel: the new time counts
    assert d.pop_due(49.0) == [] and d.pop_due(50.0) == ["h"]


def test_a_deadline_pushed_back_again_and_again_fires_once_at_the_last_time() -> None:
    d: Deadlines[str] = Deadlines()
    for t in range(100):
        d.arm("h", 30.0 + t)  # a host heard every second: its grace end moves on
        assert d.pop_due(float(t)) == []
    assert d.pop_due(128.0) == [] and d.pop_due(129.0) == ["h"] and d.pop_due(1e9) == []


ops = st.lists(st.tuples(st.sampled_from(["arm", "cancel", "pop"]), st.integers(0, 7),
                         st.integers(0, 50).map(float)), max_size=80)


@given(ops)
def test_matches_a_plain_dict_of_deadlines(steps: list[tuple[str, int, float]]) -> None:
    """Against a model (key -> due time): every pop returns exactly the keys due by then,
    ordered by time; a re-armed key fires at its last time only, a cancelled one never."""
    d: Deadlines[int] = Deadlines()
    model: dict[int, float] = {}
    now = 0.0
    for op, key, t in steps:
        if op == "arm":
            d.arm(key, t)
            model[key] = t
        elif op == "cancel":
            d.cancel(key)
            model.pop(key, None)
        else:
            now = max(now, t)
            fired = d.pop_due(now)
            expected = {k for k, due in model.items() if due <= now}
            assert set(fired) == expected and len(fired) == len(expected)
            assert [model[k] for k in fired] == sorted(model[k] for k in fired)
            for k in fired:
                del model[k]
        assert len(d) == len(model) and all(d.due(k) == v for k, v in model.items())
        assert d.next_due() == (min(model.values()) if model else None)


# ---------------------------------------------------------------- the controller's grace


def _cluster(hosts: int) -> tuple[Cluster, FakeClock]:
    return up_cluster([f"h{i}" for i in range(hosts)])


def _beat(cluster: Cluster, names: list[str]) -> None:
    for name in names:
        cluster.heartbeat(name, REPORT)


def test_a_host_that_goes_silent_is_connecting_on_the_first_pass_past_its_grace() -> None:
    cluster, clock = _cluster(5)
    grace = cluster.config.liveness.connecting_after  # 30 s
    others = ["h1", "h2", "h3", "h4"]
    _beat(cluster, ["h0", *others])
    cluster.step()
    silent_since = clock.now()
    for _ in range(int(grace)):  # a pass every second, the others beating
        clock.advance(1.0)
        _beat(cluster, others)
        cluster.step()
        assert cluster.host("h0").state is HostState.UP, f"{clock.now() - silent_since} s: within its grace"
    clock.advance(0.5)
    report = cluster.step()
    assert cluster.host("h0").state is HostState.CONNECTING
    assert [e.subject for e in report.events] == ["host/h0"], "only the silent host changed"
    assert all(cluster.host(n).state is HostState.UP for n in others)


def test_a_host_beating_just_in_time_stays_up_however_long_it_runs() -> None:
    cluster, clock = _cluster(3)
    for _ in range(40):  # 400 s of passes every 2 s, each host beating every 10 s, staggered
        for second in range(0, 10, 2):
            clock.advance(2.0)
            _beat(cluster, [f"h{i}" for i in range(3) if (second // 2 + i) % 5 == 0])
            assert cluster.step().events == ()
    assert all(h.state is HostState.UP for h in cluster.hosts().values())


def test_a_shorter_grace_configured_later_counts_at_once() -> None:
    cluster, clock = _cluster(2)
    _beat(cluster, ["h0", "h1"])
    cluster.step()
    clock.advance(12.0)
    _beat(cluster, ["h1"])
    cluster.step()
    assert cluster.host("h0").state is HostState.UP, "12 s silent: within the default 30 s"
    cluster.configure({"liveness": LivenessPolicy(heartbeat_interval=5.0, missed_beats=2).to_dict()})
    clock.advance(1.0)
    cluster.step()
    assert cluster.host("h0").state is HostState.CONNECTING, "13 s silent, limit now 10 s"
    assert cluster.host("h1").state is HostState.UP


def test_a_stale_host_the_pass_could_not_move_is_looked_at_again_next_pass() -> None:
    """A lost compare-and-swap (a second writer rewrote the host just before the pass
    committed) leaves the host Up and silent: the next pass decides again."""
    cluster, clock = _cluster(1)
    clock.advance(31.0)
    store = cluster.store
    real = store.txn
    rewrites = []

    def second_writer_first(checks: Any, ops: Any) -> int:
        if not rewrites and any(c.key == "hosts/h0" for c in checks):
            kv = store.get("hosts/h0")
            assert kv is not None
            rewrites.append(store.put("hosts/h0", kv.value))
        return real(checks, ops)

    store.txn = second_writer_first  # type: ignore[method-assign]
    first = cluster.step()
    assert rewrites and first.conflicts and cluster.host("h0").state is HostState.UP
    assert cluster.controller.observer.hosts["h0"].value.state is HostState.UP, "the staged change taken back"
    clock.advance(1.0)
    second = cluster.step()
    assert cluster.host("h0").state is HostState.CONNECTING and not second.conflicts


def test_a_host_back_up_after_connecting_gets_its_grace_again() -> None:
    cluster, clock = _cluster(1)
    clock.advance(31.0)
    cluster.step()
    assert cluster.host("h0").state is HostState.CONNECTING
    _beat(cluster, ["h0"])
    clock.advance(1.0)
    cluster.step()
    assert cluster.host("h0").state is HostState.UP
    clock.advance(30.0)
    cluster.step()
    assert cluster.host("h0").state is HostState.UP, "30 s since it was heard: at the limit, not past"
    clock.advance(0.5)
    cluster.step()
    assert cluster.host("h0").state is HostState.CONNECTING
