"""The cluster's shape as a graph: hosts, their failure domains, networks and storage.

Nodes are ``(kind, name)`` pairs: ``("host", "h1")``, ``("rack", "r1")``,
``("power", "pdu-a")``, ``("network", "ovirtmgmt")``, ``("storage", "nfs1")``. A host
links to one node per entry of its ``location`` (the location key is the node kind), and
to every network and storage its last report said it reaches. Generic: a flavor or a
scheduler plugin asks "which hosts share a rack", "who reaches network X", "what is this
host missing", never how the graph is built.

Updates are incremental (a host's edges change only when its report changes) and the
answer to "what is missing" is cached per host, so the reconcile loop asks it for every
host on every pass for the price of a dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from clustercore.model import EMPTY, FrozenMap, Host

Node = tuple[str, str]
NETWORK = "network"
STORAGE = "storage"
HOST = "host"


class Topology:
    def __init__(self, required_networks: Iterable[str] = (), required_storage: Iterable[str] = ()) -> None:
        self.graph: nx.Graph = nx.Graph()
        self.required_networks = frozenset(required_networks)
        self.required_storage = frozenset(required_storage)
        self._missing: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._located: dict[str, FrozenMap[str, str]] = {}
        #: Hosts that miss something required (kept current, for a cheap "all fine?" test).
        self.incomplete: set[str] = set()

    def require(self, networks: Iterable[str], storage: Iterable[str]) -> None:
        """Change what every host must reach (recomputes every host's answer)."""
        networks, storage = frozenset(networks), frozenset(storage)
        if (networks, storage) != (self.required_networks, self.required_storage):
            self.required_networks, self.required_storage = networks, storage
            for name in list(self._missing):
                self._recompute(name)

    def add_host(self, host: Host) -> None:
        """Add or re-place a host in its failure domains (idempotent, cheap when unchanged)."""
        node = (HOST, host.name)
        location, located = host.location, self._located.get(host.name)
        if (located is location or located == location) and node in self.graph:
            return
        if node in self.graph:
            for other in list(self.graph.neighbors(node)):
                if other[0] not in (NETWORK, STORAGE):
                    self.graph.remove_edge(node, other)
        else:
            self.graph.add_node(node, kind=HOST)
        for kind, value in location.items():
            self.graph.add_edge(node, (kind, value))
        self._located[host.name] = location
        if host.name not in self._missing:
            self._recompute(host.name)

    def remove_host(self, name: str) -> None:
        node = (HOST, name)
        if node in self.graph:
            self.graph.remove_node(node)
        self._missing.pop(name, None)
        self._located.pop(name, None)
        self.incomplete.discard(name)

    def set_reachable(self, name: str, networks: Iterable[str], storage: Iterable[str]) -> None:
        """Record what host ``name`` reports it reaches (replacing its previous report)."""
        node = (HOST, name)
        if node not in self.graph:
            self.graph.add_node(node, kind=HOST)
        for other in list(self.graph.neighbors(node)):
            if other[0] in (NETWORK, STORAGE):
                self.graph.remove_edge(node, other)
        self.graph.add_edges_from((node, (NETWORK, n)) for n in networks)
        self.graph.add_edges_from((node, (STORAGE, s)) for s in storage)
        self._recompute(name)

    def _recompute(self, name: str) -> None:
        reached = {other for other in self.graph.neighbors((HOST, name))} if (HOST, name) in self.graph else set()
        missing = (
            frozenset(n for n in self.required_networks if (NETWORK, n) not in reached),
            frozenset(s for s in self.required_storage if (STORAGE, s) not in reached),
        )
        self._missing[name] = missing
        if missing[0] or missing[1]:
            self.incomplete.add(name)
        else:
            self.incomplete.discard(name)

    def missing(self, name: str) -> tuple[frozenset[str], frozenset[str]]:
        """(networks, storage) that host ``name`` is required to reach and does not."""
        found = self._missing.get(name)
        if found is None:
            return self.required_networks, self.required_storage
        return found

    def reaches(self, name: str, kind: str, target: str) -> bool:
        return bool(self.graph.has_edge((HOST, name), (kind, target)))

    def hosts_reaching(self, kind: str, target: str) -> frozenset[str]:
        node = (kind, target)
        if node not in self.graph:
            return frozenset()
        return frozenset(n[1] for n in self.graph.neighbors(node) if n[0] == HOST)

    def domain(self, name: str, kind: str) -> str | None:
        """The ``kind`` failure domain (rack, power...) of host ``name``, if it has one."""
        return self._located.get(name, EMPTY).get(kind)

    def peers(self, name: str, kind: str) -> frozenset[str]:
        """Hosts sharing host ``name``'s ``kind`` domain (itself included)."""
        value = self.domain(name, kind)
        return frozenset() if value is None else self.hosts_reaching(kind, value)
