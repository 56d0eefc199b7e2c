"""The topology graph: failure domains, reachability, what a host misses."""

from __future__ import annotations

from clustercore.model import Host
from clustercore.topology import NETWORK, STORAGE, Topology


def test_domains_reachability_and_missing() -> None:
    topo = Topology(required_networks={"mgmt", "data"}, required_storage={"nfs"})
    for name, rack in (("h1", "r1"), ("h2", "r1"), ("h3", "r2")):
        topo.add_host(Host(name, location={"rack": rack, "power": "pdu-a"}))
    assert topo.missing("h1") == (frozenset({"mgmt", "data"}), frozenset({"nfs"}))
    assert topo.incomplete == {"h1", "h2", "h3"}
    topo.set_reachable("h1", ["mgmt", "data"], ["nfs"])
    topo.set_reachable("h2", ["mgmt"], ["nfs"])
    assert topo.missing("h1") == (frozenset(), frozenset())
    assert topo.missing("h2") == (frozenset({"data"}), frozenset())
    assert topo.incomplete == {"h2", "h3"}
    assert topo.reaches("h2", NETWORK, "mgmt") and not topo.reaches("h2", NETWORK, "data")
    assert topo.hosts_reaching(STORAGE, "nfs") == {"h1", "h2"}
    assert topo.domain("h3", "rack") == "r2" and topo.domain("h3", "zone") is None
    assert topo.peers("h1", "rack") == {"h1", "h2"}
    assert topo.peers("h1", "power") == {"h1", "h2", "h3"}


def test_reports_replace_and_requirements_recompute() -> None:
    topo = Topology(required_networks={"mgmt"})
    topo.add_host(Host("h1"))
    topo.set_reachable("h1", ["mgmt"], [])
    topo.set_reachable("h1", [], [])
    assert topo.missing("h1") == (frozenset({"mgmt"}), frozenset())
    topo.require(networks=[], storage=[])
    assert topo.missing("h1") == (frozenset(), frozenset()) and not topo.incomplete


def test_moving_a_host_between_racks_and_removing_it() -> None:
    topo = Topology()
    topo.add_host(Host("h1", location={"rack": "r1"}))
    topo.set_reachable("h1", ["mgmt"], [])
    topo.add_host(Host("h1", location={"rack": "r2"}))
    assert topo.domain("h1", "rack") == "r2"
    assert topo.peers("h1", "rack") == {"h1"}
    assert topo.hosts_reaching("rack", "r1") == frozenset()
    assert topo.reaches("h1", NETWORK, "mgmt"), "moving racks keeps what the host reaches"
    topo.remove_host("h1")
    assert topo.hosts_reaching(NETWORK, "mgmt") == frozenset()
