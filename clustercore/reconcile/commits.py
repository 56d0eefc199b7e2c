"""Commits: how a pass's host transitions reach the store, and who hears of them after.

A transition is stored with its event (compare-and-swap on the host as read, see
:mod:`clustercore.reconcile.writer`), then the observer takes the new host in at once (the
rest of the pass sees it) and the flavors are told (``clustercore_host_transition``).

The hosts' own transitions (join, heartbeats, connectivity: :data:`STAGED`) are *staged*
during a look and committed together when it ends, in as few transactions as the store
takes: a thousand hosts going Connecting cost a few transactions, not a thousand. The
observer shows a staged transition at once, so every later decision of the look (the
fencing policy counting hosts down, say) sees the cluster as it will be stored; one that is
not stored (its host changed meanwhile, the store failed, the leadership went) is taken
back and decided again with fresh data. Maintenance and fencing act once their transition
is stored, so they commit one at a time, after whatever was staged before them: the store
takes decisions in the order they were made.
"""

from __future__ import annotations

from collections.abc import Callable

from clustercore.errors import Conflict
from clustercore.events import Event
from clustercore.lifecycle import HostEvent
from clustercore.model import Host
from clustercore.plugins import Plugins
from clustercore.reconcile.observe import Observer
from clustercore.reconcile.writer import Decision, Planned, Writer
from clustercore.state import Versioned

#: The transitions committed together at the end of a look.
STAGED = frozenset({HostEvent.INSTALL_SUCCEEDED, HostEvent.INSTALL_FAILED, HostEvent.INITIALIZED,
                    HostEvent.NOT_OPERATIONAL, HostEvent.RECOVERED, HostEvent.HEARTBEAT_MISSED,
                    HostEvent.HEARTBEAT_RESUMED, HostEvent.HEARTBEAT_LOST})


class Commits:
    def __init__(self, writer: Writer, observer: Observer, plugins: Plugins, may_act: Callable[[], bool]) -> None:
        self.writer = writer
        self.observer = observer
        self.plugins = plugins
        self.may_act = may_act
        self._staged: list[Planned] = []

    def commit(self, current: Versioned[Host], decision: Decision, now: float,
               remove: bool = False) -> tuple[Host, Event]:
        """Store ``decision`` now, in a transaction of its own, then tell the flavors.
        Raises Conflict when the host changed since it was read."""
        done = self.writer.host_transition(current, decision, now, remove)
        self.observer.failed.update(done.failed)
        if not remove:
            self.observer.committed(done.host, done.revision)
        self._tell_flavors(current.value, done.host, decision, now)
        return done.host, done.event

    def stage(self, current: Versioned[Host], decision: Decision, now: float) -> None:
        """Commit ``decision`` with the others of this look (:meth:`flush`); shown at once."""
        planned = self.writer.plan_transition(current, decision, now)
        self._staged.append(planned)
        self.observer.committed(planned.new, current.revision)

    def flush(self, events: list[Event], conflicts: list[str]) -> None:
        """Commit what was staged; each stored transition's event goes to ``events``, each
        lost compare-and-swap to ``conflicts``; whatever was not stored is taken back."""
        staged, self._staged = self._staged, []
        left = {id(p): p for p in staged}

        def done(planned: Planned, outcome: int | Conflict) -> None:
            del left[id(planned)]
            if isinstance(outcome, Conflict):
                conflicts.append(str(outcome))
                self.observer.committed(planned.current.value, planned.current.revision)
                return
            self.observer.stored(planned.new, outcome)
            self._tell_flavors(planned.current.value, planned.new, planned.decision, planned.event.time)
            events.append(planned.event)

        try:
            if staged and self.may_act():
                self.writer.host_transitions(staged, done)
        finally:
            for planned in left.values():
                self.observer.committed(planned.current.value, planned.current.revision)

    def _tell_flavors(self, old: Host, new: Host, decision: Decision, now: float) -> None:
        for failure in self.plugins.host_transition(old, new, decision.event.value, decision.reason):
            self.writer.record(Event(now, f"host/{new.name}", "flavor-error", str(failure)))
