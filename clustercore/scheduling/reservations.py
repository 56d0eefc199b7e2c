"""Reservations held by snapshots: an append-only journal with indexes, shared by a snapshot
and the snapshots derived from it.

A snapshot is a value, so reserving gives a new one; copying the reservations each time
would make a batch of N decisions cost O(N²). Instead the snapshots of one lineage share a
:class:`Journal` and each knows its ``version`` (how many journal entries it sees). The
journal keeps the :class:`Holding` after its last entry up to date (by name, by host, with
affinity rules), so the newest snapshot answers in O(1); an older one replays its prefix
once, on first use, and deriving from it forks a new journal whose base is a copy of what it
holds (a few dict copies).

Threads: deriving is serialised by the journal's lock, and every derived snapshot is
right. A snapshot at the tip reads the live holding, so one thread must not read a
snapshot while another derives from that same snapshot; give each thread its own
scheduler (as every caller in clustercore does: a fresh snapshot per scheduler).
"""

from __future__ import annotations

import threading

from clustercore.model import FrozenMap, Workload

Entry = tuple[int, Workload]  # (host index, workload)
AntiRule = tuple[str, FrozenMap[str, str], int]  # a hard anti-affinity rule: scope, selector, max per scope


def anti_rules(workload: Workload) -> list[AntiRule]:
    """The hard anti-affinity rules of ``workload`` (those a newcomer can break)."""
    return [(r.scope, r.selector, r.max_per_scope) for r in workload.affinity if r.hard and r.anti]


def hard_anti(workload: Workload) -> bool:
    return any(rule.hard and rule.anti for rule in workload.affinity)


class Holding:
    """The reservations at one version: every entry by its journal position (in order), the
    positions of each workload name and on each host, the entries with rules and those
    with a hard anti-affinity rule. Copying is a few dict copies (tuples inside)."""

    __slots__ = ("anti", "by_host", "by_name", "entries", "hard_anti", "with_rules")

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.by_name: dict[str, tuple[int, ...]] = {}
        self.by_host: dict[int, tuple[int, ...]] = {}
        self.with_rules: dict[int, Entry] = {}
        self.hard_anti: dict[int, Entry] = {}
        self.anti: dict[AntiRule, int] = {}  # how many reserved workloads hold each rule

    def copy(self) -> Holding:
        held = Holding()
        held.entries, held.by_name, held.by_host = dict(self.entries), dict(self.by_name), dict(self.by_host)
        held.with_rules, held.hard_anti, held.anti = dict(self.with_rules), dict(self.hard_anti), dict(self.anti)
        return held

    def add(self, position: int, index: int, workload: Workload) -> None:
        self.entries[position] = (index, workload)
        self.by_name[workload.name] = (*self.by_name.get(workload.name, ()), position)
        self.by_host[index] = (*self.by_host.get(index, ()), position)
        if workload.affinity:
            self.with_rules[position] = (index, workload)
            if hard_anti(workload):
                self.hard_anti[position] = (index, workload)
                for rule in anti_rules(workload):
                    self.anti[rule] = self.anti.get(rule, 0) + 1

    def drop(self, name: str) -> list[Entry]:
        """Remove every reservation of ``name``; what was removed."""
        gone = []
        for position in self.by_name.pop(name, ()):
            index, workload = self.entries.pop(position)
            left = tuple(p for p in self.by_host[index] if p != position)
            if left:
                self.by_host[index] = left
            else:
                del self.by_host[index]
            self.with_rules.pop(position, None)
            if self.hard_anti.pop(position, None):
                for rule in anti_rules(workload):
                    self.anti[rule] -= 1
            gone.append((index, workload))
        return gone

    def on(self, index: int) -> tuple[Workload, ...]:
        """The workloads reserved on host ``index``, in order."""
        return tuple(self.entries[p][1] for p in self.by_host.get(index, ()))


class Journal:
    """Entries ``(host index, workload)`` to add and ``(-1, name)`` to drop after a ``base``
    holding, appended only by the snapshot that sees all of them (its ``version`` is the
    length); a snapshot behind forks a new journal whose base is what it holds."""

    def __init__(self, base: Holding | None = None) -> None:
        self.base = base or Holding()  # never changed: replays start from a copy
        self.offset = max(self.base.entries) + 1 if self.base.entries else 0  # positions after the base's
        self.log: list[tuple[int, Workload | str]] = []
        self.rows: list[int] = []  # the hosts each entry changed, in order
        self.marks = [0]  # len(rows) at each version
        self.tip = self.base.copy()
        self.lock = threading.Lock()

    def holding(self, version: int) -> Holding:
        """The reservations at ``version`` (the live tip, or a replay for an older one)."""
        if version == len(self.log):
            return self.tip
        held = self.base.copy()
        for position, (index, item) in enumerate(self.log[:version], start=self.offset):
            if isinstance(item, str):
                held.drop(item)
            else:
                held.add(position, index, item)
        return held

    def _writable(self, version: int, held: Holding) -> Journal:
        """This journal when ``version`` is its tip, else a fork from ``held`` (the holding
        at ``version``, as its snapshot replayed it)."""
        if version == len(self.log):
            return self
        return Journal(held if held is not self.tip else self.holding(version))

    def add(self, version: int, held: Holding, index: int, workload: Workload) -> tuple[Journal, int]:
        """The journal and version of snapshot ``version`` (holding ``held``) with one more
        reservation."""
        with self.lock:
            journal = self._writable(version, held)
            journal.tip.add(journal.offset + len(journal.log), index, workload)
            journal.log.append((index, workload))
            journal.rows.append(index)
            journal.marks.append(len(journal.rows))
            return journal, len(journal.log)

    def drop(self, version: int, held: Holding, name: str) -> tuple[Journal, int, list[Entry]]:
        """The journal and version of snapshot ``version`` (holding ``held``) without the
        reservations of ``name``, and those."""
        with self.lock:
            journal = self._writable(version, held)
            gone = journal.tip.drop(name)
            journal.log.append((-1, name))
            journal.rows.extend(index for index, _ in gone)
            journal.marks.append(len(journal.rows))
            return journal, len(journal.log), gone

    def changed(self, start: int, stop: int) -> list[int]:
        """The hosts whose reservations may differ between versions ``start`` and ``stop``
        (either order; a host may be listed more than once)."""
        low, high = (start, stop) if start <= stop else (stop, start)
        return self.rows[self.marks[low]:self.marks[high]]
