"""Watchdog self-fencing (:mod:`clustercore.watchdog`): the pure decision, the agent's
feeding only under a live lease, the leader recording the armed watchdog, and a release
that disarms only once the cluster knows. The lab test (tests/test_watchdog_lab.py) and
the fencing state machine (tests/test_fencing.py) cover the rest."""

from __future__ import annotations

import threading

import attrs
import pytest

from clustercore import Cluster, FakeClock, Host, HostReport, HostState
from clustercore.agent import HostAgent
from clustercore.errors import StoreError, ValidationError
from clustercore.model import FenceDevice
from clustercore.store.memory import MemoryStore
from clustercore.watchdog import DeviceWatchdog, WatchdogError, may_self_fence, self_fence_decision

S = HostState
BMC = (FenceDevice("ipmi", "10.0.0.1"),)


def test_self_fencing_waits_for_the_lease_the_watchdog_and_the_margin_and_respects_the_setting() -> None:
    nr = Host("a", state=S.NON_RESPONSIVE)
    assert may_self_fence(nr) and not may_self_fence(attrs.evolve(nr, fence_devices=BMC))
    assert may_self_fence(attrs.evolve(nr, fence_devices=BMC, self_fence=True))
    assert not may_self_fence(attrs.evolve(nr, self_fence=False))
    assert not self_fence_decision(attrs.evolve(nr, state=S.CONNECTING), 60, 100, 1000, 10).fence
    assert "default" in self_fence_decision(attrs.evolve(nr, fence_devices=BMC), 60, 100, 1000, 10).reason
    assert "off for this host" in self_fence_decision(attrs.evolve(nr, self_fence=False), 60, 100, 1000, 10).reason
    assert "no armed watchdog" in self_fence_decision(nr, 0, 100, 1000, 10).reason
    alive = self_fence_decision(nr, 60, None, 1000, 10)
    assert not alive.fence and alive.at is None and "not expired" in alive.reason
    early = self_fence_decision(nr, 60, 100, 169.9, 10)
    assert not early.fence and early.at == 170
    due = self_fence_decision(nr, 60, 100, 170, 10)
    assert due.fence and due.decision.fence and "reset by its watchdog" in due.reason


@attrs.define
class Recorder:
    """A watchdog that records its feeds (the agent's logic is what is under test)."""

    timeout: float = 30.0
    feeds: list[float] = attrs.field(factory=list)
    disarmed: bool = False

    def feed(self, valid_until: float) -> None:
        self.feeds.append(valid_until)

    def disarm(self) -> None:
        self.disarmed = True


class FailingStore(MemoryStore):
    down = False

    def put(self, key: str, value: bytes, *, expect: int | None = None, lease: int = 0) -> int:
        if self.down:
            raise StoreError("the store is away")
        return super().put(key, value, expect=expect, lease=lease)


def test_the_agent_feeds_only_after_a_heartbeat_stored_under_a_lease_it_knows_alive() -> None:
    clock = FakeClock()
    store = FailingStore(clock=clock)
    dog = Recorder()
    agent = HostAgent(store, "a", interval=10, ttl=40, monotonic=clock.now, watchdog=dog)
    granted = clock.now()
    assert agent.beat() and dog.feeds == [granted + 40]  # until the lease surely lives
    clock.advance(10)
    assert agent.beat() and dog.feeds[-1] == granted + 40  # not renewed yet: the same bound
    clock.advance(10)
    assert agent.beat() and dog.feeds[-1] == granted + 60  # kept alive at +20
    store.down = True
    clock.advance(10)
    assert not agent.beat() and len(dog.feeds) == 3  # nothing stored, nothing fed
    report = HostReport.from_dict({"watchdog": 30.0, "kdump": False})
    assert report.watchdog == 30.0
    with pytest.raises(ValidationError, match="watchdog"):
        HostReport.from_dict({"watchdog": -1})


def test_the_leader_records_the_watchdog_and_a_release_disarms_only_once_it_is_recorded() -> None:
    cluster = Cluster()
    cluster.register_host({"name": "a", "watchdog": 99})  # not the operator's to say
    assert cluster.host("a").watchdog == 0
    dog = Recorder()
    agent = HostAgent(cluster.store, "a", interval=0.05, ttl=1, credential=cluster.credentials["a"], watchdog=dog)
    assert agent.beat()
    cluster.step()
    assert cluster.host("a").watchdog == 30.0
    assert [e.reason for e in cluster.query_events(subject="host/a", kind="updated")] == ["watchdog 30 s reported"]
    # No manager running: the release is never acknowledged, so the watchdog stays armed.
    assert not agent.release(timeout=0.3) and not dog.disarmed and agent.watchdog is dog
    stop = threading.Event()
    manager = threading.Thread(target=cluster.controller.run, kwargs={"interval": 0.05, "stop": stop}, daemon=True)
    manager.start()
    try:
        assert agent.release(timeout=5) and dog.disarmed and agent.watchdog is None
    finally:
        stop.set()
        manager.join()
    assert cluster.host("a").watchdog == 0
    with pytest.raises(ValidationError, match="watchdog"):
        cluster.update_host("a", {"watchdog": 5})
    assert cluster.update_host("a", {"self_fence": True}).self_fence is True


def test_a_device_that_is_no_watchdog_fails_with_the_reason(tmp_path: object) -> None:
    with pytest.raises(WatchdogError, match="cannot open"):
        DeviceWatchdog("/nonexistent/watchdog")
    with pytest.raises(WatchdogError, match="cannot set its timeout"):
        DeviceWatchdog("/dev/null", timeout=10)  # opens, but takes no watchdog ioctl
