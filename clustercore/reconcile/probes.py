"""Probes: what each host really reaches, asked of the flavors, driving NonOperational.

While the cluster defines storage domains or logical networks and a flavor implements
``clustercore_probe_host``, every monitored host is probed once per heartbeat interval,
off the pass on its call lane. A probe's answer replaces the host's own reports in the
topology; a probe that does not answer within ``call_timeout`` (an NFS mount that hangs)
counts as reaching no storage. The requirement it is checked against (:func:`required`):
the config's required networks and storage, every ``required`` logical network, and every
shared domain attached to all hosts. Missing one makes the host NonOperational (the hosts
reconciler), finding it again brings it back Up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import TypeVar

from clustercore.config import ClusterConfig
from clustercore.errors import ValidationError
from clustercore.lifecycle import MONITORED
from clustercore.network import LogicalNetwork
from clustercore.plugins import HostProbe, Plugins
from clustercore.reconcile.calls import HostCalls, outcome
from clustercore.reconcile.observe import Observer, View
from clustercore.state import NETWORKS, STORAGE, ClusterState, Informer
from clustercore.storage import StorageDomain

log = logging.getLogger(__name__)
HOOK = "clustercore_probe_host"


def required(config: ClusterConfig, domains: Iterable[StorageDomain], networks: Iterable[LogicalNetwork],
             probing: bool) -> tuple[frozenset[str], frozenset[str]]:
    """(networks, storage) every working host must reach. Pure."""
    nets = config.required_networks | {n.name for n in networks if n.required}
    storage = config.required_storage
    if probing:  # a domain nobody probes is never held against a host
        storage = storage | {d.name for d in domains if d.shared and not d.hosts}
    return frozenset(nets), frozenset(storage)


T = TypeVar("T")


def _follow(informer: Informer, into: dict[str, T], parse: Callable[[object], T], errors: list[str]) -> None:
    changed, deleted = informer.sync()
    for name in deleted:
        into.pop(name, None)
    for name in changed:
        try:
            into[name] = parse(json.loads(informer.items[name].value))
        except (ValueError, ValidationError) as exc:
            errors.append(f"{informer.prefix}{name}: {exc}")


class Probes:
    def __init__(self, state: ClusterState, plugins: Plugins, calls: HostCalls, observer: Observer) -> None:
        self.state = state
        self.plugins = plugins
        self.calls = calls
        self.observer = observer
        self.due: dict[str, float] = {}
        self._informers = (Informer(state.store, STORAGE), Informer(state.store, NETWORKS))
        self._domains: dict[str, StorageDomain] = {}
        self._networks: dict[str, LogicalNetwork] = {}
        self._required: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())  # (networks, storage)
        self._asked: dict[str, tuple[frozenset[str], frozenset[str]]] = {}  # host -> what its probe was asked

    def _sync_definitions(self, errors: list[str]) -> None:
        """Storage domains and networks from their watches (decoded only when they change)."""
        _follow(self._informers[0], self._domains, StorageDomain.from_dict, errors)
        _follow(self._informers[1], self._networks, LogicalNetwork.from_dict, errors)

    def _presume(self, nets: frozenset[str], storage: frozenset[str]) -> None:
        """A network or domain just defined is presumed reached by every probed host
        until its next probe asks about it: defining one never makes every host
        NonOperational at once (which would evacuate them)."""
        if not nets and not storage:
            return
        for name, probe in list(self.observer.probes.items()):
            self.observer.probed(name, HostProbe(probe.storage | storage, probe.networks | nets, probe.free))

    def sync(self, view: View, errors: list[str]) -> None:
        self._sync_definitions(errors)
        domains = list(self._domains.values())
        networks = list(self._networks.values())
        probing = bool(domains or networks) and self.plugins.implements(HOOK)
        nets, storage = required(view.config, domains, networks, probing)
        self._presume(nets - self._required[0], storage - self._required[1])
        if probing:  # a host not probed yet is presumed to reach everything until it is
            for name in view.hosts:
                if name not in self.observer.probes:
                    self.observer.probed(name, HostProbe(storage, nets))
        self._required = (nets, storage)
        self.observer.require(nets, storage)
        if not probing:
            return
        for name, current in view.hosts.items():
            host = current.value
            key = ("probe", name)
            call = self.calls.get(key)
            if call is None:
                if host.state not in MONITORED or view.now < self.due.get(name, float("-inf")):
                    continue
                attached = [d for d in domains if d.attached(name)]
                self._asked[name] = (frozenset(n.name for n in networks), frozenset(d.name for d in attached))
                self.calls.submit(name, key, partial(self.plugins.probe_host, host, attached, networks),
                                  view.config.call_timeout)
                self.due[name] = view.now + view.config.liveness.heartbeat_interval
                continue
            if call.overdue():
                self.calls.forget(key)
                last = self.observer.probes.get(name, HostProbe())
                log.warning("probe of %s did not answer within %.0f s: it reaches no storage", name,
                            view.config.call_timeout)
                self.observer.probed(name, HostProbe(frozenset(), last.networks))
                continue
            finished = self.calls.take(key)
            if finished is None:
                continue
            probe, error = outcome(finished)
            if error is not None:
                errors.append(f"probe of {name}: {error}")
            elif probe is not None:  # what it was not asked about (defined since) stays presumed
                nets, storage = self._asked.get(name, (frozenset(), frozenset()))
                self.observer.probed(name, HostProbe(probe.storage | (self._required[1] - storage),
                                                     probe.networks | (self._required[0] - nets), probe.free))
