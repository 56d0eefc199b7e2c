"""The watcher's verdicts on scripted looks: a move seen mid-look is not a double run; a
workload seen on two hosts in looks of both orders is; downtime is the longest gap."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from clustercore.watcher import Watcher


def scripted(looks: list[dict[str, list[str]]]) -> tuple[Watcher, list[bool]]:
    """A watcher over ``looks`` (the last repeated), and the order each look was asked in."""
    orders: list[bool] = []

    def where(reverse: bool) -> Mapping[str, Sequence[str]]:
        orders.append(reverse)
        return looks[min(len(orders), len(looks)) - 1]

    watcher = Watcher(where, ["w"], pause=0.001)
    while len(orders) < len(looks) + 2:
        time.sleep(0.005)
    return watcher.stop(), orders


def test_a_move_seen_on_both_hosts_in_one_look_is_not_a_double_run() -> None:
    watcher, orders = scripted([{"w": ["a"]}, {"w": ["a", "b"]}, {"w": ["b"]}])
    assert orders[:3] == [False, True, False] and watcher.twice == []


def test_two_hosts_in_consecutive_looks_of_both_orders_are_a_double_run() -> None:
    watcher, _ = scripted([{"w": ["a"]}, {"w": ["a", "b"]}, {"w": ["b", "a"]}, {"w": ["b"]}])
    assert watcher.twice[0] == {"w": ["a", "b"]}


def test_downtime_is_the_longest_time_running_nowhere() -> None:
    watcher, _ = scripted([{"w": ["a"]}] + [{}] * 40 + [{"w": ["b"]}])
    assert watcher.down["w"] >= 40 * 0.001 and watcher.interval > 0
