"""The container spec and the flavor's pure decisions (no podman needed)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustercore.config import ClusterConfig
from clustercore.errors import ValidationError
from clustercore.model import Host, HostState, Placement, PlacementState
from clustercore.resources import Resources
from clustercore.scheduling import ForFlavor, HostView, Scheduler, Snapshot
from clustercore.storage import StorageDomain, StorageView, Volume
from flavors.containers import (
    ContainersFlavor,
    PodmanHostFilter,
    container_spec,
    container_workload,
    host_facts,
    podman_uri,
)
from flavors.containers.spec import KIND, ContainerSpec
from flavors.virt import filters as virt_filters
from flavors.virt.spec import VMSpec
from flavors.virt.workload import vm_workload

BASE: dict[str, Any] = {"name": "web", "image": "localhost/clustercore-busybox:1", "memory": 64}


def test_a_spec_reads_back_what_it_wrote_and_requests_whole_cpus() -> None:
    spec = ContainerSpec.from_dict({**BASE, "command": ["/bin/sh", "-c", "echo hi"], "env": ["A=1", "B=x=y"],
                                    "cpus": 0.5, "pids": 64, "network": "none", "move": "restart",
                                    "mounts": [{"volume": "web-data", "target": "/data", "read_only": True}]})
    assert ContainerSpec.from_dict(spec.to_dict()) == spec
    assert spec.environment() == {"A": "1", "B": "x=y"}
    assert spec.requests() == Resources(1, 64)
    assert ContainerSpec.from_dict({**BASE, "cpus": 2}).requests() == Resources(2, 64)
    assert ContainerSpec.from_dict(BASE).requests() == Resources(0, 64)


@pytest.mark.parametrize(("change", "field", "problem"), [
    ({"cpus": True}, "cpus", "must be a number"),
    ({"cpus": 0}, "cpus", ">= 0.01"),
    ({"cpus": float("nan")}, "cpus", "must be a number"),
    ({"memory": 2}, "memory", ">= 4"),
    ({"memory": "64"}, "memory", "must be an integer"),
    ({"env": ["A=1", "A=2"]}, "env[1]", "set twice"),
    ({"env": ["1A=x"]}, "env[0]", "must match"),
    ({"command": ["a\x00b"]}, "command[0]", "NUL"),
    ({"name": "Web"}, "name", "must match"),
    ({"image": "../x"}, "image", "must match"),
    ({"network": "bridge"}, "network", "must be one of host, none"),
    ({"move": "live"}, "move", "must be one of checkpoint, restart"),
    ({"volumes": []}, "volumes", "unknown field"),
    ({"mounts": [{"volume": "d", "target": "data"}]}, "mounts[0].target", "must match"),
    ({"mounts": [{"volume": "d", "target": "/a/../etc"}]}, "mounts[0].target", "no . or .. parts"),
    ({"mounts": [{"volume": "d", "target": "/a"}, {"volume": "e", "target": "/a"}]}, "mounts[1].target",
     "mounted twice"),
    ({"mounts": [{"volume": "D", "target": "/a"}]}, "mounts[0].volume", "must match"),
    ({"mounts": [{"volume": "d", "target": "/a", "source": "rel"}]}, "mounts[0].source", "must match"),
    ({"mounts": [{"volume": "d"}]}, "mounts[0].target", "is required"),
])
def test_each_bad_field_is_named(change: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem) as failed:
        ContainerSpec.from_dict({**BASE, **change})
    assert failed.value.field == field


def test_a_spec_without_a_required_field_names_it() -> None:
    with pytest.raises(ValidationError, match="is required") as failed:
        ContainerSpec.from_dict({"name": "web", "memory": 64})
    assert failed.value.field == "image"


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)


@given(st.dictionaries(st.sampled_from(["name", "image", "memory", "command", "env", "cpus", "pids", "network",
                                        "stop_timeout", "move", "mounts", "other"]), json_values, max_size=8))
def test_any_document_is_a_spec_or_a_validation_error(data: dict[str, Any]) -> None:
    try:
        spec = ContainerSpec.from_dict({**BASE, **data})
    except ValidationError as exc:
        assert exc.field
    else:
        assert ContainerSpec.from_dict(spec.to_dict()) == spec


def test_which_hosts_are_podman_hosts() -> None:
    assert podman_uri(Host("a", address="tcp://127.0.0.1:17400")) == "tcp://127.0.0.1:17400"
    assert podman_uri(Host("b", address="unix:///run/podman/podman.sock")) == "unix:///run/podman/podman.sock"
    both = Host("c", address="qemu+tcp://127.0.0.1:16600/system", labels={"podman/uri": "tcp://127.0.0.1:17401"})
    assert podman_uri(both) == "tcp://127.0.0.1:17401"
    assert podman_uri(Host("d", address="qemu+tcp://127.0.0.1:16600/system")) is None
    assert ContainersFlavor().clustercore_bootstrap_host(Host("d", address="/srv/x")) is None


def test_containers_go_only_where_podman_answered() -> None:
    spec = ContainerSpec.from_dict(BASE)
    w = container_workload(spec)
    podman = Host("a", address="tcp://127.0.0.1:17400", state=HostState.UP)
    both = Host("b", address="qemu+tcp://127.0.0.1:16600/system", labels={"podman/uri": "tcp://127.0.0.1:17401"})
    vms_only = Host("c", address="qemu+tcp://127.0.0.1:16600/system", state=HostState.UP)
    f = PodmanHostFilter()
    assert f.check(w, HostView(podman, Resources())) is None
    assert f.check(w, HostView(both, Resources())) is None
    assert f.check(w, HostView(vms_only, Resources())) == "no podman API on this host"


def test_host_facts_read_podman_info_and_survive_a_strange_answer() -> None:
    info = {"host": {"ociRuntime": {"name": "runc"}, "cgroupVersion": "v1", "cpus": 2, "memTotal": 2**33},
            "version": {"Version": "4.3.1"}}
    assert host_facts(info) == {"runtime": "runc", "cgroup_version": "v1", "cpus": 2, "memory_mib": 8192,
                                "podman": "4.3.1"}
    assert host_facts({"host": "?"})["runtime"] == ""


def test_a_host_without_criu_vetoes_maintenance_for_checkpointed_containers() -> None:
    flavor = ContainersFlavor()
    moved = container_workload(ContainerSpec.from_dict(BASE))
    restarted = container_workload(ContainerSpec.from_dict({**BASE, "name": "job", "move": "restart"}))
    bare = Host("a", address="tcp://127.0.0.1:1")
    veto = flavor.clustercore_maintenance_veto(bare, [moved, restarted])
    assert veto is not None and "web" in veto and "job" not in veto
    assert flavor.clustercore_maintenance_veto(bare, [restarted]) is None
    with_criu = Host("a", address="tcp://127.0.0.1:1", labels={"podman/criu": "true"})
    assert flavor.clustercore_maintenance_veto(with_criu, [moved]) is None


def test_one_scheduler_keeps_each_flavor_on_its_own_hosts_with_one_accounting() -> None:
    """A mixed cluster: a podman-only host, a libvirt-only host and one running both (a
    libvirt address and a ``podman/uri`` label). VMs never land on the podman-only host,
    containers never on the libvirt-only one, and both count against the shared host."""
    def up(name: str, address: str, **labels: str) -> Host:
        return Host(name, address=address, labels=labels, capacity=Resources(4, 4096), state=HostState.UP)

    hosts = [up("pod", "tcp://127.0.0.1:17400"), up("vms", "qemu+tcp://127.0.0.1:16600/system"),
             up("both", "qemu+tcp://127.0.0.1:16601/system", **{"podman/uri": "tcp://127.0.0.1:17401"})]
    rules = [*virt_filters.filters(host_reserve=0), ForFlavor(KIND, PodmanHostFilter())]
    vm = vm_workload(VMSpec.new("vm1", 3072, vcpus=2))
    box = container_workload(ContainerSpec.from_dict({**BASE, "memory": 2048}))
    for workload, allowed in ((vm, {"vms", "both"}), (box, {"pod", "both"})):
        rows = Scheduler(Snapshot.build(hosts), filters=rules).explain(workload)
        assert {r.host for r in rows if r.reason is None} == allowed, rows
    # The VM on the shared host leaves 1024 MiB there: the container (2048) fits only on "pod".
    placed = Snapshot.build(hosts, {"vm1": vm}, [Placement("vm1", "both", PlacementState.RUNNING)])
    rows = Scheduler(placed, filters=rules).explain(box)
    assert {r.host for r in rows if r.reason is None} == {"pod"}


def test_mounts_get_their_volumes_directory_and_the_workload_names_the_volumes() -> None:
    flavor = ContainersFlavor()
    domains = {"shared": StorageDomain("shared", path="/srv/domain"),
               "local": StorageDomain("local", path="/var/lib/c", shared=False, hosts=frozenset({"a"}))}
    volumes = {"data": Volume("data", "shared", 16, format="dir"),
               "logs": Volume("logs", "local", 8, format="dir", host="a"),
               "disk": Volume("disk", "shared", 16, format="qcow2")}
    view = StorageView(domains, volumes)
    box = container_workload(ContainerSpec.from_dict({**BASE, "name": "web", "mounts": [
        {"volume": "data", "target": "/data"}, {"volume": "logs", "target": "/logs", "read_only": True}]}))
    done = flavor.clustercore_complete_workload(box, {}, view)
    assert done is not None and done.volumes == {"data", "logs"}
    mounts = container_spec(done).mounts
    assert [(m.source, m.read_only) for m in mounts] == [("/srv/domain/data.dir", False),
                                                         ("/var/lib/c/logs.dir", True)]
    assert flavor.clustercore_validate_workload(done, {}, ClusterConfig(), view) is None
    tampered = attrs.evolve(container_spec(done), mounts=(attrs.evolve(mounts[0], source="/etc"), mounts[1]))
    with pytest.raises(ValidationError, match=r"is /srv/domain/data\.dir") as failed:  # not the volume's directory
        flavor.clustercore_validate_workload(attrs.evolve(done, spec=tampered.to_dict()), {}, ClusterConfig(), view)
    assert failed.value.field == "spec.mounts[0].source"
    with pytest.raises(ValidationError, match="must name volume data"):
        flavor.clustercore_validate_workload(attrs.evolve(done, volumes=frozenset({"logs"})), {}, ClusterConfig(), view)
    for volume, why in (("disk", "is qcow2"), ("gone", "no such volume")):
        wrong = container_workload(ContainerSpec.from_dict({**BASE, "mounts": [{"volume": volume, "target": "/x"}]}))
        with pytest.raises(ValidationError, match=why):
            flavor.clustercore_complete_workload(wrong, {}, view)
