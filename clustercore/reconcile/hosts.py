"""Hosts: join (bootstrap, discovery), heartbeats and connectivity, one decision at a time.

:func:`decide` is the host's first applicable rule, in this order:

1. Installing: the flavors' bootstrap (a call off the pass) -> Initializing or InstallFailed;
2. liveness (:func:`~clustercore.lifecycle.liveness_event`: missed or resumed heartbeats);
3. Initializing with a report: the flavors' discovery (off the pass) and connectivity -> Up;
4. connectivity (:func:`~clustercore.lifecycle.connectivity_event`: NonOperational and back).

Maintenance (:mod:`clustercore.reconcile.drain`) and fencing
(:mod:`clustercore.reconcile.fence`) come after, in the controller's list of deciders. A
bootstrap or discovery that outlives its deadline fails the host's join (InstallFailed,
or NonOperational with the flavor-check reason) with the time it waited; nothing else
waits for it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import cast

from clustercore import join
from clustercore.errors import FlavorError
from clustercore.lifecycle import HostEvent, connectivity_event, liveness_event
from clustercore.model import Host, HostState, NonOperationalReason
from clustercore.plugins import HostDescription, Plugins
from clustercore.reconcile.calls import HostCalls, outcome
from clustercore.reconcile.observe import View
from clustercore.reconcile.writer import Decision
from clustercore.state import Versioned
from clustercore.topology import Topology

S = HostState


class Pending(Exception):
    """A decision waits for a call still running off the pass (not an error)."""


class Hosts:
    def __init__(self, plugins: Plugins, calls: HostCalls, topology: Topology) -> None:
        self.plugins = plugins
        self.calls = calls
        self.topology = topology
        self._keys: dict[tuple[str, str], Hashable] = {}  # (host, what) -> the key of its call

    def decide(self, current: Versioned[Host], view: View, workloads: int) -> Decision | None:
        host = current.value
        state = host.state
        if state is S.INSTALLING:
            return self._bootstrap(current, view)
        live = liveness_event(host, view.last_seen.get(host.name), view.now, view.config.liveness, workloads)
        if live is not None:
            return Decision(host, live[0], live[1])
        if state is S.INITIALIZING:
            return self._initialize(current, view) if host.name in view.reports else None
        conn = connectivity_event(host, *self.topology.missing(host.name))
        return None if conn is None else Decision(host, *conn)

    def _bootstrap(self, current: Versioned[Host], view: View) -> Decision | None:
        host = current.value
        result = self._call(current, "bootstrap", lambda: join.bootstrap(host, self.plugins), view)
        if isinstance(result, TimeoutError):
            return Decision(host, HostEvent.INSTALL_FAILED, str(result))
        if isinstance(result, BaseException):
            return Decision(host, HostEvent.INSTALL_FAILED, f"{type(result).__name__}: {result}")
        event, reason = cast(tuple[HostEvent, str], result)
        return Decision(host, event, reason)

    def _initialize(self, current: Versioned[Host], view: View) -> Decision | None:
        host = current.value
        result = self._call(current, "describe", lambda: self.plugins.describe_host(host), view)
        if isinstance(result, BaseException):
            reason = str(result) if isinstance(result, (FlavorError, TimeoutError)) else \
                f"{type(result).__name__}: {result}"
            return Decision(host, HostEvent.NOT_OPERATIONAL, reason, NonOperationalReason.FLAVOR_CHECK_FAILED)
        updated = join.with_descriptions(host, cast(Mapping[str, HostDescription], result))
        conn = connectivity_event(updated, *self.topology.missing(host.name))
        if conn is not None:
            return Decision(updated, *conn)
        return Decision(updated, HostEvent.INITIALIZED, "facts discovered, required networks and storage reached")

    def _call(self, current: Versioned[Host], what: str, fn: object, view: View) -> object:
        """The outcome of ``what`` for this revision of the host: its result, the exception
        it raised, a TimeoutError once overdue; raises Pending while it runs."""
        name = current.value.name
        key = ("host", name, what, current.revision)
        timeout = view.config.call_timeout
        call = self.calls.get(key)
        if call is None:
            stale = self._keys.get((name, what))
            if stale is not None and stale != key:  # asked for an older revision of the host
                self.calls.forget(stale)
            self._keys[(name, what)] = key
            assert callable(fn)
            call = self.calls.submit(name, key, fn, timeout)
        if call.overdue():
            self.calls.forget(key)
            return TimeoutError(f"{what} of {name} did not answer within {timeout:.0f} s")
        finished = self.calls.take(key)
        if finished is None:
            raise Pending(key)
        result, error = outcome(finished)
        return error if error is not None else result
